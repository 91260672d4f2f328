"""SMTP side of issue 4 against the running daemon: STARTTLS (RFC 3207) with the
injection test, implicit TLS (SMTPS), SMTP AUTH (RFC 4954) PLAIN / LOGIN /
CRAM-MD5 with smtplib and swaks, the plaintext policy, and relay by AUTH."""
import base64
import socket
import smtplib
import subprocess

import pytest

from popgate_test import client_tls_context, make_gateway, upstream  # noqa: F401
from smtp_support import relay_overrides, strip_received

BODY = b"Subject: auth\r\n\r\nrelayed after AUTH\r\n"


def read_reply(s):
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            return data
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) >= 2 and len(lines[-2]) >= 4 and lines[-2][3:4] == b" ":
            return data


@pytest.fixture
def gw(make_gateway, upstream):
    g = make_gateway(overrides=relay_overrides(upstream))
    g.add_user("dave", "pa55word", "--shared-secret")
    return g


@pytest.fixture
def tls_only_gw(make_gateway, upstream):
    g = make_gateway(overrides=relay_overrides(upstream, auth={"plaintext": "tls-only"}))
    g.add_user("dave", "pa55word", "--shared-secret")
    return g


def test_starttls_injection_is_discarded(gw):
    s = socket.create_connection(("127.0.0.1", gw.port("smtp")), timeout=5)
    assert read_reply(s) == b"220 gw.test ESMTP popgate\r\n"
    s.sendall(b"EHLO x\r\n")
    assert b"250-STARTTLS\r\n" in read_reply(s)
    s.sendall(b"STARTTLS\r\nRSET\r\n")
    assert read_reply(s) == b"220 2.0.0 Ready to start TLS\r\n"
    t = client_tls_context().wrap_socket(s)
    t.settimeout(1.0)
    with pytest.raises(socket.timeout):
        t.recv(4096)  # nothing: the pipelined RSET was not executed
    t.settimeout(5)
    # the session starts over: no EHLO yet, and STARTTLS is no longer offered
    t.sendall(b"MAIL FROM:<a@b.test>\r\n")
    assert read_reply(t) == b"503 5.5.1 Error: send HELO/EHLO first\r\n"
    t.sendall(b"EHLO x\r\n")
    ehlo = read_reply(t)
    assert b"STARTTLS" not in ehlo and ehlo.startswith(b"250-gw.test\r\n")
    t.sendall(b"STARTTLS\r\n")
    assert read_reply(t) == b"503 5.5.1 Error: TLS already active\r\n"
    t.close()
    assert gw.wait_log("starttls discarded pipelined bytes")


def test_credentials_pipelined_behind_starttls_stay_out_of_the_log(gw):
    # A client that sends AUTH before the handshake ends: discarded, and the
    # log names the command and the length, never the credentials.
    secret = base64.b64encode(b"\0dave\0pa55word")
    for sep in (b" ", b"\t"):
        s = socket.create_connection(("127.0.0.1", gw.port("smtp")), timeout=5)
        read_reply(s)
        s.sendall(b"EHLO x\r\n")
        read_reply(s)
        s.sendall(b"STARTTLS\r\nAUTH" + sep + b"PLAIN" + sep + secret + b"\r\n")
        assert read_reply(s) == b"220 2.0.0 Ready to start TLS\r\n"
        t = client_tls_context().wrap_socket(s)
        t.close()
    line = f"starttls discarded pipelined bytes ip=127.0.0.1 count={len(secret) + 13} first=AUTH\n"
    assert gw.wait_log(line) and gw.log().count(line) == 2
    assert secret.decode()[:12] not in gw.log() and "PLAIN" not in gw.log()


def test_tls_only_policy_refuses_plain_before_starttls(tls_only_gw, upstream):
    g = tls_only_gw
    with smtplib.SMTP("127.0.0.1", g.port("submission"), timeout=10) as s:
        s.ehlo()
        assert s.esmtp_features["auth"].split() == ["CRAM-MD5"]
        code, msg = s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0dave\0pa55word").decode())
        # RFC 4954 §6: the mechanism needs an encrypted connection first.
        assert (code, msg) == (538, b"5.7.11 Encryption required for requested authentication mechanism")
        s.starttls(context=client_tls_context())
        s.ehlo()
        s.user, s.password = "dave", "pa55word"
        assert s.esmtp_features["auth"].split() == ["PLAIN", "LOGIN", "CRAM-MD5"]
        s.auth("PLAIN", s.auth_plain)
        assert s.sendmail("dave@gw.test", ["x@remote.test"], BODY) == {}
    assert [strip_received(m["data"]) for m in upstream.messages] == [BODY]
    assert upstream.messages[0]["data"].split(b"\r\n")[1].startswith(b"\tby gw.test (popgate) with ESMTPSA id ")


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_smtplib_auth_mechanisms_relay_on_submission(gw, upstream, mech):
    with smtplib.SMTP("127.0.0.1", gw.port("submission"), timeout=10) as s:
        s.ehlo()
        # RFC 6409 §4.3: submission takes no transaction before AUTH.
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            s.sendmail("dave@gw.test", ["x@remote.test"], BODY)
        assert (e.value.smtp_code, e.value.smtp_error) == (530, b"5.7.0 Authentication required")
        s.user, s.password = "dave", "pa55word"
        method = {"PLAIN": s.auth_plain, "LOGIN": s.auth_login, "CRAM-MD5": s.auth_cram_md5}[mech]
        code, msg = s.auth(mech, method)
        assert (code, msg) == (235, b"2.7.0 Authentication successful")
        assert s.sendmail("dave@gw.test", ["x@remote.test"], BODY) == {}
    assert [strip_received(m["data"]) for m in upstream.messages] == [BODY]
    assert gw.wait_log(f"smtp auth user=dave mech={mech}")
    assert gw.wait_log("decision=auth detail=sasl")
    # SMTP AUTH is for this session only: no grant row
    assert gw.sql("SELECT count(*) FROM relay_grants") == [(0,)]


def test_smtplib_login_picks_cram_md5_on_smtps(gw, upstream):
    with smtplib.SMTP_SSL("127.0.0.1", gw.port("smtps"), context=client_tls_context(), timeout=10) as s:
        assert s.login("dave", "pa55word") == (235, b"2.7.0 Authentication successful")
        assert s.sendmail("dave@gw.test", ["x@remote.test"], BODY) == {}
    assert len(upstream.messages) == 1
    assert gw.wait_log("smtp auth user=dave mech=CRAM-MD5")


def test_auth_failures_and_sequence(gw):
    # On the plain SMTP listener, where MAIL before AUTH is allowed.
    with smtplib.SMTP("127.0.0.1", gw.port("smtp"), timeout=10) as s:
        s.ehlo()
        s.user, s.password = "dave", "Wr0ngSecret"
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.auth("PLAIN", s.auth_plain)
        assert (e.value.smtp_code, e.value.smtp_error) == (535, b"5.7.8 Error: authentication failed")
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.auth("CRAM-MD5", s.auth_cram_md5)
        assert e.value.smtp_code == 535
        assert s.docmd("AUTH", "LOGIN") == (334, b"VXNlcm5hbWU6")
        assert s.docmd("*") == (501, b"5.7.0 Authentication cancelled")
        assert s.docmd("AUTH", "PLAIN !!!notbase64") == (501, b"5.5.2 Cannot decode response")
        assert s.docmd("AUTH", "SCRAM-SHA-1") == (504, b"5.5.4 Unrecognized authentication type")
        assert s.docmd("MAIL", "FROM:<a@b.test>") == (250, b"2.1.0 Ok")
        assert s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0dave\0pa55word").decode()) == \
            (503, b"5.5.1 Error: MAIL transaction in progress")
        s.rset()
        assert s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0dave\0pa55word").decode()) == \
            (235, b"2.7.0 Authentication successful")
        assert s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0dave\0pa55word").decode()) == \
            (503, b"5.5.1 Error: already authenticated")
    log = gw.log()
    assert "pa55word" not in log and "Wr0ngSecret" not in log
    assert base64.b64encode(b"\0dave\0pa55word").decode() not in log


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_swaks_tls_auth(gw, upstream, mech):
    r = subprocess.run(["swaks", "--server", f"127.0.0.1:{gw.port('submission')}", "--tls",
                        "--auth", mech, "--auth-user", "dave", "--auth-password", "pa55word",
                        "--to", "x@remote.test", "--from", "dave@gw.test", "--body", "swaks auth body"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "<~  235 2.7.0 Authentication successful" in r.stdout
    assert len(upstream.messages) == 1 and b"swaks auth body" in upstream.messages[0]["data"]


def test_swaks_wrong_password_fails(gw, upstream):
    r = subprocess.run(["swaks", "--server", f"127.0.0.1:{gw.port('submission')}", "--tls",
                        "--auth", "LOGIN", "--auth-user", "dave", "--auth-password", "nope",
                        "--to", "x@remote.test", "--from", "dave@gw.test"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 28, r.stdout  # swaks: AUTH failed
    assert "535 5.7.8 Error: authentication failed" in r.stdout
    assert upstream.messages == []
