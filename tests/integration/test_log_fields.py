"""No client can forge a field of a log line (issue 15, item 2). Hostile
user names and addresses are sent by real clients (poplib, smtplib) to the
running daemon; the lines it wrote are then read the way a fail2ban filter
or a log shipper reads them: every `ip=` found is the true client address."""
import base64
import poplib
import re
import smtplib

import pytest

from popgate_test import make_gateway  # noqa: F401  (fixture)

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
