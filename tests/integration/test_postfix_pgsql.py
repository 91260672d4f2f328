"""Issue 12, MTA side: the shipped Postfix pgsql: lookup table
(deploy/postfix/pgsql-relay-clients.cf) over a private PostgreSQL 15 with
the schema of sql/postgresql/ and the read-only role of
sql/postgresql/roles.sql, read by a real private Postfix 3.7 whose smtpd
runs as the postfix user. A row written with psql counts at the next RCPT;
the MTA's role can read grants and networks and nothing else."""
import os
import re
import shutil
import secrets

import pytest

from popgate_test import CaptureUpstream, Gateway
from private_postfix import (RELAY_DENIED, PrivatePostfix, delivered, pop3_login, require_root,  # noqa: F401
                            work_dir)
from private_postgres import PsqlError, apply_schema

SRC = os.environ.get("POPGATE_SOURCE_DIR", ".")
RELAYED = (250, "2.1.5 Ok")


def lookup_table(dest, pg, dbname, password):
    """deploy/postfix/pgsql-relay-clients.cf as shipped, with this test's
    server, database and password; root:postfix 0640 as the file says."""
    text = open(os.path.join(SRC, "deploy", "postfix", "pgsql-relay-clients.cf")).read()
    for key, value in (("hosts", f"127.0.0.1:{pg.port}"), ("password", password), ("dbname", dbname)):
        text, n = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.M)
        assert n == 1, key
    dest.write_text(text)
    shutil.chown(dest, "root", "postfix")
    os.chmod(dest, 0o640)
    return dest


@pytest.fixture
def mta_db(postgres_server, pg_database):
    """The schema, roles.sql as an administrator runs it, popgate_mta's password."""
    pg, name = postgres_server, pg_database.dbname
    apply_schema(pg, name)
    pg.psql(name, open(os.path.join(SRC, "sql", "postgresql", "roles.sql")).read())
    password = secrets.token_urlsafe(12)
    pg.psql(name, f"ALTER ROLE popgate_mta PASSWORD '{password}'")
    return pg, name, password


@pytest.fixture
def stack(work_dir, mta_db):  # noqa: F811
    """make(table_type="pgsql"): a private Postfix that asks the shipped
    table through `table_type`, and a sink; returns (a psql on the
    database, the Postfix, the sink). Stopped after the test."""
    require_root()
    pg, name, password = mta_db
    made = []

    def make(table_type="pgsql"):
        sink = CaptureUpstream()
        table = lookup_table(work_dir / "popgate-relay-clients.cf", pg, name, password)
        pf = PrivatePostfix(work_dir, sink.port,
                            "permit_mynetworks, permit_sasl_authenticated, "
                            f"check_client_access {table_type}:{table}, reject_unauth_destination")
        made.append((pf, sink))
        pf.start()
        return (lambda sql: pg.psql(name, sql)), pf, sink

    yield make
    for pf, sink in made:
        pf.stop()
        sink.stop()


def grant_row(address, ttl=600):
    return (f"INSERT INTO relay_grants (address, \"user\", expires_at) VALUES ('{address}', 'alice', unixepoch() + {ttl})"
            if ttl > 0 else
            f"INSERT INTO relay_grants (address, \"user\", granted_at, expires_at)"
            f" VALUES ('{address}', 'alice', unixepoch() - 600, unixepoch() + {ttl})")


@pytest.mark.parametrize("table_type", ["pgsql", "proxy:pgsql"])
def test_a_grant_row_relays_at_once_and_no_row_is_refused(stack, table_type):
    psql, pf, sink = stack(table_type)
    assert pf.rcpt("bob@remote.test", source="127.0.0.2") == (554, RELAY_DENIED)
    psql(grant_row("127.0.0.2"))
    assert pf.rcpt("bob@remote.test", source="127.0.0.2") == RELAYED
    pf.send("bob@remote.test", "relayed on a grant read by pgsql:", source="127.0.0.2")
    assert delivered(sink, "bob@remote.test")
    # Another address has no grant.
    assert pf.rcpt("bob@remote.test", source="127.0.0.3") == (554, RELAY_DENIED)
    # A grant deleted with psql: refused at the next RCPT.
    psql("DELETE FROM relay_grants WHERE address = '127.0.0.2'")
    assert pf.rcpt("bob@remote.test", source="127.0.0.2") == (554, RELAY_DENIED)
    assert pf.warnings() == [], pf.log()[-2000:]


def test_an_expired_grant_is_refused(stack):
    psql, pf, sink = stack()
    psql(grant_row("127.0.0.2", ttl=-1))
    assert pf.rcpt("bob@remote.test", source="127.0.0.2") == (554, RELAY_DENIED)
    psql("UPDATE relay_grants SET expires_at = unixepoch() + 600 WHERE address = '127.0.0.2'")
    assert pf.rcpt("bob@remote.test", source="127.0.0.2") == RELAYED


def test_an_allowed_network_containing_the_client_relays(stack):
    psql, pf, sink = stack()
    psql("INSERT INTO allowed_networks (cidr, note) VALUES ('127.0.0.8/29', 'lab')")
    for inside in ("127.0.0.9", "127.0.0.14"):
        assert pf.rcpt("bob@remote.test", source=inside) == RELAYED, inside
    for outside in ("127.0.0.7", "127.0.0.16"):
        assert pf.rcpt("bob@remote.test", source=outside) == (554, RELAY_DENIED), outside
    # An expired network is no network.
    psql("UPDATE allowed_networks SET created_at = 1, expires_at = 2 WHERE note = 'lab'")
    assert pf.rcpt("bob@remote.test", source="127.0.0.9") == (554, RELAY_DENIED)
    assert pf.warnings() == [], pf.log()[-2000:]


def test_mail_for_its_own_domain_needs_no_grant(stack):
    psql, pf, sink = stack()
    assert pf.rcpt("carol@inbound.test", source="127.0.0.2") == RELAYED


def test_database_down_is_a_temporary_failure_never_a_relay(stack, postgres_server):
    psql, pf, sink = stack()
    psql(grant_row("127.0.0.2"))
    postgres_server.stop()
    try:
        for source in ("127.0.0.2", "127.0.0.3"):   # with a grant, and without
            code, text = pf.rcpt("bob@remote.test", source=source)
            assert (code, text.split(" <")[0]) == (451, "4.3.5"), (code, text)
            assert text.endswith("Server configuration error"), text
    finally:
        postgres_server.start()
    assert pf.wait_log("popgate-relay-clients.cf lookup error")


def test_the_mta_role_reads_grants_and_networks_and_nothing_else(mta_db):
    pg, name, password = mta_db
    pg.psql(name, grant_row("192.0.2.7") + "; INSERT INTO users (name) VALUES ('alice')")

    def as_mta(sql):
        return pg.psql(name, sql, user="popgate_mta", password=password)

    assert as_mta("SELECT relay_client_allowed('192.0.2.7', 64), relay_client_allowed('192.0.2.8', 64)") == [
        ("t", "f")]
    assert as_mta("SELECT client, source FROM relay_clients") == [("192.0.2.7", "grant")]
    for statement in (grant_row("192.0.2.9"),
                      "DELETE FROM relay_grants",
                      "UPDATE relay_grants SET expires_at = expires_at + 1",
                      "INSERT INTO allowed_networks (cidr) VALUES ('0.0.0.0/0')",
                      "SELECT name FROM users",
                      "SELECT * FROM audit_log",
                      "CREATE TABLE x (y int)"):
        with pytest.raises(PsqlError, match="permission denied|read-only transaction"):
            as_mta(statement)
    # Even in a transaction it opens itself, it cannot write.
    with pytest.raises(PsqlError, match="permission denied|read-only transaction"):
        as_mta("BEGIN; INSERT INTO relay_grants (address, expires_at) VALUES ('192.0.2.9', unixepoch() + 9); COMMIT;")
    assert pg.psql(name, "SELECT host(address) FROM relay_grants") == [("192.0.2.7",)]
    # A wrong password is refused.
    with pytest.raises(PsqlError, match="password authentication failed"):
        pg.psql(name, "SELECT 1", user="popgate_mta", password="wrong")


def test_a_pop3_login_at_popgate_on_postgresql_relays_through_postfix(stack, pg_database, work_dir):  # noqa: F811
    """The whole path: popgate with [storage] database = the URI writes the
    grant at a POP3 login; Postfix's pgsql: table sees it at the next RCPT."""
    psql, pf, sink = stack()
    g = Gateway(work_dir / "gw", overrides={"storage": {"database": str(pg_database)}},
                listeners=[{"name": "pop3", "protocol": "pop3", "tls": "none"}])
    g.start()
    try:
        g.add_user("alice", "pw")
        assert pf.rcpt("bob@remote.test", source="127.0.0.2") == (554, RELAY_DENIED)
        assert pop3_login(g, "127.0.0.2").startswith(b"+OK")
        pf.send("bob@remote.test", "relayed after a POP3 login at popgate", source="127.0.0.2")
        assert delivered(sink, "bob@remote.test")
        assert pf.rcpt("bob@remote.test", source="127.0.0.3") == (554, RELAY_DENIED)
        # A wrong password writes no grant.
        with pytest.raises(Exception, match="AUTH"):
            pop3_login(g, "127.0.0.4", password="wrong")
        assert pf.rcpt("bob@remote.test", source="127.0.0.4") == (554, RELAY_DENIED)
        assert psql('SELECT host(address), "user", method FROM relay_grants') == [("127.0.0.2", "alice", "pass")]
    finally:
        rc = g.stop()
    assert rc == 0, g.log()[-3000:]
