"""Grants from an existing Dovecot: a real private Dovecot 2.3 (Debian's
package, started by the test in a temp dir, see dovecot_support.py) reports
its logins to popgate's HTTP listener through its authentication policy
protocol; popgate's SMTP listener then relays for the address that logged in.

Dovecot sends the report after it answered its client, so the test waits for
popgate's log line of the report before the SMTP connection (README,
"Deploying beside your mail server")."""
import imaplib
import poplib
import smtplib
import socket

import pytest

from dovecot_support import Dovecot
from popgate_test import DEFAULT_LISTENERS
from smtp_support import relay_overrides

SECRET = "dovecot-test-secret-0123456789"
BODY = b"Subject: via dovecot grant\r\n\r\nhello\r\n"


def connect_from(client_class, port, source):
    """An imaplib.IMAP4 or poplib.POP3 client connected to 127.0.0.1:`port`
    from the address `source` (127.0.0.x)."""
    class FromSource(client_class):
        def _create_socket(self, timeout):
            return socket.create_connection((self.host, self.port), timeout, source_address=(source, 0))

    return FromSource("127.0.0.1", port, timeout=10)


def imap_from(port, source):
    return connect_from(imaplib.IMAP4, port, source)


def pop3_from(port, source):
    return connect_from(poplib.POP3, port, source)


def imap_login_refused(port, source, user, password):
    m = imap_from(port, source)
    with pytest.raises(imaplib.IMAP4.error):
        m.login(user, password)
    m.shutdown()


def pop3_login_refused(port, source, user, password):
    p = pop3_from(port, source)
    p.user(user)
    with pytest.raises(poplib.error_proto):
        p.pass_(password)
    p.close()


def relay_from(g, source, rcpt="x@remote.test"):
    """One message from `source` through popgate's SMTP listener; {} when relayed."""
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=10, source_address=(source, 0)) as s:
        return s.sendmail("a@example.org", [rcpt], BODY)


@pytest.fixture
def gw(make_gateway, upstream, tmp_path):
    key = tmp_path / "dovecot.key"
    key.write_text(SECRET + "\n")
    listeners = DEFAULT_LISTENERS + [{"name": "http", "protocol": "http", "api_key_file": str(key)}]
    return make_gateway(overrides=relay_overrides(upstream), listeners=listeners)


def start_dovecot(g, api_secret=SECRET, checks=False, **kwargs):
    d = Dovecot(f"http://127.0.0.1:{g.port('http')}/dovecot/auth-policy", api_secret=api_secret, checks=checks,
                **kwargs)
    try:
        d.start()
    except Exception:
        d.stop()
        raise
    return d


@pytest.fixture(params=[False, True], ids=["shipped", "with-allow-checks"])
def dovecot(gw, request):
    # As deploy/dovecot/ ships it, and with Dovecot's "allow" requests
    # before and after the password check as well (answered, never blocking).
    d = start_dovecot(gw, checks=request.param)
    yield d
    d.stop()


def grants(g):
    return g.sql("SELECT address, user, method, listener FROM relay_grants ORDER BY address")


def test_imap_and_pop3_logins_at_dovecot_grant_relaying(gw, dovecot, upstream):
    # No grant yet: refused, as Postfix would say it.
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        relay_from(gw, "127.0.0.2")
    assert e.value.recipients["x@remote.test"][0] == 554

    m = imap_from(dovecot.imap_port, "127.0.0.2")
    assert m.login("dave", "dave-secret")[0] == "OK"
    m.logout()
    assert gw.wait_log("http dovecot report ip=127.0.0.1 user=dave remote=127.0.0.2 protocol=imap tls=no "
                       "success=yes result=granted mech=dovecot-imap grant=127.0.0.2"), gw.log()[-3000:]
    assert relay_from(gw, "127.0.0.2") == {}
    assert len(upstream.messages) == 1 and upstream.messages[0]["rcpt_tos"] == ["x@remote.test"]
    # Another address that did not log in is still refused.
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        relay_from(gw, "127.0.0.3")

    p = pop3_from(dovecot.pop3_port, "127.0.0.3")
    p.user("dave")
    assert p.pass_("dave-secret").startswith(b"+OK")
    p.quit()
    assert gw.wait_log("remote=127.0.0.3 protocol=pop3 tls=no success=yes result=granted mech=dovecot-pop3")
    assert relay_from(gw, "127.0.0.3") == {}
    assert len(upstream.messages) == 2

    assert grants(gw) == [("127.0.0.2", "dave", "dovecot-imap", "http"),
                          ("127.0.0.3", "dave", "dovecot-pop3", "http")]
    audit = gw.sql("SELECT address, user, detail FROM audit_log WHERE event = 'grant' ORDER BY id")
    assert [(a, u, d.split(" until=")[0]) for a, u, d in audit] == [
        ("127.0.0.2", "dave", "dovecot mech=dovecot-imap listener=http tls=no"),
        ("127.0.0.3", "dave", "dovecot mech=dovecot-pop3 listener=http tls=no")]
    # The password never reaches popgate's log.
    assert "dave-secret" not in gw.log()


def test_failed_login_at_dovecot_grants_nothing(gw, dovecot, upstream):
    imap_login_refused(dovecot.imap_port, "127.0.0.4", "dave", "wrong-password")
    assert gw.wait_log("user=dave remote=127.0.0.4 protocol=imap tls=no success=no result=no-grant")
    pop3_login_refused(dovecot.pop3_port, "127.0.0.4", "nobody-here", "whatever")
    assert gw.wait_log("user=nobody-here remote=127.0.0.4 protocol=pop3 tls=no success=no result=no-grant")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        relay_from(gw, "127.0.0.4")
    assert e.value.recipients == {"x@remote.test": (554, b"5.7.1 <x@remote.test>: Relay access denied")}
    assert grants(gw) == []
    assert upstream.messages == []
    assert "wrong-password" not in gw.log()


def test_logins_dovecot_reports_but_nobody_proved_grant_nothing(gw, upstream):
    # Dovecot reports "success" once its passdb says OK: before its login
    # process refuses a nologin account, and before a proxy's backend checks
    # the password (with nopassword, nobody does); and for ANONYMOUS. Each
    # client here is refused or anonymous, and none may relay.
    d = start_dovecot(gw, mechanisms="plain login anonymous", users={
        "dave": "dave-secret",
        "gone": ("gone-secret", "nologin=y reason=account-closed"),
        # Proxied to popgate's own POP3 listener, which knows no such user.
        "carol": (None, f"proxy=y nopassword=y host=127.0.0.1 port={gw.port('pop3')}"),
        # A proxy_maybe cluster's own user: Dovecot logs in here, and drops
        # the proxy fields before it reports, after checking the password.
        "erin": ("erin-secret", "proxy_maybe=y host=127.0.0.1 port={imap_port}"),
    })
    try:
        imap_login_refused(d.imap_port, "127.0.0.21", "gone", "gone-secret")
        assert gw.wait_log("user=gone remote=127.0.0.21 protocol=imap tls=no success=yes result=")
        pop3_login_refused(d.pop3_port, "127.0.0.22", "carol", "any-guess-at-all")
        assert gw.wait_log("user=carol remote=127.0.0.22 protocol=pop3 tls=no success=yes result=")
        m = imap_from(d.imap_port, "127.0.0.23")
        assert m.authenticate("ANONYMOUS", lambda _: b"trace@example.org")[0] == "OK"
        m.logout()
        assert gw.wait_log("user=anonymous remote=127.0.0.23 protocol=imap tls=no success=yes result=")
        # The same Dovecot still grants a login somebody proved.
        m = imap_from(d.imap_port, "127.0.0.24")
        assert m.login("dave", "dave-secret")[0] == "OK"
        m.logout()
        assert gw.wait_log("user=dave remote=127.0.0.24 protocol=imap tls=no success=yes result=granted")
        m = imap_from(d.imap_port, "127.0.0.25")
        assert m.login("erin", "erin-secret")[0] == "OK"
        m.logout()
        assert gw.wait_log("user=erin remote=127.0.0.25 protocol=imap tls=no success=yes result=granted")
    finally:
        d.stop()
    for source in ("127.0.0.21", "127.0.0.22", "127.0.0.23"):
        with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
            relay_from(gw, source)
        assert e.value.recipients["x@remote.test"][0] == 554
    assert relay_from(gw, "127.0.0.24") == {}
    assert [row[:2] for row in grants(gw)] == [("127.0.0.24", "dave"), ("127.0.0.25", "erin")]
    assert len(upstream.messages) == 1
    log = gw.log()
    assert "user=gone remote=127.0.0.21 protocol=imap tls=no success=yes result=no-grant reason=nologin mech=PLAIN" in log
    assert "user=carol remote=127.0.0.22 protocol=pop3 tls=no success=yes result=no-grant reason=proxy mech=PLAIN" in log
    assert ("user=anonymous remote=127.0.0.23 protocol=imap tls=no success=yes result=no-grant reason=anonymous "
            "mech=ANONYMOUS") in log


@pytest.mark.parametrize("api_secret, trusted, popgate_says, dovecot_says", [
    # Dovecot configured without the api header, or with another secret:
    # its reports are refused (403, logged by both sides).
    (None, None, "http dovecot report refused ip=127.0.0.1 reason=api-key-missing", "Policy server HTTP error: 403"),
    ("not-the-secret-at-all", None, "http dovecot report refused ip=127.0.0.1 reason=api-key-wrong",
     "Policy server HTTP error: 403"),
    # The HTTP listener serves only 192.0.2.0/24: Dovecot on loopback is not
    # trusted, whatever it sends.
    (SECRET, ["192.0.2.0/24"], "http peer not in trusted_networks ip=127.0.0.1", "Policy server HTTP error: 403"),
    # popgate's listener as shipped, without api_key_file: no reports at all,
    # whatever Dovecot sends.
    (SECRET, "no-key-file", "http dovecot report refused ip=127.0.0.1 reason=no-api-key-file listener=http",
     "Policy server HTTP error: 403"),
], ids=["no-secret", "wrong-secret", "untrusted", "listener-without-key"])
def test_refused_reports_grant_nothing_and_logins_go_on(make_gateway, upstream, tmp_path, api_secret, trusted,
                                                         popgate_says, dovecot_says):
    key = tmp_path / "dovecot.key"
    key.write_text(SECRET + "\n")
    http = {"name": "http", "protocol": "http", "api_key_file": str(key)}
    if trusted == "no-key-file":
        del http["api_key_file"]
        trusted = None
    if trusted is not None:
        http["trusted_networks"] = trusted
    g = make_gateway(overrides=relay_overrides(upstream), listeners=DEFAULT_LISTENERS + [http])
    # "allow" before and after the password check is refused as well when
    # the peer is untrusted: Dovecot logs it and lets the login proceed
    # (auth_policy_reject_on_fail = no).
    d = start_dovecot(g, api_secret=api_secret, checks=True)
    try:
        m = imap_from(d.imap_port, "127.0.0.5")
        assert m.login("dave", "dave-secret")[0] == "OK"
        m.logout()
        p = pop3_from(d.pop3_port, "127.0.0.5")
        p.user("dave")
        assert p.pass_("dave-secret").startswith(b"+OK")
        p.quit()
        assert g.wait_log(popgate_says), g.log()[-3000:]
        assert d.wait_log(dovecot_says), d.log()[-3000:]
    finally:
        d.stop()
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        relay_from(g, "127.0.0.5")
    assert e.value.recipients["x@remote.test"][0] == 554
    assert grants(g) == []
    assert upstream.messages == []
    if api_secret:
        assert api_secret not in g.log()


def test_doveadm_auth_test_is_no_policy_error(gw):
    # `doveadm auth test` reports protocol=doveadm and remote="": the 400
    # popgate gave for the empty remote made Dovecot log "Policy server HTTP
    # error" at each test an administrator ran (a review's finding).
    import subprocess
    d = start_dovecot(gw)
    try:
        r = subprocess.run(["doveadm", "-c", str(d.config_file), "auth", "test", "dave", "dave-secret"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "auth succeeded" in r.stdout + r.stderr, r.stdout + r.stderr
        assert gw.wait_log("http dovecot report ip=127.0.0.1 user=dave remote=\"\" protocol=doveadm tls=no "
                           "success=yes result=no-grant reason=protocol")
        assert "Policy server HTTP error" not in d.log()
    finally:
        d.stop()
    assert grants(gw) == []
