"""One POP3 session per maildrop across daemons (RFC 1939 §8): two `popgate
serve` processes whose Maildirs are the same directories, as two nodes on a
shared filesystem are. A login on one node holds the maildrop; the other
answers [IN-USE] until the first session ends, sees its deletions after, and
gets the maildrop at once when the holder is killed (the kernel drops the
lock with the process: nothing stale is left behind).
"""
import poplib
import signal

import pytest

from popgate_test import deliver_file, make_gateway  # noqa: F401

MESSAGE = b"From: a@remote.test\nSubject: one\n\nbody\n"


@pytest.fixture
def two_nodes(make_gateway, tmp_path):  # noqa: F811
    shared = tmp_path / "shared-mail"
    overrides = {"mail": {"maildir": str(shared / "%u")}}
    a = make_gateway(overrides, name="node-a")
    b = make_gateway(overrides, name="node-b")
    for g in (a, b):  # each node has its own database here; the Maildirs are one
        g.add_user("alice", "pw-alice")
    deliver_file(shared / "alice", "1700000001.M1P1.gw", MESSAGE)
    deliver_file(shared / "alice", "1700000002.M1P1.gw", MESSAGE)
    return a, b


def login(g):
    p = poplib.POP3("127.0.0.1", g.port("pop3"), timeout=10)
    p.user("alice")
    try:
        p.pass_("pw-alice")
    except poplib.error_proto:
        p.close()
        raise
    return p


def test_a_session_on_one_node_holds_the_maildrop_on_the_other(two_nodes):
    a, b = two_nodes
    pa = login(a)
    assert pa.stat() == (2, 2 * (len(MESSAGE) + MESSAGE.count(b"\n")))
    with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[IN-USE\] Maildrop is locked"):
        login(b)
    assert b.wait_log("pop3 login user=alice ip=127.0.0.1 mech=pass tls=no result=in-use")
    # The refused login changed nothing: node A's session goes on, and its
    # deletion is what node B sees once A has quit.
    pa.dele(1)
    pa.quit()
    pb = login(b)
    assert pb.stat()[0] == 1
    pb.quit()


def test_a_killed_holder_leaves_no_stale_lock(two_nodes):
    a, b = two_nodes
    pb = login(b)
    with pytest.raises(poplib.error_proto, match=r"IN-USE"):
        login(a)
    b.allow_unclean_exit = True
    b.stop(sig=signal.SIGKILL)
    pb.close()
    pa = login(a)  # at once: no lock file to expire, no session to time out
    assert pa.stat()[0] == 2  # nothing deleted outside UPDATE
    pa.quit()
