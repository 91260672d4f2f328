"""ALPN on the TLS listeners (RFC 7301, and the ALPACA cross-protocol attacks):
a client that names its protocol gets it; one that names only another
protocol (a browser's "http/1.1" on POP3S) is refused in the handshake with
no_application_protocol before a byte of mail protocol is spoken; one that
names none, as mail clients do, is served. Checked with Python's ssl,
poplib, smtplib, curl and `openssl s_client`."""
import poplib
import smtplib
import socket
import ssl
import subprocess

import pytest

from popgate_test import DEFAULT_LISTENERS, client_tls_context, gateway, make_gateway  # noqa: F401


def tls_context(alpn):
    ctx = client_tls_context()
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    return ctx


def implicit_tls(port, alpn):
    """Handshake on an implicit-TLS port; returns (the ALPN id agreed, the
    first line the server sends)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with tls_context(alpn).wrap_socket(raw) as s:
        return s.selected_alpn_protocol(), s.recv(512)


@pytest.mark.parametrize("listener,offer,agreed,greeting", [
    ("pop3s", ["pop3"], "pop3", b"+OK"),
    ("pop3s", ["imap", "pop3"], "pop3", b"+OK"),
    ("pop3s", None, None, b"+OK"),
    ("smtps", ["smtp"], "smtp", b"220 "),
    ("smtps", ["esmtp"], "esmtp", b"220 "),
    ("smtps", None, None, b"220 "),
])
def test_own_protocol_or_none_is_served(gateway, listener, offer, agreed, greeting):
    selected, first = implicit_tls(gateway.port(listener), offer)
    assert selected == agreed
    assert first.startswith(greeting)


@pytest.mark.parametrize("listener,offer", [
    ("pop3s", ["http/1.1"]),
    ("pop3s", ["h2", "http/1.1"]),
    ("pop3s", ["smtp"]),
    ("smtps", ["pop3"]),
    ("smtps", ["http/1.1"]),
])
def test_another_protocol_is_refused_in_the_handshake(gateway, listener, offer):
    raw = socket.create_connection(("127.0.0.1", gateway.port(listener)), timeout=10)
    with pytest.raises(ssl.SSLError, match="no application protocol"):
        tls_context(offer).wrap_socket(raw)
    raw.close()
    assert gateway.wait_log(f"tls handshake failed ip=127.0.0.1 error=")
    assert "no application protocol" in gateway.log()


def test_starttls_checks_alpn_too(gateway):
    # smtplib after STARTTLS, with a context that names SMTP: served.
    c = smtplib.SMTP("127.0.0.1", gateway.port("smtp"), timeout=10)
    c.ehlo("client.test")
    c.starttls(context=tls_context(["smtp"]))
    assert c.sock.selected_alpn_protocol() == "smtp"
    assert c.ehlo("client.test")[0] == 250
    c.quit()
    # poplib after STLS naming POP3: served; naming IMAP only: refused.
    p = poplib.POP3("127.0.0.1", gateway.port("pop3"), timeout=10)
    p.stls(context=tls_context(["pop3"]))
    assert p.sock.selected_alpn_protocol() == "pop3"
    assert p.capa()
    p.quit()
    p = poplib.POP3("127.0.0.1", gateway.port("pop3"), timeout=10)
    with pytest.raises(ssl.SSLError, match="no application protocol"):
        p.stls(context=tls_context(["imap"]))
    p.sock.close()


def test_openssl_s_client_sees_the_alert(gateway):
    def s_client(*args):
        return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{gateway.port('pop3s')}",
                               "-servername", "gw.test", "-ign_eof", *args],
                              input=b"QUIT\r\n", capture_output=True, timeout=60)
    refused = s_client("-alpn", "http/1.1")
    assert b"no application protocol" in refused.stderr
    assert b"+OK" not in refused.stdout
    served = s_client("-alpn", "pop3")
    assert b"ALPN protocol: pop3" in served.stdout
    assert b"+OK" in served.stdout


def test_https_listener_speaks_http_1_1_to_curl(make_gateway):
    g = make_gateway(listeners=DEFAULT_LISTENERS + [{"name": "https", "protocol": "http", "tls": "implicit"}])
    url = f"https://127.0.0.1:{g.port('https')}/healthz"
    # curl offers h2 first, then http/1.1: the server picks the one it speaks.
    ok = subprocess.run(["curl", "-sk", "-v", url], capture_output=True, timeout=60)
    assert b"ALPN: server accepted http/1.1" in ok.stderr
    assert ok.returncode == 0 and ok.stdout
    # HTTP/1.0, which the listener serves too.
    old = subprocess.run(["curl", "-sk", "-v", "--http1.0", url], capture_output=True, timeout=60)
    assert b"ALPN: server accepted http/1.0" in old.stderr
    assert old.returncode == 0 and old.stdout
    # Only HTTP/2 on offer: refused in the handshake rather than misread.
    raw = socket.create_connection(("127.0.0.1", g.port("https")), timeout=10)
    with pytest.raises(ssl.SSLError, match="no application protocol"):
        tls_context(["h2"]).wrap_socket(raw)
    raw.close()
