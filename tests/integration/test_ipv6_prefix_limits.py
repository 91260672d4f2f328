"""Per-address limits and the brute-force counters take an IPv6 client by its
relay.ipv6_prefix (64 here), as its grant: a host with a /64 cannot dodge
limits.max_sessions_per_ip or auth.max_failures_per_user by taking a fresh
address for each session or guess. Another /64 is another client.

The addresses come from PROXY v1 headers sent by the test itself from
127.0.0.1, the one trusted proxy: loopback has no IPv6 /64 to rotate in."""

from popgate_test import make_gateway  # noqa: F401  (fixture)
from raw_client import Client, raw_clients_closed  # noqa: E402,F401  (autouse fixture)

LISTENERS = [{"name": "pop3", "protocol": "pop3", "proxy_protocol": True}]
BASE = {"server": {"trusted_proxies": ["127.0.0.1"]},
        "auth": {"plaintext": "always", "failure_delay_ms": 10, "failure_delay_max_ms": 20}}
TOO_MANY = b"-ERR [SYS/TEMP] too many sessions from this address (limits.max_sessions_per_ip=2)\r\n"
FAILED = b"-ERR [AUTH] Authentication failed.\r\n"
USER_BLOCKED = b"-ERR [AUTH] Too many authentication failures for this user from your address"




def gateway(make_gateway, **sections):
    overrides = {k: dict(v) for k, v in BASE.items()}
    for k, v in sections.items():
        overrides.setdefault(k, {}).update(v)
    g = make_gateway(overrides=overrides, listeners=LISTENERS)
    g.add_user("alice", "pw-alice")
    return g


def proxied(g, client):
    """A POP3 session the gateway sees as coming from `client`; returns (Client, greeting)."""
    c = Client(g.port("pop3"), greet=False)
    c.send(f"PROXY TCP6 {client} 2001:db8:ffff::1 40000 110\r\n".encode())
    return c, c.line()


def login(g, client, password):
    c, greeting = proxied(g, client)
    assert greeting.startswith(b"+OK"), greeting
    assert c.cmd(b"USER alice\r\n") == b"+OK\r\n"
    return c.cmd(b"PASS " + password.encode() + b"\r\n")


def rcpt(g, client):
    """The reply to a relayed RCPT from `client` (named by a PROXY header)."""
    c = Client(g.port("smtp"), greet=False)
    c.send(f"PROXY TCP6 {client} 2001:db8:ffff::1 40000 25\r\n".encode())
    assert c.line().startswith(b"220 ")
    c.smtp(b"EHLO client.test\r\n")
    assert c.smtp(b"MAIL FROM:<alice@gw.test>\r\n").startswith(b"250 ")
    return c.smtp(b"RCPT TO:<x@remote.test>\r\n")


def test_sessions_per_ip_count_the_whole_64(make_gateway):
    g = gateway(make_gateway, limits={"max_sessions_per_ip": 2, "max_connections_per_minute": 0})
    held = [proxied(g, f"2001:db8:1:2::{n}") for n in ("a", "b")]
    assert all(greeting.startswith(b"+OK") for _, greeting in held)
    # a third address of the same /64: the same client, over its limit
    _, refused = proxied(g, "2001:db8:1:2:ffff:1:2:3")
    assert refused == TOO_MANY
    assert g.wait_log("pop3 refused ip=2001:db8:1:2:ffff:1:2:3 listener=pop3 reason=\"too many sessions")
    # the next /64 is another client
    _, other = proxied(g, "2001:db8:1:3::a")
    assert other.startswith(b"+OK")
    # and a slot freed by the /64 is its own again
    held[0][0].close()
    assert g.wait_log("pop3 end reason=eof")
    c, again = proxied(g, "2001:db8:1:2::c")
    assert again.startswith(b"+OK"), again


def test_failures_of_a_name_count_over_the_whole_64(make_gateway):
    g = gateway(make_gateway, auth={"max_failures_per_user": 2})
    assert login(g, "2001:db8:5:6::1", "wrong-1") == FAILED
    assert login(g, "2001:db8:5:6::2", "wrong-2") == FAILED
    assert g.wait_log("pop3 auth-block ip=2001:db8:5:6::2 scope=user user=alice")
    # the right password from a third address of that /64: still refused
    c, greeting = proxied(g, "2001:db8:5:6:aaaa::3")
    assert greeting.startswith(b"+OK")
    assert c.cmd(b"USER alice\r\n") == b"+OK\r\n"
    assert c.cmd(b"PASS pw-alice\r\n").startswith(USER_BLOCKED)
    # from another /64 alice logs in
    assert login(g, "2001:db8:5:7::1", "pw-alice").startswith(b"+OK Logged in")


def test_a_guest_network_inside_a_wider_prefix_relays_on_no_grant_of_that_prefix(make_gateway):
    # A guest /64 inside the site's /48 (relay.ipv6_prefix = 48): its own
    # logins never grant, but a staff login elsewhere in the /48 granted the
    # whole /48, and the guests relayed on it.
    g = make_gateway(overrides={**BASE, "relay": {"ipv6_prefix": 48, "no_grant_networks": ["2001:db8:0:99::/64"]}},
                     listeners=LISTENERS + [{"name": "smtp", "protocol": "smtp", "proxy_protocol": True}])
    g.add_user("alice", "pw-alice")
    guest, staff = "2001:db8:0:99::7", "2001:db8:0:1::5"

    assert login(g, guest, "pw-alice").startswith(b"+OK")
    assert g.wait_log("reason=no-grant-network")
    assert rcpt(g, guest).startswith(b"554 5.7.1 ")
    g.add_user("bob", "pw-bob")
    c, greeting = proxied(g, staff)
    assert c.cmd(b"USER bob\r\n") == b"+OK\r\n"
    assert c.cmd(b"PASS pw-bob\r\n").startswith(b"+OK")
    assert g.sql("SELECT address FROM relay_grants") == [("2001:db8::",)]
    assert rcpt(g, "2001:db8:0:2::9").startswith(b"250 ")  # the rest of the /48 relays on it
    assert rcpt(g, guest).startswith(b"554 5.7.1 "), "a guest relayed on the /48's grant"
    # An administrator's grant of the guest is of its own address (it was
    # the prefix's, which the guest does not use), and counts.
    assert g.cli("grant", "add", guest).stdout.startswith(f"granted {guest} until ")
    assert rcpt(g, guest).startswith(b"250 ")
    # And revoking it takes that grant only, not the site's /48 beside it.
    assert g.cli("grant", "del", guest).stdout == f"revoked {guest}\n"
    assert rcpt(g, guest).startswith(b"554 5.7.1 ")
    assert g.sql("SELECT address FROM relay_grants") == [("2001:db8::",)]
    # A reload does not change the prefix: the rows hold no length, and read
    # with another they would name other networks (2001:db8::/64, where
    # nobody logged in, instead of the /48).
    text = g.config_file.read_text()
    assert "ipv6_prefix = 48" in text
    g.config_file.write_text(text.replace("ipv6_prefix = 48", "ipv6_prefix = 64"))
    g.reload()
    assert g.wait_log("relay.ipv6_prefix changed from 48 to 64: it needs a restart")
    assert rcpt(g, "2001:db8:0:2::9").startswith(b"250 ")


def test_a_login_from_the_loopback_host_grants_that_host_only(make_gateway):
    # ::1 is one host, and ::/8 no site's prefix: a login from ::1 granted
    # ::/64, and every client a proxy named in it relayed, the
    # IPv4-compatible ::203.0.113.7 among them (a review's finding).
    g = make_gateway(overrides=BASE, listeners=LISTENERS + [{"name": "smtp", "protocol": "smtp",
                                                             "proxy_protocol": True}])
    g.add_user("alice", "pw-alice")

    assert login(g, "::1", "pw-alice").startswith(b"+OK")
    assert g.sql("SELECT address FROM relay_grants") == [("::1",)]
    assert rcpt(g, "::1").startswith(b"250 ")
    for other in ("::5", "::203.0.113.7"):
        assert rcpt(g, other).startswith(b"554 5.7.1 "), other


def test_the_loopback_host_has_a_brute_force_count_of_its_own(make_gateway):
    # alice blocked at ::5 (in ::/64 with ::1) is not blocked at ::1.
    g = gateway(make_gateway, auth={"max_failures_per_user": 1})
    assert login(g, "::5", "wrong") == FAILED
    assert g.wait_log("pop3 auth-block ip=::5 scope=user user=alice")
    assert login(g, "::1", "pw-alice").startswith(b"+OK Logged in")
