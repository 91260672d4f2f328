"""GET /metrics on the HTTP listener against the running daemon: real POP3
logins (poplib, one good and one wrong password, then a blocked one), an
SMTP relay through the capture upstream and a refused RCPT (smtplib), TLS
handshakes (one good, one garbage), a Dovecot report without its key; the
counters scraped with urllib before and after move by exactly what was done,
and `promtool check metrics` accepts the scrape. Refusals: an address outside
trusted_networks gets 403, another method 405. The shipped alert rules pass
`promtool check rules`."""
import datetime
import glob
import os
import poplib
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from popgate_test import CaptureUpstream, client_tls_context, eventually, make_gateway, upstream  # noqa: F401  (fixtures)
from pop3_support import SourcePOP3, SourcePOP3_SSL, _close_clients  # noqa: F401  (autouse fixture)
from smtp_support import relay_overrides

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMTOOL = shutil.which("promtool")
LISTENERS = [
    {"name": "pop3", "protocol": "pop3", "tls": "starttls"},
    {"name": "pop3s", "protocol": "pop3", "tls": "implicit"},
    {"name": "smtp", "protocol": "smtp", "tls": "starttls"},
    {"name": "http", "protocol": "http", "trusted_networks": ["127.0.0.1/32"], "api_key_file": "KEY"},
]
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


@pytest.fixture
def gw(make_gateway, upstream, tmp_path):
    key = tmp_path / "key"
    key.write_text("metrics-test-key\n")
    listeners = [dict(l, api_key_file=str(key)) if l["name"] == "http" else l for l in LISTENERS]
    o = relay_overrides(upstream, auth={"max_failures_per_user": 2, "failure_delay_ms": 0})
    g = make_gateway(listeners=listeners, overrides=o)
    g.add_user("alice", "right-pw")
    return g


def scrape(g, source="127.0.0.1"):
    req = urllib.request.Request(f"http://127.0.0.1:{g.port('http')}/metrics")
    opener = urllib.request.build_opener(SourceHandler(source))
    with opener.open(req, timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        return r.read().decode()


class SourceHandler(urllib.request.HTTPHandler):
    def __init__(self, source):
        super().__init__()
        self.source = source

    def http_open(self, req):
        import http.client
        return self.do_open(lambda host, **kw: http.client.HTTPConnection(host, source_address=(self.source, 0), **kw),
                            req)


def samples(text):
    """{'name{labels}': value} of every sample line."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def delta(before, after, key):
    return after.get(key, 0) - before.get(key, 0)


def pop3_login(g, user, password, source="127.0.0.1"):
    p = SourcePOP3(g.port("pop3"), source)
    p.user(user)
    try:
        return p.pass_(password)
    except poplib.error_proto as e:
        return e.args[0]
    finally:
        p.quit()


def promtool_test_rules(tmp_path, tests):
    """`promtool test rules` of the shipped rules file with these tests
    (YAML, the list under `tests:`, each at two spaces)."""
    rules = os.path.join(ROOT, "deploy", "prometheus", "popgate-rules.yml")
    spec = tmp_path / "rules-test.yml"
    spec.write_text(f"rule_files: [{rules}]\nevaluation_interval: 1m\ntests:\n{tests.lstrip(chr(10))}")
    r = subprocess.run([PROMTOOL, "test", "rules", str(spec)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr


def promtool_check_metrics(text):
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) is needed")
def test_metrics_move_with_real_logins_relays_and_refusals(gw, upstream):
    g = gw
    first = scrape(g)
    rc, out = promtool_check_metrics(first)
    assert rc == 0, out
    before = samples(first)
    assert any(k.startswith('popgate_build_info{version="') for k in before)
    assert before['popgate_sessions_open{listener="pop3",protocol="pop3"}'] == 0
    assert before["popgate_grants_active"] == 0
    # Every series a refusal can count exists at 0 before it: rate() takes a
    # new series' first sample as its start, so a first refusal would not show.
    assert before['popgate_logins_total{protocol="smtp",mechanism="none",result="blocked"}'] == 0

    # POP3: one good login (grants 127.0.0.1), one wrong password.
    assert pop3_login(g, "alice", "right-pw").startswith(b"+OK")
    assert pop3_login(g, "alice", "wrong-pw").startswith(b"-ERR")
    # SMTP: relayed on the grant, and a RCPT from an address without one refused.
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=10) as s:
        s.ehlo("client.test")
        assert s.mail("alice@gw.test")[0] == 250
        assert s.rcpt("bob@remote.test")[0] == 250
        assert s.data(b"Subject: m\r\n\r\nbody\r\n")[0] == 250
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=10, source_address=("127.0.0.3", 0)) as s:
        s.ehlo("client.test")
        assert s.mail("x@example.org")[0] == 250
        assert s.rcpt("bob@remote.test")[0] == 554
    # A second wrong password blocks alice at 127.0.0.4; the next try is refused unchecked.
    assert pop3_login(g, "alice", "wrong-1", "127.0.0.4").startswith(b"-ERR")
    assert pop3_login(g, "alice", "wrong-2", "127.0.0.4").startswith(b"-ERR")
    assert b"Too many authentication failures" in pop3_login(g, "alice", "right-pw", "127.0.0.4")
    # TLS: a good handshake on pop3s, and garbage instead of a ClientHello.
    with socket.create_connection(("127.0.0.1", g.port("pop3s")), timeout=10) as raw:
        with client_tls_context().wrap_socket(raw, server_hostname="gw.test") as t:
            assert t.recv(100).startswith(b"+OK")
            t.sendall(b"QUIT\r\n")
            t.recv(100)
    with socket.create_connection(("127.0.0.1", g.port("pop3s")), timeout=10) as raw:
        raw.sendall(b"this is not TLS\r\n" * 4)
        try:
            raw.recv(100)
        except OSError:
            pass
    # Dovecot: a report without its X-API-Key.
    req = urllib.request.Request(f"http://127.0.0.1:{g.port('http')}/dovecot/auth-policy?command=report",
                                 data=b'{"login":"a","remote":"127.0.0.9","success":true}', method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 403
    assert g.wait_log("pop3 auth-block")
    assert g.wait_log("tls handshake failed")

    text = scrape(g)
    rc, out = promtool_check_metrics(text)
    assert rc == 0, out
    after = samples(text)
    d = lambda k: delta(before, after, k)  # noqa: E731
    assert d('popgate_logins_total{protocol="pop3",mechanism="pass",result="ok"}') == 1
    assert d('popgate_logins_total{protocol="pop3",mechanism="pass",result="fail"}') == 3
    assert d('popgate_logins_total{protocol="pop3",mechanism="pass",result="blocked"}') == 1
    assert d('popgate_logins_total{protocol="pop3",mechanism="pass",result="unavailable"}') == 0
    assert d('popgate_auth_blocks_total{scope="user"}') == 1
    assert d('popgate_auth_blocks_total{scope="address"}') == 0
    assert d('popgate_relay_decisions_total{asker="smtp",verdict="grant"}') == 1
    assert d('popgate_relay_decisions_total{asker="smtp",verdict="denied"}') == 1
    assert d('popgate_relay_decisions_total{asker="smtp",verdict="error"}') == 0
    assert d('popgate_upstream_results_total{step="rcpt",result="ok"}') == 1
    assert d('popgate_upstream_results_total{step="message",result="ok"}') == 1
    assert d('popgate_upstream_seconds_count{step="rcpt"}') == 1
    assert d('popgate_upstream_seconds_count{step="message"}') == 1
    assert d('popgate_grant_writes_total{result="committed"}') == 1
    assert d("popgate_grant_commit_seconds_count") == 1
    assert after["popgate_grants_active"] == 1
    assert d('popgate_sessions_total{listener="pop3",protocol="pop3"}') == 5
    assert d('popgate_sessions_total{listener="smtp",protocol="smtp"}') == 2
    assert d('popgate_sessions_total{listener="pop3s",protocol="pop3"}') == 2
    # this scrape's own connection is open while it is counted
    assert after['popgate_sessions_open{listener="http",protocol="http"}'] == 1
    assert after['popgate_sessions_open{listener="pop3",protocol="pop3"}'] == 0
    assert d('popgate_tls_handshakes_total{listener="pop3s",result="ok"}') == 1
    assert d('popgate_tls_handshakes_total{listener="pop3s",result="failed"}') == 1
    assert d('popgate_dovecot_reports_total{result="refused"}') == 1
    assert d('popgate_database_errors_total{kind="unavailable"}') == 0
    # histogram buckets are cumulative and end at the count
    buckets = [v for k, v in after.items() if k.startswith("popgate_grant_commit_seconds_bucket")]
    assert buckets == sorted(buckets) and buckets[-1] == after["popgate_grant_commit_seconds_count"]
    # No client value became a label: no user name, no address.
    assert "alice" not in text and "127.0.0." not in text


def guarded_gateway(make_gateway, upstream, tmp_path, **relay):
    """The metrics gateway plus a POP3 listener that does not grant and the
    [relay] guard rails given; alice exists."""
    key = tmp_path / "key"
    key.write_text("metrics-test-key\n")
    listeners = [dict(l, api_key_file=str(key)) if l["name"] == "http" else l for l in LISTENERS]
    listeners.append({"name": "reader", "protocol": "pop3", "tls": "starttls", "grant": False})
    g = make_gateway(listeners=listeners, overrides=relay_overrides(upstream, relay=relay))
    g.add_user("alice", "right-pw")
    return g


def dovecot_report(g, remote, tls):
    """A successful Dovecot POP3 login of alice at `remote`, reported with the key."""
    body = ('{"login":"alice","protocol":"pop3","remote":"%s","nologin":"no","proxy":"no","proxy_maybe":"no",'
            '"mech":"PLAIN","success":true,"tls":%s}' % (remote, "true" if tls else "false")).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{g.port('http')}/dovecot/auth-policy?command=report",
                                 data=body, method="POST",
                                 headers={"Content-Type": "application/json", "X-API-Key": "metrics-test-key"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read().decode()


def pop3s_login(g, source):
    p = SourcePOP3_SSL(g.port("pop3s"), source)
    p.user("alice")
    try:
        return p.pass_("right-pw")
    finally:
        p.quit()


WITHHELD = "popgate_grants_withheld_total"
REPLACED = "popgate_grants_replaced_total"


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) is needed")
def test_each_grant_guard_rail_is_counted(make_gateway, upstream, tmp_path):
    """Issue 15 item 4: every login a guard rail leaves without a grant is
    counted by rail and by source (popgate's POP3, Dovecot's reports), and
    so is the quota's 452; nothing else moves."""
    g = guarded_gateway(make_gateway, upstream, tmp_path, no_grant_networks=["127.0.0.64/26"],
                        grant_requires_tls=True, max_grants_per_user=1, grant_limit_action="refuse",
                        grant_max_recipients_per_hour=1)
    before = samples(scrape(g))
    # POP3: a listener with grant = false, a no-grant network, a clear login
    # (TLS required for a grant), one granting TLS login, and a second TLS
    # login of alice elsewhere (max_grants_per_user = 1, refuse).
    reader = SourcePOP3(g.port("reader"), "127.0.0.2")
    reader.user("alice")
    assert reader.pass_("right-pw").startswith(b"+OK")
    reader.quit()
    assert pop3s_login(g, "127.0.0.70").startswith(b"+OK")
    assert pop3_login(g, "alice", "right-pw", "127.0.0.3").startswith(b"+OK")
    assert pop3s_login(g, "127.0.0.4").startswith(b"+OK")
    assert pop3s_login(g, "127.0.0.5").startswith(b"+OK")
    # Dovecot reports: the same rails but the listener's.
    assert "no grant: no-grant-network" in dovecot_report(g, "127.0.0.71", tls=True)
    assert "no grant: no-tls" in dovecot_report(g, "127.0.0.6", tls=False)
    assert "no grant: max-grants-per-user" in dovecot_report(g, "127.0.0.7", tls=True)
    assert g.sql("SELECT address FROM relay_grants") == [("127.0.0.4",)]
    # The grant's recipient quota (1 per hour): the second recipient gets 452.
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=10, source_address=("127.0.0.4", 0)) as s:
        s.ehlo("client.test")
        assert s.mail("alice@gw.test")[0] == 250
        assert s.rcpt("bob@remote.test")[0] == 250
        code = s.rcpt("carol@remote.test")[0]
        if code == 250:  # the clock hour turned between the two: the count starts again
            code = s.rcpt("dave@remote.test")[0]
        assert code == 452
    text = scrape(g)
    rc, out = promtool_check_metrics(text)
    assert rc == 0, out
    after = samples(text)
    d = lambda k: delta(before, after, k)  # noqa: E731
    for source, reason, n in [("pop3", "listener", 1), ("pop3", "no_grant_networks", 1),
                              ("pop3", "grant_requires_tls", 1), ("pop3", "max_grants_per_user", 1),
                              ("dovecot", "no_grant_networks", 1), ("dovecot", "grant_requires_tls", 1),
                              ("dovecot", "max_grants_per_user", 1)]:
        assert d(f'{WITHHELD}{{source="{source}",reason="{reason}"}}') == n, (source, reason)
    assert f'{WITHHELD}{{source="dovecot",reason="listener"}}' not in after
    assert d(f'{REPLACED}{{source="pop3"}}') == 0 and d(f'{REPLACED}{{source="dovecot"}}') == 0
    assert d('popgate_relay_decisions_total{asker="smtp",verdict="quota"}') == 1
    assert d('popgate_relay_decisions_total{asker="smtp",verdict="grant"}') >= 1
    assert d('popgate_dovecot_reports_total{result="no_grant"}') == 3
    assert d('popgate_grant_writes_total{result="committed"}') == 1
    assert d('popgate_logins_total{protocol="pop3",mechanism="pass",result="ok"}') == 5


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) is needed")
def test_grants_replaced_by_replace_oldest_are_counted(make_gateway, upstream, tmp_path):
    g = guarded_gateway(make_gateway, upstream, tmp_path, max_grants_per_user=1)
    before = samples(scrape(g))
    assert pop3_login(g, "alice", "right-pw", "127.0.0.21").startswith(b"+OK")
    time.sleep(1.05)  # granted_at is in seconds: which grant is the oldest is clear
    assert pop3_login(g, "alice", "right-pw", "127.0.0.22").startswith(b"+OK")
    time.sleep(1.05)
    assert dovecot_report(g, "127.0.0.23", tls=True).endswith('"granted"}')
    assert g.sql("SELECT address FROM relay_grants") == [("127.0.0.23",)]
    text = scrape(g)
    rc, out = promtool_check_metrics(text)
    assert rc == 0, out
    after = samples(text)
    assert delta(before, after, f'{REPLACED}{{source="pop3"}}') == 1
    assert delta(before, after, f'{REPLACED}{{source="dovecot"}}') == 1
    assert all(delta(before, after, k) == 0 for k in after if k.startswith(WITHHELD))


def test_a_connection_closed_before_its_tls_hello_is_no_failed_handshake(gw):
    # HAProxy's health check of an implicit-TLS server (a PROXY LOCAL
    # header, or nothing, then a close or a reset) counted as a failed
    # handshake, and a site behind HAProxy had PopgateTlsHandshakeFailures
    # firing for good (a review's finding, with promtool).
    before = samples(scrape(gw))
    for reset in (False, True):
        s = socket.create_connection(("127.0.0.1", gw.port("pop3s")), timeout=5)
        if reset:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    s = socket.create_connection(("127.0.0.1", gw.port("pop3s")), timeout=5)
    s.sendall(b"not a hello\r\n")  # a byte that is not TLS: a failed handshake, as before
    try:
        s.recv(100)
    except OSError:
        pass
    s.close()
    assert gw.wait_log("pop3 tls handshake failed")
    assert gw.wait_log("closed before its TLS hello")
    after = samples(scrape(gw))
    assert delta(before, after, 'popgate_tls_handshakes_total{listener="pop3s",result="failed"}') == 1
    assert delta(before, after, 'popgate_tls_handshakes_total{listener="pop3s",result="ok"}') == 0


def test_metrics_refused_outside_trusted_networks_and_for_other_methods(gw):
    g = gw
    with pytest.raises(urllib.error.HTTPError) as e:
        scrape(g, source="127.0.0.2")  # trusted_networks = 127.0.0.1/32
    assert e.value.code == 403
    req = urllib.request.Request(f"http://127.0.0.1:{g.port('http')}/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 405
    assert e.value.headers["Allow"].startswith("GET")
    # curl, as a Prometheus server would ask (HEAD is answered without the body).
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-I",
                        f"http://127.0.0.1:{g.port('http')}/metrics"], capture_output=True, text=True, timeout=30)
    assert r.stdout == "200"
    # Not served on the mail listeners: a GET there is a bad POP3 command.
    with socket.create_connection(("127.0.0.1", g.port("pop3")), timeout=10) as s:
        s.recv(200)
        s.sendall(b"GET /metrics HTTP/1.1\r\n")
        assert s.recv(200).startswith(b"-ERR")


def test_database_errors_are_counted_when_the_file_goes(gw):
    g = gw
    before = samples(scrape(g))
    os.rename(g.db, str(g.db) + ".moved")
    try:
        # The login looks at the file at once (test_db_vanish.py); then every read refuses.
        assert pop3_login(g, "alice", "right-pw").startswith(b"-ERR [SYS/TEMP]")
        with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=10) as s:
            s.ehlo("client.test")
            assert s.mail("x@example.org")[0] == 250
            assert s.rcpt("bob@remote.test")[0] == 451
        text = scrape(g)  # still answered: the grant count is the last one read
    finally:
        os.rename(str(g.db) + ".moved", g.db)
    after = samples(text)
    assert delta(before, after, 'popgate_relay_decisions_total{asker="smtp",verdict="error"}') == 1
    assert delta(before, after, 'popgate_logins_total{protocol="pop3",mechanism="pass",result="unavailable"}') == 1
    assert delta(before, after, 'popgate_logins_total{protocol="pop3",mechanism="pass",result="ok"}') == 0
    # the login, the RCPT and the scrape's grant count each met the missing file
    assert delta(before, after, 'popgate_database_errors_total{kind="unavailable"}') >= 3
    assert after["popgate_grants_active"] == before["popgate_grants_active"]


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) is needed")
def test_shipped_alert_rules_pass_promtool():
    rules = sorted(glob.glob(os.path.join(ROOT, "deploy", "prometheus", "*rules*.yml")))
    assert rules, "deploy/prometheus has no rule file"
    r = subprocess.run([PROMTOOL, "check", "rules", *rules], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) is needed")
def test_refused_dovecot_reports_raise_the_alert(tmp_path):
    # promtool's own rule test: the shipped rule fires once refusals appear,
    # and stays quiet while Dovecot's reports are granted.
    promtool_test_rules(tmp_path, f"""
  - interval: 1m
    input_series:
      - series: 'popgate_dovecot_reports_total{{instance="gw1",job="popgate",result="refused"}}'
        values: '0x20 0+1x20'
      - series: 'popgate_dovecot_reports_total{{instance="gw1",job="popgate",result="granted"}}'
        values: '0+5x40'
    alert_rule_test:
      - eval_time: 15m
        alertname: PopgateDovecotReportsRefused
        exp_alerts: []
      - eval_time: 35m
        alertname: PopgateDovecotReportsRefused
        exp_alerts:
          - exp_labels: {{severity: warning, instance: gw1}}
            exp_annotations:
              summary: "popgate refuses Dovecot's login reports on gw1"
              description: "14 refused in 15 minutes: see 'http dovecot report refused' and 'reason=attributes' in popgate's log."
""")


def test_connections_turned_away_are_counted_by_listener_and_reason(make_gateway):
    # A listener refusing every client (max_sessions reached, a balancer
    # sending bad PROXY headers) looked like a quiet one: no series moved
    # (a review's finding). And a reload that turns STARTTLS on made the
    # handshake series appear at 1, not 0.
    listeners = [
        {"name": "pop3", "protocol": "pop3", "tls": "none"},
        {"name": "pop3s", "protocol": "pop3", "tls": "implicit"},
        {"name": "pop3p", "protocol": "pop3", "tls": "none", "proxy_protocol": True},
        {"name": "http", "protocol": "http", "trusted_networks": ["127.0.0.1/32"]},
    ]
    g = make_gateway(listeners=listeners, overrides={"server": {"trusted_proxies": ["127.0.0.1"]},
                                                     "limits": {"max_sessions_per_ip": 1}})
    refused = 'popgate_connections_refused_total{{listener="{}",reason="{}"}}'
    before = samples(scrape(g))
    for reason in ("max_sessions", "max_sessions_per_ip", "max_connections_per_minute", "max_slow_sessions_per_ip",
                   "max_service_sessions", "proxy_untrusted_peer", "proxy_bad_header", "proxy_header_timeout"):
        assert before[refused.format("pop3", reason)] == 0  # there before the first refusal (rate() needs it)
    assert not any(k.startswith('popgate_tls_handshakes_total{listener="pop3"') for k in before)
    held = SourcePOP3(g.port("pop3"), "127.0.0.1")
    second = socket.create_connection(("127.0.0.1", g.port("pop3")), timeout=10)
    assert second.recv(200).startswith(b"-ERR [SYS/TEMP] too many sessions from this address")
    second.close()
    held.quit()
    for source, payload in (("127.0.0.1", b"PROXY BOGUS\r\n"), ("127.0.0.2", b"")):
        s = socket.create_connection(("127.0.0.1", g.port("pop3p")), timeout=10, source_address=(source, 0))
        s.sendall(payload)
        try:
            assert s.recv(200) == b""  # closed without a byte (a reset when it left the header unread)
        except ConnectionResetError:
            pass
        s.close()
    assert g.wait_log("reason=untrusted-peer")
    after = samples(scrape(g))
    assert delta(before, after, refused.format("pop3", "max_sessions_per_ip")) == 1
    assert delta(before, after, refused.format("pop3p", "proxy_bad_header")) == 1
    assert delta(before, after, refused.format("pop3p", "proxy_untrusted_peer")) == 1
    moved = {k for k in after if k.startswith("popgate_connections_refused_total") and delta(before, after, k)}
    assert moved == {refused.format("pop3", "max_sessions_per_ip"), refused.format("pop3p", "proxy_bad_header"),
                     refused.format("pop3p", "proxy_untrusted_peer")}
    # STARTTLS turned on by a reload: the listener's handshake series read 0.
    text = g.config_file.read_text()
    g.config_file.write_text(text.replace('tls = "none"', 'tls = "starttls"', 1))
    g.reload()
    assert g.wait_log("reload done")
    reloaded = samples(scrape(g))
    for result in ("ok", "failed", "timeout"):
        assert reloaded[f'popgate_tls_handshakes_total{{listener="pop3",result="{result}"}}'] == 0
    assert not any(k.startswith('popgate_tls_handshakes_total{listener="pop3p"') for k in reloaded)
    # A listener the file adds waits for a restart, and so do its series,
    # however many reloads come.
    g.config_file.write_text(g.config_file.read_text() + '\n[[listener]]\nname = "later"\nprotocol = "pop3"\n'
                             'address = "127.0.0.1"\nport = 0\n')
    for n in (1, 2):
        g.reload()
        assert eventually(lambda: g.log().count("reload: listener later is not bound") == n)
    assert not any('listener="later"' in k for k in samples(scrape(g)))
    rc, out = promtool_check_metrics(scrape(g)) if PROMTOOL else (0, "")
    assert rc == 0, out


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) is needed")
def test_connections_refused_alert_fires_for_a_full_gateway_not_for_one_client(tmp_path):
    # promtool's rule test: max_sessions and bad PROXY headers raise it; one
    # address held to max_sessions_per_ip (the limit doing its job) does not.
    series = 'popgate_connections_refused_total{{instance="gw1",job="popgate",listener="{}",reason="{}"}}'
    promtool_test_rules(tmp_path, f"""
  - interval: 1m
    input_series:
      - series: '{series.format("smtp", "max_sessions_per_ip")}'
        values: '0+10x40'
      - series: '{series.format("smtp", "max_sessions")}'
        values: '0x20 0+3x20'
      - series: '{series.format("pop3", "proxy_bad_header")}'
        values: '0x40'
    alert_rule_test:
      - eval_time: 15m
        alertname: PopgateConnectionsRefused
        exp_alerts: []
      - eval_time: 35m
        alertname: PopgateConnectionsRefused
        exp_alerts:
          - exp_labels: {{severity: warning, instance: gw1, listener: smtp, reason: max_sessions}}
            exp_annotations:
              summary: "popgate turns connections away on listener smtp (max_sessions) on gw1"
""")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) is needed")
def test_database_errors_alert_fires_for_failures_not_for_connections_tried_again(tmp_path):
    # An administrator's pg_terminate_backend closes connections that the
    # store tries again on another (kind="lost"): clients see nothing, so it
    # must not page. A failed operation (kind="unavailable") does.
    series = 'popgate_database_errors_total{{instance="gw1",job="popgate",kind="{}"}}'
    promtool_test_rules(tmp_path, f"""
  - interval: 1m
    input_series:
      - series: '{series.format("lost")}'
        values: '0+5x40'
      - series: '{series.format("unavailable")}'
        values: '0x20 1+1x20'
    alert_rule_test:
      - eval_time: 15m
        alertname: PopgateDatabaseErrors
        exp_alerts: []
      - eval_time: 25m
        alertname: PopgateDatabaseErrors
        exp_alerts:
          - exp_labels: {{severity: critical, instance: gw1, job: popgate, kind: unavailable}}
            exp_annotations:
              summary: "popgate database errors (unavailable) on gw1"
              description: "5 failed database operations in 5 minutes."
""")


def make_cert(cert, key, days):
    cert.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-subj", "/CN=gw.test", "-keyout", str(key), "-out", str(cert), "-days", str(days)],
                   check=True, capture_output=True, timeout=60)
    end = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-enddate"], check=True,
                         capture_output=True, text=True, timeout=60).stdout.strip().split("=", 1)[1]
    return datetime.datetime.strptime(end, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=datetime.timezone.utc).timestamp()


def test_certificate_expiry_is_a_metric_and_a_warning(make_gateway, upstream):
    """An administrator's Prometheus could not see a certificate running
    out: now popgate_tls_certificate_expiry_seconds holds the notAfter of
    the certificate in service (0 for a second one not configured), a
    certificate within 14 days logs a warning at start and reload, and the
    value follows a renewal on SIGHUP."""
    listeners = [{k: v for k, v in l.items() if k != "api_key_file"} for l in LISTENERS]
    g = make_gateway(listeners=listeners, overrides=relay_overrides(upstream), start=False)
    soon = make_cert(g.cert, g.key, 5)
    g.start()
    s = samples(scrape(g))
    assert s['popgate_tls_certificate_expiry_seconds{certificate="tls.cert_file"}'] == soon
    assert s['popgate_tls_certificate_expiry_seconds{certificate="tls.second_cert_file"}'] == 0
    assert g.wait_log("tls certificate expires soon certificate=tls.cert_file days_left=5")
    later = make_cert(g.cert, g.key, 90)
    g.reload()
    assert g.wait_log("reload done")
    s = samples(scrape(g))
    assert s['popgate_tls_certificate_expiry_seconds{certificate="tls.cert_file"}'] == later
    assert g.log().count("tls certificate expires soon") == 1


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) is needed")
def test_certificate_expiry_alert_fires_within_14_days(tmp_path):
    # promtool's clock starts at 0: a notAfter 10 days out fires (after its
    # hour), 30 days out and 0 (no second certificate) do not.
    series = 'popgate_tls_certificate_expiry_seconds{{instance="gw1",job="popgate",certificate="{}"}}'
    promtool_test_rules(tmp_path, f"""
  - interval: 1m
    input_series:
      - series: '{series.format("tls.cert_file")}'
        values: '{10 * 86400}x200'
      - series: '{series.format("tls.second_cert_file")}'
        values: '0x200'
    alert_rule_test:
      - eval_time: 30m
        alertname: PopgateCertificateExpiresSoon
        exp_alerts: []
      - eval_time: 2h
        alertname: PopgateCertificateExpiresSoon
        exp_alerts:
          - exp_labels: {{severity: warning, instance: gw1, job: popgate, certificate: tls.cert_file}}
            exp_annotations:
              summary: "popgate's TLS certificate (tls.cert_file) on gw1 expires soon"
              description: "1970-01-11 00:00:00 +0000 UTC is its notAfter."
  - interval: 1m
    input_series:
      - series: '{series.format("tls.cert_file")}'
        values: '{30 * 86400}x200'
    alert_rule_test:
      - eval_time: 2h
        alertname: PopgateCertificateExpiresSoon
        exp_alerts: []
""")
