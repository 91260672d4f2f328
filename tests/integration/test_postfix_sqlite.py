"""Issue 13 item 4: the shipped Postfix sqlite: lookup table
(deploy/postfix/relay_clients.cf) over popgate's database, with
storage.group = "postfix" as the file documents, read by a real private
Postfix 3.7 whose smtpd runs as the postfix user. The database, its -wal
and -shm files and its directory are readable by that group and nobody
else, and a grant popgate writes is honoured by Postfix at once."""
import grp
import os
import smtplib
import stat
import time

import pytest

from popgate_test import Gateway, CaptureUpstream
from private_postfix import (RELAY_DENIED, PrivatePostfix, delivered, pop3_login, require_root,  # noqa: F401
                            work_dir)


def lookup_table(dest, dbpath):
    """deploy/postfix/relay_clients.cf as shipped, with this test's dbpath."""
    src = os.environ.get("POPGATE_SOURCE_DIR", ".")
    text = open(os.path.join(src, "deploy", "postfix", "relay_clients.cf")).read()
    assert "\ndbpath = /var/lib/popgate/db/popgate.db\n" in text
    dest.write_text(text.replace("dbpath = /var/lib/popgate/db/popgate.db", f"dbpath = {dbpath}"))
    return dest


def make_stack(work_dir, group, table_type):
    sink = CaptureUpstream()
    root = work_dir / "gw"
    db = root / "db" / "popgate.db"   # a directory of its own, as relay_clients.cf advises
    storage = {"database": str(db)}
    if group is not None:
        storage["group"] = group
    g = Gateway(root, overrides={"storage": storage},
                listeners=[{"name": "pop3", "protocol": "pop3", "tls": "none"}])
    os.chmod(root, 0o755)   # the postfix user must reach db/ (as /var/lib/popgate is)
    g.db = db
    g.start()
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

    def make(group="postfix", table_type="sqlite"):
        s = make_stack(work_dir, group, table_type)
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
    assert "warning" not in pf.log(), pf.log()[-2000:]


def test_database_files_are_readable_by_the_group_and_nobody_else(stacks):
    g, pf, sink = stacks()
    db = g.db
    assert mode_of(db.parent) == (0o2750, "postfix")
    for f in (db, str(db) + "-wal", str(db) + "-shm"):
        assert mode_of(f) == (0o640, "postfix"), f


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


def test_unknown_group_refuses_to_start(work_dir):  # noqa: F811
    require_root()
    g = Gateway(work_dir / "gw", overrides={"storage": {"group": "no-such-group-popgate"}},
                listeners=[{"name": "pop3", "protocol": "pop3", "tls": "none"}])
    with pytest.raises(RuntimeError, match="storage.group 'no-such-group-popgate' does not exist"):
        g.start()
