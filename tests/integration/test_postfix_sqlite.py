"""Issue 13 item 4: the shipped Postfix sqlite: lookup table
(deploy/postfix/relay_clients.cf) over popgate's database, with
storage.group = "postfix" as the file documents, read by a real private
Postfix 3.7 whose smtpd runs as the postfix user. The database, its -wal
and -shm files and its directory are readable by that group and nobody
else, and a grant popgate writes is honoured by Postfix at once.

The layout is the Debian package's under its unit with the drop-in
deploy/systemd/popgate.service.d/postfix-sqlite.conf: the daemon is not
root (it runs as nobody:nogroup here, standing for User=popgate, with
postfix as its only supplementary group: SupplementaryGroups=postfix), its
state directory is its own and 0751 (StateDirectoryMode=0751; the unit
alone makes it 0750, and then Postfix cannot reach the database), and the
database sits in db/ below it."""
import grp
import os
import pwd
import smtplib
import stat
import subprocess
import time

import pytest

from popgate_test import POPGATE, Gateway, CaptureUpstream
from private_postfix import (RELAY_DENIED, PrivatePostfix, delivered, pop3_login, require_root,  # noqa: F401
                            work_dir)

DAEMON_USER, DAEMON_GROUP = "nobody", "nogroup"


def as_daemon(groups=("postfix",), env=()):
    """The command prefix that starts popgate as DAEMON_USER, a member of
    `groups` only, never root (CI runs the tests as root)."""
    g = ["--groups", ",".join(groups)] if groups else ["--clear-groups"]
    return ("setpriv", "--reuid", DAEMON_USER, "--regid", DAEMON_GROUP, *g, "--", "env", *env)


def lookup_table(dest, dbpath):
    """deploy/postfix/relay_clients.cf as shipped, with this test's dbpath."""
    src = os.environ.get("POPGATE_SOURCE_DIR", ".")
    text = open(os.path.join(src, "deploy", "postfix", "relay_clients.cf")).read()
    assert "\ndbpath = /var/lib/popgate/db/popgate.db\n" in text
    dest.write_text(text.replace("dbpath = /var/lib/popgate/db/popgate.db", f"dbpath = {dbpath}"))
    return dest


def state_dir(work_dir, mode):
    """/var/lib/popgate as systemd makes it: the daemon user's, `mode`."""
    root = work_dir / "gw"
    root.mkdir()
    os.chown(root, pwd.getpwnam(DAEMON_USER).pw_uid, grp.getgrnam(DAEMON_GROUP).gr_gid)
    os.chmod(root, mode)
    return root


def make_stack(work_dir, group, table_type, mode=0o751, groups=("postfix",), as_root=False):
    """as_root: started as root with server.user, as a package without the
    systemd User= would be; otherwise started as DAEMON_USER."""
    sink = CaptureUpstream()
    root = state_dir(work_dir, mode)
    db = root / "db" / "popgate.db"   # a directory of its own, as relay_clients.cf advises
    storage = {"database": str(db)}
    if group is not None:
        storage["group"] = group
    overrides = {"storage": storage}
    if as_root:
        overrides["server"] = {"user": DAEMON_USER, "group": DAEMON_GROUP}
    g = Gateway(root, overrides=overrides, listeners=[{"name": "pop3", "protocol": "pop3", "tls": "none"}])
    g.db = db
    g.start(wrapper=() if as_root else as_daemon(groups))
    g.add_user("alice", "pw")
    table = lookup_table(work_dir / "popgate_relay_clients.cf", db)
    os.chmod(table, 0o644)
    pf = PrivatePostfix(work_dir, sink.port,
                        "permit_mynetworks, permit_sasl_authenticated, "
                        f"check_client_access {table_type}:{table}, reject_unauth_destination")
    pf.start()
    return g, pf, sink


@pytest.fixture
def stacks(work_dir):  # noqa: F811
    require_root()
    made = []

    def make(group="postfix", table_type="sqlite", mode=0o751, as_root=False):
        s = make_stack(work_dir, group, table_type, mode, as_root=as_root)
        made.append(s)
        return s

    yield make
    codes = []
    for g, pf, sink in made:
        pf.stop()
        codes.append((g.stop(), g))
        sink.stop()
    for rc, g in codes:
        assert rc == 0, g.log()[-3000:]


def mode_of(p):
    st = os.stat(p)
    return stat.S_IMODE(st.st_mode), grp.getgrgid(st.st_gid).gr_name


@pytest.mark.parametrize("table_type", ["sqlite", "proxy:sqlite"])
def test_grant_written_by_popgate_is_honoured_by_postfix_sqlite_table(stacks, table_type):
    g, pf, sink = stacks(table_type=table_type)
    assert pf.rcpt("bob@remote.test", source="127.0.0.2") == (554, RELAY_DENIED)
    assert pop3_login(g, "127.0.0.2").startswith(b"+OK")
    pf.send("bob@remote.test", "relayed on a grant read by sqlite:", source="127.0.0.2")
    assert delivered(sink, "bob@remote.test")
    assert pf.rcpt("bob@remote.test", source="127.0.0.3") == (554, RELAY_DENIED)
    # A single-host network row too (the view's client column).
    g.cli("allow", "add", "127.0.0.9")
    assert pf.rcpt("bob@remote.test", source="127.0.0.9") == (250, "2.1.5 Ok")
    assert "SQL prepare failed" not in pf.log()
    assert pf.warnings() == [], pf.log()[-2000:]


def test_started_as_root_the_database_keeps_storage_group_after_the_drop(stacks):
    # The privilege drop hands the files to the service user; their group
    # must stay postfix, or Postfix's lookups fail from the first one.
    g, pf, sink = stacks(as_root=True)
    assert g.wait_log(f"privileges dropped user={DAEMON_USER}")
    assert pop3_login(g, "127.0.0.2").startswith(b"+OK")   # the -wal file exists by now
    for f in (g.db, g.db.with_name("popgate.db-wal"), g.db.with_name("popgate.db-shm")):
        assert mode_of(f) == (0o640, "postfix"), f
        assert owner_of(f) == DAEMON_USER, f
    pf.send("bob@remote.test", "relayed on a grant read through storage.group", source="127.0.0.2")
    assert delivered(sink, "bob@remote.test")
    assert pf.warnings() == [], pf.log()[-2000:]


def owner_of(p):
    return pwd.getpwuid(os.stat(p).st_uid).pw_name


def test_database_files_are_readable_by_the_group_and_nobody_else(stacks):
    g, pf, sink = stacks()
    db = g.db
    assert mode_of(db.parent) == (0o2750, "postfix")
    for f in (db, str(db) + "-wal", str(db) + "-shm"):
        assert mode_of(f) == (0o640, "postfix"), f
        assert owner_of(f) == DAEMON_USER, f
    # The state directory itself is left as systemd made it (never re-grouped,
    # which systemd would undo, recursively, at the next start).
    assert mode_of(g.root) == (0o751, DAEMON_GROUP)
    # The daemon really is not root.
    status = open(f"/proc/{g.proc.pid}/status").read()
    assert next(l for l in status.splitlines() if l.startswith("Uid:")).split()[1:] == \
        [str(pwd.getpwnam(DAEMON_USER).pw_uid)] * 4


def test_lookup_works_while_popgate_is_stopped(stacks):
    g, pf, sink = stacks()
    assert pop3_login(g, "127.0.0.2").startswith(b"+OK")
    assert g.stop() == 0
    # SQLite removes -wal and -shm when the last connection closes, and a
    # reader that may not create them could not open the database; popgate
    # keeps them.
    assert os.path.exists(str(g.db) + "-shm") and os.path.exists(str(g.db) + "-wal")
    assert pf.rcpt("bob@remote.test", source="127.0.0.2") == (250, "2.1.5 Ok")
    assert pf.rcpt("bob@remote.test", source="127.0.0.3") == (554, RELAY_DENIED)
    # An administrator's popgate command, run as root while the daemon is down.
    g.cli("grant", "add", "127.0.0.4")
    assert mode_of(str(g.db) + "-shm") == (0o640, "postfix")
    assert pf.rcpt("bob@remote.test", source="127.0.0.4") == (250, "2.1.5 Ok")


def test_without_storage_group_the_lookup_fails_and_never_relays(stacks):
    # Today's behaviour, which the key fixes: 0600 in a 0750 directory.
    g, pf, sink = stacks(group=None)
    assert mode_of(g.db)[0] == 0o600
    assert pop3_login(g, "127.0.0.2").startswith(b"+OK")
    # Postfix's smtpd dies on the lookup ("fatal: ... SQL prepare failed:
    # disk I/O error?") and its master throttles smtpd: the client gets no
    # answer at all, and certainly no relay.
    with pytest.raises(smtplib.SMTPServerDisconnected):
        pf.rcpt("bob@remote.test", source="127.0.0.2")
    assert pf.wait_log("SQL prepare failed")


def test_state_dir_0750_as_the_unit_alone_makes_it_the_lookup_fails(stacks):
    # Without the drop-in's StateDirectoryMode=0751 the postfix user cannot
    # pass through the state directory: no lookup, and certainly no relay.
    g, pf, sink = stacks(mode=0o750)
    assert mode_of(g.db) == (0o640, "postfix")   # storage.group did its part
    assert pop3_login(g, "127.0.0.2").startswith(b"+OK")
    # smtpd (which opened the table as root, before it dropped to postfix)
    # dies on the lookup and master throttles it: no answer, no relay.
    with pytest.raises(smtplib.SMTPServerDisconnected):
        pf.rcpt("bob@remote.test", source="127.0.0.2")
    assert pf.wait_log("dict_sqlite_lookup: ") and "SQL prepare failed: disk I/O error" in pf.log(), pf.log()[-2000:]
    assert sink.messages == []


def start_refused(g, wrapper):
    with pytest.raises(RuntimeError) as e:
        g.start(wrapper=wrapper)
    return str(e.value)


def check_config(g, wrapper):
    r = subprocess.run([*wrapper, POPGATE, "-c", str(g.config_file), "check-config"], capture_output=True,
                       text=True, cwd=g.root, timeout=60)
    return r.returncode, r.stdout + r.stderr


def test_daemon_not_in_the_group_refuses_to_start_and_says_why(work_dir):  # noqa: F811
    # The unit without the drop-in's SupplementaryGroups=postfix.
    require_root()
    root = state_dir(work_dir, 0o751)
    g = Gateway(root, overrides={"storage": {"database": str(root / "db" / "popgate.db"), "group": "postfix"}},
                listeners=[{"name": "pop3", "protocol": "pop3", "tls": "none"}])
    out = start_refused(g, as_daemon(groups=()))
    assert f"storage.group: cannot give {root}/db to group postfix with mode 2750: Operation not permitted" in out, out
    assert "as a member of postfix" in out and "postfix-sqlite.conf" in out
    assert "Success" not in out
    rc, out = check_config(g, as_daemon(groups=()))
    assert rc == 1 and "storage.group: nobody is not a member of group postfix" in out, out
    assert "SupplementaryGroups=postfix" in out
    # As a member, check-config is content.
    rc, out = check_config(g, as_daemon())
    assert rc == 0 and "configuration OK" in out, out


@pytest.mark.parametrize("layout", ["state-directory", "beside-maildirs"])
def test_database_directly_in_the_state_directory_is_refused(work_dir, layout):  # noqa: F811
    # The package's database path, /var/lib/popgate/popgate.db: giving its
    # directory to postfix would give the state directory itself, which
    # systemd hands back to popgate:popgate (recursively) at the next start,
    # and every file made in it later to the group.
    require_root()
    root = state_dir(work_dir, 0o751)
    storage = {"database": str(root / "popgate.db"), "group": "postfix"}
    mail = {} if layout == "beside-maildirs" else {"maildir": str(work_dir / "mail" / "%u"),
                                                    "relay_drop": str(work_dir / "drop")}
    log = {} if layout == "beside-maildirs" else {"file": "", "target": "stderr"}
    g = Gateway(root, overrides={"storage": storage, "mail": mail, "log": log,
                                 "tls": {"cert_file": str(work_dir / "c.pem"), "key_file": str(work_dir / "k.pem")}},
                listeners=[{"name": "pop3", "protocol": "pop3", "tls": "none"}])
    env = (f"STATE_DIRECTORY={root}",) if layout == "state-directory" else ()
    why = (f"storage.group: the database's directory {root} is not popgate's to give to group postfix: "
           f"{root} is systemd's STATE_DIRECTORY" if layout == "state-directory" else
           f"storage.group: the database's directory {root} also holds mail.maildir ({root}/mail)")
    fix = f"put the database in a directory of its own (for example {root}/db/popgate.db)"
    out = start_refused(g, as_daemon(env=env))
    assert why in out and fix in out, out
    # Refused before anything was made or re-grouped.
    assert not (root / "popgate.db").exists()
    assert mode_of(root) == (0o751, DAEMON_GROUP)
    rc, out = check_config(g, as_daemon(env=env))
    assert rc == 1 and why in out and fix in out, out


def test_unknown_group_refuses_to_start(work_dir):  # noqa: F811
    require_root()
    g = Gateway(work_dir / "gw", overrides={"storage": {"group": "no-such-group-popgate",
                                                      "database": str(work_dir / "gw" / "db" / "popgate.db")}},
                listeners=[{"name": "pop3", "protocol": "pop3", "tls": "none"}])
    with pytest.raises(RuntimeError, match="storage.group 'no-such-group-popgate' does not exist"):
        g.start()
