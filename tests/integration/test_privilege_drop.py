"""Started as root with server.user = "nobody" (issue 17 item 4): from a fresh
directory the daemon makes var/, the log, the Maildir root, the relay drop and
the database directory with explicit modes and owners, delivers, serves POP3,
reloads its certificate on SIGHUP, and refuses to start, naming the directory,
when one of them is unusable by the service user.

The gateway root lives in a directory of its own under /tmp (0755): pytest's
tmp_path is under /tmp/pytest-of-root (0700), which nobody cannot traverse."""
import hashlib
import os
import poplib
import pwd
import grp
import shutil
import signal
import smtplib
import socket
import ssl
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from popgate_test import Gateway, client_tls_context

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: the switch to the nobody user is only possible when started as root")

MSG = b"Subject: hi\r\n\r\nhello\r\n"


@pytest.fixture
def fresh_root():
    d = Path(tempfile.mkdtemp(prefix="popgate-drop-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def nobody():
    return pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid


class Gateways:
    """Gateways laid out like the shipped default (everything under var/,
    relative to the directory it is started from), stopped at the end."""

    def __init__(self, root):
        self.root = root
        self.made = []

    def make(self, name="gw", user="nobody"):
        server = {"user": user, "group": "nogroup"} if user else {}
        g = Gateway(self.root / name, overrides={
            "server": server,
            "storage": {"database": "var/popgate.db"},
            "mail": {"maildir": "var/mail/%u", "relay_drop": "var/relay-drop"},
            "tls": {"cert_file": "var/tls/cert.pem", "key_file": "var/tls/key.pem"},
            "log": {"file": "var/popgate.log"},
        })
        v = g.root / "var"
        g.db, g.mail_root, g.drop, g.log_file = v / "popgate.db", v / "mail", v / "relay-drop", v / "popgate.log"
        g.cert, g.key = v / "tls" / "cert.pem", v / "tls" / "key.pem"
        self.made.append(g)
        return g

    def stop_all(self):
        for g in self.made:
            rc = g.stop()
            assert rc in (None, 0) or g.allow_unclean_exit, f"popgate exited {rc}\n{g.log()[-3000:]}"


@pytest.fixture
def gateways(fresh_root):
    gs = Gateways(fresh_root)
    yield gs
    gs.stop_all()


def start_with_umask(g, mask):
    old = os.umask(mask)
    try:
        g.start()
    finally:
        os.umask(old)


def owner_mode(p):
    st = os.stat(p)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def fingerprint(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with client_tls_context().wrap_socket(raw) as s:
            der = s.getpeercert(binary_form=True)
            assert s.recv(512).startswith(b"+OK")
            return hashlib.sha256(der).hexdigest()


def new_certificate(g, cn):
    """A fresh key and certificate, put in place of the old ones as root-only files."""
    key, cert = g.root / "new-key.pem", g.root / "new-cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-subj", f"/CN={cn}", "-keyout", str(key), "-out", str(cert), "-days", "2"],
                   check=True, capture_output=True)
    os.chmod(key, 0o600)
    os.replace(key, g.key)
    os.replace(cert, g.cert)
    with open(g.cert, "rb") as f:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read().decode())).hexdigest()


def reload(g):
    n = g.log().count("reload done")
    g.proc.send_signal(signal.SIGHUP)
    import time
    deadline = time.time() + 30
    while time.time() < deadline and g.log().count("reload done") <= n:
        time.sleep(0.05)
    assert g.log().count("reload done") > n, g.log()[-3000:]


# -- a fresh directory ---------------------------------------------------------------

def test_a_pair_an_older_root_start_made_is_still_read_as_root(gateways, nobody):
    """An older popgate started as root made the self-signed pair as root,
    in a var/tls only root may read, inside the account's var/. The pair is
    now made as the account where the account controls its path; one that
    is there is read as root, as before (a review found the start refused:
    'Permission denied [var/tls/cert.pem]')."""
    first = gateways.make(user=None)
    layout = {"storage": {"database": "var/popgate.db"},
              "mail": {"maildir": "var/mail/%u", "relay_drop": "var/relay-drop"},
              "tls": {"cert_file": "var/tls/cert.pem", "key_file": "var/tls/key.pem"}}
    pop3s = [{"name": "pop3s", "protocol": "pop3", "tls": "implicit"}]
    # One directory, one config file: each Gateway writes it when made.
    old = Gateway(first.root, overrides=layout, listeners=pop3s)
    old.start()
    assert old.stop() == 0
    cert, key = first.root / "var" / "tls" / "cert.pem", first.root / "var" / "tls" / "key.pem"
    assert owner_mode(key) == (0, 0, 0o600) and owner_mode(key.parent)[0] == 0
    before = hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.read_text())).hexdigest()
    for d, dirs, files in os.walk(first.root / "var"):
        if Path(d) == key.parent:
            dirs[:] = []
            continue
        for n in [d, *(os.path.join(d, f) for f in files + dirs)]:
            if Path(n) != key.parent:
                os.lchown(n, *nobody)
    g = Gateway(first.root, overrides={**layout, "server": {"user": "nobody", "group": "nogroup"}},
                listeners=pop3s)
    g.start()
    assert g.wait_log("privileges dropped user=nobody")
    assert fingerprint(g.port("pop3s")) == before
    assert owner_mode(key) == (0, 0, 0o600)
    assert g.stop() == 0

def test_a_database_root_made_in_the_accounts_directory_is_refused_not_chowned(gateways, nobody):
    """The daemon opens SQLite with the account's ids, never root's, and
    root chowns nothing in the account's directory (by path, the account
    could lead it to another file). A database root made there (sqlite3 run
    as root) is refused with the chown to run; then it serves."""
    g = gateways.make(user="nobody")
    v = g.root / "var"
    v.mkdir(parents=True)
    os.chmod(g.root, 0o755)
    os.chown(v, *nobody)
    import sqlite3
    sqlite3.connect(g.db).close()
    os.chmod(g.db, 0o644)
    g.allow_unclean_exit = True
    with pytest.raises(RuntimeError) as e:
        g.start(timeout=60)
    assert ("storage.database: var/popgate.db is not readable and writable by nobody, which opens it: "
            "var/popgate.db (owner root:root, mode 0644); chown nobody var/popgate.db") in str(e.value)
    assert os.stat(g.db).st_uid == 0
    os.chown(g.db, *nobody)
    g.allow_unclean_exit = False
    g.start()
    assert owner_mode(g.db)[:2] == nobody
    assert os.stat(f"{g.db}-wal").st_uid == nobody[0]
    g.add_user("alice", "pw-alice")
    p = poplib.POP3("127.0.0.1", g.port("pop3"), timeout=30)
    p.user("alice")
    assert p.pass_("pw-alice").startswith(b"+OK")
    p.quit()
    assert "127.0.0.1" in g.cli("grant", "list").stdout


@pytest.mark.parametrize("mask", [0o000, 0o077], ids=["umask000", "umask077"])
def test_fresh_directory_gets_explicit_owners_and_modes(gateways, nobody, mask):
    g = gateways.make()
    start_with_umask(g, mask)
    assert g.wait_log("privileges dropped user=nobody")
    status = open(f"/proc/{g.proc.pid}/status").read()
    assert next(l for l in status.splitlines() if l.startswith("Uid:")).split()[1:] == [str(nobody[0])] * 4
    v = g.root / "var"
    # var/ holds the database: SQLite makes its -wal and -shm files there.
    assert owner_mode(v) == (*nobody, 0o750)
    assert owner_mode(v / "popgate.log") == (*nobody, 0o640)
    assert owner_mode(v / "mail") == (*nobody, 0o700)
    assert owner_mode(v / "relay-drop") == (*nobody, 0o700)
    assert owner_mode(g.db) == (*nobody, 0o600)
    # The self-signed pair in var/tls, a directory of the account's, is made
    # with the account's ids: root writing there by path could be led by a
    # link the account put in its place. The key is private to it.
    assert owner_mode(g.key)[0] == nobody[0] and owner_mode(g.key)[2] == 0o600
    assert owner_mode(g.key.parent)[0] == nobody[0] and owner_mode(g.key.parent)[2] == 0o700


def test_fresh_directory_delivers_serves_pop3_and_relays(gateways, nobody):
    g = gateways.make()
    g.start()
    g.add_user("alice", "pw-alice")
    # Local delivery creates var/mail/alice as the service user.
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as c:
        c.sendmail("bob@remote.test", ["alice@gw.test"], MSG)
    assert len(g.messages("alice")) == 1
    assert owner_mode(g.maildir("alice"))[:2] == nobody
    # POP3 reads it and grants the address.
    p = poplib.POP3("127.0.0.1", g.port("pop3"), timeout=30)
    p.user("alice")
    assert p.pass_("pw-alice").startswith(b"+OK")
    assert b"hello" in b"\r\n".join(p.retr(1)[1])
    p.quit()
    # The granted address relays; with no upstream the message lands in the relay drop.
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as c:
        c.sendmail("alice@gw.test", ["carol@remote.test"], MSG)
    assert len(g.dropped()) == 1
    assert "Permission denied" not in g.log()


def test_sighup_after_the_drop_keeps_and_renews_the_certificate(gateways, nobody):
    g = gateways.make()
    g.start()
    before = fingerprint(g.port("pop3s"))
    # Nothing changed: the reload neither fails nor loses the certificate.
    reload(g)
    assert "TLS not reloaded" not in g.log()
    assert fingerprint(g.port("pop3s")) == before

    # A new certificate only root may read: the one read at start is kept, and the log says why.
    new_certificate(g, "root-only.test")
    reload(g)
    assert "TLS not reloaded" not in g.log()
    assert "keeping the certificate read at start" in g.log()
    assert fingerprint(g.port("pop3s")) == before

    # Once the service user may read the files (as with Debian's ssl-cert group), SIGHUP renews.
    expected = new_certificate(g, "renewed.test")
    os.chown(g.key.parent, 0, nobody[1])
    os.chmod(g.key.parent, 0o750)
    os.chown(g.key, 0, nobody[1])
    os.chmod(g.key, 0o640)
    reload(g)
    assert "TLS not reloaded" not in g.log()
    assert fingerprint(g.port("pop3s")) == expected


# -- directories that are not usable -------------------------------------------------

@pytest.mark.parametrize("key,path", [("storage.database", "var"), ("mail.maildir", "var/mail"),
                                      ("mail.relay_drop", "var/relay-drop")])
def test_unusable_directory_is_a_clear_startup_error(gateways, nobody, key, path):
    g = gateways.make()
    (g.root / "var").mkdir(mode=0o750)
    os.chown(g.root / "var", *nobody)
    (g.root / path).mkdir(mode=0o700, exist_ok=True)
    os.chown(g.root / path, 0, 0)  # left behind by a run as root
    g.allow_unclean_exit = True
    with pytest.raises(RuntimeError) as e:
        g.start(timeout=60)
    msg = str(e.value)
    assert "popgate exited 1" in msg
    assert f"{key}: {path} is not usable by nobody" in msg
    assert "Permission denied" in msg


def test_unreachable_directory_is_a_clear_startup_error(gateways):
    # The whole state tree sits below a directory nobody cannot search.
    g = gateways.make()
    os.chmod(g.root, 0o700)
    g.allow_unclean_exit = True
    with pytest.raises(RuntimeError) as e:
        g.start(timeout=60)
    assert "is not usable by nobody" in str(e.value)


def test_install_made_as_root_then_switched_to_nobody(gateways, nobody):
    # An existing install: run as root without server.user, mail delivered.
    first = gateways.make(user=None)
    first.start()
    first.add_user("alice", "pw-alice")
    with smtplib.SMTP("127.0.0.1", first.port("smtp"), timeout=30) as c:
        c.sendmail("bob@remote.test", ["alice@gw.test"], MSG)
    assert first.stop() == 0

    # The administrator sets server.user: the daemon says what to fix instead
    # of answering every login with -ERR [SYS/TEMP].
    refused = gateways.make(user="nobody")
    refused.allow_unclean_exit = True
    with pytest.raises(RuntimeError) as e:
        refused.start(timeout=60)
    assert "storage.database: var is not usable by nobody" in str(e.value)

    # Done as told: hand the state (not the key) to the service user.
    g = gateways.make(user="nobody")
    for d, dirs, files in os.walk(g.root / "var"):
        if Path(d) == g.key.parent:
            dirs[:] = []
            continue
        for n in [d, *(os.path.join(d, f) for f in files + dirs)]:
            os.lchown(n, *nobody)
    g.start()
    p = poplib.POP3("127.0.0.1", g.port("pop3"), timeout=30)
    p.user("alice")
    assert p.pass_("pw-alice").startswith(b"+OK")
    assert b"hello" in b"\r\n".join(p.retr(1)[1])
    p.quit()
