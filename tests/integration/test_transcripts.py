"""Replays every session transcript (tests/session/transcripts/*.t) against the
REAL daemon over TCP, so each transcript is proven to match what popgate
actually sends. The in-memory session harness (tests/session/) replays the very
same files without sockets; the format and the harness defaults both sides use
are specified in tests/session/README.md. The parser lives here on purpose:
the C++ side has its own, and both read the README, not each other."""
import base64
import hashlib
import hmac
import re
import socket
import ssl
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from popgate_test import client_tls_context, deliver_file, make_gateway  # noqa: F401  (fixture)

TRANSCRIPTS = Path(__file__).resolve().parents[1] / "session" / "transcripts"
LINE_TIMEOUT = 10.0      # seconds per expected server line
QUIET_WAIT = 0.1         # at the end of a script without =closed: nothing more may arrive

# The harness defaults of tests/session/README.md; @config is merged over them.
# Sections the Gateway class already writes (paths, certificate, log) stay as
# it writes them; these are the keys that shape protocol replies.
HARNESS_DEFAULTS = {
    "server": {"hostname": "gw.test"},
    "mail": {"local_domains": ["gw.test", "localhost"]},
    "auth": {"plaintext": "always", "apop": True, "cram_md5": True,
             "failure_delay_ms": 0, "failure_delay_max_ms": 0},
    # relay.upstream_host stays "" (the default): relayed mail goes to the drop folder.
}


# ---------------------------------------------------------------- parsing

class TranscriptError(Exception):
    pass


@dataclass
class Step:
    kind: str          # "C:", "C<", "C!", "S:", "S~", "=closed"
    arg: object        # bytes to send, text to match, compiled regex, or C! words
    lineno: int
    text: str          # the transcript line as written, for reports


@dataclass
class Transcript:
    path: Path
    protocol: str = ""
    whole_only: bool = False
    listener: dict = field(default_factory=lambda: {"tls": "none"})
    config: dict = field(default_factory=dict)        # section -> {key: value}
    users: list = field(default_factory=list)         # (name, password, flags)
    messages: list = field(default_factory=list)      # (user, file name, bytes)
    steps: list = field(default_factory=list)


def unescape(s: str, where: str) -> bytes:
    """C-style escapes of a C< line: \\r \\n \\\\ \\xHH; nothing else."""
    out = bytearray()
    i = 0
    while i < len(s):
        c = s[i]
        if c != "\\":
            out += c.encode("ascii")
            i += 1
            continue
        nxt = s[i + 1:i + 2]
        if nxt == "r":
            out += b"\r"
            i += 2
        elif nxt == "n":
            out += b"\n"
            i += 2
        elif nxt == "\\":
            out += b"\\"
            i += 2
        elif nxt == "x" and re.fullmatch(r"[0-9A-Fa-f]{2}", s[i + 2:i + 4]):
            out.append(int(s[i + 2:i + 4], 16))
            i += 4
        else:
            raise TranscriptError(f"{where}: bad escape {s[i:i + 4]!r}")
    return bytes(out)


def toml_value(text: str, where: str):
    try:
        return tomllib.loads("v = " + text)["v"]
    except tomllib.TOMLDecodeError as e:
        raise TranscriptError(f"{where}: bad TOML value {text!r}: {e}") from None


def parse(path: Path) -> Transcript:
    t = Transcript(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TranscriptError(f"{path.name}: not UTF-8") from None
    if "\r" in text:
        raise TranscriptError(f"{path.name}: CR in the file (transcripts have LF line ends)")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for n, line in enumerate(lines, 1):
        # UTF-8 (a "§") only in comments; everything that is sent or compared is ASCII.
        if not line.isascii() and not line.startswith("#"):
            raise TranscriptError(f"{path.name}:{n}: non-ASCII outside a comment (use C< escapes)")
    i = 0
    in_script = False
    while i < len(lines):
        line = lines[i]
        n = i + 1
        where = f"{path.name}:{n}"
        i += 1
        if line == "" or line.startswith("#"):
            continue
        if line.startswith("@"):
            if in_script:
                raise TranscriptError(f"{where}: directive after the script started")
            words = line.split()
            d = words[0]
            if not t.protocol and d != "@protocol":
                raise TranscriptError(f"{where}: @protocol must be the first directive")
            if d == "@protocol":
                if t.protocol or len(words) != 2 or words[1] not in ("pop3", "smtp"):
                    raise TranscriptError(f"{where}: expected one '@protocol pop3|smtp'")
                t.protocol = words[1]
            elif d == "@whole-only":
                if len(words) != 1:
                    raise TranscriptError(f"{where}: @whole-only takes no argument")
                t.whole_only = True
            elif d == "@listener":
                for w in words[1:]:
                    k, eq, v = w.partition("=")
                    if k == "tls" and v in ("none", "starttls", "required", "implicit"):
                        t.listener["tls"] = v
                    elif k in LISTENER_FLAGS and v in ("yes", "no"):
                        t.listener[k] = v == "yes"
                    elif k == "plaintext" and v in ("never", "tls-only", "always"):
                        t.listener[k] = v
                    else:
                        raise TranscriptError(f"{where}: bad @listener setting {w!r}")
            elif d == "@config":
                m = re.fullmatch(r"@config ([a-z_0-9]+)\.([a-z_0-9]+) = (.+)", line)
                if not m:
                    raise TranscriptError(f"{where}: expected '@config section.key = value'")
                t.config.setdefault(m.group(1), {})[m.group(2)] = toml_value(m.group(3), where)
            elif d == "@user":
                if len(words) < 3 or any(f not in ("shared", "apop-only") for f in words[3:]):
                    raise TranscriptError(f"{where}: expected '@user NAME PASSWORD [shared] [apop-only]'")
                t.users.append((words[1], words[2], words[3:]))
            elif d == "@message":
                if len(words) != 3:
                    raise TranscriptError(f"{where}: expected '@message USER FILENAME'")
                body = []
                while True:
                    if i >= len(lines):
                        raise TranscriptError(f"{where}: @message without @end")
                    if lines[i] == "@end":
                        i += 1
                        break
                    body.append(lines[i] + "\n")
                    i += 1
                t.messages.append((words[1], words[2], "".join(body).encode("ascii")))
            else:
                raise TranscriptError(f"{where}: unknown directive {d}")
            continue
        in_script = True
        if not t.protocol:
            raise TranscriptError(f"{where}: script before @protocol")
        if t.steps and t.steps[-1].kind == "=closed":
            raise TranscriptError(f"{where}: nothing may follow =closed")
        if line == "=closed":
            t.steps.append(Step("=closed", None, n, line))
            continue
        if line in ("C:", "S:"):
            line += " "   # the empty line, written without a trailing space
        kind, rest = line[:2], line[3:]
        if line[2:3] != " " or kind not in ("C:", "C<", "C!", "S:", "S~"):
            raise TranscriptError(f"{where}: unknown line {line!r}")
        if kind == "C:":
            arg = rest.encode("ascii") + b"\r\n"
        elif kind == "C<":
            arg = unescape(rest, where)
        elif kind == "C!":
            arg = rest.split()
            ok = (arg[:1] == ["starttls"] and len(arg) == 1) or (arg[:1] in (["apop"], ["cram"]) and len(arg) == 3)
            if not ok:
                raise TranscriptError(f"{where}: expected 'C! apop USER SECRET', 'C! cram USER SECRET' or 'C! starttls'")
            if arg[0] == "starttls" and (not t.steps or t.steps[-1].kind not in ("S:", "S~")):
                raise TranscriptError(f"{where}: C! starttls must follow the server's reply to STLS/STARTTLS")
        elif kind == "S:":
            arg = rest
        else:
            try:
                arg = re.compile(rest)
            except re.error as e:
                raise TranscriptError(f"{where}: bad regex: {e}") from None
        t.steps.append(Step(kind, arg, n, line))
    if not t.protocol:
        raise TranscriptError(f"{path.name}: no @protocol")
    if not t.steps:
        raise TranscriptError(f"{path.name}: no script")
    return t


# ---------------------------------------------------------------- replay

class Mismatch(AssertionError):
    pass


class Wire:
    """One client connection: writes, CRLF-terminated lines, EOF, TLS upgrade."""

    def __init__(self, port, implicit_tls):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=LINE_TIMEOUT)
        if implicit_tls:
            self.sock = client_tls_context().wrap_socket(self.sock)
        self.buf = b""
        self.eof = False

    def _recv(self, timeout):
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError):
            chunk = b""
        if not chunk:
            self.eof = True
        self.buf += chunk

    def line(self) -> bytes:
        deadline = time.monotonic() + LINE_TIMEOUT
        while b"\r\n" not in self.buf:
            if self.eof:
                raise Mismatch(f"connection closed; unterminated bytes {self.buf!r}" if self.buf else "connection closed")
            left = deadline - time.monotonic()
            if left <= 0:
                raise Mismatch(f"no line within {LINE_TIMEOUT:.0f} s; have {self.buf!r}")
            try:
                self._recv(left)
            except (socket.timeout, TimeoutError):
                continue
        out, _, self.buf = self.buf.partition(b"\r\n")
        return out

    def closed(self):
        deadline = time.monotonic() + LINE_TIMEOUT
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Mismatch(f"connection still open after {LINE_TIMEOUT:.0f} s")
            try:
                self._recv(left)
            except (socket.timeout, TimeoutError):
                continue
        if self.buf:
            raise Mismatch(f"bytes before the close: {self.buf!r}")

    def quiet(self, wait):
        """Reads what arrives within `wait`; the caller checks self.buf."""
        if self.eof:
            return
        try:
            self._recv(wait)
        except (socket.timeout, TimeoutError, ssl.SSLWantReadError):
            pass

    def send(self, data: bytes):
        self.sock.sendall(data)

    def starttls(self):
        if self.buf:
            raise Mismatch(f"unread bytes before the TLS handshake: {self.buf!r}")
        self.sock.settimeout(LINE_TIMEOUT)
        self.sock = client_tls_context().wrap_socket(self.sock)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def apop_line(greeting: str, user: str, secret: str) -> bytes:
    m = re.search(r"<[^<>]*>", greeting)
    if not m:
        raise Mismatch(f"C! apop: no timestamp in the greeting {greeting!r}")
    digest = hashlib.md5((m.group(0) + secret).encode()).hexdigest()
    return f"APOP {user} {digest}\r\n".encode()


def cram_line(challenge_b64: str, user: str, secret: str) -> bytes:
    challenge = base64.b64decode(challenge_b64, validate=True)
    digest = hmac.new(secret.encode(), challenge, hashlib.md5).hexdigest()
    return base64.b64encode(f"{user} {digest}".encode()) + b"\r\n"


# @listener keys that take yes/no; the daemon's check-config judges the rest.
LISTENER_FLAGS = ("auth_required", "local_delivery_without_auth", "grant")


def gateway_for(t: Transcript, make):
    overrides = {sec: dict(kv) for sec, kv in HARNESS_DEFAULTS.items()}
    for sec, kv in t.config.items():
        overrides.setdefault(sec, {}).update(kv)
    listener = {"name": "test", "protocol": t.protocol, **t.listener}
    g = make(overrides=overrides, listeners=[listener])
    for name, password, flags in t.users:
        args = []
        if "shared" in flags or "apop-only" in flags:
            args.append("--shared-secret")
        if "apop-only" in flags:
            args.append("--apop-only")
        g.add_user(name, password, *args)
    for user, name, data in t.messages:
        deliver_file(g.maildir(user), name, data)
    return g


def replay(t: Transcript, port: int):
    log = []     # the exchange so far, for the failure report
    wire = Wire(port, t.listener["tls"] == "implicit")
    greeting = None
    challenge = None
    pending = b""

    def fail(step, why):
        shown = "\n".join(log[-60:])
        raise Mismatch(f"{t.path.name}:{step.lineno}: {step.text}\n  {why}\n--- exchange so far ---\n{shown}")

    def flush(step):
        nonlocal pending
        if not pending:
            return
        if wire.buf:
            fail(step, f"server sent more than the transcript expects before this write: {wire.buf!r}")
        try:
            wire.send(pending)
        except OSError as e:
            fail(step, f"send failed: {e}")
        pending = b""

    try:
        for step in t.steps:
            if step.kind in ("C:", "C<"):
                pending += step.arg
                log.append(f"C> {step.arg!r}")
            elif step.kind == "C!" and step.arg[0] == "apop":
                data = apop_line(greeting or "", step.arg[1], step.arg[2])
                pending += data
                log.append(f"C> {data!r}")
            elif step.kind == "C!" and step.arg[0] == "cram":
                if challenge is None:
                    fail(step, "C! cram: no '+ <b64>' / '334 <b64>' challenge seen yet")
                data = cram_line(challenge, step.arg[1], step.arg[2])
                pending += data
                log.append(f"C> {data!r}")
            elif step.kind == "C!":   # starttls
                flush(step)
                try:
                    wire.starttls()
                except Mismatch as e:
                    fail(step, str(e))
                except (ssl.SSLError, OSError) as e:
                    fail(step, f"TLS handshake failed: {e}")
                log.append("-- TLS --")
            elif step.kind in ("S:", "S~"):
                flush(step)
                try:
                    got = wire.line()
                except Mismatch as e:
                    fail(step, f"expected a line, got: {e}")
                shown = got.decode("latin-1")
                log.append(f"S< {shown}")
                if step.kind == "S:":
                    ok = got == step.arg.encode("ascii")
                else:
                    ok = step.arg.fullmatch(shown) is not None
                if not ok:
                    fail(step, f"expected {step.text[3:]!r}\n  got      {shown!r}")
                if greeting is None:
                    greeting = shown
                m = re.fullmatch(r"(?:\+|334) (\S*)", shown)
                if m:
                    challenge = m.group(1)
            else:   # =closed
                flush(step)
                try:
                    wire.closed()
                except Mismatch as e:
                    fail(step, f"expected the server to close: {e}")
                log.append("-- closed --")
        last = t.steps[-1]
        flush(last)
        if last.kind != "=closed":
            wire.quiet(QUIET_WAIT)
            if wire.buf:
                fail(last, f"server sent more than the transcript expects: {wire.buf!r}")
    finally:
        wire.close()


def transcript_files():
    return sorted(TRANSCRIPTS.glob("*.t"))


def test_transcripts_exist():
    files = transcript_files()
    assert files, f"no transcripts in {TRANSCRIPTS}"
    for f in files:
        parse(f)   # every file parses, whatever it is used for


@pytest.mark.parametrize("path", transcript_files(), ids=lambda p: p.stem)
def test_transcript_matches_daemon(path, make_gateway):
    t = parse(path)
    g = gateway_for(t, make_gateway)
    replay(t, g.port("test"))
