"""Issue 17 item 6 against the running daemon: rows written by hand fail
loudly, not silently. The table rules refuse any spelling of an address but
the canonical one (the text grants are looked up by) and networks with host
bits under the prefix, with a message; rows from before those rules (schema
2) are kept, never widened, and reported once each in the log with what to
write; real SMTP clients see the effect at RCPT."""
import smtplib
import time

import pytest

from popgate_test import BACKEND, make_schema_2_database, sqlite_only


def rcpt_from_loopback(g):
    """The gateway's answer to a remote recipient from 127.0.0.1."""
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=60) as s:
        s.ehlo("client.test")
        assert s.mail("sender@example.org")[0] == 250
        return s.rcpt("someone@remote.test")


def refusal(g, statement):
    """The database's message for a statement the table rules refuse (written
    with Python's sqlite3 or psycopg2, as an administrator's script would)."""
    with pytest.raises(g.database_error) as e:
        g.sql(statement)
    return str(e.value).strip()


# PostgreSQL's inet reads every spelling of an IPv6 address as that address:
# only the IPv4-mapped form is refused there, by a rule of the schema's own.
SPELLING = "SQLite's spelling rules: PostgreSQL's inet takes any spelling of the address"
MAPPED = {
    "sqlite": "relay_grants.address: IPv4-mapped IPv6 (::ffff:c000:207) is not accepted; "
              "write the IPv4 address its last two groups spell (192.0.2.7)",
    "postgresql": "relay_grants.address: IPv4-mapped IPv6 (::ffff:a.b.c.d) is not accepted; "
                  "write the IPv4 address a.b.c.d",
}


@pytest.mark.parametrize("address,message", [
    ("::ffff:7f00:1", MAPPED[BACKEND]),
    pytest.param("0:0:0:0:0:0:0:1", "relay_grants.address: two or more zero groups in a row are written ::; "
                 "write 2001:db8::1, not 2001:db8:0:0:0:0:0:1", marks=sqlite_only(SPELLING)),
    pytest.param("0::1", "relay_grants.address: :: takes in every zero group beside it; write 2001:db8::1, "
                 "not 2001:db8:0::1", marks=sqlite_only(SPELLING)),
])
def test_sql_refuses_a_grant_in_another_spelling(gateway, address, message):
    assert refusal(gateway, f"INSERT INTO relay_grants (address, expires_at) VALUES ('{address}', "
                            "unixepoch() + 600)").splitlines()[0] == message
    assert gateway.sql("SELECT count(*) FROM relay_grants") == [(0,)]
    # nothing to relay on, and the canonical row works at once
    assert rcpt_from_loopback(gateway)[0] == 554
    gateway.sql("INSERT INTO relay_grants (address, expires_at) VALUES ('127.0.0.1', unixepoch() + 600)")
    assert rcpt_from_loopback(gateway)[0] == 250


HOST_BITS = {
    "sqlite": ("allowed_networks.cidr: host bits are set under the prefix length; write the network "
               "(192.0.2.0/24, not 192.0.2.5/24), or one address as 192.0.2.5/32",
               "allowed_networks.cidr: host bits are set under the prefix length"),
    # the cidr type's own check (sql/postgresql/005_initial.sql)
    "postgresql": ('invalid cidr value: "127.0.7.9/16"', 'invalid cidr value: "::1/64"'),
}


def test_sql_refuses_a_network_with_host_bits(gateway):
    first, start = HOST_BITS[BACKEND]
    assert refusal(gateway, "INSERT INTO allowed_networks (cidr) VALUES ('127.0.7.9/16')").splitlines()[0] == first
    assert refusal(gateway, "INSERT INTO allowed_networks (cidr) VALUES ('::1/64')").startswith(start)
    assert gateway.sql("SELECT count(*) FROM allowed_networks") == [(0,)]
    assert rcpt_from_loopback(gateway)[0] == 554  # 127.0.0.1 was never let in by 127.0.7.9/16
    gateway.sql("INSERT INTO allowed_networks (cidr) VALUES ('127.0.0.0/16')")
    assert rcpt_from_loopback(gateway)[0] == 250


def warnings_about(g, needle):
    return [l for l in g.log().splitlines() if " warning " in l and needle in l]


@sqlite_only("a database from SQLite's schema 2")
def test_rows_from_before_the_rules_are_reported_once_and_never_widened(make_gateway):
    g = make_gateway(start=False, overrides={"relay": {"purge_interval": 1}})
    make_schema_2_database(g.db, [
        # what 127.0.0.1 was meant to relay by, in spellings that never matched
        "INSERT INTO relay_grants (address, user, expires_at) VALUES ('::ffff:7f00:1', 'mapped', unixepoch() + 600)",
        "INSERT INTO relay_grants (address, user, expires_at) VALUES ('0:0:0:0:0:0:0:1', 'long', unixepoch() + 600)",
        "INSERT INTO relay_grants (address, user, expires_at) VALUES ('2001:db8:1:2::', 'fine', unixepoch() + 600)",
        # a typo that schema 2 let in and the daemon widened to 127.0.0.0/16
        "INSERT INTO allowed_networks (cidr, note) VALUES ('127.0.7.9/16', 'typo')",
        "INSERT INTO allowed_networks (cidr, note) VALUES ('2001:0db8::/32', 'spelt long')",
    ])
    g.start()  # migrates through schema 3 (and later ones) and keeps the rows
    assert g.sql("SELECT max(version) FROM schema_migrations")[0][0] >= 3
    assert g.sql("SELECT count(*) FROM relay_grants") == [(3,)]
    assert g.sql("SELECT cidr FROM allowed_networks ORDER BY id") == [("127.0.7.9/16",), ("2001:0db8::/32",)]

    # Reported at start, before any client asked.
    assert g.wait_log("relay_grants address=0:0:0:0:0:0:0:1 never matches")
    assert g.wait_log('cidr=127.0.7.9/16 problem="ignored')
    # The typo no longer lets 127.0.0.1 relay; the grants never did.
    assert rcpt_from_loopback(g)[0] == 554
    assert g.wait_log("decision=denied")
    # More decisions, a change of the network list (a reload), a SIGHUP and
    # a few purges (every second here): still one warning per row.
    g.sql("INSERT INTO allowed_networks (cidr) VALUES ('198.51.100.0/24')")
    assert rcpt_from_loopback(g)[0] == 554
    g.reload()
    assert g.wait_log("reload done")
    time.sleep(3.5)
    assert rcpt_from_loopback(g)[0] == 554

    host_bits = warnings_about(g, "cidr=127.0.7.9/16")
    assert len(host_bits) == 1, host_bits
    assert "ignored: host bits set in '127.0.7.9/16'; write the network 127.0.0.0/16, or 127.0.7.9/32 for one " \
           "address" in host_bits[0]
    spelt = warnings_about(g, "cidr=2001:0db8::/32")
    assert len(spelt) == 1 and "used as 2001:db8::/32" in spelt[0] and spelt[0].endswith('; write 2001:db8::/32"')
    mapped = warnings_about(g, "address=::ffff:7f00:1 ")
    assert len(mapped) == 1 and mapped[0].endswith(
        "never matches problem=\"IPv4-mapped IPv6 '::ffff:7f00:1' is not accepted; write the IPv4 address 127.0.0.1\""), mapped
    long = warnings_about(g, "address=0:0:0:0:0:0:0:1 ")
    assert len(long) == 1 and long[0].endswith('; write ::1"'), long
    assert warnings_about(g, "2001:db8:1:2::") == []
    assert warnings_about(g, "198.51.100.0/24") == []

    # Rewritten as the warning says, the row counts at the next RCPT.
    g.sql("UPDATE allowed_networks SET cidr = '127.0.0.0/16' WHERE cidr = '127.0.7.9/16'")
    assert rcpt_from_loopback(g)[0] == 250
