"""Issue 5, limits and brute-force defence: every [limits] and [auth] bound is
crossed with real sockets. Each test checks the exact reply, that the
connection is closed (or resynchronised where the protocol allows), the log
line, and that a session beside it goes on unharmed.

127.0.0.2 is a second client address: Linux routes all of 127.0.0.0/8 to lo,
so a socket bound to it reaches the daemon's 127.0.0.1 listeners."""
import base64
import poplib
import re
import socket
import smtplib
import ssl
import time

import pytest

from popgate_test import client_tls_context, deliver_file, make_gateway  # noqa: F401  (fixture)

OTHER = "127.0.0.2"
SMTP_GREETING = b"220 gw.test ESMTP popgate\r\n"
AUTH_FAILED = b"-ERR [AUTH] Authentication failed.\r\n"
POP3_BLOCKED = re.compile(rb"-ERR \[AUTH\] Too many authentication failures from your address, try again in \d+ seconds\r\n")
TIMEOUT_421 = b"421 4.4.2 gw.test Error: timeout exceeded\r\n"

from raw_client import Client, raw_clients_closed  # noqa: E402,F401  (autouse fixture)




def pop3_login(port, user, pw, src="127.0.0.1"):
    """USER/PASS on a fresh connection: (reply to PASS, seconds it took, client)."""
    c = Client(port, src)
    assert c.greeting.startswith(b"+OK popgate POP3 server ready")
    assert c.cmd(f"USER {user}\r\n".encode()) == b"+OK\r\n"
    t = time.time()
    r = c.cmd(f"PASS {pw}\r\n".encode())
    return r, time.time() - t, c


def plain(user, pw):
    return base64.b64encode(f"\0{user}\0{pw}".encode()).decode()


def smtp_auth(c, user, pw):
    t = time.time()
    r = c.smtp(f"AUTH PLAIN {plain(user, pw)}\r\n".encode())
    return r, time.time() - t


def smtp_client(port, src="127.0.0.1"):
    c = Client(port, src)
    assert c.greeting == SMTP_GREETING
    assert c.smtp(b"EHLO client.test\r\n").startswith(b"250-gw.test\r\n")
    return c


def served_again(fn, timeout=5):
    """Retries `fn` until it returns True: a closed session frees its slot only
    once the daemon has read the EOF."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if fn():
            return True
        time.sleep(0.05)
    return False


def wait_count(g, needle, n, timeout=5):
    """The log holds `needle` exactly n times (waiting for lines still on their way)."""
    deadline = time.time() + timeout
    while g.log().count(needle) < n and time.time() < deadline:
        time.sleep(0.02)
    return g.log().count(needle) == n


def half_client_hello() -> bytes:
    """The first half of a real TLS ClientHello."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_tls_context().wrap_bio(inc, out, server_hostname="gw.test")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = out.read()
    assert hello[:1] == b"\x16" and len(hello) > 100
    return hello[: len(hello) // 2]


# -- sessions in all and per address --------------------------------------------

def test_max_sessions_per_ip_refuses_with_protocol_error_and_other_address_served(make_gateway):
    g = make_gateway(overrides={"limits": {"max_sessions_per_ip": 2, "max_sessions": 50}})
    g.add_user("alice", "pw-alice")
    a = Client(g.port("pop3"))
    b = Client(g.port("smtp"))
    assert b.greeting == SMTP_GREETING
    # third session from 127.0.0.1, on any listener
    c = Client(g.port("pop3"))
    assert c.greeting == b"-ERR [SYS/TEMP] too many sessions from this address (limits.max_sessions_per_ip=2)\r\n"
    assert c.rest_until_close() == (b"", True)
    d = Client(g.port("submission"))
    assert d.greeting == b"421 4.7.0 gw.test Error: too many connections\r\n"
    assert d.rest_until_close() == (b"", True)
    # implicit TLS: no clear-text line (it would be noise to a TLS client), just the close
    e = Client(g.port("pop3s"), greet=False)
    assert e.rest_until_close() == (b"", True)
    assert g.wait_log("pop3 refused ip=127.0.0.1 listener=pop3 reason=\"too many sessions from this address "
                      "(limits.max_sessions_per_ip=2)")
    assert g.wait_log("smtp refused ip=127.0.0.1 listener=submission reason=\"too many sessions from this address")
    assert g.wait_log("pop3 refused ip=127.0.0.1 listener=pop3s")
    # another address is served, and logs in
    r, _, o = pop3_login(g.port("pop3"), "alice", "pw-alice", src=OTHER)
    assert r.startswith(b"+OK Logged in"), r
    assert o.cmd(b"QUIT\r\n").startswith(b"+OK")
    # the admitted sessions were not disturbed
    assert a.cmd(b"CAPA\r\n") == b"+OK Capability list follows\r\n"
    assert b.smtp(b"NOOP\r\n") == b"250 2.0.0 Ok\r\n"
    # a slot freed is a slot for the next client
    a.close()

    def fresh():
        c = Client(g.port("pop3"))
        ok = c.greeting.startswith(b"+OK popgate")
        c.close()
        return ok
    assert served_again(fresh)


def test_max_sessions_total_counts_both_protocols(make_gateway):
    g = make_gateway(overrides={"limits": {"max_sessions": 3, "max_sessions_per_ip": 50}})
    held = [Client(g.port("pop3")), Client(g.port("smtp")), Client(g.port("pop3"), src=OTHER)]
    assert all(h.greeting.startswith((b"+OK", b"220 ")) for h in held)
    c = Client(g.port("smtp"), src=OTHER)
    assert c.greeting == b"421 4.7.0 gw.test Error: too many connections\r\n"
    assert c.rest_until_close() == (b"", True)
    d = Client(g.port("pop3"), src="127.0.0.3")
    assert d.greeting == b"-ERR [SYS/TEMP] too many sessions (limits.max_sessions=3)\r\n"
    assert d.rest_until_close() == (b"", True)
    assert g.wait_log("smtp refused ip=127.0.0.2 listener=smtp reason=\"too many sessions (limits.max_sessions=3)")
    assert g.wait_log("pop3 refused ip=127.0.0.3 listener=pop3 reason=\"too many sessions (limits.max_sessions=3)")
    # Session id first, as on every line about a client (fail2ban's _pre).
    assert re.search(r" sid=[0-9a-f]{8} smtp refused ip=127\.0\.0\.2 ", g.log()), g.log()
    assert held[1].smtp(b"NOOP\r\n") == b"250 2.0.0 Ok\r\n"
    held[1].smtp(b"QUIT\r\n")

    def fresh():
        c = Client(g.port("smtp"), src="127.0.0.3")
        ok = c.greeting == SMTP_GREETING
        c.close()
        return ok
    assert served_again(fresh)


# -- idle, DATA and TLS handshake timeouts ----------------------------------------

def test_pop3_idle_timeout_closes_silently_and_spares_active_session(make_gateway):
    g = make_gateway(overrides={"limits": {"pop3_idle_timeout": 1}})
    idle = Client(g.port("pop3"))
    busy = Client(g.port("pop3"))
    t0 = time.time()
    while time.time() - t0 < 2.5:   # more than twice the timeout, never idle for a whole period
        assert busy.cmd(b"CAPA\r\n") == b"+OK Capability list follows\r\n"
        busy.buf = b""               # the rest of the list is not under test here
        time.sleep(0.3)
    # RFC 1939 §3: the autologout timer closes without a response
    out, closed = idle.rest_until_close(timeout=3)
    assert closed and out == b""
    assert 0.8 <= time.time() - t0 <= 5
    assert g.wait_log("pop3 end reason=timeout user=- ip=127.0.0.1")
    busy.buf = b""
    time.sleep(0.2)
    busy.buf = b""
    busy.send(b"QUIT\r\n")
    out, closed = busy.rest_until_close()
    assert out.endswith(b"+OK popgate POP3 server signing off\r\n") and closed


def test_smtp_idle_timeout_421_mid_transaction_and_spares_active_session(make_gateway):
    g = make_gateway(overrides={"limits": {"smtp_idle_timeout": 1}})
    g.add_user("alice", "pw-alice")
    idle = smtp_client(g.port("smtp"))
    assert idle.smtp(b"MAIL FROM:<a@b.test>\r\n") == b"250 2.1.0 Ok\r\n"
    busy = smtp_client(g.port("smtp"))
    t0 = time.time()
    while time.time() - t0 < 2.5:
        assert busy.smtp(b"NOOP\r\n") == b"250 2.0.0 Ok\r\n"
        time.sleep(0.3)
    out, closed = idle.rest_until_close(timeout=3)
    assert (out, closed) == (TIMEOUT_421, True)
    assert g.wait_log("smtp end reason=timeout ip=127.0.0.1 messages=0")
    assert busy.smtp(b"QUIT\r\n") == b"221 2.0.0 Bye\r\n"
    assert g.messages("alice") == []


def test_data_timeout_is_a_total_bound_slow_loris_is_cut(make_gateway):
    # The idle timeout is long; a writer sending one byte every 0.3 s is never
    # idle, so only the total DATA bound can stop it.
    g = make_gateway(overrides={"limits": {"smtp_idle_timeout": 30, "data_timeout": 2}})
    g.add_user("alice", "pw-alice")
    c = smtp_client(g.port("smtp"))
    assert c.smtp(b"MAIL FROM:<a@b.test>\r\n") == b"250 2.1.0 Ok\r\n"
    assert c.smtp(b"RCPT TO:<alice@gw.test>\r\n") == b"250 2.1.5 Ok\r\n"
    assert c.smtp(b"DATA\r\n") == b"354 End data with <CR><LF>.<CR><LF>\r\n"
    t0 = time.time()
    payload = b"Subject: slow\r\n\r\n" + b"x" * 200
    c.s.settimeout(0.3)
    got, closed, i = b"", False, 0
    while time.time() - t0 < 8:
        try:
            c.s.sendall(payload[i % len(payload):i % len(payload) + 1])
        except OSError:
            closed = True
            break
        i += 1
        try:
            chunk = c.s.recv(4096)
            if not chunk:
                closed = True
                break
            got += chunk
        except (socket.timeout, TimeoutError):
            pass
        except OSError:
            closed = True
            break
    elapsed = time.time() - t0
    if not closed:
        got, closed = c.rest_until_close(timeout=1)[0], True
    assert got == TIMEOUT_421, (got, elapsed)
    assert 1.8 <= elapsed <= 4.5, elapsed
    assert g.wait_log("smtp data aborted id=")
    assert g.wait_log("reason=timeout-in-data")
    # nothing half-received was delivered; another session delivers at once
    assert g.messages("alice") == []
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=10) as s:
        assert s.sendmail("a@b.test", ["alice@gw.test"], b"Subject: ok\r\n\r\nfine\r\n") == {}
    assert len(g.messages("alice")) == 1


def test_tls_handshake_timeout_on_every_tls_entry(make_gateway):
    # Idle timeouts stay at their long defaults: only the handshake bound may cut.
    g = make_gateway(overrides={"limits": {"tls_handshake_timeout": 1}})
    half = half_client_hello()
    cases = []
    # implicit TLS, nothing sent
    cases.append(("pop3s-silent", Client(g.port("pop3s"), greet=False), None))
    # implicit TLS, half a ClientHello
    c = Client(g.port("smtps"), greet=False)
    c.send(half)
    cases.append(("smtps-half-hello", c, None))
    # STLS, then silence (the watchdog slept until the 10-minute idle deadline)
    c = Client(g.port("pop3"))
    assert c.cmd(b"STLS\r\n") == b"+OK Begin TLS negotiation\r\n"
    cases.append(("pop3-stls-silent", c, None))
    # STARTTLS, then half a ClientHello
    c = smtp_client(g.port("smtp"))
    assert c.smtp(b"STARTTLS\r\n") == b"220 2.0.0 Ready to start TLS\r\n"
    c.send(half)
    cases.append(("smtp-starttls-half-hello", c, None))
    t0 = time.time()
    for name, c, _ in cases:
        out, closed = c.rest_until_close(timeout=max(0.1, t0 + 4 - time.time()))
        assert closed and out == b"", (name, out)
    assert time.time() - t0 <= 4
    assert wait_count(g, "pop3 tls handshake failed ip=127.0.0.1 error=timeout", 2), g.log()
    assert wait_count(g, "smtp tls handshake failed ip=127.0.0.1 error=timeout", 2), g.log()
    assert wait_count(g, " end reason=tls-timeout ", 4), g.log()  # not a plain idle "timeout"
    # TLS still works for a client that does its part
    s = client_tls_context().wrap_socket(socket.create_connection(("127.0.0.1", g.port("pop3s")), timeout=5))
    assert s.recv(100).startswith(b"+OK popgate POP3 server ready")
    s.close()


# -- lines, messages, recipients, errors --------------------------------------------

def test_pop3_line_length_boundary_and_a_megabyte_without_newline(make_gateway):
    g = make_gateway()   # pop3_max_line = 255 incl. CRLF (RFC 2449)
    c = Client(g.port("pop3"))
    assert c.cmd(b"USER " + b"a" * 248 + b"\r\n") == b"+OK\r\n"             # 255 octets: fine
    assert c.cmd(b"USER " + b"a" * 249 + b"\r\n") == b"-ERR line too long\r\n"  # 256: refused
    c.send(b"B" * (1 << 20))
    assert c.line() == b"-ERR line too long\r\n"   # once, not once per buffer
    c.send(b"tail of the long line\r\nCAPA\r\n")
    assert c.line() == b"+OK Capability list follows\r\n"   # resynchronised at the LF
    d = Client(g.port("pop3"))    # the daemon goes on serving
    assert d.cmd(b"CAPA\r\n") == b"+OK Capability list follows\r\n"
    # (debug lines reach the file with the next info line: the connect above)
    assert g.wait_log("pop3 line too long")


def test_pop3_max_line_raised_takes_a_long_password(make_gateway):
    # A site raises limits.pop3_max_line for long passwords: USER/PASS and
    # AUTH PLAIN with an initial response both take it, not only the reader.
    g = make_gateway(overrides={"limits": {"pop3_max_line": 1024}})
    secret = "p" * 300
    g.add_user("alice", secret)
    p = poplib.POP3("127.0.0.1", g.port("pop3"), timeout=10)
    p.user("alice")
    assert p.pass_(secret).startswith(b"+OK Logged in")
    p.quit()
    c = Client(g.port("pop3"))
    ir = base64.b64encode(b"\0alice\0" + secret.encode())
    assert c.cmd(b"AUTH PLAIN " + ir + b"\r\n").startswith(b"+OK Logged in")
    assert c.cmd(b"QUIT\r\n").startswith(b"+OK")
    d = Client(g.port("pop3"))
    assert d.cmd(b"USER " + b"a" * 1017 + b"\r\n") == b"+OK\r\n"             # 1024 octets: fine
    assert d.cmd(b"USER " + b"a" * 1018 + b"\r\n") == b"-ERR line too long\r\n"


def test_smtp_line_length_boundary_and_a_megabyte_without_newline(make_gateway):
    g = make_gateway(overrides={"limits": {"smtp_max_line": 600}})
    c = smtp_client(g.port("smtp"))
    assert c.smtp(b"NOOP " + b"n" * 593 + b"\r\n") == b"250 2.0.0 Ok\r\n"    # 600 octets
    assert c.smtp(b"NOOP " + b"n" * 594 + b"\r\n") == b"500 5.5.2 Error: line too long\r\n"
    c.send(b"M" * (1 << 20))
    assert c.reply() == b"500 5.5.2 Error: line too long\r\n"
    c.send(b"end of it\r\nNOOP\r\n")
    assert c.reply() == b"250 2.0.0 Ok\r\n"
    assert c.rest_until_close(timeout=0.3) == (b"", False)   # exactly one error reply, still open
    d = smtp_client(g.port("smtp"))
    assert d.smtp(b"QUIT\r\n") == b"221 2.0.0 Bye\r\n"
    assert g.wait_log("smtp line too long ip=127.0.0.1 limit=600")


def test_max_message_size_at_mail_and_in_data(make_gateway):
    g = make_gateway(overrides={"limits": {"max_message_size": 10000}})
    g.add_user("alice", "pw-alice")
    c = Client(g.port("smtp"))
    ehlo = c.smtp(b"EHLO client.test\r\n")
    assert b"250-SIZE 10000\r\n" in ehlo
    assert c.smtp(b"MAIL FROM:<a@b.test> SIZE=10001\r\n") == b"552 5.3.4 Message size exceeds fixed limit\r\n"
    assert g.wait_log("smtp mail refused ip=127.0.0.1 size=10001 limit=10000")
    assert c.smtp(b"MAIL FROM:<a@b.test> SIZE=9000\r\n") == b"250 2.1.0 Ok\r\n"
    assert c.smtp(b"RCPT TO:<alice@gw.test>\r\n") == b"250 2.1.5 Ok\r\n"
    assert c.smtp(b"DATA\r\n").startswith(b"354 ")
    # the declared SIZE lied: the body is what counts
    c.send(b"Subject: big\r\n\r\n" + (b"y" * 78 + b"\r\n") * 250 + b".\r\n")
    assert c.reply() == b"552 5.3.4 Message size exceeds fixed limit\r\n"
    assert g.wait_log("result=too-big reply=552")
    assert g.messages("alice") == []
    # the session goes on, and a message under the limit is taken
    assert c.smtp(b"MAIL FROM:<a@b.test>\r\n") == b"250 2.1.0 Ok\r\n"
    assert c.smtp(b"RCPT TO:<alice@gw.test>\r\n") == b"250 2.1.5 Ok\r\n"
    assert c.smtp(b"DATA\r\n").startswith(b"354 ")
    assert c.smtp(b"Subject: small\r\n\r\n" + (b"z" * 98 + b"\r\n") * 50 + b".\r\n").startswith(b"250 2.0.0 Ok: queued as ")
    assert len(g.messages("alice")) == 1


def test_max_recipients(make_gateway):
    g = make_gateway(overrides={"limits": {"max_recipients": 100}})   # the RFC 5321 minimum
    g.add_user("alice", "pw-alice")
    c = smtp_client(g.port("smtp"))
    assert c.smtp(b"MAIL FROM:<a@b.test>\r\n") == b"250 2.1.0 Ok\r\n"
    # 100 distinct relay recipients (allowed: the loopback grant below), pipelined
    g.sql("INSERT INTO relay_grants(address, expires_at) VALUES('127.0.0.1', unixepoch()+600)")
    c.send(b"".join(b"RCPT TO:<r%d@remote.test>\r\n" % i for i in range(100)))
    for i in range(100):
        assert c.reply() == b"250 2.1.5 Ok\r\n", i
    assert c.smtp(b"RCPT TO:<alice@gw.test>\r\n") == b"452 4.5.3 Error: too many recipients\r\n"
    assert g.wait_log("smtp too many recipients ip=127.0.0.1 limit=100")
    assert c.smtp(b"DATA\r\n").startswith(b"354 ")
    assert c.smtp(b"Subject: hundred\r\n\r\nhi\r\n.\r\n").startswith(b"250 2.0.0 Ok: queued as ")
    drop = g.dropped()
    assert len(drop) == 1 and drop[0].count(b"@remote.test>") == 100
    assert g.messages("alice") == []
    # the limit is per message: the next transaction starts from zero
    assert c.smtp(b"MAIL FROM:<a@b.test>\r\n") == b"250 2.1.0 Ok\r\n"
    assert c.smtp(b"RCPT TO:<alice@gw.test>\r\n") == b"250 2.1.5 Ok\r\n"


def test_max_bad_commands_both_protocols_spare_neighbours(make_gateway):
    g = make_gateway(overrides={"limits": {"max_bad_commands": 2}})
    pop_ok, smtp_ok = Client(g.port("pop3")), smtp_client(g.port("smtp"))
    # POP3: the count-th error is answered "too many errors" and closes
    p = Client(g.port("pop3"))
    assert p.cmd(b"FOO\r\n") == b"-ERR Unknown command\r\n"
    assert p.cmd(b"BAR\r\n") == b"-ERR too many errors\r\n"
    assert p.rest_until_close() == (b"", True)
    assert g.wait_log("pop3 too-many-errors ip=127.0.0.1 count=2")
    # SMTP: errors up to the limit answered, the next one gets 421 and the close
    s = Client(g.port("smtp"))
    assert s.smtp(b"FOO\r\n") == b"500 5.5.2 Error: command not recognized\r\n"
    assert s.smtp(b"RCPT TO:<x@y.test>\r\n") == b"503 5.5.1 Error: need MAIL command\r\n"
    # the error past the limit is answered, then 421 and the close
    assert s.smtp(b"BAR\r\n") == b"500 5.5.2 Error: command not recognized\r\n"
    assert s.reply() == b"421 4.7.0 gw.test Error: too many errors\r\n"
    assert s.rest_until_close() == (b"", True)
    assert g.wait_log("smtp too many errors ip=127.0.0.1 count=3")
    assert g.wait_log("smtp end reason=too-many-errors")
    assert pop_ok.cmd(b"CAPA\r\n") == b"+OK Capability list follows\r\n"
    assert smtp_ok.smtp(b"NOOP\r\n") == b"250 2.0.0 Ok\r\n"


# -- brute force ---------------------------------------------------------------------

BRUTE = {"auth": {"failure_delay_ms": 200, "failure_delay_max_ms": 5000, "max_failures_per_ip": 3,
                  "block_time": 4, "failure_window": 60}}


def test_pop3_brute_force_delays_grow_block_spares_other_address_survives_sighup(make_gateway):
    g = make_gateway(overrides=BRUTE)
    g.add_user("alice", "pw-alice")
    # a correct login is not delayed
    r, took, c = pop3_login(g.port("pop3"), "alice", "pw-alice")
    assert r.startswith(b"+OK Logged in") and took < 0.2, (r, took)
    c.cmd(b"QUIT\r\n")
    c = Client(g.port("pop3"))
    delays = []
    for i in range(3):
        assert c.cmd(b"USER alice\r\n") == b"+OK\r\n"
        if i == 2:
            t_block = time.time()
        t = time.time()
        assert c.cmd(f"PASS wrong-{i}\r\n".encode()) == AUTH_FAILED
        delays.append(time.time() - t)
    # 0.2, 0.4, 0.8 s: doubling per earlier failure (generous bounds)
    assert 0.18 <= delays[0] <= 1.5, delays
    assert delays[1] >= 0.38 and delays[1] >= delays[0] + 0.1, delays
    assert delays[2] >= 0.75 and delays[2] >= delays[1] + 0.2, delays
    assert g.wait_log("pop3 auth-block ip=127.0.0.1 scope=address failures_ip=3 failures_user_ip=3 unknown_names_ip=0 "
                      "block_time=4s")
    # the 4th attempt is refused, even with the right password, and fast
    assert c.cmd(b"USER alice\r\n") == b"+OK\r\n"
    t = time.time()
    assert POP3_BLOCKED.fullmatch(c.cmd(b"PASS pw-alice\r\n"))
    assert time.time() - t < 0.2
    r, _, _ = pop3_login(g.port("pop3"), "alice", "pw-alice")
    assert POP3_BLOCKED.fullmatch(r), r
    assert g.wait_log("pop3 login ip=127.0.0.1 result=blocked scope=address retry_after=")
    assert wait_count(g, "auth-block", 1)   # logged once, with the counts
    # the user is not locked out: alice from an address that has not failed, undelayed
    r, took, o = pop3_login(g.port("pop3"), "alice", "pw-alice", src=OTHER)
    assert r.startswith(b"+OK Logged in") and took < 0.2, (r, took)
    assert g.sql("SELECT user FROM relay_grants WHERE address='127.0.0.2'") == [("alice",)]
    o.cmd(b"QUIT\r\n")
    # SIGHUP keeps the block
    g.reload()
    assert g.wait_log("reload done")
    r, _, _ = pop3_login(g.port("pop3"), "alice", "pw-alice")
    assert POP3_BLOCKED.fullmatch(r), r
    assert time.time() < t_block + 4, "test too slow to check the block across SIGHUP"
    # the block ends after block_time
    time.sleep(max(0, t_block + 4.3 - time.time()))
    r, _, o = pop3_login(g.port("pop3"), "alice", "pw-alice")
    assert r.startswith(b"+OK Logged in"), r
    o.cmd(b"QUIT\r\n")


def test_smtp_brute_force_421_closes_shared_with_pop3_other_address_and_sighup(make_gateway):
    g = make_gateway(overrides=BRUTE)
    g.add_user("alice", "pw-alice")
    c = smtp_client(g.port("submission"))
    r, took = smtp_auth(c, "alice", "pw-alice")
    assert r == b"235 2.7.0 Authentication successful\r\n" and took < 0.2, (r, took)
    c.smtp(b"QUIT\r\n")
    c = smtp_client(g.port("submission"))
    delays = []
    for i in range(3):
        if i == 2:
            t_block = time.time()
        r, took = smtp_auth(c, "alice", f"wrong-{i}")
        assert r == b"535 5.7.8 Error: authentication failed\r\n"
        delays.append(took)
    assert 0.18 <= delays[0] <= 1.5, delays
    assert delays[1] >= 0.38 and delays[1] >= delays[0] + 0.1, delays
    assert delays[2] >= 0.75 and delays[2] >= delays[1] + 0.2, delays
    assert g.wait_log("smtp auth-block ip=127.0.0.1 scope=address failures_ip=3 failures_user_ip=3 unknown_names_ip=0 "
                      "block_time=4s")
    # 4th attempt: refused with 421 and the connection is closed
    r, _ = smtp_auth(c, "alice", "pw-alice")
    assert re.fullmatch(rb"421 4\.7\.0 gw\.test Error: too many failed authentications from your address, "
                        rb"try again in [1-4] seconds\r\n", r), r
    assert c.rest_until_close() == (b"", True)
    assert g.wait_log("smtp auth refused ip=127.0.0.1 reason=address-blocked")
    assert g.wait_log("smtp end reason=auth-blocked")
    # the block is per address and shared by POP3
    r, _, _ = pop3_login(g.port("pop3"), "alice", "pw-alice")
    assert POP3_BLOCKED.fullmatch(r), r
    o = smtp_client(g.port("submission"), src=OTHER)
    r, took = smtp_auth(o, "alice", "pw-alice")
    assert r == b"235 2.7.0 Authentication successful\r\n" and took < 0.2, (r, took)
    o.smtp(b"QUIT\r\n")
    g.reload()
    assert g.wait_log("reload done")
    c = smtp_client(g.port("submission"))
    r, _ = smtp_auth(c, "alice", "pw-alice")
    assert r.startswith(b"421 4.7.0 "), r
    assert time.time() < t_block + 4, "test too slow to check the block across SIGHUP"
    time.sleep(max(0, t_block + 4.3 - time.time()))
    c = smtp_client(g.port("submission"))
    r, _ = smtp_auth(c, "alice", "pw-alice")
    assert r == b"235 2.7.0 Authentication successful\r\n"
    assert wait_count(g, "smtp auth-block", 1)


# -- new connections per address per minute ------------------------------------

def test_connections_per_minute_per_address(make_gateway):
    g = make_gateway(overrides={"limits": {"max_connections_per_minute": 3}})
    for _ in range(3):
        c = Client(g.port("pop3"))
        assert c.greeting.startswith(b"+OK")
        assert c.cmd(b"QUIT\r\n").startswith(b"+OK")
        c.close()
    # The fourth within the minute is refused, with the reason, and closed.
    c = Client(g.port("pop3"), greet=False)
    data, closed = c.rest_until_close()
    assert data == b"-ERR [SYS/TEMP] too many connections from this address " \
                   b"(limits.max_connections_per_minute=3)\r\n"
    assert closed
    c = Client(g.port("smtp"), greet=False)
    data, closed = c.rest_until_close()
    assert data.startswith(b"421 4.7.0 ") and closed
    assert g.wait_log("reason=\"too many connections from this address")
    # Another address is not affected.
    c = Client(g.port("pop3"), src=OTHER)
    assert c.greeting.startswith(b"+OK popgate POP3 server ready")


# -- commands without progress ---------------------------------------------------

def test_smtp_junk_commands_without_progress(make_gateway):
    g = make_gateway(overrides={"limits": {"max_junk_commands": 5}})
    c = Client(g.port("smtp"))
    assert c.smtp(b"EHLO client.test\r\n").startswith(b"250")
    for verb in (b"NOOP", b"RSET", b"NOOP", b"HELP", b"VRFY bob"):
        assert c.smtp(verb + b"\r\n")[:1] == b"2"
    # Progress (an accepted recipient) resets the count.
    g.sql("INSERT INTO relay_grants (address, expires_at) VALUES ('127.0.0.1', unixepoch() + 600)")
    assert c.smtp(b"MAIL FROM:<a@client.test>\r\n").startswith(b"250")
    assert c.smtp(b"RCPT TO:<x@remote.test>\r\n").startswith(b"250")
    for _ in range(5):
        assert c.smtp(b"NOOP\r\n").startswith(b"250")
    assert c.smtp(b"NOOP\r\n") == b"421 4.7.0 gw.test Error: too many commands without progress\r\n"
    _, closed = c.rest_until_close()
    assert closed
    assert g.wait_log("smtp too many commands without progress")
    d = Client(g.port("smtp"))
    assert d.smtp(b"NOOP\r\n").startswith(b"250")


def test_smtp_auth_success_restarts_the_junk_count(make_gateway):
    # The docs call a login progress, but a successful SMTP AUTH left the
    # count where it was: 90 NOOPs, AUTH, and the 10th NOOP after it got
    # 421 (found by the submission review).
    g = make_gateway(overrides={"limits": {"max_junk_commands": 5}})
    g.add_user("alice", "pw")
    c = Client(g.port("smtp"))
    assert c.smtp(b"EHLO client.test\r\n").startswith(b"250")
    for _ in range(3):
        assert c.smtp(b"NOOP\r\n").startswith(b"250")
    assert c.smtp(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0pw") + b"\r\n").startswith(b"235")
    for _ in range(5):
        assert c.smtp(b"NOOP\r\n").startswith(b"250")
    assert c.smtp(b"NOOP\r\n") == b"421 4.7.0 gw.test Error: too many commands without progress\r\n"
    # A refused AUTH is no progress: it counts.
    d = Client(g.port("smtp"))
    assert d.smtp(b"EHLO client.test\r\n").startswith(b"250")
    for _ in range(4):
        assert d.smtp(b"NOOP\r\n").startswith(b"250")
    assert d.smtp(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0wrong") + b"\r\n").startswith(b"535")
    assert d.smtp(b"NOOP\r\n") == b"421 4.7.0 gw.test Error: too many commands without progress\r\n"


def test_pop3_junk_commands_without_progress(make_gateway):
    g = make_gateway(overrides={"limits": {"max_junk_commands": 4}})
    g.add_user("alice", "pw")
    c = Client(g.port("pop3"))
    for _ in range(3):                       # CAPA in AUTHORIZATION counts too
        assert c.cmd(b"CAPA\r\n").startswith(b"+OK")
        while c.line() != b".\r\n":
            pass
    assert c.cmd(b"USER alice\r\n").startswith(b"+OK")
    assert c.cmd(b"PASS pw\r\n").startswith(b"+OK")  # progress: the count restarts
    for _ in range(4):
        assert c.cmd(b"NOOP\r\n") == b"+OK\r\n"
    assert c.cmd(b"STAT\r\n") == b"+OK 0 0\r\n"  # a read: progress, the count restarts
    for _ in range(4):
        assert c.cmd(b"RSET\r\n").startswith(b"+OK")
    assert c.cmd(b"NOOP\r\n") == b"-ERR [SYS/TEMP] Too many commands without progress\r\n"
    _, closed = c.rest_until_close()
    assert closed
    assert g.wait_log("pop3 too many commands without progress")


def test_pop3_polling_with_reads_between_noops_is_served(make_gateway):
    # A client that pipelines NOOP/STAT (or LIST, UIDL) pairs, as some
    # pollers do, is served however long it goes on (issue 15, item 5).
    g = make_gateway()  # the shipped max_junk_commands (100)
    g.add_user("alice", "pw")
    deliver_file(g.maildir("alice"), "1.poll", b"Subject: one\r\n\r\nbody\r\n")
    c = Client(g.port("pop3"))
    assert c.cmd(b"USER alice\r\n").startswith(b"+OK")
    assert c.cmd(b"PASS pw\r\n").startswith(b"+OK")
    reads = [b"STAT\r\n", b"LIST 1\r\n", b"UIDL 1\r\n"]
    burst = b"".join(b"NOOP\r\n" + reads[i % 3] for i in range(300))
    c.send(burst + b"QUIT\r\n")
    replies, closed = c.rest_until_close()
    assert closed
    lines = replies.split(b"\r\n")
    assert b"Too many commands" not in replies
    assert lines.count(b"+OK") == 300  # every NOOP answered
    assert sum(l.startswith(b"+OK 1 ") for l in lines) == 300  # every STAT, LIST 1 and UIDL 1
    assert lines[-2].startswith(b"+OK")  # QUIT: the session ended normally
