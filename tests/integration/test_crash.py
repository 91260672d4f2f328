"""Issue 5, nothing lost: POP3 logins and SMTP deliveries (local and relayed to
the capture upstream) run from several threads while the daemon is killed with
SIGKILL at random (seeded) moments and restarted. At the end:

- every message answered 250 is in the Maildir / at the upstream exactly once;
  a message whose 250 never arrived may be there (the kill fell between the
  commit and the reply), but never twice and never partial;
- every login acknowledged by +OK has its row in relay_grants;
- the database passes PRAGMA integrity_check;
- nothing in new/ or cur/ is a partial message: each file is byte for byte one
  of the messages sent (after our Received header)."""
import random
import re
import smtplib
import socket
import threading
import time

from popgate_test import make_gateway, upstream  # noqa: F401  (fixtures)
from smtp_support import relay_overrides, strip_received

SEED = 20251123
KILLS = 4


def message_id(data: bytes) -> str:
    m = re.search(rb"^Message-ID: <([^>]+)>", data, re.M)
    assert m, data[:300]
    return m.group(1).decode()


class Load:
    """Client threads with their records: what was attempted, what was acknowledged."""

    def __init__(self, g, seed):
        self.g = g
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sent = {}          # message id -> body (CRLF) for every attempt
        self.acked = {"local": set(), "relay": set()}
        self.logins = []        # (address, user) answered +OK
        self.errors = 0
        self.seed = seed

    def port(self, name):
        return self.g.ports[name]   # changes at every restart

    def body(self, rnd, mid):
        lines = [b"Message-ID: <" + mid.encode() + b">", b"Subject: crash test " + mid.encode(), b""]
        for i in range(rnd.choice([3, 30, 300, 3000])):
            lines.append(b"%06d " % i + bytes(rnd.choice(b"abcdefghij ") for _ in range(60)))
        return b"\r\n".join(lines) + b"\r\n"

    def smtp_worker(self, kind, n):
        rnd = random.Random(self.seed + n)
        k = 0
        rcpt = "alice@gw.test" if kind == "local" else f"dest{n}@remote.test"
        while not self.stop.is_set():
            k += 1
            mid = f"{kind}-{n}-{k}@crash.test"
            body = self.body(rnd, mid)
            with self.lock:
                self.sent[mid] = body
            try:
                with smtplib.SMTP("127.0.0.1", self.port("smtp"), timeout=10) as s:
                    if s.sendmail("sender@client.test", [rcpt], body) == {}:
                        with self.lock:
                            self.acked[kind].add(mid)
            except (OSError, smtplib.SMTPException):
                with self.lock:
                    self.errors += 1
                time.sleep(0.05)

    def pop3_worker(self):
        n = 0
        while not self.stop.is_set():
            n += 1
            addr = f"127.0.{1 + n // 250}.{1 + n % 250}"
            try:
                s = socket.socket()
                s.settimeout(10)
                s.bind((addr, 0))
                s.connect(("127.0.0.1", self.port("pop3")))
                f = s.makefile("rb")
                assert f.readline().startswith(b"+OK")
                s.sendall(b"USER carol\r\n")
                assert f.readline() == b"+OK\r\n"
                s.sendall(b"PASS pw-carol\r\n")
                r = f.readline()
                if r.startswith(b"+OK Logged in"):
                    with self.lock:
                        self.logins.append((addr, "carol"))
                else:
                    assert r == b"", r   # only the kill may cut a login short
                s.sendall(b"QUIT\r\n")
                f.readline()
                s.close()
            except (OSError, AssertionError):
                with self.lock:
                    self.errors += 1
                time.sleep(0.05)


def test_sigkill_under_load_loses_nothing_acknowledged(make_gateway, upstream):
    t_start = time.time()
    g = make_gateway(overrides=relay_overrides(
        upstream, relay={"upstream_timeout": 5},
        limits={"smtp_idle_timeout": 10, "pop3_idle_timeout": 10, "data_timeout": 10}))
    g.add_user("alice", "pw-alice")
    g.add_user("carol", "pw-carol")
    # 127.0.0.1 may relay (the SMTP workers); POP3 logins grant their own addresses
    g.sql("INSERT INTO relay_grants(address, user, expires_at) VALUES('127.0.0.1', 'setup', unixepoch()+3600)")

    load = Load(g, SEED)
    threads = [threading.Thread(target=load.smtp_worker, args=("local", 1)),
               threading.Thread(target=load.smtp_worker, args=("local", 2)),
               threading.Thread(target=load.smtp_worker, args=("relay", 3)),
               threading.Thread(target=load.smtp_worker, args=("relay", 4)),
               threading.Thread(target=load.pop3_worker)]
    for t in threads:
        t.start()
    rnd = random.Random(SEED)
    try:
        for _ in range(KILLS):
            time.sleep(rnd.uniform(0.4, 1.6))
            g.proc.kill()          # SIGKILL: no drain, no cleanup
            g.proc.wait()
            g.start()
        time.sleep(1.0)            # a last stretch of load on the final daemon
    finally:
        load.stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert g.stop() == 0

    # enough really happened for the test to mean something
    assert len(load.acked["local"]) >= 5 and len(load.acked["relay"]) >= 5 and len(load.logins) >= 5, \
        (len(load.acked["local"]), len(load.acked["relay"]), len(load.logins), load.errors)

    # local deliveries: complete, never twice, every acknowledged one present
    seen = {}
    for sub in ("new", "cur"):
        d = g.maildir("alice") / sub
        for p in (d.iterdir() if d.exists() else []):
            data = p.read_bytes()
            mid = message_id(data)
            assert mid in load.sent, (p, mid)
            assert strip_received(data) == load.sent[mid].replace(b"\r\n", b"\n"), f"partial or altered: {p}"
            seen[mid] = seen.get(mid, 0) + 1
    assert all(n == 1 for n in seen.values()), {m: n for m, n in seen.items() if n > 1}
    missing = load.acked["local"] - set(seen)
    assert not missing, f"acknowledged with 250 but not in the Maildir: {sorted(missing)}"
    assert all(m.startswith("local-") for m in seen)

    # relayed: at the upstream once each, complete
    at_up = {}
    with upstream.lock:
        msgs = list(upstream.messages)
    for m in msgs:
        mid = message_id(m["data"])
        assert mid in load.sent
        assert strip_received(m["data"]) == load.sent[mid], f"altered relayed message {mid}"
        assert m["rcpt_tos"] == [f"dest{mid.split('-')[1]}@remote.test"]
        at_up[mid] = at_up.get(mid, 0) + 1
    assert all(n == 1 for n in at_up.values()), {m: n for m, n in at_up.items() if n > 1}
    missing = load.acked["relay"] - set(at_up)
    assert not missing, f"acknowledged with 250 but never reached the upstream: {sorted(missing)}"
    assert all(m.startswith("relay-") for m in at_up)
    assert not g.drop.exists() or not any((g.drop / "new").glob("*"))

    # grants: every +OK login is in the table
    rows = set(g.sql("SELECT address, user FROM relay_grants"))
    lost = [x for x in load.logins if x not in rows]
    assert not lost, f"logins answered +OK without a grant: {lost}"

    assert g.sql("PRAGMA integrity_check") == [("ok",)]
    assert g.log().count(" started threads=") == KILLS + 1   # every restart really started
    n_acked = len(load.acked["local"]) + len(load.acked["relay"])
    present_unacked = len(set(seen) | set(at_up)) - n_acked
    print(f"sent={len(load.sent)} acked={n_acked} unacked={len(load.sent) - n_acked} "
          f"present_unacked={present_unacked} logins={len(load.logins)} client_errors={load.errors}")
    assert time.time() - t_start < 60
