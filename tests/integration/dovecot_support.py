"""A private Dovecot 2.3 (Debian's dovecot-core, -imapd, -pop3d) for tests:
its own config, base_dir, state_dir, passwd-file and Maildirs in a temp
directory, IMAP and POP3 on loopback ephemeral ports, log in a file, and
`auth_policy_server_url` pointing at popgate's HTTP listener. It never reads
/etc/dovecot and never touches the system service.

Dovecot's master runs as whoever starts it (root in CI); its login, auth and
mail processes run as `nobody` (an account every Debian system has), so the
directory they use is made readable and the Maildirs writable for it."""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from popgate_test import LogFile, free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"


SHIPPED = Path(os.environ.get("POPGATE_SOURCE_DIR", ".")) / "deploy" / "dovecot" / "95-popgate-auth-policy.conf"


def shipped_policy_settings(policy_url, api_secret=None, checks=False):
    """The settings of deploy/dovecot/95-popgate-auth-policy.conf as an
    administrator fills them in: popgate's URL, the secret (no api header at
    all when None), a nonce. `checks` also turns on the "allow" requests
    before and after authentication that the shipped file leaves off."""
    out = []
    for line in SHIPPED.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key = line.split("=", 1)[0].strip()
        if key == "auth_policy_server_url":
            line = f"auth_policy_server_url = {policy_url}"
        elif key == "auth_policy_server_api_header":
            if api_secret is None:
                continue
            line = line.replace("REPLACE-WITH-THE-SECRET-FROM-api_key_file", api_secret)
        elif key == "auth_policy_hash_nonce":
            line = line.replace("REPLACE-WITH-A-RANDOM-STRING", "popgate-test-nonce")
        elif checks and key in ("auth_policy_check_before_auth", "auth_policy_check_after_auth"):
            line = f"{key} = yes"
        out.append(line)
    assert not any("REPLACE-WITH" in l for l in out), out
    return out


class Dovecot(LogFile):
    log_poll = 0.05
    log_wait = 10

    def __init__(self, policy_url, api_secret=None, checks=False, users=None, root=None, mechanisms="plain login"):
        """`users` maps a name to its password, or to (password, passdb extra
        fields) such as ("pw", "nologin=y") or (None, "proxy=y nopassword=y
        host=127.0.0.1 port=N"), where {imap_port} and {pop3_port} name this
        Dovecot's own; `mechanisms` is auth_mechanisms (with "anonymous",
        the anonymous user is "anonymous")."""
        # Not under pytest's tmp_path: its parents are 0700 root, and the
        # unprivileged processes must reach this directory.
        self.root = Path(root or tempfile.mkdtemp(prefix="popgate-dovecot-"))
        self.root.chmod(0o755)
        self.imap_port = free_port()
        self.pop3_port = free_port()
        self.log_file = self.root / "dovecot.log"
        self.config_file = self.root / "dovecot.conf"
        self.proc = None
        account = pwd.getpwnam("nobody")
        self.uid, self.gid = account.pw_uid, account.pw_gid
        users = users or {"dave": "dave-secret"}
        passwd = self.root / "passwd"
        # passwd-file: user:{scheme}password:uid:gid:gecos:home:shell:extra
        def passwd_line(user, entry):
            password, extra = entry if isinstance(entry, tuple) else (entry, "")
            secret = "" if password is None else f"{{PLAIN}}{password}"
            extra = extra.format(imap_port=self.imap_port, pop3_port=self.pop3_port)
            return f"{user}:{secret}::::::{extra}\n"

        passwd.write_text("".join(passwd_line(u, e) for u, e in users.items()))
        passwd.chmod(0o644)
        mail = self.root / "mail"
        mail.mkdir()
        os.chown(mail, self.uid, self.gid)
        for d in ("run", "state"):
            (self.root / d).mkdir()
        self.log_file.touch()
        policy = shipped_policy_settings(policy_url, api_secret, checks)
        self.config_file.write_text("\n".join([
            "# written by tests/integration/dovecot_support.py",
            f"instance_name = popgate-test-{uuid.uuid4().hex[:8]}",
            f"base_dir = {self.root}/run",
            f"state_dir = {self.root}/state",
            f"log_path = {self.log_file}",
            "auth_verbose = yes",
            "auth_debug = yes",
            "protocols = imap pop3",
            "listen = 127.0.0.1",
            "ssl = no",
            "disable_plaintext_auth = no",
            f"auth_mechanisms = {mechanisms}",
            "default_internal_user = nobody",
            "default_internal_group = nogroup",
            "default_login_user = nobody",
            "first_valid_uid = 1",
            f"mail_location = maildir:{mail}/%u",
            "pop3_uidl_format = %08Xu%08Xv",
            "passdb {",
            "  driver = passwd-file",
            f"  args = scheme=PLAIN username_format=%u {passwd}",
            "}",
            "userdb {",
            "  driver = static",
            f"  args = uid={self.uid} gid={self.gid} home={mail}/%u",
            "}",
            "service imap-login {",
            f"  inet_listener imap {{\n    address = 127.0.0.1\n    port = {self.imap_port}\n  }}",
            "  inet_listener imaps {\n    port = 0\n  }",
            "}",
            "service pop3-login {",
            f"  inet_listener pop3 {{\n    address = 127.0.0.1\n    port = {self.pop3_port}\n  }}",
            "  inet_listener pop3s {\n    port = 0\n  }",
            "}",
            # No submission, lmtp or doveadm listeners (protocols lists none
            # of them; doveadm's unix socket stays in base_dir).
            *policy,
            "",
        ]))

    def start(self, timeout=15):
        # -F: in the foreground, so the test owns the process and stops it.
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(self.config_file)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace")
                raise RuntimeError(f"dovecot exited {self.proc.returncode}: {out}\n{self.log()}")
            if all(self._listening(p) for p in (self.imap_port, self.pop3_port)):
                return self
            time.sleep(0.05)
        raise RuntimeError("dovecot did not start listening:\n" + self.log())

    @staticmethod
    def _listening(port):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def stop(self, timeout=15):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
