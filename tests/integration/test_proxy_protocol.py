"""PROXY protocol (HAProxy's proxy-protocol.txt, v1 and v2) on the listeners,
with Debian's real HAProxy in front: the client address in the header is the
one that is granted, decided on and logged; nobody else may send one.

HAProxy runs from a config written into the test's temp dir, on loopback
ephemeral ports, in the foreground-daemon mode with a pid file, and is
stopped after. Clients bind 127.0.0.2 / 127.0.0.3 as their source so the
address HAProxy reports differs from HAProxy's own (127.0.0.1)."""
import os
import poplib
import shutil
import signal
import smtplib
import socket
import ssl
import struct
import subprocess
import time
from pathlib import Path

import pytest

from popgate_test import SourcePOP3, client_tls_context, eventually, free_port, make_gateway, upstream  # noqa: F401
from smtp_support import relay_overrides

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
BODY = b"From: a@example.org\r\nTo: x@remote.test\r\nSubject: via haproxy\r\n\r\nhello\r\n"

# The gateway's proxy listeners trust only 127.0.0.1, where HAProxy connects from.
PROXY_LISTENERS = [
    {"name": "pop3", "protocol": "pop3", "tls": "starttls", "proxy_protocol": True},
    {"name": "pop3s", "protocol": "pop3", "tls": "implicit", "proxy_protocol": True},
    {"name": "smtp", "protocol": "smtp", "tls": "starttls", "proxy_protocol": True},
    {"name": "smtp-v1", "protocol": "smtp", "tls": "starttls", "proxy_protocol": True},
    {"name": "direct", "protocol": "pop3", "tls": "starttls"},
]


class HAProxy:
    """haproxy -f CFG -D -p PIDFILE, one frontend per gateway listener."""

    def __init__(self, root: Path, routes, checks=None):
        # routes: name -> (gateway port, "send-proxy" | "send-proxy-v2"[, Unix
        # socket path to bind instead of a loopback port]); checks: name ->
        # the backend's health-check option ("option smtpchk"), run every 50 ms
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.pidfile = root / "haproxy.pid"
        self.cfg = root / "haproxy.cfg"
        self.ports = {name: free_port() for name in routes}
        lines = [
            "global",
            f"    pidfile {self.pidfile}",
            "defaults",
            "    mode tcp",
            "    timeout connect 5s",
            "    timeout client 30s",
            "    timeout server 30s",
        ]
        for name, (gw_port, send, *unix) in routes.items():
            bind = f"unix@{unix[0]}" if unix else f"127.0.0.1:{self.ports[name]}"
            check = (checks or {}).get(name)
            lines += [f"frontend fe_{name}", f"    bind {bind}", f"    default_backend be_{name}",
                      f"backend be_{name}"] + ([f"    {check}"] if check else []) + [
                      f"    server gw 127.0.0.1:{gw_port} {send}" + (" check inter 50ms" if check else "")]
        self.cfg.write_text("\n".join(lines) + "\n")
        check = subprocess.run([HAPROXY, "-c", "-f", str(self.cfg)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        # -D: HAProxy binds its frontends, then forks and the parent exits;
        # once it has returned, the ports are open (no probe connection,
        # which would reach the gateway as a session of its own).
        r = subprocess.run([HAPROXY, "-D", "-f", str(self.cfg), "-p", str(self.pidfile)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        self.pid = int(self.pidfile.read_text().split()[0])

    def port(self, name):
        return self.ports[name]

    def stop(self):
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.time() + 10
        while time.time() < deadline and self.alive():
            time.sleep(0.05)
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)

    def alive(self):
        # Daemonized, it is nobody's child here: once it exits it may stay a
        # zombie until init reaps it.
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] != "Z"


class SourcePOP3_SSL(poplib.POP3_SSL):
    def __init__(self, host, port, source, timeout=10):
        self._source = source
        super().__init__(host, port, timeout=timeout, context=client_tls_context())

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout, source_address=(self._source, 0))
        return self.context.wrap_socket(sock, server_hostname=self.host)


@pytest.fixture
def behind_haproxy(make_gateway, upstream, tmp_path):
    g = make_gateway(overrides=relay_overrides(upstream, server={"trusted_proxies": ["127.0.0.1"]},
                                               limits={"tls_handshake_timeout": 2}),
                     listeners=PROXY_LISTENERS)
    g.add_user("alice", "secret-pw")
    h = HAProxy(tmp_path / "haproxy", {
        "pop3": (g.port("pop3"), "send-proxy"),
        "pop3s": (g.port("pop3s"), "send-proxy-v2"),
        "smtp": (g.port("smtp"), "send-proxy-v2"),
        "smtp-v1": (g.port("smtp-v1"), "send-proxy"),
    })
    yield g, h
    h.stop()


def grants(g):
    return g.sql("SELECT address, user FROM relay_grants ORDER BY address")


def send_from(port, source, rcpt):
    with smtplib.SMTP("127.0.0.1", port, timeout=10, source_address=(source, 0)) as s:
        return s.sendmail("a@example.org", [rcpt], BODY)


def test_pop3_login_through_haproxy_grants_the_client_not_the_proxy(behind_haproxy):
    g, h = behind_haproxy
    p = SourcePOP3(h.port("pop3"), "127.0.0.2")
    assert p.getwelcome().startswith(b"+OK")
    p.user("alice")
    p.pass_("secret-pw")
    p.quit()
    assert grants(g) == [("127.0.0.2", "alice")]
    listed = g.cli("grant", "list").stdout
    assert listed.startswith("127.0.0.2\talice\t"), listed
    assert "127.0.0.1" not in listed
    log = g.log()
    assert " pop3 connect ip=127.0.0.2 " in log and " listener=pop3 " in log and "proxy=127.0.0.1" in log
    assert "user=alice ip=127.0.0.2" in log


def test_smtp_through_haproxy_v2_relays_for_the_granted_client_only(behind_haproxy, upstream):
    g, h = behind_haproxy
    p = SourcePOP3(h.port("pop3"), "127.0.0.2")
    p.user("alice")
    p.pass_("secret-pw")
    p.quit()
    # 127.0.0.2 holds the grant: relayed, and upstream got it.
    assert send_from(h.port("smtp"), "127.0.0.2", "x@remote.test") == {}
    assert upstream.wait_for(lambda: len(upstream.messages) == 1)
    # 127.0.0.3 through the very same proxy: refused.
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        send_from(h.port("smtp"), "127.0.0.3", "y@remote.test")
    assert e.value.recipients == {"y@remote.test": (554, b"5.7.1 <y@remote.test>: Relay access denied")}
    assert len(upstream.messages) == 1
    assert g.wait_log("ip=127.0.0.3")
    # v1 on another listener decides the same way.
    assert send_from(h.port("smtp-v1"), "127.0.0.2", "z@remote.test") == {}
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send_from(h.port("smtp-v1"), "127.0.0.3", "w@remote.test")
    log = g.log()
    assert "decision=grant" in log and "decision=denied" in log
    assert eventually(lambda: len(g.sql("SELECT address FROM audit_log WHERE event='deny'")) == 2)
    assert g.sql("SELECT address FROM audit_log WHERE event='deny'") == [("127.0.0.3",), ("127.0.0.3",)]


def test_implicit_tls_header_comes_before_the_handshake(behind_haproxy):
    g, h = behind_haproxy
    p = SourcePOP3_SSL("127.0.0.1", h.port("pop3s"), "127.0.0.2")
    p.user("alice")
    p.pass_("secret-pw")
    p.quit()
    assert grants(g) == [("127.0.0.2", "alice")]
    assert g.wait_log("listener=pop3s tls=implicit proxy=127.0.0.1")


def raw(port, source, payload=b"", wait=3.0):
    """Connects from `source`, sends `payload`, returns (bytes read, closed by the server)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=wait, source_address=(source, 0))
    data = b""
    closed = False
    try:
        if payload:
            s.sendall(payload)
        deadline = time.time() + wait
        while time.time() < deadline:
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            data += chunk
    finally:
        s.close()
    return data, closed


def v2_header(src, sport, dst="127.0.0.1", dport=110, command=0x21, fam=0x11):
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([command, fam]) + struct.pack("!H", len(body)) + body


def test_forged_header_from_an_untrusted_address_is_refused(behind_haproxy):
    g, _ = behind_haproxy
    forged = b"PROXY TCP4 127.0.0.2 127.0.0.1 40000 110\r\nUSER alice\r\n"
    data, closed = raw(g.port("pop3"), "127.0.0.3", forged)
    assert data == b"" and closed
    data, closed = raw(g.port("smtp"), "127.0.0.3", v2_header("127.0.0.2", 40000) + b"EHLO x\r\n")
    assert data == b"" and closed
    assert g.wait_log("pop3 proxy refused ip=127.0.0.3 listener=pop3 reason=untrusted-peer")
    assert g.wait_log("smtp proxy refused ip=127.0.0.3 listener=smtp reason=untrusted-peer")
    assert "ip=127.0.0.2" not in g.log()
    assert grants(g) == []


def test_trusted_peer_without_a_valid_header_is_refused(behind_haproxy):
    g, _ = behind_haproxy
    # A client speaking POP3 straight away, from the trusted address.
    data, closed = raw(g.port("pop3"), "127.0.0.1", b"USER alice\r\n")
    assert data == b"" and closed
    assert g.wait_log("pop3 proxy refused ip=127.0.0.1 listener=pop3 reason=bad-header error=\"not a PROXY header\"")
    # Broken ones: a bad port, a bare LF, v2 version 1, an oversized v2 length.
    for bad in (b"PROXY TCP4 127.0.0.2 127.0.0.1 99999 110\r\n",
                b"PROXY TCP4 127.0.0.2 127.0.0.1 1 110\n",
                v2_header("127.0.0.2", 1, command=0x11),
                b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff"):
        data, closed = raw(g.port("smtp"), "127.0.0.1", bad)
        assert data == b"" and closed, bad
    # Longer than 107 octets without a CRLF.
    data, closed = raw(g.port("smtp"), "127.0.0.1", b"PROXY UNKNOWN " + b"f" * 120)
    assert data == b"" and closed
    assert g.wait_log('error="v1: no CRLF within 107 octets"')
    # Silence: cut at tls_handshake_timeout (2 s here), still without a word.
    started = time.time()
    data, closed = raw(g.port("pop3"), "127.0.0.1", b"", wait=8)
    assert data == b"" and closed
    assert 1.5 < time.time() - started < 6
    assert g.wait_log("pop3 proxy refused ip=127.0.0.1 listener=pop3 reason=header-timeout limit=2s")
    # A header cut short and then the connection closed.
    data, closed = raw(g.port("pop3"), "127.0.0.1", b"PROXY TCP4 127.0.0.2", wait=1)
    assert data == b""
    assert g.wait_log('reason=bad-header error="connection closed before a whole header"')
    assert grants(g) == []
    assert " connect ip=" not in g.log()


def test_header_split_across_segments_and_client_bytes_after_it(behind_haproxy):
    g, _ = behind_haproxy
    s = socket.create_connection(("127.0.0.1", g.port("pop3")), timeout=5)
    try:
        s.sendall(b"PROXY TCP4 127.0.0.2 127.0.0.1 4")
        time.sleep(0.2)
        # The rest, and the client's first command pipelined right behind it:
        # the command must survive for the session.
        s.sendall(b"0000 110\r\nCAPA\r\n")
        f = s.makefile("rb")
        assert f.readline().startswith(b"+OK")
        capa = f.readline()
        assert capa.startswith(b"+OK"), capa
    finally:
        s.close()
    assert g.wait_log("pop3 connect ip=127.0.0.2 port=40000 listener=pop3 tls=starttls proxy=127.0.0.1")


def test_unknown_and_local_keep_the_proxy_address(behind_haproxy):
    g, _ = behind_haproxy
    data, _ = raw(g.port("pop3"), "127.0.0.1", b"PROXY UNKNOWN\r\nQUIT\r\n")
    assert data.startswith(b"+OK") and b"\r\n+OK" in data
    local = b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"
    data, _ = raw(g.port("smtp"), "127.0.0.1", local + b"QUIT\r\n")
    assert data.startswith(b"220 ") and b"221 " in data
    log = g.log()
    assert "pop3 connect ip=127.0.0.1 " in log and "smtp connect ip=127.0.0.1 " in log
    assert "proxy=127.0.0.1" in log


class UnixPOP3(poplib.POP3):
    def __init__(self, path, timeout=10):
        self._path = path
        super().__init__("localhost", 0, timeout=timeout)

    def _create_socket(self, timeout):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(str(self._path))
        return s


class UnixSMTP(smtplib.SMTP):
    def __init__(self, path, timeout=10):
        self._path = path
        super().__init__("localhost", 25, timeout=timeout)

    def _get_socket(self, host, port, timeout):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(str(self._path))
        return s


def test_a_header_that_names_no_client_never_grants_the_proxy(behind_haproxy, upstream, tmp_path):
    # HAProxy's clients on a Unix socket have no address to send: v1 says
    # UNKNOWN, v2 LOCAL, and the gateway sees HAProxy's own 127.0.0.1. That
    # address stands for every such client: a login on it must not let the
    # others relay.
    g, _ = behind_haproxy
    sockets = tmp_path / "sockets"
    sockets.mkdir()
    h = HAProxy(tmp_path / "haproxy-unix", {
        "pop3-v1": (g.port("pop3"), "send-proxy", sockets / "pop3-v1"),
        "pop3-v2": (g.port("pop3"), "send-proxy-v2", sockets / "pop3-v2"),
        "smtp-v2": (g.port("smtp"), "send-proxy-v2", sockets / "smtp-v2"),
    })
    try:
        for name in ("pop3-v1", "pop3-v2"):
            p = UnixPOP3(sockets / name)
            p.user("alice")
            assert p.pass_("secret-pw").startswith(b"+OK")  # the login itself succeeds
            assert p.stat() == (0, 0)
            p.quit()
        assert grants(g) == []
        with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
            with UnixSMTP(sockets / "smtp-v2") as s:
                s.sendmail("a@example.org", ["x@remote.test"], BODY)
        assert e.value.recipients == {"x@remote.test": (554, b"5.7.1 <x@remote.test>: Relay access denied")}
    finally:
        h.stop()
    assert upstream.messages == []
    rows = g.sql("SELECT address, user, detail FROM audit_log WHERE event = 'no-grant'")
    assert [(a, u) for a, u, _ in rows] == [("127.0.0.1", "alice")] * 2
    assert all(d.endswith(" reason=no-client-address") for _, _, d in rows), rows
    log = g.log()
    assert log.count("user=alice ip=127.0.0.1 ") == 2 and log.count("grant=no reason=no-client-address") == 2
    assert "pop3 connect ip=127.0.0.1 " in log and "proxy=127.0.0.1 client=unnamed" in log


def test_a_client_the_header_does_not_name_relays_by_auth_only(behind_haproxy, upstream, tmp_path):
    # The proxy's own address may have a grant (a monitoring login from the
    # balancer host, an administrator's `grant add`) or sit in an allowed
    # network: neither lets the clients it stands for relay.
    g, _ = behind_haproxy
    g.cli("grant", "add", "127.0.0.1", "--user", "monitor")
    g.cli("allow", "add", "127.0.0.1/32")
    sockets = tmp_path / "sockets"
    sockets.mkdir()
    h = HAProxy(tmp_path / "haproxy-unix", {"smtp-v2": (g.port("smtp"), "send-proxy-v2", sockets / "smtp-v2")})
    try:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
            with UnixSMTP(sockets / "smtp-v2") as s:
                s.sendmail("a@example.org", ["x@remote.test"], BODY)
        assert e.value.recipients == {"x@remote.test": (554, b"5.7.1 <x@remote.test>: Relay access denied")}
        # Mail for a local user still arrives that way.
        with UnixSMTP(sockets / "smtp-v2") as s:
            assert s.sendmail("a@example.org", ["alice@localhost"], BODY) == {}
        # With SMTP AUTH it relays.
        with UnixSMTP(sockets / "smtp-v2") as s:
            s.login("alice", "secret-pw")
            assert s.sendmail("a@example.org", ["y@remote.test"], BODY) == {}
    finally:
        h.stop()
    assert [m["rcpt_tos"] for m in upstream.messages] == [["y@remote.test"]]
    assert g.wait_log("decision=denied detail=client-unnamed")


def test_the_balancers_health_checks_do_not_use_up_its_connection_rate(make_gateway, upstream, tmp_path):
    # HAProxy checks each backend every `inter`. Its checks relay no client:
    # their header is v2 LOCAL, or v1 naming HAProxy's own address and port
    # (the pop3 route's). Counted in the balancer's
    # max_connections_per_minute they were refused from the 6th on, so
    # HAProxy's SMTP check failed and it took the gateway out of service.
    g = make_gateway(overrides=relay_overrides(upstream, server={"trusted_proxies": ["127.0.0.1"]},
                                               limits={"max_connections_per_minute": 5, "command_timeout": 1}),
                     listeners=PROXY_LISTENERS)
    g.add_user("alice", "secret-pw")
    h = HAProxy(tmp_path / "haproxy", {"smtp": (g.port("smtp"), "send-proxy-v2"),
                                       "pop3": (g.port("pop3"), "send-proxy")},
                checks={"smtp": "option smtpchk", "pop3": "option tcp-check"})
    try:
        # Forty checks and more, eight times the window's limit.
        eventually(lambda: g.log().count("smtp connect ip=127.0.0.1 ") >= 20
                   and g.log().count("pop3 connect ip=127.0.0.1 ") >= 20, timeout=30)
        time.sleep(0.5)  # HAProxy's verdict on the latest checks
        # A client through HAProxy is served: the balancer kept the gateway.
        p = SourcePOP3(h.port("pop3"), "127.0.0.2")
        p.user("alice")
        assert p.pass_("secret-pw").startswith(b"+OK")
        p.quit()
        assert send_from(h.port("smtp"), "127.0.0.2", "x@remote.test") == {}
    finally:
        h.stop()
    log = g.log()
    assert " refused ip=127.0.0.1 " not in log, log
    assert "client=unnamed" in log
    assert [m["rcpt_tos"] for m in upstream.messages] == [["x@remote.test"]]
    # A client the balancer names is still held to its own window: the
    # sixth connection in a minute is refused, from HAProxy's address too.
    for i in range(6):
        named = f"PROXY TCP4 192.0.2.9 127.0.0.1 {4000 + i} 25\r\nQUIT\r\n".encode()
        data, _ = raw(g.port("smtp-v1"), "127.0.0.1", named, wait=1.0)
        assert data.startswith(b"421 " if i == 5 else b"220 "), (i, data)
    assert g.wait_log("smtp refused ip=192.0.2.9 listener=smtp-v1 reason=\"too many connections from this "
                      "address (limits.max_connections_per_minute=5)\"")
    # A slow session of the balancer's own is logged, not counted.
    data, _ = raw(g.port("smtp-v1"), "127.0.0.1", b"PROXY TCP4 127.0.0.1 127.0.0.1 4100 25\r\nNOO", wait=4.0)
    assert data.startswith(b"220 ") and b"421 4.4.2" in data, data
    assert g.wait_log("smtp command too slow ip=127.0.0.1 limit=1s slow_sessions=uncounted")


def test_header_on_a_listener_without_proxy_protocol_is_a_bad_command(behind_haproxy):
    g, _ = behind_haproxy
    data, _ = raw(g.port("direct"), "127.0.0.3", b"PROXY TCP4 192.0.2.66 127.0.0.1 1 110\r\nQUIT\r\n")
    assert data.startswith(b"+OK")
    assert b"\r\n-ERR" in data  # the PROXY line, an unknown command
    assert g.wait_log("pop3 connect ip=127.0.0.3 ")
    assert "ip=192.0.2.66" not in g.log()


def test_config_refuses_proxy_protocol_without_trusted_proxies(make_gateway):
    g = make_gateway(listeners=[{"name": "p", "protocol": "pop3", "proxy_protocol": True}], start=False)
    r = g.cli("check-config", check=False)
    assert r.returncode != 0
    assert "proxy_protocol = true needs trusted_proxies" in r.stdout + r.stderr


def test_sighup_applies_proxy_protocol_and_trusted_proxies(make_gateway):
    """proxy_protocol and trusted_proxies are read per connection from the
    running configuration. Before, the frame read both from the listener as
    bound at start: a SIGHUP that put a listener behind HAProxy was ignored,
    and so was one that dropped a proxy from trusted_proxies, which left it
    free to name any client address."""
    g = make_gateway(overrides={"server": {"trusted_proxies": ["127.0.0.1"]}},
                     listeners=[{"name": "edge", "protocol": "pop3", "tls": "starttls"}])
    header = b"PROXY TCP4 127.0.0.2 127.0.0.1 40000 110\r\nQUIT\r\n"
    data, _ = raw(g.port("edge"), "127.0.0.1", header)
    assert data.startswith(b"+OK") and b"\r\n-ERR" in data  # a bad command here
    assert g.wait_log("pop3 connect ip=127.0.0.1 ")

    listener = 'name = "edge"\nprotocol = "pop3"\ntls = "starttls"'
    text = g.config_file.read_text()
    assert listener in text
    g.config_file.write_text(text.replace(listener, listener + "\nproxy_protocol = true"))
    g.reload()
    assert g.wait_log("reload done")
    assert "reload: listener edge" not in g.log()
    data, _ = raw(g.port("edge"), "127.0.0.1", header)
    assert data.startswith(b"+OK") and b"\r\n+OK" in data and b"-ERR" not in data, data  # QUIT, after the header
    assert g.wait_log("pop3 connect ip=127.0.0.2 port=40000 listener=edge tls=starttls proxy=127.0.0.1")

    # The proxy on 127.0.0.1 is no longer trusted: it is closed without a byte.
    text = g.config_file.read_text()
    g.config_file.write_text(text.replace('trusted_proxies = ["127.0.0.1"]', 'trusted_proxies = ["192.0.2.1"]'))
    g.reload()
    assert eventually(lambda: g.log().count("reload done") == 2)
    data, closed = raw(g.port("edge"), "127.0.0.1", header)
    assert data == b"" and closed
    assert g.wait_log("pop3 proxy refused ip=127.0.0.1 listener=edge reason=untrusted-peer")
