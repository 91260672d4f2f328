"""POP3 over TLS (RFC 2595 STLS, RFC 8314 POP3S), the plaintext policy, and
SASL AUTH (RFC 5034: PLAIN, LOGIN, CRAM-MD5) with poplib, curl and raw sockets."""
import base64
import hashlib
import hmac
import poplib
import socket
import ssl
import subprocess
import time

import pytest

from popgate_test import client_tls_context, deliver_file, gateway, make_gateway  # noqa: F401
from pop3_support import DOTS, Raw, _close_clients, crlf, track  # noqa: F401

PLAINTEXT_REFUSED = b"-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n"
AUTH_FAILED = b"-ERR [AUTH] Authentication failed.\r\n"
CAPA_HEAD = b"+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"


def b64(s: bytes) -> str:
    return base64.b64encode(s).decode()


def grants(g):
    return g.sql("SELECT address, user, method, tls, listener FROM relay_grants")


def starttls(r: Raw):
    """STLS on a Raw connection; returns it wrapped."""
    assert r.cmd("STLS") == b"+OK Begin TLS negotiation\r\n"
    assert r.buf == b""
    r.sock = client_tls_context().wrap_socket(r.sock)
    return r


# -- STLS and POP3S ---------------------------------------------------------------

def test_poplib_stls_then_login(gateway):
    gateway.add_user("alice", "pw-alice")
    deliver_file(gateway.maildir("alice"), "1700000001.M1P1.gw", DOTS)
    p = track(poplib.POP3("127.0.0.1", gateway.port("pop3"), timeout=10))
    assert p.stls(client_tls_context()).startswith(b"+OK Begin TLS")
    caps = p.capa()
    assert "STLS" not in caps and "USER" in caps
    p.user("alice")
    assert p.pass_("pw-alice").startswith(b"+OK Logged in")
    assert b"\r\n".join(p.retr(1)[1]) + b"\r\n" == crlf(DOTS)
    assert grants(gateway) == [("127.0.0.1", "alice", "pass", 1, "pop3")]
    p.quit()
    assert gateway.wait_log("pop3 login user=alice ip=127.0.0.1 mech=pass tls=yes result=ok")


def test_stls_refused_twice_and_after_login(gateway):
    gateway.add_user("alice", "pw-alice")
    r = starttls(Raw(gateway.port("pop3")))
    assert r.cmd("STLS") == b"-ERR Command not permitted when TLS active\r\n"
    r2 = Raw(gateway.port("pop3"))
    r2.login("alice", "pw-alice")
    assert r2.cmd("STLS") == b"-ERR Command not valid in this state\r\n"
    # implicit TLS port: STLS is not offered at all
    r3 = Raw(gateway.port("pop3s"), tls=True)
    r3.send(b"CAPA\r\n")
    assert b"STLS" not in r3.multi()
    assert r3.cmd("STLS") == b"-ERR STLS not offered on this port\r\n"


def test_stls_injection_is_discarded(gateway):
    """CVE-2011-0411: CAPA sent in the same packet as STLS must not be answered
    under TLS (nor in clear)."""
    r = Raw(gateway.port("pop3"))
    r.send(b"STLS\r\nCAPA\r\n")
    assert r.line() == b"+OK Begin TLS negotiation\r\n"
    time.sleep(0.1)
    assert r.buf == b""
    r.sock = client_tls_context().wrap_socket(r.sock)
    assert r.nothing(0.5), r.buf    # the injected CAPA got no answer
    r.send(b"CAPA\r\n")           # asked for under TLS: answered, without STLS
    assert r.multi() == CAPA_HEAD + b"USER\r\nSASL PLAIN LOGIN CRAM-MD5\r\nIMPLEMENTATION popgate\r\n.\r\n"
    assert gateway.wait_log("pop3 stls discarded_bytes=6")


def test_pop3s_poplib(gateway):
    gateway.add_user("alice", "pw-alice")
    deliver_file(gateway.maildir("alice"), "1700000001.M1P1.gw", DOTS)
    p = track(poplib.POP3_SSL("127.0.0.1", gateway.port("pop3s"), context=client_tls_context(), timeout=10))
    assert p.getwelcome().startswith(b"+OK popgate POP3 server ready <")
    p.user("alice")
    p.pass_("pw-alice")
    assert p.stat() == (1, len(DOTS) + DOTS.count(b"\n"))
    p.dele(1)
    assert p.quit() == b"+OK popgate POP3 server signing off (maildrop empty)"
    assert grants(gateway) == [("127.0.0.1", "alice", "pass", 1, "pop3s")]


def curl(*args):
    return subprocess.run(["curl", "-s", "-S", "-k", "--max-time", "20", *args], capture_output=True, timeout=30)


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_curl_pop3s_sasl(gateway, mech):
    gateway.add_user("bob", "secret-bob", "--shared-secret")
    deliver_file(gateway.maildir("bob"), "1700000001.M1P1.gw", DOTS)
    r = curl("--url", f"pop3s://127.0.0.1:{gateway.port('pop3s')}/1", "-u", "bob:secret-bob",
             "--login-options", f"AUTH={mech}")
    assert r.returncode == 0, r.stderr
    assert r.stdout == crlf(DOTS)
    assert grants(gateway) == [("127.0.0.1", "bob", "sasl-" + mech.lower(), 1, "pop3s")]


def test_curl_pop3_ssl_reqd_uses_stls(gateway):
    gateway.add_user("bob", "secret-bob", "--shared-secret")
    deliver_file(gateway.maildir("bob"), "1700000001.M1P1.gw", DOTS)
    r = curl("--ssl-reqd", "--url", f"pop3://127.0.0.1:{gateway.port('pop3')}/1", "-u", "bob:secret-bob",
             "--login-options", "AUTH=+APOP")
    assert r.returncode == 0, r.stderr
    assert r.stdout == crlf(DOTS)
    assert grants(gateway) == [("127.0.0.1", "bob", "apop", 1, "pop3")]


def test_tls_garbage_and_handshake_timeout(make_gateway):
    g = make_gateway(overrides={"limits": {"tls_handshake_timeout": 1}})
    # plain text on the TLS port: the handshake fails, the session ends
    s = socket.create_connection(("127.0.0.1", g.port("pop3s")), timeout=5)
    s.sendall(b"USER alice\r\n")
    try:
        s.recv(100)   # maybe a TLS alert; never a POP3 reply
    except OSError:
        pass
    s.close()
    assert g.wait_log("pop3 tls handshake failed")
    # a client that never starts the handshake is cut at tls_handshake_timeout
    s = socket.create_connection(("127.0.0.1", g.port("pop3s")), timeout=5)
    t = time.time()
    assert s.recv(100) == b""
    assert 0.8 <= time.time() - t <= 4
    s.close()
    assert g.wait_log("error=timeout")
    # TLS on the plain port: refused as garbage, nothing crashes
    s = socket.create_connection(("127.0.0.1", g.port("pop3")), timeout=5)
    s.recv(200)
    with pytest.raises((ssl.SSLError, OSError)):
        client_tls_context().wrap_socket(s)
    s.close()
    r = Raw(g.port("pop3s"), tls=True)   # the daemon goes on
    assert r.greeting.startswith(b"+OK")


# -- plaintext policy ---------------------------------------------------------------

def test_tls_only_refuses_plaintext_before_stls(make_gateway):
    g = make_gateway(overrides={"auth": {"plaintext": "tls-only", "loopback_is_secure": False}})
    g.add_user("alice", "pw-alice")
    r = Raw(g.port("pop3"))
    r.send(b"CAPA\r\n")
    assert r.multi() == CAPA_HEAD + b"STLS\r\nSASL CRAM-MD5\r\nIMPLEMENTATION popgate\r\n.\r\n"
    assert r.cmd("USER alice") == PLAINTEXT_REFUSED
    assert r.cmd("PASS pw-alice") == b"-ERR USER first\r\n"
    assert r.cmd("AUTH PLAIN " + b64(b"\0alice\0pw-alice")) == PLAINTEXT_REFUSED
    assert r.cmd("AUTH LOGIN") == PLAINTEXT_REFUSED
    r.send(b"AUTH\r\n")
    assert r.multi() == b"+OK Supported mechanisms follow\r\nCRAM-MD5\r\n.\r\n"
    assert grants(g) == []
    starttls(r)
    r.send(b"CAPA\r\n")
    assert r.multi() == CAPA_HEAD + b"USER\r\nSASL PLAIN LOGIN CRAM-MD5\r\nIMPLEMENTATION popgate\r\n.\r\n"
    r.login("alice", "pw-alice")
    assert grants(g) == [("127.0.0.1", "alice", "pass", 1, "pop3")]
    # poplib on POP3S: accepted at once
    r2 = Raw(g.port("pop3s"), tls=True)
    g.add_user("bob", "pw-bob")
    r2.login("bob", "pw-bob")


def test_plaintext_never(make_gateway):
    g = make_gateway(overrides={"auth": {"plaintext": "never"}})
    g.add_user("alice", "pw-alice", "--shared-secret")
    r = Raw(g.port("pop3s"), tls=True)
    assert r.cmd("USER alice") == PLAINTEXT_REFUSED
    assert r.cmd("AUTH PLAIN " + b64(b"\0alice\0pw-alice")) == PLAINTEXT_REFUSED
    assert track(poplib.POP3_SSL("127.0.0.1", g.port("pop3s"), context=client_tls_context())).apop(
        "alice", "pw-alice").startswith(b"+OK")


# -- SASL AUTH over a raw socket ------------------------------------------------------------

def test_auth_plain_initial_response_and_continuation(gateway):
    gateway.add_user("alice", "pw-alice")
    r = Raw(gateway.port("pop3"))
    assert r.cmd("AUTH PLAIN " + b64(b"\0alice\0pw-alice")).startswith(b"+OK Logged in")
    assert grants(gateway) == [("127.0.0.1", "alice", "sasl-plain", 0, "pop3")]
    r.cmd("QUIT")
    r = Raw(gateway.port("pop3"))
    assert r.cmd("auth plain") == b"+ \r\n"
    assert r.cmd(b64(b"alice\0alice\0pw-alice")).startswith(b"+OK Logged in")   # authzid = authcid is fine


def test_auth_login(gateway):
    gateway.add_user("alice", "pw-alice")
    r = Raw(gateway.port("pop3"))
    assert r.cmd("AUTH LOGIN") == b"+ " + b64(b"Username:").encode() + b"\r\n"
    assert r.cmd(b64(b"alice")) == b"+ " + b64(b"Password:").encode() + b"\r\n"
    assert r.cmd(b64(b"pw-alice")).startswith(b"+OK Logged in")
    assert grants(gateway)[0][2] == "sasl-login"


def test_auth_cram_md5_and_wrong_digest(gateway):
    gateway.add_user("bob", "secret-bob", "--shared-secret")
    r = Raw(gateway.port("pop3"))
    first = r.cmd("AUTH CRAM-MD5")
    assert first.startswith(b"+ ")
    challenge = base64.b64decode(first[2:-2])
    assert challenge.startswith(b"<") and challenge.endswith(b"@gw.test>")
    bad = hmac.new(b"not-it", challenge, hashlib.md5).hexdigest()
    assert r.cmd(b64(b"bob " + bad.encode())) == AUTH_FAILED
    assert grants(gateway) == []
    second = r.cmd("AUTH CRAM-MD5")
    challenge2 = base64.b64decode(second[2:-2])
    assert challenge2 != challenge                     # unique per attempt
    good = hmac.new(b"secret-bob", challenge2, hashlib.md5).hexdigest()
    assert r.cmd(b64(b"bob " + good.encode())).startswith(b"+OK Logged in")
    assert grants(gateway) == [("127.0.0.1", "bob", "sasl-cram-md5", 0, "pop3")]


def test_auth_errors(gateway):
    gateway.add_user("alice", "pw-alice")
    r = Raw(gateway.port("pop3"))
    r.send(b"AUTH\r\n")
    assert r.multi() == b"+OK Supported mechanisms follow\r\nPLAIN\r\nLOGIN\r\nCRAM-MD5\r\n.\r\n"
    assert r.cmd("AUTH SCRAM-SHA-256") == b"-ERR Unsupported authentication mechanism\r\n"
    assert r.cmd("AUTH PLAIN") == b"+ \r\n"
    assert r.cmd("*") == b"-ERR Authentication cancelled\r\n"
    assert r.cmd("AUTH PLAIN") == b"+ \r\n"
    assert r.cmd("not base64!") == b"-ERR Invalid base64 data\r\n"
    # authzid different from authcid: refused like a wrong password
    assert r.cmd("AUTH PLAIN " + b64(b"root\0alice\0pw-alice")) == AUTH_FAILED
    assert r.cmd("AUTH PLAIN " + b64(b"\0alice\0wrong-one")) == AUTH_FAILED
    assert grants(gateway) == []
    # the session is still usable
    assert r.cmd("AUTH PLAIN =") == AUTH_FAILED          # "=": empty response
    assert r.cmd("AUTH PLAIN " + b64(b"\0alice\0pw-alice")).startswith(b"+OK Logged in")
    assert r.cmd("AUTH PLAIN") == b"-ERR Command not valid in this state\r\n"
