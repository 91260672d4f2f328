"""Issue 13 item 1 end to end: a real private Postfix 3.7 asks popgate's
policy listener (check_policy_service) whether a client may relay, with the
main.cf lines of deploy/postfix/main.cf.policy. Clients connect to Postfix
from 127.0.0.x addresses; Postfix relays what it accepts to a capture sink."""
import os
import time

import pytest

from popgate_test import Gateway, CaptureUpstream
from private_postfix import (RELAY_DENIED, PrivatePostfix, delivered, pop3_login, require_root,  # noqa: F401
                            work_dir)


def main_cf_policy_restrictions(port):
    """smtpd_relay_restrictions exactly as deploy/postfix/main.cf.policy
    writes it, with the test's port for 10040."""
    src = os.environ.get("POPGATE_SOURCE_DIR", ".")
    text = open(os.path.join(src, "deploy", "postfix", "main.cf.policy")).read()
    lines = [l for l in text.splitlines() if l and not l.startswith("#")]
    value = " ".join(l.strip() for l in lines).split("=", 1)[1].strip()
    assert "check_policy_service inet:127.0.0.1:10040" in value
    return value.replace("127.0.0.1:10040", f"127.0.0.1:{port}")


@pytest.fixture
def stack(work_dir):  # noqa: F811
    require_root()
    sink = CaptureUpstream()
    g = Gateway(work_dir / "gw", listeners=[
        {"name": "pop3", "protocol": "pop3", "tls": "none"},
        {"name": "policy", "protocol": "policy", "tls": "none"},
    ])
    pf = None
    try:
        g.start()
        g.add_user("alice", "pw")
        pf = PrivatePostfix(work_dir, sink.port, main_cf_policy_restrictions(g.port("policy")))
        pf.start()
        yield g, pf, sink
    finally:
        if pf:
            pf.stop()
        rc = g.stop()
        sink.stop()
    assert rc == 0, g.log()[-3000:]


def test_pop3_login_lets_that_address_relay_through_postfix_at_once(stack):
    g, pf, sink = stack
    assert pf.rcpt("bob@remote.test", source="127.0.0.2") == (554, RELAY_DENIED)
    assert pop3_login(g, "127.0.0.2").startswith(b"+OK")
    # At once: no wait between the +OK and the relay.
    pf.send("bob@remote.test", "relayed on a POP3 grant", source="127.0.0.2")
    got = delivered(sink, "bob@remote.test")
    assert got and b"relayed on a POP3 grant" in got[0]["data"]
    # The grant is that address's only.
    assert pf.rcpt("bob@remote.test", source="127.0.0.3") == (554, RELAY_DENIED)
    assert g.wait_log("policy rcpt to=<bob@remote.test> ip=127.0.0.2 decision=grant")
    assert g.wait_log("policy rcpt to=<bob@remote.test> ip=127.0.0.3 decision=denied")
    assert pf.wait_log("NOQUEUE: reject: RCPT from unknown[127.0.0.3]: 554 5.7.1")
    # The grant's hit is counted as at popgate's own RCPT: one RCPT, one hit.
    deadline = time.time() + 10
    while time.time() < deadline and g.sql("SELECT hits FROM relay_grants WHERE address = '127.0.0.2'")[0][0] < 1:
        time.sleep(0.1)
    assert g.sql("SELECT hits FROM relay_grants WHERE address = '127.0.0.2'")[0][0] == 1


def test_no_grant_is_relay_access_denied_and_own_domain_still_accepted(stack):
    g, pf, sink = stack
    assert pf.rcpt("bob@remote.test", source="127.0.0.4") == (554, RELAY_DENIED)
    # popgate's local domain (gw.test) is nothing to Postfix: refused as any relay.
    code, text = pf.rcpt("alice@gw.test", source="127.0.0.4")
    assert (code, text) == (554, "5.7.1 <alice@gw.test>: Relay access denied")
    # Postfix's own domain: DUNNO lets its own rules accept it.
    pf.send("carol@inbound.test", "inbound mail", source="127.0.0.4")
    assert delivered(sink, "carol@inbound.test")


def test_expired_grant_is_refused(stack):
    g, pf, sink = stack
    g.sql("INSERT INTO relay_grants (address, user, granted_at, expires_at) "
          "VALUES ('127.0.0.5', 'alice', unixepoch() - 600, unixepoch() - 1)")
    assert pf.rcpt("bob@remote.test", source="127.0.0.5") == (554, RELAY_DENIED)
    g.sql("UPDATE relay_grants SET expires_at = unixepoch() + 600 WHERE address = '127.0.0.5'")
    assert pf.rcpt("bob@remote.test", source="127.0.0.5") == (250, "2.1.5 Ok")


def test_network_row_relays(stack):
    g, pf, sink = stack
    g.cli("allow", "add", "127.0.0.64/26", "--note", "test network")
    pf.send("bob@remote.test", "relayed for a network", source="127.0.0.70")
    assert delivered(sink, "bob@remote.test")
    assert pf.rcpt("bob@remote.test", source="127.0.0.63") == (554, RELAY_DENIED)
    assert g.wait_log("policy rcpt to=<bob@remote.test> ip=127.0.0.70 decision=network detail=network=127.0.0.64/26")


def test_unusable_database_makes_postfix_defer(stack):
    g, pf, sink = stack
    assert pop3_login(g, "127.0.0.6").startswith(b"+OK")
    assert pf.rcpt("bob@remote.test", source="127.0.0.6") == (250, "2.1.5 Ok")
    aside = g.root / "aside.db"
    os.rename(g.db, aside)          # the daemon refuses to decide from a file nobody else sees
    try:
        deadline = time.time() + 15
        code, text = pf.rcpt("bob@remote.test", source="127.0.0.6")
        while code == 250 and time.time() < deadline:
            time.sleep(0.2)
            code, text = pf.rcpt("bob@remote.test", source="127.0.0.6")
        # A 4xx: the granted client tries again later, nothing bounces.
        assert (code, text) == (450, "4.3.0 <bob@remote.test>: Recipient address rejected: "
                                     "Temporary lookup failure, try again later")
        # No grant known either way: deferred, not refused for good.
        assert pf.rcpt("bob@remote.test", source="127.0.0.7")[0] == 450
        # Postfix's own domains do not wait for popgate's database.
        assert pf.rcpt("carol@inbound.test", source="127.0.0.7") == (250, "2.1.5 Ok")
        assert g.wait_log("decision=error")
    finally:
        os.rename(aside, g.db)
    deadline = time.time() + 15
    while time.time() < deadline and pf.rcpt("bob@remote.test", source="127.0.0.6")[0] != 250:
        time.sleep(0.2)
    assert pf.rcpt("bob@remote.test", source="127.0.0.6") == (250, "2.1.5 Ok")


def test_popgate_down_makes_postfix_defer_not_relay(stack):
    g, pf, sink = stack
    assert pop3_login(g, "127.0.0.8").startswith(b"+OK")
    assert g.stop() == 0
    code, text = pf.rcpt("bob@remote.test", source="127.0.0.8")
    assert code == 451 and "4.3.5" in text, (code, text)   # Postfix's own "Server configuration problem"


def test_mail_for_postfixs_own_domains_is_not_asked_about(stack):
    # Postfix runs its relay restrictions for every recipient: without
    # permit_auth_destination before check_policy_service, popgate was asked
    # about mail for inbound.test too, and counted it as the grant's hits
    # and against grant_max_messages_per_hour, which are for relayed mail
    # (a review's finding).
    g, pf, sink = stack
    assert pop3_login(g, "127.0.0.9").startswith(b"+OK")
    for n in range(3):
        pf.send("carol@inbound.test", f"inbound {n}", source="127.0.0.9")
    assert sink.wait_for(lambda: len([m for m in sink.messages if "carol@inbound.test" in m["rcpt_tos"]]) == 3, 30)
    pf.send("bob@remote.test", "relayed", source="127.0.0.9")
    assert delivered(sink, "bob@remote.test")
    assert g.wait_log("policy rcpt to=<bob@remote.test> ip=127.0.0.9 decision=grant")
    assert "policy rcpt to=<carol@inbound.test>" not in g.log()
    hits = lambda: g.sql("SELECT hits FROM relay_grants WHERE address = '127.0.0.9'")[0][0]
    deadline = time.time() + 10
    while time.time() < deadline and hits() < 1:
        time.sleep(0.1)
    time.sleep(1.5)  # a later write of hits would have come by now
    assert hits() == 1
