"""Logs as an administrator runs them (issue 14, item 3): log.file opened
again on SIGHUP and SIGUSR1 after a rename, and the fail2ban filter in
deploy/fail2ban checked with Debian's fail2ban-regex against the lines the
daemon really wrote for failed POP3 logins (USER/PASS, APOP, AUTH) and failed
SMTP AUTH: every failure found with its true client address, no success,
and no address a hostile user name tried to plant."""
import base64
import collections
import os
import poplib
import shutil
import signal
import smtplib
import subprocess
import time
from pathlib import Path

import pytest

from pop3_support import SourcePOP3
from popgate_test import make_gateway  # noqa: F401  (fixture)

SOURCE_DIR = Path(os.environ.get("POPGATE_SOURCE_DIR", "."))
FAIL2BAN_REGEX = shutil.which("fail2ban-regex") or "/usr/bin/fail2ban-regex"
HOSTILE = "evil ip=192.0.2.66 result=fail"


# ---------------------------------------------------------------- reopen
@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR1], ids=["SIGHUP", "SIGUSR1"])
def test_log_file_reopened_after_rename(make_gateway, sig):
    g = make_gateway()
    p = poplib.POP3("127.0.0.1", g.port("pop3"), timeout=10)
    p.quit()
    assert g.wait_log("pop3 end")
    rotated = g.log_file.with_name("popgate.log.1")
    os.rename(g.log_file, rotated)
    g.proc.send_signal(sig)
    # The daemon says so in the new file, first thing.
    deadline = time.time() + 10
    while time.time() < deadline and not g.log_file.exists():
        time.sleep(0.02)
    assert g.wait_log("log reopened"), rotated.read_text()
    before = rotated.read_text()
    p = poplib.POP3("127.0.0.1", g.port("pop3"), timeout=10)
    p.quit()
    assert g.wait_log("pop3 end")
    assert g.log().count(" pop3 connect ") == 1
    assert rotated.read_text() == before  # nothing more went to the old file
    assert before.count(" pop3 connect ") == 1
    assert oct(g.log_file.stat().st_mode & 0o777) == "0o640"
    if sig == signal.SIGHUP:
        assert g.wait_log("reload done")


def test_log_not_reopened_keeps_the_old_file(make_gateway):
    g = make_gateway()
    rotated = g.root / "old.log"
    os.rename(g.log_file, rotated)
    # Where the file was, a directory now: the path cannot be opened.
    g.log_file.mkdir()
    g.proc.send_signal(signal.SIGUSR1)
    deadline = time.time() + 10
    while time.time() < deadline and "log not reopened" not in rotated.read_text():
        time.sleep(0.02)
    text = rotated.read_text()
    assert "log not reopened, still writing to the old file" in text
    p = poplib.POP3("127.0.0.1", g.port("pop3"), timeout=10)
    p.quit()
    deadline = time.time() + 10
    while time.time() < deadline and " pop3 end " not in rotated.read_text():
        time.sleep(0.02)
    assert " pop3 end " in rotated.read_text()


def test_stderr_target_writes_no_file(make_gateway):
    g = make_gateway(overrides={"log": {"file": "", "target": "stderr"}})
    poplib.POP3("127.0.0.1", g.port("pop3"), timeout=10).quit()
    g.stop()
    out = g.proc.stdout.read().decode(errors="replace")
    assert " pop3 connect ip=127.0.0.1 " in out
    assert not g.log_file.exists()


# ---------------------------------------------------------------- fail2ban
def pop3_fails(port, source, user, password):
    p = SourcePOP3(port, source)
    p.user(user)
    with pytest.raises(poplib.error_proto):
        p.pass_(password)
    p.quit()


def pop3_auth_plain_fails(port, source, user, password):
    p = SourcePOP3(port, source)
    token = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()
    with pytest.raises(poplib.error_proto):
        p._shortcmd("AUTH PLAIN " + token)
    p.quit()


def smtp_auth(port, source, mech, user, password):
    s = smtplib.SMTP("127.0.0.1", port, timeout=10, source_address=(source, 0))
    s.ehlo("client.test")
    if mech == "PLAIN":
        code, _ = s.docmd("AUTH", "PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode())
    else:  # LOGIN
        s.docmd("AUTH", "LOGIN " + base64.b64encode(user.encode()).decode())
        code, _ = s.docmd(base64.b64encode(password.encode()).decode())
    s.quit()
    return code


def fail2ban_ips(g, tmp_path):
    """fail2ban-regex over the daemon's log file with the shipped filter: the
    address of every match, and the matched lines."""
    conf = tmp_path / "fail2ban"
    (conf / "filter.d").mkdir(parents=True)
    shutil.copy(SOURCE_DIR / "deploy/fail2ban/filter.d/popgate.conf", conf / "filter.d")
    # The filter includes fail2ban's own common.conf, as every packaged filter does.
    shutil.copy("/etc/fail2ban/filter.d/common.conf", conf / "filter.d")
    r = subprocess.run([FAIL2BAN_REGEX, "-o", "<ip> | <matches>", str(g.log_file), str(conf / "filter.d/popgate.conf")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [l.split(" | ", 1) for l in r.stdout.splitlines() if " | " in l]
    return [ip for ip, _ in rows], [line for _, line in rows]


def test_fail2ban_filter_matches_every_failure_with_the_true_address(make_gateway, tmp_path):
    g = make_gateway(overrides={"auth": {"failure_delay_ms": 0, "failure_delay_max_ms": 0, "max_failures_per_ip": 3,
                                         "apop": True}})
    g.add_user("alice", "right-pw")
    g.add_user("carol", "carol-secret", "--shared-secret")
    pop3, smtp = g.port("pop3"), g.port("smtp")

    # 127.0.0.2: USER/PASS with a wrong password, and a hostile user name.
    pop3_fails(pop3, "127.0.0.2", "alice", "wrong")
    pop3_fails(pop3, "127.0.0.2", HOSTILE, "wrong")
    # 127.0.0.3: APOP with a wrong secret, POP3 AUTH PLAIN with a wrong password.
    p = SourcePOP3(pop3, "127.0.0.3")
    with pytest.raises(poplib.error_proto):
        p.apop("carol", "not-the-secret")
    p.quit()
    pop3_auth_plain_fails(pop3, "127.0.0.3", HOSTILE, "wrong")
    # 127.0.0.4: SMTP AUTH PLAIN and LOGIN, wrong, one of them hostile.
    assert smtp_auth(smtp, "127.0.0.4", "PLAIN", "alice", "wrong") == 535
    assert smtp_auth(smtp, "127.0.0.4", "LOGIN", HOSTILE, "wrong") == 535
    # 127.0.0.5: successes only, POP3 and SMTP.
    p = SourcePOP3(pop3, "127.0.0.5")
    p.user("alice")
    p.pass_("right-pw")
    p.quit()
    p = SourcePOP3(pop3, "127.0.0.5")
    p.apop("carol", "carol-secret")
    p.quit()
    assert smtp_auth(smtp, "127.0.0.5", "PLAIN", "alice", "right-pw") == 235
    # 127.0.0.6: three failures, then refused while popgate blocks it itself.
    for _ in range(3):
        pop3_fails(pop3, "127.0.0.6", "alice", "wrong")
    pop3_fails(pop3, "127.0.0.6", "alice", "right-pw")
    s = smtplib.SMTP("127.0.0.1", smtp, timeout=10, source_address=("127.0.0.6", 0))
    s.ehlo("client.test")
    code, _ = s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0alice\0right-pw").decode())
    assert code == 421
    s.close()

    assert g.wait_log("smtp auth refused ip=127.0.0.6")
    g.stop()
    log = g.log()
    # The lines fail2ban is to read are really there, hostile names quoted.
    # POP3: 2 + 2 + 3 failures (the attempt while blocked is result=blocked).
    assert log.count("result=fail ") == 7
    assert 'user="evil ip\\x3d192.0.2.66 result\\x3dfail"' in log
    assert "result=ok" in log

    ips, lines = fail2ban_ips(g, tmp_path)
    assert collections.Counter(ips) == {"127.0.0.2": 2, "127.0.0.3": 2, "127.0.0.4": 2, "127.0.0.6": 5}, lines
    assert "192.0.2.66" not in ips
    assert not any("result=ok" in l for l in lines)
    # Each kind of failure is among the matches.
    assert any(" mech=pass " in l and "result=fail " in l for l in lines)
    assert any(" mech=apop " in l for l in lines)
    assert any(" pop3 login " in l and " mech=sasl-plain " in l for l in lines)
    assert any(" smtp auth " in l and " mech=PLAIN " in l for l in lines)
    assert any(" smtp auth " in l and " mech=LOGIN " in l for l in lines)
    assert any("result=blocked" in l for l in lines)
    assert any("reason=address-blocked" in l for l in lines)


def test_fail2ban_reads_the_jail_with_the_filter(make_gateway, tmp_path):
    """fail2ban-client -d (dump the configuration, no server) over a copy of
    Debian's /etc/fail2ban with our jail and filter added and enabled: the
    jail is valid and carries the filter's regexes and the log path."""
    g = make_gateway()
    conf = tmp_path / "etc-fail2ban"
    shutil.copytree("/etc/fail2ban", conf, symlinks=True)
    for f in (conf / "jail.d").iterdir():  # Debian's own (sshd) would want its logs
        f.unlink()
    shutil.copy(SOURCE_DIR / "deploy/fail2ban/jail.d/popgate.conf", conf / "jail.d")
    shutil.copy(SOURCE_DIR / "deploy/fail2ban/filter.d/popgate.conf", conf / "filter.d")
    (conf / "jail.d/popgate.local").write_text(f"[popgate]\nenabled = true\nlogpath = {g.log_file}\n")
    client = shutil.which("fail2ban-client") or "/usr/bin/fail2ban-client"
    r = subprocess.run([client, "-c", str(conf), "-d"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "['add', 'popgate', 'auto']" in out, out
    assert f"['set', 'popgate', 'addlogpath', '{g.log_file}'" in out, out
    assert "['multi-set', 'popgate', 'addfailregex'" in out or "'addfailregex'" in out, out
    assert "smtp auth user=" in out and "pop3 login user=" in out
