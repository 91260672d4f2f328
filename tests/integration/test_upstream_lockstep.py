"""SMTP is lockstep (RFC 5321 4.1.1, RFC 2920 3): a reply the relay client
did not ask for was read as the answer to its next command, and every reply
after it as the one before's. An upstream that said 250 in the middle of the
body and 554 to the final dot had its 250 taken as the verdict: the client
was told 250 and the relayed copy was lost. The upstream here is a raw
socket server scripted per command; the client is smtplib, with a local
recipient beside the relayed ones, so that the promise is checked for both:
a message answered 250 is delivered, a message refused is delivered nowhere."""
import ctypes
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest

from popgate_test import make_gateway  # noqa: F401  (fixture)
from smtp_support import relay_overrides

SENDER = "s@example.org"
# Long enough that the relay client is still sending it when the upstream
# speaks after its first 200 bytes.
BODY = b"Subject: lockstep\r\n\r\n" + b"a line of the body\r\n" * 50000


class ScriptedUpstream:
    """One connection at a time. `replies` maps a command word (MAIL, DATA,
    DOT, or RCPT:<address>) to the bytes answered; `late` to bytes sent
    0.2 s after that answer; `midbody` is sent once 200 bytes of the body
    have arrived (a refusal there is its last word on the message: the dot
    gets no other). Records the messages it answered 250 at the dot."""

    def __init__(self, replies=None, late=None, midbody=None, pipelining=False, tls=None):
        self.replies = replies or {}
        self.tls = tls  # a server SSLContext: STARTTLS offered
        self.before_midbody = None  # called just before `midbody` is sent
        self.late = late or {}
        self.midbody = midbody
        self.pipelining = pipelining
        self.accepted = []
        self.commands = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self.serve, daemon=True).start()

    def stop(self):
        self.stopped = True
        self.sock.close()

    def serve(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.conversation, args=(c,), daemon=True).start()

    def answer(self, c, key, default):
        reply = self.replies.get(key, default)
        if isinstance(reply, list):
            # Each part its own write (under TLS its own record), all in one
            # TCP segment: the client reads them at once.
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            for part in reply:
                c.sendall(part)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
        else:
            c.sendall(reply)
        if key in self.late:
            time.sleep(0.2)
            late = self.late[key]
            late(c) if callable(late) else c.sendall(late)

    def conversation(self, c):
        f = c.makefile("rb")
        try:
            c.sendall(b"220 up.test ESMTP\r\n")
            while True:
                line = f.readline()
                if not line:
                    return
                word = line.split(b" ")[0].split(b":")[0].strip().upper().decode()
                self.commands.append(line.strip().decode())
                if word == "EHLO":
                    c.sendall(b"250-up.test\r\n" + (b"250-PIPELINING\r\n" if self.pipelining else b"") +
                              (b"250-STARTTLS\r\n" if self.tls and not isinstance(c, ssl.SSLSocket) else b"") +
                              b"250 8BITMIME\r\n")
                elif word == "STARTTLS":
                    c.sendall(b"220 2.0.0 ready\r\n")
                    c = self.tls.wrap_socket(c, server_side=True)
                    f = c.makefile("rb")
                elif word == "MAIL":
                    self.answer(c, "MAIL", b"250 2.1.0 Ok\r\n")
                elif word == "RCPT":
                    addr = line.decode().split("<", 1)[1].split(">", 1)[0]
                    self.answer(c, "RCPT:" + addr, b"250 2.1.5 Ok\r\n")
                elif word == "DATA":
                    self.answer(c, "DATA", b"354 go ahead\r\n")
                    body, told = b"", False
                    while not body.endswith(b"\r\n.\r\n"):
                        chunk = f.readline()
                        if not chunk:
                            return
                        body += chunk
                        if self.midbody and not told and len(body) > 200:
                            if self.before_midbody:
                                self.before_midbody()
                            c.sendall(self.midbody)
                            told = True
                    if self.midbody and not self.midbody.startswith(b"2"):
                        continue
                    reply = self.replies.get("DOT", b"250 2.0.0 queued as UP1\r\n")
                    if reply.startswith(b"250"):
                        self.accepted.append(body)
                    self.answer(c, "DOT", reply)
                elif word == "RSET":
                    c.sendall(b"250 2.0.0 Ok\r\n")
                elif word == "QUIT":
                    c.sendall(b"221 2.0.0 Bye\r\n")
                    return
                else:
                    c.sendall(b"502 5.5.2 what\r\n")
        except OSError:
            return
        finally:
            c.close()


@pytest.fixture
def scripted():
    made = []

    def make(**kw):
        u = ScriptedUpstream(**kw)
        made.append(u)
        return u

    yield make
    for u in made:
        u.stop()


def gateway(make_gateway, up, **relay):
    """A gateway relaying to `up` (no pooling), alice local, 127.0.0.1
    granted; `relay` adds [relay] keys."""
    o = relay_overrides(up, relay={"upstream_reuse_time": 0, "upstream_timeout": 5, **relay})
    g = make_gateway(overrides=o)
    g.add_user("alice", "alice-pw")
    g.sql("INSERT INTO relay_grants(address, expires_at) VALUES('127.0.0.1', unixepoch()+600)")
    return g


def send_to_alice_and_one_relayed(g):
    """The reply to the end of data of one message to a local and a relayed
    recipient, both taken."""
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        s.ehlo("client.test")
        assert s.mail(SENDER)[0] == 250
        assert s.rcpt("alice@gw.test")[0] == 250
        assert s.rcpt("x@remote.test")[0] == 250
        return s.data(BODY)


def test_a_250_in_the_middle_of_the_body_is_not_the_verdict(make_gateway, scripted):
    up = scripted(midbody=b"250 2.0.0 early\r\n", replies={"DOT": b"554 5.7.1 refused after all\r\n"})
    g = gateway(make_gateway, up)
    code, text = send_to_alice_and_one_relayed(g)
    assert (code, text[:6]) == (451, b"4.4.1 "), (code, text)
    assert up.accepted == [] and g.messages("alice") == []
    assert g.wait_log("a 250 reply before it was sent")
    assert "smtp relayed" not in g.log()


def test_a_refusal_in_the_middle_of_the_body_is_passed_on(make_gateway, scripted):
    up = scripted(midbody=b"552 5.3.4 message too big\r\n")
    g = gateway(make_gateway, up)
    code, text = send_to_alice_and_one_relayed(g)
    assert code == 552 and b"message too big" in text, (code, text)
    assert up.accepted == [] and g.messages("alice") == []


@pytest.mark.parametrize("pipelining", [False, True], ids=["plain", "pipelining"])
@pytest.mark.parametrize("where", ["RCPT:a@remote.test", "MAIL"])
@pytest.mark.parametrize("when", ["together", "late"])
def test_a_reply_given_twice_fails_the_transaction_and_nothing_is_delivered(make_gateway, scripted, pipelining,
                                                                            where, when):
    # b@ would be refused 550: read one step early, its 550 became DATA's
    # verdict and b@'s RCPT got the stray 250.
    ok = b"250 2.1.5 Ok\r\n" if where.startswith("RCPT") else b"250 2.1.0 Ok\r\n"
    replies = {"RCPT:b@remote.test": b"550 5.1.1 unknown b\r\n"}
    late = {}
    if when == "together":
        replies[where] = ok + ok
    else:
        late[where] = ok
    up = scripted(replies=replies, late=late, pipelining=pipelining)
    g = gateway(make_gateway, up)
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        s.ehlo("client.test")
        assert s.mail(SENDER)[0] == 250
        assert s.rcpt("alice@gw.test")[0] == 250
        first = s.rcpt("a@remote.test")
        time.sleep(0.4)  # a late duplicate has arrived
        second = s.rcpt("b@remote.test")
        data = s.docmd("DATA")
        if data[0] == 354:
            s.send(BODY + b".\r\n")
            data = s.getreply()
    codes = (first[0], second[0], data[0])
    if (where, when, pipelining) == ("MAIL", "together", False):
        # The stray reply was there before a@'s RCPT was written: both
        # relayed recipients get 451 and the message goes to alice only.
        assert codes == (451, 451, 250), codes
        assert up.accepted == [] and len(g.messages("alice")) == 1, codes
    else:
        # a@ gets a 250 (its own, or the stray one read as its reply); b@
        # finds a reply nobody asked for waiting, and the transaction,
        # which holds a@, can carry the message nowhere.
        assert codes == (250, 451, 451), codes
        assert up.accepted == [] and g.messages("alice") == [], codes
    assert g.wait_log("the upstream sent a reply before it was asked")


def test_an_upstream_in_step_relays_as_before(make_gateway, scripted):
    up = scripted(replies={"RCPT:b@remote.test": b"550 5.1.1 unknown b\r\n"}, pipelining=True)
    g = gateway(make_gateway, up)
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        s.ehlo("client.test")
        assert s.mail(SENDER)[0] == 250
        assert s.rcpt("alice@gw.test")[0] == 250
        assert s.rcpt("a@remote.test")[0] == 250
        assert s.rcpt("b@remote.test")[0] == 550
        code, _ = s.data(BODY)
    assert code == 250
    assert len(up.accepted) == 1 and len(g.messages("alice")) == 1


@pytest.fixture(scope="module")
def upstream_tls(tmp_path_factory):
    d = tmp_path_factory.mktemp("up-tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-subj", "/CN=up.test", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-days", "2"],
                   check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    return ctx


@pytest.mark.parametrize("case", ["data", "rcpt"])
def test_over_tls_a_reply_in_a_record_of_its_own_is_still_out_of_step(make_gateway, scripted, upstream_tls, case):
    # Two TLS records in one TCP segment: the second was read into the TLS
    # stream's own buffer with the first, where neither our buffer nor a
    # peek at the socket saw it. DATA's 354 came with a 250 behind it, and
    # that 250 was taken for the verdict on the message (a review's finding).
    if case == "data":
        up = scripted(tls=upstream_tls, replies={"DATA": [b"354 go ahead\r\n", b"250 2.0.0 early\r\n"],
                                                 "DOT": b"554 5.7.1 refused after all\r\n"})
    else:
        up = scripted(tls=upstream_tls, replies={"RCPT:x@remote.test": [b"250 2.1.5 Ok\r\n", b"250 2.1.5 Ok\r\n"],
                                                 "RCPT:b@remote.test": b"550 5.1.1 unknown b\r\n"})
    g = gateway(make_gateway, up, upstream_starttls="required")
    if case == "data":
        code, text = send_to_alice_and_one_relayed(g)
        assert (code, text[:6]) == (451, b"4.4.1 "), (code, text)
    else:
        with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
            s.ehlo("client.test")
            assert s.mail(SENDER)[0] == 250
            assert s.rcpt("alice@gw.test")[0] == 250
            assert s.rcpt("x@remote.test")[0] == 250
            assert s.rcpt("b@remote.test")[0] == 451  # the stray 250 was its answer
            assert s.docmd("DATA")[0] == 451
    assert up.accepted == [] and g.messages("alice") == []
    assert any(cmd == "STARTTLS" for cmd in up.commands)


def key_update(c):
    """A TLS 1.3 KeyUpdate from the upstream, sent at once (RFC 8446 4.6.3):
    TLS's own record, no SMTP bytes. Python has no call for it: OpenSSL's,
    on the SSL* of CPython 3.11's _ssl object (after its head and socket)."""
    libssl = ctypes.CDLL("libssl.so.3")
    libssl.SSL_key_update.argtypes = [ctypes.c_void_p, ctypes.c_int]
    libssl.SSL_do_handshake.argtypes = [ctypes.c_void_p]
    libssl.SSL_version.argtypes = [ctypes.c_void_p]
    ssl_ptr = ctypes.c_void_p.from_address(id(c._sslobj) + 24).value
    assert libssl.SSL_version(ssl_ptr) == 0x0304
    assert libssl.SSL_key_update(ssl_ptr, 0) == 1 and libssl.SSL_do_handshake(ssl_ptr) == 1


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="reaches into CPython 3.11's _ssl object")
@pytest.mark.parametrize("after", ["RCPT:x@remote.test", "DATA"])
def test_a_tls_keyupdate_from_the_upstream_is_no_reply(make_gateway, scripted, upstream_tls, after):
    # d55a686 took any TLS record waiting to be read for an unsolicited
    # reply: a KeyUpdate after a RCPT's 250 gave the next RCPT 451, and one
    # after DATA's 354 held the end of data until upstream_data_done_timeout
    # and then 451, at every try (a review's finding).
    up = scripted(tls=upstream_tls, late={after: key_update})
    # The fault held the end of data for the whole timeout: 10 s tells it
    # apart from a loaded machine's slow answer (3 s gave a CI run a 451).
    g = gateway(make_gateway, up, upstream_starttls="required", upstream_data_done_timeout=10)
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        s.ehlo("client.test")
        assert s.mail(SENDER)[0] == 250
        assert s.rcpt("x@remote.test")[0] == 250
        time.sleep(0.5)  # the KeyUpdate has come
        assert s.rcpt("y@remote.test")[0] == 250
        assert s.docmd("DATA")[0] == 354
        time.sleep(0.5)
        s.send(BODY + b".\r\n")
        assert s.getreply()[0] == 250
    assert len(up.accepted) == 1


def close_between_commands(c):
    """The upstream ends the connection after a reply, unasked: under TLS
    with a close_notify first (not waiting for the gateway's), then a FIN."""
    if isinstance(c, ssl.SSLSocket):
        c.settimeout(0.2)
        try:
            c.unwrap()
        except (OSError, ValueError):
            pass
    c.shutdown(socket.SHUT_RDWR)


@pytest.mark.parametrize("tls", [False, True], ids=["clear", "starttls"])
def test_an_upstream_that_closes_between_commands_is_logged_as_closed(make_gateway, scripted, upstream_tls, tls):
    # The relay client found the closed connection before its next command
    # and failed the transaction (451), right; its log line said "the
    # upstream sent a reply before it was asked", which sent administrators
    # looking for a misbehaving upstream instead of a closed connection.
    up = scripted(tls=upstream_tls if tls else None, late={"RCPT:x@remote.test": close_between_commands})
    g = gateway(make_gateway, up, upstream_starttls="required" if tls else "none")
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        s.ehlo("client.test")
        assert s.mail(SENDER)[0] == 250
        assert s.rcpt("alice@gw.test")[0] == 250
        assert s.rcpt("x@remote.test")[0] == 250
        time.sleep(0.5)  # the upstream has closed
        code, text = s.rcpt("y@remote.test")
        assert (code, text[:6]) == (451, b"4.4.1 "), (code, text)
        assert s.docmd("DATA")[0] == 451  # x@'s transaction is gone: nothing to carry the message
    assert up.accepted == [] and g.messages("alice") == []
    assert g.wait_log("RCPT: the upstream closed the connection")
    assert "before it was asked" not in g.log()


class SplittingProxy:
    """TCP between the gateway and `port`; told to, it forwards the next
    chunk from the upstream but its last 5 bytes, and those 1.5 s later: a
    TLS record cut across two segments, as TCP may cut any."""

    def __init__(self, port):
        self.target = port
        self.split_next = False
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                down, _ = self.sock.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self.pump, args=(down, up, False), daemon=True).start()
            threading.Thread(target=self.pump, args=(up, down, True), daemon=True).start()

    def pump(self, src, dst, from_upstream):
        try:
            while data := src.recv(65536):
                if from_upstream and self.split_next and len(data) > 5:
                    self.split_next = False
                    dst.sendall(data[:-5])
                    time.sleep(1.5)
                    data = data[-5:]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self):
        self.sock.close()


def test_over_tls_a_reply_record_cut_across_segments_is_still_out_of_step(make_gateway, scripted, upstream_tls):
    # 614ba50 read what was waiting without blocking and called the link in
    # step when the read found no whole record: a 250 whose record was cut
    # in two was then taken for the verdict on the message (a review's
    # finding, with a proxy that held back a record's last bytes).
    up = scripted(tls=upstream_tls, midbody=b"250 2.0.0 early\r\n",
                  replies={"DOT": b"554 5.7.1 refused after all\r\n"})
    proxy = SplittingProxy(up.port)
    up.before_midbody = lambda: setattr(proxy, "split_next", True)
    try:
        g = gateway(make_gateway, up, upstream_port=proxy.port, upstream_starttls="required")
        code, text = send_to_alice_and_one_relayed(g)
        assert (code, text[:6]) == (451, b"4.4.1 "), (code, text)
        assert up.accepted == [] and g.messages("alice") == []
    finally:
        proxy.stop()


@pytest.mark.parametrize("split", [False, True], ids=["whole", "in-two-reads"])
def test_an_upstream_reply_longer_than_2046_octets_is_cut_not_a_broken_upstream(make_gateway, scripted, split):
    # Postfix echoes a refused address in its reply, and popgate takes
    # paths of up to 900 octets; a reply line past the 2046 octets kept was
    # taken for a broken upstream, and the whole transaction, recipients
    # already accepted included, got 451 (a review's finding).
    long_rcpt = "w" * 870 + "@remote.test"
    refusal = b"554 5.7.1 <" + long_rcpt.encode() * 3 + b">: Relay access denied\r\n"
    assert len(refusal) > 2048
    if split:  # the cut is made before the line's end has come
        up = scripted(replies={"RCPT:" + long_rcpt: refusal[:2300]},
                      late={"RCPT:" + long_rcpt: refusal[2300:]})
    else:
        up = scripted(replies={"RCPT:" + long_rcpt: refusal})
    g = gateway(make_gateway, up)
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        s.ehlo("client.test")
        assert s.mail(SENDER)[0] == 250
        assert s.rcpt("x@remote.test")[0] == 250
        code, text = s.rcpt(long_rcpt)
        assert code == 554 and b"Relay access denied" not in text and len(text) < 2100, (code, len(text))
        assert s.rcpt("y@remote.test")[0] == 250
        code, _ = s.data(BODY)
        assert code == 250
    assert len(up.accepted) == 1
    assert [c for c in up.commands if c.startswith("RCPT")] == \
        ["RCPT TO:<x@remote.test>", f"RCPT TO:<{long_rcpt}>", "RCPT TO:<y@remote.test>"]
