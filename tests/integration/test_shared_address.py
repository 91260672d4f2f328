"""Brute-force defence that spares a shared address (issue 15, item 3). Two
clients behind one NAT address (127.0.0.7): a phone with an old password in a
loop, and a colleague with the right one. Real clients: poplib and smtplib,
bound to that source address; the daemon's own counts and replies."""
import base64
import poplib
import smtplib
import threading
import time

import pytest

from pop3_support import SourcePOP3, _close_clients  # noqa: F401  (fixture)
from popgate_test import make_gateway  # noqa: F401  (fixture)

NAT = "127.0.0.7"
HOME = "127.0.0.8"
AUTH = {"auth": {"failure_delay_ms": 100, "failure_delay_max_ms": 400, "max_failures_per_user": 4,
                 "max_failures_per_ip": 40, "max_users_per_ip": 5, "block_time": 60, "failure_window": 300,
                 "plaintext": "always"}}


def pop3_login(g, user, password, src):
    """The reply to PASS (or the error) and how long PASS took."""
    p = SourcePOP3(g.port("pop3"), src)
    p.user(user)
    t = time.perf_counter()
    try:
        r = p.pass_(password)
    except poplib.error_proto as e:
        r = e.args[0]
    took = time.perf_counter() - t
    try:
        p.quit()
    except (poplib.error_proto, OSError):
        pass
    return r, took


def test_one_phone_with_an_old_password_does_not_lock_out_the_office(make_gateway):
    # Each of the phone's failures waits 1-2 s: alice's logins, asserted
    # well under that, would show any delay bob's failures put on her.
    g = make_gateway(overrides={"auth": {**AUTH["auth"], "failure_delay_ms": 1000, "failure_delay_max_ms": 2000}})
    g.add_user("bob", "new-pw")
    g.add_user("alice", "alice-pw")
    stop = threading.Event()
    phone = []

    def old_phone():
        while not stop.is_set() and len(phone) < 40:
            phone.append(pop3_login(g, "bob", "old-pw", NAT)[0])
            time.sleep(0.05)  # a phone retries every few seconds; this one is faster

    t = threading.Thread(target=old_phone)
    t.start()
    try:
        # Alice, on the same address, logs in while bob's phone fails and
        # then is refused: never refused and never delayed by bob's failures.
        logins = 0
        while logins < 8 or (len(phone) < 6 and logins < 120):
            logins += 1
            r, took = pop3_login(g, "alice", "alice-pw", NAT)
            assert r.startswith(b"+OK Logged in"), r
            assert took < 0.5, took  # a success waits for no failure delay (>= 1 s here)
            time.sleep(0.15)
    finally:
        stop.set()
        t.join(30)
    assert len(phone) >= 5
    assert phone[:4] == [b"-ERR [AUTH] Authentication failed."] * 4
    blocked = b"-ERR [AUTH] Too many authentication failures for this user from your address, try again in "
    assert all(r.startswith(blocked) for r in phone[4:]), phone
    assert g.wait_log(f"pop3 auth-block ip={NAT} scope=user user=bob failures_ip=4 failures_user_ip=4")
    assert g.wait_log(f"pop3 login ip={NAT} result=blocked scope=user user=bob retry_after=")
    # Bob's right password at that address is refused until the block ends
    # (the phone there is what failed); bob from home logs in.
    r, _ = pop3_login(g, "bob", "new-pw", NAT)
    assert r.startswith(blocked), r
    r, took = pop3_login(g, "bob", "new-pw", HOME)
    assert r.startswith(b"+OK Logged in") and took < 0.5, (r, took)
    # Alice's grant at the shared address was written.
    assert ("alice",) in g.sql("SELECT user FROM relay_grants WHERE address=?", (NAT,))
    # SMTP AUTH shares the rule: bob refused at the NAT (454, the session
    # stays), alice authenticated there.
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=10, source_address=(NAT, 0)) as s:
        s.ehlo("client.test")
        code, msg = s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0bob\0new-pw").decode())
        assert code == 454 and b"for this user from your address" in msg, (code, msg)
        code, msg = s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0alice\0alice-pw").decode())
        assert code == 235, (code, msg)


def test_a_spray_of_names_blocks_the_whole_address(make_gateway):
    g = make_gateway(overrides=AUTH)
    g.add_user("alice", "alice-pw")
    for i in range(5):
        r, _ = pop3_login(g, f"guess{i}", "x", NAT)
        assert r == b"-ERR [AUTH] Authentication failed.", r
    assert g.wait_log(f"pop3 auth-block ip={NAT} scope=address failures_ip=5 failures_user_ip=1 unknown_names_ip=5")
    r, _ = pop3_login(g, "alice", "alice-pw", NAT)
    assert r.startswith(b"-ERR [AUTH] Too many authentication failures from your address, try again in "), r
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=10, source_address=(NAT, 0)) as s:
        s.ehlo("client.test")
        code, _ = s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0alice\0alice-pw").decode())
        assert code == 421
    # Another address is untouched.
    r, _ = pop3_login(g, "alice", "alice-pw", HOME)
    assert r.startswith(b"+OK Logged in"), r


def test_the_address_ceiling_still_holds(make_gateway):
    g = make_gateway(overrides={"auth": {**AUTH["auth"], "max_failures_per_user": 1000, "max_failures_per_ip": 6,
                                         "failure_delay_ms": 0, "failure_delay_max_ms": 0}})
    g.add_user("alice", "alice-pw")
    g.add_user("bob", "bob-pw")  # a real user's failures count toward the ceiling
    for _ in range(6):
        assert pop3_login(g, "bob", "x", NAT)[0] == b"-ERR [AUTH] Authentication failed."
    r, _ = pop3_login(g, "alice", "alice-pw", NAT)
    assert r.startswith(b"-ERR [AUTH] Too many authentication failures from your address"), r


def smtp_auth(src, port, user, password):
    with smtplib.SMTP("127.0.0.1", port, timeout=10, source_address=(src, 0)) as s:
        s.ehlo("client.test")
        return s.docmd("AUTH", "PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode())


def test_a_campus_of_real_users_mistyping_once_is_no_spray(make_gateway):
    """Twelve real users behind one campus NAT each mistype once (POP3 and
    SMTP AUTH), more than max_users_per_ip (10): the address is not blocked
    and the next real user logs in. Names that do not exist still make a
    spray: ten of them block the address. The reply to a real user's wrong
    password and to an unknown name is the same."""
    g = make_gateway(overrides={"auth": {**AUTH["auth"], "max_users_per_ip": 10, "max_failures_per_ip": 40}})
    for i in range(13):
        g.add_user(f"student{i}", f"pw-{i}")
    for i in range(8):
        assert pop3_login(g, f"student{i}", "typo", NAT)[0] == b"-ERR [AUTH] Authentication failed."
    for i in range(8, 12):
        assert smtp_auth(NAT, g.port("smtp"), f"student{i}", "typo") == (535, b"5.7.8 Error: authentication failed")
    r, _ = pop3_login(g, "student12", "pw-12", NAT)
    assert r.startswith(b"+OK Logged in"), r
    assert smtp_auth(NAT, g.port("smtp"), "student12", "pw-12")[0] == 235
    assert smtp_auth(NAT, g.port("smtp"), "student0", "pw-0")[0] == 235  # a user who failed once, right now
    assert "auth-block" not in g.log()
    # An unknown name gets exactly the reply a real user's typo got.
    unknown = [pop3_login(g, f"nobody{i}", "x", NAT)[0] for i in range(9)]
    assert unknown == [b"-ERR [AUTH] Authentication failed."] * 9
    assert pop3_login(g, "student1", "pw-1", NAT)[0].startswith(b"+OK Logged in")  # 9 unknown names: not yet
    assert smtp_auth(NAT, g.port("smtp"), "nobody9", "x") == (535, b"5.7.8 Error: authentication failed")
    assert g.wait_log(f"smtp auth-block ip={NAT} scope=address failures_ip=22 failures_user_ip=1 "
                      "unknown_names_ip=10 ")
    # The tenth unknown name blocked the whole address, real users included.
    r, _ = pop3_login(g, "student12", "pw-12", NAT)
    assert r.startswith(b"-ERR [AUTH] Too many authentication failures from your address, try again in "), r
    assert smtp_auth(NAT, g.port("smtp"), "student12", "pw-12")[0] == 421
    assert pop3_login(g, "student12", "pw-12", HOME)[0].startswith(b"+OK Logged in")


@pytest.mark.parametrize("key", ["max_failures_per_user", "max_users_per_ip"])
def test_new_keys_are_checked(make_gateway, key):
    g = make_gateway(overrides={"auth": {key: 0}}, start=False)
    r = g.cli("check-config", check=False)
    assert r.returncode != 0
    assert key in r.stdout + r.stderr


PARALLEL = 12


def parallel_guesses(g, protocol):
    """PARALLEL sessions from one address, each with a wrong password for
    carol ready, sent at once: the replies."""
    ready = threading.Barrier(PARALLEL)
    replies = [None] * PARALLEL

    def pop3(i):
        p = SourcePOP3(g.port("pop3"), NAT)
        p.user("carol")
        ready.wait()
        try:
            replies[i] = p.pass_(f"guess-{i}").decode()
        except poplib.error_proto as e:
            replies[i] = e.args[0].decode()
        p.close()

    def smtp(i):
        with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=20, source_address=(NAT, 0)) as s:
            s.ehlo("client.example")
            token = base64.b64encode(f"\0carol\0guess-{i}".encode()).decode()
            ready.wait()
            code, text = s.docmd("AUTH", "PLAIN " + token)
            replies[i] = f"{code} {text.decode()}"

    threads = [threading.Thread(target=pop3 if protocol == "pop3" else smtp, args=(i,)) for i in range(PARALLEL)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return replies


@pytest.mark.parametrize("protocol", ["pop3", "smtp"])
def test_parallel_sessions_get_no_more_guesses_than_the_limit(make_gateway, protocol):
    """Before, the block check and the recorded failure were two steps with
    the password check between them: every session that sent its guess
    before the first failure was recorded passed the check, and twelve
    parallel sessions got twelve guesses at a limit of four. A check under
    way now counts as a failure until its verdict."""
    g = make_gateway(overrides=AUTH)
    g.add_user("carol", "right-pw")
    replies = parallel_guesses(g, protocol)
    assert None not in replies, replies
    failed = [r for r in replies if "authentication failed" in r.lower()]
    refused = [r for r in replies if "Too many" in r]
    assert len(failed) + len(refused) == PARALLEL, replies
    assert 1 <= len(failed) <= AUTH["auth"]["max_failures_per_user"], replies
    log = g.log()
    checked = len([line for line in log.splitlines() if "user=carol ip=127.0.0.7 mech=pass" in line and
                   "result=fail" in line]) if protocol == "pop3" else \
        log.count("smtp auth user=carol mech=PLAIN ip=127.0.0.7 result=failed")
    assert checked == len(failed), log
    # The right password, from another address, still works at once.
    assert pop3_login(g, "carol", "right-pw", HOME)[0].startswith(b"+OK")


def test_right_passwords_beside_each_other_are_not_refused_for_checks_under_way(make_gateway):
    """A mail client that checks POP3 and sends over SMTP AUTH at the same
    moment, after typos: the check under way beside each one could, if it
    failed, reach the limit. The reservation refused the right password
    for that (and logged it as a block, which fail2ban bans); now it waits
    for the other check to end, and both log in."""
    g = make_gateway(overrides={"auth": {**AUTH["auth"], "failure_delay_ms": 0, "failure_delay_max_ms": 0}})
    g.add_user("dana", "right-pw")
    limit = AUTH["auth"]["max_failures_per_user"]
    for i in range(limit - 1):   # one short of the block
        assert pop3_login(g, "dana", f"typo-{i}", NAT)[0].startswith(b"-ERR [AUTH] Authentication failed")
    for _ in range(3):
        ready = threading.Barrier(2)
        replies = {}

        def pop3():
            p = SourcePOP3(g.port("pop3"), NAT)
            p.user("dana")
            ready.wait()
            try:
                replies["pop3"] = p.pass_("right-pw").decode()
            except poplib.error_proto as e:
                replies["pop3"] = e.args[0].decode()
            p.quit()

        def smtp():
            with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=20, source_address=(NAT, 0)) as s:
                s.ehlo("client.example")
                token = base64.b64encode(b"\0dana\0right-pw").decode()
                ready.wait()
                code, text = s.docmd("AUTH", "PLAIN " + token)
                replies["smtp"] = f"{code} {text.decode()}"

        threads = [threading.Thread(target=f) for f in (pop3, smtp)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert replies["pop3"].startswith("+OK Logged in"), replies
        assert replies["smtp"].startswith("235 "), replies
    assert "result=blocked" not in g.log() and "reason=busy" not in g.log()


def test_names_no_user_can_have_are_blocked_as_one_and_logged_so(make_gateway):
    # Names with a space (or over 255 octets, or 8-bit) share one count, so
    # that invented names cannot grow memory. The block line named whichever
    # of them came last, a name that had failed once: it now says the block
    # is the invalid names'. A real user at the address is not blocked.
    g = make_gateway(overrides=AUTH)
    g.add_user("alice", "alice-pw")
    replies = [pop3_login(g, f"guest {i}", "x", NAT)[0] for i in range(5)]
    assert replies[:4] == [b"-ERR [AUTH] Authentication failed."] * 4, replies
    assert replies[4].startswith(b"-ERR [AUTH] Too many authentication failures for this user"), replies
    assert g.wait_log(f"pop3 auth-block ip={NAT} scope=user user=- names=invalid failures_ip=4 "
                      "failures_user_ip=4")
    assert "auth-block ip=127.0.0.7 scope=user user=\"guest" not in g.log()
    r, _ = pop3_login(g, "alice", "alice-pw", NAT)
    assert r.startswith(b"+OK Logged in"), r
