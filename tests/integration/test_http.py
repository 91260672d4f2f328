"""The HTTP listener against the running daemon: /healthz and /readyz with
curl and urllib, keep-alive, the Dovecot auth-policy endpoint's refusals
(sent by hand; test_dovecot.py has the real Dovecot), and malformed,
oversized, slow and untrusted requests."""
import http.client
import json
import os
import re
import signal
import smtplib
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from popgate_test import DEFAULT_LISTENERS, eventually, sqlite_only

SECRET = "http-test-secret-0123456789"
POLICY = "/dovecot/auth-policy"
# As Dovecot 2.3.19 sends it with deploy/dovecot/95-popgate-auth-policy.conf.
REPORT = {"login": "erin", "protocol": "imap", "remote": "127.0.0.8", "nologin": "no", "proxy": "no",
          "proxy_maybe": "no", "mech": "PLAIN", "success": True, "policy_reject": False, "tls": True}


@pytest.fixture
def gw(make_gateway, tmp_path):
    key = tmp_path / "key"
    key.write_text(SECRET + "\n")
    listeners = DEFAULT_LISTENERS + [{"name": "http", "protocol": "http", "api_key_file": str(key)}]
    return make_gateway(listeners=listeners, overrides={"limits": {"http_idle_timeout": 2, "command_timeout": 2}})


def url(g, path):
    return f"http://127.0.0.1:{g.port('http')}{path}"


def get(g, path):
    try:
        with urllib.request.urlopen(url(g, path), timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def post(g, path, body, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", g.port("http"), timeout=10)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    c.request("POST", path, data, {"Content-Type": "application/json", **(headers or {})})
    r = c.getresponse()
    out = r.status, r.read().decode()
    c.close()
    return out


def raw(g, payload, timeout=5):
    """Bytes sent on one connection, everything read until the daemon closes it."""
    s = socket.create_connection(("127.0.0.1", g.port("http")), timeout=timeout)
    data = b""
    try:
        s.sendall(payload)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        data += b"<timeout>"
    finally:
        s.close()
    return data


def grants(g):
    return g.sql("SELECT address, user, method, tls, listener FROM relay_grants")


# ------------------------------------------------------------------ health


def test_healthz_and_readyz_with_curl(gw):
    r = subprocess.run(["curl", "-sS", "-i", url(gw, "/healthz")], capture_output=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(b"HTTP/1.1 200 OK\r\n") and r.stdout.endswith(b"\r\n\r\nok\n")
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--head", url(gw, "/readyz")],
                       capture_output=True, text=True, timeout=20)
    assert r.stdout == "200"
    assert get(gw, "/readyz") == (200, "ready\n")


@sqlite_only("the database file removed; PostgreSQL going away is test_pg_multinode.py's")
def test_readyz_says_503_when_the_database_is_gone(gw):
    assert get(gw, "/readyz")[0] == 200
    for suffix in ("", "-wal", "-shm"):
        p = str(gw.db) + suffix
        if os.path.exists(p):
            os.rename(p, p + ".away")
    try:
        # The store notices within its file check interval (2 s).
        deadline = time.time() + 10
        while get(gw, "/readyz")[0] == 200 and time.time() < deadline:
            time.sleep(0.2)
        assert get(gw, "/readyz") == (503, "not ready: database unavailable\n")
        assert get(gw, "/healthz") == (200, "ok\n")  # alive all the same
    finally:
        for suffix in ("", "-wal", "-shm"):
            p = str(gw.db) + suffix
            if os.path.exists(p + ".away"):
                os.rename(p + ".away", p)
    deadline = time.time() + 10
    while get(gw, "/readyz")[0] != 200 and time.time() < deadline:
        time.sleep(0.2)
    assert get(gw, "/readyz") == (200, "ready\n")


def test_readyz_says_503_draining_while_sigterm_drains(gw):
    """After SIGTERM the mail listeners close at once, but a POP3 session
    still open holds the drain: the HTTP listener closed with them, so a
    balancer's probe got a refused connection instead of the documented
    "503 not ready: draining". It now answers until the process ends."""
    pop = socket.create_connection(("127.0.0.1", gw.port("pop3")), timeout=10)
    assert pop.recv(512).startswith(b"+OK")
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.wait_log("draining sessions=1")
    assert eventually(lambda: refused(gw.port("pop3")))
    r = subprocess.run(["curl", "-sS", "-i", url(gw, "/readyz")], capture_output=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(b"HTTP/1.1 503 ") and r.stdout.endswith(b"\r\n\r\nnot ready: draining (shutting down)\n")
    assert get(gw, "/healthz") == (200, "ok\n")  # alive: a supervisor must not restart it
    pop.sendall(b"QUIT\r\n")
    assert pop.recv(512).startswith(b"+OK")
    pop.close()
    assert gw.proc.wait(15) == 0
    assert refused(gw.port("http"))


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except OSError:
        return True


def test_keep_alive_serves_many_requests_on_one_connection(gw):
    c = http.client.HTTPConnection("127.0.0.1", gw.port("http"), timeout=10)
    for path in ("/healthz", "/readyz", "/healthz"):
        c.request("GET", path)
        r = c.getresponse()
        assert r.status == 200 and r.getheader("Connection") is None
        r.read()
    c.close()
    assert gw.wait_log("http end reason=eof ip=127.0.0.1 requests=3")


def test_pipelined_requests_are_answered_in_order(gw):
    out = raw(gw, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    statuses = re.findall(rb"HTTP/1\.1 \d{3} [A-Za-z ]+", out)
    assert statuses == [b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found", b"HTTP/1.1 200 OK"]
    assert out.endswith(b"ready\n")


@pytest.mark.parametrize("before", [b"\r\n", b"\r\n\r\n\n"], ids=["crlf", "crlfs-and-lf"])
def test_empty_lines_before_a_request_line_are_ignored(gw, before):
    # RFC 9112 2.2: a server SHOULD ignore at least one empty line before
    # the request line; Beast alone refused it with 400.
    out = raw(gw, before + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and out.endswith(b"ok\n"), out
    # The CRLF some clients send after a POST body, then the next request
    # on the same connection.
    body = json.dumps({"login": "carol", "remote": "192.0.2.90"}).encode()
    out = raw(gw, b"POST " + POLICY.encode() + b"?command=allow HTTP/1.1\r\nHost: x\r\nContent-Type: "
              b"application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body + before +
              b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert re.findall(rb"HTTP/1\.1 \d{3}", out) == [b"HTTP/1.1 200", b"HTTP/1.1 200"], out
    assert out.endswith(b"ready\n"), out


def test_empty_lines_alone_do_not_hold_the_connection(gw):
    # They are not a request begun: the connection is still cut at
    # http_idle_timeout (2 s here), however many of them come.
    s = socket.create_connection(("127.0.0.1", gw.port("http")), timeout=10)
    t = time.time()
    closed = False
    while time.time() - t < 9:
        try:
            s.sendall(b"\r\n")
            time.sleep(0.2)
        except OSError:
            closed = True
            break
        s.setblocking(False)
        try:
            if s.recv(100) == b"":
                closed = True
                break
        except BlockingIOError:
            pass
        finally:
            s.setblocking(True)
    s.close()
    assert closed and time.time() - t < 6
    assert gw.wait_log("http end reason=timeout ip=127.0.0.1 requests=0")
    assert "http refused" not in gw.log()


# ------------------------------------------------------------------ refusals of the HTTP layer


def test_unknown_path_and_wrong_method(gw):
    assert get(gw, "/metricz") == (404, "not found\n")
    r = raw(gw, b"DELETE /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n") and b"\r\nAllow: GET, HEAD\r\n" in r
    assert get(gw, POLICY + "?command=allow")[0] == 405


def test_absolute_form_is_served_as_its_path(gw):
    # RFC 9112 3.2.2: a server MUST accept it (a proxy-minded client sends it).
    r = raw(gw, b"GET http://evil.example/healthz HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 200 "), r[:200]
    r = raw(gw, b"GET http://evil.example:80/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 404 "), r[:200]


@pytest.mark.parametrize("header", [
    b"Host: a\r\nTransfer-Encoding: gzip, chunked\r\n",
    b"Host: a\r\nHost: b\r\nContent-Length: 10\r\n",
    b"Content-Length: 10\r\n",   # no Host
])
def test_a_header_that_decides_the_refusal_is_answered_before_any_body(gw, header):
    """The refusal used to come only once the whole body was read: curl's
    Expect: 100-continue got a 100 first, and a client that waits for the
    100 before sending the body waited out limits.command_timeout."""
    start = time.monotonic()
    r = raw(gw, b"POST " + POLICY.encode() + b"?command=allow HTTP/1.1\r\n" + header +
            b"Expect: 100-continue\r\n\r\n", timeout=10)
    assert re.match(rb"HTTP/1\.1 (400|501) ", r), r[:200]
    assert b"100 Continue" not in r and not r.endswith(b"<timeout>"), r[:200]
    assert time.monotonic() - start < 3


@pytest.mark.parametrize("request_bytes, status", [
    (b"GARBAGE\r\n\r\n", b"400"),
    (b"GET /healthz HTTP/1.1\r\n\r\n", b"400"),                  # no Host (RFC 9112 3.2)
    (b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", b"505"),
    (b"GET /healthz HTTP/0.9\r\nHost: x\r\n\r\n", b"505"),
    # Not a version at all: a malformed request line, not an unsupported version.
    (b"GET /healthz HTTP/1.1 extra\r\nHost: x\r\n\r\n", b"400"),
    (b"GET /healthz HTTP/1.1\nHost: x\r\n\r\n", b"400"),
    (b"GET /healthz HTTP/11\r\nHost: x\r\n\r\n", b"400"),
    (b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
    (b"GET /healthz#top HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),  # no target has a fragment
    (b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", b"400"),   # authority-form
    (b"GET ftp://evil.example/healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", b"400"),
    (b"POST " + POLICY.encode() + b"?command=report HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", b"400"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", b"431"),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"431"),
    (b"POST " + POLICY.encode() + b"?command=report HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n", b"413"),
    (b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b"400"),      # RFC 9112 3.2
    (b"GET /healthz HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", b"400"),
    # RFC 9112 6.3: the body of a request whose last coding is not chunked
    # has no length; Beast would read it as the next request (smuggling).
    (b"POST " + POLICY.encode() + b"?command=allow HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"
     b"GET /nosuch HTTP/1.1\r\nHost: a\r\n\r\n", b"400"),
    (b"POST " + POLICY.encode() + b"?command=allow HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
     b"0\r\n\r\n", b"400"),
    # RFC 9112 6.1: chunked last is sound framing, but a coding under it that
    # popgate does not decode is 501, not a body read as plain JSON.
    (b"POST " + POLICY.encode() + b"?command=allow HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
     b"0\r\n\r\n", b"501"),
    (b"POST " + POLICY.encode() + b"?command=allow HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"501"),
    (b"POST " + POLICY.encode() + b"?command=allow HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"
     b"0\r\n\r\n", b"400"),
    # RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 is faulty framing.
    (b"POST " + POLICY.encode() + b"?command=allow HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"400"),
])
def test_malformed_and_oversized_requests_get_4xx_and_close(gw, request_bytes, status):
    """Each refusal closes, and nothing after it is read as a request (501
    and 505 are 5xx, but close the same way)."""
    r = raw(gw, request_bytes)
    assert re.match(rb"HTTP/1\.[01] " + status + b" ", r), r[:200]
    assert len(re.findall(rb"(?m)^HTTP/1\.[01] \d{3} ", r)) == 1, r  # nothing after it is read as a request
    assert b"\r\nConnection: close\r\n" in r
    assert not r.endswith(b"<timeout>")  # closed by the daemon, not left open


def header_section(total, lines):
    """A GET whose header section (request line to the empty line) is
    `total` octets: one long field, or many short ones."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
    room = total - len(head) - 2
    if not lines:
        return head + b"X-Pad: " + b"a" * (room - 9) + b"\r\n\r\n"
    n, r = divmod(room, 6)
    return head + b"X: a\r\n" * (n - 1) + b"X: " + b"a" * (1 + r) + b"\r\n\r\n"


@pytest.mark.parametrize("lines", [False, True], ids=["one-field", "many-fields"])
def test_a_header_section_over_8192_octets_gets_431_however_it_is_cut(gw, lines):
    # Beast bounded only what one parse saw: 2,724 fields of "X: a" (16 KB)
    # were served. The whole section counts now, sent at once or in parts.
    for total, status in ((8192, b"200"), (8193, b"431")):
        data = header_section(total, lines)
        assert len(data) == total
        assert raw(gw, data + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") \
            .startswith(b"HTTP/1.1 " + status + b" ")
        s = socket.create_connection(("127.0.0.1", gw.port("http")), timeout=5)
        try:
            for i in range(0, total, 1000):
                s.sendall(data[i:i + 1000])
                time.sleep(0.01)
            assert s.recv(200).startswith(b"HTTP/1.1 " + status + b" "), (total, lines)
        finally:
            s.close()


def test_chunked_body_over_the_limit_gets_413(gw):
    head = (b"POST " + POLICY.encode() + b"?command=report HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n" % 40000 + b"a" * 40000 + b"\r\n"
    # The second chunk's size line already takes the body past 65536 octets:
    # refused there, before its data (which is not sent, so nothing is left
    # unread when the daemon closes).
    r = raw(gw, head + chunk + b"%x\r\n" % 40000)
    assert r.startswith(b"HTTP/1.1 413 ") and b"\r\nConnection: close\r\n" in r


@pytest.mark.parametrize("tail, more", [
    (b"1;", b"a"),                 # a chunk extension without end
    (b"1;a=", b"b"),
    (b"0\r\nX-Trailer: ", b"c"),   # a trailer field without end
    (b"", b"0"),                   # a chunk size of endless zeros
])
def test_an_endless_chunk_line_is_refused_trusted_or_not(make_gateway, tail, more):
    # Beast takes these lines only whole and bounds none of them: the daemon
    # kept every byte until command_timeout, from any peer (trust is decided
    # on the whole request). Now at most http_max_unparsed is kept.
    listeners = DEFAULT_LISTENERS + [{"name": "http", "protocol": "http", "trusted_networks": ["192.0.2.0/24"]}]
    g = make_gateway(listeners=listeners, overrides={"limits": {"command_timeout": 60}})
    s = socket.create_connection(("127.0.0.1", g.port("http")), timeout=10)
    s.sendall(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + tail)
    sent, limit = 0, 8 << 20
    try:
        while sent < limit:
            s.sendall(more * 65536)
            sent += 65536
    except OSError:
        pass  # refused and closed: what was still on its way is reset
    s.close()
    assert sent < limit, "8 MB of one chunk line taken without a word"
    assert g.wait_log('http refused ip=127.0.0.1 status=400 error="bad chunk"')
    assert g.wait_log("http end reason=malformed ip=127.0.0.1 requests=0")


def test_idle_and_slow_requests_are_cut(gw):
    # Idle: nothing sent within http_idle_timeout (2 s here).
    s = socket.create_connection(("127.0.0.1", gw.port("http")), timeout=10)
    t = time.time()
    assert s.recv(100) == b""
    assert 1.5 < time.time() - t < 8
    s.close()
    # Slow: a request begun and not complete within command_timeout, however it trickles.
    s = socket.create_connection(("127.0.0.1", gw.port("http")), timeout=10)
    t = time.time()
    closed = False
    for _ in range(20):
        try:
            s.sendall(b"G")
        except OSError:
            closed = True
            break
        time.sleep(0.5)
    assert closed or time.time() - t < 9
    s.close()
    assert gw.wait_log("http end reason=timeout ip=127.0.0.1 requests=0")  # the idle one
    # The slow one is cut, and not counted against the address
    # (limits.max_slow_sessions_per_ip is the mail clients'; the HTTP
    # listener's clients are services, as the policy listener's are).
    assert gw.wait_log("http end reason=timeout-command ip=127.0.0.1 requests=0")
    assert "command too slow" not in gw.log()


def test_untrusted_peer_gets_403(make_gateway):
    listeners = DEFAULT_LISTENERS + [{"name": "http", "protocol": "http", "trusted_networks": ["192.0.2.0/24"]},
                                     {"name": "mgmt", "protocol": "http"}]
    g = make_gateway(listeners=listeners)
    assert get(g, "/healthz") == (403, "forbidden: this address is not in the listener's trusted_networks\n")
    assert post(g, POLICY + "?command=report", REPORT)[0] == 403
    assert grants(g) == []
    # A Dovecot outside trusted_networks is a refused report, as a wrong key
    # is: the alert PopgateDovecotReportsRefused counts on it.
    with urllib.request.urlopen(f"http://127.0.0.1:{g.port('mgmt')}/metrics", timeout=10) as r:
        metrics = r.read().decode()
    assert 'popgate_dovecot_reports_total{result="refused"} 1\n' in metrics


# ------------------------------------------------------------------ the Dovecot endpoint by hand


def test_allow_always_continues(gw):
    # Before authentication Dovecot asks "allow": always {"status":0}, with or
    # without the secret and whatever the body: popgate never holds up a login.
    for headers in ({}, {"X-API-Key": SECRET}):
        for body in (REPORT, b"not json"):
            assert post(gw, POLICY + "?command=allow", body, headers) == (200, '{"status":0,"msg":""}')
    assert grants(gw) == []


def test_report_grants_with_the_secret_only(gw):
    assert post(gw, POLICY + "?command=report", REPORT) == (403, '{"status":0,"msg":"X-API-Key missing or wrong"}')
    assert post(gw, POLICY + "?command=report", REPORT, {"X-API-Key": SECRET + "x"})[0] == 403
    assert post(gw, POLICY + "?command=report", REPORT, {"X-API-Key": SECRET[:-1]})[0] == 403
    assert grants(gw) == []
    assert SECRET[:-1] not in gw.log()
    # Dovecot's URL may end in '&' (it then appends command=...).
    assert post(gw, POLICY + "?x=1&command=report", REPORT, {"X-API-Key": SECRET}) == \
        (200, '{"status":0,"msg":"granted"}')
    assert grants(gw) == [("127.0.0.8", "erin", "dovecot-imap", 1, "http")]


def test_without_api_key_file_reports_are_refused_with_curl(make_gateway, tmp_path):
    # The shipped listener (api_key_file = ""): health and /metrics as ever,
    # but a report would let any local user grant any address: 403, nothing
    # granted, logged and counted, whatever X-API-Key says.
    listeners = DEFAULT_LISTENERS + [{"name": "http", "protocol": "http"}]
    g = make_gateway(listeners=listeners)
    for extra in ([], ["-H", "X-API-Key: anything-at-all-0123456789"]):
        r = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-H", "Content-Type: application/json",
                            *extra, "--data-binary", json.dumps(REPORT), url(g, POLICY + "?command=report")],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, r.stderr
        assert r.stdout == '{"status":0,"msg":"reports need api_key_file on this listener"}\n403', r.stdout
    assert grants(g) == []
    assert g.sql("SELECT count(*) FROM audit_log WHERE event LIKE '%grant%'") == [(0,)]
    assert g.wait_log("http dovecot report refused ip=127.0.0.1 reason=no-api-key-file listener=http")
    assert get(g, "/healthz") == (200, "ok\n")
    status, metrics = get(g, "/metrics")
    assert status == 200 and 'popgate_dovecot_reports_total{result="refused"} 2' in metrics, metrics
    # "allow" still continues: Dovecot's logins are never held up.
    assert post(g, POLICY + "?command=allow", REPORT) == (200, '{"status":0,"msg":""}')
    # And the relay is refused for the address the report named.
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=10, source_address=("127.0.0.8", 0)) as c:
        c.ehlo("client.test")
        c.mail("a@example.org")
        assert c.rcpt("x@remote.test")[0] == 554
    # check-config says so, without failing the configuration.
    r = g.cli("check-config")
    assert "note: listener 'http' has no api_key_file" in r.stderr and "refuses every Dovecot" in r.stderr, r.stderr
    assert r.returncode == 0 and "configuration OK" in r.stdout


def test_check_config_is_quiet_about_a_listener_with_a_key(gw):
    r = gw.cli("check-config")
    assert "api_key_file" not in r.stdout + r.stderr and "configuration OK" in r.stdout


@pytest.mark.parametrize("change, status, msg", [
    ({"success": False}, 200, "no grant: authentication failed"),
    # A policy refused the login although the password was right: no login.
    ({"policy_reject": True}, 200, "no grant: the login was refused by policy"),
    ({"policy_reject": "yes"}, 400, "malformed report"),
    ({"protocol": "submission"}, 200, "no grant: only pop3 and imap logins grant relaying"),
    # doveadm auth test: its remote is empty, and its protocol grants nothing anyway.
    ({"protocol": "doveadm", "remote": ""}, 200, "no grant: only pop3 and imap logins grant relaying"),
    ({"success": False, "remote": ""}, 200, "no grant: authentication failed"),
    ({"remote": "not-an-address"}, 400, "remote is not an IP address"),
    ({"remote": ""}, 400, "remote is not an IP address"),
    ({"login": ""}, 400, "malformed report"),
    ({"login": "a\u0001b"}, 400, "malformed report"),
    ({"success": "yes"}, 400, "malformed report"),
    ({"success": None}, 400, "malformed report"),   # success missing: not a report
    ({"remote": None}, 400, "malformed report"),
    # What Dovecot reports as success though nobody proved a password there
    # (test_dovecot.py has the real ones), and a template without the fields.
    ({"nologin": ""}, 200, "no grant: the passdb disables this login (nologin)"),
    ({"proxy": ""}, 200, "no grant: a proxied login is proven at its backend"),
    ({"proxy_maybe": ""}, 200, "no grant: a proxied login is proven at its backend"),
    ({"mech": "anonymous"}, 200, "no grant: an anonymous login"),
    ({"nologin": None}, 400, "report lacks nologin, proxy, proxy_maybe or mech: install the current "
                            "95-popgate-auth-policy.conf"),
    ({"mech": None, "proxy": None}, 400, "report lacks nologin, proxy, proxy_maybe or mech: install the current "
                                         "95-popgate-auth-policy.conf"),
])
def test_reports_that_grant_nothing(gw, change, status, msg):
    body = {k: v for k, v in {**REPORT, **change}.items() if v is not None}
    assert post(gw, POLICY + "?command=report", body, {"X-API-Key": SECRET}) == \
        (status, json.dumps({"status": 0, "msg": msg}, separators=(",", ":")))
    assert grants(gw) == []


def test_unknown_command_and_non_json(gw):
    assert post(gw, POLICY + "?command=drop", REPORT, {"X-API-Key": SECRET})[0] == 400
    assert post(gw, POLICY, REPORT, {"X-API-Key": SECRET})[0] == 400
    assert post(gw, POLICY + "?command=report", b"{\"login\":", {"X-API-Key": SECRET}) == \
        (400, '{"status":0,"msg":"malformed report"}')
    assert grants(gw) == []


def test_a_password_in_the_report_is_never_logged(gw):
    body = {**REPORT, "password": "Sup3rS3cretPw", "pwhash": "0123abcd"}
    assert post(gw, POLICY + "?command=report", body, {"X-API-Key": SECRET})[0] == 200
    assert gw.wait_log("result=granted")
    assert "Sup3rS3cretPw" not in gw.log() and "0123abcd" not in gw.log()


def test_ipv6_remote_is_granted_by_its_prefix(gw):
    body = {**REPORT, "remote": "2001:db8:1:2:aa::7", "protocol": "pop3"}
    assert post(gw, POLICY + "?command=report", body, {"X-API-Key": SECRET})[0] == 200
    assert grants(gw) == [("2001:db8:1:2::", "erin", "dovecot-pop3", 1, "http")]


@sqlite_only("the database file moved away; PostgreSQL going away is test_pg_multinode.py's")
def test_report_when_the_database_is_unusable_gets_503(gw):
    os.rename(gw.db, str(gw.db) + ".away")
    try:
        status, body = post(gw, POLICY + "?command=report", REPORT, {"X-API-Key": SECRET})
        assert (status, body) == (503, '{"status":0,"msg":"grant not recorded: database unavailable"}')
    finally:
        os.rename(str(gw.db) + ".away", gw.db)
    assert gw.wait_log("http dovecot grant failed ip=127.0.0.1 user=erin remote=127.0.0.8")


def test_implicit_tls_http_listener(make_gateway):
    listeners = DEFAULT_LISTENERS + [{"name": "https", "protocol": "http", "tls": "implicit"}]
    g = make_gateway(listeners=listeners)
    r = subprocess.run(["curl", "-sS", "-k", f"https://127.0.0.1:{g.port('https')}/healthz"],
                       capture_output=True, text=True, timeout=20)
    assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr
    assert g.wait_log("http tls ip=127.0.0.1")


def test_reload_takes_a_new_api_key(gw, tmp_path):
    new = "rotated-secret-0123456789abcdef"
    (tmp_path / "key").write_text(new + "\n")
    gw.reload()
    assert gw.wait_log("reload done")
    assert post(gw, POLICY + "?command=report", REPORT, {"X-API-Key": SECRET})[0] == 403
    assert post(gw, POLICY + "?command=report", REPORT, {"X-API-Key": new}) == (200, '{"status":0,"msg":"granted"}')
    # A key file the reload cannot use keeps the running configuration.
    (tmp_path / "key").write_text("short\n")
    gw.reload()
    assert gw.wait_log("reload refused, keeping the running configuration")
    assert gw.wait_log("the first line must be the secret")
    assert post(gw, POLICY + "?command=report", REPORT, {"X-API-Key": new})[0] == 200


def test_expect_100_continue_with_curl(gw):
    # curl asks for 100-continue before a body over 1 KB and waits for it.
    body = json.dumps({**REPORT, "pwhash": "f" * 2000})
    r = subprocess.run(["curl", "-sS", "-v", "-H", "Content-Type: application/json", "-H", f"X-API-Key: {SECRET}",
                        "-H", "Expect: 100-continue", "--data-binary", body, url(gw, POLICY + "?command=report")],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert "< HTTP/1.1 100 Continue" in r.stderr
    assert r.stdout == '{"status":0,"msg":"granted"}'
    assert grants(gw) == [("127.0.0.8", "erin", "dovecot-imap", 1, "http")]


def test_no_100_continue_for_an_http_1_0_client(gw):
    # RFC 9110 15.2: a server MUST NOT send a 1xx to an HTTP/1.0 client; its
    # Expect is ignored (10.1.1) and it gets the final answer.
    body = b'{"login":"x"}'
    s = socket.create_connection(("127.0.0.1", gw.port("http")), timeout=1)
    s.sendall(b"POST " + POLICY.encode() + b"?command=allow HTTP/1.0\r\nContent-Length: %d\r\n"
              b"Expect: 100-continue\r\n\r\n" % len(body))
    with pytest.raises(socket.timeout):
        got = s.recv(100)  # an HTTP/1.1 client would have its 100 by now
        pytest.fail(f"sent to an HTTP/1.0 client: {got!r}")
    s.settimeout(10)
    s.sendall(body)
    r = b""
    while chunk := s.recv(65536):
        r += chunk
    s.close()
    assert r.startswith(b"HTTP/1.0 200 "), r[:200]


def test_dovecot_reports_go_through_the_grant_guard_rails(make_gateway, tmp_path):
    # The same rules as a login at popgate's own POP3 (relay::grant_issuer).
    key = tmp_path / "key"
    key.write_text(SECRET + "\n")
    listeners = DEFAULT_LISTENERS + [{"name": "http", "protocol": "http", "api_key_file": str(key)}]
    g = make_gateway(listeners=listeners, overrides={"relay": {"no_grant_networks": ["100.64.0.0/10"],
                                                               "grant_requires_tls": True}})
    cgnat = {**REPORT, "remote": "100.64.1.2"}
    assert post(g, POLICY + "?command=report", cgnat, {"X-API-Key": SECRET}) == \
        (200, '{"status":0,"msg":"no grant: no-grant-network"}')
    clear = {**REPORT, "tls": False}
    assert post(g, POLICY + "?command=report", clear, {"X-API-Key": SECRET}) == \
        (200, '{"status":0,"msg":"no grant: no-tls"}')
    assert grants(g) == []
    assert g.wait_log("result=no-grant mech=dovecot-imap grant=no reason=no-tls")
    assert [r[0] for r in g.sql("SELECT event FROM audit_log WHERE event LIKE '%grant%' ORDER BY id")] == \
        ["no-grant", "no-grant"]
    # Over TLS, outside the no-grant networks: granted.
    assert post(g, POLICY + "?command=report", REPORT, {"X-API-Key": SECRET}) == (200, '{"status":0,"msg":"granted"}')
    assert grants(g) == [("127.0.0.8", "erin", "dovecot-imap", 1, "http")]


def test_health_checks_and_scrapes_have_a_budget_apart_from_mail_clients(make_gateway, tmp_path):
    # A daemon full of mail clients (limits.max_sessions, and the per-address
    # cap of the office NAT the scraper shares) still answers /healthz and
    # /metrics: a supervisor would otherwise restart a healthy daemon and
    # drop every session. The HTTP clients have limits.max_service_sessions.
    key = tmp_path / "key"
    key.write_text(SECRET + "\n")
    listeners = DEFAULT_LISTENERS + [{"name": "http", "protocol": "http", "api_key_file": str(key)}]
    g = make_gateway(listeners=listeners, overrides={"limits": {
        "max_sessions": 2, "max_sessions_per_ip": 2, "max_service_sessions": 2, "max_connections_per_minute": 0}})
    held = []
    try:
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", g.port("pop3")), timeout=5)
            held.append(s)
            assert s.recv(512).startswith(b"+OK")
        s = socket.create_connection(("127.0.0.1", g.port("pop3")), timeout=5)
        assert s.recv(512).startswith(b"-ERR [SYS/TEMP] too many sessions (limits.max_sessions=2)")
        s.close()
        assert get(g, "/healthz")[0] == 200
        assert get(g, "/metrics")[0] == 200
        # Those two sessions end (the daemon sees each client's close in its
        # own time), then two idle HTTP connections fill the services' budget.
        assert eventually(lambda: g.log().count(" http end ") >= 2)
        for _ in range(2):
            held.append(socket.create_connection(("127.0.0.1", g.port("http")), timeout=5))
        assert eventually(lambda: g.log().count(" http connect ") >= 4)
        data = raw(g, b"")  # the refusal comes at once, before any request
        assert data.startswith(b"HTTP/1.1 503 "), data
        assert b"too many http sessions (limits.max_service_sessions=2)" in data
    finally:
        for s in held:
            s.close()
    assert eventually(lambda: get(g, "/healthz")[0] == 200)


def answered_policy_lookup(g):
    """A policy connection whose lookup was answered (DUNNO), left open."""
    m = socket.create_connection(("127.0.0.1", g.port("policy")), timeout=5)
    m.sendall(b"request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.9\n"
              b"recipient=x@remote.test\n\n")
    assert m.recv(512).startswith(b"action=DUNNO"), "policy lookup refused"
    return m


def test_peers_outside_trusted_networks_cannot_take_the_services_places(make_gateway, tmp_path):
    # Admission comes before the 403: a peer outside trusted_networks that
    # merely reaches the port meets a mail client's limits (here two
    # sessions from one address), not the services' budget, so it cannot
    # crowd out the MTA's policy lookups.
    listeners = DEFAULT_LISTENERS + [{"name": "http", "protocol": "http", "trusted_networks": ["192.0.2.0/24"]},
                                     {"name": "policy", "protocol": "policy", "tls": "none"}]
    g = make_gateway(listeners=listeners, overrides={"limits": {
        "max_service_sessions": 2, "max_sessions_per_ip": 2, "max_connections_per_minute": 0}})
    held = []
    try:
        for _ in range(2):
            held.append(socket.create_connection(("127.0.0.1", g.port("http")), timeout=5))
        assert eventually(lambda: g.log().count(" http connect ") >= 2)
        data = raw(g, b"")
        assert data.startswith(b"HTTP/1.1 503 "), data
        assert b"too many sessions from this address (limits.max_sessions_per_ip=2)" in data
        # Both service places are still free for the MTA.
        held += [answered_policy_lookup(g) for _ in range(2)]
    finally:
        for s in held:
            s.close()


def test_idle_trusted_http_connections_leave_the_policy_lookups_their_places(make_gateway):
    # A local process that opened max_service_sessions connections to the
    # metrics port and sent nothing held the one budget HTTP and policy
    # shared: every Postfix policy lookup was deferred (450s) until they
    # timed out. Each service protocol now has a budget of its own.
    listeners = DEFAULT_LISTENERS + [{"name": "http", "protocol": "http"},
                                     {"name": "policy", "protocol": "policy", "tls": "none"}]
    g = make_gateway(listeners=listeners, overrides={"limits": {"max_service_sessions": 2}})
    held = [socket.create_connection(("127.0.0.1", g.port("http")), timeout=5) for _ in range(2)]
    try:
        assert eventually(lambda: g.log().count(" http connect ") >= 2)
        data = raw(g, b"")
        assert data.startswith(b"HTTP/1.1 503 "), data
        assert b"too many http sessions (limits.max_service_sessions=2)" in data
        held += [answered_policy_lookup(g) for _ in range(2)]
        # And the policy budget, full in its turn, is its own.
        m = socket.create_connection(("127.0.0.1", g.port("policy")), timeout=5)
        held.append(m)
        assert m.recv(512).startswith(b"action=DEFER_IF_REJECT 4.3.2")
        assert g.wait_log("policy refused ip=127.0.0.1 listener=policy reason=\"too many policy sessions "
                          "(limits.max_service_sessions=2)")
    finally:
        for s in held:
            s.close()


def test_a_listener_rebound_in_the_file_keeps_its_policy_until_a_restart(make_gateway):
    # A reload that changes a listener's address keeps it as bound, with its
    # policy as started. The admission and the 403 used to read different
    # copies of it: here the new trusted_networks refused a peer that the
    # admission had taken as trusted, so it held a service place for a 403.
    listeners = DEFAULT_LISTENERS + [{"name": "http", "protocol": "http", "trusted_networks": ["127.0.0.0/8"]}]
    g = make_gateway(listeners=listeners)
    old = ('[[listener]]\naddress = "127.0.0.1"\nport = 0\nname = "http"\nprotocol = "http"\n'
           'trusted_networks = ["127.0.0.0/8"]')
    text = g.config_file.read_text()
    assert old in text
    g.config_file.write_text(text.replace(old, old.replace('"127.0.0.1"', '"127.0.0.2"')
                                                  .replace('"127.0.0.0/8"', '"10.0.0.0/8"')))
    g.reload()
    assert g.wait_log("reload: listener http changed its name, address")
    assert get(g, "/healthz") == (200, "ok\n")


def test_a_failed_report_logs_its_remote_as_the_others_do(gw):
    # Answered before its remote is read (a doveadm test has none), a failed
    # login logged the remote as sent; every other report line has it
    # canonical, and a search by address missed the failures.
    body = {**REPORT, "success": False, "remote": "::ffff:127.0.0.9"}
    assert post(gw, POLICY + "?command=report", body, {"X-API-Key": SECRET})[0] == 200
    assert gw.wait_log(" remote=127.0.0.9 protocol=")
    assert "::ffff:127.0.0.9" not in gw.log()
