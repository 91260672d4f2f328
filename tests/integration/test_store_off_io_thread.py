"""On PostgreSQL every read of the store is a network round trip, and none
runs on an I/O thread: POP3 USER (is the user APOP-only?), APOP and
CRAM-MD5 (POP3 and SMTP) look the user up through the blocking pool, as the
relay decision does. While an administrator's transaction holds the users
table, the login that waits for it stalls nobody else: with one I/O thread,
another client is greeted and answered at once.

Runs on PostgreSQL only (the _pg variant in ctest); on SQLite these reads
stay in place by design, and a WAL reader is never blocked by a writer."""
import socket
import time

import pytest

from popgate_test import BACKEND, make_gateway  # noqa: F401  (fixture)
from raw_client import Client, raw_clients_closed  # noqa: E402,F401  (autouse fixture)

pytestmark = pytest.mark.skipif(BACKEND != "postgresql", reason="PostgreSQL only: reads there cross the network")

LOCK_S = 3.0          # storage.busy_timeout_ms: how long the stalled read may wait
PROMPT_S = 1.0        # what "at once" means for the other client, with a wide margin




@pytest.fixture
def g(make_gateway):
    gw = make_gateway(overrides={"server": {"threads": 1},
                                 "storage": {"busy_timeout_ms": int(LOCK_S * 1000)},
                                 "auth": {"cram_md5": True, "plaintext": "always"}})
    gw.add_user("alice", "pw-alice", "--shared-secret")
    return gw


class users_locked:
    """An administrator's transaction holding the users table."""

    def __init__(self, g):
        import psycopg2
        self.con = psycopg2.connect(g.database)

    def __enter__(self):
        cur = self.con.cursor()
        cur.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        return self

    def __exit__(self, *exc):
        self.con.rollback()
        self.con.close()


def pop3_user(g):
    c = Client(g.port("pop3"))
    c.send(b"USER alice\r\n")
    return c


def pop3_apop(g):
    c = Client(g.port("pop3"))
    c.send(b"APOP alice " + b"0" * 32 + b"\r\n")
    return c


def smtp_cram(g):
    c = Client(g.port("smtp"))
    c.smtp(b"EHLO x\r\n")
    assert c.smtp(b"AUTH CRAM-MD5\r\n").startswith(b"334 ")
    c.send(b"YWxpY2UgMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDA=\r\n")   # "alice 000..."
    return c


def served_at_once(g):
    """Seconds until another client is greeted and its CAPA answered."""
    t0 = time.monotonic()
    c = Client(g.port("pop3"))
    assert c.greeting.startswith(b"+OK")
    c.send(b"CAPA\r\n")
    assert c.line() == b"+OK Capability list follows\r\n"
    return time.monotonic() - t0


@pytest.mark.parametrize("stalled", [pop3_user, pop3_apop, smtp_cram], ids=["pop3-user", "apop", "smtp-cram-md5"])
def test_a_login_waiting_for_the_database_stalls_no_one_else(g, stalled):
    with users_locked(g):
        waiting = stalled(g)
        time.sleep(0.2)   # its lookup has reached PostgreSQL and waits for the lock
        took = served_at_once(g)
    assert took < PROMPT_S, f"another client waited {took:.2f} s behind a store read on the I/O thread"
    # the stalled login is answered once the lock is gone (or its read timed out)
    waiting.s.settimeout(LOCK_S + 5)
    assert waiting.line(timeout=LOCK_S + 5)
