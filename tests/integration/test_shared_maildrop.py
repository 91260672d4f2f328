"""One POP3 session per maildrop across daemons (RFC 1939 §8): two `popgate
serve` processes whose Maildirs are the same directories, as two nodes on a
shared filesystem are. A login on one node holds the maildrop; the other
answers [IN-USE] until the first session ends, sees its deletions after, and
gets the maildrop at once when the holder is killed (the kernel drops the
lock with the process: nothing stale is left behind).
"""
import os
import poplib
import signal
import subprocess

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


# Another program that moves new/ to cur/ itself (Dovecot's IMAP, which does
# not see our lock) can do so at any moment of a login's scan. This shim,
# preloaded into the daemon, makes it happen at the worst two moments: just
# as the scan opens new/ ("open-new"), and at the scan's own move of the
# message, which then finds it gone ("rename").
RACE_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static int done;
static void other_agent_moves(void) {
    char const* md = getenv("RACE_MAILDIR");
    if (!md || done) return;
    done = 1;
    char from[4096], to[4096];
    snprintf(from, sizeof from, "%s/new/2000.M1P1.other", md);
    snprintf(to, sizeof to, "%s/cur/2000.M1P1.other:2,S", md);
    rename(from, to);
}
static int is_new_dir(char const* name) {
    char const* md = getenv("RACE_MAILDIR");
    char want[4096];
    if (!md) return 0;
    snprintf(want, sizeof want, "%s/new", md);
    return strcmp(name, want) == 0;
}
static int at(char const* when) { char const* w = getenv("RACE_AT"); return w && strcmp(w, when) == 0; }
int openat(int fd, char const* name, int flags, ...) {
    static int (*real)(int, char const*, int, ...);
    if (!real) real = dlsym(RTLD_NEXT, "openat");
    va_list ap; va_start(ap, flags); int mode = va_arg(ap, int); va_end(ap);
    if ((flags & O_DIRECTORY) && at("open-new") && is_new_dir(name)) other_agent_moves();
    return real(fd, name, flags, mode);
}
int renameat2(int ofd, char const* from, int nfd, char const* to, unsigned flags) {
    static int (*real)(int, char const*, int, char const*, unsigned);
    if (!real) real = dlsym(RTLD_NEXT, "renameat2");
    if (at("rename") && strstr(from, "/new/2000.M1P1.other")) other_agent_moves();
    return real(ofd, from, nfd, to, flags);
}
"""


@pytest.fixture(scope="module")
def race_shim(tmp_path_factory):
    d = tmp_path_factory.mktemp("race-shim")
    (d / "race.c").write_text(RACE_SHIM)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(d / "race.so"), str(d / "race.c"), "-ldl"], check=True)
    return d / "race.so"


@pytest.mark.parametrize("moment", ["open-new", "rename"])
def test_a_message_another_program_moves_during_the_scan_is_listed(make_gateway, race_shim, monkeypatch,  # noqa: F811
                                                                  moment):
    g = make_gateway(start=False)
    md = g.maildir("alice")
    for sub in ("tmp", "new", "cur"):
        (md / sub).mkdir(parents=True, exist_ok=True)
    (md / "cur" / "1000.M1P1.h:2,").write_bytes(b"Subject: one\n\nx\n")
    (md / "new" / "2000.M1P1.other").write_bytes(b"Subject: two\n\ny\n")
    monkeypatch.setenv("RACE_MAILDIR", str(md))
    monkeypatch.setenv("RACE_AT", moment)
    monkeypatch.setenv("LD_PRELOAD", str(race_shim))
    # Under AddressSanitizer (the dev preset) its runtime must come first.
    monkeypatch.setenv("ASAN_OPTIONS", ":".join(filter(None, [os.environ.get("ASAN_OPTIONS"),
                                                              "verify_asan_link_order=0"])))
    g.start()
    monkeypatch.delenv("LD_PRELOAD")
    g.add_user("alice", "pw")
    p = poplib.POP3("127.0.0.1", g.port("pop3"), timeout=10)
    p.user("alice")
    p.pass_("pw")
    assert sorted(f.name for f in (md / "cur").iterdir()) == ["1000.M1P1.h:2,", "2000.M1P1.other:2,S"]
    # The first login lists both, not only the next one.
    assert p.stat() == (2, 38)
    assert [l.split()[1] for l in p.uidl()[1]] == [b"1000.M1P1.h", b"2000.M1P1.other"]
    p.quit()
