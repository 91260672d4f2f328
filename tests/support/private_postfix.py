"""A private Postfix (Debian's 3.7) for integration tests: `postfix -c DIR`
with its own main.cf and master.cf, queue and data directories in a temp
directory, smtpd on a loopback ephemeral port, relaying everything it
accepts to a capture sink on loopback. Never /etc/postfix's configuration,
never the system instance (if one runs, this one still has its own ports and
queue).

Postfix's master must start as root (it runs its daemons as mail_owner,
"postfix"); `require_root()` skips a test elsewhere. The directory the
instance lives in must be reachable by the postfix user: `work_dir()` makes
one under /tmp that is (pytest's own tmp_path is not).

    pf = PrivatePostfix(work_dir, sink_port, relay_restrictions="...")
    pf.start()
    code, text = pf.rcpt("bob@remote.test", source="127.0.0.2")
    pf.stop()
"""
import os
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from popgate_test import LogFile, SourcePOP3, free_port

POSTFIX = "/usr/sbin/postfix"

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {w}/queue
data_directory = {w}/data
mail_owner = postfix
setgid_group = postdrop
shlib_directory = /usr/lib/postfix
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
command_directory = /usr/sbin
myhostname = mx.test
mydomain = test
myorigin = $myhostname
# Its "own" domain: accepted from anyone (relay_domains passes
# reject_unauth_destination) and handed to the sink like everything else.
mydestination =
relay_domains = {own_domain}
# Never loopback: the tests' clients are 127.0.0.x and must earn their relay.
mynetworks = 192.0.2.1/32
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
relayhost = [127.0.0.1]:{sink_port}
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
local_transport = error:no local delivery
alias_maps =
alias_database =
smtpd_relay_restrictions = {relay_restrictions}
smtpd_recipient_restrictions =
in_flow_delay = 0s
maillog_file = {w}/postfix.log
maillog_file_prefixes = {w}
{extra}
"""

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def require_root():
    if not os.path.exists(POSTFIX):
        pytest.skip("Postfix is not installed (deploy/install-deps.sh installs it)")
    if os.geteuid() != 0:
        pytest.skip("a private Postfix needs root: its master switches to the postfix user")


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


@pytest.fixture
def work_dir():
    """A fresh directory the postfix user can reach (0711, under /tmp),
    removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix="popgate-postfix-"))
    os.chmod(d, 0o711)
    yield d
    shutil.rmtree(d, ignore_errors=True)


class PrivatePostfix(LogFile):
    log_poll = 0.1

    def __init__(self, root: Path, sink_port: int, relay_restrictions: str,
                 own_domain="inbound.test", extra=""):
        self.root = Path(root) / "postfix"
        self.conf = self.root / "conf"
        self.conf.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        self.port = free_port()
        w = str(self.root)
        (self.conf / "main.cf").write_text(MAIN_CF.format(
            w=w, sink_port=sink_port, relay_restrictions=relay_restrictions,
            own_domain=own_domain, extra=extra))
        (self.conf / "master.cf").write_text(MASTER_CF.format(port=self.port))
        for d in ("queue", "data"):
            (self.root / d).mkdir(exist_ok=True)
        shutil.chown(self.root / "data", "postfix")
        self.log_file = self.root / "postfix.log"
        self.started = False

    # Postfix's cleanup compares a queue file's time with the clock: on a
    # busy machine it may find the file system a second ahead and say so.
    # That is about the host, not about what Postfix was asked to do.
    HOST_CLOCK_WARNINGS = ("file system clock is", "resetting file time stamps")

    def warnings(self):
        """Postfix's warning lines, but for the host-clock ones above."""
        return [line for line in self.log().splitlines()
                if "warning" in line and not any(w in line for w in self.HOST_CLOCK_WARNINGS)]

    def _postfix(self, *args, check=True):
        env = dict(os.environ, MAIL_CONFIG=str(self.conf))
        return subprocess.run([POSTFIX, "-c", str(self.conf), *args], env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=60, check=check)

    def start(self):
        r = self._postfix("start", check=False)
        if r.returncode != 0:
            raise RuntimeError(f"postfix start failed: {r.stdout}{r.stderr}\n{self.log()}")
        self.started = True
        if not wait_port(self.port):
            raise RuntimeError("postfix did not listen:\n" + self.log())
        return self

    def stop(self):
        if not self.started:
            return
        self._postfix("stop", check=False)
        pid_file = self.root / "queue" / "pid" / "master.pid"
        deadline = time.time() + 20
        while time.time() < deadline and pid_file.exists():
            try:
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, 0)
            except (OSError, ValueError):
                break
            time.sleep(0.1)
        self.started = False

    def rcpt(self, recipient, source="127.0.0.1", sender="alice@client.test"):
        """RCPT TO through this Postfix from `source`: (code, text)."""
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30, source_address=(source, 0)) as c:
            c.ehlo("client.test")
            c.mail(sender)
            code, text = c.rcpt(recipient)
            c.rset()
            return code, text.decode(errors="replace")

    def send(self, recipient, body, source="127.0.0.1", sender="alice@client.test"):
        """A whole message through this Postfix from `source`; raises
        smtplib.SMTPRecipientsRefused when the recipient is refused."""
        msg = f"From: {sender}\r\nTo: {recipient}\r\nSubject: test\r\n\r\n{body}\r\n"
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30, source_address=(source, 0)) as c:
            c.ehlo("client.test")
            c.sendmail(sender, [recipient], msg)


# -- with popgate beside it --------------------------------------------------

# Postfix's answer to a relay attempt it refuses (reject_unauth_destination).
RELAY_DENIED = "5.7.1 <bob@remote.test>: Relay access denied"


def pop3_login(gateway, source, user="alice", password="pw"):
    """A POP3 login at popgate (its "pop3" listener) from `source`; the +OK."""
    c = SourcePOP3(gateway.port("pop3"), source, timeout=20)
    c.user(user)
    reply = c.pass_(password)
    c.quit()
    return reply


def delivered(sink, recipient, timeout=30):
    """The messages for `recipient` at a popgate_test.CaptureUpstream sink,
    once Postfix's queue has handed them over."""
    return sink.wait_for(lambda: [m for m in sink.messages if recipient in m["rcpt_tos"]], timeout)
