"""SMTP AUTH to the upstream (relay.upstream_user, upstream_password_file)
against a real aiosmtpd upstream that offers AUTH, with and without
STARTTLS: the password goes over TLS, and never in clear unless
relay.upstream_auth_in_clear says so. An upstream that does not offer
STARTTLS (an attacker on the path can strip it) gets no AUTH, and the
client a 451 for the recipient, nothing delivered. upstream_starttls =
"none" with a user is a configuration error unless clear text is allowed.

The upstream accepts AUTH in clear itself (auth_require_tls = False), so a
password sent in clear would be seen: each AUTH it receives is recorded
with whether the connection was encrypted."""
import ssl
import subprocess
import threading

import pytest

from popgate_test import free_port, make_gateway  # noqa: F401  (fixture)
from smtp_support import relay_one, relay_overrides

USER, PASSWORD = "relayuser", "s3cret-relay-pw"
BODY = b"From: a@example.org\r\nTo: x@remote.test\r\nSubject: auth upstream\r\n\r\nhello\r\n"


class AuthUpstream:
    """aiosmtpd on loopback requiring AUTH for mail, STARTTLS when `tls`."""

    def __init__(self, tmp_path, tls):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.auths = []      # (login, password, encrypted)
        self.messages = []   # (login, rcpt_tos, data)
        self.lock = threading.Lock()
        outer = self

        def authenticator(server, session, envelope, mechanism, auth_data):
            login, password = auth_data.login.decode(), auth_data.password.decode()
            with outer.lock:
                outer.auths.append((login, password, session.ssl is not None))
            return AuthResult(success=(login, password) == (USER, PASSWORD))

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                with outer.lock:
                    outer.messages.append((session.login_data, list(envelope.rcpt_tos), envelope.content))
                return "250 2.0.0 queued"

        ctx = None
        if tls:
            cert, key = tmp_path / "up-cert.pem", tmp_path / "up-key.pem"
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                            "-nodes", "-subj", "/CN=upstream.test", "-keyout", str(key), "-out", str(cert),
                            "-days", "2"], check=True, capture_output=True)
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cert, key)
        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, tls_context=ctx,
                                     authenticator=authenticator, auth_required=True, auth_require_tls=False,
                                     server_hostname="upstream.test")
        self.controller.start()

    def stop(self):
        self.controller.stop()


@pytest.fixture
def upstreams(tmp_path):
    made = []

    def make(tls):
        u = AuthUpstream(tmp_path, tls)
        made.append(u)
        return u

    yield make
    for u in made:
        u.stop()


def gateway(make_gateway, tmp_path, up, **relay):
    pw = tmp_path / "upstream-password"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    o = relay_overrides(up, relay={"upstream_user": USER, "upstream_password_file": str(pw), **relay})
    g = make_gateway(overrides=o)
    g.sql("INSERT INTO relay_grants(address, expires_at) VALUES('127.0.0.1', unixepoch()+600)")
    return g


def send(g):
    return relay_one(g, BODY)


@pytest.mark.parametrize("starttls", ["opportunistic", "required"])
def test_password_goes_over_tls_and_the_message_is_delivered(make_gateway, tmp_path, upstreams, starttls):
    up = upstreams(tls=True)
    g = gateway(make_gateway, tmp_path, up, upstream_starttls=starttls)
    assert send(g)[0] == 250
    assert up.auths == [(USER, PASSWORD, True)]
    assert len(up.messages) == 1 and up.messages[0][1] == ["x@remote.test"]
    assert PASSWORD not in g.log()


def test_no_starttls_offered_no_password_in_clear_and_451(make_gateway, tmp_path, upstreams):
    up = upstreams(tls=False)
    g = gateway(make_gateway, tmp_path, up, upstream_starttls="opportunistic")
    code, text = send(g)
    assert code == 451 and text.startswith(b"4.4.1"), (code, text)
    assert up.auths == [] and up.messages == []
    assert g.wait_log("AUTH as relay.upstream_user refused in clear")


def test_auth_in_clear_when_the_administrator_allows_it(make_gateway, tmp_path, upstreams):
    up = upstreams(tls=False)
    g = gateway(make_gateway, tmp_path, up, upstream_starttls="none", upstream_auth_in_clear=True)
    assert send(g)[0] == 250
    assert up.auths == [(USER, PASSWORD, False)]
    assert len(up.messages) == 1


def test_user_without_tls_is_a_configuration_error(make_gateway, tmp_path, upstreams):
    up = upstreams(tls=False)
    pw = tmp_path / "upstream-password"
    pw.write_text(PASSWORD + "\n")
    o = relay_overrides(up, relay={"upstream_user": USER, "upstream_password_file": str(pw)})   # "none"
    g = make_gateway(overrides=o, start=False)
    r = g.cli("check-config", check=False)
    assert r.returncode != 0
    assert 'relay.upstream_user: with upstream_starttls = "none" the password would go in clear' in r.stdout + r.stderr
