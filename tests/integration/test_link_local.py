"""A link-local IPv6 client (fe80::/10, the address a host on an office LAN
without routed IPv6 has) is served like any other: accept(2) gives its
address with a zone ("fe80::1%lo"), which no address parser takes, and such
a client used to be dropped without a word.

The daemon runs in a network namespace of its own (unshare -n) whose
loopback carries fe80::1, so nothing on the host is touched; the clients
enter that namespace with nsenter. Both need root (CI runs as root)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from popgate_test import make_gateway  # noqa: F401  (fixture)

# Runs as `sh -c NETNS_SETUP sh popgate ...`: lo up with fe80::1 and fe80::2, then the daemon.
NETNS_SETUP = ('ip link set lo up && ip -6 addr add fe80::1/64 dev lo nodad'
               ' && ip -6 addr add fe80::2/64 dev lo nodad && exec "$@"')
LISTENERS = [{"name": "pop3", "protocol": "pop3", "address": "::"},
             {"name": "smtp", "protocol": "smtp", "address": "::"}]

CLIENT = textwrap.dedent("""
    import json, poplib, smtplib, socket, sys
    pop_port, smtp_port, step, source = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    src = (source, 0, 0, socket.if_nametoindex("lo"))  # a link-local bind needs its zone
    out = {}
    if step == "guess":  # a wrong password from `source`: the reply to PASS
        c = socket.create_connection(("fe80::1%lo", pop_port), timeout=10, source_address=src)
        f = c.makefile("rb")
        f.readline()
        c.sendall(b"USER alice\\r\\n")
        f.readline()
        c.sendall(b"PASS wrong\\r\\n")
        out["pass"] = f.readline().decode().strip()
        c.close()
    elif step == "login":
        p = poplib.POP3("fe80::1%lo", pop_port, timeout=10)  # from fe80::1: the kernel's choice
        p.user("alice")
        out["pass"] = p.pass_("pw-alice").decode()
        p.quit()
    else:
        with smtplib.SMTP("fe80::1%lo", smtp_port, timeout=10, source_address=src) as s:
            s.ehlo("client.test")
            s.mail("a@example.org")
            code, text = s.rcpt("x@remote.test")
            out["rcpt"] = [code, text.decode()]
            if code == 250:
                code, text = s.data(b"Subject: from the LAN\\r\\n\\r\\nhello\\r\\n")
                out["data"] = [code, text.decode()]
    print(json.dumps(out))
""")


def netns_available():
    if os.geteuid() != 0:
        return False
    r = subprocess.run(["unshare", "-n", "sh", "-c", NETNS_SETUP, "sh", "true"], capture_output=True)
    return r.returncode == 0


pytestmark = pytest.mark.skipif(not netns_available(), reason="needs root and unshare -n with ip(8)")


def in_netns(g, step, source="fe80::1"):
    r = subprocess.run(["nsenter", "-t", str(g.proc.pid), "-n", sys.executable, "-c", CLIENT,
                        str(g.port("pop3")), str(g.port("smtp")), step, source],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_a_link_local_client_is_refused_then_granted_by_its_pop3_login(make_gateway):
    g = make_gateway(listeners=LISTENERS, start=False)
    g.start(wrapper=("unshare", "-n", "sh", "-c", NETNS_SETUP, "sh"))
    g.add_user("alice", "pw-alice")

    # Not granted: refused, and the log names the client by its address.
    assert in_netns(g, "send") == {"rcpt": [554, "5.7.1 <x@remote.test>: Relay access denied"]}
    assert g.wait_log("ip=fe80::1")
    assert g.dropped() == []

    # Its POP3 login grants fe80::1 itself: not fe80:: (its /64, which is
    # every link's), and without the zone.
    assert in_netns(g, "login")["pass"].startswith("+OK")
    assert g.sql("SELECT address FROM relay_grants WHERE expires_at > unixepoch()") == [("fe80::1",)]
    # So another host on the link is still refused.
    assert in_netns(g, "send", source="fe80::2") == {"rcpt": [554, "5.7.1 <x@remote.test>: Relay access denied"]}
    assert g.wait_log("ip=fe80::2")

    sent = in_netns(g, "send")
    assert sent["rcpt"][0] == 250, sent
    assert sent["data"][0] == 250, sent
    assert len(g.dropped()) == 1  # on disk before the 250


def test_link_local_addresses_share_one_failure_count(make_gateway):
    """The brute-force counters (and the per-address limits) take a
    link-local client by relay.ipv6_prefix, as any IPv6 client: every host
    may add fe80:: addresses at will, and counting each whole let one guess
    for ever (found by review)."""
    g = make_gateway(overrides={"auth": {"max_failures_per_ip": 3}}, listeners=LISTENERS, start=False)
    g.start(wrapper=("unshare", "-n", "sh", "-c", NETNS_SETUP, "sh"))
    g.add_user("alice", "pw-alice")
    replies = [in_netns(g, "guess", source=src)["pass"] for src in ("fe80::1", "fe80::2", "fe80::1", "fe80::2")]
    assert replies[:3] == ["-ERR [AUTH] Authentication failed."] * 3, replies
    assert replies[3].startswith("-ERR [AUTH] Too many authentication failures from your address"), replies
