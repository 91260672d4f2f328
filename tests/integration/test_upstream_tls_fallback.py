"""Issue 17 item 9 against the running daemon: an upstream that offers
STARTTLS and then breaks the handshake. With relay.upstream_starttls =
"opportunistic" the message goes once, in clear, on a new connection, the
fallback is logged, and the next messages go in clear without trying for a
while; with "required" the client gets 451 and nothing is delivered.

The upstream here is a small asyncio SMTP server written for the test
(aiosmtpd would do a real handshake): it advertises STARTTLS, answers it
with 220 and then sends bytes that are not TLS, or closes the connection.
It records every command of every connection and every message it accepts.
The same server, knowing only HELO, stands for the oldest legacy MTA."""
import asyncio
import smtplib
import socket
import threading
import time

import pytest

from smtp_support import strip_received


def wait_until(predicate, timeout=10):
    deadline = time.time() + timeout
    while not predicate() and time.time() < deadline:
        time.sleep(0.02)


class BrokenTlsUpstream:
    """SMTP in clear that offers STARTTLS and breaks it (`mode` "garbage" or
    "close"), or that refuses EHLO and knows only HELO ("no-ehlo"). `connections` holds the commands of each connection, in accept
    order; `messages` the (connection number, MAIL FROM, RCPT TOs, data) of
    each message accepted with 250."""

    def __init__(self, mode):
        self.mode = mode
        self.connections = []
        self.messages = []
        self.lock = threading.Lock()
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        async def serve():
            self.server = await asyncio.start_server(self._session, "127.0.0.1", self.port)
            started.set()

        self.thread = threading.Thread(target=lambda: (self.loop.run_until_complete(serve()),
                                                       self.loop.run_forever()), daemon=True)
        self.thread.start()
        assert started.wait(10)

    async def _session(self, reader, writer):
        with self.lock:
            self.connections.append([])
            conn = len(self.connections)
            commands = self.connections[-1]
        mail_from, rcpts = None, []

        async def reply(text):
            writer.write(text.encode() + b"\r\n")
            await writer.drain()

        try:
            await reply("220 upstream.test ESMTP")
            while True:
                line = await reader.readline()
                if not line:
                    return
                cmd = line.decode(errors="replace").rstrip("\r\n")
                with self.lock:
                    commands.append(cmd)
                verb = cmd.split(" ", 1)[0].upper()
                if verb == "EHLO" and self.mode == "no-ehlo":
                    await reply("502 5.5.2 Error: command not recognized")
                elif verb == "EHLO":
                    await reply("250-upstream.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-STARTTLS\r\n250 SIZE 100000000")
                elif verb == "HELO":
                    await reply("250 upstream.test")
                elif verb == "STARTTLS":
                    await reply("220 2.0.0 Ready to start TLS")
                    if self.mode == "garbage":
                        # after the 220 has been read (sent with it, the gateway
                        # refuses the bytes as pipelined, which is also a failure)
                        await asyncio.sleep(0.2)
                        writer.write(b"this is not a TLS record at all\r\n" * 4)
                        await writer.drain()
                    return  # closes the connection
                elif verb == "MAIL":
                    mail_from, rcpts = cmd[len("MAIL FROM:"):].split(" ")[0].strip("<>"), []
                    await reply("250 2.1.0 Ok")
                elif verb == "RCPT":
                    rcpts.append(cmd[len("RCPT TO:"):].strip("<>"))
                    await reply("250 2.1.5 Ok")
                elif verb == "DATA":
                    await reply("354 End data with <CR><LF>.<CR><LF>")
                    data = b""
                    while True:
                        l = await reader.readline()
                        if not l or l == b".\r\n":
                            break
                        data += l[1:] if l.startswith(b"..") else l
                    with self.lock:
                        self.messages.append((conn, mail_from, rcpts, data))
                    await reply("250 2.0.0 Ok: queued as UP1")
                elif verb == "RSET":
                    mail_from, rcpts = None, []
                    await reply("250 2.0.0 Ok")
                elif verb == "QUIT":
                    await reply("221 2.0.0 Bye")
                    return
                else:
                    await reply("502 5.5.2 Error: command not recognized")
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def verbs(self):
        """The command verbs of each connection, in order."""
        with self.lock:
            return [[c.split(" ", 1)[0].upper() for c in conn] for conn in self.connections]

    def stop(self):
        async def shutdown():
            self.server.close()
            sessions = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in sessions:
                t.cancel()
            await asyncio.gather(*sessions, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(params=["garbage", "close"])
def broken_upstream(request):
    u = BrokenTlsUpstream(request.param)
    yield u
    u.stop()


def tls_gateway(make_gateway, up, starttls, reuse_time=0):
    g = make_gateway(overrides={"relay": {"upstream_host": "127.0.0.1", "upstream_port": up.port,
                                          "upstream_starttls": starttls, "upstream_reuse_time": reuse_time,
                                          "upstream_timeout": 60}})
    g.sql("INSERT INTO relay_grants(address, expires_at) VALUES('127.0.0.1', unixepoch() + 600)")
    return g


def tls_failure_logged(g):
    """The log says how STARTTLS failed: the handshake (on bytes that are not
    TLS, or a closed connection), or, should the garbage arrive together with
    the 220 on a slow machine, bytes pipelined after it."""
    log = g.log()
    return "TLS handshake with upstream failed" in log or "STARTTLS: bytes pipelined after the 220" in log


def body(n):
    return (f"From: s{n}@example.org\r\nTo: r{n}@remote.test\r\nSubject: fallback {n}\r\n"
            f"Message-ID: <fallback-{n}@example.org>\r\n\r\nmessage number {n}\r\n..dot-stuffed line\r\n").encode()


def send(g, n):
    """Relays message n from 127.0.0.1 with smtplib; returns the gateway's
    (code, text) for the message: the reply to the end of DATA, or the
    refusal of the RCPT (the upstream transaction opens there) or of DATA."""
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=120) as s:
        s.ehlo("client.test")
        assert s.mail(f"s{n}@example.org")[0] == 250
        rcpt = s.rcpt(f"r{n}@remote.test")
        if rcpt[0] != 250:
            return rcpt
        try:
            return s.data(body(n))
        except smtplib.SMTPDataError as e:
            return e.smtp_code, e.smtp_error


def test_opportunistic_relays_in_clear_once_and_remembers_the_failure(make_gateway, broken_upstream):
    up = broken_upstream
    g = tls_gateway(make_gateway, up, "opportunistic")
    code, text = send(g, 1)
    assert code == 250 and text.startswith(b"2.0.0 Ok: queued as "), (code, text)
    # Connection 1 tried TLS and broke; connection 2 carried the message in clear.
    # (The client's 250 does not wait for the upstream's 221: QUIT may still
    # be on its way when the reply is in.)
    quitted = [["EHLO", "STARTTLS"], ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]]
    wait_until(lambda: up.verbs()[:2] == quitted)
    assert up.verbs()[:2] == [["EHLO", "STARTTLS"], ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]], up.verbs()
    with up.lock:
        msgs = list(up.messages)
    assert [(c, f, r) for c, f, r, _ in msgs] == [(2, "s1@example.org", ["r1@remote.test"])]
    assert strip_received(msgs[0][3]) == body(1)
    assert g.wait_log("STARTTLS failed, relaying in clear on a new connection and without TLS for 600 s upstream=")
    assert tls_failure_logged(g)
    assert g.wait_log("tls=fallback")

    # The next messages go in clear at once: no STARTTLS, one connection each.
    for n in (2, 3):
        code, text = send(g, n)
        assert code == 250, (code, text)
    wait_until(lambda: up.verbs()[2:] == [["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]] * 2)
    assert up.verbs()[2:] == [["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]] * 2, up.verbs()
    with up.lock:
        assert [(c, f) for c, f, _, _ in up.messages] == [(2, "s1@example.org"), (3, "s2@example.org"),
                                                          (4, "s3@example.org")]
    # One warning for the failure, not one per message.
    assert g.log().count("STARTTLS failed, relaying in clear") == 1, g.log()
    assert g.log().count("tls=fallback") == 3


def test_opportunistic_fallback_with_connection_reuse(make_gateway, broken_upstream):
    up = broken_upstream
    g = tls_gateway(make_gateway, up, "opportunistic", reuse_time=30)
    assert send(g, 1)[0] == 250
    assert send(g, 2)[0] == 250
    # The clear connection is kept and carries the second message too.
    assert up.verbs() == [["EHLO", "STARTTLS"], ["EHLO", "MAIL", "RCPT", "DATA", "MAIL", "RCPT", "DATA"]], up.verbs()
    with up.lock:
        assert [(c, f) for c, f, _, _ in up.messages] == [(2, "s1@example.org"), (2, "s2@example.org")]


def test_required_refuses_with_451_and_delivers_nothing(make_gateway, broken_upstream):
    up = broken_upstream
    g = tls_gateway(make_gateway, up, "required")
    for n in (1, 2):
        code, text = send(g, n)
        assert code == 451 and text.startswith(b"4.4.1 "), (code, text)
    # Each message tried TLS (no fallback, nothing remembered) and went no further.
    assert up.verbs() == [["EHLO", "STARTTLS"], ["EHLO", "STARTTLS"]], up.verbs()
    with up.lock:
        assert up.messages == []
    assert g.wait_log("upstream_reply=451 upstream_status=4.4.1 result=refused upstream_detail=")
    assert tls_failure_logged(g)
    assert "relaying in clear" not in g.log()
    assert g.dropped() == []
    time.sleep(0.2)
    assert len(up.verbs()) == 2  # and no retry behind the client's back


def test_upstream_that_refuses_ehlo_is_greeted_with_helo(make_gateway):
    # RFC 5321 §3.2: a legacy MTA that knows only HELO still gets the mail,
    # without extensions (no STARTTLS, PIPELINING or SIZE used).
    up = BrokenTlsUpstream("no-ehlo")
    try:
        g = tls_gateway(make_gateway, up, "opportunistic")
        with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=15) as s:
            assert s.sendmail("a@example.org", ["x@remote.test"], b"Subject: old\r\n\r\nhello\r\n") == {}
        assert up.verbs()[0][:4] == ["EHLO", "HELO", "MAIL", "RCPT"]
        assert len(up.messages) == 1 and up.messages[0][2] == ["x@remote.test"]
    finally:
        up.stop()
