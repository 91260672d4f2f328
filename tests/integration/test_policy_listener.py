"""The policy listener (protocol = "policy") spoken to directly, as Postfix's
policy client and Exim's ${readsocket} do: several requests per connection,
the same relay decision as popgate's own RCPT, and a defined answer to every
request that breaks the protocol. test_postfix_policy.py runs it behind a
real Postfix."""
import socket
import time

import pytest

from popgate_test import Gateway, eventually, make_gateway  # noqa: F401

LISTENERS = [
    {"name": "pop3", "protocol": "pop3", "tls": "none"},
    {"name": "smtp", "protocol": "smtp", "tls": "none"},
    {"name": "policy", "protocol": "policy", "tls": "none"},
]


def request(client, recipient="bob@remote.test", state="RCPT", **extra):
    attrs = {"request": "smtpd_access_policy", "protocol_state": state, "protocol_name": "ESMTP",
             "client_address": client, "client_name": "unknown", "helo_name": "client.test",
             "sender": "alice@client.test", "recipient": recipient, "sasl_username": "", **extra}
    return "".join(f"{k}={v}\n" for k, v in attrs.items() if v is not None).encode() + b"\n"


class PolicyClient:
    def __init__(self, g, timeout=10):
        self.s = socket.create_connection(("127.0.0.1", g.port("policy")), timeout=timeout)
        self.buf = b""

    def ask(self, payload):
        self.s.sendall(payload)
        return self.answer()

    def answer(self):
        while b"\n\n" not in self.buf:
            chunk = self.s.recv(4096)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        a, self.buf = self.buf.split(b"\n\n", 1)
        return a.decode()

    def closed(self, timeout=5):
        """True when the server closes the connection within timeout: EOF,
        or a reset (closing with bytes of ours unread)."""
        self.s.settimeout(timeout)
        try:
            while True:
                chunk = self.s.recv(4096)
                if not chunk:
                    return True
                self.buf += chunk
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.s.close()


@pytest.fixture
def gw(make_gateway):
    g = make_gateway(listeners=LISTENERS)
    g.add_user("alice", "pw")
    return g


def grant(g, address, seconds=600):
    g.sql("INSERT INTO relay_grants (address, user, method, expires_at) VALUES (?, 'alice', 'sql', unixepoch() + ?)",
          (address, seconds))


def test_several_requests_on_one_connection_get_the_relay_decision(gw):
    grant(gw, "192.0.2.7")
    c = PolicyClient(gw)
    assert c.ask(request("192.0.2.7")) == "action=OK"
    assert c.ask(request("192.0.2.8")) == "action=DUNNO"           # no grant: Postfix decides
    assert c.ask(request("192.0.2.7", "carol@other.test")) == "action=OK"
    # Pipelined: two requests in one write, two answers in order.
    c.s.sendall(request("192.0.2.8") + request("192.0.2.7"))
    assert c.answer() == "action=DUNNO"
    assert c.answer() == "action=OK"
    c.close()
    assert gw.wait_log("policy rcpt to=<bob@remote.test> ip=192.0.2.7 decision=grant")
    assert gw.wait_log("policy rcpt to=<bob@remote.test> ip=192.0.2.8 decision=denied detail=no-grant-or-network")
    assert gw.wait_log("policy end reason=eof ip=127.0.0.1 requests=5")


def test_grant_hits_are_counted_and_no_deny_rows_written(gw):
    grant(gw, "192.0.2.7")
    c = PolicyClient(gw)
    for _ in range(3):
        assert c.ask(request("192.0.2.7")) == "action=OK"
    assert c.ask(request("192.0.2.9")) == "action=DUNNO"
    c.close()
    deadline = time.time() + 10
    while time.time() < deadline and gw.sql("SELECT hits FROM relay_grants WHERE address = '192.0.2.7'")[0][0] < 3:
        time.sleep(0.1)
    assert gw.sql("SELECT hits FROM relay_grants WHERE address = '192.0.2.7'")[0][0] == 3
    # DUNNO is no refusal (most requests are inbound mail to the MTA's domains).
    assert gw.sql("SELECT count(*) FROM audit_log WHERE event = 'deny'")[0][0] == 0


def test_a_pop3_login_is_seen_by_the_next_request(gw):
    import poplib
    c = PolicyClient(gw)
    assert c.ask(request("127.0.0.1")) == "action=DUNNO"
    p = poplib.POP3("127.0.0.1", gw.port("pop3"), timeout=10)
    p.user("alice")
    p.pass_("pw")
    p.quit()
    assert c.ask(request("127.0.0.1")) == "action=OK"
    c.close()


def test_expired_grant_and_neighbour_get_dunno(gw):
    gw.sql("INSERT INTO relay_grants (address, user, granted_at, expires_at) "
           "VALUES ('192.0.2.7', 'alice', unixepoch() - 600, unixepoch() - 1)")
    grant(gw, "192.0.2.70")
    c = PolicyClient(gw)
    assert c.ask(request("192.0.2.7")) == "action=DUNNO"
    assert c.ask(request("192.0.2.71")) == "action=DUNNO"
    c.close()


def test_networks_and_ipv6_prefix_grants(gw):
    gw.cli("allow", "add", "198.51.100.0/24")
    gw.cli("allow", "add", "2001:db8:aa::/48")
    gw.sql("INSERT INTO relay_grants (address, user, expires_at) VALUES ('2001:db8:1:2::', 'alice', unixepoch() + 600)")
    c = PolicyClient(gw)
    assert c.ask(request("198.51.100.77")) == "action=OK"
    assert c.ask(request("198.51.101.1")) == "action=DUNNO"
    assert c.ask(request("2001:db8:aa:5::1")) == "action=OK"
    assert c.ask(request("2001:db8:1:2:aaaa:bbbb:cccc:dddd")) == "action=OK"  # the /64 grant
    assert c.ask(request("2001:db8:1:3::1")) == "action=DUNNO"
    c.close()
    assert gw.wait_log("decision=network detail=network=198.51.100.0/24")


def test_local_domains_are_not_popgates_business(gw):
    # gw.test is popgate's own local domain; to another MTA that is nothing:
    # no grant, no opinion.
    c = PolicyClient(gw)
    assert c.ask(request("192.0.2.9", "alice@gw.test")) == "action=DUNNO"
    assert c.ask(request("192.0.2.9", "postmaster")) == "action=DUNNO"
    c.close()


def test_sasl_at_the_mta_relays_as_smtp_auth_does(gw):
    c = PolicyClient(gw)
    assert c.ask(request("192.0.2.9", sasl_username="bob")) == "action=OK"
    assert c.ask(request("192.0.2.9", sasl_username="")) == "action=DUNNO"
    c.close()
    assert gw.wait_log("decision=auth detail=sasl sasl_user=bob action=OK")


def test_other_states_and_request_types_get_dunno(gw):
    grant(gw, "192.0.2.7")
    c = PolicyClient(gw)
    assert c.ask(request("192.0.2.7", state="CONNECT")) == "action=DUNNO"
    assert c.ask(request("192.0.2.7", state="DATA")) == "action=DUNNO"
    assert c.ask(request("192.0.2.7", request="something_else")) == "action=DUNNO"
    # A minimal client (Exim) may send the address alone.
    assert c.ask(b"client_address=192.0.2.7\n\n") == "action=OK"
    c.close()
    assert gw.wait_log("policy skip request=smtpd_access_policy state=DATA action=DUNNO")


def test_unusable_client_address_gets_dunno(gw):
    c = PolicyClient(gw)
    assert c.ask(request("not-an-address")) == "action=DUNNO"
    assert c.ask(request("192.0.2.300")) == "action=DUNNO"
    assert c.ask(b"\n") == "action=DUNNO"                 # an empty request
    assert c.ask(request("192.0.2.9")) == "action=DUNNO"  # still in step
    c.close()
    assert gw.wait_log("client_address=not-an-address decision=unusable action=DUNNO")


def test_configured_ok_action(make_gateway):
    g = make_gateway(listeners=[{"name": "policy", "protocol": "policy", "tls": "none",
                                 "policy_action_ok": "OK granted by popgate"}])
    grant(g, "192.0.2.7")
    c = PolicyClient(g)
    assert c.ask(request("192.0.2.7")) == "action=OK granted by popgate"
    assert c.ask(request("192.0.2.8")) == "action=DUNNO"
    c.close()


def test_half_close_after_the_request_gets_the_answer_then_eof(gw):
    # What Exim's ${readsocket} does: write, shut down its side, read to EOF.
    grant(gw, "192.0.2.7")
    s = socket.create_connection(("127.0.0.1", gw.port("policy")), timeout=10)
    s.sendall(b"request=smtpd_access_policy\nclient_address=192.0.2.7\nrecipient=bob@remote.test\n\n")
    s.shutdown(socket.SHUT_WR)
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    assert data == b"action=OK\n\n"


def violation(g, payload):
    c = PolicyClient(g)
    c.s.sendall(payload)
    a = c.answer()
    closed = c.closed()
    c.close()
    return a, closed


def test_line_too_long_is_answered_and_closed(gw):
    a, closed = violation(gw, b"client_address=192.0.2.7\nccert_subject=" + b"x" * 5000 + b"\n\n")
    assert a == "action=DEFER_IF_REJECT 4.3.5 Policy request refused: request line too long"
    assert closed
    assert gw.wait_log("policy request refused ip=127.0.0.1 reason=line-too-long attributes=1")
    assert gw.wait_log("policy end reason=line-too-long")


def test_line_of_4096_octets_fits(gw):
    grant(gw, "192.0.2.7")
    line = b"ccert_subject=" + b"x" * (4096 - 15) + b"\n"
    assert len(line) == 4096
    c = PolicyClient(gw)
    assert c.ask(b"client_address=192.0.2.7\n" + line + b"\n") == "action=OK"
    c.close()


def test_too_many_attributes_are_answered_and_closed(gw):
    payload = b"client_address=192.0.2.7\n" + b"".join(b"x%d=y\n" % i for i in range(100)) + b"\n"
    a, closed = violation(gw, payload)
    assert a == "action=DEFER_IF_REJECT 4.3.5 Policy request refused: too many attributes in the request"
    assert closed
    assert gw.wait_log("reason=too-many-attributes attributes=100")


def test_hundred_attributes_fit(gw):
    grant(gw, "192.0.2.7")
    payload = b"client_address=192.0.2.7\n" + b"".join(b"x%d=y\n" % i for i in range(99)) + b"\n"
    c = PolicyClient(gw)
    assert c.ask(payload) == "action=OK"
    c.close()


@pytest.mark.parametrize("payload", [
    b"client_address=192.0.2.7\nthis line has no equals sign\n\n",
    b"=value\n\n",
    b"client_address=198.51.100.1\nclient_address=192.0.2.7\n\n",   # which one?
    b"client_address=192.0.2.7\nx=a\x00b\n\n",
])
def test_malformed_requests_are_answered_and_closed(gw, payload):
    grant(gw, "192.0.2.7")
    a, closed = violation(gw, payload)
    assert a == "action=DEFER_IF_REJECT 4.3.5 Policy request refused: malformed request"
    assert closed


def test_idle_connection_is_closed(make_gateway):
    g = make_gateway(overrides={"limits": {"policy_idle_timeout": 1}},
                     listeners=[{"name": "policy", "protocol": "policy", "tls": "none"}])
    c = PolicyClient(g)
    assert c.ask(request("192.0.2.7")) == "action=DUNNO"
    t0 = time.time()
    assert c.closed(timeout=10)
    assert time.time() - t0 < 5
    assert c.buf == b""   # nothing said: the policy protocol has no goodbye
    c.close()
    assert g.wait_log("policy end reason=timeout ip=127.0.0.1 requests=1")


def test_request_trickled_past_command_timeout_is_cut(make_gateway):
    g = make_gateway(overrides={"limits": {"command_timeout": 2, "policy_idle_timeout": 60}},
                     listeners=[{"name": "policy", "protocol": "policy", "tls": "none"}])
    c = PolicyClient(g)
    c.s.sendall(b"request=smtpd_access_policy\n")
    for _ in range(4):      # each line in time for the idle timeout, the whole too slow
        time.sleep(0.8)
        try:
            c.s.sendall(b"x=y\n")
        except OSError:
            break
    assert c.closed(timeout=5)
    c.close()
    assert g.wait_log("policy end reason=timeout-command")


def test_policy_listener_refuses_tls_and_foreign_keys(tmp_path):
    import subprocess
    from popgate_test import POPGATE
    cases = [
        ('[[listener]]\nprotocol = "policy"\ntls = "starttls"\n', "a policy listener has no TLS"),
        ('[[listener]]\nprotocol = "smtp"\npolicy_action_ok = "OK"\n', "policy_action_ok is for policy"),
        ('[[listener]]\nprotocol = "policy"\npolicy_action_ok = ""\n', "policy_action_ok: expected a Postfix action"),
        ('[[listener]]\nprotocol = "policy"\npolicy_action_ok = "PREPEND X-Relayed-By: popgate"\n',
         "policy_action_ok: expected a Postfix action that accepts"),
        ('[[listener]]\nprotocol = "policy"\npolicy_action_ok = "OK\\nREJECT"\n',
         "policy_action_ok: expected a Postfix action"),
    ]
    for text, message in cases:
        f = tmp_path / "c.toml"
        f.write_text(text)
        r = subprocess.run([POPGATE, "check-config", str(f)], capture_output=True, text=True)
        assert r.returncode != 0 and message in r.stdout + r.stderr, (text, r.stdout, r.stderr)


def test_mta_connections_are_not_limited_per_address(make_gateway):
    # One connection per Postfix smtpd process, all from the MTA's address:
    # the per-address limits for mail clients do not apply to them, nor do
    # they use up the address's allowance for its mail clients.
    g = make_gateway(overrides={"limits": {"max_sessions_per_ip": 2, "max_connections_per_minute": 4}},
                     listeners=[{"name": "pop3", "protocol": "pop3", "tls": "none"},
                                {"name": "policy", "protocol": "policy", "tls": "none"}])
    grant(g, "192.0.2.7")
    clients = [PolicyClient(g) for _ in range(8)]
    for c in clients:
        assert c.ask(request("192.0.2.7")) == "action=OK"
    import poplib
    pops = [poplib.POP3("127.0.0.1", g.port("pop3"), timeout=10) for _ in range(2)]
    for p in pops:
        assert p.getwelcome().startswith(b"+OK")
    # The mail clients' own limit still holds.
    third = socket.create_connection(("127.0.0.1", g.port("pop3")), timeout=10)
    assert third.recv(4096).startswith(b"-ERR [SYS/TEMP] too many sessions from this address")
    third.close()
    assert g.wait_log("pop3 refused ip=127.0.0.1 listener=pop3 reason=\"too many sessions from this address")
    for p in pops:
        p.quit()
    for c in clients:
        c.close()


def test_past_max_service_sessions_the_mta_is_told_to_try_later(make_gateway):
    # The policy clients' budget is limits.max_service_sessions, apart from
    # the mail clients' max_sessions.
    g = make_gateway(overrides={"limits": {"max_service_sessions": 1}},
                     listeners=[{"name": "policy", "protocol": "policy", "tls": "none"}])
    first = PolicyClient(g)
    assert first.ask(request("192.0.2.7")) == "action=DUNNO"
    second = PolicyClient(g)
    # The answer comes before the request: Postfix reads it after writing
    # its request, and a relay attempt is deferred, not refused for good.
    assert second.answer() == "action=DEFER_IF_REJECT 4.3.2 Policy service busy, try again later"
    assert second.closed()
    second.close()
    assert first.ask(request("192.0.2.7")) == "action=DUNNO"   # the admitted one goes on
    first.close()
    assert g.wait_log("policy refused ip=127.0.0.1 listener=policy reason=\"too many policy sessions "
                      "(limits.max_service_sessions=1)")


def test_per_grant_quota_defers_past_the_hour_limit(make_gateway):
    """relay.grant_max_messages_per_hour on the policy listener: Postfix sends
    one request per recipient with the message's instance; a message counts
    once, and past the quota the answer is DEFER_IF_REJECT 4.7.1 (a 450 for
    what Postfix would reject), never OK and never a plain DUNNO."""
    left = 3600 - time.time() % 3600
    if left < 60:  # the count starts again each clock hour: stay inside one
        time.sleep(left + 1)
    g = make_gateway(listeners=LISTENERS, overrides={"relay": {"grant_max_messages_per_hour": 2}})
    grant(g, "192.0.2.7")
    c = PolicyClient(g)
    # Message 1, two recipients; message 2, one: within the quota.
    assert c.ask(request("192.0.2.7", "a@remote.test", instance="m1")) == "action=OK"
    assert c.ask(request("192.0.2.7", "b@remote.test", instance="m1")) == "action=OK"
    assert c.ask(request("192.0.2.7", "a@remote.test", instance="m2")) == "action=OK"
    # Message 3: deferred, and so is each further recipient of it.
    deferred = "action=DEFER_IF_REJECT 4.7.1 Relay quota exceeded for your address, try again later"
    assert c.ask(request("192.0.2.7", "a@remote.test", instance="m3")) == deferred
    assert c.ask(request("192.0.2.7", "b@remote.test", instance="m3")) == deferred
    # The same client authenticated at the MTA relays (SASL has no quota);
    # an address without a grant is Postfix's business as before.
    assert c.ask(request("192.0.2.7", "a@remote.test", instance="m4", sasl_username="alice")) == "action=OK"
    assert c.ask(request("192.0.2.8", "a@remote.test", instance="m5")) == "action=DUNNO"
    c.close()
    assert g.wait_log("policy rcpt to=<a@remote.test> ip=192.0.2.7 decision=quota detail=grant_user=alice "
                      "grant=192.0.2.7 quota=messages used=2 max=2 action=DEFER_IF_REJECT")
    # The count reaches the grant's row: a restarted daemon still defers.
    deadline = time.time() + 5
    while time.time() < deadline and g.sql("SELECT quota_messages FROM relay_grants") != [(2,)]:
        time.sleep(0.1)
    assert g.sql("SELECT quota_messages FROM relay_grants") == [(2,)]
    g.stop()
    g.start()
    c = PolicyClient(g)
    assert c.ask(request("192.0.2.7", "a@remote.test", instance="m6")) == deferred
    c.close()


def test_a_peer_outside_trusted_networks_is_closed_unanswered(make_gateway):
    # Anyone who could connect was answered: it learned which addresses hold
    # grants (OK or DUNNO), used up a grant's quota with made-up instances,
    # and held the MTA's places (a review's finding). Now only the listener's
    # trusted_networks are answered.
    g = make_gateway(overrides={"relay": {"grant_max_messages_per_hour": 2}},
                     listeners=[{"name": "policy", "protocol": "policy", "tls": "none",
                                 "trusted_networks": ["127.0.0.1"]}])
    grant(g, "192.0.2.7")
    stranger = socket.create_connection(("127.0.0.1", g.port("policy")), timeout=10,
                                        source_address=("127.0.0.99", 0))
    stranger.sendall(request("192.0.2.7", instance="burn1") + request("192.0.2.7", instance="burn2"))
    stranger.settimeout(5)
    try:
        got = stranger.recv(4096)
    except ConnectionResetError:
        got = b""
    assert got == b""  # closed, not a word
    stranger.close()
    assert g.wait_log("policy peer not in trusted_networks ip=127.0.0.99 listener=policy")
    assert g.wait_log("policy end reason=untrusted ip=127.0.0.99")
    assert "policy rcpt" not in g.log()
    # The MTA is answered, and the grant's quota is whole.
    c = PolicyClient(g)
    assert c.ask(request("192.0.2.7", instance="m1")) == "action=OK"
    assert c.ask(request("192.0.2.7", instance="m2")) == "action=OK"
    assert c.ask(request("192.0.2.7", instance="m3")).startswith("action=DEFER_IF_REJECT 4.7.1 Relay quota")
    c.close()
    # Hits are written once a second.
    assert eventually(lambda: g.sql("SELECT hits FROM relay_grants WHERE address = '192.0.2.7'") == [(2,)])


def test_strangers_are_counted_as_mail_clients_are(make_gateway):
    # Not the MTA: held to the per-address limits of mail clients, so that
    # they cannot use up the MTA's limits.max_service_sessions.
    g = make_gateway(overrides={"limits": {"max_connections_per_minute": 2}},
                     listeners=[{"name": "policy", "protocol": "policy", "tls": "none",
                                 "trusted_networks": ["127.0.0.1"]}])
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", g.port("policy")), timeout=10, source_address=("127.0.0.98", 0))
        s.close()
    assert g.wait_log("policy refused ip=127.0.0.98 listener=policy reason=\"too many connections from this address")
    for _ in range(4):  # the MTA is not: four connections within the minute
        c = PolicyClient(g)
        assert c.ask(request("192.0.2.7")) == "action=DUNNO"
        c.close()
