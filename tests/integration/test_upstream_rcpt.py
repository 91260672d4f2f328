"""Issue 13 item 3 against the running daemon: per-recipient answers from the
upstream (legacy) MTA. The upstream transaction opens at the first relayed
RCPT (MAIL FROM, then that RCPT); each upstream RCPT verdict is that RCPT's
reply to the client, so one recipient the upstream refuses no longer fails
the message for the others. The upstream is the aiosmtpd capture server of
tests/support/popgate_test.py (per-address RCPT replies, RSETs and RCPTs
recorded, connections numbered from 1); the clients are smtplib, swaks and
raw sockets for exact pipelined bytes."""
import os
import shutil
import smtplib
import socket
import subprocess
import time

import pytest

from popgate_test import CaptureUpstream, free_port, make_gateway, upstream  # noqa: F401
from smtp_support import relay_overrides, strip_received

GOOD = "good@remote.test"
GOOD2 = "good2@remote.test"
BAD = "bad@remote.test"
BUSY = "busy@remote.test"
SENDER = "a@example.org"
BODY = (f"From: {SENDER}\r\nTo: {GOOD}\r\nSubject: per-recipient\r\n"
        "Message-ID: <per-rcpt@example.org>\r\n\r\nfor the good one only\r\n").encode()
REFUSALS = {BAD: "550 5.1.1 <bad@remote.test>: Recipient address rejected: User unknown",
            BUSY: "450 4.2.1 <busy@remote.test>: mailbox busy, try later"}
BAD_REPLY = (550, b"5.1.1 <bad@remote.test>: Error: upstream refused: "
                  b"<bad@remote.test>: Recipient address rejected: User unknown")
BUSY_REPLY = (450, b"4.2.1 <busy@remote.test>: Error: upstream refused: "
                   b"<busy@remote.test>: mailbox busy, try later")


def grant(g, address="127.0.0.1", ttl=600):
    g.sql("INSERT INTO relay_grants(address, expires_at) VALUES(?, unixepoch()+?)", (address, ttl))


def gateway(make_gateway, up, reuse_time=30, **sections):
    o = relay_overrides(up, **sections)
    o["relay"]["upstream_reuse_time"] = reuse_time
    g = make_gateway(overrides=o)
    grant(g)
    return g


def messages(up):
    with up.lock:
        return [(m["conn"], m["mail_from"], m["rcpt_tos"], m["data"]) for m in up.messages]


def begin(s, *rcpts):
    """EHLO, MAIL and RCPTs each taken (250) in smtplib session `s`."""
    s.ehlo("client.test")
    assert s.mail(SENDER)[0] == 250
    for r in rcpts:
        assert s.rcpt(r)[0] == 250


class Raw:
    """Exact bytes in, one reply (all its lines) out."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.f = self.s.makefile("rb")
        assert self.reply().startswith(b"220 ")

    def reply(self):
        out = b""
        while True:
            line = self.f.readline()
            assert line, "connection closed"
            out += line
            if line[3:4] != b"-":
                return out

    def cmd(self, data):
        self.s.sendall(data)
        return self.reply()

    def close(self):
        self.f.close()
        self.s.close()


# ------------------------------------------------------------------ refusals per recipient


def test_smtplib_one_refused_550_one_450_the_good_one_delivered_once(make_gateway, upstream):
    g = gateway(make_gateway, upstream)
    upstream.rcpt_replies = dict(REFUSALS)
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        refused = s.sendmail(SENDER, [GOOD, BAD, BUSY], BODY)
        # the end of data came back 250 for the good one (sendmail raises otherwise)
    assert refused == {BAD: BAD_REPLY, BUSY: BUSY_REPLY}
    msgs = messages(upstream)
    assert [(c, f, r) for c, f, r, _ in msgs] == [(1, SENDER, [GOOD])]
    assert strip_received(msgs[0][3]) == BODY
    # each recipient was asked upstream exactly once, on the one connection
    assert upstream.rcpts == [(1, GOOD), (1, BAD), (1, BUSY)]
    assert g.wait_log("decision=grant detail=grant_user=- grant=127.0.0.1 upstream_reply=550 "
                      "upstream_status=5.1.1 result=refused upstream_detail=\"<bad@remote.test>: Recipient")
    assert g.wait_log("upstream_reply=450 upstream_status=4.2.1 result=refused")
    assert g.wait_log("smtp message id=")
    assert "result=ok reply=250" in g.log()


def test_swaks_sees_each_upstream_verdict_and_the_good_one_is_delivered_once(make_gateway, upstream):
    g = gateway(make_gateway, upstream)
    upstream.rcpt_replies = dict(REFUSALS)
    r = subprocess.run(["swaks", "--server", f"127.0.0.1:{g.port('smtp')}", "--from", SENDER,
                        "--to", f"{BAD},{GOOD},{BUSY}", "--h-Subject", "per-recipient",
                        "--body", "from swaks"],
                       capture_output=True, text=True, timeout=60)
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    assert "<** 550 5.1.1 <bad@remote.test>: Error: upstream refused: <bad@remote.test>: " \
           "Recipient address rejected: User unknown" in out, out
    assert "<** 450 4.2.1 <busy@remote.test>: Error: upstream refused: <busy@remote.test>: " \
           "mailbox busy, try later" in out, out
    assert " -> RCPT TO:<good@remote.test>\n<-  250 2.1.5 Ok" in out, out
    assert "<-  250 2.0.0 Ok: queued as " in out, out
    msgs = messages(upstream)
    assert [(f, rc) for _, f, rc, _ in msgs] == [(SENDER, [GOOD])]
    assert b"from swaks" in msgs[0][3]
    assert sorted(a for _, a in upstream.rcpts) == sorted([BAD, GOOD, BUSY])


def test_pipelined_group_replies_in_order(make_gateway, upstream):
    g = gateway(make_gateway, upstream)
    upstream.rcpt_replies = dict(REFUSALS)
    c = Raw(g.port("smtp"))
    assert b"PIPELINING" in c.cmd(b"EHLO client.test\r\n")
    c.s.sendall(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{GOOD}>\r\nRCPT TO:<{BAD}>\r\nRCPT TO:<{BUSY}>\r\n"
                f"RCPT TO:<{GOOD2}>\r\nRCPT TO:<{GOOD}>\r\nDATA\r\n".encode())
    replies = [c.reply() for _ in range(7)]
    assert replies == [b"250 2.1.0 Ok\r\n", b"250 2.1.5 Ok\r\n",
                       b"%d %s\r\n" % BAD_REPLY, b"%d %s\r\n" % BUSY_REPLY,
                       b"250 2.1.5 Ok\r\n", b"250 2.1.5 Ok\r\n",
                       b"354 End data with <CR><LF>.<CR><LF>\r\n"]
    assert c.cmd(BODY + b".\r\n").startswith(b"250 2.0.0 Ok: queued as ")
    assert c.cmd(b"QUIT\r\n").startswith(b"221 ")
    c.close()
    assert [(f, r) for _, f, r, _ in messages(upstream)] == [(SENDER, [GOOD, GOOD2])]
    # the repeated GOOD was not sent upstream twice
    assert [a for _, a in upstream.rcpts] == [GOOD, BAD, BUSY, GOOD2]


def test_all_refused_upstream_data_gets_554_and_nothing_is_delivered(make_gateway, upstream):
    g = gateway(make_gateway, upstream)
    upstream.rcpt_replies = dict(REFUSALS)
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
            s.sendmail(SENDER, [BAD, BUSY], BODY)
        assert e.value.recipients == {BAD: BAD_REPLY, BUSY: BUSY_REPLY}
        # DATA itself, as a client that sends it anyway (RFC 5321 §3.3)
        assert s.mail(SENDER)[0] == 250
        assert s.rcpt(BAD) == BAD_REPLY
        assert s.docmd("DATA") == (554, b"5.5.1 Error: no valid recipients")
        assert s.rset()[0] == 250
        assert s.noop()[0] == 250
    assert messages(upstream) == []
    # both transactions were reset upstream (smtplib RSETs after the refusal, then ours)
    assert upstream.wait_for(lambda: len(upstream.rsets) == 2), upstream.rsets


def test_upstream_refusing_mail_refuses_every_relayed_recipient(make_gateway, upstream):
    g = gateway(make_gateway, upstream)
    g.add_user("alice", "pw")
    upstream.mail_reply = "553 5.7.1 <a@example.org>: Sender address rejected"
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        refused = s.sendmail(SENDER, [GOOD, "alice@gw.test", GOOD2], BODY)
    text = b"5.7.1 <%s>: Error: upstream refused: <a@example.org>: Sender address rejected"
    assert refused == {GOOD: (553, text % GOOD.encode()), GOOD2: (553, text % GOOD2.encode())}
    assert messages(upstream) == []
    assert upstream.rcpts == []  # MAIL refused: no RCPT followed, not even for the second one
    assert [strip_received(m) for m in g.messages("alice")] == [BODY.replace(b"\r\n", b"\n")]


def test_mixed_local_and_refused_relay_recipient(make_gateway, upstream):
    g = gateway(make_gateway, upstream)
    g.add_user("alice", "pw")
    upstream.rcpt_replies = dict(REFUSALS)
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        refused = s.sendmail(SENDER, [BAD, "alice@gw.test", GOOD], BODY)
    assert refused == {BAD: BAD_REPLY}
    assert [(f, r) for _, f, r, _ in messages(upstream)] == [(SENDER, [GOOD])]
    assert [strip_received(m) for m in g.messages("alice")] == [BODY.replace(b"\r\n", b"\n")]


# ------------------------------------------------------------------ PIPELINING upstream (RFC 2920)


def test_pipelining_upstream_gets_the_first_rcpt_with_mail_and_each_verdict_still_counts(make_gateway, upstream):
    upstream.pipelining = True
    upstream.rcpt_replies = dict(REFUSALS)
    g = gateway(make_gateway, upstream)
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        assert s.sendmail(SENDER, [BAD, GOOD], BODY) == {BAD: BAD_REPLY}  # the pipelined one refused
        assert s.sendmail(SENDER, [GOOD2, BUSY], BODY) == {BUSY: BUSY_REPLY}  # the second one refused
    assert upstream.mail_with_rcpt == [True, True]
    assert [(cn, r) for cn, _, r, _ in messages(upstream)] == [(1, [GOOD]), (1, [GOOD2])]
    assert len(upstream.connections) == 1


def test_pipelining_upstream_refusing_mail_takes_no_recipient_and_the_next_message_goes(make_gateway, upstream):
    upstream.pipelining = True
    upstream.mail_reply = "553 5.7.1 <a@example.org>: Sender address rejected"
    g = gateway(make_gateway, upstream)
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            s.sendmail(SENDER, [GOOD], BODY)
        assert refused.value.recipients[GOOD][0] == 553
        upstream.mail_reply = None
        assert s.sendmail(SENDER, [GOOD2], BODY) == {}
    assert upstream.mail_with_rcpt == [True, True]
    assert upstream.rcpts == [(2, GOOD2)]  # the RCPT behind the refused MAIL was never taken
    assert [(cn, r) for cn, _, r, _ in messages(upstream)] == [(2, [GOOD2])]


def test_upstream_without_pipelining_gets_mail_alone(make_gateway, upstream):
    g = gateway(make_gateway, upstream)
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        assert s.sendmail(SENDER, [GOOD], BODY) == {}
    assert upstream.mail_with_rcpt == [False]
    assert [(cn, r) for cn, _, r, _ in messages(upstream)] == [(1, [GOOD])]


# ------------------------------------------------------------------ upstream unavailable


def test_upstream_down_at_rcpt_gives_451_and_nothing_is_delivered(make_gateway):
    port = free_port()  # nothing listens there: the upstream is down
    g = make_gateway(overrides={"relay": {"upstream_host": "127.0.0.1", "upstream_port": port,
                                          "upstream_starttls": "none"}})
    g.add_user("alice", "pw")
    grant(g)
    unavailable = b"4.4.1 <%s>: Error: upstream mail server unavailable, try again later"
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        s.ehlo("client.test")
        assert s.mail(SENDER)[0] == 250
        assert s.rcpt(GOOD) == (451, unavailable % GOOD.encode())
        assert s.rcpt(GOOD2) == (451, unavailable % GOOD2.encode())
        assert s.docmd("DATA") == (554, b"5.5.1 Error: no valid recipients")
        assert s.rset()[0] == 250
        # a local recipient beside it is delivered; the relayed one is the client's to retry
        refused = s.sendmail(SENDER, ["alice@gw.test", GOOD], BODY)
    assert refused == {GOOD: (451, unavailable % GOOD.encode())}
    assert g.dropped() == []
    assert [strip_received(m) for m in g.messages("alice")] == [BODY.replace(b"\r\n", b"\n")]
    assert g.wait_log(f"upstream_reply=451 upstream_status=4.4.1 result=refused upstream_detail=\"connect "
                      f"127.0.0.1:{port} failed: ")


def test_silent_upstream_times_out_at_rcpt_and_the_session_goes_on(make_gateway):
    # Accepts the TCP connection (the kernel does, from the backlog) and never
    # greets: relay.upstream_timeout bounds the wait, not the client's watchdog.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        g = make_gateway(overrides={"relay": {"upstream_host": "127.0.0.1",
                                              "upstream_port": silent.getsockname()[1],
                                              "upstream_starttls": "none", "upstream_timeout": 1}})
        grant(g)
        with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
            s.ehlo("client.test")
            assert s.mail(SENDER)[0] == 250
            t0 = time.monotonic()
            code, text = s.rcpt(GOOD)
            waited = time.monotonic() - t0
            assert (code, text[:6]) == (451, b"4.4.1 "), (code, text)
            assert 0.9 <= waited < 5, waited
            assert s.noop()[0] == 250 and s.rset()[0] == 250
        assert g.wait_log("upstream_detail=\"greeting: none")
    finally:
        silent.close()


def test_upstream_timeout_bounds_each_reply_not_the_transaction(make_gateway, upstream):
    # relay.upstream_timeout = 1: three RCPT replies 0.6 s each (1.8 s in all,
    # on one kept connection) are each in time; the message goes through once.
    g = gateway(make_gateway, upstream, relay={"upstream_timeout": 1})
    slow = [f"slow{i}@remote.test" for i in range(3)]
    upstream.rcpt_delays = {r: 0.6 for r in slow}
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        t0 = time.monotonic()
        begin(s, *slow)
        assert time.monotonic() - t0 >= 1.8
        assert s.data(BODY)[0] == 250
    assert [(m[1], m[2], strip_received(m[3])) for m in messages(upstream)] == [(SENDER, slow, BODY)]


def test_a_reply_later_than_upstream_timeout_fails_the_transaction(make_gateway, upstream):
    # The first RCPT is answered at once; the second not within the 1 s
    # limit: 451 for it after about a second, the connection is dropped, and
    # the transaction (already holding the first recipient) cannot carry the
    # message, so nothing is delivered.
    g = gateway(make_gateway, upstream, relay={"upstream_timeout": 1})
    upstream.rcpt_delays = {GOOD2: 3}
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        begin(s, GOOD)
        t0 = time.monotonic()
        code, text = s.rcpt(GOOD2)
        waited = time.monotonic() - t0
        assert (code, text[:6]) == (451, b"4.4.1 "), (code, text)
        assert 0.9 <= waited < 2.5, waited
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.data(BODY)
        assert e.value.smtp_code == 451
        assert s.noop()[0] == 250
    assert g.wait_log('upstream_detail="RCPT: no valid reply')
    assert upstream.wait_for(lambda: 1 in upstream.closed)
    time.sleep(2.5)  # past the held reply: nothing arrives late either
    assert messages(upstream) == []


def test_upstream_gone_between_rcpt_and_data_gives_451_at_data(make_gateway, upstream):
    g = gateway(make_gateway, upstream)
    g.add_user("alice", "pw")
    upstream.drop_after_rcpt = True
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        begin(s, GOOD, "alice@gw.test")
        assert upstream.wait_for(lambda: 1 in upstream.closed)
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.data(BODY)
    assert (e.value.smtp_code, e.value.smtp_error) == \
        (451, b"4.4.1 Error: upstream mail server unavailable, try again later")
    assert messages(upstream) == []
    assert g.messages("alice") == []  # the local copy waits for the relayed part, as before


def test_421_to_a_rcpt_fails_the_transaction(make_gateway, upstream):
    g = gateway(make_gateway, upstream)
    upstream.rcpt_replies = {BAD: "421 4.3.2 shutting down"}
    unavailable = b"4.4.1 <%s>: Error: upstream mail server unavailable, try again later"
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        s.ehlo("client.test")
        assert s.mail(SENDER)[0] == 250
        assert s.rcpt(GOOD) == (250, b"2.1.5 Ok")
        assert s.rcpt(BAD) == (451, unavailable % BAD.encode())
        assert s.rcpt(GOOD2) == (451, unavailable % GOOD2.encode())  # not tried again
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.data(BODY)
        assert e.value.smtp_code == 451 and e.value.smtp_error.startswith(b"4.4.1 ")
    assert messages(upstream) == []
    assert [a for _, a in upstream.rcpts] == [GOOD, BAD]
    assert upstream.wait_for(lambda: 1 in upstream.closed)


# ------------------------------------------------------------------ the transaction ends without a message


def raw_after_rcpt(g, upstream):
    """A raw client whose one relayed recipient the upstream took."""
    c = Raw(g.port("smtp"))
    c.cmd(b"EHLO client.test\r\n")
    assert c.cmd(f"MAIL FROM:<{SENDER}>\r\n".encode()).startswith(b"250 ")
    assert c.cmd(f"RCPT TO:<{GOOD}>\r\n".encode()) == b"250 2.1.5 Ok\r\n"
    assert upstream.rcpts == [(1, GOOD)]
    return c


def test_client_drop_after_rcpt_resets_the_upstream_transaction_and_keeps_the_connection(make_gateway, upstream):
    g = gateway(make_gateway, upstream)
    c = raw_after_rcpt(g, upstream)
    c.close()
    assert upstream.wait_for(lambda: upstream.rsets == [1]), upstream.rsets
    assert g.wait_log("smtp end")
    assert messages(upstream) == [] and upstream.closed == []
    # the next message takes the kept connection and is delivered once
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        assert s.sendmail(SENDER, [GOOD2], BODY) == {}
    assert [(cn, r) for cn, _, r, _ in messages(upstream)] == [(1, [GOOD2])]
    assert len(upstream.connections) == 1


def test_quit_after_rcpt_delivers_nothing_and_keeps_the_connection(make_gateway, upstream):
    g = gateway(make_gateway, upstream)
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        begin(s, GOOD)
    assert upstream.wait_for(lambda: upstream.rsets == [1]), upstream.rsets
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        begin(s, GOOD2)
    assert upstream.wait_for(lambda: upstream.rsets == [1, 1]), upstream.rsets
    assert messages(upstream) == [] and upstream.closed == []
    assert len(upstream.connections) == 1


def test_quit_is_answered_and_closed_before_the_upstream_reset_is(make_gateway, upstream):
    # The client's EOF does not wait for the upstream's reply to RSET: the
    # reset happens after popgate has closed the client's connection, and
    # the connection still goes back to the pool for the next message.
    g = gateway(make_gateway, upstream)
    upstream.rset_delay = 3
    c = raw_after_rcpt(g, upstream)
    t = time.monotonic()
    assert c.cmd(b"QUIT\r\n").startswith(b"221 ")
    assert c.f.read() == b""  # EOF
    closed_after = time.monotonic() - t
    c.close()
    assert closed_after < 1.5, closed_after
    assert upstream.wait_for(lambda: upstream.rsets == [1]), upstream.rsets
    assert upstream.rsets_answered == []  # the client had its EOF before the upstream answered
    assert upstream.wait_for(lambda: upstream.rsets_answered == [1]), upstream.rsets_answered
    assert upstream.closed == []
    time.sleep(0.2)  # popgate reads the 250 and puts the connection back
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        assert s.sendmail(SENDER, [GOOD2], BODY) == {}
    assert [(cn, r) for cn, _, r, _ in messages(upstream)] == [(1, [GOOD2])]
    assert len(upstream.connections) == 1


def test_rset_is_answered_before_the_upstream_reset_is(make_gateway, upstream):
    # A slow upstream RSET delays the next relayed transaction, not the
    # client's 250 to its own RSET.
    g = gateway(make_gateway, upstream)
    upstream.rset_delay = 3
    c = raw_after_rcpt(g, upstream)
    t = time.monotonic()
    assert c.cmd(b"RSET\r\n") == b"250 2.0.0 Ok\r\n"
    answered_after = time.monotonic() - t
    assert answered_after < 1.5, answered_after
    assert upstream.wait_for(lambda: upstream.rsets == [1]), upstream.rsets
    # the session goes on: a new transaction on the same kept connection, once it is reset
    assert c.cmd(b"MAIL FROM:<" + SENDER.encode() + b">\r\n").startswith(b"250 ")
    assert c.cmd(b"RCPT TO:<" + GOOD2.encode() + b">\r\n").startswith(b"250 ")
    assert upstream.rsets_answered == [1]
    c.close()
    assert len(upstream.connections) == 1


def test_client_drop_in_data_closes_the_upstream_connection_and_delivers_nothing(make_gateway, upstream):
    g = gateway(make_gateway, upstream)
    c = raw_after_rcpt(g, upstream)
    assert c.cmd(b"DATA\r\n").startswith(b"354 ")
    c.s.sendall(b"Subject: cut\r\n\r\nhalf a message\r\n")
    c.close()
    # a RSET now would be message text: only closing stops the message
    assert upstream.wait_for(lambda: upstream.closed == [1]), upstream.closed
    assert messages(upstream) == [] and upstream.rsets == []


def test_rset_after_relayed_rcpt_resets_upstream_and_the_connection_is_reused(make_gateway, upstream):
    g = gateway(make_gateway, upstream)
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        begin(s, GOOD)
        assert s.rset()[0] == 250
        assert upstream.wait_for(lambda: upstream.rsets == [1]), upstream.rsets
        # the next transaction in the same session: the kept connection, only its own recipient
        assert s.sendmail("b@example.org", [GOOD2], BODY) == {}
    # and a transaction of another client session after a RSET
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        begin(s, BAD)
        assert s.rset()[0] == 250
        assert s.sendmail(SENDER, [GOOD], BODY) == {}
    assert [(cn, f, r) for cn, f, r, _ in messages(upstream)] == [(1, "b@example.org", [GOOD2]), (1, SENDER, [GOOD])]
    assert upstream.rsets == [1, 1]
    assert upstream.greetings == [1] and len(upstream.connections) == 1


def test_ehlo_in_a_transaction_resets_it_upstream(make_gateway, upstream):
    g = gateway(make_gateway, upstream)
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        begin(s, GOOD)
        assert s.ehlo("again.test")[0] == 250
        assert s.docmd("DATA")[0] == 503  # RFC 5321 §4.1.4: EHLO ended the transaction
        assert upstream.rsets == [1]
        assert s.sendmail(SENDER, [GOOD2], BODY) == {}
    assert [(cn, r) for cn, _, r, _ in messages(upstream)] == [(1, [GOOD2])]


def test_rset_with_reuse_off_quits_the_connection(make_gateway, upstream):
    g = gateway(make_gateway, upstream, reuse_time=0)
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        begin(s, GOOD)
        assert s.rset()[0] == 250
        assert upstream.wait_for(lambda: upstream.quits == [1] and upstream.closed == [1]), \
            (upstream.quits, upstream.closed)
        assert s.sendmail(SENDER, [GOOD2], BODY) == {}
    assert upstream.rsets == [1]
    assert [(cn, r) for cn, _, r, _ in messages(upstream)] == [(2, [GOOD2])]


def test_relay_drop_without_upstream_is_unchanged(make_gateway):
    g = make_gateway()
    grant(g)
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        assert s.sendmail(SENDER, [GOOD, BAD], BODY) == {}
    d = g.dropped()
    assert len(d) == 1
    assert d[0].startswith(b"X-Envelope-From: <a@example.org>\nX-Envelope-To: <good@remote.test>, "
                           b"<bad@remote.test>\n")


def test_an_upstream_name_whose_first_address_is_silent_reaches_the_second(make_gateway, upstream, tmp_path):
    """relay.upstream_host names two addresses (a hosts file in the daemon's
    own mount namespace): ::1 first, where nothing answers a SYN (a full
    backlog), and 127.0.0.1, the capture upstream. One upstream_timeout
    over the whole range ended the connect at the first address; each
    address now has its own, and the message goes by the second."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a private /etc/hosts (CI runs as root)")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n::1 twohomed.test\n127.0.0.1 twohomed.test\n")
    silent = socket.socket(socket.AF_INET6)
    silent.bind(("::1", upstream.port))
    silent.listen(0)
    filler = socket.create_connection(("::1", upstream.port), timeout=5)  # the backlog's one place
    try:
        o = relay_overrides(upstream, relay={"upstream_host": "twohomed.test", "upstream_timeout": 2})
        g = make_gateway(overrides=o, start=False)
        g.start(wrapper=("unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts)))
        grant(g)
        with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
            assert s.sendmail(SENDER, [GOOD], BODY) == {}
        assert len(upstream.messages) == 1
    finally:
        filler.close()
        silent.close()
