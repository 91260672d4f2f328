#!/usr/bin/env python3
"""POP3 on a Maildir whose messages another client renamed (bench/README.md,
"A mailbox another client renamed").

An IMAP client that sets \\Seen on every message renames each file in cur/
(":2," -> ":2,S"); a POP3 session opened before that finds its messages by
base name. Two users with N messages each, all renamed after their login:
  - 300 TOP n 0 pipelined by one, while four other users' sessions send
    NOOP in a loop on the same daemon (their worst wait);
  - both DELE 3,000 and QUIT at once, while a fourth user logs in (how long
    each QUIT and that login take).
Prints each round and the medians. Run by hand:

    python3 bench/renamed_mailbox.py --popgate build/release/popgate
"""
import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests" / "support")]


class Session:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=600)
        self.buf = b""
        self.line()

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(1 << 20)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        i = self.buf.index(b"\r\n") + 2
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def multi(self):
        first = self.line()
        if first.startswith(b"+OK"):
            while self.line() != b".\r\n":
                pass
        return first

    def cmd(self, text):
        self.s.sendall(text.encode() + b"\r\n")
        return self.line()

    def login(self, user):
        self.cmd("USER " + user)
        reply = self.cmd("PASS pw-" + user)
        assert reply.startswith(b"+OK"), reply
        return self


def fill_and_rename(g, user, n):
    cur = g.maildir(user) / "cur"
    for sub in ("new", "cur", "tmp"):
        (g.maildir(user) / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (cur / f"1796610000.M{i}P9.bench:2,").write_bytes(b"Subject: m%d\n\nx\n" % i)
    return cur


def rename_all(cur):
    for f in os.listdir(cur):
        if f.endswith(":2,"):
            os.rename(cur / f, cur / (f + "S"))


def one_round(g, n):
    port = g.port("pop3")
    cur = fill_and_rename(g, "alice", n)
    alice = Session(port).login("alice")
    rename_all(cur)
    waits, stop, ready = [], threading.Event(), threading.Event()

    def neighbours():
        bobs = [Session(port).login(f"neighbour{i}") for i in range(4)]
        ready.set()
        while not stop.is_set():
            for b in bobs:
                t = time.perf_counter()
                b.cmd("NOOP")
                waits.append(time.perf_counter() - t)
            time.sleep(0.005)
        for b in bobs:
            b.cmd("QUIT")

    th = threading.Thread(target=neighbours)
    th.start()
    ready.wait(60)
    time.sleep(0.1)
    t = time.perf_counter()
    alice.s.sendall(b"".join(b"TOP %d 0\r\n" % i for i in range(1, 301)))
    for _ in range(300):
        alice.multi()
    top = time.perf_counter() - t
    stop.set()
    th.join()
    alice.cmd("QUIT")

    sessions = []
    for user in ("alice", "erin"):
        cur = fill_and_rename(g, user, n)
        s = Session(port).login(user)
        rename_all(cur)
        s.s.sendall(b"".join(b"DELE %d\r\n" % i for i in range(1, 3001)))
        for _ in range(3000):
            s.line()
        sessions.append(s)
    quits = []

    def quit_(s):
        t0 = time.perf_counter()
        s.cmd("QUIT")
        quits.append(time.perf_counter() - t0)

    ths = [threading.Thread(target=quit_, args=(s,)) for s in sessions]
    for t_ in ths:
        t_.start()
    time.sleep(0.2)
    t = time.perf_counter()
    Session(port).login("carol").cmd("QUIT")
    login = time.perf_counter() - t
    for t_ in ths:
        t_.join()
    for user in ("alice", "erin"):
        shutil.rmtree(g.maildir(user))
    return {"top300": top, "noop_worst": max(waits), "quit": max(quits), "login": login}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--popgate", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--messages", type=int, default=20000)
    a = ap.parse_args()
    os.environ["POPGATE_BIN"] = str(Path(a.popgate).resolve())
    from popgate_test import Gateway  # noqa: E402  (reads POPGATE_BIN)

    root = Path(tempfile.mkdtemp(prefix="popgate-renamed-"))
    g = Gateway(root / "gw", {"server": {"threads": 2}, "log": {"level": "warn"},
                              "auth": {"plaintext": "always"},
                              "limits": {"max_sessions_per_ip": 100, "max_connections_per_minute": 0}},
                [{"name": "pop3", "protocol": "pop3", "tls": "none"}]).start()
    try:
        for user in ("alice", "carol", "erin", *(f"neighbour{i}" for i in range(4))):
            g.add_user(user, "pw-" + user)
        rows = []
        for r in range(a.rounds):
            row = one_round(g, a.messages)
            rows.append(row)
            print(f"round {r + 1}: " + "  ".join(f"{k} {v:.3f} s" for k, v in row.items()), flush=True)
        print("median:  " + "  ".join(f"{k} {statistics.median(x[k] for x in rows):.3f} s" for k in rows[0]))
    finally:
        g.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
