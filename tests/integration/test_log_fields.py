"""No client can forge a field of a log line (issue 15, item 2). Hostile
user names and addresses are sent by real clients (poplib, smtplib) to the
running daemon; the lines it wrote are then read the way a fail2ban filter
or a log shipper reads them: every `ip=` found is the true client address."""
import base64
import poplib
import re
import smtplib

import pytest

from popgate_test import make_gateway, upstream  # noqa: F401  (fixtures)

FORGED = "192.0.2.66"
HOSTILE = [
    f"evil ip={FORGED} result=ok",
    f'evil" ip={FORGED} result="ok',
    f"x\\\" ip={FORGED}",
    f"ip={FORGED}",
    f"tab\tip={FORGED}",
]
# The filter an administrator would write without thinking of quotes.
NAIVE_IP = re.compile(r"(?:^| )ip=(\S+)")


def ips_in(lines):
    return [m.group(1) for l in lines for m in NAIVE_IP.finditer(l)]


def test_hostile_names_do_not_forge_the_address(make_gateway):
    # Names with spaces or control characters (no user can have them) are
    # all counted as one name: its per-name limit is raised out of the way.
    g = make_gateway(overrides={"auth": {"failure_delay_ms": 0, "failure_delay_max_ms": 0,
                                         "max_failures_per_ip": 1000, "max_failures_per_user": 1000}})
    g.add_user("alice", "right-pw")
    for name in HOSTILE:
        p = poplib.POP3("127.0.0.1", g.port("pop3"), timeout=10)
        p.user(name)
        with pytest.raises(poplib.error_proto):
            p.pass_("wrong")
        p.quit()
        s = smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=10)
        s.ehlo("client.test")
        plain = base64.b64encode(b"\0" + name.encode() + b"\0wrong").decode()
        code, _ = s.docmd("AUTH", "PLAIN " + plain)
        assert code == 535
        # A hostile envelope address is logged too (quoted inside its field).
        code, _ = s.docmd("MAIL", f'FROM:<"a ip={FORGED}"@x.test>')
        assert code == 250
        code, _ = s.docmd("RCPT", f'TO:<"b ip={FORGED}"@elsewhere.test>')
        assert code == 554
        s.quit()
    g.wait_log("smtp rcpt")
    lines = [l for l in g.log().splitlines() if " sid=" in l]
    failures = [l for l in lines if "result=fail" in l]
    # One POP3 and one SMTP failure per name, each with the true address and only that.
    assert len(failures) == 2 * len(HOSTILE), failures
    assert set(ips_in(lines)) == {"127.0.0.1"}, [l for l in lines if FORGED in l]
    # The names are there, quoted and escaped, not dropped.
    assert any('user="evil ip\\x3d192.0.2.66 result\\x3dok"' in l for l in failures), failures
    assert not any("\t" in l for l in lines)


def fields(line):
    """key=value fields of a line as a strict parser reads them: a value is
    a bare word or a double-quoted string with backslash escapes."""
    return dict(re.findall(r'(?:^| )([a-z_]+)=("(?:[^"\\]|\\.)*"|[^ "]*)(?= |$)', line))


@pytest.mark.parametrize("reply, line_start, expect", [
    ("250 2.0.0 queued as Q1 ip=192.0.2.66 result=refused", "smtp relayed ",
     {"upstream_reply": "250", "upstream_status": "2.0.0", "result": "ok", "tls": "no",
      "upstream_detail": '"queued as Q1 ip\\x3d192.0.2.66 result\\x3drefused"'}),
    ("554 5.7.1 content refused ip=192.0.2.66 result=ok", "smtp upstream refused ",
     {"stage": "end-of-data", "upstream_reply": "554", "upstream_status": "5.7.1", "result": "refused", "tls": "no",
      "upstream_detail": '"content refused ip\\x3d192.0.2.66 result\\x3dok"'}),
    ("421 4.3.2 closing ip=192.0.2.66", "smtp upstream refused ",
     {"stage": "end-of-data", "upstream_reply": "451", "upstream_status": "4.4.1", "result": "refused", "tls": "no",
      "upstream_detail": '"end of data: 421 closing ip\\x3d192.0.2.66"'}),
], ids=["relayed", "refused", "gone"])
def test_the_upstreams_verdict_on_a_message_is_logged_as_fields(make_gateway, upstream, reply, line_start, expect):
    # The lines after the end of data spoke in bare words ("end of data
    # reply=250 text=..."); they now carry the RCPT line's fields, and what
    # the upstream said is quoted: it cannot forge one.
    upstream.data_reply = reply
    g = make_gateway(overrides={"relay": {"upstream_host": "127.0.0.1", "upstream_port": upstream.port,
                                          "upstream_starttls": "none"}})
    g.sql("INSERT INTO relay_grants(address, expires_at) VALUES('127.0.0.1', unixepoch()+600)")
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=15) as s:
        s.ehlo("client.test")
        code, _ = s.docmd("MAIL", "FROM:<a@example.org>")
        assert code == 250
        assert s.docmd("RCPT", "TO:<x@remote.test>")[0] == 250
        code, _ = s.data(b"Subject: fields\r\n\r\nbody\r\n")
    assert code == int(expect["upstream_reply"])
    assert g.wait_log(line_start)
    line = next(l for l in g.log().splitlines() if line_start in l)
    got = fields(line)
    assert got["ip"] == "127.0.0.1" and got["id"], line
    assert {k: got.get(k) for k in expect} == expect, line
    if line_start == "smtp relayed ":
        assert got["upstream"] == f"127.0.0.1:{upstream.port}", line
    lines = [l for l in g.log().splitlines() if " sid=" in l]
    assert set(ips_in(lines)) == {"127.0.0.1"}, lines
