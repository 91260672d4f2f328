"""What a crashed delivery leaves in a Maildir's tmp/ goes after 36 hours
(the Maildir convention, as Dovecot does): from a user's Maildir when the user
logs in with POP3, from the relay drop at the periodic purge. The age is the
inode's change time, which a test cannot set back, so the daemon runs under
faketime two days ahead: every file the test makes is then stale to it."""
import poplib
import subprocess

import pytest

from popgate_test import POPGATE, make_gateway  # noqa: F401

# libfaketime preloaded straight into the daemon (faketime(1) would stand
# between it and the test's signals), on the wall clock only: the daemon's
# timers and waits run on the monotonic one, and the files' times are the
# kernel's (NO_FAKE_STAT: a libfaketime that shifted what stat returns too
# would shift the ctime with the clock).
LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"
AHEAD = ("env", f"LD_PRELOAD={LIBFAKETIME}", "FAKETIME=+2d", "FAKETIME_DONT_FAKE_MONOTONIC=1", "NO_FAKE_STAT=1")


def sanitized():
    # libfaketime preloaded ahead of AddressSanitizer's runtime stops the daemon.
    return "libasan" in subprocess.run(["ldd", POPGATE], capture_output=True, text=True).stdout


def leftover(maildir, name):
    tmp = maildir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / name).write_bytes(b"Subject: half written\r\n\r\n")
    return tmp / name


def login(g):
    p = poplib.POP3("127.0.0.1", g.port("pop3"), timeout=10)
    p.user("alice")
    assert p.pass_("pw-alice").startswith(b"+OK")
    p.quit()


@pytest.mark.skipif(sanitized(), reason="libfaketime cannot be preloaded ahead of ASan's runtime")
def test_login_and_purge_remove_stale_tmp_files(make_gateway):
    g = make_gateway(overrides={"relay": {"purge_interval": 1}}, start=False)
    g.cli("db", "migrate")
    g.add_user("alice", "pw-alice")
    stale = leftover(g.maildir("alice"), "1700000000.M1P99999.gw.test")
    dropped = leftover(g.drop, "1700000001.M1P99999.gw.test")
    g.start(wrapper=AHEAD)
    login(g)
    assert not stale.exists()
    assert g.wait_log("maildir user=alice removed_stale_tmp=1")
    assert g.wait_log("stale_drop_tmp=1")
    assert not dropped.exists()


def test_fresh_tmp_files_stay(make_gateway):
    # Another delivery agent may be writing it: a file younger than 36 hours stays.
    g = make_gateway(overrides={"relay": {"purge_interval": 1}})
    g.add_user("alice", "pw-alice")
    fresh = leftover(g.maildir("alice"), "1700000000.M1P99999.gw.test")
    dropped = leftover(g.drop, "1700000001.M1P99999.gw.test")
    login(g)
    # An expired grant, so that the purge says when it has run.
    g.sql("INSERT INTO relay_grants(address, granted_at, expires_at) VALUES('192.0.2.1', unixepoch()-20, unixepoch()-10)")
    assert g.wait_log("purge expired_grants=1")
    assert fresh.exists() and dropped.exists()
    assert "removed_stale_tmp" not in g.log() and "stale_drop_tmp=0" in g.log()
