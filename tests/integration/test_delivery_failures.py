"""A message with several copies kept here (local mailboxes, the relay
drop) when one of them cannot be written: the client hears a temporary
error and none of the copies is left, so its retry delivers each once. A
full disk is "insufficient system storage" (452 4.3.1)."""
import os
import shutil
import socket
from pathlib import Path

import pytest

from popgate_test import make_gateway  # noqa: F401

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="a private mount namespace needs root (CI runs as root)")

BODY = b"From: a@remote.test\r\nSubject: copies\r\n\r\n" + b"line\r\n" * 100


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.f = self.s.makefile("rb")
        self.reply()

    def reply(self):
        lines = []
        while True:
            line = self.f.readline()
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                return b"".join(lines)

    def cmd(self, line):
        self.s.sendall(line)
        return self.reply()

    def envelope(self, rcpts):
        assert self.cmd(b"EHLO client.test\r\n").startswith(b"250")
        assert self.cmd(b"MAIL FROM:<a@remote.test>\r\n").startswith(b"250")
        for r in rcpts:
            assert self.cmd(b"RCPT TO:<%s>\r\n" % r).startswith(b"250 "), r
        assert self.cmd(b"DATA\r\n").startswith(b"354")

    def close(self):
        self.s.close()


def files(d):
    return sorted(p.name for p in Path(d).iterdir()) if Path(d).is_dir() else []


def test_a_copy_that_cannot_be_moved_to_new_takes_back_the_others(make_gateway):
    # bob's new/ becomes a file after the 354: his copy is written, and
    # fails only at the rename, after alice's and the relay drop's copies
    # had been moved into their new/. They stayed there under a 451.
    g = make_gateway()
    g.add_user("alice", "pw")
    g.add_user("bob", "pw")
    g.cli("allow", "add", "127.0.0.1")
    c = Conn(g.port("smtp"))
    c.envelope([b"alice@gw.test", b"bob@gw.test", b"x@remote.test"])
    bob_new = g.maildir("bob") / "new"
    bob_new.rmdir()
    bob_new.write_text("")
    reply = c.cmd(BODY + b".\r\n")
    assert reply.startswith(b"451 4.3.0 "), reply
    assert files(g.maildir("alice") / "new") == [] and files(g.drop / "new") == []
    for d in (g.maildir("alice"), g.maildir("bob"), g.drop):
        assert files(d / "tmp") == [], d
    # The client sends again once bob's Maildir is mended: one copy each.
    bob_new.unlink()
    bob_new.mkdir()
    assert c.cmd(b"MAIL FROM:<a@remote.test>\r\n").startswith(b"250")
    for r in (b"alice@gw.test", b"bob@gw.test", b"x@remote.test"):
        assert c.cmd(b"RCPT TO:<%s>\r\n" % r).startswith(b"250 ")
    assert c.cmd(b"DATA\r\n").startswith(b"354")
    assert c.cmd(BODY + b".\r\n").startswith(b"250 2.0.0 ")
    c.close()
    assert len(g.messages("alice")) == 1 and len(g.messages("bob")) == 1
    assert len(files(g.drop / "new")) == 1
    assert g.wait_log("smtp delivery failed id=")


# The daemon in a private mount namespace with its Maildirs on a 1 MiB tmpfs.
SMALL_MAIL_ROOT = """set -e
mkdir -p "$1"
mount -t tmpfs -o size=1m,mode=0700 tmpfs "$1"
shift
exec "$@"
"""


@needs_root
def test_a_full_disk_is_452_and_leaves_no_copy(make_gateway):
    g = make_gateway(start=False)
    g.cli("db", "migrate")
    g.add_user("alice", "pw")
    g.add_user("bob", "pw")
    g.start(wrapper=("unshare", "-m", "--propagation", "private", "sh", "-c", SMALL_MAIL_ROOT, "sh",
                     str(g.mail_root)))
    seen = Path(f"/proc/{g.proc.pid}/root") / str(g.mail_root).lstrip("/")  # the tmpfs, from outside
    # 600 KB to two mailboxes: the second copy runs out of room as it is written.
    big = b"Subject: big\r\n\r\n" + (b"x" * 78 + b"\r\n") * 7500
    c = Conn(g.port("smtp"))
    c.envelope([b"alice@gw.test", b"bob@gw.test"])
    reply = c.cmd(big + b".\r\n")
    assert reply.startswith(b"452 4.3.1 Error: insufficient system storage"), reply
    for user in ("alice", "bob"):
        assert files(seen / user / "new") == [] and files(seen / user / "tmp") == [], user
    # Something that fits is delivered to both.
    assert c.cmd(b"MAIL FROM:<a@remote.test>\r\n").startswith(b"250")
    for r in (b"alice@gw.test", b"bob@gw.test"):
        assert c.cmd(b"RCPT TO:<%s>\r\n" % r).startswith(b"250 ")
    assert c.cmd(b"DATA\r\n").startswith(b"354")
    assert c.cmd(BODY + b".\r\n").startswith(b"250 2.0.0 ")
    c.close()
    assert len(files(seen / "alice" / "new")) == 1 and len(files(seen / "bob" / "new")) == 1
    assert g.wait_log("smtp delivery failed id=")
    assert g.stop() == 0


def test_the_longest_server_hostname_still_delivers(make_gateway):
    # server.hostname goes into every Maildir file name; at 253 octets the
    # name passed NAME_MAX and every local delivery got 451.
    host = ".".join(["a" * 62] * 4)[:253]
    g = make_gateway(overrides={"server": {"hostname": host}})
    g.add_user("alice", "pw")
    c = Conn(g.port("smtp"))
    c.envelope([b"alice@gw.test"])
    assert c.cmd(BODY + b".\r\n").startswith(b"250 2.0.0 ")
    c.close()
    assert len(g.messages("alice")) == 1
