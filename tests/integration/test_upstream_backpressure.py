"""An upstream that reads the message slower than the client sends it.

popgate streams DATA to the upstream as it arrives. In clear, what fits in
the socket's send buffer is written at once, without a deadline; only a
write that has to wait for the upstream to read gets relay.upstream_timeout.
These tests make the upstream stop reading after its 354, so that the
writes fill the kernel's buffers and have to wait: an upstream that resumes
gets the whole message, byte for byte, once; one that never resumes fails
the message with 451 and receives no end of data. The client is smtplib;
the upstream is a plain socket server (aiosmtpd reads as fast as it can)."""
import smtplib
import socket
import threading
import time

import pytest

from popgate_test import make_gateway  # noqa: F401

SENDER = "a@example.org"
RCPT = "far@remote.test"


class PausingUpstream:
    """One SMTP connection at a time, no PIPELINING. After its 354 it reads
    nothing for `pause` seconds (None: never again), then reads to the end
    of data and answers 250. `data` holds each message as received (dot-
    stuffed, with the terminator); `ended` is set when a message's end of
    data arrived."""

    def __init__(self, pause):
        self.pause = pause
        self.data = []
        self.ended = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.session, args=(conn,), daemon=True).start()

    def session(self, conn):
        f = conn.makefile("rb")
        try:
            conn.sendall(b"220 pausing.test ESMTP\r\n")
            while True:
                line = f.readline()
                if not line:
                    return
                verb = line[:4].upper()
                if verb == b"EHLO":
                    conn.sendall(b"250-pausing.test\r\n250 8BITMIME\r\n")
                elif verb == b"DATA":
                    conn.sendall(b"354 go on\r\n")
                    if self.pause is None:
                        self.stop.wait()  # never reads again
                        return
                    time.sleep(self.pause)
                    body = bytearray()
                    while not body.endswith(b"\r\n.\r\n"):
                        chunk = f.readline()
                        if not chunk:
                            return
                        body += chunk
                    self.data.append(bytes(body))
                    self.ended.set()
                    conn.sendall(b"250 2.0.0 queued as SLOW1\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 ok\r\n")
        finally:
            f.close()
            conn.close()

    def close(self):
        self.stop.set()
        self.sock.close()


@pytest.fixture
def paused(request):
    up = PausingUpstream(request.param)
    yield up
    up.close()


def message(mb):
    """About `mb` MB: numbered lines, every tenth one starting with a dot."""
    lines = [(b"." if i % 10 == 0 else b"") + b"line %08d " % i + b"x" * 60 for i in range((mb << 20) // 72)]
    return b"From: a@example.org\r\nSubject: big\r\n\r\n" + b"\r\n".join(lines) + b"\r\n"


def gateway(make_gateway, up, timeout):
    g = make_gateway(overrides={"relay": {"upstream_host": "127.0.0.1", "upstream_port": up.port,
                                          "upstream_starttls": "none", "upstream_timeout": timeout}})
    g.sql("INSERT INTO relay_grants(address, expires_at) VALUES('127.0.0.1', unixepoch()+600)")
    return g


@pytest.mark.parametrize("paused", [1.5], indirect=True)
def test_an_upstream_that_pauses_reading_gets_the_whole_message_once(make_gateway, paused):
    g = gateway(make_gateway, paused, timeout=10)
    body = message(8)
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=60) as s:
        t0 = time.monotonic()
        assert s.sendmail(SENDER, [RCPT], body) == {}
        assert time.monotonic() - t0 >= 1.4  # the writes did wait for the upstream
    assert len(paused.data) == 1
    got = paused.data[0]
    # what the upstream read is the dot-stuffed message after our Received header
    start = got.index(b"From: a@example.org\r\n")
    assert got[:start].startswith(b"Received: from ")
    stuffed = b"\r\n".join((b"." + ln if ln.startswith(b".") else ln) for ln in body.split(b"\r\n"))
    assert got[start:] == stuffed + b".\r\n"


@pytest.mark.parametrize("paused", [None], indirect=True)
def test_an_upstream_that_stops_reading_fails_the_message_with_451(make_gateway, paused):
    g = gateway(make_gateway, paused, timeout=1)
    body = message(8)
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=60) as s:
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail(SENDER, [RCPT], body)
        assert (e.value.smtp_code, e.value.smtp_error[:6]) == (451, b"4.4.1 ")
        assert s.noop()[0] == 250  # the session goes on
    assert not paused.ended.is_set() and paused.data == []
    assert g.wait_log("result=upstream-lost")
