"""limits.max_bad_commands over what a client gets refused, and what the log
says of lines that do not parse, against the running daemon with raw sockets.

SMTP: every 5xx reply to MAIL or RCPT is an error of the client's (as
Postfix's smtpd_hard_error_limit): address and parameter syntax, an unknown
local user, "Relay access denied". Past the limit the reply is followed by
421 and the close, so that one connection cannot harvest user names or fill
the audit table with denied recipients. A 4xx reply (too many recipients) is
the server's condition, not the client's error, and accepted recipients are
progress: neither counts.

POP3: a login mechanism the listener refuses (AUTH with a mechanism not
offered, APOP when it is off, USER/PASS and AUTH PLAIN where plaintext is not
allowed) counts, so that a session cannot go on asking for ever; the count-th
gets "-ERR too many errors" and the close.

Logs: a line that does not parse may be a password (a client's TAB, a bare
LF, the client's next line after an AUTH exchange failed on bad base64). The
debug log names its keyword and length, never its text."""
import re

import pytest

from popgate_test import make_gateway, upstream  # noqa: F401  (fixtures)
from smtp_support import relay_overrides

from raw_client import Client, raw_clients_closed  # noqa: E402,F401  (autouse fixture)

LIMIT = 3
TOO_MANY_421 = b"421 4.7.0 gw.test Error: too many errors\r\n"
POP3_TOO_MANY = b"-ERR too many errors\r\n"
PLAINTEXT_REFUSED = b"-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n"
RCPT_OK = b"250 2.1.5 Ok\r\n"




def limited(**more):
    """Overrides with max_bad_commands = LIMIT and `more` in [limits]."""
    return {"limits": {"max_bad_commands": LIMIT, **more}}


def smtp_in_mail(g):
    """An SMTP session past EHLO and MAIL FROM."""
    c = Client(g.port("smtp"))
    assert c.smtp(b"EHLO client.test\r\n").startswith(b"250-gw.test\r\n")
    assert c.smtp(b"MAIL FROM:<a@b.test>\r\n") == b"250 2.1.0 Ok\r\n"
    return c


def grant(g, address="127.0.0.1", ttl=600):
    g.sql("INSERT INTO relay_grants(address, expires_at) VALUES(?, unixepoch()+?)", (address, ttl))


def unknown_user(i):
    return (b"RCPT TO:<nobody%d@gw.test>\r\n" % i,
            b"550 5.1.1 <nobody%d@gw.test>: Recipient address rejected: User unknown\r\n" % i)


def relay_denied(i):
    return (b"RCPT TO:<x%d@remote.test>\r\n" % i, b"554 5.7.1 <x%d@remote.test>: Relay access denied\r\n" % i)


def bad_rcpt_syntax(i):
    return (b"RCPT TO:<x%d@remote.test\r\n" % i, b"501 5.1.3 Bad recipient address syntax\r\n")


def assert_closed_after_421(g, c, last_reply, count=LIMIT + 1):
    """The error past the limit was answered with `last_reply`, then 421 and the close."""
    assert last_reply.startswith(b"5"), last_reply
    assert c.rest_until_close(timeout=3) == (TOO_MANY_421, True)
    assert g.wait_log(f"smtp too many errors ip=127.0.0.1 count={count}")
    assert g.wait_log("smtp end reason=too-many-errors")


def refuse_past_limit(g, c, refusal):
    """LIMIT refusals answered as ever; the next one's reply, then 421 and the close."""
    for i in range(LIMIT + 1):
        line, want = refusal(i)
        assert c.smtp(line) == want, i
    assert_closed_after_421(g, c, want)


def assert_pop3_closed(c):
    assert c.rest_until_close() == (b"", True)


# -- SMTP: 5xx replies to MAIL and RCPT count -------------------------------------

def test_smtp_mail_and_rcpt_syntax_errors_count(make_gateway):
    g = make_gateway(overrides=limited())
    c = Client(g.port("smtp"))
    assert c.smtp(b"EHLO client.test\r\n").startswith(b"250-gw.test\r\n")
    assert c.smtp(b"MAIL FROM:bad\r\n") == b"501 5.1.7 Bad sender address syntax\r\n"
    assert c.smtp(b"MAIL FROM:<a@b.test> FOO=1\r\n") == b"555 5.5.4 Unsupported option: FOO\r\n"
    assert c.smtp(b"MAIL FROM:<a@b.test>\r\n") == b"250 2.1.0 Ok\r\n"
    assert c.smtp(b"RCPT TO:<x@remote.test\r\n") == b"501 5.1.3 Bad recipient address syntax\r\n"
    # the fourth: answered as ever, then the 421
    last = c.smtp(b"RCPT TO:<x@remote.test> SIZE=1\r\n")
    assert last == b"555 5.5.4 Unsupported option: SIZE\r\n"
    assert_closed_after_421(g, c, last)


@pytest.mark.parametrize("refusal", [unknown_user, relay_denied], ids=["unknown-user", "relay-denied"])
def test_smtp_refused_recipients_count(make_gateway, refusal):
    g = make_gateway(overrides=limited())
    g.add_user("alice", "pw-alice")
    c = smtp_in_mail(g)
    refuse_past_limit(g, c, refusal)


def test_smtp_errors_of_every_kind_add_up_across_transactions(make_gateway):
    g = make_gateway(overrides=limited())
    g.add_user("alice", "pw-alice")
    c = smtp_in_mail(g)
    line, want = unknown_user(1)
    assert c.smtp(line) == want
    assert c.smtp(b"RSET\r\n") == b"250 2.0.0 Ok\r\n"   # the count is the session's, not the transaction's
    assert c.smtp(b"MAIL FROM:<a@b.test> FOO=1\r\n") == b"555 5.5.4 Unsupported option: FOO\r\n"
    assert c.smtp(b"MAIL FROM:<a@b.test>\r\n") == b"250 2.1.0 Ok\r\n"
    line, want = relay_denied(1)
    assert c.smtp(line) == want
    assert c.smtp(b"RCPT TO:<alice@gw.test>\r\n") == RCPT_OK
    line, want = bad_rcpt_syntax(1)
    last = c.smtp(line)
    assert last == want
    assert_closed_after_421(g, c, last)


def test_smtp_a_delivered_message_starts_the_count_again(make_gateway):
    # Errors count "without delivering mail": a client sending its Outbox on
    # one connection, a few refused recipients in each message, keeps it.
    g = make_gateway(overrides=limited())
    g.add_user("alice", "pw-alice")
    c = smtp_in_mail(g)
    for message in range(3):
        for i in range(LIMIT):
            line, want = unknown_user(10 * message + i)
            assert c.smtp(line) == want, (message, i)
        assert c.smtp(b"RCPT TO:<alice@gw.test>\r\n") == RCPT_OK
        assert c.smtp(b"DATA\r\n").startswith(b"354 ")
        assert c.smtp(b"Subject: outbox\r\n\r\nbody\r\n.\r\n").startswith(b"250 2.0.0 Ok: queued as ")
        assert c.smtp(b"MAIL FROM:<a@b.test>\r\n") == b"250 2.1.0 Ok\r\n"
    assert len(g.messages("alice")) == 3
    # without a delivery in between the limit still holds
    refuse_past_limit(g, c, unknown_user)


def test_smtp_upstream_refusals_are_passed_on_and_not_counted(make_gateway, upstream):
    # A stale address in a large mailing is the upstream's refusal: the
    # client gets it for that recipient, and its session goes on.
    upstream.rcpt_replies = {f"gone{i}@remote.test": "550 5.1.1 no such user here" for i in range(3 * LIMIT)}
    g = make_gateway(overrides={**relay_overrides(upstream), **limited()})
    grant(g)
    c = smtp_in_mail(g)
    for i in range(3 * LIMIT):
        assert c.smtp(b"RCPT TO:<gone%d@remote.test>\r\n" % i).startswith(b"550 5.1.1 "), i
    assert c.smtp(b"RCPT TO:<x@remote.test>\r\n") == RCPT_OK
    assert c.smtp(b"DATA\r\n").startswith(b"354 ")
    assert c.smtp(b"Subject: list\r\n\r\nbody\r\n.\r\n").startswith(b"250 ")
    assert "too many errors" not in g.log()


def test_smtp_4xx_replies_do_not_count(make_gateway):
    g = make_gateway(overrides=limited())
    g.add_user("alice", "pw-alice")
    grant(g)
    c = smtp_in_mail(g)
    # limits.max_recipients (at least 100) accepted, pipelined
    c.send(b"".join(b"RCPT TO:<r%d@remote.test>\r\n" % i for i in range(100)))
    for i in range(100):
        assert c.reply() == RCPT_OK, i
    # far more 452s than the limit: the session stays open
    for i in range(3 * LIMIT):
        assert c.smtp(b"RCPT TO:<alice@gw.test>\r\n") == b"452 4.5.3 Error: too many recipients\r\n", i
    assert c.smtp(b"NOOP\r\n") == b"250 2.0.0 Ok\r\n"
    assert "too many errors" not in g.log()
    # and the 5xx errors are still counted from zero: LIMIT answered, the next one closes
    assert c.smtp(b"RSET\r\n") == b"250 2.0.0 Ok\r\n"
    assert c.smtp(b"MAIL FROM:<a@b.test>\r\n") == b"250 2.1.0 Ok\r\n"
    refuse_past_limit(g, c, unknown_user)


def test_smtp_accepted_recipients_do_not_count(make_gateway):
    g = make_gateway(overrides=limited())
    g.add_user("alice", "pw-alice")
    grant(g)
    c = smtp_in_mail(g)
    for i in range(LIMIT):
        assert c.smtp(b"RCPT TO:<r%d@remote.test>\r\n" % i) == RCPT_OK, i   # relayed on the grant
    assert c.smtp(b"RCPT TO:<alice@gw.test>\r\n") == RCPT_OK
    refuse_past_limit(g, c, bad_rcpt_syntax)


# -- POP3: refused login mechanisms count --------------------------------------------

NO_PLAINTEXT = {"auth": {"plaintext": "tls-only", "loopback_is_secure": False}}


@pytest.mark.parametrize("overrides,line,want", [
    ({}, b"AUTH FOO\r\n", b"-ERR Unsupported authentication mechanism\r\n"),
    ({"auth": {"apop": False}}, b"APOP alice " + b"0" * 32 + b"\r\n",
     b"-ERR [AUTH] APOP is not available on this server\r\n"),
    (NO_PLAINTEXT, b"USER alice\r\n", PLAINTEXT_REFUSED),
    (NO_PLAINTEXT, b"AUTH PLAIN\r\n", PLAINTEXT_REFUSED),
], ids=["auth-unsupported", "apop-off", "user-no-plaintext", "auth-plain-no-plaintext"])
def test_pop3_refused_login_mechanisms_count(make_gateway, overrides, line, want):
    g = make_gateway(overrides={**overrides, **limited()})
    g.add_user("alice", "pw-alice")
    c = Client(g.port("pop3"))
    for i in range(LIMIT - 1):
        assert c.cmd(line) == want, i
    assert c.cmd(line) == POP3_TOO_MANY
    assert_pop3_closed(c)
    assert g.wait_log(f"pop3 too-many-errors ip=127.0.0.1 count={LIMIT}")
    assert g.wait_log("pop3 end reason=too-many-errors")


def test_pop3_user_and_pass_without_plaintext_count(make_gateway):
    g = make_gateway(overrides={**NO_PLAINTEXT, **limited()})
    g.add_user("alice", "pw-alice")
    c = Client(g.port("pop3"))
    assert c.cmd(b"USER alice\r\n") == PLAINTEXT_REFUSED
    assert c.cmd(b"PASS pw-alice\r\n").startswith(b"-ERR ")
    assert c.cmd(b"USER alice\r\n") == POP3_TOO_MANY
    assert_pop3_closed(c)
    assert "pw-alice" not in g.log()


# -- logs: an unparsable line is described, never written ----------------------------

def log_after_quit(g, c, proto):
    """QUIT on `c`, answered; the daemon's log once the session's end is in it."""
    if proto == "pop3":
        assert c.cmd(b"QUIT\r\n").startswith(b"+OK")
    else:
        assert c.smtp(b"QUIT\r\n") == b"221 2.0.0 Bye\r\n"
    assert g.wait_log(f"{proto} end reason=quit")
    return g.log()


def shape_logged(log, proto, keyword, length=None):
    """Whether a line of `proto` in `log` names the bad line's keyword (None:
any, e.g. "-" for none known) and length (None: any)."""
    kw = re.escape(keyword) if keyword is not None else r"\S+"
    want = rf"keyword={kw} length={length if length is not None else '[0-9]+'}\b"
    return any(re.search(want, l) for l in log.splitlines() if f" {proto} " in f" {l} ")


def test_pop3_unparsable_pass_line_is_not_logged(make_gateway):
    g = make_gateway()
    g.add_user("alice", "pw-alice")
    c = Client(g.port("pop3"))
    assert c.cmd(b"USER alice\r\n") == b"+OK\r\n"
    assert c.cmd(b"PASS\tsecretword1\r\n").startswith(b"-ERR ")
    log = log_after_quit(g, c, "pop3")
    assert "secretword1" not in log
    assert shape_logged(log, "pop3", "PASS", len(b"PASS\tsecretword1")), log[-3000:]


def test_smtp_unparsable_and_bare_lf_auth_lines_are_not_logged(make_gateway):
    g = make_gateway()
    c = Client(g.port("smtp"))
    assert c.smtp(b"EHLO client.test\r\n").startswith(b"250-gw.test\r\n")
    assert c.smtp(b"AUTH\tPLAIN c2VjcmV0d29yZDI=\r\n").startswith(b"5")
    assert c.smtp(b"AUTH PLAIN AHVzZXIAc2VjcmV0d29yZDM=\n") == b"500 5.5.2 Error: bare <LF> received\r\n"
    log = log_after_quit(g, c, "smtp")
    assert "c2VjcmV0d29yZDI" not in log
    assert "AHVzZXIAc2VjcmV0d29yZDM" not in log
    assert "smtp bare-lf ip=127.0.0.1" in log
    described = [l for l in log.splitlines() if "keyword=AUTH length=" in l and " smtp " in f" {l} "]
    assert len(described) >= 2, log[-3000:]   # the TAB line and the bare-LF line


def test_pop3_password_after_failed_auth_login_is_not_logged(make_gateway):
    g = make_gateway()
    g.add_user("alice", "pw-alice")
    c = Client(g.port("pop3"))
    assert c.cmd(b"AUTH LOGIN\r\n") == b"+ VXNlcm5hbWU6\r\n"
    assert c.cmd(b"YWxpY2U\r\n") == b"-ERR Invalid base64 data\r\n"
    # the client, out of step, sends its password as a command line
    assert c.cmd(b"c2VjcmV0d29yZDQ=\r\n").startswith(b"-ERR ")
    log = log_after_quit(g, c, "pop3")
    assert "c2VjcmV0d29yZDQ" not in log
    assert shape_logged(log, "pop3", None, len(b"c2VjcmV0d29yZDQ=")), log[-3000:]


def test_smtp_password_after_failed_auth_login_is_not_logged(make_gateway):
    g = make_gateway()
    c = Client(g.port("smtp"))
    assert c.smtp(b"EHLO client.test\r\n").startswith(b"250-gw.test\r\n")
    assert c.smtp(b"AUTH LOGIN\r\n") == b"334 VXNlcm5hbWU6\r\n"
    assert c.smtp(b"YWxpY2U\r\n") == b"501 5.5.2 Cannot decode response\r\n"
    assert c.smtp(b"c2VjcmV0d29yZDU=\r\n").startswith(b"5")
    log = log_after_quit(g, c, "smtp")
    assert "c2VjcmV0d29yZDU" not in log
    assert shape_logged(log, "smtp", None, len(b"c2VjcmV0d29yZDU=")), log[-3000:]


# -- Logins that never end: no progress ------------------------------------------

@pytest.mark.parametrize("protocol", ["pop3", "smtp"])
def test_auth_cancelled_over_and_over_ends_the_session(make_gateway, protocol):
    """AUTH then "*" (a cancel, RFC 4954 §4 / RFC 5034 §4), over and over,
    and on POP3 USER over and over: each got its answer and a fresh
    challenge for ever, and the session held its slot (a reviewer ran 300
    rounds). They are now no progress, as NOOP is: past
    limits.max_junk_commands the session ends."""
    g = make_gateway(overrides={"limits": {"max_junk_commands": 4}, "auth": {"cram_md5": True}})
    if protocol == "pop3":
        c = Client(g.port("pop3"))
        for _ in range(2):
            assert c.cmd(b"USER someone\r\n") == b"+OK\r\n"
        for _ in range(2):
            assert c.cmd(b"AUTH CRAM-MD5\r\n").startswith(b"+ ")
            assert c.cmd(b"*\r\n") == b"-ERR Authentication cancelled\r\n"
        assert c.cmd(b"AUTH CRAM-MD5\r\n") == b"-ERR [SYS/TEMP] Too many commands without progress\r\n"
        assert c.rest_until_close() == (b"", True)
        assert g.wait_log("pop3 too many commands without progress ip=127.0.0.1 count=5")
    else:
        c = Client(g.port("smtp"))
        assert c.smtp(b"EHLO client.test\r\n").startswith(b"250-gw.test\r\n")
        for _ in range(4):
            assert c.smtp(b"AUTH CRAM-MD5\r\n").startswith(b"334 ")
            assert c.smtp(b"*\r\n") == b"501 5.7.0 Authentication cancelled\r\n"
        reply = c.smtp(b"AUTH CRAM-MD5\r\n")
        assert reply.startswith(b"421 4.7.0 gw.test Error: too many commands without progress"), reply
        assert g.wait_log("smtp end reason=too-many-junk-commands")
