"""SMTP listener against the running daemon with real clients (smtplib, swaks,
curl, raw sockets): protocol replies, the relay decision from grants, networks
and AUTH, local delivery, synchronous relay to a capture upstream, and the
smuggling / pipelining cases of issue 3."""
import poplib
import re
import signal
import smtplib
import socket
import subprocess
import time

import pytest

from popgate_test import CaptureUpstream, client_tls_context, eventually, make_gateway, raw_exchange, upstream  # noqa: F401
from smtp_support import relay_overrides, strip_received

BODY = b"From: a@example.org\r\nTo: x@remote.test\r\nSubject: test\r\n\r\nline one\r\n.leading dot\r\nlast line\r\n"


def grant(g, address="127.0.0.1", ttl=600):
    g.sql("INSERT INTO relay_grants(address, expires_at) VALUES(?, unixepoch()+?)", (address, ttl))


def send(port, rcpts, body=BODY, sender="a@example.org"):
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        return s.sendmail(sender, rcpts, body)


class Conn:
    """A raw SMTP conversation: exact bytes in, exact replies out."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self.greeting = self.reply()

    def reply(self):
        while True:
            lines = self.buf.split(b"\r\n")
            for i, l in enumerate(lines[:-1]):
                if len(l) >= 4 and l[3:4] == b" " or len(l) == 3:
                    out = b"\r\n".join(lines[: i + 1]) + b"\r\n"
                    self.buf = self.buf[len(out):]
                    return out
            chunk = self.s.recv(65536)
            if not chunk:
                out, self.buf = self.buf, b""
                return out
            self.buf += chunk

    def cmd(self, line: bytes):
        self.s.sendall(line)
        return self.reply()

    def close(self):
        self.s.close()


@pytest.fixture
def relay_gw(make_gateway, upstream):
    return make_gateway(overrides=relay_overrides(upstream))


# ------------------------------------------------------------------ protocol


def test_greeting_ehlo_and_simple_commands(make_gateway):
    g = make_gateway()
    c = Conn(g.port("smtp"))
    assert c.greeting == b"220 gw.test ESMTP popgate\r\n"
    assert c.cmd(b"MAIL FROM:<a@b.test>\r\n") == b"503 5.5.1 Error: send HELO/EHLO first\r\n"
    assert c.cmd(b"EHLO client.test\r\n") == (
        b"250-gw.test\r\n250-PIPELINING\r\n250-SIZE 26214400\r\n250-8BITMIME\r\n"
        b"250-ENHANCEDSTATUSCODES\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN CRAM-MD5\r\n")
    assert c.cmd(b"NOOP\r\n") == b"250 2.0.0 Ok\r\n"
    assert c.cmd(b"VRFY alice\r\n").startswith(b"252 2.0.0 ")
    assert c.cmd(b"HELP\r\n").startswith(b"214-2.0.0 Commands: ")
    assert c.cmd(b"FOO bar\r\n") == b"500 5.5.2 Error: command not recognized\r\n"
    assert c.cmd(b"RCPT TO:<x@gw.test>\r\n") == b"503 5.5.1 Error: need MAIL command\r\n"
    assert c.cmd(b"DATA\r\n") == b"503 5.5.1 Error: need MAIL command\r\n"
    assert c.cmd(b"MAIL FROM:bad\r\n") == b"501 5.1.7 Bad sender address syntax\r\n"
    assert c.cmd(b"MAIL TO:<a@b>\r\n") == b"501 5.5.4 Syntax error in parameters\r\n"
    assert c.cmd(b"MAIL FROM:<a@b.test> FOO=1\r\n") == b"555 5.5.4 Unsupported option: FOO\r\n"
    assert c.cmd(b"MAIL FROM:<>\r\n") == b"250 2.1.0 Ok\r\n"
    assert c.cmd(b"MAIL FROM:<a@b.test>\r\n") == b"503 5.5.1 Error: nested MAIL command\r\n"
    assert c.cmd(b"DATA\r\n") == b"503 5.5.1 Error: need RCPT command\r\n"
    assert c.cmd(b"RCPT TO:<nobody@gw.test>\r\n") == (
        b"550 5.1.1 <nobody@gw.test>: Recipient address rejected: User unknown\r\n")
    assert c.cmd(b"DATA\r\n") == b"554 5.5.1 Error: no valid recipients\r\n"
    assert c.cmd(b"RSET\r\n") == b"250 2.0.0 Ok\r\n"
    assert c.cmd(b"NOOP\r\nQUIT\n") == b"250 2.0.0 Ok\r\n"
    assert c.reply() == b"500 5.5.2 Error: bare <LF> received\r\n"
    assert c.cmd(b"QUIT\r\n") == b"221 2.0.0 Bye\r\n"
    assert c.reply() == b""  # closed
    c.close()


def test_too_many_bad_commands_closes(make_gateway):
    g = make_gateway(overrides={"limits": {"max_bad_commands": 3}})
    out = raw_exchange(g.port("smtp"), b"X\r\nY\r\nZ\r\nW\r\nNOOP\r\n")
    assert out.endswith(b"500 5.5.2 Error: command not recognized\r\n" * 3 +
                        b"421 4.7.0 gw.test Error: too many errors\r\n"), out


def test_idle_timeout_says_421(make_gateway):
    g = make_gateway(overrides={"limits": {"smtp_idle_timeout": 1}})
    t0 = time.time()
    out = raw_exchange(g.port("smtp"), b"EHLO x\r\n", timeout=6)
    assert out.endswith(b"421 4.4.2 gw.test Error: timeout exceeded\r\n"), out
    assert time.time() - t0 < 4


def test_idle_timeout_says_421_through_tls(make_gateway):
    """The 421 goes inside the TLS session (SMTPS, and after STARTTLS), then
    a close_notify: the client reads the reply and a clean end."""
    g = make_gateway(overrides={"limits": {"smtp_idle_timeout": 1}})
    out = raw_exchange(g.port("smtps"), b"EHLO x\r\n", timeout=6, tls=True)
    assert out.endswith(b"421 4.4.2 gw.test Error: timeout exceeded\r\n"), out
    s = smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=6)
    s.starttls(context=client_tls_context())
    assert s.ehlo("x")[0] == 250
    code, text = s.getreply()  # unasked: the idle timeout's reply, decrypted
    assert (code, text) == (421, b"4.4.2 gw.test Error: timeout exceeded"), (code, text)
    s.close()


def test_too_many_recipients(make_gateway):
    g = make_gateway()
    grant(g)
    c = Conn(g.port("smtp"))
    c.cmd(b"EHLO x\r\n")
    c.cmd(b"MAIL FROM:<a@b.test>\r\n")
    c.s.sendall(b"".join(b"RCPT TO:<r%d@remote.test>\r\n" % i for i in range(101)))
    for _ in range(100):
        assert c.reply() == b"250 2.1.5 Ok\r\n"
    assert c.reply() == b"452 4.5.3 Error: too many recipients\r\n"
    c.close()


def test_pipelined_transaction_in_one_write(make_gateway):
    g = make_gateway()
    g.add_user("alice", "pw")
    c = Conn(g.port("smtp"))
    assert c.cmd(b"EHLO x\r\n").startswith(b"250-gw.test")
    c.s.sendall(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<alice@gw.test>\r\nRCPT TO:<bob@gw.test>\r\nDATA\r\n")
    assert c.reply() == b"250 2.1.0 Ok\r\n"
    assert c.reply() == b"250 2.1.5 Ok\r\n"
    assert c.reply() == b"550 5.1.1 <bob@gw.test>: Recipient address rejected: User unknown\r\n"
    assert c.reply() == b"354 End data with <CR><LF>.<CR><LF>\r\n"
    # message, terminator and the next transaction in one write
    c.s.sendall(b"Subject: p1\r\n\r\none\r\n.\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@gw.test>\r\nDATA\r\n")
    assert c.reply().startswith(b"250 2.0.0 Ok: queued as ")
    assert c.reply() == b"250 2.1.0 Ok\r\n"
    assert c.reply() == b"250 2.1.5 Ok\r\n"
    assert c.reply() == b"354 End data with <CR><LF>.<CR><LF>\r\n"
    c.s.sendall(b"Subject: p2\r\n\r\ntwo\r\n.\r\nQUIT\r\n")
    assert c.reply().startswith(b"250 2.0.0 Ok: queued as ")
    assert c.reply() == b"221 2.0.0 Bye\r\n"
    c.close()
    msgs = [strip_received(m) for m in g.messages("alice")]
    assert msgs == [b"Subject: p1\n\none\n", b"Subject: p2\n\ntwo\n"]


# ------------------------------------------------------------------ relay decision


def test_relay_refused_without_grant(relay_gw, upstream):
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        send(relay_gw.port("smtp"), ["x@remote.test"])
    assert e.value.recipients == {"x@remote.test": (554, b"5.7.1 <x@remote.test>: Relay access denied")}
    assert upstream.messages == []
    assert relay_gw.wait_log("decision=denied detail=no-grant-or-network")
    assert eventually(lambda: relay_gw.sql("SELECT event, address, detail FROM audit_log WHERE event='deny'")) == \
        [("deny", "127.0.0.1", "x@remote.test")]


def test_grant_allows_then_expiry_refuses(relay_gw, upstream):
    grant(relay_gw)
    assert send(relay_gw.port("smtp"), ["x@remote.test"]) == {}
    assert len(upstream.messages) == 1
    m = upstream.messages[0]
    assert m["mail_from"] == "a@example.org" and m["rcpt_tos"] == ["x@remote.test"]
    assert strip_received(m["data"]) == BODY
    assert relay_gw.wait_log("decision=grant")
    # Touches are summed and written once a second (write_queue::touch_interval).
    hits = lambda: relay_gw.sql("SELECT hits, last_used IS NOT NULL FROM relay_grants WHERE address='127.0.0.1'")
    end = time.time() + 5
    while hits() != [(1, 1)] and time.time() < end:
        time.sleep(0.1)
    assert hits() == [(1, 1)]
    relay_gw.sql("UPDATE relay_grants SET granted_at = unixepoch() - 100, expires_at = unixepoch() - 1")
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(relay_gw.port("smtp"), ["x@remote.test"])
    assert len(upstream.messages) == 1


def test_grant_for_other_address_does_not_help(relay_gw, upstream):
    grant(relay_gw, "127.0.0.2")
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(relay_gw.port("smtp"), ["x@remote.test"])
    assert upstream.messages == []


def test_allowed_network_relays_with_swaks(relay_gw, upstream):
    relay_gw.sql("INSERT INTO allowed_networks(cidr) VALUES('127.0.0.0/8')")
    r = subprocess.run(["swaks", "--server", f"127.0.0.1:{relay_gw.port('smtp')}", "--to", "x@remote.test",
                        "--from", "a@b.test", "--body", "hello from swaks", "--h-Subject", "swaks"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "<-  250 2.0.0 Ok: queued as " in r.stdout
    assert len(upstream.messages) == 1 and b"hello from swaks" in upstream.messages[0]["data"]
    assert relay_gw.wait_log("decision=network detail=network=127.0.0.0/8")


def test_curl_relay_after_grant(relay_gw, upstream, tmp_path):
    grant(relay_gw)
    f = tmp_path / "mail.txt"
    f.write_bytes(BODY)
    r = subprocess.run(["curl", "-sS", "--url", f"smtp://127.0.0.1:{relay_gw.port('smtp')}",
                        "--mail-from", "a@b.test", "--mail-rcpt", "x@remote.test", "-T", str(f)],
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert [strip_received(m["data"]) for m in upstream.messages] == [BODY]


def test_curl_refused_without_grant(relay_gw, upstream, tmp_path):
    f = tmp_path / "mail.txt"
    f.write_bytes(BODY)
    r = subprocess.run(["curl", "-sS", "--url", f"smtp://127.0.0.1:{relay_gw.port('smtp')}",
                        "--mail-from", "a@b.test", "--mail-rcpt", "x@remote.test", "-T", str(f)],
                       capture_output=True, timeout=30)
    assert r.returncode == 55, r.stderr  # CURLE_SEND_ERROR: RCPT failed
    assert b"554" in r.stderr
    assert upstream.messages == []


def test_submission_refuses_relay_without_auth_even_with_grant(relay_gw, upstream):
    grant(relay_gw)
    with pytest.raises(smtplib.SMTPSenderRefused) as e:
        send(relay_gw.port("submission"), ["x@remote.test"])
    assert e.value.smtp_code == 530
    assert upstream.messages == []


def test_submission_local_delivery_without_auth_when_the_listener_allows_it(make_gateway, upstream):
    g = make_gateway(overrides=relay_overrides(upstream),
                     listeners=[{"name": "submission", "protocol": "smtp", "tls": "starttls",
                                 "auth_required": True, "local_delivery_without_auth": True}])
    g.add_user("alice", "pw")
    grant(g)
    with smtplib.SMTP("127.0.0.1", g.port("submission"), timeout=10) as s:
        s.ehlo("client.example")
        # The grant does not count here; the local recipient is taken.
        assert s.sendmail("a@example.org", ["x@remote.test", "alice@gw.test"], b"Subject: s\r\n\r\nb\r\n") == \
            {"x@remote.test": (554, b"5.7.1 <x@remote.test>: Relay access denied")}
    assert len(g.messages("alice")) == 1
    assert upstream.messages == []
    assert g.wait_log("decision=denied detail=auth-required-on-listener")


# ------------------------------------------------------------------ delivery


def test_local_delivery_byte_exact_and_pop3(make_gateway):
    g = make_gateway()
    g.add_user("alice", "secret1")
    body = b"Subject: local\r\n\r\n\xc3\xa9t\xc3\xa9 8bit\r\n..double\r\n\r\nend\r\n"
    with smtplib.SMTP("127.0.0.1", g.port("smtp")) as s:
        s.ehlo("client.example")
        assert s.sendmail("a@b.test", ["alice@gw.test", "alice@localhost"], body, mail_options=["BODY=8BITMIME"]) == {}
    msgs = g.messages("alice")
    assert len(msgs) == 1  # the same mailbox twice in one envelope: one copy
    assert msgs[0].startswith(b"Received: from client.example (unknown [127.0.0.1])\n\tby gw.test (popgate) with ESMTP id ")
    assert strip_received(msgs[0]) == body.replace(b"\r\n", b"\n")
    # ... and readable over POP3 with the CRLF wire form, byte for byte
    p = poplib.POP3("127.0.0.1", g.port("pop3"), timeout=10)
    p.user("alice")
    p.pass_("secret1")
    resp, lines, _ = p.retr(1)
    p.quit()
    assert strip_received(b"\r\n".join(lines) + b"\r\n") == body


def test_relay_drop_when_no_upstream(make_gateway):
    g = make_gateway()
    grant(g)
    assert send(g.port("smtp"), ["x@remote.test", "y@remote.test"]) == {}
    d = g.dropped()
    assert len(d) == 1
    assert d[0].startswith(b"X-Envelope-From: <a@example.org>\nX-Envelope-To: <x@remote.test>, <y@remote.test>\n")
    assert d[0].endswith(BODY.replace(b"\r\n", b"\n"))


def test_relay_drop_folds_a_long_recipient_list(make_gateway):
    g = make_gateway()
    grant(g)
    rcpts = [f"recipient-number-{i}@remote.test" for i in range(40)]
    assert send(g.port("smtp"), rcpts) == {}
    d = g.dropped()
    assert len(d) == 1
    lines = d[0].split(b"\n")
    assert lines[1].startswith(b"X-Envelope-To: <recipient-number-0@remote.test>,")
    header = [lines[1]]
    for line in lines[2:]:
        if not line.startswith(b" "):
            break
        header.append(line)
    assert len(header) > 10 and all(len(line) <= 78 for line in header), header  # RFC 5322 §2.1.1
    unfolded = b"".join(header)[len(b"X-Envelope-To: "):]
    assert unfolded.split(b", ") == [b"<" + r.encode() + b">" for r in rcpts]


def test_upstream_down_gives_451_and_nothing_delivered(make_gateway, tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead_port = s.getsockname()[1]
    s.close()
    g = make_gateway(overrides={"relay": {"upstream_host": "127.0.0.1", "upstream_port": dead_port,
                                          "upstream_starttls": "none"}})
    grant(g)
    # The upstream transaction opens at the first relayed RCPT: each relayed
    # recipient gets the 451 (a local one beside them: test_upstream_rcpt.py).
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        send(g.port("smtp"), ["x@remote.test", "y@remote.test"])
    assert {a: (c, t[:6]) for a, (c, t) in e.value.recipients.items()} == \
        {"x@remote.test": (451, b"4.4.1 "), "y@remote.test": (451, b"4.4.1 ")}
    assert g.dropped() == []


@pytest.mark.parametrize("mode,code,text", [
    # The upstream's own 4xx, passed on as its 5xx is (451 4.4.1 "upstream
    # unavailable" is for a connection lost or a timeout).
    ("tempfail", 451, b"4.3.0 Error: upstream refused: try later"),
    ("reject", 554, b"5.6.0 Error: upstream refused: content rejected"),
])  # a refused recipient is refused at its RCPT: test_upstream_rcpt.py
def test_upstream_verdict_passed_on(relay_gw, upstream, mode, code, text):
    relay_gw.add_user("alice", "pw")
    grant(relay_gw)
    upstream.mode = mode
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(relay_gw.port("smtp"), ["x@remote.test", "alice@gw.test"])
    assert (e.value.smtp_code, e.value.smtp_error) == (code, text)
    assert upstream.messages == []
    assert relay_gw.messages("alice") == []  # local copy only after the relay part succeeded


def test_a_slow_reply_to_the_dot_is_waited_for_and_the_message_goes_once(make_gateway, upstream):
    """A before-queue filter that takes longer than upstream_timeout (2 s
    here) after it has taken the message: the gateway waits for the verdict
    (upstream_data_done_timeout) and answers 250. Before, it gave up at
    upstream_timeout with 451 although the upstream queued the message, and
    the client's retry made a second copy."""
    g = make_gateway(overrides=relay_overrides(upstream, relay={"upstream_timeout": 2}))
    grant(g)
    upstream.data_delay = 3.5
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        assert s.sendmail("a@example.org", ["x@remote.test"], BODY) == {}
    assert len(upstream.messages) == 1
    assert g.wait_log("smtp relayed id=")


def relay_raw(g):
    """One message to x@remote.test over a raw connection; the raw reply to
    the dot (all of it, however long or odd)."""
    c = Conn(g.port("smtp"))
    c.cmd(b"EHLO client.example\r\n")
    assert c.cmd(b"MAIL FROM:<a@example.org>\r\n").startswith(b"250 ")
    assert c.cmd(b"RCPT TO:<x@remote.test>\r\n").startswith(b"250 ")
    assert c.cmd(b"DATA\r\n").startswith(b"354 ")
    reply = c.cmd(BODY + b".\r\n")
    c.close()
    return reply


def test_the_upstreams_250_text_is_cut_in_our_reply(relay_gw, upstream):
    """An upstream whose 250 to the dot is 1,500 octets long: our 250 quotes
    200 of them, and stays a valid reply line (RFC 5321: 512 octets). Before,
    the whole text went into one line; smtplib took it for an error after
    the message was queued upstream, and would send it again."""
    grant(relay_gw)
    upstream.data_reply = "250 2.0.0 queued as LONG " + "x" * 1475
    reply = relay_raw(relay_gw)
    assert reply.startswith(b"250 2.0.0 Ok: queued as ") and reply.count(b"\r\n") == 1, reply[:100]
    assert b"(queued as LONG xxx" in reply and len(reply) <= 512, len(reply)
    assert len(upstream.messages) == 1
    # smtplib, the client that choked on the long line, now takes the reply.
    assert send(relay_gw.port("smtp"), ["y@remote.test"]) == {}
    assert len(upstream.messages) == 2


def test_an_upstream_250_without_text_adds_no_empty_quote(relay_gw, upstream):
    grant(relay_gw)
    upstream.data_reply = "250"
    reply = relay_raw(relay_gw)
    assert re.fullmatch(rb"250 2\.0\.0 Ok: queued as [0-9A-F]+\r\n", reply), reply
    assert len(upstream.messages) == 1


def test_the_clients_250_does_not_wait_for_the_upstreams_221(make_gateway, upstream):
    """With reuse off the upstream connection is ended with QUIT after each
    message. The client's 250 went out only after the upstream's 221: an
    upstream slow to say goodbye (5 s here) held every message's reply
    back, long enough for clients with short timeouts to give up and send
    again."""
    g = make_gateway(overrides=relay_overrides(upstream, relay={"upstream_reuse_time": 0}))
    grant(g)
    upstream.quit_delay = 5
    started = time.monotonic()
    assert send(g.port("smtp"), ["x@remote.test"]) == {}
    took = time.monotonic() - started
    assert took < 3, took
    assert len(upstream.messages) == 1
    assert upstream.wait_for(lambda: upstream.quits)  # QUIT was sent all the same


def test_mixed_local_and_relay(relay_gw, upstream):
    relay_gw.add_user("alice", "pw")
    grant(relay_gw)
    assert send(relay_gw.port("smtp"), ["x@remote.test", "alice@gw.test"]) == {}
    assert [m["rcpt_tos"] for m in upstream.messages] == [["x@remote.test"]]
    assert [strip_received(m) for m in relay_gw.messages("alice")] == [BODY.replace(b"\r\n", b"\n")]


def test_client_drop_mid_data_delivers_nothing(relay_gw, upstream):
    relay_gw.add_user("alice", "pw")
    grant(relay_gw)
    c = Conn(relay_gw.port("smtp"))
    c.cmd(b"EHLO x\r\n")
    c.s.sendall(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@remote.test>\r\nRCPT TO:<alice@gw.test>\r\nDATA\r\n")
    for _ in range(3):
        assert c.reply().startswith(b"250 ")
    assert c.reply().startswith(b"354 ")
    c.s.sendall(b"Subject: cut\r\n\r\n" + b"x" * 100000 + b"\r\n")
    time.sleep(0.3)
    c.close()
    assert relay_gw.wait_log("smtp data aborted")
    time.sleep(0.3)
    assert upstream.messages == []
    assert relay_gw.messages("alice") == []
    tmp = relay_gw.maildir("alice") / "tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == []


# ------------------------------------------------------------------ limits and smuggling


def test_size_refused_at_mail_and_in_data(relay_gw, upstream):
    g = relay_gw
    grant(g)
    c = Conn(g.port("smtp"))
    c.cmd(b"EHLO x\r\n")
    assert c.cmd(b"MAIL FROM:<a@b.test> SIZE=26214401\r\n") == b"552 5.3.4 Message size exceeds fixed limit\r\n"
    assert c.cmd(b"MAIL FROM:<a@b.test> SIZE=100\r\n") == b"250 2.1.0 Ok\r\n"
    assert c.cmd(b"RCPT TO:<x@remote.test>\r\n") == b"250 2.1.5 Ok\r\n"
    assert c.cmd(b"DATA\r\n").startswith(b"354 ")
    line = b"y" * 998 + b"\r\n"
    c.s.sendall(line * (26214400 // len(line) + 2))
    assert c.cmd(b".\r\n") == b"552 5.3.4 Message size exceeds fixed limit\r\n"
    assert c.cmd(b"NOOP\r\n") == b"250 2.0.0 Ok\r\n"  # in step with the client
    c.close()
    assert upstream.messages == []


SMUGGLING = [
    b"Subject: a\r\n\r\nfirst\n.\nMAIL FROM:<evil@x>\r\nRCPT TO:<x@remote.test>\r\nDATA\r\nsmuggled\r\n.\r\n",
    b"Subject: a\r\n\r\nfirst\r\n.\nMAIL FROM:<evil@x>\r\nRCPT TO:<x@remote.test>\r\nDATA\r\nsmuggled\r\n.\r\n",
    b"Subject: a\r\n\r\nbare\nlf in data\r\n.\r\n",
    b"Subject: a\r\n\r\nfirst\r.\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<x@remote.test>\r\nDATA\r\nsmuggled\r\n.\r\n",
]


@pytest.mark.parametrize("payload", SMUGGLING, ids=["lf.lf", "crlf.lf", "bare-lf", "cr.crlf"])
def test_smuggling_refused_and_nothing_delivered(relay_gw, upstream, payload):
    relay_gw.add_user("alice", "pw")
    grant(relay_gw)
    c = Conn(relay_gw.port("smtp"))
    c.cmd(b"EHLO x\r\n")
    c.s.sendall(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@remote.test>\r\nRCPT TO:<alice@gw.test>\r\nDATA\r\n")
    for _ in range(3):
        c.reply()
    assert c.reply().startswith(b"354 ")
    c.s.sendall(payload)
    r = c.reply()
    # the smuggled "DATA\r\n" and "\r\n.\r\n" are body bytes of the one refused message
    assert r == b"550 5.5.2 Error: bare <CR> or <LF> in message data\r\n", r
    assert c.cmd(b"QUIT\r\n") == b"221 2.0.0 Bye\r\n"
    c.close()
    time.sleep(0.2)
    assert upstream.messages == []
    assert relay_gw.messages("alice") == []


def test_long_data_line_refused(make_gateway):
    g = make_gateway()
    g.add_user("alice", "pw")
    c = Conn(g.port("smtp"))
    c.cmd(b"EHLO x\r\n")
    c.cmd(b"MAIL FROM:<a@b.test>\r\n")
    c.cmd(b"RCPT TO:<alice@gw.test>\r\n")
    assert c.cmd(b"DATA\r\n").startswith(b"354")
    assert c.cmd(b"x" * 999 + b"\r\n.\r\n") == b"550 5.5.2 Error: message line longer than 998 octets\r\n"
    c.close()
    assert g.messages("alice") == []


# ------------------------------------------------------------------ the story


def test_pop_before_smtp_story(relay_gw, upstream):
    g = relay_gw
    g.add_user("carol", "s3cret!")
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(g.port("smtp"), ["friend@remote.test"])
    p = poplib.POP3("127.0.0.1", g.port("pop3"), timeout=10)
    p.user("carol")
    p.pass_("s3cret!")
    p.quit()
    body = b"From: carol@gw.test\r\nTo: friend@remote.test\r\nSubject: story\r\n\r\nHello \xe2\x98\x83\r\n..dot\r\n"
    with smtplib.SMTP("127.0.0.1", g.port("smtp")) as s:
        assert s.sendmail("carol@gw.test", ["friend@remote.test"], body, mail_options=["BODY=8BITMIME"]) == {}
    assert len(upstream.messages) == 1
    m = upstream.messages[0]
    assert (m["mail_from"], m["rcpt_tos"]) == ("carol@gw.test", ["friend@remote.test"])
    assert strip_received(m["data"]) == body
    assert g.wait_log("decision=grant detail=grant_user=carol")


def test_upstream_starttls_required_but_not_offered_gives_451(make_gateway, upstream):
    g = make_gateway(overrides={"relay": {"upstream_host": "127.0.0.1", "upstream_port": upstream.port,
                                          "upstream_starttls": "required"}})
    grant(g)
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        send(g.port("smtp"), ["x@remote.test"])
    assert e.value.recipients["x@remote.test"][0] == 451  # at RCPT: the upstream transaction opens there
    assert upstream.messages == []
    assert g.wait_log("upstream does not offer STARTTLS")


def test_postmaster_is_always_accepted(make_gateway):
    # RFC 5321 4.5.1: <postmaster> and postmaster@<local domain> are never
    # refused, even before an administrator has made a postmaster user; other
    # unknown local users still are.
    g = make_gateway()
    c = Conn(g.port("smtp"))
    c.cmd(b"EHLO client.test\r\n")
    assert c.cmd(b"MAIL FROM:<a@remote.test>\r\n").startswith(b"250")
    assert c.cmd(b"RCPT TO:<Postmaster>\r\n").startswith(b"250 2.1.5")
    assert c.cmd(b"RCPT TO:<postmaster@gw.test>\r\n").startswith(b"250 2.1.5")
    assert c.cmd(b"RCPT TO:<nobody@gw.test>\r\n").startswith(b"550 5.1.1")
    assert c.cmd(b"DATA\r\n").startswith(b"354")
    assert c.cmd(BODY.replace(b"\r\n.", b"\r\n..") + b".\r\n").startswith(b"250 2.0.0")
    c.cmd(b"QUIT\r\n")
    msgs = g.messages("postmaster")
    assert len(msgs) == 1
    assert strip_received(msgs[0]) == BODY.replace(b"\r\n", b"\n")


def test_local_mailboxes_and_repeats_whatever_the_case_of_the_domain(make_gateway, upstream):
    # A domain is case-insensitive (RFC 5321 2.4): dave@GW.TEST is the user
    # dave@gw.test, whom a bounce used to tell the sender did not exist. A
    # local part is folded as Postfix and Dovecot fold it for local
    # mailboxes. A quoted local part with an '@' is no user of another
    # domain, and one remote recipient written twice is sent once.
    g = make_gateway(overrides=relay_overrides(upstream))
    g.add_user("alice", "pw-a")
    g.add_user("dave@gw.test", "pw-d")
    g.add_user("bob@example.org", "pw-b")
    g.add_user("Carol", "pw-c")  # named as written: she comes before carol@gw.test
    g.add_user("carol@gw.test", "pw-c2")
    grant(g)
    c = Conn(g.port("smtp"))
    c.cmd(b"EHLO client.test\r\n")
    assert c.cmd(b"MAIL FROM:<a@remote.test>\r\n").startswith(b"250")
    assert c.cmd(b"RCPT TO:<dave@GW.Test>\r\n").startswith(b"250 2.1.5")
    assert c.cmd(b"RCPT TO:<ALICE@gw.test>\r\n").startswith(b"250 2.1.5")
    assert c.cmd(b'RCPT TO:<"bob@example.org"@gw.test>\r\n').startswith(b"550 5.1.1")
    assert c.cmd(b"RCPT TO:<Carol@gw.test>\r\n").startswith(b"250 2.1.5")
    assert c.cmd(b"RCPT TO:<x@remote.test>\r\n").startswith(b"250 2.1.5")
    assert c.cmd(b"RCPT TO:<x@REMOTE.test>\r\n").startswith(b"250 2.1.5")
    assert c.cmd(b"DATA\r\n").startswith(b"354")
    assert c.cmd(BODY.replace(b"\r\n.", b"\r\n..") + b".\r\n").startswith(b"250 2.0.0")
    c.cmd(b"QUIT\r\n")
    assert len(g.messages("dave@gw.test")) == 1 and len(g.messages("alice")) == 1
    assert g.messages("bob@example.org") == []
    assert len(g.messages("Carol")) == 1 and g.messages("carol@gw.test") == []
    assert upstream.wait_for(lambda: len(upstream.messages) == 1)
    assert upstream.messages[0]["rcpt_tos"] == ["x@remote.test"]
    log = g.log()
    assert "local detail=user=dave@gw.test" in log and "local detail=user=alice" in log
    assert "decision=repeat" in log


def test_the_drain_waits_for_the_upstreams_verdict_on_a_relayed_message(make_gateway, upstream):
    """SIGTERM while the upstream's reply to the dot is awaited (a slow
    before-queue filter: 12 s, past the drain's 10 s). The drain cut the
    session at 10 s: the client saw the connection close without a reply
    and would send again a message the upstream queued. The session is now
    spared until the verdict is in; the client gets its 250, then the
    drain's 421."""
    g = make_gateway(overrides=relay_overrides(upstream, relay={"upstream_timeout": 2}))
    grant(g)
    upstream.data_delay = 12
    s = smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=40)
    s.ehlo("client.example")
    assert s.mail("a@example.org")[0] == 250
    assert s.rcpt("x@remote.test")[0] == 250
    assert s.docmd("DATA")[0] == 354
    s.send(BODY + b".\r\n")
    assert upstream.wait_for(lambda: upstream.messages)  # the upstream has it; its reply is 12 s away
    g.proc.send_signal(signal.SIGTERM)
    code, text = s.getreply()
    assert code == 250 and text.startswith(b"2.0.0 Ok: queued as "), (code, text)
    assert s.getreply()[0] == 421  # then the drain's last words
    s.close()
    assert g.proc.wait(60) == 0
    assert len(upstream.messages) == 1
    assert "awaiting_upstream=1" in g.log()


def test_long_srs_and_verp_addresses_are_taken_as_postfix_takes_them(relay_gw, upstream):
    # A local part over 64 octets (an SRS sender from a forwarder, a VERP
    # bounce address) got "501 5.1.7 Bad sender address syntax", and mail
    # to or from it bounced; RFC 5321 4.5.3.1 gives 64 as the least a
    # server takes, and Postfix takes longer ones.
    g = relay_gw
    g.add_user("alice", "pw")
    grant(g)
    srs = "bounces+SRS=k5Ch0=TW=long-department-name.example.com=firstname.lastname@contoso.onmicrosoft.com"
    verp = "list-bounces+" + "x" * 120 + "=remote.test@lists.example.org"
    assert send(g.port("smtp"), ["alice@gw.test", verp], sender=srs) == {}
    assert [(m["mail_from"], m["rcpt_tos"]) for m in upstream.messages] == [(srs, [verp])]
    assert len(g.messages("alice")) == 1
    # A domain longer than DNS allows, or a path over 900 octets, is
    # refused, and called too long.
    c = Conn(g.port("smtp"))
    c.cmd(b"EHLO client.test\r\n")
    label = "d" * 63
    assert c.cmd(f"MAIL FROM:<a@{label}.{label}.{label}.{label}d>\r\n".encode()) == b"501 5.1.7 Path too long\r\n"
    assert c.cmd(b"MAIL FROM:<a@example.org>\r\n").startswith(b"250 ")
    assert c.cmd(f"RCPT TO:<b@{label}.{label}.{label}.{label}d>\r\n".encode()) == b"501 5.1.3 Path too long\r\n"
    assert c.cmd(b"RCPT TO:<" + b"b" * 892 + b"@b.test>\r\n") == b"501 5.1.3 Path too long\r\n"
    c.close()
    assert len(upstream.messages) == 1
