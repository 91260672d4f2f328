"""Issue 12: sql/postgresql/005_initial.sql on a real private PostgreSQL 15,
applied as popgate's store applies it, and what it promises to an
administrator with psql: malformed rows refused with a message that says
what to write, the relay_clients view, grants revoked with their user, and
every change of allowed_networks bumping the generation and notifying
channel popgate_networks."""
import re
import subprocess
import time

import pytest

from private_postgres import PG_BIN, PsqlError, apply_schema


@pytest.fixture
def db(postgres_server, pg_database):
    """(pg, dbname) with the schema at version 6."""
    apply_schema(postgres_server, pg_database.dbname)
    return postgres_server, pg_database.dbname


def sql(db, text, **kw):
    pg, name = db
    return pg.psql(name, text, **kw)


def refused(db, text):
    """The error psql reports for `text`, which must fail."""
    with pytest.raises(PsqlError) as e:
        sql(db, text)
    return str(e.value)


def grant(address, expires="unixepoch() + 600", user="", granted="unixepoch()"):
    return (f"INSERT INTO relay_grants (address, \"user\", granted_at, expires_at) "
            f"VALUES ('{address}', '{user}', {granted}, {expires})")


ONE_ADDRESS = ("relay_grants.address: a grant is for one address, without /prefix; write 192.0.2.7 "
               "or 2001:db8:1:2:: (a network belongs in allowed_networks)")
MAPPED = "relay_grants.address: IPv4-mapped IPv6 (::ffff:a.b.c.d) is not accepted; write the IPv4 address a.b.c.d"
MAPPED_NET = ("allowed_networks.cidr: IPv4-mapped IPv6 (::ffff:a.b.c.d/nnn) is not accepted; "
              "write the IPv4 network a.b.c.d/nn (prefix length minus 96)")


def test_schema_version_and_objects(db):
    assert sql(db, "SELECT version, name FROM schema_migrations ORDER BY version") == [
        ("5", "initial"), ("6", "truncate_revokes_grants"), ("7", "replace_by_update_or_rowid")]
    names = {r[0] for r in sql(db, "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
                                   " AND relkind IN ('r', 'v')")}
    assert names == {"users", "relay_grants", "relay_grant_logins", "allowed_networks", "network_generation",
                     "audit_log", "schema_migrations", "relay_clients", "revoke_user_grants"}
    # Same columns as SQLite's schema 5, in the same order.
    cols = sql(db, "SELECT attname FROM pg_attribute WHERE attrelid = 'relay_grants'::regclass AND attnum > 0"
                   " ORDER BY attnum")
    assert [c[0] for c in cols] == ["address", "user", "method", "tls", "listener", "granted_at", "expires_at",
                                    "hits", "last_used", "quota_hour", "quota_messages", "quota_recipients"]
    # Everything belongs to the role that applied it (the daemon's).
    owners = {r[0] for r in sql(db, "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class"
                                    " WHERE relnamespace = 'public'::regnamespace")}
    assert owners == {"popgate"}


@pytest.mark.parametrize("address, message", [
    ("mail.example.org", 'invalid input syntax for type inet: "mail.example.org"'),
    ("192.0.2.300", 'invalid input syntax for type inet: "192.0.2.300"'),
    ("[2001:db8::1]", 'invalid input syntax for type inet: "[2001:db8::1]"'),
    ("192.0.2.0/24", ONE_ADDRESS),
    ("192.0.2.7/24", ONE_ADDRESS),
    ("2001:db8:1:2::/64", ONE_ADDRESS),
    ("::ffff:192.0.2.7", MAPPED),
    ("::ffff:c000:207", MAPPED),
])
def test_bad_grant_addresses_are_refused_with_a_message(db, address, message):
    assert message in refused(db, grant(address))
    assert sql(db, "SELECT count(*) FROM relay_grants") == [("0",)]


def test_grant_address_update_is_checked_too(db):
    sql(db, grant("192.0.2.7"))
    assert MAPPED in refused(db, "UPDATE relay_grants SET address = '::ffff:192.0.2.8'")
    assert ONE_ADDRESS in refused(db, "UPDATE relay_grants SET address = '192.0.2.0/24'")
    assert sql(db, "SELECT host(address) FROM relay_grants") == [("192.0.2.7",)]


def test_grant_addresses_are_stored_canonical(db):
    # inet's output is canonical, whatever the spelling written.
    sql(db, grant("2001:DB8:0:0::1") + ";" + grant("2001:db8:1:2::") + ";" + grant("192.0.2.7"))
    assert sorted(sql(db, "SELECT client FROM relay_clients")) == [("192.0.2.7",), ("2001:db8:1:2::",),
                                                                   ("2001:db8::1",)]
    # ... so another spelling is the same key.
    assert "duplicate key value violates unique constraint" in refused(db, grant("2001:0db8::0001"))


@pytest.mark.parametrize("cidr, message", [
    ("192.0.2.5/24", 'invalid cidr value: "192.0.2.5/24"'),
    ("2001:db8::1/32", 'invalid cidr value: "2001:db8::1/32"'),
    ("10.0.0.0/33", 'invalid input syntax for type cidr: "10.0.0.0/33"'),
    ("example.org/24", 'invalid input syntax for type cidr: "example.org/24"'),
    ("::ffff:192.0.2.0/120", MAPPED_NET),
    ("::ffff:c000:200/120", MAPPED_NET),
])
def test_bad_networks_are_refused_with_a_message(db, cidr, message):
    text = refused(db, f"INSERT INTO allowed_networks (cidr) VALUES ('{cidr}')")
    assert message in text
    if "invalid cidr value" in message:
        assert "Value has bits set to right of mask" in text
    assert sql(db, "SELECT count(*) FROM allowed_networks") == [("0",)]


def test_network_update_and_duplicates_are_checked(db):
    sql(db, "INSERT INTO allowed_networks (cidr, note) VALUES ('192.0.2.0/24', 'office'), ('198.51.100.7', '')")
    assert "invalid cidr value" in refused(db, "UPDATE allowed_networks SET cidr = '127.0.7.9/16' WHERE note = 'office'")
    assert "duplicate key value" in refused(db, "INSERT INTO allowed_networks (cidr) VALUES ('192.0.2.0/24')")
    assert sql(db, "SELECT cidr FROM allowed_networks ORDER BY id") == [("192.0.2.0/24",), ("198.51.100.7/32",)]


@pytest.mark.parametrize("statement, message", [
    ("INSERT INTO users (name) VALUES ('a/b')",
     "users.name: 1-255 printable ASCII characters, no '/', not starting with '.'"),
    ("INSERT INTO users (name) VALUES ('.hidden')",
     "users.name: 1-255 printable ASCII characters, no '/', not starting with '.'"),
    ("INSERT INTO users (name) VALUES ('al ice')",
     "users.name: 1-255 printable ASCII characters, no '/', not starting with '.'"),
    ("INSERT INTO users (name, password_hash) VALUES ('bob', 'hunter2')",
     "users.password_hash: must be a crypt(3) hash starting with '$' (never a plaintext password)"),
    ("INSERT INTO users (name, apop_only) VALUES ('bob', true)",
     "users.apop_only: an apop-only user needs a shared_secret"),
    ("INSERT INTO users (name, disabled) VALUES ('bob', 2)",
     'column "disabled" is of type boolean but expression is of type integer'),
    ("INSERT INTO relay_grants (address, method, expires_at) VALUES ('192.0.2.7', 'telnet', unixepoch() + 9)",
     "relay_grants.method: one of pass, apop, sasl-<mechanism>, dovecot-pop3, dovecot-imap, cli, sql"),
    ("INSERT INTO relay_grants (address, granted_at, expires_at) VALUES ('192.0.2.7', unixepoch(), unixepoch() - 1)",
     "relay_grants.expires_at: must be later than granted_at"),
    ("INSERT INTO relay_grants (address, expires_at) VALUES ('192.0.2.7', NULL)",
     'null value in column "expires_at" of relation "relay_grants" violates not-null constraint'),
    ("INSERT INTO relay_grants (address, expires_at, quota_hour) VALUES ('192.0.2.7', unixepoch() + 9, 7)",
     "relay_grants.quota_hour: the start of an hour (a multiple of 3600), or 0"),
    ("INSERT INTO relay_grants (address, expires_at, hits) VALUES ('192.0.2.7', unixepoch() + 9, -1)",
     "relay_grants.hits: not negative"),
    ("INSERT INTO allowed_networks (cidr, created_at, expires_at) VALUES ('10.0.0.0/8', 100, 100)",
     "allowed_networks.expires_at: must be later than created_at"),
    ("INSERT INTO audit_log (event) VALUES ('login')",
     "audit_log.event: one of grant, no-grant, revoke, deny, auth-fail, admin"),
])
def test_bad_rows_are_refused_with_a_message(db, statement, message):
    text = refused(db, statement)
    assert message in text


def test_check_failures_are_check_violations(db):
    # SQLSTATE 23514, as for any CHECK: what a client tells apart.
    out = sql(db, """
        DO $$ BEGIN
            INSERT INTO relay_grants (address, expires_at) VALUES ('192.0.2.0/24', unixepoch() + 9);
        EXCEPTION WHEN check_violation THEN
            RAISE NOTICE 'caught';
        END $$;
        SELECT 'after';""")
    assert out == [("after",)]


def test_unixepoch_is_unix_seconds_and_the_sqlite_idiom_works(db):
    before = int(time.time())
    (now,), = sql(db, "SELECT unixepoch()")
    assert before <= int(now) <= int(time.time())
    sql(db, grant("192.0.2.7") + ";" + grant("192.0.2.8", expires="unixepoch() - 1", granted="unixepoch() - 600"))
    assert sql(db, "SELECT host(address) FROM relay_grants WHERE expires_at > unixepoch()") == [("192.0.2.7",)]
    # Defaults are Unix seconds too.
    assert sql(db, "SELECT granted_at BETWEEN %d AND unixepoch() FROM relay_grants WHERE address = '192.0.2.7'"
               % before) == [("t",)]


def test_relay_clients_lists_unexpired_grants_and_networks(db):
    sql(db, grant("192.0.2.7", user="alice") + ";"
        + grant("192.0.2.8", expires="unixepoch() - 1", granted="unixepoch() - 600") + ";"
        + grant("2001:db8:1:2::", user="bob") + ";"
        + "INSERT INTO allowed_networks (cidr) VALUES ('198.51.100.0/24'), ('203.0.113.9'), ('2001:db8:ff::/48'),"
          " ('2001:db8:ee::1');"
        + "INSERT INTO allowed_networks (cidr, created_at, expires_at) VALUES ('10.0.0.0/8', 1, 2);"
        + "INSERT INTO allowed_networks (cidr, expires_at) VALUES ('10.1.0.0/16', unixepoch() + 60)")
    rows = sorted(sql(db, 'SELECT client, source, "user" FROM relay_clients'))
    assert rows == sorted([
        ("192.0.2.7", "grant", "alice"),
        ("2001:db8:1:2::", "grant", "bob"),
        ("198.51.100.0/24", "network", None),
        ("203.0.113.9", "network", None),          # one address: bare, as on SQLite
        ("2001:db8:ff::/48", "network", None),
        ("2001:db8:ee::1", "network", None),
        ("10.1.0.0/16", "network", None),
    ])


def test_network_containment_uses_the_gist_index(db):
    sql(db, "INSERT INTO allowed_networks (cidr) SELECT ('10.' || i / 256 || '.' || i % 256 || '.0/24')::cidr"
            " FROM generate_series(0, 9999) i; ANALYZE allowed_networks")
    assert sql(db, "SELECT cidr FROM allowed_networks WHERE cidr >>= inet '10.3.7.9'") == [("10.3.7.0/24",)]
    assert sql(db, "SELECT count(*) FROM allowed_networks WHERE cidr >>= inet '192.0.2.1'") == [("0",)]
    plan = "\n".join(r[0] for r in sql(db, "EXPLAIN SELECT 1 FROM allowed_networks WHERE cidr >>= inet '10.3.7.9'"))
    assert "allowed_networks_containment" in plan, plan


# -- grants revoked with their user ------------------------------------------

HASH = "$6$saltsalt$" + "x" * 86


@pytest.fixture
def users(db):
    sql(db, f"""
        INSERT INTO users (name, password_hash, shared_secret) VALUES ('alice', '{HASH}', 's1'), ('bob', '{HASH}', NULL);
        {grant('192.0.2.1', user='alice')}; {grant('192.0.2.2', user='alice')}; {grant('192.0.2.3', user='bob')};
        INSERT INTO relay_grant_logins (address, "user", expires_at) VALUES
            ('192.0.2.1', 'alice', unixepoch() + 600), ('192.0.2.2', 'alice', unixepoch() + 600),
            ('192.0.2.3', 'bob', unixepoch() + 600), ('192.0.2.3', 'alice', unixepoch() + 600);""")
    return db


def grants_of(db):
    return sorted(sql(db, 'SELECT host(address), "user" FROM relay_grants'))


def revocations(db):
    return sorted(sql(db, "SELECT event, address, \"user\", detail FROM audit_log WHERE event = 'revoke'"))


@pytest.mark.parametrize("change, detail, name", [
    ("DELETE FROM users WHERE name = 'alice'", "user deleted", "alice"),
    ("UPDATE users SET disabled = true WHERE name = 'alice'", "user disabled", "alice"),
    ("UPDATE users SET password_hash = '$6$other$' || repeat('y', 86) WHERE name = 'alice'", "password changed",
     "alice"),
    ("UPDATE users SET shared_secret = 's2' WHERE name = 'alice'", "password changed", "alice"),
    ("UPDATE users SET shared_secret = NULL WHERE name = 'alice'", "password changed", "alice"),
    ("UPDATE users SET name = 'alicia' WHERE name = 'alice'", "user renamed", "alice"),
    ("INSERT INTO revoke_user_grants (\"user\", detail) VALUES ('alice', 'phone stolen')", "phone stolen", "alice"),
])
def test_user_changes_revoke_their_grants_with_audit_rows(users, change, detail, name):
    db = users
    sql(db, change)
    # bob's grant stays: at 192.0.2.3 alice logged in too, but bob last.
    assert grants_of(db) == [("192.0.2.3", "bob")]
    assert revocations(db) == [("revoke", "192.0.2.1", name, detail), ("revoke", "192.0.2.2", name, detail)]
    assert sorted(sql(db, 'SELECT host(address), "user" FROM relay_grant_logins')) == [("192.0.2.3", "bob")]


@pytest.mark.parametrize("change", [
    f"UPDATE users SET password_hash = '{HASH}', shared_secret = 's1' WHERE name = 'alice'",  # the same values
    "UPDATE users SET disabled = false WHERE name = 'alice'",
    "UPDATE users SET apop_only = true WHERE name = 'alice'",
    "UPDATE users SET name = 'alice' WHERE name = 'alice'",
    "DELETE FROM users WHERE name = 'nobody'",
])
def test_changes_that_lock_nobody_out_revoke_nothing(users, change):
    db = users
    sql(db, change)
    assert grants_of(db) == [("192.0.2.1", "alice"), ("192.0.2.2", "alice"), ("192.0.2.3", "bob")]
    assert revocations(db) == []


def test_disabling_a_disabled_user_revokes_a_hand_written_grant(users):
    db = users
    sql(db, "UPDATE users SET disabled = true WHERE name = 'bob'")
    sql(db, grant("192.0.2.9", user="bob"))
    sql(db, "UPDATE users SET disabled = true WHERE name = 'bob'")
    assert ("192.0.2.9", "bob") not in grants_of(db)


def test_deleting_grants_forgets_their_logins(users):
    db = users
    sql(db, "DELETE FROM relay_grants WHERE address = '192.0.2.3'")
    assert sorted(sql(db, 'SELECT host(address), "user" FROM relay_grant_logins')) == [
        ("192.0.2.1", "alice"), ("192.0.2.2", "alice")]
    sql(db, "DELETE FROM relay_grants")
    assert sql(db, "SELECT count(*) FROM relay_grant_logins") == [("0",)]
    assert revocations(db) == []   # a purge is no revocation


def test_updated_at_follows_changes(users):
    db = users
    sql(db, "UPDATE users SET updated_at = 5 WHERE name = 'bob'")   # set explicitly: kept
    assert sql(db, "SELECT updated_at FROM users WHERE name = 'bob'") == [("5",)]
    sql(db, "UPDATE users SET apop_only = false WHERE name = 'bob'")
    (t,), = sql(db, "SELECT updated_at FROM users WHERE name = 'bob'")
    assert abs(int(t) - time.time()) < 60


# -- allowed_networks changes: generation and NOTIFY ---------------------------

class Listener:
    """A psql session that LISTENs on popgate_networks, as the daemon does;
    psql prints a notification after the next command it runs."""

    def __init__(self, pg, dbname):
        self.p = subprocess.Popen(
            [str(PG_BIN / "psql"), "-X", "-q", "-A", "-t", "-h", str(pg.sock), "-p", str(pg.port),
             "-U", "postgres", "-d", dbname],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.n = 0
        self.poll()   # connected
        self.p.stdin.write("LISTEN popgate_networks;\n")
        self.poll()   # listening

    def poll(self):
        """The notifications that arrived since the last poll: payloads."""
        self.n += 1
        marker = f"poll-{self.n}"
        self.p.stdin.write(f"SELECT '{marker}';\n")
        payloads = []
        deadline = time.time() + 20
        while time.time() < deadline:
            line = self.p.stdout.readline()
            assert line, "psql ended"
            m = re.match(r'Asynchronous notification "popgate_networks" with payload "(\d+)" received', line)
            if m:
                payloads.append(int(m.group(1)))
            elif line.strip() == marker:
                return payloads
        raise AssertionError("listener did not answer")

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=20)


@pytest.fixture
def listener(db):
    pg, name = db
    lst = Listener(pg, name)
    yield lst
    lst.close()


def generation(db):
    (g,), = sql(db, "SELECT generation FROM network_generation WHERE id = 1")
    return int(g)


def test_network_changes_bump_the_generation_and_notify(db, listener):
    assert generation(db) == 0
    assert listener.poll() == []
    steps = [
        "INSERT INTO allowed_networks (cidr) VALUES ('192.0.2.0/24'), ('198.51.100.0/24')",   # one statement
        "UPDATE allowed_networks SET note = 'office' WHERE cidr = '192.0.2.0/24'",
        "DELETE FROM allowed_networks WHERE cidr = '192.0.2.0/24'",
        "TRUNCATE allowed_networks",
    ]
    for i, step in enumerate(steps, start=1):
        sql(db, step)
        assert generation(db) == i, step
        # Delivered to a session that is only listening, at the commit.
        payloads = listener.poll()
        deadline = time.time() + 5
        while not payloads and time.time() < deadline:
            time.sleep(0.05)
            payloads = listener.poll()
        assert payloads == [i], step


def test_a_rolled_back_change_neither_bumps_nor_notifies(db, listener):
    sql(db, "BEGIN; INSERT INTO allowed_networks (cidr) VALUES ('192.0.2.0/24'); ROLLBACK;")
    time.sleep(0.3)
    assert listener.poll() == []
    assert generation(db) == 0
    assert "invalid cidr value" in refused(db, "INSERT INTO allowed_networks (cidr) VALUES ('192.0.2.1/24')")
    time.sleep(0.3)
    assert listener.poll() == []
    assert generation(db) == 0


def test_grant_changes_do_not_touch_the_generation(db, listener):
    sql(db, grant("192.0.2.7") + "; DELETE FROM relay_grants")
    time.sleep(0.3)
    assert listener.poll() == []
    assert generation(db) == 0


# -- the MTA's lookup function -------------------------------------------------

@pytest.mark.parametrize("key, expected", [
    ("192.0.2.7", True),             # its grant
    ("192.0.2.8", False),            # expired grant
    ("192.0.2.9", False),            # nothing
    ("2001:db8:1:2::5", True),       # the /64 grant key 2001:db8:1:2::
    ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", True),
    ("2001:db8:1:3::5", False),      # the next /64
    ("2001:db8:9::1", True),         # a hand-written full IPv6 grant
    ("2001:db8:9::2", False),        # ... matches only itself (its /64 key has no grant)
    ("198.51.100.77", True),         # inside an allowed network
    ("10.1.2.3", False),             # inside an expired network
    ("2001:db8:ff:1::1", True),      # inside an IPv6 network
    # Keys Postfix also asks for, which are no address: false, never an error.
    ("unknown", False), ("192.0.2", False), ("192.0", False), ("2001:db8:1:2:", False), ("2001", False),
    ("999.0.2.7", False), ("::ffff:192.0.2.7", False), ("", False), ("x' OR '1'='1", False),
])
def test_relay_client_allowed(db, key, expected):
    sql(db, grant("192.0.2.7") + ";" + grant("192.0.2.8", expires="unixepoch() - 1", granted="unixepoch() - 600")
        + ";" + grant("2001:db8:1:2::") + ";" + grant("2001:db8:9::1") + ";"
        + "INSERT INTO allowed_networks (cidr) VALUES ('198.51.100.0/24'), ('2001:db8:ff::/48');"
        + "INSERT INTO allowed_networks (cidr, created_at, expires_at) VALUES ('10.0.0.0/8', 1, 2)")
    quoted = key.replace("'", "''")
    assert sql(db, f"SELECT relay_client_allowed('{quoted}', 64)") == [("t" if expected else "f",)]
