"""Open-file limit (issue 14 item 2): the daemon raises its soft RLIMIT_NOFILE
to the hard limit, lowers limits.max_sessions to what the descriptors carry
(with a warning), and refuses the sessions beyond that with the protocol's own
refusal instead of failing accept() with EMFILE. Started under prlimit."""
import re
import socket
import time

import pytest

from popgate_test import Gateway

OPEN = {"max_sessions": 1000, "max_sessions_per_ip": 1000, "max_connections_per_minute": 0}


def greeting(sock):
    sock.settimeout(5)
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(512)
        if not chunk:
            break
        data += chunk
    return data


def connect_all(port, n):
    socks, greetings = [], []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        socks.append(s)
        greetings.append(greeting(s))
    return socks, greetings


def close_all(socks):
    for s in socks:
        s.close()


def cap_of(gw):
    assert gw.wait_log("needs more descriptors than"), gw.log()
    m = re.search(r"limits max_sessions=1000 needs more descriptors than nofile=(\d+) allows: at most (\d+) sessions",
                  gw.log())
    assert m, gw.log()
    return int(m.group(1)), int(m.group(2))


@pytest.fixture
def low(tmp_path):
    gw = Gateway(tmp_path / "gw", {"limits": OPEN})
    # Soft 100, hard 160: the daemon must raise the soft limit to 160 itself.
    gw.start(wrapper=("prlimit", "--nofile=100:160"))
    yield gw
    assert gw.stop() == 0


def test_soft_limit_is_raised_and_sessions_capped_with_a_warning(low):
    assert "limits nofile raised from=100 to=160" in low.log()
    nofile, cap = cap_of(low)
    assert nofile == 160 and 1 <= cap < 80
    assert " warning limits max_sessions=1000" in low.log()


def test_sessions_beyond_the_cap_get_the_protocols_refusal_not_emfile(low):
    _, cap = cap_of(low)
    socks, greetings = connect_all(low.port("pop3"), cap + 5)
    try:
        assert all(g.startswith(b"+OK") for g in greetings[:cap]), greetings[:cap]
        refused = greetings[cap:]
        assert all(g.startswith(b"-ERR [SYS/TEMP] too many sessions (limits.max_sessions=%d)" % cap)
                   for g in refused), refused
        # SMTP says it in its own words.
        smtp, smtp_greetings = connect_all(low.port("smtp"), 1)
        close_all(smtp)
        assert smtp_greetings[0].startswith(b"421 4.7.0 "), smtp_greetings
    finally:
        close_all(socks)
    log = low.log()
    assert "Too many open files" not in log and "accept listener" not in log, log[-2000:]
    # Room again once they are gone.
    deadline = time.time() + 10
    while time.time() < deadline:
        again, g = connect_all(low.port("pop3"), 1)
        close_all(again)
        if g[0].startswith(b"+OK"):
            break
        time.sleep(0.1)
    assert g[0].startswith(b"+OK"), g


def test_reload_keeps_the_cap(low):
    _, cap = cap_of(low)
    low.reload()
    assert low.wait_log("reload done"), low.log()
    assert low.log().count("max_sessions=1000 needs more descriptors than") == 2, low.log()
    socks, greetings = connect_all(low.port("pop3"), cap + 1)
    close_all(socks)
    assert greetings[-1].startswith(b"-ERR [SYS/TEMP] too many sessions"), greetings[-1]


def test_a_reload_that_adds_an_http_listener_keeps_the_cap_of_what_is_bound(low):
    # A reload binds no listener: one added to the file serves nobody until
    # a restart, so it must set no descriptors aside for services.
    _, cap = cap_of(low)
    low.config_file.write_text(low.config_file.read_text() +
                               '\n[[listener]]\nname = "http"\nprotocol = "http"\naddress = "127.0.0.1"\nport = 0\n')
    low.reload()
    assert low.wait_log("reload done"), low.log()
    caps = re.findall(r"limits max_sessions=1000 needs more descriptors than nofile=\d+ allows: at most (\d+) sessions",
                      low.log())
    assert caps == [str(cap), str(cap)], low.log()
    assert "max_service_sessions=" not in low.log()


def test_no_warning_when_the_descriptors_suffice(tmp_path):
    gw = Gateway(tmp_path / "gw", {"limits": {"max_sessions": 10}})
    gw.start(wrapper=("prlimit", "--nofile=512:512"))
    try:
        assert gw.wait_log("started"), gw.log()
        assert "needs more descriptors" not in gw.log() and "nofile raised" not in gw.log()
    finally:
        assert gw.stop() == 0
