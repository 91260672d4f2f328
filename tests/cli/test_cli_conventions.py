"""The conventions of the `popgate` command line (issue 14 item 6): global
options anywhere, --json on every list and show command, the exit codes of
README "Exit codes", and check-config looking at the files and directories
the daemon would use, as the user it would run as."""
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from popgate_test import POPGATE, Gateway

SOURCE = Path(os.environ.get("POPGATE_SOURCE_DIR", "."))


def popgate(*args, input=None, cwd=None, wrapper=()):
    return subprocess.run([*wrapper, POPGATE, *map(str, args)], input=input, capture_output=True, text=True,
                          cwd=cwd, timeout=60)


@pytest.fixture
def gw(tmp_path):
    g = Gateway(tmp_path / "gw")
    g.cli("db", "migrate")
    return g


# ---------------------------------------------------------------- options


def test_global_options_anywhere_on_the_line(gw, tmp_path):
    gw.cli("grant", "add", "192.0.2.7", "--user", "alice")
    c = str(gw.config_file)
    for args in (["-c", c, "grant", "list"], ["grant", "list", "-c", c], ["grant", "-c", c, "list"],
                 ["grant", "list", "--config", c], ["grant", "list", f"--config={c}"]):
        r = popgate(*args, cwd=tmp_path)
        assert r.returncode == 0 and r.stdout.startswith("192.0.2.7\talice"), (args, r.stdout, r.stderr)
    # --db after the subcommand, pointing elsewhere: that file is the one read.
    other = tmp_path / "other.db"
    assert popgate("db", "migrate", "--db", other, "-c", c).returncode == 0
    r = popgate("grant", "list", "--db", other, "-c", c)
    assert r.returncode == 0 and r.stdout == "", r.stdout + r.stderr
    r = popgate("user", "add", "bob", "-c", c, "--scheme", "sha512-crypt", input="pw\n")
    assert r.returncode == 0, r.stderr
    assert gw.sql("SELECT name FROM users") == [("bob",)]
    r = popgate("check-config", "-c", c)
    assert r.returncode == 0 and "configuration OK" in r.stdout, r.stderr


@pytest.mark.parametrize("args", [
    ["grant", "list", "--bogus"],               # unknown option
    ["frobnicate"],                             # unknown command
    ["grant"],                                  # a group without its command
    ["grant", "add"],                           # missing argument
    ["grant", "add", "192.0.2.1", "--json"],    # --json only on list and show
    ["user", "list", "extra"],                  # an argument too many
    ["user", "set", "alice"],                   # nothing to change
    ["grant", "list", "-c"],                    # an option without its value
    [],                                         # nothing at all
])
def test_usage_errors_exit_2(gw, args):
    r = popgate(*args, "-c", gw.config_file) if args[-1:] != ["-c"] else popgate(*args)
    assert r.returncode == 2, (args, r.returncode, r.stdout, r.stderr)
    assert r.stderr.strip(), args


def test_help_exits_0():
    for args in (["--help"], ["grant", "list", "--help"]):
        r = popgate(*args)
        assert r.returncode == 0 and "Usage" in r.stdout, (args, r.stdout, r.stderr)


# ---------------------------------------------------------------- exit codes


def test_refusals_exit_1(gw):
    for args in (["user", "del", "nobody"], ["grant", "add", "999.1.1.1"], ["grant", "del", "192.0.2.99"],
                 ["allow", "add", "10.0.0.1/8"], ["grant", "add", "192.0.2.1", "--ttl", "soon"],
                 ["user", "show", "nobody", "--json"]):
        r = gw.cli(*args, check=False)
        assert r.returncode == 1, (args, r.returncode, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and r.stdout == "", (args, r.stdout, r.stderr)


def test_database_unavailable_exits_3(gw, tmp_path):
    missing = tmp_path / "none" / "popgate.db"
    for args in (["grant", "list"], ["user", "add", "carol"], ["db", "version"], ["db", "check"],
                 ["user", "show", "x", "--json"]):
        r = gw.cli("--db", missing, *args, input="pw\n", check=False)
        assert r.returncode == 3, (args, r.returncode, r.stderr)
        assert str(missing) in r.stderr and "does not exist" in r.stderr, r.stderr
        assert not missing.parent.exists()
    gw.sql("INSERT INTO schema_migrations (version, name) VALUES (999, 'future')")
    r = gw.cli("user", "list", check=False)
    assert r.returncode == 3 and "newer" in r.stderr, r.stderr


def test_a_purge_that_fails_writes_nothing_on_stdout(gw):
    # "purged " went out before the purge ran: a script reading stdout got
    # half a line beside the error. A trigger of the administrator's makes
    # the DELETE fail, as a read-only PostgreSQL does.
    gw.sql("INSERT INTO relay_grants(address, granted_at, expires_at) VALUES('192.0.2.9', unixepoch()-20, unixepoch()-10)")
    gw.sql("CREATE TRIGGER keep_grants BEFORE DELETE ON relay_grants BEGIN SELECT RAISE(ABORT, 'kept'); END")
    r = gw.cli("grant", "purge", check=False)
    assert r.returncode != 0 and "kept" in r.stderr and r.stdout == "", (r.returncode, r.stdout, r.stderr)
    gw.sql("DROP TRIGGER keep_grants")
    r = gw.cli("grant", "purge")
    assert r.stdout == "purged 1 expired grants\n", r.stdout


def test_locked_database_exits_3(tmp_path):
    g = Gateway(tmp_path / "gw", {"storage": {"busy_timeout_ms": 200}})
    g.cli("db", "migrate")
    con = sqlite3.connect(g.db, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    try:
        r = g.cli("grant", "add", "192.0.2.8", check=False)
        assert r.returncode == 3 and "locked" in r.stderr, r.stderr
    finally:
        con.execute("ROLLBACK")
        con.close()


def test_invalid_configuration_exits_1(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[limits]\nmax_recipients = 5\n")
    r = popgate("grant", "list", "-c", bad)
    assert r.returncode == 1 and "max_recipients" in r.stderr, r.stderr
    # A directory is no configuration file, not an empty one.
    for args in (("-c", tmp_path, "grant", "list"), ("check-config", tmp_path)):
        r = popgate(*args)
        assert r.returncode == 1 and f"cannot read {tmp_path}: a directory" in r.stdout + r.stderr, (args, r)
        assert "no [[listener]]" not in r.stdout + r.stderr


def test_serve_checks_the_database_given_with_db(tmp_path):
    """--db replaces storage.database after the file was checked: serve
    checks it again, with busy_timeout_ms (0 is no statement timeout at all
    on PostgreSQL), before it connects to anything."""
    conf = tmp_path / "c.toml"
    conf.write_text('[storage]\nbusy_timeout_ms = 0\n[[listener]]\nprotocol = "pop3"\nport = 0\n')
    r = popgate("serve", "-c", conf, "--db", "postgresql://popgate@127.0.0.1:1/popgate")
    assert r.returncode == 1 and "--db: storage.busy_timeout_ms: 0" in r.stderr, r.stderr
    r = popgate("serve", "-c", conf, "--db", "postgresql://u:pw?x@db.example/popgate")
    assert r.returncode == 1 and "a password in the URI is refused" in r.stderr, r.stderr
    assert "pw?x" not in r.stderr


# ---------------------------------------------------------------- --json


def one_json(r):
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 1, r.stdout
    return json.loads(r.stdout)


def test_json_of_every_list_and_show(gw):
    assert one_json(gw.cli("user", "list", "--json")) == []
    assert one_json(gw.cli("grant", "list", "--json")) == []
    assert one_json(gw.cli("allow", "list", "--json")) == []
    gw.add_user("alice", "pw", "--shared-secret")
    gw.cli("user", "add", "bob", "--scheme", "sha512-crypt", "--disabled", input="pw\n")
    assert one_json(gw.cli("user", "list", "--json")) == [
        {"name": "alice", "disabled": False, "apop_only": False, "shared_secret": True},
        {"name": "bob", "disabled": True, "apop_only": False, "shared_secret": False}]
    show = one_json(gw.cli("user", "show", "alice", "--json"))
    assert set(show) == {"name", "hash_scheme", "shared_secret", "disabled", "apop_only", "created_at",
                         "updated_at"}
    assert show["hash_scheme"] == "$6$" and isinstance(show["created_at"], int)
    assert "pw" not in json.dumps(show)

    gw.cli("allow", "add", "192.0.2.0/24", "--note", 'lab "A"', "--for", "1d")
    gw.sql("INSERT INTO allowed_networks (cidr, note) VALUES ('10.0.0.0/8', '')")
    nets = {n["cidr"]: n for n in one_json(gw.cli("allow", "list", "--json"))}
    assert nets["192.0.2.0/24"]["note"] == 'lab "A"' and nets["192.0.2.0/24"]["expired"] is False
    assert isinstance(nets["192.0.2.0/24"]["expires_at"], int) and nets["10.0.0.0/8"]["expires_at"] is None
    assert nets["10.0.0.0/8"]["problem"] is None

    gw.cli("grant", "add", "192.0.2.7", "--user", "alice", "--ttl", "1h")
    gw.cli("grant", "add", "192.0.2.8")
    grants = {g["address"]: g for g in one_json(gw.cli("grant", "list", "--json"))}
    assert set(grants["192.0.2.7"]) == {"address", "user", "method", "tls", "listener", "granted_at", "expires_at",
                                        "expired", "hits", "last_used", "problem", "quota_messages", "quota_recipients", "users"}
    assert grants["192.0.2.7"]["user"] == "alice" and grants["192.0.2.8"]["user"] is None
    assert grants["192.0.2.7"]["expires_at"] - grants["192.0.2.7"]["granted_at"] == 3600
    assert grants["192.0.2.7"]["method"] == "cli" and grants["192.0.2.7"]["hits"] == 0
    assert grants["192.0.2.7"]["problem"] is None and grants["192.0.2.7"]["expired"] is False
    # --all adds the expired ones, marked.
    gw.sql("UPDATE relay_grants SET granted_at = 100, expires_at = 200 WHERE address = '192.0.2.8'")
    assert [g["address"] for g in one_json(gw.cli("grant", "list", "--json"))] == ["192.0.2.7"]
    old = [g for g in one_json(gw.cli("grant", "list", "--all", "--json")) if g["address"] == "192.0.2.8"]
    assert old[0]["expired"] is True and old[0]["expires_at"] == 200, old

    audit = one_json(gw.cli("db", "audit", "--json", "-n", "3"))
    assert len(audit) == 3 and set(audit[0]) == {"at", "event", "address", "user", "detail"}
    version = one_json(gw.cli("db", "version", "--json"))
    assert version["schema_version"] == version["latest"] and version["latest"] >= 3


# ---------------------------------------------------------------- check-config


def config_with(tmp_path, overrides):
    g = Gateway(tmp_path / "cfg", overrides)
    return g


def listing(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*"))


def test_check_config_makes_nothing_and_accepts_missing_dirs_it_can_make(tmp_path):
    g = config_with(tmp_path, {})
    before = listing(g.root)
    r = popgate("check-config", g.config_file)
    assert r.returncode == 0 and "configuration OK (5 listeners)" in r.stdout, r.stderr
    assert listing(g.root) == before  # no certificate, no directories made


def test_check_config_refuses_a_directory_below_a_file(tmp_path):
    # Whoever starts the daemon, root too, cannot make a directory where a
    # file stands: serve would fail with "Not a directory".
    (tmp_path / "afile").write_text("")
    g = config_with(tmp_path, {"storage": {"database": str(tmp_path / "afile" / "sub" / "x.db")}})
    r = popgate("check-config", g.config_file)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"storage.database: {tmp_path / 'afile' / 'sub'} cannot be created: {tmp_path / 'afile'} is not a directory" \
        in r.stderr, r.stderr


def test_check_config_wants_the_certificate_when_it_will_not_make_one(tmp_path):
    g = config_with(tmp_path, {"tls": {"self_signed": False}})
    r = popgate("check-config", g.config_file)
    assert r.returncode == 1 and "tls.cert_file" in r.stderr and str(g.cert) in r.stderr, r.stderr
    # One of the two missing: self_signed makes them only when both are.
    g2 = config_with(tmp_path / "2", {})
    g2.cert.parent.mkdir(parents=True)
    g2.cert.write_text("-----BEGIN CERTIFICATE-----\nnonsense\n-----END CERTIFICATE-----\n")
    r = popgate("check-config", g2.config_file)
    assert r.returncode == 1 and str(g2.key) in r.stderr, r.stderr


def test_check_config_refuses_a_key_that_does_not_match(tmp_path):
    a = Gateway(tmp_path / "a").start()
    a.stop()
    b = Gateway(tmp_path / "b").start()
    b.stop()
    shutil.copy(b.key, a.key)  # a's certificate, b's key
    r = popgate("check-config", a.config_file)
    assert r.returncode == 1 and "key" in r.stderr.lower(), r.stderr
    assert popgate("check-config", b.config_file).returncode == 0


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="checks as server.user need root (CI runs as root)")


@pytest.fixture
def open_tmp():
    """A directory others may search (pytest's own are 0700 under root)."""
    d = Path(tempfile.mkdtemp(prefix="popgate-cli-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


@needs_root
def test_check_config_checks_directories_as_server_user(open_tmp):
    g = config_with(open_tmp, {"server": {"user": "nobody"}})
    os.chown(g.root, 65534, 65534)
    g.mail_root.mkdir(mode=0o700)  # root's, 0700: nobody cannot use it
    r = popgate("check-config", g.config_file)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"mail.maildir: {g.mail_root} is not usable by nobody" in r.stderr, r.stderr
    os.chown(g.mail_root, 65534, 65534)
    r = popgate("check-config", g.config_file)
    assert r.returncode == 0, r.stderr


@needs_root
def test_check_config_reads_certificate_and_key_as_server_user(open_tmp):
    """Run as root with server.user, the certificate and key must open as
    that user too: the packaged unit (User=popgate) starts the daemon as
    that user, and a reload (SIGHUP) reads them again after the switch."""
    g = config_with(open_tmp, {"server": {"user": "nobody"}})
    os.chown(g.root, 65534, 65534)
    g.cert.parent.mkdir(mode=0o755)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", g.key, "-out", g.cert, "-days", "2", "-subj", "/CN=gw.test"],
                   check=True, capture_output=True, timeout=60)
    g.cert.chmod(0o644)
    g.key.chmod(0o600)  # root's, 0600: root reads it, nobody cannot
    r = popgate("check-config", g.config_file)
    assert r.returncode == 1, r.stdout + r.stderr
    assert (f"tls.key_file: {g.key} is not readable by nobody: Permission denied (owner root:root, mode 0600);"
            " the daemon reads it as nobody when the packaged unit starts it (User=) and on every reload (SIGHUP)"
            in r.stderr), r.stderr
    assert "tls.cert_file" not in r.stderr, r.stderr
    # Not even searchable: both files are named.
    g.cert.parent.chmod(0o700)
    r = popgate("check-config", g.config_file)
    assert r.returncode == 1 and f"tls.cert_file: {g.cert} is not readable by nobody" in r.stderr, r.stderr
    assert f"tls.key_file: {g.key} is not readable by nobody" in r.stderr, r.stderr
    g.cert.parent.chmod(0o755)
    os.chown(g.key, 65534, 65534)
    r = popgate("check-config", g.config_file)
    assert r.returncode == 0 and "configuration OK" in r.stdout, r.stderr
    # Without server.user the starter reads them: root's 0600 key is fine then.
    os.chown(g.key, 0, 0)
    g2 = config_with(open_tmp / "2", {"tls": {"cert_file": str(g.cert), "key_file": str(g.key)}})
    r = popgate("check-config", g2.config_file)
    assert r.returncode == 0, r.stderr


@needs_root
def test_check_config_reads_the_upstream_files_as_server_user(open_tmp):
    """relay.upstream_password_file and relay.upstream_ca_file are read as
    server.user at every new upstream connection: check-config opens them as
    that user, loads the CA file, and wants the password file to exist."""
    ca, ca_key, pw = open_tmp / "ca.pem", open_tmp / "ca.key", open_tmp / "upstream-password"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=test CA"],
                   check=True, capture_output=True, timeout=60)
    pw.write_text("secret\n")
    relay = {"upstream_host": "127.0.0.1", "upstream_port": 2525, "upstream_starttls": "verify",
             "upstream_ca_file": str(ca), "upstream_user": "relay", "upstream_password_file": str(pw)}
    g = config_with(open_tmp, {"server": {"user": "nobody"}, "relay": relay})
    os.chown(g.root, 65534, 65534)
    for f in (ca, pw):
        f.chmod(0o600)  # root's, 0600: root reads them, nobody cannot
    r = popgate("check-config", g.config_file)
    assert r.returncode == 1, r.stdout + r.stderr
    for key, f in (("relay.upstream_ca_file", ca), ("relay.upstream_password_file", pw)):
        assert (f"{key}: {f} is not readable by nobody: Permission denied (owner root:root, mode 0600);"
                " the daemon reads it as nobody for every new connection to the upstream" in r.stderr), r.stderr
    for f in (ca, pw):
        os.chown(f, 65534, 65534)
    r = popgate("check-config", g.config_file)
    assert r.returncode == 0 and "configuration OK" in r.stdout, r.stderr
    # A password file that is not there is named; so is a CA file that is no CA.
    pw.unlink()
    ca.write_text("not a certificate\n")
    r = popgate("check-config", g.config_file)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"relay.upstream_password_file: {pw} is not a file" in r.stderr, r.stderr
    assert f"relay.upstream_ca_file: cannot load {ca}" in r.stderr, r.stderr


@needs_root
def test_check_config_names_a_server_user_that_does_not_exist(tmp_path):
    g = config_with(tmp_path, {"server": {"user": "no-such-user-here"}})
    r = popgate("check-config", g.config_file)
    assert r.returncode == 1 and "server.user 'no-such-user-here' does not exist" in r.stderr, r.stderr


@needs_root
def test_check_config_as_an_unprivileged_starter_needs_writable_parents(open_tmp):
    g = config_with(open_tmp, {})
    os.chmod(g.root, 0o755)  # root's, not writable by nobody: nothing can be made below it
    g.config_file.chmod(0o644)
    r = popgate("check-config", g.config_file, wrapper=("setpriv", "--reuid=nobody", "--regid=nogroup",
                                                        "--clear-groups"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"storage.database: {g.root} is not usable by nobody" in r.stderr, r.stderr  # exists, not writable
    assert f"mail.maildir: {g.mail_root} cannot be created" in r.stderr, r.stderr
    assert "tls.cert_file" in r.stderr, r.stderr


# ---------------------------------------------------------------- default config


def test_build_tree_binary_without_c_reads_config_dir_or_builtin(tmp_path):
    # No config/ here: the built-in default, whose database is var/popgate.db here.
    r = popgate("grant", "list", cwd=tmp_path)
    assert r.returncode == 3 and "var/popgate.db" in r.stderr, r.stderr
    assert not (tmp_path / "var").exists()
    # A config/popgate.toml in the current directory is the one read.
    (tmp_path / "config").mkdir()
    text = (SOURCE / "config/popgate.toml").read_text().replace('"var/popgate.db"', '"elsewhere.db"')
    (tmp_path / "config/popgate.toml").write_text(text)
    r = popgate("grant", "list", cwd=tmp_path)
    assert r.returncode == 3 and "elsewhere.db" in r.stderr, r.stderr
    assert popgate("db", "migrate", cwd=tmp_path).returncode == 0
    assert (tmp_path / "elsewhere.db").exists()


@needs_root
def test_check_config_reads_the_api_key_file_as_server_user(open_tmp):
    """An HTTP listener's api_key_file is read at every load, and after a
    SIGHUP that is as server.user: a key only root can read passed
    check-config, and then every reload was refused until a restart."""
    key = open_tmp / "api.key"
    key.write_text("s3cret-key-for-dovecot\n")
    key.chmod(0o600)  # root's: root reads it, nobody cannot
    g = Gateway(open_tmp / "cfg", {"server": {"user": "nobody"}},
                listeners=[{"name": "pop3", "protocol": "pop3"},
                           {"name": "http", "protocol": "http", "api_key_file": str(key)}])
    os.chown(g.root, 65534, 65534)
    r = popgate("check-config", g.config_file)
    assert r.returncode == 1, r.stdout + r.stderr
    assert (f"listener 'http': api_key_file: {key} is not readable by nobody: Permission denied "
            "(owner root:root, mode 0600); the daemon reads it as nobody when the packaged unit starts it (User=) "
            "and on every reload (SIGHUP)" in r.stderr), r.stderr
    os.chown(key, 65534, 65534)
    r = popgate("check-config", g.config_file)
    assert r.returncode == 0 and "configuration OK" in r.stdout, r.stderr


@needs_root
def test_db_migrate_as_root_hands_the_new_database_to_server_user(open_tmp):
    """popgate(8) tells administrators to make the database with `db
    migrate`; run as root, it made a root-owned 0600-ish file that the
    packaged unit (User=popgate) could not open: a restart loop, while
    check-config said OK. The file now goes to server.user, as serve hands
    it over when it starts as root."""
    g = Gateway(open_tmp / "cfg", {"server": {"user": "nobody"}})
    os.chown(g.root, 65534, 65534)
    g.db.parent.mkdir(parents=True, exist_ok=True)
    os.chown(g.db.parent, 65534, 65534)
    r = popgate("-c", g.config_file, "db", "migrate")
    assert r.returncode == 0 and "schema version" in r.stdout, r.stderr
    st = os.stat(g.db)
    assert (st.st_uid, st.st_gid) == (65534, 65534), (st.st_uid, st.st_gid)
    # And the account can use it: a read as nobody.
    r = subprocess.run(["runuser", "-u", "nobody", "--", POPGATE, "-c", str(g.config_file), "db", "version"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    # A link in the account's directory is not followed: root's file stays root's.
    victim = open_tmp / "root-only"
    victim.write_bytes(b"")   # SQLite takes an empty file as a new database
    link = g.db.parent / "linked.db"
    link.symlink_to(victim)
    r = popgate("-c", g.config_file, "--db", link, "db", "migrate")
    assert r.returncode != 0 and f"database {link} is not readable and writable by nobody" in r.stderr, \
        r.stdout + r.stderr
    assert "it is a symbolic link: remove it" in r.stderr and "chown" not in r.stderr, r.stderr
    assert os.stat(victim).st_uid == 0
    # server.user missing here: refused before the database is made, not after.
    g2 = Gateway(open_tmp / "cfg2", {"server": {"user": "no-such-user-here"}})
    r = popgate("-c", g2.config_file, "db", "migrate")
    assert r.returncode != 0 and "no-such-user-here" in r.stderr, r.stdout + r.stderr
    assert not g2.db.exists()


@needs_root
def test_root_commands_on_the_accounts_database_run_as_the_account(open_tmp):
    """`sudo popgate ...` on a database in server.user's directory: SQLite
    run as root followed what that account put there (a hard link at -wal
    to a file the account may write had root truncate and chown it). The
    command now hands the files to the account and runs as the account."""
    g = Gateway(open_tmp / "cfg", {"server": {"user": "nobody"}})
    os.chown(g.root, 65534, 65534)
    g.db.parent.mkdir(parents=True, exist_ok=True)
    os.chown(g.db.parent, 65534, 65534)
    # A database root made there earlier: not chowned by root (by path,
    # through the account's directory), refused with the chown to run.
    r = popgate("--db", g.db, "db", "migrate", cwd=open_tmp)  # no config: root's own
    assert r.returncode == 0, r.stderr
    r = popgate("-c", g.config_file, "user", "add", "alice", input="pw-alice-1\n")
    assert r.returncode == 1, r.stdout + r.stderr
    assert (f"database {g.db} is not readable and writable by nobody, which opens it: {g.db} (owner root:root, "
            f"mode 0600); chown nobody {g.db} (this command runs as nobody, whose directory it is in)") \
        in r.stderr, r.stderr
    assert os.stat(g.db).st_uid == 0
    # Done as told: written as the account, whose -wal and -shm are its own.
    for f in (g.db, Path(f"{g.db}-wal"), Path(f"{g.db}-shm")):
        if f.exists():
            os.chown(f, 65534, 65534)
    r = popgate("-c", g.config_file, "user", "add", "alice", input="pw-alice-1\n")
    assert r.returncode == 0, r.stderr
    for f in (g.db, Path(f"{g.db}-wal"), Path(f"{g.db}-shm")):
        if f.exists():
            assert os.stat(f).st_uid == 65534, f
    # What it cannot reach as the account is refused, not done as root.
    private = open_tmp / "root-only"
    private.mkdir(mode=0o700)
    assert popgate("--db", private / "copy.db", "db", "migrate", cwd=open_tmp).returncode == 0
    r = popgate("-c", g.config_file, "db", "copy", g.db, private / "copy.db")
    assert r.returncode == 3, r.stdout + r.stderr
    assert f"cannot open destination database {private}/copy.db: Permission denied" in r.stderr, r.stderr
    r = popgate("--db", private / "copy.db", "user", "list", cwd=open_tmp)
    assert r.returncode == 0 and "alice" not in r.stdout, r.stdout + r.stderr
    # A hard link the account planted at -wal (fs.protected_hardlinks lets
    # it link a file it may write): root's SQLite wrote into it and handed
    # it to the database's owner. As the account, the file stays root's.
    victim = open_tmp / "victim"
    victim.write_bytes(b"root's own file\n")
    os.chmod(victim, 0o646)
    wal = Path(f"{g.db}-wal")
    if wal.exists():
        wal.unlink()
    os.link(victim, wal)
    r = popgate("-c", g.config_file, "user", "list")
    st = os.stat(victim)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o646), r.stdout + r.stderr
    # And the account cannot turn the switch off by making its directory
    # read-only: it owns it, and an owner may chmod it back.
    os.chmod(g.db.parent, 0o555)
    other = open_tmp / "victim2"
    other.write_bytes(b"root's own file\n")
    os.chmod(other, 0o646)
    os.chmod(g.db.parent, 0o755)
    wal.unlink(missing_ok=True)
    os.link(other, wal)
    os.chmod(g.db.parent, 0o555)
    r = popgate("-c", g.config_file, "db", "check")
    st = os.stat(other)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o646), r.stdout + r.stderr
    os.chmod(g.db.parent, 0o755)


@needs_root
def test_a_dot_dot_after_a_link_does_not_hide_the_accounts_directory(open_tmp):
    """rootonly/l/../db with l -> the account's directory: the path as
    written, lexically normalised, was root's, so root's SQLite opened the
    database in the account's directory and followed a hard link there."""
    nobody = 65534
    (open_tmp / "rootonly").mkdir()
    acct = open_tmp / "acct"
    (acct / "sub").mkdir(parents=True)
    for d in (acct, acct / "sub"):
        os.chown(d, nobody, nobody)
    (open_tmp / "rootonly" / "l").symlink_to(acct / "sub")
    db = open_tmp / "rootonly" / "l" / ".." / "db" / "popgate.db"
    g = Gateway(open_tmp / "cfg", {"server": {"user": "nobody"}, "storage": {"database": str(db)}})
    r = popgate("-c", g.config_file, "db", "migrate")
    assert r.returncode == 0, r.stderr
    real = acct / "db" / "popgate.db"
    assert os.stat(real).st_uid == nobody  # made as the account
    victim = open_tmp / "victim"
    victim.write_bytes(b"root's own file\n")
    os.chmod(victim, 0o646)
    os.link(victim, f"{real}-wal")
    r = popgate("-c", g.config_file, "user", "list")
    st = os.stat(victim)
    assert (st.st_uid, st.st_gid) == (0, 0), r.stdout + r.stderr


@pytest.mark.parametrize("args,message", [
    (("allow", "add", "192.0.2.0/24", "--until", "2027-02-31"), "bad time '2027-02-31'"),
    (("allow", "add", "192.0.2.0/24", "--until", "99999999999999999999"), "bad time '99999999999999999999'"),
    # An unset $DUR in a script: refused, not a network allowed for good.
    (("allow", "add", "192.0.2.0/24", "--until", ""), "bad time ''"),
    (("allow", "add", "192.0.2.0/24", "--for", ""), "bad duration ''"),
    (("grant", "add", "192.0.2.7", "--ttl", ""), "bad duration ''"),
    # A conninfo string is refused and not shown, as a destination too.
    (("db", "copy", "var/popgate.db", "host = db.example password=s3cret"), "(a libpq key=value string, not shown)"),
    (("db", "copy", "var/popgate.db", "sslpassword=s3cret connect_timeout=5"), "(a libpq key=value string, not shown)"),
    # A scheme in capitals is not one popgate takes; its password was echoed.
    (("--db", "Postgresql://gw:s3cret@127.0.0.1:1/gw", "user", "list"), "'Postgresql://' is not a database"),
    (("--db", "postgresql://gw@127.0.0.1:1/gw?password%3Ds3cret", "user", "list"), "a password in the URI is refused"),
    # Without its '//' a URI was a SQLite file name, echoed in every error.
    (("--db", "postgresql:gw:s3cret@127.0.0.1/gw", "user", "list"), "the '//' after the scheme is missing"),
    (("db", "copy", "var/popgate.db", "Postgres:gw:s3cret@db/gw"), "the '//' after the scheme is missing"),
    # A password with a '/' in it (base64): libpq's error quoted it.
    (("--db", "postgresql://gw:s3cret/x@127.0.0.1:1/gw", "user", "list"), "a password in the URI is refused"),
    (("--db", "mysql://gw:s3cret/x@db/gw", "user", "list"), "'mysql://' is not a database"),
    (("db", "audit", "-n", "-1"), "--limit: Value -1 not in range"),
    (("db", "audit", "-n", "0"), "--limit: Value 0 not in range"),
])
def test_impossible_times_and_limits_are_refused_not_moved(tmp_path, args, message):
    """2027-02-31 was taken as 2027-03-03, twenty digits of Unix seconds
    ended in "error: stoll", and `db audit -n -1` listed everything."""
    g = config_with(tmp_path, {})
    assert popgate("-c", g.config_file, "db", "migrate").returncode == 0
    r = popgate("-c", g.config_file, *args)
    assert r.returncode != 0 and message in r.stderr, r.stdout + r.stderr
    assert "stoll" not in r.stderr and "s3cret" not in r.stderr
    assert "192.0.2.0/24" not in popgate("-c", g.config_file, "allow", "list").stdout
    assert "192.0.2.7" not in popgate("-c", g.config_file, "grant", "list").stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_at_the_password_prompt_gives_the_terminal_its_echo_back(tmp_path, sig):
    """Ctrl-C at `user add`'s prompt left the administrator's terminal with
    echo off. The prompt now puts the terminal back before the signal ends
    the program (and still dies of that signal)."""
    import pty
    import termios
    g = config_with(tmp_path, {})
    assert popgate("-c", g.config_file, "db", "migrate").returncode == 0
    master, slave = pty.openpty()
    try:
        assert termios.tcgetattr(slave)[3] & termios.ECHO
        p = subprocess.Popen([POPGATE, "-c", str(g.config_file), "user", "add", "ttyuser"],
                             stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        prompt = b""
        deadline = time.time() + 20
        while b"password for ttyuser" not in prompt and time.time() < deadline:
            prompt += p.stderr.read1(100)
        assert b"password for ttyuser" in prompt, prompt
        deadline = time.time() + 5
        while termios.tcgetattr(slave)[3] & termios.ECHO and time.time() < deadline:
            time.sleep(0.02)   # the prompt turns echo off right after it is written
        assert not termios.tcgetattr(slave)[3] & termios.ECHO
        p.send_signal(sig)
        assert p.wait(20) == -sig
        assert termios.tcgetattr(slave)[3] & termios.ECHO
    finally:
        os.close(master)
        os.close(slave)
