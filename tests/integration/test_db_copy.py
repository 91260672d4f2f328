"""`popgate db copy SOURCE DEST`: moving a site from SQLite to PostgreSQL and
back (issue 12). Users, networks and unexpired grants (with their logins)
arrive with every column intact, in one transaction; expired grants and the
audit history stay behind; a destination that already holds rows is refused
unless --replace; a copied user logs in on a daemon serving the new database.
"""
import sqlite3
import subprocess

import pytest

from popgate_test import POPGATE, SourcePOP3, make_gateway  # noqa: F401
from private_postgres import pg_database, postgres_server  # noqa: F401  (fixtures)


def cli(*args, input=None):
    return subprocess.run([POPGATE, *args], input=input, capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def site(tmp_path):
    """A SQLite site: two users, two networks, a live grant with its login, an
    expired grant."""
    db = str(tmp_path / "site.db")
    assert cli("--db", db, "db", "migrate").returncode == 0
    assert cli("--db", db, "user", "add", "alice", "--scheme", "sha512-crypt", "--shared-secret",
               input="pw-alice-42\n").returncode == 0
    assert cli("--db", db, "user", "add", "carol", "--scheme", "sha512-crypt", "--disabled",
               input="pw-carol-42\n").returncode == 0
    assert cli("--db", db, "allow", "add", "192.0.2.0/24").returncode == 0
    assert cli("--db", db, "allow", "add", "2001:db8::/32").returncode == 0
    con = sqlite3.connect(db)
    with con:
        con.execute("INSERT INTO relay_grants (address, user, method, tls, listener, granted_at, expires_at, hits,"
                    " last_used, quota_hour, quota_messages, quota_recipients)"
                    " VALUES ('198.51.100.7', 'alice', 'pass', 1, 'pop3s', unixepoch() - 60, unixepoch() + 900, 7,"
                    " unixepoch() - 5, (unixepoch() / 3600) * 3600, 2, 3)")
        con.execute("INSERT INTO relay_grant_logins (address, user, last_login, expires_at)"
                    " VALUES ('198.51.100.7', 'alice', unixepoch() - 60, unixepoch() + 900)")
        con.execute("INSERT INTO relay_grants (address, user, granted_at, expires_at)"
                    " VALUES ('198.51.100.8', 'alice', unixepoch() - 7200, unixepoch() - 3600)")
    con.close()
    return db


def sqlite_rows(db, sql):
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_sqlite_to_postgresql_and_back_keeps_every_column(site, pg_database, postgres_server, tmp_path):  # noqa: F811
    r = cli("db", "copy", site, pg_database)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("copied 2 users, 2 networks, 1 unexpired grants (1 logins) to postgresql://popgate@")
    assert "passfile" in r.stdout and "pgpass" in r.stdout  # the URI as given: it holds no password

    pg = postgres_server
    db = pg_database.dbname
    users = pg.psql(db, "SELECT name, password_hash, shared_secret, disabled, apop_only, created_at, updated_at"
                        " FROM users ORDER BY name")
    want = sqlite_rows(site, "SELECT name, password_hash, shared_secret, disabled, apop_only, created_at, updated_at"
                             " FROM users ORDER BY name")
    assert [(n, h, s, d == "t", a == "t", int(c), int(u)) for n, h, s, d, a, c, u in users] == \
        [(n, h, s, bool(d), bool(a), c, u) for n, h, s, d, a, c, u in want]
    cols = "user, method, tls, listener, granted_at, expires_at, hits, last_used, quota_hour, quota_messages," \
           " quota_recipients"
    grants = pg.psql(db, f'SELECT host(address), {cols.replace("user", chr(34) + "user" + chr(34), 1)}'
                         " FROM relay_grants")
    [(a, u, m, t, listener, *nums)] = grants
    [(wa, wu, wm, wt, wlistener, *wnums)] = sqlite_rows(site, f"SELECT address, {cols} FROM relay_grants"
                                                              " WHERE expires_at > unixepoch()")
    assert (a, u, m, t == "t", listener, [int(x) for x in nums]) == (wa, wu, wm, bool(wt), wlistener, wnums)
    assert pg.psql(db, 'SELECT host(address), "user" FROM relay_grant_logins') == [("198.51.100.7", "alice")]
    assert pg.psql(db, "SELECT text(cidr) FROM allowed_networks ORDER BY id") == \
        [("192.0.2.0/24",), ("2001:db8::/32",)]
    # The history stays behind; the copy itself is on record at the destination.
    assert pg.psql(db, "SELECT event, detail FROM audit_log") == \
        [("admin", f"db copy from {site}: 2 users 2 networks 1 grants")]

    # Into a database that already holds rows: refused, nothing changed.
    r = cli("db", "copy", site, pg_database)
    assert r.returncode == 1
    assert "the destination already holds 2 users, 2 networks and 1 grants (use --replace)" in r.stderr
    assert pg.psql(db, "SELECT count(*) FROM users") == [("2",)]
    # --replace: the destination's rows are replaced in the same transaction.
    pg.psql(db, "INSERT INTO users (name) VALUES ('dave')")
    r = cli("db", "copy", "--replace", site, pg_database)
    assert r.returncode == 0, r.stderr
    assert pg.psql(db, "SELECT name FROM users ORDER BY name") == [("alice",), ("carol",)]

    # And back into a new SQLite file: the same rows as the original.
    back = str(tmp_path / "back.db")
    assert cli("--db", back, "db", "migrate").returncode == 0  # copy makes no database
    r = cli("db", "copy", pg_database, back)
    assert r.returncode == 0, r.stderr
    for sql in ("SELECT name, password_hash, shared_secret, disabled, apop_only, created_at, updated_at FROM users",
                f"SELECT address, {cols} FROM relay_grants WHERE expires_at > unixepoch()",
                "SELECT address, user, last_login, expires_at FROM relay_grant_logins",
                "SELECT cidr, note, created_at, expires_at FROM allowed_networks"):
        assert sqlite_rows(back, sql) == sqlite_rows(site, sql), sql


def test_a_row_postgresql_refuses_is_named_and_nothing_is_copied(site, pg_database, postgres_server):  # noqa: F811
    # SQLite keeps any bytes as TEXT; PostgreSQL refuses a note that is not
    # UTF-8. The copy failed as a whole with PostgreSQL's message alone; it
    # now names the table and the row, so the administrator can fix it.
    con = sqlite3.connect(site)
    with con:
        con.execute("UPDATE allowed_networks SET note = CAST(X'6f6666696365ff' AS TEXT) WHERE cidr = '2001:db8::/32'")
    con.close()
    r = cli("db", "copy", site, pg_database)
    assert r.returncode != 0
    assert "allowed_networks row 2001:db8::/32 refused: " in r.stderr, r.stderr
    assert "invalid byte sequence" in r.stderr, r.stderr
    db = pg_database.dbname
    for table in ("users", "allowed_networks", "relay_grants"):
        assert postgres_server.psql(db, f"SELECT count(*) FROM {table}") == [("0",)], table


def test_a_secret_holding_a_nul_is_refused_not_cut_short(site, pg_database, postgres_server):  # noqa: F811
    # libpq takes text parameters as C strings: a shared secret "\0..." went
    # to PostgreSQL as "" (APOP with an empty secret then logged in), and
    # the copy said it had succeeded.
    con = sqlite3.connect(site)
    with con:
        con.execute("UPDATE users SET shared_secret = CAST(X'00746f70736563726574' AS TEXT) WHERE name = 'alice'")
    con.close()
    r = cli("db", "copy", site, pg_database)
    assert r.returncode != 0
    assert "users row alice refused: a value holding a NUL byte, which PostgreSQL text cannot hold" in r.stderr, \
        r.stderr
    assert "topsecret" not in r.stderr
    assert postgres_server.psql(pg_database.dbname, "SELECT count(*) FROM users") == [("0",)]


def test_a_copied_user_logs_in_on_a_daemon_serving_postgresql(site, pg_database, make_gateway):  # noqa: F811
    assert cli("db", "copy", site, pg_database).returncode == 0
    g = make_gateway({"storage": {"database": str(pg_database)}})
    p = SourcePOP3(g.port("pop3"), "127.0.0.61")
    p.user("alice")
    assert p.pass_("pw-alice-42").startswith(b"+OK")
    p.quit()
    # carol was copied disabled, and stays so.
    p = SourcePOP3(g.port("pop3"), "127.0.0.62")
    p.user("carol")
    with pytest.raises(Exception):
        p.pass_("pw-carol-42")


def test_copy_refuses_the_same_database_and_a_missing_source(site, tmp_path):
    r = cli("db", "copy", site, site)
    assert r.returncode == 1 and "source and destination are the same database" in r.stderr
    r = cli("db", "copy", str(tmp_path / "nope.db"), str(tmp_path / "dest.db"))
    assert r.returncode == 3
    assert "nope.db does not exist" in r.stderr
    assert not (tmp_path / "dest.db").exists()


def test_copy_refuses_a_missing_destination_file(site, tmp_path):
    """Only `db migrate` and `serve` make a database (issue 14): a mistyped
    destination is refused (3, database unavailable), not made."""
    dest = tmp_path / "new.db"
    r = cli("--db", site, "db", "copy", site, str(dest))
    assert r.returncode == 3, r.stdout + r.stderr
    assert f"destination database {dest} does not exist: run `popgate --db {dest} db migrate` first" in r.stderr
    assert r.stdout == ""
    assert not dest.exists() and not list(tmp_path.glob("new.db*"))
    # Made by `db migrate`, the same file takes the copy.
    assert cli("--db", str(dest), "db", "migrate").returncode == 0
    r = cli("--db", site, "db", "copy", site, str(dest))
    assert r.returncode == 0, r.stderr
    assert sqlite_rows(str(dest), "SELECT name FROM users ORDER BY name") == [("alice",), ("carol",)]
