"""The `popgate` admin command against real databases: every subcommand, and
every bad input answered with one clear line on stderr and a non-zero exit."""
import json
import re
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from popgate_test import LATEST_SCHEMA, POPGATE, Gateway, sqlite_only


@pytest.fixture
def gw(tmp_path):
    g = Gateway(tmp_path / "gw", overrides={"storage": {"busy_timeout_ms": 300}})
    # Only `db migrate` and `serve` create the database (issue 17).
    g.cli("db", "migrate")
    yield g
    g.stop()


def one_line_error(r):
    assert r.returncode != 0
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_version():
    r = subprocess.run([POPGATE, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("popgate ")


def test_user_add_list_show_del(gw):
    assert "added user alice" in gw.add_user("alice", "s3cret").stdout
    gw.add_user("bob", "pw", "--shared-secret", "--apop-only")
    assert gw.cli("user", "list").stdout.splitlines() == ["alice", "bob apop-only shared-secret"]
    show = gw.cli("user", "show", "alice").stdout
    assert "hash scheme: $6$" in show and "s3cret" not in show
    # the hash is a crypt(3) hash, never the password
    (h,), = gw.sql("SELECT password_hash FROM users WHERE name='alice'")
    assert h.startswith("$6$") and "s3cret" not in h
    gw.cli("user", "del", "alice")
    assert gw.cli("user", "list").stdout.splitlines() == ["bob apop-only shared-secret"]


def test_password_never_from_argv(gw):
    # An extra argument is refused by the parser: no password in ps or history.
    r = gw.cli("user", "add", "carol", "hunter2", check=False)
    assert r.returncode != 0
    assert "hunter2" not in gw.cli("user", "list", check=False).stdout
    assert not gw.db.exists() or gw.sql("SELECT count(*) FROM users") == [(0,)]


def test_user_errors(gw):
    gw.add_user("alice", "pw")
    assert "already exists" in one_line_error(gw.cli("user", "add", "alice", input="x\n", check=False))
    assert "no such user" in one_line_error(gw.cli("user", "del", "nobody", check=False))
    assert "no such user" in one_line_error(gw.cli("user", "passwd", "nobody", input="x\n", check=False))
    assert "bad user name" in one_line_error(gw.cli("user", "add", "../etc", input="x\n", check=False))
    assert "empty password" in one_line_error(gw.cli("user", "add", "dave", input="\n", check=False))
    # crypt(3) stops at a NUL: "\0secret" would be stored as the hash of "".
    assert "NUL byte" in one_line_error(gw.cli("user", "add", "zed", input="\0Str0ng-secret\n", check=False))
    assert "NUL byte" in one_line_error(gw.cli("user", "passwd", "alice", input="pw\0x\n", check=False))
    assert gw.sql("SELECT name FROM users ORDER BY name") == [("alice",)]
    assert "unknown scheme" in one_line_error(gw.cli("user", "add", "erin", "--scheme", "md5", input="x\n", check=False))
    # libcrypt's limit said only "crypt failed"; bcrypt would keep 72 bytes
    # of a longer password and let any password that starts the same in.
    assert "a password is at most 511 bytes (libcrypt's limit); this one has 512" == one_line_error(
        gw.cli("user", "add", "frank", input="x" * 512 + "\n", check=False)).removeprefix("popgate: error: ")
    assert "bcrypt reads only the first 72 bytes of a password and this one has 73" in one_line_error(
        gw.cli("user", "passwd", "alice", "--scheme", "bcrypt", input="y" * 73 + "\n", check=False))
    assert gw.sql("SELECT name FROM users ORDER BY name") == [("alice",)]
    gw.add_user("frank", "x" * 511)
    gw.cli("user", "passwd", "alice", "--scheme", "bcrypt", input="y" * 72 + "\n")
    (h,), = gw.sql("SELECT password_hash FROM users WHERE name = 'alice'")
    assert h.startswith("$2b$")


def test_passwd_changes_hash_and_shared_secret(gw):
    gw.add_user("alice", "old", "--shared-secret")
    (before,), = gw.sql("SELECT password_hash FROM users WHERE name='alice'")
    gw.cli("user", "passwd", "alice", input="new\n")
    (after, secret), = gw.sql("SELECT password_hash, shared_secret FROM users WHERE name='alice'")
    assert after != before and secret == "new"


def test_import_dovecot_and_shadow(gw, tmp_path):
    sha = subprocess.run(["openssl", "passwd", "-6", "-salt", "saltsalt", "pw1"], capture_output=True,
                         text=True).stdout.strip()
    f = tmp_path / "passwd"
    f.write_text(f"# comment\nalice:{{SHA512-CRYPT}}{sha}:1000:1000::/home/alice::\n"
                 f"bob:{{PLAIN}}plainpw::::::\n"
                 f"carol:{sha}:19000:0:99999:7:::\n"
                 f"dave:!{sha}:19000:0:99999:7:::\n")
    assert "imported 4 users" in gw.cli("user", "import", str(f)).stdout
    rows = dict((n, (h, s, d)) for n, h, s, d in gw.sql(
        "SELECT name, password_hash, shared_secret, disabled FROM users"))
    assert rows["alice"] == (sha, None, 0)
    assert rows["bob"][1] == "plainpw" and rows["bob"][0].startswith("$6$")
    assert rows["carol"] == (sha, None, 0)
    assert rows["dave"] == (sha, None, 1)


def test_import_of_a_directory_is_refused(gw, tmp_path):
    r = gw.cli("user", "import", str(tmp_path), check=False)
    assert r.returncode == 1 and "a directory" in one_line_error(r)
    assert gw.sql("SELECT count(*) FROM audit_log WHERE detail LIKE 'user import%'") == [(0,)]


def test_output_that_cannot_be_written_is_a_failure(gw):
    gw.add_user("alice", "pw")
    with open("/dev/full", "w") as full:
        r = subprocess.run([POPGATE, "-c", str(gw.config_file), "user", "list", "--json"], stdout=full,
                           stderr=subprocess.PIPE, text=True, cwd=gw.root, timeout=60)
    assert r.returncode == 1 and "cannot write to standard output" in r.stderr


def test_import_is_all_or_nothing(gw, tmp_path):
    f = tmp_path / "passwd"
    f.write_text("ok:{PLAIN}pw\nbad:{CRAM-MD5}abcdef\n")
    err = one_line_error(gw.cli("user", "import", str(f), check=False))
    assert "line 2" in err and "CRAM-MD5" in err
    # A traditional DES hash (Dovecot's {CRYPT} of old) is refused by name.
    for line in ("des:{CRYPT}saHW9GdxihkGQ\n", "des:saHW9GdxihkGQ:1000:1000::/home/des:/bin/sh\n"):
        f.write_text("ok:{PLAIN}pw\n" + line)
        err = one_line_error(gw.cli("user", "import", str(f), check=False))
        assert "line 2" in err and "a traditional DES crypt hash, refused" in err, err
    f.write_bytes(b"ok:{PLAIN}pw\nnul:{PLAIN}\0pw\n")
    err = one_line_error(gw.cli("user", "import", str(f), check=False))
    assert "line 2" in err and "NUL byte" in err
    # One name twice: which password was meant? Refused, with --replace too.
    f.write_text("ok:{PLAIN}pw\ndupe:{PLAIN}a\ndupe:{PLAIN}b\n")
    for extra in ((), ("--replace",)):
        err = one_line_error(gw.cli("user", "import", str(f), *extra, check=False))
        assert "line 3: user 'dupe' appears twice (first on line 2)" in err, err
    gw.cli("db", "migrate")
    assert gw.sql("SELECT count(*) FROM users") == [(0,)]


def test_allow_add_list_del_and_bad_cidr(gw):
    gw.cli("allow", "add", "192.0.2.0/24", "--note", "office", "--for", "7d")
    gw.cli("allow", "add", "2001:db8::/32")
    out = gw.cli("allow", "list").stdout
    assert "192.0.2.0/24\tuntil " in out and "office" in out
    assert "2001:db8::/32\tpermanent" in out
    assert "host bits set" in one_line_error(gw.cli("allow", "add", "192.0.2.5/24", check=False))
    assert "prefix" in one_line_error(gw.cli("allow", "add", "10.0.0.0/33", check=False))
    assert "not an IPv4" in one_line_error(gw.cli("allow", "add", "10.0.0/8", check=False))
    assert "already allowed" in one_line_error(gw.cli("allow", "add", "192.0.2.0/24", check=False))
    assert "in the past" in one_line_error(gw.cli("allow", "add", "198.51.100.0/24", "--until", "2001-01-01",
                                                  check=False))
    gw.cli("allow", "del", "192.0.2.0/24")
    assert "192.0.2.0/24" not in gw.cli("allow", "list").stdout
    assert "not in the allow list" in one_line_error(gw.cli("allow", "del", "192.0.2.0/24", check=False))


def test_allow_and_grant_del_remove_every_row_that_matches(gw):
    """A bare address written with SQL and the /32 `allow add` writes are
    one network, and a hand-written full IPv6 grant matches beside the /64
    one: `del` said "removed"/"revoked" after the first row, and the client
    still relayed on the other. Every row that means it goes now; `allow
    add` refuses a network that is already in under another spelling."""
    gw.sql("INSERT INTO allowed_networks (cidr, note) VALUES ('192.0.2.7', 'by hand')")
    assert "already allowed (as 192.0.2.7)" in one_line_error(gw.cli("allow", "add", "192.0.2.7", check=False))
    rows = ["192.0.2.7"]
    if gw.backend == "sqlite":   # PostgreSQL's cidr type makes them one value
        gw.sql("INSERT INTO allowed_networks (cidr, note) VALUES ('192.0.2.7/32', 'by hand too')")
        rows.append("192.0.2.7/32")
    out = gw.cli("allow", "del", "192.0.2.7/32").stdout
    assert sorted(out.split()) == sorted(["removed"] * len(rows) + rows), out
    assert gw.sql("SELECT cidr FROM allowed_networks") == []
    gw.sql("INSERT INTO relay_grants (address, user, method, expires_at) "
           "VALUES ('2001:db8:1:2::5', 'helpdesk', 'sql', unixepoch() + 600)")
    gw.cli("grant", "add", "2001:db8:1:2::5")
    out = gw.cli("grant", "del", "2001:db8:1:2::5").stdout
    assert "revoked 2001:db8:1:2::\n" in out and "revoked 2001:db8:1:2::5\n" in out, out
    assert gw.sql("SELECT address FROM relay_grants") == []


@pytest.mark.parametrize("wide", ["0.0.0.0/0", "::/0", "10.0.0.0/7", "2000::/15"])
def test_allow_add_refuses_a_network_wider_than_8_or_16_without_force(gw, wide):
    """One command made an open relay for every IPv4 (or IPv6) client."""
    assert "add --force if that is meant" in one_line_error(gw.cli("allow", "add", wide, check=False))
    assert gw.sql("SELECT cidr FROM allowed_networks") == []
    gw.cli("allow", "add", wide, "--force")
    assert gw.sql("SELECT cidr FROM allowed_networks") == [(wide,)]


def test_allow_row_written_with_sql_is_listed(gw):
    gw.cli("db", "migrate")
    gw.sql("INSERT INTO allowed_networks (cidr, note) VALUES ('203.0.113.0/24', 'by hand')")
    assert "203.0.113.0/24\tpermanent\tby hand" in gw.cli("allow", "list").stdout


def test_grant_add_list_del_purge(gw):
    gw.cli("grant", "add", "198.51.100.7", "--user", "alice", "--ttl", "10m")
    gw.cli("grant", "add", "198.51.100.8", "--user", "bob")
    gw.cli("grant", "add", "2001:db8:1:2:3:4:5:6", "--user", "carol")
    rows = dict((a, (u, m, e - g)) for a, u, m, g, e in gw.sql(
        "SELECT address, user, method, granted_at, expires_at FROM relay_grants"))
    assert rows["198.51.100.7"] == ("alice", "cli", 600)
    assert rows["198.51.100.8"] == ("bob", "cli", 1800)       # default ttl
    assert rows["2001:db8:1:2::"] == ("carol", "cli", 1800)   # truncated to the /64
    assert "198.51.100.7\talice\tcli" in gw.cli("grant", "list").stdout
    gw.sql("UPDATE relay_grants SET granted_at = 10, expires_at = 20 WHERE address = '198.51.100.8'")
    assert "198.51.100.8" not in gw.cli("grant", "list").stdout
    assert "198.51.100.8" in gw.cli("grant", "list", "--all").stdout
    assert "purged 1" in gw.cli("grant", "purge").stdout
    assert "revoked 1 grants of carol" in gw.cli("grant", "del", "carol", "--user").stdout
    # Nothing to revoke is "not found", as for an address, and audits nothing.
    audited = gw.sql("SELECT count(*) FROM audit_log WHERE event = 'revoke'")
    assert "no grants of carol" in one_line_error(gw.cli("grant", "del", "carol", "--user", check=False))
    assert gw.sql("SELECT count(*) FROM audit_log WHERE event = 'revoke'") == audited
    gw.cli("grant", "del", "198.51.100.7")
    assert gw.sql("SELECT count(*) FROM relay_grants") == [(0,)]
    assert "no grant" in one_line_error(gw.cli("grant", "del", "198.51.100.7", check=False))
    assert "not an IPv4" in one_line_error(gw.cli("grant", "add", "300.1.1.1", check=False))


# Issue 17 item 6: only the canonical spelling goes in, and the refusal names it.
@pytest.mark.parametrize("typed,canonical", [
    ("::ffff:7f00:3", "the IPv4 address 127.0.0.3"),
    ("::ffff:198.51.100.8", "the IPv4 address 198.51.100.8"),
    ("0:0:0:0:0:0:0:1", "::1"),
    ("0::1", "::1"),
    ("2001:DB8::1", "2001:db8::1"),
    ("2001:0db8:1:2::5", "2001:db8:1:2::5"),
    ("2001:db8:0:0:1::1", "2001:db8::1:0:0:1"),
])
def test_grant_add_refuses_other_spellings_and_names_the_canonical_one(gw, typed, canonical):
    gw.cli("db", "migrate")
    err = one_line_error(gw.cli("grant", "add", typed, check=False))
    assert f"'{typed}'" in err and err.endswith(f"; write {canonical}"), err
    assert gw.sql("SELECT count(*) FROM relay_grants") == [(0,)]
    # written as the message says, it is accepted
    assert "granted " in gw.cli("grant", "add", canonical.split()[-1]).stdout
    assert gw.sql("SELECT count(*) FROM relay_grants") == [(1,)]


@pytest.mark.parametrize("typed,message", [
    ("127.0.7.9/16", "host bits set in '127.0.7.9/16'; write the network 127.0.0.0/16, or 127.0.7.9/32 for one address"),
    ("2001:db8::1/32", "host bits set in '2001:db8::1/32'; write the network 2001:db8::/32, or 2001:db8::1/128 for one address"),
    ("0::1/128", "'0::1/128' is not IPv6 in canonical form"),
    ("2001:0db8::/32", "; write 2001:db8::/32"),
    ("2001:DB8::/32", "; write 2001:db8::/32"),
    ("::ffff:7f00:0/8", "IPv4-mapped IPv6 '::ffff:7f00:0/8' is not accepted; write the IPv4 network 127.0.0.0/8"),
    ("0:0:0:0:0:0:0:1", "; write ::1"),
])
def test_allow_add_refuses_host_bits_and_other_spellings(gw, typed, message):
    gw.cli("db", "migrate")
    err = one_line_error(gw.cli("allow", "add", typed, check=False))
    assert message in err, err
    assert gw.sql("SELECT count(*) FROM allowed_networks") == [(0,)]


@sqlite_only("a database from SQLite's schema 2")
def test_list_marks_rows_from_before_schema_3_and_del_removes_them(gw):
    from popgate_test import make_schema_2_database
    for suffix in ("", "-wal", "-shm"):   # the fixture migrated a fresh one
        Path(str(gw.db) + suffix).unlink(missing_ok=True)
    make_schema_2_database(gw.db, [
        "INSERT INTO relay_grants (address, expires_at) VALUES ('0::1', unixepoch() + 600)",
        "INSERT INTO relay_grants (address, expires_at) VALUES ('::ffff:7f00:3', unixepoch() + 600)",
        "INSERT INTO relay_grants (address, expires_at) VALUES ('2001:db8:1:2::', unixepoch() + 600)",
        "INSERT INTO allowed_networks (cidr) VALUES ('127.0.7.9/16')",
        "INSERT INTO allowed_networks (cidr) VALUES ('2001:0db8::/32')",
        "INSERT INTO allowed_networks (cidr) VALUES ('10.0.0.0/8')",
    ])
    assert f"schema version {LATEST_SCHEMA}" in gw.cli("db", "migrate").stdout  # rows kept
    grants = {l.split("\t")[0]: l for l in gw.cli("grant", "list").stdout.splitlines()}
    assert "(NEVER MATCHES: '0::1' is not IPv6 in canonical form" in grants["0::1"] and "; write ::1)" in grants["0::1"]
    assert "write the IPv4 address 127.0.0.3)" in grants["::ffff:7f00:3"]
    assert "NEVER" not in grants["2001:db8:1:2::"]
    nets = {l.split("\t")[0]: l for l in gw.cli("allow", "list").stdout.splitlines()}
    assert "(INVALID: ignored by the daemon: host bits set in '127.0.7.9/16'; write the network 127.0.0.0/16" \
        in nets["127.0.7.9/16"]
    assert "(not canonical: " in nets["2001:0db8::/32"] and "; write 2001:db8::/32)" in nets["2001:0db8::/32"]
    assert "(" not in nets["10.0.0.0/8"]
    # The rows can be removed as they are spelt.
    assert "revoked 0::1" in gw.cli("grant", "del", "0::1").stdout
    assert "removed 127.0.7.9/16" in gw.cli("allow", "del", "127.0.7.9/16").stdout
    assert sorted(gw.sql("SELECT address FROM relay_grants")) == [("2001:db8:1:2::",), ("::ffff:7f00:3",)]


def test_missing_and_unreadable_database(gw, tmp_path):
    r = gw.cli("--db", str(tmp_path / "none.db"), "user", "list", check=False)
    assert "does not exist" in one_line_error(r)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    r = gw.cli("--db", str(junk), "user", "list", check=False)
    err = one_line_error(r)
    assert r.returncode == 3 and "not a database" in err and str(junk) in err, err


@sqlite_only("SQLite's file lock (BEGIN IMMEDIATE)")
def test_locked_database(gw):
    gw.cli("db", "migrate")
    con = sqlite3.connect(gw.db, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    try:
        r = gw.cli("user", "add", "alice", input="pw\n", check=False)
        assert "locked" in one_line_error(r)
        # Readers do not wait for the writer, whichever way they open the
        # database (grant list opens it as the writers do).
        for args in (("grant", "list"), ("user", "list"), ("allow", "list"), ("db", "version")):
            r = gw.cli(*args, check=False)
            assert r.returncode == 0, (args, r.stderr)
    finally:
        con.execute("ROLLBACK")
        con.close()
    assert gw.sql("SELECT count(*) FROM users") == [(0,)]


def test_schema_newer_than_binary_is_refused(gw):
    gw.cli("db", "migrate")
    gw.sql("INSERT INTO schema_migrations (version, name) VALUES (999, 'future')")
    assert "newer" in one_line_error(gw.cli("user", "list", check=False))


def test_an_older_schema_is_reported_by_version_and_check(gw):
    # The commands an administrator runs to find out which schema a database
    # has must answer for an older one (a node not yet upgraded, a restored
    # backup), not refuse it; the readers still refuse it.
    gw.cli("db", "migrate")
    gw.sql("DELETE FROM schema_migrations WHERE version = ?", (LATEST_SCHEMA,))
    older = LATEST_SCHEMA - 1
    version = gw.cli("db", "version")
    assert version.stdout.splitlines()[0] == f"{older} (this popgate: {LATEST_SCHEMA})"
    assert "run `popgate db migrate`" in version.stdout
    assert json.loads(gw.cli("db", "version", "--json").stdout) == {"schema_version": older, "latest": LATEST_SCHEMA}
    check = gw.cli("db", "check", check=False)
    assert check.returncode == 1, check
    assert f"schema version {older} (this popgate: {LATEST_SCHEMA})" in check.stdout
    assert "run `popgate db migrate`" in check.stdout and "ok" not in check.stdout.splitlines()
    checked = json.loads(gw.cli("db", "check", "--json", check=False).stdout)
    assert checked["schema_version"] == older and checked["integrity_ok"] is True and checked["ok"] is False
    refused = gw.cli("user", "list", check=False)
    assert refused.returncode == 3 and "run `popgate db migrate`" in one_line_error(refused)
    assert gw.sql("SELECT count(*) FROM schema_migrations WHERE version = ?", (LATEST_SCHEMA,)) == [(0,)]  # none migrated it


def test_db_commands(gw):
    assert f"schema version {LATEST_SCHEMA}" in gw.cli("db", "migrate").stdout
    engine = "PostgreSQL 15." if gw.backend == "postgresql" else "SQLite 3."
    lines = gw.cli("db", "check").stdout.splitlines()
    assert lines[0].startswith("engine " + engine)
    assert lines[1] == f"schema version {LATEST_SCHEMA} (this popgate: {LATEST_SCHEMA})"
    assert re.fullmatch(r"round trip \d+\.\d{3} ms", lines[2])
    assert lines[3:] == ["ok"]
    checked = json.loads(gw.cli("db", "check", "--json").stdout)
    assert checked["engine"].startswith(engine) and checked["schema_version"] == LATEST_SCHEMA
    assert checked["integrity_ok"] is True and checked["ok"] is True
    gw.add_user("alice", "pw")
    assert "admin\t-\talice\tuser add" in gw.cli("db", "audit").stdout


def test_what_clients_wrote_cannot_drive_the_terminal(gw):
    # A failed login stores the client's USER bytes: escape sequences there
    # would retitle or clear the administrator's terminal in `db audit`.
    hostile = "a\x1b]0;pwned\x07\x1b[2Jb\tc\\d\u0085é"
    gw.sql("INSERT INTO audit_log(event, address, user, detail) VALUES('auth-fail', '127.0.0.1', ?, 'x')",
           (hostile,))
    gw.sql("INSERT INTO relay_grants(address, user, expires_at) VALUES('127.0.0.9', ?, 4102444800)", (hostile,))
    shown = r"a\x1b]0;pwned\x07\x1b[2Jb\x09c\\d\xc2\x85é"
    audit = gw.cli("db", "audit").stdout
    assert "\x1b" not in audit and "\x07" not in audit
    assert f"auth-fail\t127.0.0.1\t{shown}\tx\n" in audit, audit
    grants = gw.cli("grant", "list").stdout
    assert f"127.0.0.9\t{shown}\t" in grants, grants
    # JSON keeps the text itself (its own escapes make it safe).
    (row,) = [r for r in json.loads(gw.cli("db", "audit", "--json").stdout) if r["event"] == "auth-fail"]
    assert row["user"] == hostile


@sqlite_only("PostgreSQL refuses bytes that are not UTF-8 in a text column")
def test_bytes_that_are_not_utf8_are_shown_escaped_and_json_stays_valid(gw):
    gw.sql("INSERT INTO audit_log(event, address, user, detail) "
           "VALUES('auth-fail', '127.0.0.1', CAST(X'636166e9ff' AS TEXT), 'x')")
    assert "auth-fail\t127.0.0.1\tcaf\\xe9\\xff\tx" in gw.cli("db", "audit").stdout
    out = subprocess.run([POPGATE, "-c", str(gw.config_file), "db", "audit", "--json"], capture_output=True,
                         cwd=gw.root, timeout=60).stdout
    (row,) = [r for r in json.loads(out.decode("utf-8")) if r["event"] == "auth-fail"]
    assert row["user"] == "caf\\xe9\\xff"


def test_check_config_reports_lines(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nhostname = "x"\nbogus = 1\n\n[relay]\ngrant_ttl = "long"\n'
                   '[[listener]]\nprotocol = "pop3"\nport = 70000\ntls = "maybe"\n')
    r = subprocess.run([POPGATE, "check-config", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1
    errs = r.stderr.splitlines()
    assert any(e.startswith(f"{bad}:3:") and "unknown key 'bogus'" in e for e in errs), errs
    assert any(e.startswith(f"{bad}:6:") and "grant_ttl" in e for e in errs), errs
    assert any(e.startswith(f"{bad}:9:") and "port" in e for e in errs), errs
    assert any(e.startswith(f"{bad}:10:") and "tls" in e for e in errs), errs
    syntax = tmp_path / "syntax.toml"
    syntax.write_text('[server]\nhostname = "x\n')
    r = subprocess.run([POPGATE, "check-config", str(syntax)], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.startswith(f"{syntax}:2:")


def test_check_config_accepts_shipped_default():
    import os
    src = os.environ.get("POPGATE_SOURCE_DIR", ".")
    r = subprocess.run([POPGATE, "check-config", f"{src}/config/popgate.toml"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "6 listeners" in r.stdout


@pytest.mark.parametrize("tls_keys, problem", [
    ('ciphers = "garbage"', "popgate.toml:5:11: tls.ciphers: no cipher OpenSSL knows in this list"),
    ('ciphersuites = "garbage"', "popgate.toml:5:16: tls.ciphersuites: no TLS 1.3 suite OpenSSL knows in this list"),
    ('second_cert_file = "{d}/rsa.pem"\nsecond_key_file = "{d}/rsa.key"', "tls.second_cert_file {d}/rsa.pem"),
])
def test_check_config_tries_the_tls_settings_before_the_self_signed_files_exist(tmp_path, tls_keys, problem):
    # A fresh install: the certificate is made at the daemon's first start.
    # check-config must try the rest of [tls] on what start will make, not
    # pass what serve then refuses.
    cfg = tmp_path / "popgate.toml"
    head = (f'[tls]\ncert_file = "{tmp_path}/tls/cert.pem"\nkey_file = "{tmp_path}/tls/key.pem"\n'
            'self_signed = true\n')
    listener = '[[listener]]\nname = "pop3s"\nprotocol = "pop3"\naddress = "127.0.0.1"\nport = 0\ntls = "implicit"\n'
    cfg.write_text(head + tls_keys.format(d=tmp_path) + "\n" + listener)
    r = subprocess.run([POPGATE, "check-config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and problem.format(d=tmp_path) in r.stdout + r.stderr, r.stdout + r.stderr
    cfg.write_text(head + listener)
    r = subprocess.run([POPGATE, "check-config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (tmp_path / "tls").exists()  # checked in memory: nothing written


def test_serve_refuses_bad_config(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[limits]\nmax_recipients = 5\n")
    r = subprocess.run([POPGATE, "-c", str(bad), "serve"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "max_recipients" in r.stderr


@sqlite_only("a database from SQLite's schema 2 upgraded")
def test_schema_4_upgrade_keeps_audit_rows_and_grants_and_revokes_with_the_user(gw):
    from popgate_test import make_schema_2_database
    for suffix in ("", "-wal", "-shm"):   # the fixture migrated a fresh one
        Path(str(gw.db) + suffix).unlink(missing_ok=True)
    make_schema_2_database(gw.db, [
        "INSERT INTO users (name, password_hash) VALUES ('mallory', '$6$abcdefgh$0123456789abcdef')",
        "INSERT INTO relay_grants (address, user, method, expires_at) VALUES ('192.0.2.7', 'mallory', 'pass',"
        " unixepoch() + 600)",
        "INSERT INTO audit_log (event, address, user, detail) VALUES ('grant', '192.0.2.7', 'mallory', 'old row')",
    ])
    assert f"schema version {LATEST_SCHEMA}" in gw.cli("db", "migrate").stdout
    assert gw.sql("SELECT event, user, detail FROM audit_log") == [("grant", "mallory", "old row")]
    assert gw.sql("SELECT address, hits, quota_hour, quota_messages, quota_recipients FROM relay_grants") == [
        ("192.0.2.7", 0, 0, 0, 0)]
    line = gw.cli("grant", "list").stdout.splitlines()
    assert len(line) == 1 and line[0].split("\t")[4:] == [
        "hits 0", "listener -", "this hour 0 messages 0 recipients", "users 0"], line
    # The new audit event is accepted, a wrong one still refused with the list.
    gw.sql("INSERT INTO audit_log (event) VALUES ('no-grant')")
    with pytest.raises(sqlite3.IntegrityError, match="one of grant, no-grant, revoke"):
        gw.sql("INSERT INTO audit_log (event) VALUES ('granted')")
    with pytest.raises(sqlite3.IntegrityError, match="relay_grants.quota_hour: the start of an hour"):
        gw.sql("UPDATE relay_grants SET quota_hour = 7")
    gw.cli("user", "set", "mallory", "--disabled", "true")
    assert gw.sql("SELECT count(*) FROM relay_grants") == [(0,)]
    assert gw.sql("SELECT event, address, user, detail FROM audit_log WHERE event = 'revoke'") == [
        ("revoke", "192.0.2.7", "mallory", "user disabled")]


def test_grant_list_columns_for_cli_grants(gw):
    gw.cli("grant", "add", "198.51.100.9", "--user", "carol")
    gw.cli("grant", "add", "198.51.100.10")
    rows = {l.split("\t")[0]: l.split("\t") for l in gw.cli("grant", "list").stdout.splitlines()}
    assert rows["198.51.100.9"][1:3] == ["carol", "cli"]
    assert rows["198.51.100.9"][4:] == ["hits 0", "listener -", "this hour 0 messages 0 recipients", "users 1"]
    assert rows["198.51.100.10"][1] == "-" and rows["198.51.100.10"][-1] == "users 0"
