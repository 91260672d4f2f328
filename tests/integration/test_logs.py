"""Logs as an administrator runs them (issue 14, item 3): log.file opened
again on SIGHUP and SIGUSR1 after a rename, and the fail2ban filter in
deploy/fail2ban checked with Debian's fail2ban-regex against the lines the
daemon really wrote for failed POP3 logins (USER/PASS, APOP, AUTH) and failed
SMTP AUTH: every failure found with its true client address, no success,
and no address a hostile user name tried to plant. The same through each log
target: a log file, stderr read by a real systemd-journald (fail2ban's
systemd backend reading the journal it wrote), and syslog datagrams on a
private /dev/log."""
import base64
import collections
import json
import os
import poplib
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pop3_support import SourcePOP3
from popgate_test import eventually, make_gateway  # noqa: F401  (fixture)

SOURCE_DIR = Path(os.environ.get("POPGATE_SOURCE_DIR", "."))
FAIL2BAN_REGEX = shutil.which("fail2ban-regex") or "/usr/bin/fail2ban-regex"
HOSTILE = "evil ip=192.0.2.66 result=fail"
HERE = Path(__file__).resolve().parent
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="a private mount namespace needs root (CI runs as root)")


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


def fail2ban_ips(source, tmp_path, mode="normal"):
    """fail2ban-regex with the shipped filter (in `mode`) over `source`, a log
    file or "systemd-journal[journalpath=DIR]": the address of every match,
    and the matched lines (as fail2ban saw them)."""
    conf = tmp_path / "fail2ban"
    if not conf.exists():
        (conf / "filter.d").mkdir(parents=True)
        shutil.copy(SOURCE_DIR / "deploy/fail2ban/filter.d/popgate.conf", conf / "filter.d")
        # The filter includes fail2ban's own common.conf, as every packaged filter does.
        shutil.copy("/etc/fail2ban/filter.d/common.conf", conf / "filter.d")
    r = subprocess.run([FAIL2BAN_REGEX, "-o", "<ip> | <matches>", str(source),
                        f"{conf / 'filter.d/popgate.conf'}[mode={mode}]"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [l.split(" | ", 1) for l in r.stdout.splitlines() if " | " in l]
    return [ip for ip, _ in rows], [line for _, line in rows]


# What login_mix() makes the filter find: every failure (normal), or only
# popgate's own address blocks (shared): 127.0.0.6's auth-block line and the
# two attempts refused during the block.
MIX_NORMAL = {"127.0.0.2": 2, "127.0.0.3": 2, "127.0.0.4": 2, "127.0.0.6": 5}
MIX_SHARED = {"127.0.0.6": 3}
MIX_AUTH = {"failure_delay_ms": 0, "failure_delay_max_ms": 0, "max_failures_per_ip": 3, "apop": True}


def login_mix(g):
    """Failed and successful logins of every kind from distinct addresses
    (127.0.0.2-4 fail, 127.0.0.5 succeeds, 127.0.0.6 fails until popgate
    blocks it); waits until the last line is logged. The gateway needs
    auth = MIX_AUTH."""
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


def test_an_address_blocked_during_an_smtp_auth_is_logged_as_an_address_block(make_gateway, tmp_path):
    # An AUTH LOGIN begun before the address was blocked, its password sent
    # after other names' failures had blocked the address: its refusal was
    # logged reason=user-blocked with a name that never failed, a line that
    # fail2ban's filter leaves alone (it is a user's problem), in both modes.
    g = make_gateway(overrides={"auth": MIX_AUTH})
    g.add_user("alice", "right-pw")
    smtp = g.port("smtp")
    s = smtplib.SMTP("127.0.0.1", smtp, timeout=10, source_address=("127.0.0.7", 0))
    s.ehlo("client.test")
    assert s.docmd("AUTH", "LOGIN " + base64.b64encode(b"alice").decode())[0] == 334
    for i in range(3):
        assert smtp_auth(smtp, "127.0.0.7", "PLAIN", f"u{i}", "wrong") == 535
    assert g.wait_log("smtp auth-block ip=127.0.0.7 scope=address")
    code, text = s.docmd(base64.b64encode(b"right-pw").decode())
    assert code == 454 and b"from your address" in text, (code, text)
    s.quit()
    assert g.wait_log("smtp auth refused ip=127.0.0.7 reason=address-blocked seconds_left=")
    g.stop()
    assert "user-blocked" not in g.log()
    ips, lines = fail2ban_ips(g.log_file, tmp_path, mode="shared")
    assert ips == ["127.0.0.7"] * 2, lines  # the block, and the AUTH it refused
    ips, lines = fail2ban_ips(g.log_file, tmp_path)
    assert ips == ["127.0.0.7"] * 4, lines  # three failures, and the refusal


def test_fail2ban_filter_matches_every_failure_with_the_true_address(make_gateway, tmp_path):
    g = make_gateway(overrides={"auth": MIX_AUTH})
    login_mix(g)
    assert g.wait_log("smtp auth refused ip=127.0.0.6")
    g.stop()
    log = g.log()
    # The lines fail2ban is to read are really there, hostile names quoted.
    # POP3: 2 + 2 + 3 failures (the attempt while blocked is result=blocked).
    assert log.count("result=fail ") == 7
    assert 'user="evil ip\\x3d192.0.2.66 result\\x3dfail"' in log
    assert "result=ok" in log

    ips, lines = fail2ban_ips(g.log_file, tmp_path)
    assert collections.Counter(ips) == MIX_NORMAL, lines
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

    # mode = shared: popgate's address block and what it refused, no failure.
    ips, lines = fail2ban_ips(g.log_file, tmp_path, "shared")
    assert collections.Counter(ips) == MIX_SHARED, lines
    assert sum(" pop3 auth-block ip=127.0.0.6 scope=address " in l for l in lines) == 1, lines
    assert not any("result=fail" in l or "result=ok" in l for l in lines), lines


def test_fail2ban_reads_the_jail_with_the_filter(make_gateway, tmp_path):
    """fail2ban-client -d (dump the configuration, no server) over a copy of
    Debian's /etc/fail2ban with our jail and filter added and enabled: the
    jail is valid and carries the filter's regexes; as shipped it reads the
    journal (the packaged log.target), and with a log file it reads that."""
    g = make_gateway()
    conf = tmp_path / "etc-fail2ban"
    shutil.copytree("/etc/fail2ban", conf, symlinks=True)
    for f in (conf / "jail.d").iterdir():  # Debian's own (sshd) would want its logs
        f.unlink()
    shutil.copy(SOURCE_DIR / "deploy/fail2ban/jail.d/popgate.conf", conf / "jail.d")
    shutil.copy(SOURCE_DIR / "deploy/fail2ban/filter.d/popgate.conf", conf / "filter.d")
    client = shutil.which("fail2ban-client") or "/usr/bin/fail2ban-client"
    (conf / "jail.d/popgate.local").write_text("[popgate]\nenabled = true\n")
    r = subprocess.run([client, "-c", str(conf), "-t"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([client, "-c", str(conf), "-d"], capture_output=True, text=True, timeout=120)
    assert "['add', 'popgate', 'systemd']" in r.stdout, r.stdout
    assert "['set', 'popgate', 'addjournalmatch', '_SYSTEMD_UNIT=popgate.service']" in r.stdout, r.stdout
    (conf / "jail.d/popgate.local").write_text(f"[popgate]\nenabled = true\nbackend = auto\nlogpath = {g.log_file}\n")
    r = subprocess.run([client, "-c", str(conf), "-d"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "['add', 'popgate', 'auto']" in out, out
    assert f"['set', 'popgate', 'addlogpath', '{g.log_file}'" in out, out
    assert "['multi-set', 'popgate', 'addfailregex'" in out or "'addfailregex'" in out, out
    assert "smtp auth user=" in out and "pop3 login user=" in out
    # mode = shared, as the jail's comment tells shared-address sites to set it.
    (conf / "jail.d/popgate.local").write_text(f"[popgate]\nenabled = true\nbackend = auto\nlogpath = {g.log_file}\n"
                                               "mode = shared\nmaxretry = 1\n")
    r = subprocess.run([client, "-c", str(conf), "-d"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert " auth-block ip=" in r.stdout and "pop3 login user=" not in r.stdout, r.stdout
    assert "['set', 'popgate', 'maxretry', 1]" in r.stdout, r.stdout


# ---------------------------------------------------------------- journal
# systemd's StandardError=journal, as far as popgate can tell: JOURNAL_STREAM
# holds "DEVICE:INODE" of its stderr. Here stderr is the test's pipe.
STDERR_IS_JOURNAL = ("sh", "-c", 'export JOURNAL_STREAM="$(stat -L -c %d:%i /proc/self/fd/2)"; exec "$@"', "sh")
ISO_TIME_LEVEL = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:?\d\d (?:info|warning|error) ")


def stderr_gateway(make_gateway, wrapper, target="stderr"):
    g = make_gateway(overrides={"log": {"file": "", "target": target, "level": "info"}, "auth": MIX_AUTH},
                     start=False)
    g.start(wrapper=wrapper)
    return g


def test_stderr_to_the_journal_carries_syslog_priorities(make_gateway):
    """Under the journal each line is "<N>message" (sd-daemon(3)): journald
    takes N as the entry's priority and stamps the time itself."""
    g = stderr_gateway(make_gateway, STDERR_IS_JOURNAL)
    login_mix(g)
    g.stop()
    out = g.proc.stdout.read().decode(errors="replace")
    lines = out.splitlines()
    assert len(lines) > 20 and all(re.match(r"<[0-7]>\S", l) for l in lines), out
    assert not ISO_TIME_LEVEL.search(out), out
    assert re.search(r"^<6>sid=[0-9a-f]{8} pop3 login user=alice ip=127\.0\.0\.2 mech=pass tls=no result=fail ",
                     out, re.M), out
    assert re.search(r"^<6>sid=[0-9a-f]{8} smtp auth user=alice mech=PLAIN ip=127\.0\.0\.4 result=failed ",
                     out, re.M), out
    assert re.search(r"^<4>sid=[0-9a-f]{8} pop3 auth-block ip=127\.0\.0\.6 scope=address ", out, re.M), out
    assert re.search(r"^<6>stopped ", out, re.M), out


@pytest.mark.parametrize("stream", ["other", "garbage"])
def test_journal_stream_of_another_file_keeps_the_human_format(make_gateway, tmp_path, stream):
    """JOURNAL_STREAM inherited by a process whose stderr goes elsewhere (or
    unreadable) does not count: time and level as usual, no "<N>"."""
    other = tmp_path / "other"
    other.write_text("")
    value = f"{other.stat().st_dev}:{other.stat().st_ino}" if stream == "other" else "12:34x"
    g = stderr_gateway(make_gateway, ("env", f"JOURNAL_STREAM={value}"))
    poplib.POP3("127.0.0.1", g.port("pop3"), timeout=10).quit()
    g.stop()
    out = g.proc.stdout.read().decode(errors="replace")
    assert re.search(ISO_TIME_LEVEL.pattern + r"sid=[0-9a-f]{8} pop3 connect ip=127\.0\.0\.1 ", out), out
    assert not re.search(r"^<\d>", out, re.M), out


@pytest.fixture
def journald(tmp_path):
    """A real systemd-journald in a private mount namespace: its /run (and
    /var/log/journal, where the host has one) are directories of this test,
    so the host's journal is never touched and the test reaches journald's
    stdout socket at ROOT/run/systemd/journal/stdout. Yields ROOT; the
    journal files end up under ROOT/run/log/journal (never flushed to /var)."""
    root = tmp_path / "journald"
    (root / "run").mkdir(parents=True)
    (root / "var").mkdir()
    script = ('mount --bind "$1/run" /run && mkdir -p /run/systemd/journal /run/log/journal && '
              '{ [ ! -d /var/log/journal ] || mount --bind "$1/var" /var/log/journal; } && exec "$2"')
    proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(root),
                             "/lib/systemd/systemd-journald"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if not eventually(lambda: (root / "run/systemd/journal/stdout").is_socket() or proc.poll() is not None, 10) \
            or proc.poll() is not None:
        proc.kill()
        pytest.fail("systemd-journald did not start: " + proc.communicate()[0].decode(errors="replace"))
    yield root
    proc.terminate()
    proc.wait(20)


def journal_entries(directory, *args):
    r = subprocess.run(["journalctl", "-D", str(directory), "--no-pager", "-o", "json", *args],
                       capture_output=True, text=True, timeout=60)
    return [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]


@needs_root
def test_journald_and_fail2ban_systemd_backend(make_gateway, journald, tmp_path):
    """popgate started as systemd starts a unit with StandardError=journal
    (journal_exec.py: journald's stdout stream, its header, JOURNAL_STREAM):
    journald records each line's priority and the message without time or
    level, and fail2ban-regex reading that journal with fail2ban's systemd
    backend and the filter's journalmatch finds every failure with its true
    address (mode = normal) or only popgate's address blocks (mode = shared)."""
    stream = journald / "run/systemd/journal/stdout"
    journal = journald / "run/log/journal"
    exec_under = (sys.executable, str(HERE / "journal_exec.py"), str(stream))
    # Another unit whose line looks like a failure: the journalmatch leaves it out.
    subprocess.run([*exec_under, "other", "other.service", "sh", "-c",
                    "echo '<6>sid=0badc0de pop3 login user=x ip=192.0.2.99 mech=pass tls=no result=fail reason=x'"],
                   check=True, timeout=30)
    g = stderr_gateway(make_gateway, (*exec_under, "popgate", "popgate.service"))
    login_mix(g)
    g.stop()
    unit = "_SYSTEMD_UNIT=popgate.service"
    entries = eventually(lambda: [e for e in journal_entries(journal, unit)
                                  if e["MESSAGE"].startswith("stopped ")] and journal_entries(journal, unit))
    assert entries, journal_entries(journal)
    assert {e["_PID"] for e in entries} == {str(g.proc.pid)}
    assert {e["SYSLOG_IDENTIFIER"] for e in entries} == {"popgate"}
    assert not any(e["MESSAGE"].startswith("<") or ISO_TIME_LEVEL.match(e["MESSAGE"]) for e in entries)
    by_message = {e["MESSAGE"]: e["PRIORITY"] for e in entries}
    fails = [m for m in by_message if re.match(r"sid=\w+ (?:pop3 login user=.* result=fail |smtp auth user=.* "
                                               r"result=failed )", m)]
    assert len(fails) == sum(MIX_NORMAL.values()) - 2 and {by_message[m] for m in fails} == {"6"}, by_message
    # journalctl -p warning: the address block, not the failures.
    warnings = [e["MESSAGE"] for e in journal_entries(journal, unit, "-p", "warning")]
    assert any(re.match(r"sid=\w+ pop3 auth-block ip=127\.0\.0\.6 scope=address ", m) for m in warnings), warnings
    assert not any(" result=fail" in m for m in warnings), warnings

    source = f"systemd-journal[journalpath={journal}]"
    ips, lines = fail2ban_ips(source, tmp_path)
    assert collections.Counter(ips) == MIX_NORMAL, lines
    assert all(f" popgate[{g.proc.pid}]: sid=" in l for l in lines), lines
    assert not any("result=ok" in l for l in lines)
    ips, lines = fail2ban_ips(source, tmp_path, "shared")
    assert collections.Counter(ips) == MIX_SHARED, lines


# ---------------------------------------------------------------- syslog
# The daemon in a private mount namespace whose /dev is a tmpfs with the few
# devices it uses and /dev/log a link to the test's own datagram socket.
PRIVATE_DEV_LOG = """set -e
sock=$1; old=$2; shift 2
mkdir -p "$old"
mount --rbind /dev "$old"
mount -t tmpfs -o mode=0755 tmpfs /dev
for n in null zero full random urandom; do touch /dev/$n; mount --bind "$old/$n" /dev/$n; done
ln -s /proc/self/fd /dev/fd
ln -s "$sock" /dev/log
exec "$@"
"""
SYSLOG_DATAGRAM = re.compile(r"<(\d+)>(\w{3} [ \d]\d \d\d:\d\d:\d\d) popgate\[(\d+)\]: (.*)", re.S)


@needs_root
def test_syslog_target_writes_facility_mail_and_fail2ban_matches(make_gateway, tmp_path):
    sock_path = tmp_path / "dev-log"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(sock_path))
    rx.settimeout(0.1)
    datagrams, done = [], threading.Event()

    def receive():
        while not done.is_set():
            try:
                datagrams.append(rx.recv(65536).decode(errors="replace"))
            except socket.timeout:
                pass

    t = threading.Thread(target=receive, daemon=True)
    t.start()
    try:
        g = stderr_gateway(make_gateway, ("unshare", "-m", "--propagation", "private", "sh", "-c", PRIVATE_DEV_LOG,
                                          "sh", str(sock_path), str(tmp_path / "host-dev")), target="syslog")
        login_mix(g)
        g.stop()
        assert eventually(lambda: any(" popgate[" in d and "]: stopped " in d for d in datagrams)), datagrams
    finally:
        done.set()
        t.join()
        rx.close()
    parsed = [SYSLOG_DATAGRAM.fullmatch(d) for d in datagrams]
    assert all(parsed), [d for d, m in zip(datagrams, parsed) if not m]
    assert {int(m[3]) for m in parsed} == {g.proc.pid}            # ident popgate[PID]
    assert {int(m[1]) >> 3 for m in parsed} == {2}                 # facility mail: <16+severity>
    sev = {m[4]: int(m[1]) & 7 for m in parsed}
    assert any(re.match(r"sid=\w+ pop3 login user=alice ip=127\.0\.0\.2 .* result=fail ", k) and v == 6
               for k, v in sev.items()), sev
    assert any(re.match(r"sid=\w+ pop3 auth-block ip=127\.0\.0\.6 scope=address ", k) and v == 4
               for k, v in sev.items()), sev
    assert not g.log_file.exists() and "sid=" not in g.proc.stdout.read().decode(errors="replace")

    # As rsyslog writes them to /var/log/mail.log (its traditional format:
    # the priority taken off, the host after the time).
    mail_log = tmp_path / "mail.log"
    mail_log.write_text("".join(f"{m[2]} gw popgate[{m[3]}]: {m[4]}\n" for m in parsed))
    ips, lines = fail2ban_ips(mail_log, tmp_path)
    assert collections.Counter(ips) == MIX_NORMAL, lines
    assert "192.0.2.66" not in ips and not any("result=ok" in l for l in lines)
    ips, lines = fail2ban_ips(mail_log, tmp_path, "shared")
    assert collections.Counter(ips) == MIX_SHARED, lines
