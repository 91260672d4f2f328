"""Guard rails on grants (issue 15, item 4) with real clients against the
running daemon: a listener that does not grant, no-grant networks, grants for
TLS logins only, per-grant hourly quotas, at most N grants per user, grants
revoked with their user (CLI and plain SQL), and `popgate grant list`. Each
rule is tested on its refusal side (no relay) as well as its grant side.

Clients come from distinct loopback addresses (Linux routes 127/8 to lo), so
each address has a grant of its own."""
import base64
import poplib
import smtplib
import subprocess
import threading
import time

import pytest

from popgate_test import BACKEND, client_tls_context, eventually, make_gateway, sqlite_only  # noqa: F401  (fixture)
from pop3_support import SourcePOP3, SourcePOP3_SSL, _close_clients  # noqa: F401  (autouse fixture)

BODY = b"From: a@example.org\r\nTo: x@remote.test\r\nSubject: guard\r\n\r\nbody\r\n"
LISTENERS = [
    {"name": "pop3", "protocol": "pop3", "tls": "starttls"},
    {"name": "pop3s", "protocol": "pop3", "tls": "implicit"},
    {"name": "reader", "protocol": "pop3", "tls": "starttls", "grant": False},
    {"name": "smtp", "protocol": "smtp", "tls": "starttls"},
]
DENIED = (554, b"5.7.1 <x@remote.test>: Relay access denied")


@pytest.fixture
def gw(make_gateway):
    """make_gateway with these listeners and [relay] keys; alice and bob exist."""
    def make(**relay):
        g = make_gateway(overrides={"relay": relay, "auth": {"cram_md5": False}}, listeners=LISTENERS)
        g.add_user("alice", "pw-alice")
        g.add_user("bob", "pw-bob")
        return g
    return make


def login(g, source="127.0.0.1", listener="pop3", user="alice", password=None, stls=False):
    """A POP3 login with poplib from `source`; returns the +OK of PASS."""
    p = SourcePOP3_SSL(g.port(listener), source) if listener == "pop3s" else SourcePOP3(g.port(listener), source)
    if stls:
        p.stls(context=client_tls_context())
    p.user(user)
    ok = p.pass_(password or "pw-" + user)
    p.quit()
    return ok


def smtp_from(g, source, auth=None):
    s = smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=10, source_address=(source, 0))
    s.ehlo("client.test")
    if auth:
        s.user, s.password = auth
        assert s.auth("PLAIN", s.auth_plain)[0] == 235
    return s


def rcpt_from(g, source, rcpt="x@remote.test", auth=None):
    """The reply to RCPT TO:<rcpt> in a transaction from `source`."""
    with smtp_from(g, source, auth) as s:
        assert s.mail("a@example.org")[0] == 250
        return s.rcpt(rcpt)


def grants(g):
    return g.sql("SELECT address, user FROM relay_grants ORDER BY address")


def audit(g, *events):
    marks = ",".join("?" * len(events))
    return g.sql(f"SELECT event, address, user, detail FROM audit_log WHERE event IN ({marks}) ORDER BY id", events)


# --------------------------------------------------------------- listener grant = false


def test_listener_without_grant_logs_in_and_writes_no_grant(gw):
    g = gw()
    assert login(g, "127.0.0.2", "reader").startswith(b"+OK")
    assert grants(g) == []
    assert g.wait_log("pop3 login user=alice ip=127.0.0.2 mech=pass tls=no result=ok grant=no reason=listener ")
    assert audit(g, "no-grant", "grant") == [
        ("no-grant", "127.0.0.2", "alice", "pop3 mech=pass listener=reader tls=no reason=listener")]
    assert rcpt_from(g, "127.0.0.2") == DENIED
    # The same user on a granting listener opens relay as before.
    assert login(g, "127.0.0.2", "pop3").startswith(b"+OK")
    assert grants(g) == [("127.0.0.2", "alice")]
    assert rcpt_from(g, "127.0.0.2")[0] == 250
    assert g.wait_log("pop3 login user=alice ip=127.0.0.2 mech=pass tls=no result=ok grant=127.0.0.2 grant_until=")


# --------------------------------------------------------------- relay.no_grant_networks


def test_no_grant_network_logs_in_without_grant_and_smtp_auth_still_relays(gw):
    g = gw(no_grant_networks=["127.0.0.64/26"])
    assert login(g, "127.0.0.70").startswith(b"+OK")
    assert grants(g) == []
    assert g.wait_log("ip=127.0.0.70 mech=pass tls=no result=ok grant=no reason=no-grant-network "
                      "network=127.0.0.64/26 ")
    assert audit(g, "no-grant") == [("no-grant", "127.0.0.70", "alice",
                                     "pop3 mech=pass listener=pop3 tls=no reason=no-grant-network "
                                     "network=127.0.0.64/26")]
    assert rcpt_from(g, "127.0.0.70") == DENIED
    # The user there relays with SMTP AUTH.
    assert rcpt_from(g, "127.0.0.70", auth=("alice", "pw-alice"))[0] == 250
    # Outside the network a login grants.
    assert login(g, "127.0.0.9").startswith(b"+OK")
    assert grants(g) == [("127.0.0.9", "alice")]
    assert rcpt_from(g, "127.0.0.9")[0] == 250
    assert rcpt_from(g, "127.0.0.70") == DENIED  # and only that address


def test_no_grant_networks_refuses_a_bad_network_in_check_config(gw, tmp_path):
    from popgate_test import Gateway, POPGATE
    g = Gateway(tmp_path / "bad", overrides={"relay": {"no_grant_networks": ["100.64.0.0/10", "100.64.0.1/8"]}})
    r = subprocess.run([POPGATE, "-c", str(g.config_file), "check-config"], capture_output=True, text=True)
    assert r.returncode != 0
    assert "relay.no_grant_networks: '100.64.0.1/8': " in r.stderr, r.stderr


# --------------------------------------------------------------- relay.grant_requires_tls


def test_grant_requires_tls_clear_login_grants_nothing(gw):
    g = gw(grant_requires_tls=True)
    # curl, in clear: the login works (the mailbox is listed), no grant.
    r = subprocess.run(["curl", "-sS", "--interface", "127.0.0.13", "-u", "alice:pw-alice",
                        f"pop3://127.0.0.1:{g.port('pop3')}/"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert g.wait_log("user=alice ip=127.0.0.13 mech=sasl-plain tls=no result=ok grant=no reason=no-tls ")
    assert login(g, "127.0.0.14").startswith(b"+OK")  # poplib in clear
    assert grants(g) == []
    assert [(e, a, d.split()[-1]) for e, a, _, d in audit(g, "no-grant")] == [
        ("no-grant", "127.0.0.13", "reason=no-tls"), ("no-grant", "127.0.0.14", "reason=no-tls")]
    assert rcpt_from(g, "127.0.0.13") == DENIED
    assert rcpt_from(g, "127.0.0.14") == DENIED


def test_grant_requires_tls_stls_and_pop3s_grant(gw):
    g = gw(grant_requires_tls=True)
    # curl with STLS required
    r = subprocess.run(["curl", "-sS", "--ssl-reqd", "-k", "--interface", "127.0.0.15", "-u", "alice:pw-alice",
                        f"pop3://127.0.0.1:{g.port('pop3')}/"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert login(g, "127.0.0.16", stls=True).startswith(b"+OK")
    assert login(g, "127.0.0.17", "pop3s").startswith(b"+OK")
    assert grants(g) == [("127.0.0.15", "alice"), ("127.0.0.16", "alice"), ("127.0.0.17", "alice")]
    assert g.sql("SELECT DISTINCT tls FROM relay_grants") == [(1,)]
    assert g.wait_log("user=alice ip=127.0.0.17 mech=pass tls=yes result=ok grant=127.0.0.17 ")
    for src in ("127.0.0.15", "127.0.0.16", "127.0.0.17"):
        assert rcpt_from(g, src)[0] == 250


# --------------------------------------------------------------- per-grant quotas


def clear_of_the_hour_boundary():
    """Quotas count per clock hour: a test that crossed it would see the counts
    start again. Wait until the hour has at least a minute left."""
    left = 3600 - time.time() % 3600
    if left < 60:
        time.sleep(left + 1)


def test_message_quota_refuses_the_next_message_with_452(gw):
    clear_of_the_hour_boundary()
    g = gw(grant_max_messages_per_hour=2)
    login(g, "127.0.0.30")
    with smtp_from(g, "127.0.0.30") as s:
        # Message 1: two recipients, one message.
        assert s.mail("a@example.org")[0] == 250
        assert s.rcpt("x@remote.test")[0] == 250
        assert s.rcpt("y@remote.test")[0] == 250
        assert s.data(BODY)[0] == 250
        # Message 2.
        assert s.mail("a@example.org")[0] == 250
        assert s.rcpt("x@remote.test")[0] == 250
        assert s.data(BODY)[0] == 250
        # Message 3: over the quota, at its first relayed recipient.
        assert s.mail("a@example.org")[0] == 250
        assert s.rcpt("x@remote.test") == (452, b"4.7.1 <x@remote.test>: Relay quota exceeded for your address "
                                                b"(2 messages per hour), try again later or use SMTP AUTH")
        # Local delivery is not relaying: no quota.
        assert s.rcpt("alice@gw.test")[0] == 250
        s.rset()
    assert len(g.dropped()) == 2
    assert g.wait_log("smtp rcpt to=<x@remote.test> ip=127.0.0.30 decision=quota detail=grant_user=alice "
                      "grant=127.0.0.30 quota=messages used=2 max=2")
    # Deny rows are group-committed after the reply.
    assert ("deny", "127.0.0.30", "", "x@remote.test quota: 2 messages per hour") in eventually(lambda: audit(g, "deny"))
    # The same user relays with SMTP AUTH, which has no quota.
    assert rcpt_from(g, "127.0.0.30", auth=("alice", "pw-alice"))[0] == 250
    # A new login at the address keeps the count: no reset by polling.
    login(g, "127.0.0.30")
    assert rcpt_from(g, "127.0.0.30")[0] == 452
    # Another address has its own grant and its own count.
    login(g, "127.0.0.31")
    assert rcpt_from(g, "127.0.0.31")[0] == 250


def test_recipient_quota_with_swaks_and_the_count_lives_with_the_grant(gw):
    clear_of_the_hour_boundary()
    g = gw(grant_max_recipients_per_hour=3)
    login(g, "127.0.0.32")
    r = subprocess.run(["swaks", "--server", f"127.0.0.1:{g.port('smtp')}", "--local-interface", "127.0.0.32",
                        "--to", "a@remote.test,b@remote.test,c@remote.test,d@remote.test",
                        "--from", "alice@gw.test", "--body", "quota"], capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    # swaks goes on with the recipients that were taken.
    assert "<** 452 4.7.1 <d@remote.test>: Relay quota exceeded for your address (3 recipients per hour)" in out, out
    assert out.count("<-  250 2.1.5 Ok") == 3, out
    assert len(g.dropped()) == 1
    # The counters reach the grant's row (within the write queue's second)...
    deadline = time.time() + 5
    while time.time() < deadline and g.sql("SELECT quota_recipients FROM relay_grants") != [(3,)]:
        time.sleep(0.1)
    hour = int(time.time()) // 3600 * 3600
    assert g.sql("SELECT quota_hour, quota_messages, quota_recipients FROM relay_grants") == [(hour, 1, 3)]
    # ...so a restarted daemon (or another node on the same store) holds them.
    g.stop()
    g.start()
    assert rcpt_from(g, "127.0.0.32", "e@remote.test")[0] == 452
    line = [l for l in g.cli("grant", "list").stdout.splitlines() if l.startswith("127.0.0.32\t")]
    assert line and "\tthis hour 1 messages 3/3 recipients\t" in line[0], line


def test_a_repeated_recipient_costs_the_recipient_quota_once(gw):
    clear_of_the_hour_boundary()
    g = gw(grant_max_recipients_per_hour=2)
    login(g, "127.0.0.34")
    with smtp_from(g, "127.0.0.34") as s:
        assert s.mail("a@example.org")[0] == 250
        assert s.rcpt("x@remote.test")[0] == 250
        # A client that repeats a recipient (a list with one address twice)
        # gets its first answer again, and nothing more is charged...
        assert s.rcpt("x@remote.test") == (250, b"2.1.5 Ok")
        assert s.rcpt("w@remote.test")[0] == 250
        # ...so the quota of 2 refuses only a third distinct one.
        assert s.rcpt("y@remote.test")[0] == 452
        assert s.data(BODY)[0] == 250
    assert g.wait_log("smtp rcpt to=<x@remote.test> ip=127.0.0.34 decision=repeat")
    (message,) = g.dropped()
    assert b"X-Envelope-To: <x@remote.test>, <w@remote.test>\n" in message
    deadline = time.time() + 5
    while time.time() < deadline and g.sql("SELECT quota_recipients FROM relay_grants") != [(2,)]:
        time.sleep(0.1)
    assert g.sql("SELECT quota_recipients FROM relay_grants") == [(2,)]
    # A repeat is no way around a refusal: a recipient refused before is
    # decided again, and refused again.
    with smtp_from(g, "127.0.0.34") as s:
        assert s.mail("a@example.org")[0] == 250
        assert s.rcpt("z@remote.test")[0] == 452
        assert s.rcpt("z@remote.test")[0] == 452
    assert rcpt_from(g, "127.0.0.35") == DENIED


def test_quota_counts_nothing_without_a_grant(gw):
    # Without a grant a refusal stays a refusal (never a 452 that suggests a retry).
    g = gw(grant_max_messages_per_hour=1)
    assert rcpt_from(g, "127.0.0.33") == DENIED


# --------------------------------------------------------------- relay.max_grants_per_user


def test_max_grants_per_user_replaces_the_oldest(gw):
    g = gw(max_grants_per_user=2)
    for src in ("127.0.0.21", "127.0.0.22"):
        login(g, src)
        time.sleep(1.05)  # granted_at is in seconds: the order is clear
    assert grants(g) == [("127.0.0.21", "alice"), ("127.0.0.22", "alice")]
    login(g, "127.0.0.23")
    assert grants(g) == [("127.0.0.22", "alice"), ("127.0.0.23", "alice")]
    assert g.wait_log("ip=127.0.0.23 mech=pass tls=no result=ok grant=127.0.0.23 grant_until=")
    assert g.wait_log(" replaced=127.0.0.21 held=2 max=2 ")
    assert ("revoke", "127.0.0.21", "alice", "max_grants_per_user=2: replaced by a login from 127.0.0.23") \
        in audit(g, "revoke")
    assert rcpt_from(g, "127.0.0.21") == DENIED
    assert rcpt_from(g, "127.0.0.22")[0] == 250
    assert rcpt_from(g, "127.0.0.23")[0] == 250
    # A refresh at an address the user holds replaces nothing; other users count apart.
    login(g, "127.0.0.22")
    login(g, "127.0.0.24", user="bob")
    assert grants(g) == [("127.0.0.22", "alice"), ("127.0.0.23", "alice"), ("127.0.0.24", "bob")]


def test_max_grants_per_user_refuse_keeps_the_old_grants(gw):
    g = gw(max_grants_per_user=1, grant_limit_action="refuse")
    login(g, "127.0.0.25")
    assert login(g, "127.0.0.26").startswith(b"+OK")  # the login itself succeeds
    assert grants(g) == [("127.0.0.25", "alice")]
    assert g.wait_log("ip=127.0.0.26 mech=pass tls=no result=ok grant=no reason=max-grants-per-user held=1 max=1 ")
    assert audit(g, "no-grant") == [("no-grant", "127.0.0.26", "alice",
                                     "pop3 mech=pass listener=pop3 tls=no reason=max-grants-per-user held=1 max=1")]
    assert rcpt_from(g, "127.0.0.26") == DENIED
    assert rcpt_from(g, "127.0.0.25")[0] == 250
    # Refreshing the grant it holds is never refused.
    login(g, "127.0.0.25")
    assert not g.log().count("ip=127.0.0.25 mech=pass tls=no result=ok grant=no")
    # Once it expires, a login elsewhere grants again.
    g.sql("UPDATE relay_grants SET granted_at = unixepoch() - 100, expires_at = unixepoch() - 1")
    login(g, "127.0.0.26")
    assert ("127.0.0.26", "alice") in grants(g)


# --------------------------------------------------------------- revoked with the user


def granted(g, source, user="alice"):
    login(g, source, user=user)
    assert rcpt_from(g, source)[0] == 250


@pytest.mark.parametrize("how", ["passwd", "disable", "del"])
def test_cli_revokes_the_users_grants(gw, how):
    g = gw()
    granted(g, "127.0.0.41")
    granted(g, "127.0.0.42", user="bob")
    if how == "passwd":
        g.cli("user", "passwd", "alice", "--scheme", "sha512-crypt", input="new-pw\n")
        detail = "password changed"
    elif how == "disable":
        g.cli("user", "set", "alice", "--disabled", "true")
        detail = "user disabled"
    else:
        assert "(1 grants revoked)" in g.cli("user", "del", "alice").stdout
        detail = "user deleted"
    assert rcpt_from(g, "127.0.0.41") == DENIED
    assert grants(g) == [("127.0.0.42", "bob")]
    assert rcpt_from(g, "127.0.0.42")[0] == 250  # another user's grant stays
    assert ("revoke", "127.0.0.41", "alice", detail) in audit(g, "revoke")


@pytest.mark.parametrize("statement,detail", [
    ("UPDATE users SET password_hash = '$6$abcdefgh$0123456789abcdef' WHERE name = 'alice'", "password changed"),
    ("UPDATE users SET shared_secret = 'new' WHERE name = 'alice'", "password changed"),
    ("UPDATE users SET disabled = true WHERE name = 'alice'", "user disabled"),
    ("DELETE FROM users WHERE name = 'alice'", "user deleted"),
    ("UPDATE users SET name = 'alice2' WHERE name = 'alice'", "user renamed"),
    ("INSERT INTO revoke_user_grants (user, detail) VALUES ('alice', 'phone stolen')", "phone stolen"),
])
def test_sql_revokes_the_users_grants(gw, statement, detail):
    g = gw()
    granted(g, "127.0.0.43")
    granted(g, "127.0.0.44", user="bob")
    g.sql(statement)
    assert rcpt_from(g, "127.0.0.43") == DENIED
    assert grants(g) == [("127.0.0.44", "bob")]
    assert ("revoke", "127.0.0.43", "alice", detail) in audit(g, "revoke")


@sqlite_only("REPLACE is SQLite's; on PostgreSQL a rename onto a name fails on the key")
@pytest.mark.parametrize("statement,alice_renamed", [
    # alice, with her own password, becomes bob: bob's login must not relay on.
    ("UPDATE OR REPLACE users SET name = 'bob' WHERE name = 'alice'", True),
    # A row put at bob's rowid, or moved there, deletes bob.
    ("INSERT OR REPLACE INTO users (rowid, name, password_hash) "
     "SELECT rowid, 'carol', password_hash FROM users WHERE name = 'bob'", False),
    ("UPDATE OR REPLACE users SET rowid = (SELECT rowid FROM users WHERE name = 'bob') WHERE name = 'alice'", False),
])
def test_a_user_replaced_in_the_sqlite3_shell_stops_relaying(gw, statement, alice_renamed):
    """REPLACE deletes the row in its way without DELETE triggers; schema 7
    revokes that user's grants (detail 'user replaced'), through the
    administrator's own sqlite3 shell, while the daemon runs."""
    g = gw()
    granted(g, "127.0.0.45")
    granted(g, "127.0.0.46", user="bob")
    r = subprocess.run(["sqlite3", str(g.db), statement], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert rcpt_from(g, "127.0.0.46") == DENIED
    assert ("revoke", "127.0.0.46", "bob", "user replaced") in audit(g, "revoke")
    assert g.sql("SELECT count(*) FROM users_replaced") == [(0,)]
    if alice_renamed:
        assert rcpt_from(g, "127.0.0.45") == DENIED  # the rename's own revocation
    else:
        assert rcpt_from(g, "127.0.0.45")[0] == 250  # alice's grant was not in the way


def held_user_change(g, statement, started, release):
    """`statement` in a transaction an administrator's sqlite3 or psql
    session holds open until `release` is set; `started` once it ran."""
    if g.backend == "postgresql":
        import psycopg2
        con = psycopg2.connect(g.database)
        commit = con.commit
    else:
        import sqlite3
        con = sqlite3.connect(g.db, timeout=10, isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
        commit = lambda: con.execute("COMMIT")  # noqa: E731
    try:
        con.cursor().execute(statement)
        started.set()
        release.wait(10)
        commit()
    finally:
        con.close()


@pytest.mark.parametrize("statement", [
    "UPDATE users SET disabled = true WHERE name = 'alice'",
    "DELETE FROM users WHERE name = 'alice'",
    "UPDATE users SET name = 'alice2' WHERE name = 'alice'",
    "UPDATE users SET password_hash = '$6$abcdefgh$0123456789abcdef' WHERE name = 'alice'",
    "UPDATE users SET shared_secret = 'another' WHERE name = 'alice'",
    # bob's row, with bob's password, becomes alice (SQLite: on PostgreSQL the
    # rename fails on the key, and alice's login is then granted).
    "UPDATE OR REPLACE users SET name = 'alice' WHERE name = 'bob'",
], ids=["disabled", "deleted", "renamed", "password", "secret", "replaced"])
def test_a_user_changed_during_the_login_keeps_no_grant(gw, statement):
    # The password check reads the user before the change commits; the
    # grant waits for the administrator's transaction. The trigger that
    # revokes the user's grants cannot see one not yet written: the grant
    # itself must check that its user can still log in, with the password
    # and shared secret the login checked.
    if "OR REPLACE" in statement and BACKEND == "postgresql":
        pytest.skip("REPLACE is SQLite's")
    g = gw()
    started, release = threading.Event(), threading.Event()
    admin = threading.Thread(target=held_user_change, args=(g, statement, started, release))
    admin.start()
    answer = []

    def log_in():
        try:
            answer.append(login(g, "127.0.0.47"))
        except poplib.error_proto as e:
            answer.append(e.args[0])

    try:
        assert started.wait(10)
        client = threading.Thread(target=log_in)
        client.start()
        time.sleep(1)   # the password check has run; the grant waits for the lock
    finally:
        release.set()
        admin.join(15)
    client.join(15)
    # Not [AUTH]: the password was right when it was checked.
    assert answer == [b"-ERR [SYS/TEMP] Unable to record the login, try again later"]
    assert g.wait_log("pop3 grant failed user=alice ip=127.0.0.47 error=")
    # PostgreSQL waits 250 ms for the row, less than the transaction is held.
    why = "being changed by another transaction" if g.backend == "postgresql" else "during the login"
    assert why in g.log()
    assert grants(g) == []
    assert audit(g, "grant") == []
    assert rcpt_from(g, "127.0.0.47") == DENIED
    # bob, untouched, still logs in and relays.
    if "OR REPLACE" not in statement:
        granted(g, "127.0.0.48", user="bob")


def test_a_user_row_held_open_delays_no_other_login(gw):
    # PostgreSQL: the grant's check locks its user's row FOR SHARE. An
    # administrator's open transaction that changed the row (here a change
    # that revokes nothing) makes that login fail at once, not wait out the
    # busy timeout with the batch's other logins behind it. (SQLite: such a
    # transaction holds the whole database, as it always has.)
    g = gw()
    if g.backend != "postgresql":
        pytest.skip("row locks are PostgreSQL's")
    started, release = threading.Event(), threading.Event()
    admin = threading.Thread(target=held_user_change,
                             args=(g, "UPDATE users SET apop_only = false WHERE name = 'alice'", started, release))
    admin.start()
    answers = {}

    def log_in(user, source):
        t0 = time.monotonic()
        try:
            reply = login(g, source, user=user)
        except poplib.error_proto as e:
            reply = e.args[0]
        answers[user] = (reply, time.monotonic() - t0)

    try:
        assert started.wait(10)
        clients = [threading.Thread(target=log_in, args=("alice", "127.0.0.63")),
                   threading.Thread(target=log_in, args=("bob", "127.0.0.64"))]
        for c in clients:
            c.start()
        for c in clients:
            c.join(15)
    finally:
        release.set()
        admin.join(15)
    assert answers["alice"][0] == b"-ERR [SYS/TEMP] Unable to record the login, try again later"
    assert answers["bob"][0].startswith(b"+OK")
    # Both answered well inside storage.busy_timeout_ms (5 s).
    assert answers["alice"][1] < 3 and answers["bob"][1] < 3, answers
    assert g.wait_log("is being changed by another transaction")
    assert grants(g) == [("127.0.0.64", "bob")]
    # Once the transaction is over, alice logs in and is granted again.
    granted(g, "127.0.0.63")


def test_changes_that_lock_nobody_out_keep_the_grant(gw):
    g = gw()
    granted(g, "127.0.0.45")
    g.cli("user", "set", "alice", "--apop-only", "false")   # rewrites the row, same password
    g.sql("UPDATE users SET password_hash = password_hash, disabled = false WHERE name = 'alice'")
    g.sql("UPDATE users SET disabled = true WHERE name = 'bob'")
    assert grants(g) == [("127.0.0.45", "alice")]
    assert rcpt_from(g, "127.0.0.45")[0] == 250


def grant_row(g, address):
    """(user, method, lifetime in seconds) of the address's grant."""
    rows = g.sql("SELECT user, method, expires_at - granted_at FROM relay_grants WHERE address = ?", (address,))
    assert len(rows) == 1, rows
    return rows[0]


def test_a_login_never_shortens_or_takes_over_a_standing_grant(gw):
    g = gw()   # relay.grant_ttl: the default, 30 minutes
    g.cli("grant", "add", "127.0.0.47", "--ttl", "7d")
    login(g, "127.0.0.47")
    assert grant_row(g, "127.0.0.47") == ("", "cli", 7 * 86400)
    # not alice's grant: her password change revokes her grants, not this one
    g.cli("user", "passwd", "alice", "--scheme", "sha512-crypt", input="new-pw\n")
    assert rcpt_from(g, "127.0.0.47")[0] == 250
    # a shorter one is refreshed by the login and becomes the login's
    g.cli("grant", "add", "127.0.0.48", "--ttl", "10m")
    login(g, "127.0.0.48", password="new-pw")
    user, method, lifetime = grant_row(g, "127.0.0.48")
    assert (user, method) == ("alice", "pass") and 1790 <= lifetime <= 1800
    # and the administrator may shorten any grant
    g.cli("grant", "add", "127.0.0.47", "--ttl", "5m")
    assert grant_row(g, "127.0.0.47") == ("", "cli", 300)


# --------------------------------------------------------------- popgate grant list


def test_grant_list_shows_method_tls_listener_hits_quota_and_sharing_users(gw):
    clear_of_the_hour_boundary()
    g = gw(grant_max_messages_per_hour=10)
    login(g, "127.0.0.50", user="bob")                # in clear
    login(g, "127.0.0.50", user="alice", stls=True)   # the same address, over TLS: the row is alice's now
    login(g, "127.0.0.51", "pop3s", user="bob")
    # AUTH PLAIN over POP3 (RFC 5034)
    p = SourcePOP3(g.port("pop3"), "127.0.0.52")
    p._shortcmd("AUTH PLAIN " + base64.b64encode(b"\0alice\0pw-alice").decode())
    p.quit()
    with smtp_from(g, "127.0.0.50") as s:
        s.sendmail("a@example.org", ["x@remote.test", "y@remote.test"], BODY)
    deadline = time.time() + 5
    while time.time() < deadline and g.sql("SELECT hits FROM relay_grants WHERE address = '127.0.0.50'") != [(2,)]:
        time.sleep(0.1)
    rows = {l.split("\t")[0]: l.split("\t") for l in g.cli("grant", "list").stdout.splitlines()}
    a = rows["127.0.0.50"]
    assert a[1:3] == ["alice", "pass+tls"] and a[3].startswith("until ")
    assert a[4:] == ["hits 2", "listener pop3", "this hour 1/10 messages 2 recipients", "users 2"], a
    assert rows["127.0.0.51"][1:3] == ["bob", "pass+tls"]
    assert rows["127.0.0.51"][4:] == ["hits 0", "listener pop3s", "this hour 0/10 messages 0 recipients", "users 1"]
    assert rows["127.0.0.52"][1:3] == ["alice", "sasl-plain"]
    # bob's login at .50 is forgotten with bob's grants: one user left there.
    g.cli("user", "passwd", "bob", "--scheme", "sha512-crypt", input="x\n")
    rows = {l.split("\t")[0]: l.split("\t") for l in g.cli("grant", "list").stdout.splitlines()}
    assert rows["127.0.0.50"][-1] == "users 1" and "127.0.0.51" not in rows
