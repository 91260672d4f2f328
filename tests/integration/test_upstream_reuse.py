"""Upstream connection reuse (relay.upstream_reuse_time) against the running
daemon with real clients (smtplib, swaks): after the upstream's 250 to the end
of DATA the connection is kept idle for the next relayed message from any
client session; a kept connection found dead is replaced without losing or
doubling the message; old, refused or worn-out connections are not reused;
SIGTERM says QUIT on the idle ones. The capture upstream numbers its
connections from 1 in accept order, so `conn` tells them apart."""
import smtplib
import subprocess
import time

import pytest

from popgate_test import POPGATE, CaptureUpstream, Gateway, make_gateway, upstream  # noqa: F401
from smtp_support import relay_overrides, strip_received


def grant(g, address="127.0.0.1", ttl=600):
    g.sql("INSERT INTO relay_grants(address, expires_at) VALUES(?, unixepoch()+?)", (address, ttl))


def reuse_gateway(make_gateway, up, reuse_time=None, **sections):
    """A gateway relaying to `up` with 127.0.0.1 granted; `reuse_time` None
    leaves relay.upstream_reuse_time at its default."""
    o = relay_overrides(up, **sections)
    if reuse_time is not None:
        o["relay"]["upstream_reuse_time"] = reuse_time
    g = make_gateway(overrides=o)
    grant(g)
    return g


def sender(n):
    return f"s{n}@example.org"


def rcpt(n):
    return f"r{n}@remote.test"


def body(n):
    return (f"From: {sender(n)}\r\nTo: {rcpt(n)}\r\nSubject: reuse {n}\r\n"
            f"Message-ID: <reuse-{n}@example.org>\r\n\r\nmessage number {n}\r\n").encode()


def relay(port, n, s=None):
    """Relays message n in a client SMTP session of its own (or in `s`);
    returns the gateway's reply to the end of DATA."""
    if s is None:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as own:
            return relay(port, n, own)
    s.ehlo("client.test")
    assert s.mail(sender(n))[0] == 250
    assert s.rcpt(rcpt(n))[0] == 250
    return s.data(body(n))


def assert_accepted(reply):
    code, text = reply
    assert code == 250 and text.startswith(b"2.0.0 Ok: queued as "), reply


def delivered(up, ns):
    """Asserts the upstream got exactly messages `ns`, in that order, each once,
    with its own envelope and bytes; returns the connection each came on."""
    with up.lock:
        msgs = list(up.messages)
    got = [(m["mail_from"], m["rcpt_tos"], strip_received(m["data"])) for m in msgs]
    assert got == [(sender(n), [rcpt(n)], body(n)) for n in ns]
    return [m["conn"] for m in msgs]


# ------------------------------------------------------------------ reuse


def test_two_client_sessions_share_one_upstream_connection(make_gateway, upstream):
    g = reuse_gateway(make_gateway, upstream)  # default upstream_reuse_time (5 s)
    assert_accepted(relay(g.port("smtp"), 1))
    r = subprocess.run(["swaks", "--server", f"127.0.0.1:{g.port('smtp')}", "--from", sender(2),
                        "--to", rcpt(2), "--h-Subject", "reuse 2", "--body", "second, from swaks"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "<-  250 2.0.0 Ok: queued as " in r.stdout
    with upstream.lock:
        msgs = list(upstream.messages)
    assert len(msgs) == 2
    assert (msgs[0]["mail_from"], msgs[0]["rcpt_tos"], strip_received(msgs[0]["data"])) == \
        (sender(1), [rcpt(1)], body(1))
    assert (msgs[1]["mail_from"], msgs[1]["rcpt_tos"]) == (sender(2), [rcpt(2)])
    assert b"second, from swaks" in msgs[1]["data"] and b"message number 1" not in msgs[1]["data"]
    # one connection, greeted once, still open and idle for the next message
    assert [m["conn"] for m in msgs] == [1, 1]
    assert msgs[0]["peer"] == msgs[1]["peer"]
    assert upstream.greetings == [1]
    assert len(upstream.connections) == 1
    assert upstream.open_connections() == [1] and upstream.quits == []


def test_kept_connection_follows_the_sessions_from_io_thread_to_io_thread(make_gateway, upstream):
    # The test gateway runs two I/O threads and hands accepted connections to
    # them in turn, so each session after the first finds the kept connection
    # idle on the other thread and moves it to its own (clear text): six
    # messages, one upstream connection, five moves, nothing lost or doubled.
    # One listener only: every accept loop takes its next thread when it
    # starts waiting, so with others beside it the turns would depend on
    # how many there are.
    g = make_gateway(overrides=relay_overrides(upstream), listeners=[{"name": "smtp", "protocol": "smtp"}])
    grant(g)
    for n in range(1, 7):
        assert_accepted(relay(g.port("smtp"), n))
    assert delivered(upstream, range(1, 7)) == [1] * 6
    assert upstream.greetings == [1] and len(upstream.connections) == 1
    opened = [line for line in g.log().splitlines() if "upstream transaction open" in line]
    assert len(opened) == 6 and "reused=" not in opened[0], opened  # the first one connected
    assert all(line.endswith(" reused=yes moved=yes") for line in opened[1:]), opened
    assert upstream.open_connections() == [1]


def test_reuse_time_zero_opens_and_quits_a_connection_per_message(make_gateway, upstream):
    g = reuse_gateway(make_gateway, upstream, reuse_time=0)
    assert_accepted(relay(g.port("smtp"), 1))
    assert_accepted(relay(g.port("smtp"), 2))
    assert delivered(upstream, [1, 2]) == [1, 2]
    assert upstream.greetings == [1, 2]
    assert upstream.wait_for(lambda: sorted(upstream.quits) == [1, 2] and sorted(upstream.closed) == [1, 2]), \
        (upstream.quits, upstream.closed)


def test_upstream_closing_after_each_message_loses_and_doubles_nothing(make_gateway, upstream):
    g = reuse_gateway(make_gateway, upstream, reuse_time=30)
    upstream.close_after_data = True
    for n in (1, 2, 3):
        assert_accepted(relay(g.port("smtp"), n))
        # the kept connection is really gone before the next message needs it
        assert upstream.wait_for(lambda: n in upstream.closed), (n, upstream.closed)
    assert delivered(upstream, [1, 2, 3]) == [1, 2, 3]
    assert upstream.greetings == [1, 2, 3]
    assert len(upstream.connections) == 3


def test_kept_connection_answering_mail_with_421_is_replaced(make_gateway, upstream):
    g = reuse_gateway(make_gateway, upstream, reuse_time=30)
    assert_accepted(relay(g.port("smtp"), 1))
    upstream.mail_421_on_reuse = True
    assert_accepted(relay(g.port("smtp"), 2))
    assert delivered(upstream, [1, 2]) == [1, 2]
    assert upstream.greetings == [1, 2]
    assert upstream.wait_for(lambda: 1 in upstream.closed)
    # the replacement is kept in turn
    upstream.mail_421_on_reuse = False
    assert_accepted(relay(g.port("smtp"), 3))
    assert delivered(upstream, [1, 2, 3]) == [1, 2, 2]


def test_kept_connection_the_upstream_wrote_on_meanwhile_is_not_reused(make_gateway, upstream):
    # A reply nobody asked for, sent after the 250 to the end of data while
    # the connection sat idle, would be read as the answer to the next
    # MAIL, and every reply after it as the one before's: a recipient the
    # upstream took would get the refusal of the one before it.
    g = reuse_gateway(make_gateway, upstream, reuse_time=30)
    upstream.late_line = "250 2.0.0 late extra"
    assert_accepted(relay(g.port("smtp"), 1))
    assert g.wait_log("relayed")
    time.sleep(0.6)  # the late line has arrived
    upstream.late_line = None
    upstream.rcpt_replies = {"bad@remote.test": "550 5.1.1 no such user here"}
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        s.ehlo("client.test")
        assert s.mail(sender(2))[0] == 250
        assert s.rcpt("bad@remote.test")[0] == 550
        assert s.rcpt(rcpt(2))[0] == 250
        assert_accepted(s.data(body(2)))
    assert delivered(upstream, [1, 2]) == [1, 2]
    assert upstream.greetings == [1, 2]
    assert g.wait_log("idle connection closed: the upstream sent something or closed it meanwhile "
                      f"upstream=127.0.0.1:{upstream.port}")


@pytest.mark.parametrize("pipelining", [True, False], ids=["rcpt-with-mail", "rcpt-after-mail"])
def test_kept_connection_answering_the_first_rcpt_with_421_is_replaced(make_gateway, upstream, pipelining):
    # The upstream took MAIL on the kept connection, then closes it at the
    # RCPT (with PIPELINING both went in one write): nothing was taken, so
    # the message goes on a fresh connection, as after a 421 to MAIL.
    upstream.pipelining = pipelining
    g = reuse_gateway(make_gateway, upstream, reuse_time=30)
    assert_accepted(relay(g.port("smtp"), 1))
    upstream.rcpt_421_on_reuse = True
    assert_accepted(relay(g.port("smtp"), 2))
    assert delivered(upstream, [1, 2]) == [1, 2]
    assert upstream.greetings == [1, 2]
    assert [c for c, _ in upstream.rcpts] == [1, 1, 2]


def test_connection_idle_longer_than_reuse_time_is_quit_not_reused(make_gateway, upstream):
    g = reuse_gateway(make_gateway, upstream, reuse_time=1)
    assert_accepted(relay(g.port("smtp"), 1))
    # Quit once its reuse time is over (within a second more), not only
    # when the next message comes: it holds an smtpd of the upstream.
    assert upstream.wait_for(lambda: 1 in upstream.quits and 1 in upstream.closed, timeout=4), \
        (upstream.quits, upstream.closed)
    assert_accepted(relay(g.port("smtp"), 2))
    assert delivered(upstream, [1, 2]) == [1, 2]
    assert upstream.greetings == [1, 2]


@pytest.mark.parametrize("mode,code", [("reject", 554), ("tempfail", 451)])
def test_connection_not_reused_after_refused_data(make_gateway, upstream, mode, code):
    g = reuse_gateway(make_gateway, upstream, reuse_time=30)
    upstream.mode = mode
    reply = relay(g.port("smtp"), 1)
    assert reply[0] == code, reply
    assert upstream.messages == []
    upstream.mode = "accept"
    assert_accepted(relay(g.port("smtp"), 2))
    assert delivered(upstream, [2]) == [2]  # on a fresh connection
    assert upstream.greetings == [1, 2]
    assert upstream.wait_for(lambda: 1 in upstream.closed), upstream.closed


def test_connection_carries_at_most_100_messages(make_gateway, upstream):
    g = reuse_gateway(make_gateway, upstream, reuse_time=120)
    ns = list(range(1, 102))
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=30) as s:
        for n in ns:
            assert_accepted(relay(g.port("smtp"), n, s))
    assert delivered(upstream, ns) == [1] * 100 + [2]
    assert upstream.greetings == [1, 2]
    assert upstream.wait_for(lambda: 1 in upstream.quits and 1 in upstream.closed), \
        (upstream.quits, upstream.closed)


def test_at_most_32_idle_connections_are_kept(make_gateway, upstream):
    g = reuse_gateway(make_gateway, upstream, reuse_time=120,
                      limits={"max_sessions_per_ip": 100, "max_connections_per_minute": 1000})
    port = g.port("smtp")
    clients = []
    try:
        # 33 transactions in DATA at once: each holds an upstream connection
        for n in range(1, 34):
            s = smtplib.SMTP("127.0.0.1", port, timeout=30)
            clients.append(s)
            s.ehlo("client.test")
            assert s.mail(sender(n))[0] == 250
            assert s.rcpt(rcpt(n))[0] == 250
            s.putcmd("data")
            assert s.getreply()[0] == 354
        assert len(upstream.connections) == 33
        for n, s in enumerate(clients, 1):
            s.send(body(n) + b".\r\n")
            assert_accepted(s.getreply())
    finally:
        for s in clients:
            s.close()
    assert sorted(delivered(upstream, range(1, 34))) == list(range(1, 34))
    # the 33rd idle connection does not stay: one is closed, 32 wait
    assert upstream.wait_for(lambda: len(upstream.closed) >= 1), upstream.closed
    time.sleep(0.3)
    assert len(upstream.closed) == 1
    still_open = upstream.open_connections()
    assert len(still_open) == 32
    # and the next message goes on one of them
    assert_accepted(relay(port, 34))
    with upstream.lock:
        last = upstream.messages[-1]
    assert last["mail_from"] == sender(34) and last["conn"] in still_open
    assert len(upstream.connections) == 33


def test_sigterm_quits_idle_connections_and_exits_zero(make_gateway, upstream):
    g = reuse_gateway(make_gateway, upstream, reuse_time=120)
    assert_accepted(relay(g.port("smtp"), 1))
    assert_accepted(relay(g.port("smtp"), 2))
    assert delivered(upstream, [1, 2]) == [1, 1]
    assert upstream.open_connections() == [1]
    assert g.stop() == 0
    assert upstream.wait_for(lambda: upstream.quits == [1] and upstream.closed == [1]), \
        (upstream.quits, upstream.closed)


# ------------------------------------------------------------------ config


def test_check_config_refuses_negative_reuse_time_with_file_and_line(tmp_path):
    bad = Gateway(tmp_path / "bad", {"relay": {"upstream_reuse_time": -1}})
    line = bad.config_file.read_text().splitlines().index("upstream_reuse_time = -1") + 1
    r = subprocess.run([POPGATE, "check-config", str(bad.config_file)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, r.stdout + r.stderr
    errs = r.stderr.splitlines()
    assert any(e.startswith(f"{bad.config_file}:{line}:") and "upstream_reuse_time: -1 is out of range" in e
               for e in errs), errs
    off = Gateway(tmp_path / "off", {"relay": {"upstream_reuse_time": 0}})
    r = subprocess.run([POPGATE, "check-config", str(off.config_file)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
