"""The daemon frame: start, reload, drain, privileges, file modes, and the
database edited with sqlite3 while the daemon runs."""
import json
import os
import poplib
import pwd
import shutil
import signal
import smtplib
import socket
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from popgate_test import (POPGATE, Gateway, SourcePOP3, client_tls_context, gateway, make_gateway,  # noqa: F401
                          sqlite_only, upstream)
from smtp_support import relay_overrides


def test_sigterm_drains_and_exits_zero(gateway):
    s = socket.create_connection(("127.0.0.1", gateway.port("pop3")))
    assert s.recv(512).startswith(b"+OK")
    gateway.proc.send_signal(signal.SIGTERM)
    # The listener closes at once; the open session may finish.
    deadline = time.time() + 5
    refused = False
    while time.time() < deadline and not refused:
        try:
            socket.create_connection(("127.0.0.1", gateway.port("pop3")), timeout=1).close()
            time.sleep(0.05)
        except OSError:
            refused = True
    assert refused
    s.sendall(b"QUIT\r\n")
    assert s.recv(512).startswith(b"+OK")
    s.close()
    assert gateway.proc.wait(15) == 0
    assert "draining" in gateway.log()


def test_sighup_reloads_and_refuses_a_broken_config(gateway):
    text = gateway.config_file.read_text()
    gateway.config_file.write_text(text.replace('level = "debug"', 'level = "info"'))
    gateway.reload()
    assert gateway.wait_log("reload done")
    gateway.config_file.write_text(text + "\n[limits]\nbogus = 1\n")
    gateway.reload()
    assert gateway.wait_log("reload refused")
    assert "unknown key 'bogus'" in gateway.log()
    # Still serving.
    s = socket.create_connection(("127.0.0.1", gateway.port("pop3")))
    assert s.recv(512).startswith(b"+OK")
    s.close()
    assert gateway.proc.poll() is None


def test_sighup_keeps_what_needs_a_restart_and_says_so(gateway, tmp_path):
    # The store, the threads and the log file are set up once at start. A
    # reload that changes them used to say "reload done" and go on with the
    # old ones in silence: an administrator moving to a new database kept
    # writing to the old one. Now each is named, and the rest applies.
    gateway.add_user("alice", "pw")
    text = gateway.config_file.read_text()
    changed = (text.replace(f'database = "{gateway.db}"', f'database = "{tmp_path / "other.db"}"\ngroup = "nogroup"')
               .replace("threads = 2", "threads = 3")
               .replace(f'file = "{gateway.log_file}"', f'file = "{tmp_path / "other.log"}"')
               .replace('level = "debug"', 'level = "info"'))
    assert "other.db" in changed and "other.log" in changed and "threads = 3" in changed
    gateway.config_file.write_text(changed)
    gateway.reload()
    assert gateway.wait_log("reload done")
    log = gateway.log()
    assert (f'reload: storage.database changed from {gateway.db} to {tmp_path / "other.db"}: it needs a restart, '
            "the running value is kept") in log, log
    assert "reload: server.threads changed from 2 to 3: it needs a restart" in log
    assert "reload: storage.group changed from " in log
    assert "reload: log.file changed from " in log
    assert not (tmp_path / "other.db").exists() and not (tmp_path / "other.log").exists()
    c = poplib.POP3("127.0.0.1", gateway.port("pop3"), timeout=10)  # alice is in the running database
    c.user("alice")
    assert c.pass_("pw").startswith(b"+OK")
    c.quit()
    assert " debug " not in gateway.log()[len(log):]  # the level did change


def test_sighup_keeps_the_database_given_with_db_without_a_warning(tmp_path):
    # serve --db names the store instead of the file's storage.database: a
    # reload must neither move to the file's nor call that a change.
    g = Gateway(tmp_path / "gw")
    other = tmp_path / "given.db"
    proc = subprocess.Popen([POPGATE, "-c", str(g.config_file), "serve", "--db", str(other),
                             "--ready-file", str(g.ready_file)], cwd=g.root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 15
        while not g.ready_file.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert g.ready_file.exists(), g.log()
        proc.send_signal(signal.SIGHUP)
        assert g.wait_log("reload done")
        assert "storage.database changed" not in g.log()
        assert other.exists() and not g.db.exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_sighup_with_a_cipher_list_openssl_refuses_changes_nothing(gateway):
    # check-config refuses it with its line; a reload used to keep the old
    # certificate and apply the rest of the file all the same.
    text = gateway.config_file.read_text()
    broken = text.replace("[tls]\n", '[tls]\nciphersuites = "BOGUS"\n').replace('level = "debug"', 'level = "info"')
    gateway.config_file.write_text(broken)
    r = gateway.cli("check-config", check=False)
    assert r.returncode == 1
    assert f"{gateway.config_file}:6:16: tls.ciphersuites: no TLS 1.3 suite OpenSSL knows in this list" in r.stdout + r.stderr
    gateway.reload()
    assert gateway.wait_log("reload refused, keeping the running configuration: ")
    line = next(l for l in gateway.log().splitlines() if "reload refused" in l)
    assert "tls.ciphersuites: no TLS 1.3 suite OpenSSL knows" in line
    assert "reload done" not in gateway.log()


def test_files_are_private(gateway):
    gateway.add_user("alice", "pw")
    assert stat.S_IMODE(os.stat(gateway.db).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(gateway.key).st_mode) == 0o600
    import poplib
    c = poplib.POP3("127.0.0.1", gateway.port("pop3"), timeout=10)
    c.user("alice")
    c.pass_("pw")
    c.quit()
    md = gateway.maildir("alice")
    assert md.is_dir()
    assert stat.S_IMODE(os.stat(md).st_mode) == 0o700


def test_bad_certificate_is_a_clear_startup_error(tmp_path):
    g = Gateway(tmp_path / "gw")
    g.cert.parent.mkdir(parents=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=a",
                    "-keyout", str(g.key), "-out", str(g.cert), "-days", "1"], check=True, capture_output=True)
    other = tmp_path / "other.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-out", str(other)], check=True, capture_output=True)
    os.replace(other, g.key)
    with pytest.raises(RuntimeError) as e:
        g.start(timeout=10)
    assert "does not match" in str(e.value)


def test_allow_row_from_sqlite3_counts_at_next_rcpt(gateway, upstream, make_gateway):
    g = make_gateway(overrides={"relay": {"upstream_host": "127.0.0.1", "upstream_port": upstream.port,
                                          "upstream_starttls": "none"}}, name="gw2")
    def try_relay():
        with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=10) as c:
            c.ehlo("client.test")
            c.mail("a@client.test")
            code, _ = c.rcpt("bob@remote.test")
            c.rset()
            return code
    assert try_relay() == 554
    # An administrator adds the network with the sqlite3 shell while the daemon runs.
    subprocess.run(["sqlite3", str(g.db), "INSERT INTO allowed_networks (cidr, note) VALUES ('127.0.0.0/8', 'lo')"],
                   check=True)
    assert "127.0.0.0/8\tpermanent\tlo" in g.cli("allow", "list").stdout
    assert try_relay() == 250
    subprocess.run(["sqlite3", str(g.db), "DELETE FROM allowed_networks"], check=True)
    assert try_relay() == 554


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to test the privilege drop")
def test_drops_privileges_after_binding():
    nobody = pwd.getpwnam("nobody")
    # The daemon checks at start that nobody can reach and write its
    # directories: pytest's tmp_path lies below /tmp/pytest-of-root (0700).
    top = Path(tempfile.mkdtemp(prefix="popgate-daemon-", dir="/tmp"))
    os.chmod(top, 0o755)
    root = top / "gw"
    g = Gateway(root, overrides={"server": {"user": "nobody", "group": "nogroup"}})
    # The service account owns its state, as deploy/systemd expects.
    os.chown(root, nobody.pw_uid, nobody.pw_gid)
    g.start()
    try:
        # The ready file is written just before the drop (while the daemon may
        # still write where it was started); the log line follows the drop.
        assert g.wait_log("privileges dropped user=nobody")
        status = open(f"/proc/{g.proc.pid}/status").read()
        uids = next(l for l in status.splitlines() if l.startswith("Uid:")).split()[1:]
        assert uids == [str(nobody.pw_uid)] * 4
        s = socket.create_connection(("127.0.0.1", g.port("pop3")))
        assert s.recv(512).startswith(b"+OK")
        s.close()
    finally:
        g.stop()
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to test the privilege drop")
@sqlite_only("the SQLite files the daemon hands to server.user")
def test_daemon_keeps_its_sqlite_locks_across_the_drop(upstream):
    """Handing the database it opened as root to server.user must leave the
    daemon's SQLite locks in place. Closing any descriptor of a file drops
    every POSIX lock the process holds on it: the next `popgate` or sqlite3
    process then took the database for unused, checkpointed it and deleted
    the WAL under the daemon. Logins after that were invisible to the CLI
    (and Postfix), and a revoke never reached the daemon, which relayed on."""
    nobody = pwd.getpwnam("nobody")
    top = Path(tempfile.mkdtemp(prefix="popgate-daemon-", dir="/tmp"))
    os.chmod(top, 0o755)
    root = top / "gw"
    g = Gateway(root, overrides=relay_overrides(upstream, server={"user": "nobody", "group": "nogroup"}))
    os.chown(root, nobody.pw_uid, nobody.pw_gid)
    g.start()
    try:
        assert g.wait_log("privileges dropped user=nobody")
        g.add_user("alice", "pw-alice")   # a second SQLite process, as root, while the daemon runs
        for source in ("127.0.0.2", "127.0.0.3"):
            p = SourcePOP3(g.port("pop3"), source)
            p.user("alice")
            assert p.pass_("pw-alice").startswith(b"+OK")
            p.quit()
        granted = g.cli("grant", "list").stdout
        assert "127.0.0.2" in granted and "127.0.0.3" in granted, granted
        g.cli("grant", "del", "127.0.0.2")

        def rcpt_from(source):
            with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=10, source_address=(source, 0)) as c:
                c.ehlo("client.test")
                c.mail("a@client.test")
                code, _ = c.rcpt("bob@remote.test")
                c.rset()
                return code
        assert rcpt_from("127.0.0.2") == 554
        assert rcpt_from("127.0.0.3") == 250
    finally:
        g.stop()
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to test the privilege drop")
@sqlite_only("the SQLite files the daemon hands to server.user")
@pytest.mark.parametrize("suffix", ["", "-wal", "-shm", "-journal"])
def test_a_link_where_a_database_file_goes_is_refused_before_root_opens_it(suffix):
    # The database's directory is the service account's: a link it plants
    # where a database file goes must not make root write, chown or chmod
    # what it points to.
    top = Path(tempfile.mkdtemp(prefix="popgate-daemon-", dir="/tmp"))
    os.chmod(top, 0o755)
    try:
        victim = top / "victim"
        victim.write_bytes(b"root's own file\n")
        os.chmod(victim, 0o600)
        root = top / "gw"
        db_dir = root / "db"
        g = Gateway(root, overrides={"server": {"user": "nobody", "group": "nogroup"},
                                     "storage": {"database": str(db_dir / "popgate.db"), "group": "postfix"}})
        nobody = pwd.getpwnam("nobody")
        db_dir.mkdir(parents=True)
        for d in (root, db_dir):
            os.chown(d, nobody.pw_uid, nobody.pw_gid)
        planted = db_dir / ("popgate.db" + suffix)
        # A symbolic link, then a hard link (fs.protected_hardlinks lets the
        # account make one to a file it may write but does not own).
        # The daemon opens the files as nobody, which cannot use root's.
        for plant in (planted.symlink_to, lambda v: os.link(v, planted)):
            plant(victim)
            with pytest.raises(RuntimeError) as e:
                g.start()
            assert f"storage.database: {planted} is not readable and writable by nobody, which opens it" \
                in str(e.value)
            st = os.stat(victim)
            assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o600)
            assert victim.read_bytes() == b"root's own file\n"
            planted.unlink()
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to test the privilege drop")
@sqlite_only("the SQLite directory the daemon makes")
def test_root_makes_no_directory_through_a_link_the_account_made():
    # A directory of the account's on the way to the database, and a link
    # in it that the account made (to a directory of root's): mkdir() by
    # path followed it, and root made the missing database directory in
    # root's directory and gave it to the account. Root now walks the path
    # itself and follows only links root made in directories only root may
    # write.
    top = Path(tempfile.mkdtemp(prefix="popgate-daemon-", dir="/tmp"))
    os.chmod(top, 0o755)
    try:
        nobody = pwd.getpwnam("nobody")
        acct, rootarea = top / "acct", top / "rootarea"
        acct.mkdir()
        rootarea.mkdir(mode=0o755)
        os.chown(acct, nobody.pw_uid, nobody.pw_gid)
        (acct / "b").symlink_to(rootarea)
        os.lchown(acct / "b", nobody.pw_uid, nobody.pw_gid)
        g = Gateway(top / "gw", overrides={"server": {"user": "nobody", "group": "nogroup"},
                                           "storage": {"database": str(acct / "b" / "db" / "popgate.db")}})
        g.allow_unclean_exit = True
        with pytest.raises(RuntimeError) as e:
            g.start(timeout=60)
        assert "storage.database: " in str(e.value)
        assert "b is a symbolic link that only root, in a directory only root may write, may make" in str(e.value)
        assert list(rootarea.iterdir()) == []
        # The same link made by root in a directory of root's is followed.
        (acct / "b").unlink()
        (top / "linked").symlink_to(acct)
        g2 = Gateway(top / "gw2", overrides={"server": {"user": "nobody", "group": "nogroup"},
                                             "storage": {"database": str(top / "linked" / "db" / "popgate.db")}})
        g2.start()
        assert os.stat(acct / "db").st_uid == nobody.pw_uid
        g2.stop()
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to test the privilege drop")
def test_the_self_signed_pair_in_the_accounts_directory_is_made_as_the_account():
    # tls/ in a directory of the account's (the default var/tls): a link the
    # account put there had root write a new key and certificate into a
    # directory of root's. The pair is made with the account's ids.
    top = Path(tempfile.mkdtemp(prefix="popgate-daemon-", dir="/tmp"))
    os.chmod(top, 0o755)
    try:
        nobody = pwd.getpwnam("nobody")
        state, rootarea = top / "state", top / "rootarea"
        state.mkdir()
        rootarea.mkdir(mode=0o700)
        os.chown(state, nobody.pw_uid, nobody.pw_gid)
        (state / "tls").symlink_to(rootarea)
        os.lchown(state / "tls", nobody.pw_uid, nobody.pw_gid)
        g = Gateway(top / "gw", overrides={"server": {"user": "nobody", "group": "nogroup"},
                                           "storage": {"database": str(state / "popgate.db")},
                                           "mail": {"maildir": str(state / "mail" / "%u"),
                                                    "relay_drop": str(state / "drop")},
                                           "tls": {"cert_file": str(state / "tls" / "cert.pem"),
                                                   "key_file": str(state / "tls" / "key.pem")}})
        g.allow_unclean_exit = True
        with pytest.raises(RuntimeError) as e:
            g.start(timeout=60)
        assert "Permission denied" in str(e.value) and "cert.pem" in str(e.value)
        assert list(rootarea.iterdir()) == []
        # Without the link, the account's own pair.
        (state / "tls").unlink()
        g.allow_unclean_exit = False
        g.start()
        st = os.stat(state / "tls" / "key.pem")
        assert (st.st_uid, st.st_mode & 0o777) == (nobody.pw_uid, 0o600)
        g.stop()
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to test the privilege drop")
@pytest.mark.parametrize("how", ["symlink", "hardlink"])
def test_a_key_of_roots_is_not_read_through_the_accounts_directory(how):
    # tls/ in a directory of the account's: a link there to a key only root
    # may read (another service's) had root load it and serve it as
    # popgate's. Root reads such paths through a walk that follows no link
    # the account could have made, and refuses another name of a file that
    # is not the account's (the hard link the kernel lets the account make
    # when fs.protected_hardlinks is 0; made by root here).
    top = Path(tempfile.mkdtemp(prefix="popgate-daemon-", dir="/tmp"))
    os.chmod(top, 0o755)
    try:
        nobody = pwd.getpwnam("nobody")
        state, rootarea = top / "state", top / "rootarea"
        (state / "tls").mkdir(parents=True)
        rootarea.mkdir(mode=0o700)
        for d in (state, state / "tls"):
            os.chown(d, nobody.pw_uid, nobody.pw_gid)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-subj", "/CN=other-service", "-keyout", str(rootarea / "key.pem"),
                        "-out", str(rootarea / "cert.pem"), "-days", "2"], check=True, capture_output=True)
        os.chmod(rootarea / "key.pem", 0o600)
        for name in ("cert.pem", "key.pem"):
            if how == "symlink":
                (state / "tls" / name).symlink_to(rootarea / name)
                os.lchown(state / "tls" / name, nobody.pw_uid, nobody.pw_gid)
            else:
                os.link(rootarea / name, state / "tls" / name)
        g = Gateway(top / "gw", overrides={"server": {"user": "nobody", "group": "nogroup"},
                                           "storage": {"database": str(state / "popgate.db")},
                                           "mail": {"maildir": str(state / "mail" / "%u"),
                                                    "relay_drop": str(state / "drop")},
                                           "tls": {"cert_file": str(state / "tls" / "cert.pem"),
                                                   "key_file": str(state / "tls" / "key.pem")}},
                    listeners=[{"name": "pop3s", "protocol": "pop3", "tls": "implicit"}])
        g.allow_unclean_exit = True
        with pytest.raises(RuntimeError) as e:
            g.start(timeout=60)
        why = ("a symbolic link that someone other than root could have made, which root does not follow for nobody"
               if how == "symlink" else "a file with other names, owned by another user than nobody")
        assert f"tls.cert_file {state}/tls/cert.pem: {why}" in str(e.value)
        # check-config says the same before a start.
        r = subprocess.run([POPGATE, "-c", str(g.config_file), "check-config"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode != 0 and why in r.stdout + r.stderr, r.stdout + r.stderr
        # The same files named where only root may write are read, as always.
        g2 = Gateway(top / "gw2", overrides={"server": {"user": "nobody", "group": "nogroup"},
                                             "storage": {"database": str(state / "popgate.db")},
                                             "mail": {"maildir": str(state / "mail" / "%u"),
                                                      "relay_drop": str(state / "drop")},
                                             "tls": {"cert_file": str(rootarea / "cert.pem"),
                                                     "key_file": str(rootarea / "key.pem")}},
                     listeners=[{"name": "pop3s", "protocol": "pop3", "tls": "implicit"}])
        g2.start()
        with socket.create_connection(("127.0.0.1", g2.port("pop3s")), timeout=10) as raw:
            with client_tls_context().wrap_socket(raw) as s:
                assert s.recv(512).startswith(b"+OK")
        g2.stop()
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to test the privilege drop")
@pytest.mark.parametrize("layout,served", [
    ("root-link-to-accounts-file", False),   # /etc/popgate/key.pem -> the account's file, now its link
    ("root-dir-link-to-accounts-dir", False),  # /etc/popgate/tls -> the account's tls, swapped for a link
    ("letsencrypt", True),                    # live/ -> ../archive/, root's links in root's directories
    ("roots-tls-in-accounts-var", True),      # a root-owned var/tls holding root's links
    ("root-only-tls-with-a-backup-link", True),  # key.pem.bak, root's hard link, in a root-only var/tls
])
def test_roots_links_are_followed_only_where_the_account_changes_nothing(layout, served):
    # A review of the first walk found root following its own link into the
    # account's directory (A, B) and refusing root's own layouts (the last two).
    # Under /run, not the world-writable /tmp, after which the walk refuses
    # the '..' of letsencrypt's relative links.
    top = Path(tempfile.mkdtemp(prefix="popgate-test-", dir="/run"))
    os.chmod(top, 0o755)
    try:
        nobody = pwd.getpwnam("nobody")
        state, secret, etc = top / "state", top / "secret", top / "etc"
        for d in (state, secret, etc):
            d.mkdir()
        os.chown(state, nobody.pw_uid, nobody.pw_gid)
        os.chmod(secret, 0o700)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-subj", "/CN=other-service", "-keyout", str(secret / "key.pem"),
                        "-out", str(secret / "cert.pem"), "-days", "2"], check=True, capture_output=True)
        os.chmod(secret / "key.pem", 0o600)
        names = ("cert.pem", "key.pem")

        def as_nobody(fn):
            pid = os.fork()
            if pid == 0:
                try:
                    os.setgid(nobody.pw_gid)
                    os.setuid(nobody.pw_uid)
                    fn()
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)

        if layout == "root-link-to-accounts-file":
            (state / "tls").mkdir()
            os.chown(state / "tls", nobody.pw_uid, nobody.pw_gid)
            for n in names:
                (etc / n).symlink_to(state / "tls" / n)
            as_nobody(lambda: [(state / "tls" / n).symlink_to(secret / n) for n in names])
            files = [etc / n for n in names]
        elif layout == "root-dir-link-to-accounts-dir":
            (etc / "tls").symlink_to(state / "tls")
            as_nobody(lambda: (state / "tls").symlink_to(secret))
            files = [etc / "tls" / n for n in names]
        elif layout == "letsencrypt":
            (etc / "archive").mkdir()
            (etc / "live").mkdir()
            for n in names:
                shutil.copy(secret / n, etc / "archive" / n)
                (etc / "live" / n).symlink_to(Path("..") / "archive" / n)
            files = [etc / "live" / n for n in names]
        elif layout == "roots-tls-in-accounts-var":
            (state / "tls").mkdir(mode=0o755)
            for n in names:
                (state / "tls" / n).symlink_to(secret / n)
            files = [state / "tls" / n for n in names]
        else:
            (state / "tls").mkdir(mode=0o700)
            for n in names:
                shutil.copy(secret / n, state / "tls" / n)
            os.link(state / "tls" / "key.pem", state / "tls" / "key.pem.bak")
            files = [state / "tls" / n for n in names]
        g = Gateway(top / "gw", overrides={"server": {"user": "nobody", "group": "nogroup"},
                                           "storage": {"database": str(state / "popgate.db")},
                                           "mail": {"maildir": str(state / "mail" / "%u"),
                                                    "relay_drop": str(state / "drop")},
                                           "tls": {"cert_file": str(files[0]), "key_file": str(files[1])}},
                    listeners=[{"name": "pop3s", "protocol": "pop3", "tls": "implicit"}])
        if not served:
            g.allow_unclean_exit = True
            with pytest.raises(RuntimeError) as e:
                g.start(timeout=60)
            assert "is a symbolic link that only root" in str(e.value) or \
                "which root does not follow for nobody" in str(e.value), str(e.value)
            return
        g.start()
        with socket.create_connection(("127.0.0.1", g.port("pop3s")), timeout=10) as raw:
            with client_tls_context().wrap_socket(raw) as s:
                assert s.recv(512).startswith(b"+OK")
        g.stop()
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to test the privilege drop")
def test_check_config_is_not_held_by_a_fifo_at_the_key():
    # check-config opened the TLS files as the account in a child without
    # O_NONBLOCK: a FIFO there held it (and the child) until someone wrote.
    top = Path(tempfile.mkdtemp(prefix="popgate-daemon-", dir="/tmp"))
    os.chmod(top, 0o755)
    try:
        nobody = pwd.getpwnam("nobody")
        tls = top / "tls"
        tls.mkdir()
        os.chown(tls, nobody.pw_uid, nobody.pw_gid)
        os.mkfifo(tls / "cert.pem")
        os.mkfifo(tls / "key.pem")
        g = Gateway(top / "gw", overrides={"server": {"user": "nobody", "group": "nogroup"},
                                           "tls": {"cert_file": str(tls / "cert.pem"), "key_file": str(tls / "key.pem")}},
                    listeners=[{"name": "pop3s", "protocol": "pop3", "tls": "implicit"}])
        r = subprocess.run([POPGATE, "-c", str(g.config_file), "check-config"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode != 0
        assert f"tls.cert_file {tls}/cert.pem: not a regular file" in r.stdout + r.stderr, r.stdout + r.stderr
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run check-config as another user")
def test_check_config_of_another_user_and_roots_ca_check_are_not_held_by_fifos():
    # The account's own check-config (the packaged unit's ExecStartPre), its
    # start and its SIGHUP opened the TLS files by path without O_NONBLOCK;
    # root's check-config loaded relay.upstream_ca_file through OpenSSL by
    # path. A FIFO at either held them for ever.
    top = Path(tempfile.mkdtemp(prefix="popgate-daemon-", dir="/tmp"))
    os.chmod(top, 0o755)
    try:
        nobody = pwd.getpwnam("nobody")
        state = top / "state"
        state.mkdir()
        os.chown(state, nobody.pw_uid, nobody.pw_gid)
        for n in ("cert.pem", "key.pem", "ca.pem"):
            os.mkfifo(state / n)
            os.chown(state / n, nobody.pw_uid, nobody.pw_gid)
        g = Gateway(top / "gw", overrides={"tls": {"cert_file": str(state / "cert.pem"),
                                                   "key_file": str(state / "key.pem")},
                                           "storage": {"database": str(state / "popgate.db")},
                                           "mail": {"maildir": str(state / "mail" / "%u"),
                                                    "relay_drop": str(state / "drop")}},
                    listeners=[{"name": "pop3s", "protocol": "pop3", "tls": "implicit"}])
        os.chmod(g.config_file, 0o644)
        os.chmod(g.config_file.parent, 0o755)
        r = subprocess.run(["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
                            POPGATE, "-c", str(g.config_file), "check-config"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode != 0
        assert f"tls.cert_file {state}/cert.pem: not a regular file" in r.stdout + r.stderr, r.stdout + r.stderr
        g2 = Gateway(top / "gw2", overrides={"relay": {"upstream_host": "127.0.0.1", "upstream_starttls": "verify",
                                                       "upstream_ca_file": str(state / "ca.pem")}})
        r = subprocess.run([POPGATE, "-c", str(g2.config_file), "check-config"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode != 0
        assert f"relay.upstream_ca_file: cannot load {state}/ca.pem: not a regular file" in r.stdout + r.stderr, \
            r.stdout + r.stderr
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to test the privilege drop")
def test_a_fifo_at_the_log_file_is_refused_not_waited_for(tmp_path):
    # The account's directory: a FIFO there held a root start in open()
    # until someone read it, and then logged to that reader.
    top = Path(tempfile.mkdtemp(prefix="popgate-daemon-", dir="/tmp"))
    os.chmod(top, 0o755)
    try:
        nobody = pwd.getpwnam("nobody")
        logs = top / "logs"
        logs.mkdir()
        os.chown(logs, nobody.pw_uid, nobody.pw_gid)
        os.mkfifo(logs / "popgate.log")
        g = Gateway(top / "gw", overrides={"server": {"user": "nobody", "group": "nogroup"},
                                           "log": {"target": "file", "file": str(logs / "popgate.log")}})
        g.allow_unclean_exit = True
        with pytest.raises(RuntimeError) as e:
            g.start(timeout=10)
        # O_NONBLOCK: a FIFO nobody reads is refused at once (ENXIO).
        assert f"log.file: cannot open {logs}/popgate.log: No such device or address" in str(e.value)
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to test the privilege drop")
@sqlite_only("the SQLite directory the daemon makes")
def test_root_takes_no_dot_dot_after_a_directory_the_account_may_move():
    # rootonly/l/../db, l a link root made to a directory of the account's:
    # the account may move that directory elsewhere while root walks, and
    # '..' then leads wherever it put it.
    top = Path(tempfile.mkdtemp(prefix="popgate-daemon-", dir="/tmp"))
    os.chmod(top, 0o755)
    try:
        nobody = pwd.getpwnam("nobody")
        (top / "rootonly").mkdir()
        (top / "acct" / "sub").mkdir(parents=True)
        for d in (top / "acct", top / "acct" / "sub"):
            os.chown(d, nobody.pw_uid, nobody.pw_gid)
        (top / "rootonly" / "l").symlink_to(top / "acct" / "sub")
        g = Gateway(top / "gw", overrides={
            "server": {"user": "nobody", "group": "nogroup"},
            "storage": {"database": str(top / "rootonly" / "l" / ".." / "db" / "popgate.db")}})
        g.allow_unclean_exit = True
        with pytest.raises(RuntimeError) as e:
            g.start(timeout=60)
        assert "'..' after a directory that someone other than root may change" in str(e.value)
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
@sqlite_only("a SQLite file's path")
def test_root_follows_a_link_above_the_database_but_not_at_it(tmp_path):
    # /var/lib/popgate -> /srv/popgate is an administrator's choice: popgate
    # run as root opens a database below a linked directory; only a link
    # at the database file itself (which the account could plant) is refused.
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "linked").symlink_to(real)
    r = subprocess.run([POPGATE, "--db", str(tmp_path / "linked" / "p.db"), "db", "migrate"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (real / "p.db").exists()
    (tmp_path / "file-link.db").symlink_to(real / "p.db")
    r = subprocess.run([POPGATE, "--db", str(tmp_path / "file-link.db"), "user", "list"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "it is a symbolic link, which popgate run as root does not follow; name the file itself" in r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to test the privilege drop")
@sqlite_only("the SQLite directory storage.group gives away")
def test_a_link_for_the_database_directory_is_refused_with_storage_group():
    # The directory above the database's may be the account's (the packaged
    # /var/lib/popgate/db): a link it puts there must not have root give
    # another directory to the account and the MTA's group.
    top = Path(tempfile.mkdtemp(prefix="popgate-daemon-", dir="/tmp"))
    os.chmod(top, 0o755)
    try:
        nobody = pwd.getpwnam("nobody")
        shared = top / "shared"
        shared.mkdir(mode=0o1777)
        os.chmod(shared, 0o1777)
        root = top / "gw"
        g = Gateway(root, overrides={"server": {"user": "nobody", "group": "nogroup"},
                                     "storage": {"database": str(root / "db" / "popgate.db"), "group": "postfix"}})
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        (root / "db").symlink_to(shared)
        with pytest.raises(RuntimeError) as e:
            g.start()
        assert f"storage.database: its directory {root}/db is a symbolic link; name the directory itself" \
            in str(e.value)
        st = os.stat(shared)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o1777)
        assert list(shared.iterdir()) == []
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_sessions_left_at_the_end_of_the_drain_end_as_shutdown(make_gateway, upstream):
    """What is still open when the 10 s drain is over is cut the way a
    timeout cuts it: the SMTP client at its prompt is told 421 4.3.2, the
    POP3 one -ERR [SYS/TEMP], in clear and through TLS alike, each
    session logs its end with reason=shutdown, the upstream transaction it
    held is reset (after_close), and nothing is delivered or deleted: the
    POP3 session never reached UPDATE and the relayed message never got its
    final dot."""
    g = make_gateway(overrides=relay_overrides(upstream))
    g.add_user("alice", "pw-alice")
    g.sql("INSERT INTO relay_grants(address, expires_at) VALUES('127.0.0.1', unixepoch()+600)")
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=10) as s:
        assert s.sendmail("a@example.org", ["alice@localhost"], b"Subject: keep me\r\n\r\nbody\r\n") == {}
    assert len(g.messages("alice")) == 1

    pop = poplib.POP3("127.0.0.1", g.port("pop3"), timeout=30)
    pop.user("alice")
    pop.pass_("pw-alice")
    assert pop.dele(1).startswith(b"+OK")
    smtp = smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30)
    smtp.ehlo("client.test")
    assert smtp.mail("a@example.org")[0] == 250
    assert smtp.rcpt("x@remote.test")[0] == 250  # the upstream transaction is open
    assert upstream.wait_for(lambda: upstream.rcpts)
    pop_tls = poplib.POP3_SSL("127.0.0.1", g.port("pop3s"), timeout=30, context=client_tls_context())
    smtp_tls = smtplib.SMTP_SSL("127.0.0.1", g.port("smtps"), timeout=30, context=client_tls_context())
    assert smtp_tls.ehlo("client.test")[0] == 250

    started = time.time()
    g.proc.send_signal(signal.SIGTERM)
    assert g.wait_log("draining sessions=4")
    # The SMTP client waits at its prompt: the 421 comes unasked at the cut.
    smtp.sock.settimeout(20)
    code, text = smtp.getreply()
    assert (code, text[:5]) == (421, b"4.3.2"), (code, text)
    assert time.time() - started >= 9  # not before the drain was over
    # So does the POP3 client's -ERR, with RFC 3206's [SYS/TEMP].
    pop.sock.settimeout(20)
    line = pop.file.readline()
    assert line == b"-ERR [SYS/TEMP] Server shutting down, try again later\r\n", line
    assert pop.file.readline() == b""  # then the connection is closed
    # The TLS sessions hear the same, inside TLS.
    smtp_tls.sock.settimeout(20)
    code, text = smtp_tls.getreply()
    assert (code, text[:5]) == (421, b"4.3.2"), (code, text)
    pop_tls.sock.settimeout(20)
    line = pop_tls.file.readline()
    assert line == b"-ERR [SYS/TEMP] Server shutting down, try again later\r\n", line
    assert pop_tls.file.readline() == b""
    assert g.proc.wait(15) == 0
    log = g.log()
    assert "drain over, ending sessions=4 reason=shutdown" in log
    ends = [ln for ln in log.splitlines() if " end reason=" in ln and "reason=shutdown" in ln]
    assert {("pop3" if " pop3 end" in ln else "smtp") for ln in ends} == {"pop3", "smtp"}, ends
    assert "stopped sessions_left=0" in log
    assert upstream.wait_for(lambda: upstream.rsets), "after_close did not reset the upstream transaction"
    assert upstream.messages == []
    assert len(g.messages("alice")) == 1, "a POP3 session cut before UPDATE deleted a message"
    pop.sock.close()
    smtp.close()
    pop_tls.sock.close()
    smtp_tls.close()


def test_a_client_streaming_data_is_cut_at_the_end_of_the_drain(make_gateway, upstream):
    """A DATA loop re-arms the session's deadline at every read; the drain's
    cut must hold anyway. Before, a client sending without pause moved the
    deadline out before the watchdog woke and was never cut: its session
    died with the I/O threads, unlogged, the client reset."""
    g = make_gateway(overrides=relay_overrides(upstream))
    g.sql("INSERT INTO relay_grants(address, expires_at) VALUES('127.0.0.1', unixepoch()+600)")
    d = socket.create_connection(("127.0.0.1", g.port("smtp")), timeout=30)
    f = d.makefile("rb")
    assert f.readline().startswith(b"220")
    d.sendall(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<x@remote.test>\r\nDATA\r\n")
    while not (line := f.readline()).startswith(b"354"):
        assert line, "closed before DATA"
    stop = threading.Event()

    def stream():
        chunk = (b"x" * 70 + b"\r\n") * 200
        while not stop.is_set():
            try:
                d.sendall(chunk)
            except OSError:
                return

    t = threading.Thread(target=stream)
    t.start()
    try:
        time.sleep(0.5)
        g.proc.send_signal(signal.SIGTERM)
        assert g.wait_log("drain over, ending sessions=1 reason=shutdown", timeout=20)
        assert g.proc.wait(15) == 0
    finally:
        stop.set()
        d.close()
        t.join()
    log = g.log()
    assert "smtp end reason=shutdown-in-data" in log, log[-3000:]
    assert "stopped sessions_left=0" in log
    assert upstream.messages == []  # no final dot, nothing relayed


def test_the_ready_file_is_written_whole_or_the_start_fails(tmp_path):
    # Its writes were not checked: a directory that could not be written
    # was reported as the rename's "No such file", and a link planted at
    # the .tmp name was written through (as root, at that point).
    g = Gateway(tmp_path / "gw")
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    tmp = Path(str(g.ready_file) + ".tmp")
    tmp.symlink_to(victim)
    g.start()
    assert victim.read_text() == "untouched\n"
    assert not g.ready_file.is_symlink() and json.loads(g.ready_file.read_text())
    assert not tmp.exists()
    g.stop()
    r = subprocess.run([POPGATE, "-c", str(g.config_file), "serve", "--ready-file",
                        str(tmp_path / "no-such-dir" / "ready.json")],
                       cwd=g.root, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "cannot write the ready file: open " + str(tmp_path / "no-such-dir" / "ready.json.tmp") + \
        ": No such file or directory" in r.stderr, r.stderr
    # A rename that fails leaves no .tmp behind.
    taken = tmp_path / "taken"
    (taken / "ready.json").mkdir(parents=True)
    (taken / "ready.json" / "x").write_text("")
    r = subprocess.run([POPGATE, "-c", str(g.config_file), "serve", "--ready-file", str(taken / "ready.json")],
                       cwd=g.root, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "cannot write the ready file: rename to " in r.stderr, r.stderr
    assert sorted(p.name for p in taken.iterdir()) == ["ready.json"]
