"""Test support: run the real popgate daemon on ephemeral loopback ports with
its own temporary database, Maildirs and certificate, and a capture upstream.

Every integration test starts the servers it needs through these fixtures.
"""
import json
import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

POPGATE = os.environ.get("POPGATE_BIN", "build/ci/popgate")


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


DEFAULT_LISTENERS = [
    {"name": "pop3", "protocol": "pop3", "tls": "starttls"},
    {"name": "pop3s", "protocol": "pop3", "tls": "implicit"},
    {"name": "smtp", "protocol": "smtp", "tls": "starttls"},
    {"name": "submission", "protocol": "smtp", "tls": "starttls", "auth_required": True},
    {"name": "smtps", "protocol": "smtp", "tls": "implicit", "auth_required": True},
]


class Gateway:
    """A running `popgate serve` with a config written for the test."""

    def __init__(self, root: Path, overrides=None, listeners=None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.db = self.root / "popgate.db"
        self.mail_root = self.root / "mail"
        self.drop = self.root / "relay-drop"
        self.log_file = self.root / "popgate.log"
        self.config_file = self.root / "popgate.toml"
        self.ready_file = self.root / "ready.json"
        self.cert = self.root / "tls" / "cert.pem"
        self.key = self.root / "tls" / "key.pem"
        sections = {
            "server": {"hostname": "gw.test", "threads": 2},
            "tls": {"cert_file": str(self.cert), "key_file": str(self.key)},
            "storage": {"database": str(self.db)},
            "mail": {"maildir": str(self.mail_root / "%u"), "local_domains": ["gw.test", "localhost"],
                     "relay_drop": str(self.drop)},
            "relay": {"grant_ttl": 1800},
            "auth": {"plaintext": "always", "failure_delay_ms": 50, "cram_md5": True},
            "log": {"level": "debug", "file": str(self.log_file)},
        }
        for sec, kv in (overrides or {}).items():
            sections.setdefault(sec, {}).update(kv)
        lines = []
        for sec, kv in sections.items():
            lines.append(f"[{sec}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in kv.items()]
            lines.append("")
        for l in (listeners if listeners is not None else DEFAULT_LISTENERS):
            lines.append("[[listener]]")
            l = {"address": "127.0.0.1", "port": 0, **l}
            lines += [f"{k} = {_toml_value(v)}" for k, v in l.items()]
            lines.append("")
        self.config_file.write_text("\n".join(lines))
        self.proc = None
        self.ports = {}
        # Tests that kill the daemon on purpose set this; otherwise a daemon
        # that does not exit 0 on SIGTERM (a crash, a sanitizer report, a
        # drain that hangs) fails the test that ran it.
        self.allow_unclean_exit = False

    # -- lifecycle ---------------------------------------------------------
    def start(self, timeout=15):
        if self.ready_file.exists():
            self.ready_file.unlink()
        self.proc = subprocess.Popen(
            [POPGATE, "-c", str(self.config_file), "serve", "--ready-file", str(self.ready_file)],
            cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.ready_file.exists():
                self.ports = json.loads(self.ready_file.read_text())
                return self
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace")
                raise RuntimeError(f"popgate exited {self.proc.returncode}: {out}\n{self.log()}")
            time.sleep(0.02)
        raise RuntimeError("popgate did not become ready:\n" + self.log())

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def reload(self):
        self.proc.send_signal(signal.SIGHUP)

    def log(self):
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def wait_log(self, needle, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if needle in self.log():
                return True
            time.sleep(0.02)
        return False

    # -- ports ---------------------------------------------------------------
    def port(self, name):
        return self.ports[name]

    # -- admin -----------------------------------------------------------------
    def cli(self, *args, input=None, check=True):
        r = subprocess.run([POPGATE, "-c", str(self.config_file), *args], input=input,
                           capture_output=True, text=True, cwd=self.root, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"popgate {' '.join(args)} failed {r.returncode}: {r.stderr}")
        return r

    def add_user(self, name, password, *flags):
        return self.cli("user", "add", name, "--scheme", "sha512-crypt", *flags, input=password + "\n")

    def sql(self, statement, params=()):
        con = sqlite3.connect(self.db, timeout=10)
        try:
            with con:
                return con.execute(statement, params).fetchall()
        finally:
            con.close()

    def maildir(self, user):
        return self.mail_root / user

    def messages(self, user):
        """Bytes of every message in the user's Maildir (new/ and cur/), by name."""
        out = []
        for sub in ("new", "cur"):
            d = self.maildir(user) / sub
            if d.exists():
                out += sorted(d.iterdir())
        return [p.read_bytes() for p in sorted(out, key=lambda p: p.name)]

    def dropped(self):
        out = []
        for sub in ("new", "cur"):
            d = self.drop / sub
            if d.exists():
                out += sorted(d.iterdir())
        return [p.read_bytes() for p in out]


def deliver_file(maildir: Path, name: str, data: bytes):
    """Puts a message into a Maildir the way an MDA would (tmp/ then new/)."""
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    tmp = maildir / "tmp" / name
    tmp.write_bytes(data)
    os.rename(tmp, maildir / "new" / name)


def client_tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def raw_exchange(port, payload: bytes, read_until=None, timeout=5, tls=False):
    """Sends bytes on a fresh connection and returns everything read until the
    peer closes, `read_until` appears, or the timeout passes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if tls:
        s = client_tls_context().wrap_socket(s)
    data = b""
    try:
        data += s.recv(4096)
        s.sendall(payload)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if read_until is not None and read_until in data:
                break
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    return data


class CaptureUpstream:
    """An SMTP server (aiosmtpd) that records every envelope and the exact bytes
    of every message; `mode` makes it answer DATA with 250, 451 or 554."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        self.messages = []
        self.mode = "accept"
        self.lock = threading.Lock()
        outer = self

        class Handler:
            async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
                if outer.mode == "reject-rcpt":
                    return "550 5.1.1 no such user here"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server, session, envelope):
                if outer.mode == "tempfail":
                    return "451 4.3.0 try later"
                if outer.mode == "reject":
                    return "554 5.6.0 content rejected"
                with outer.lock:
                    outer.messages.append({"mail_from": envelope.mail_from,
                                           "rcpt_tos": list(envelope.rcpt_tos),
                                           "data": envelope.original_content})
                return "250 2.0.0 queued as UPSTREAM1"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=0, decode_data=False,
                                     data_size_limit=64 * 1024 * 1024)
        # aiosmtpd binds port 0 only on newer releases; pick a free port ourselves.
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.controller.port = self.port
        self.controller.start()

    def stop(self):
        self.controller.stop()


@pytest.fixture
def upstream():
    u = CaptureUpstream()
    yield u
    u.stop()


@pytest.fixture
def make_gateway(tmp_path):
    """Factory: make_gateway(overrides=None, listeners=None, start=True)."""
    made = []

    def make(overrides=None, listeners=None, start=True, name="gw"):
        g = Gateway(tmp_path / name, overrides, listeners)
        made.append(g)
        if start:
            g.start()
        return g

    yield make
    failures = []
    for g in made:
        rc = g.stop()
        if rc not in (None, 0) and not g.allow_unclean_exit:
            out = g.proc.stdout.read().decode(errors="replace") if g.proc and g.proc.stdout else ""
            failures.append(f"{g.root.name}: popgate exited {rc}\n{out[-6000:]}\n" + g.log()[-2000:])
    assert not failures, "\n".join(failures)


@pytest.fixture
def gateway(make_gateway):
    return make_gateway()
