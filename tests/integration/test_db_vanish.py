"""Issue 17 item 3: the database file deleted or replaced under a running
daemon. The daemon must not go on granting relay into a file nobody else can
see (or revoke from): logins answer -ERR [SYS/TEMP], relay decisions 451,
the error is logged once, and it recovers when the file is back or on SIGHUP.
Administrative commands never make an empty database in its place."""
import os
import poplib
import smtplib
import time

from popgate_test import Gateway, eventually, make_gateway  # noqa: F401


def login(g, user, password):
    """The server's answer to the login, as bytes (+OK... or -ERR...)."""
    c = poplib.POP3("127.0.0.1", g.port("pop3"), timeout=20)
    try:
        c.user(user)
        return c.pass_(password)
    except poplib.error_proto as e:
        return e.args[0]
    finally:
        try:
            c.quit()
        except (poplib.error_proto, OSError):
            c.close()


def rcpt(g, address):
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=20) as c:
        c.ehlo("client.test")
        c.mail("sender@client.test")
        code, _ = c.rcpt(address)
        c.rset()
        return code


def remove_database(g):
    for suffix in ("", "-wal", "-shm"):
        p = str(g.db) + suffix
        if os.path.exists(p):
            os.unlink(p)


def test_deleted_database_fails_logins_and_relay_until_it_is_back(make_gateway):
    g = make_gateway()
    g.add_user("alice", "pw")
    assert login(g, "alice", "pw").startswith(b"+OK")
    assert rcpt(g, "bob@remote.test") == 250          # relayed on alice's grant
    aside = g.root / "aside.db"
    os.rename(g.db, aside)                             # "deleted" (the inode lives on, held by the daemon)

    # Before the fix the login succeeded and wrote its grant into the
    # orphaned file; now it is refused for the moment.
    reply = login(g, "alice", "pw")
    assert reply.startswith(b"-ERR [SYS/TEMP]"), reply
    # Never a relay decision from the orphaned file: its grant does not count.
    assert rcpt(g, "bob@remote.test") == 451
    assert rcpt(g, "alice@gw.test") == 451             # local delivery needs the user table
    assert login(g, "alice", "pw").startswith(b"-ERR [SYS/TEMP]")
    assert rcpt(g, "bob@remote.test") == 451
    assert g.log().count("database deleted path=") == 1, g.log()[-3000:]

    os.rename(aside, g.db)                             # restored
    assert eventually(lambda: login(g, "alice", "pw").startswith(b"+OK"))
    assert rcpt(g, "bob@remote.test") == 250
    assert "database is back" in g.log()
    assert g.log().count("database deleted path=") == 1


def test_replaced_database_is_used_after_sighup_and_its_grants_can_be_revoked(make_gateway):
    g = make_gateway()
    g.add_user("alice", "pw")
    assert login(g, "alice", "pw").startswith(b"+OK")
    # An administrator puts a new database in place of the running one.
    remove_database(g)
    g.cli("db", "migrate")
    g.add_user("bob", "pw2")

    # alice is checked in the old file (reads look at the file every couple
    # of seconds), her grant's commit finds the file replaced; from then on
    # everything is refused, bob (only in the new file) too.
    reply = login(g, "alice", "pw")
    assert reply.startswith(b"-ERR [SYS/TEMP]"), reply
    assert login(g, "bob", "pw2").startswith(b"-ERR [SYS/TEMP]")
    # alice's grant for 127.0.0.1 lives only in the old, unlinked file.
    assert rcpt(g, "carol@remote.test") == 451
    assert g.sql("SELECT count(*) FROM relay_grants") == [(0,)]
    assert g.log().count("database replaced path=") == 1, g.log()[-3000:]

    g.reload()
    assert g.wait_log("database reopened")
    assert login(g, "bob", "pw2").startswith(b"+OK")
    assert g.sql("SELECT address, user FROM relay_grants") == [("127.0.0.1", "bob")]
    assert rcpt(g, "carol@remote.test") == 250
    # What the CLI revokes in the file it sees is revoked for the daemon too.
    g.cli("grant", "del", "127.0.0.1")
    assert rcpt(g, "carol@remote.test") == 554


def test_admin_commands_do_not_create_a_missing_database(make_gateway):
    g = make_gateway()
    g.add_user("alice", "pw")
    remove_database(g)                                 # deleted under the running daemon
    passwd = g.root / "passwd"
    passwd.write_text("dave:{PLAIN}pw\n")
    for args, stdin in [(("grant", "list"), None),
                        (("grant", "add", "192.0.2.7"), None),
                        (("grant", "del", "192.0.2.7"), None),
                        (("user", "add", "carol"), "pw\n"),
                        (("user", "import", str(passwd)), None),
                        (("user", "list"), None),
                        (("allow", "add", "192.0.2.0/24"), None),
                        (("db", "check"), None)]:
        r = g.cli(*args, input=stdin, check=False)
        assert r.returncode == 3, (args, r.stdout, r.stderr)  # README "Exit codes": database unavailable
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert len(lines) == 1 and str(g.db) in lines[0] and "does not exist" in lines[0], (args, r.stderr)
        assert not os.path.exists(g.db), args
    # The daemon is still refusing, not writing into a new empty file.
    assert login(g, "alice", "pw").startswith(b"-ERR [SYS/TEMP]")
    assert not os.path.exists(g.db)
    # `db migrate` is the command that creates one.
    g.cli("db", "migrate")
    assert os.path.exists(g.db)
