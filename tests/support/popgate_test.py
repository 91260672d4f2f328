"""Test support: run the real popgate daemon on ephemeral loopback ports with
its own temporary database, Maildirs and certificate, and a capture upstream.

Every integration test starts the servers it needs through these fixtures.
"""
import asyncio
import atexit
import json
import os
import poplib
import random
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

POPGATE = os.environ.get("POPGATE_BIN", "build/ci/popgate")

# The store every Gateway uses: "sqlite" (a file in the test's directory, the
# default) or "postgresql" (a fresh database per Gateway on one private
# PostgreSQL per pytest process, tests/support/private_postgres.py). CTest
# sets it for the <kind>_pg.<file> runs (tests/CMakeLists.txt).
BACKEND = os.environ.get("POPGATE_TEST_BACKEND", "sqlite")
# The schema version this source tree's migrations reach (sql/NNN_*.sql).
LATEST_SCHEMA = max(int(p.name[:3]) for p in (Path(__file__).resolve().parents[2] / "sql").glob("[0-9][0-9][0-9]_*.sql"))
if BACKEND not in ("sqlite", "postgresql"):
    raise RuntimeError(f"POPGATE_TEST_BACKEND={BACKEND!r}: sqlite or postgresql")


def sqlite_only(reason):
    """Marks a test that holds only on SQLite (its file, its spelling rules,
    its error classes); `reason` says why. It is skipped on PostgreSQL."""
    return pytest.mark.skipif(BACKEND != "sqlite", reason=f"SQLite only: {reason}")


_pg_server = None


def _stop_pg_server():
    global _pg_server
    if _pg_server is not None:
        pg, _pg_server = _pg_server, None
        pg.stop("immediate")   # a throwaway server: no shutdown checkpoint
        shutil.rmtree(pg.root, ignore_errors=True)


def backend_server():
    """The pytest process's private PostgreSQL, started at first use and
    stopped at the end of the session. A missing PostgreSQL is an error,
    not a skip: the run asked for it."""
    global _pg_server
    if _pg_server is None:
        from private_postgres import PG_BIN, PrivatePostgres, installed
        if not installed():
            raise RuntimeError(f"POPGATE_TEST_BACKEND=postgresql but PostgreSQL 15 is not installed ({PG_BIN})")
        _pg_server = PrivatePostgres(tempfile.mkdtemp(prefix="popgate-pg-")).start()
        atexit.register(_stop_pg_server)
    return _pg_server


@pytest.fixture(scope="session", autouse=True)
def _backend_server_stopped():
    yield
    _stop_pg_server()


def _pg_statement(statement):
    """A statement written for SQLite, as psycopg2 takes it: ? placeholders
    become %s (a literal % doubled), the column word user (outside quotes)
    "user". Nothing more: anything else must be written portably."""
    parts = statement.split("'")
    for i in range(0, len(parts), 2):   # outside string literals
        parts[i] = re.sub(r'(?<![\w."])user(?![\w"])', '"user"', parts[i])
    return "'".join(parts).replace("%", "%%").replace("?", "%s")


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


def eventually(f, timeout=15):
    """Poll f until it returns something true, or the timeout; returns the last
    value. For what the daemon writes after it replies: deny and auth-fail audit
    rows are group-committed, not written before the answer."""
    deadline = time.time() + timeout
    while True:
        v = f()
        if v or time.time() >= deadline:
            return v
        time.sleep(0.05)


def maildir_order(name):
    """Sort key of a Maildir file name "<sec>.M<usec>P<pid>...": by number, as
    the daemon orders them. As text, M999999 sorts after M1000000, and two
    messages of one second came back swapped (seen in CI)."""
    m = re.match(r"(\d+)\.M(\d+)", name)
    return (int(m.group(1)), int(m.group(2)), name) if m else (float("inf"), 0, name)


def _ephemeral_range():
    try:
        lo, hi = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_port():
    """A loopback port nothing listens on (yet): for peers the test starts,
    or as an upstream that refuses connections.

    Picked below the kernel's ephemeral range: every daemon the suite starts
    binds port 0 and gets its port from that range, so a port handed out
    here and bound a moment later by HAProxy, PostgreSQL or Postfix cannot
    meanwhile become a gateway listener of a test running beside this one
    (seen once in CI: a POP3 client through HAProxy met an SMTP greeting)."""
    lo, hi = _ephemeral_range()
    top = min(lo, 65536) - 1
    for _ in range(500):
        port = random.randrange(max(1024, top - 20000), top)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class SourcePOP3(poplib.POP3):
    """poplib to 127.0.0.1 from a chosen loopback source address (Linux
    routes 127/8 to lo): the address a login grants."""

    def __init__(self, port, source="127.0.0.1", timeout=10):
        self._source = source
        super().__init__("127.0.0.1", port, timeout=timeout)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(self._source, 0))


class LogFile:
    """log() and wait_log() over `self.log_file`, for the daemons tests start
    (popgate, a private Postfix, a private Dovecot)."""

    log_poll = 0.02   # seconds between reads
    log_wait = 15     # wait_log's default timeout

    def log(self):
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def wait_log(self, needle, timeout=None):
        deadline = time.time() + (self.log_wait if timeout is None else timeout)
        while time.time() < deadline:
            if needle in self.log():
                return True
            time.sleep(self.log_poll)
        return False


class Gateway(LogFile):
    """A running `popgate serve` with a config written for the test."""

    def __init__(self, root: Path, overrides=None, listeners=None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.db = self.root / "popgate.db"   # SQLite's file (absent on PostgreSQL)
        self.backend = BACKEND
        if BACKEND == "postgresql":
            self.pg = backend_server()
            self.pg_dbname = "gw_" + secrets.token_hex(6)
            self.database = self.pg.create_database(self.pg_dbname)
        else:
            self.database = str(self.db)
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
            "storage": {"database": self.database},
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
    def start(self, timeout=15, wrapper=()):
        """`wrapper`: a command the daemon runs under, e.g. ("prlimit", "--nofile=64:128")."""
        if self.ready_file.exists():
            self.ready_file.unlink()
        self.proc = subprocess.Popen(
            [*wrapper, POPGATE, "-c", str(self.config_file), "serve", "--ready-file", str(self.ready_file)],
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
        """Runs one statement as an administrator would (sqlite3, or psql as
        the database's owner) and returns its rows; committed."""
        if self.backend == "postgresql":
            import psycopg2
            con = psycopg2.connect(self.database)
            try:
                with con, con.cursor() as cur:
                    cur.execute(_pg_statement(statement), tuple(params))
                    return [tuple(r) for r in cur.fetchall()] if cur.description else []
            finally:
                con.close()
        con = sqlite3.connect(self.db, timeout=10)
        try:
            with con:
                return con.execute(statement, params).fetchall()
        finally:
            con.close()

    @property
    def database_error(self):
        """The base class of what sql() raises for a statement the database
        refuses."""
        if self.backend == "postgresql":
            import psycopg2
            return psycopg2.Error
        return sqlite3.DatabaseError

    def maildir(self, user):
        return self.mail_root / user

    def messages(self, user):
        """Bytes of every message in the user's Maildir (new/ and cur/), in
        delivery order (maildir_order)."""
        out = []
        for sub in ("new", "cur"):
            d = self.maildir(user) / sub
            if d.exists():
                out += list(d.iterdir())
        return [p.read_bytes() for p in sorted(out, key=lambda p: maildir_order(p.name))]

    def dropped(self):
        """Bytes of every message in the relay drop, in delivery order."""
        out = []
        for sub in ("new", "cur"):
            d = self.drop / sub
            if d.exists():
                out += list(d.iterdir())
        return [p.read_bytes() for p in sorted(out, key=lambda p: maildir_order(p.name))]


def make_schema_2_database(path, statements=()):
    """A database as popgate left it at schema version 2 (before the canonical
    spelling rules of sql/003), from the migrations in the source tree, with
    `statements` run on it: rows that schema 3 would refuse."""
    src = Path(os.environ.get("POPGATE_SOURCE_DIR", ".")) / "sql"
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                    " applied_at INTEGER NOT NULL DEFAULT (unixepoch())) STRICT")
        for version, name in ((1, "001_initial.sql"), (2, "002_readable_address_rules.sql")):
            con.executescript((src / name).read_text())
            con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", (version, name))
        for st in statements:
            con.execute(st)
        con.commit()
    finally:
        con.close()


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
    of every message; `mode` makes it answer DATA with 250, 451 or 554.

    Connections are numbered from 1 in the order they are accepted (the
    controller's own start-up probe is not counted): each message records the
    connection it came on ("conn", and its "peer" address), `connections` holds
    the peer of each, `greetings` the connection of each EHLO/HELO, `quits` of
    each QUIT and `closed` of each connection that has ended. With
    `close_after_data` the upstream drops the connection shortly after its 250
    to DATA; with `mail_421_on_reuse` it answers MAIL on a connection that has
    already carried a message with 421 and drops it, and with
    `rcpt_421_on_reuse` it takes MAIL there and answers the RCPT so.

    Per recipient: `rcpt_replies` maps an address to the reply its RCPT gets
    instead of 250 (the recipient is then not taken); `rcpts` records
    (connection, address) of every RCPT received and `rsets` the connection
    of every RSET; with `drop_after_rcpt` the upstream drops the connection
    shortly after its 250 to a RCPT; `mail_reply`, when set, is the reply
    to every MAIL; `rset_delay` holds each RSET's reply back that many
    seconds (`rsets_answered`: the connection of each RSET answered), and
    `rcpt_delays` maps an address to the seconds its RCPT's reply is held
    back. With `pipelining` it offers PIPELINING (RFC 2920), and
    `mail_with_rcpt` records, for each MAIL, whether a RCPT had already
    arrived behind it (sent in the same group). With `eight_bit_mime` False
    its EHLO does not offer 8BITMIME (RFC 6152); each message records the
    MAIL parameters it came with ("mail_options"). `data_delay` holds the
    reply to the end of data back that many seconds (the message is taken
    first, as a slow before-queue filter does), `data_reply` replaces its
    250 text, and `quit_delay` holds the 221 back. `late_line`, when set, is
    written 0.3 s after each reply to the end of data: a reply nobody asked
    for, which puts a reused connection out of step."""

    def __init__(self):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import SMTP

        self.messages = []
        self.mode = "accept"
        self.close_after_data = False
        self.mail_421_on_reuse = False
        self.rcpt_421_on_reuse = False
        self.connections = []
        self.greetings = []
        self.quits = []
        self.closed = []
        self.rcpt_replies = {}
        self.rcpts = []
        self.rsets = []
        self.drop_after_rcpt = False
        self.mail_reply = None
        self.rset_delay = 0
        self.rcpt_delays = {}
        self.rsets_answered = []
        self.pipelining = False
        self.eight_bit_mime = True
        self.mail_with_rcpt = []
        self.data_delay = 0
        self.data_reply = None
        self.quit_delay = 0
        self.late_line = None
        self.lock = threading.Lock()
        self._counting = False
        outer = self

        def drop_soon(server):
            transport = server.transport
            if transport is not None:
                # after the reply has been written
                asyncio.get_running_loop().call_later(0.05, transport.close)

        def closing_if_reused(server):
            """True, dropping the connection soon, when it has carried a message."""
            with outer.lock:
                used = any(m["conn"] == server.conn_id for m in outer.messages)
            if used:
                drop_soon(server)
            return used

        class Handler:
            async def handle_EHLO(self, server, session, envelope, hostname, responses):
                session.host_name = hostname  # what aiosmtpd does when there is no hook
                with outer.lock:
                    outer.greetings.append(server.conn_id)
                if outer.pipelining:
                    responses.insert(-1, "250-PIPELINING")
                if not outer.eight_bit_mime:
                    responses = [r for r in responses if "8BITMIME" not in r]
                    if not responses[-1].startswith("250 "):  # it was the last line
                        responses[-1] = "250 " + responses[-1][4:]
                return responses

            async def handle_HELO(self, server, session, envelope, hostname):
                session.host_name = hostname
                with outer.lock:
                    outer.greetings.append(server.conn_id)
                return f"250 {server.hostname}"

            async def handle_MAIL(self, server, session, envelope, address, mail_options):
                # aiosmtpd reads one line at a time: what is still in its
                # reader's buffer was sent behind MAIL, before its reply.
                behind = bytes(getattr(server._reader, "_buffer", b""))
                with outer.lock:
                    outer.mail_with_rcpt.append(behind.upper().startswith(b"RCPT TO:"))
                if outer.mail_421_on_reuse and closing_if_reused(server):
                    return "421 4.3.2 closing this connection"
                if outer.mail_reply:
                    return outer.mail_reply
                envelope.mail_from = address
                envelope.mail_options.extend(mail_options)
                return "250 OK"

            async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
                with outer.lock:
                    outer.rcpts.append((server.conn_id, address))
                if outer.rcpt_421_on_reuse and closing_if_reused(server):
                    return "421 4.3.2 closing this connection"
                if address in outer.rcpt_delays:
                    await asyncio.sleep(outer.rcpt_delays[address])
                if outer.mode == "reject-rcpt":
                    return "550 5.1.1 no such user here"
                if address in outer.rcpt_replies:
                    return outer.rcpt_replies[address]
                envelope.rcpt_tos.append(address)
                if outer.drop_after_rcpt:
                    drop_soon(server)
                return "250 OK"

            async def handle_RSET(self, server, session, envelope):
                with outer.lock:
                    outer.rsets.append(server.conn_id)
                if outer.rset_delay:
                    await asyncio.sleep(outer.rset_delay)
                with outer.lock:
                    outer.rsets_answered.append(server.conn_id)
                return "250 OK"

            async def handle_DATA(self, server, session, envelope):
                if outer.mode == "tempfail":
                    return "451 4.3.0 try later"
                if outer.mode == "reject":
                    return "554 5.6.0 content rejected"
                with outer.lock:
                    outer.messages.append({"mail_from": envelope.mail_from,
                                           "rcpt_tos": list(envelope.rcpt_tos),
                                           "mail_options": list(envelope.mail_options),
                                           "data": envelope.original_content,
                                           "conn": server.conn_id, "peer": session.peer})
                if outer.close_after_data:
                    drop_soon(server)
                if outer.data_delay:
                    await asyncio.sleep(outer.data_delay)
                if outer.late_line:
                    transport = server.transport
                    asyncio.get_running_loop().call_later(
                        0.3, lambda: transport.is_closing() or transport.write(outer.late_line.encode() + b"\r\n"))
                return outer.data_reply or "250 2.0.0 queued as UPSTREAM1"

            async def handle_QUIT(self, server, session, envelope):
                with outer.lock:
                    outer.quits.append(server.conn_id)
                if outer.quit_delay:
                    await asyncio.sleep(outer.quit_delay)
                return "221 Bye"

        class CountingSMTP(SMTP):
            conn_id = None

            def connection_made(self, transport):
                first = self.transport is None  # STARTTLS calls it again
                super().connection_made(transport)
                if first and outer._counting:
                    with outer.lock:
                        outer.connections.append(self.session.peer)
                        self.conn_id = len(outer.connections)

            def connection_lost(self, error):
                if self.conn_id is not None:
                    with outer.lock:
                        outer.closed.append(self.conn_id)
                super().connection_lost(error)

        class CountingController(Controller):
            def factory(self):
                return CountingSMTP(self.handler, **self.SMTP_kwargs)

        self.controller = CountingController(Handler(), hostname="127.0.0.1", port=0, decode_data=False,
                                             data_size_limit=64 * 1024 * 1024)
        # aiosmtpd binds port 0 only on newer releases; pick a free port ourselves.
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.controller.port = self.port
        self.controller.start()
        self._counting = True

    def open_connections(self):
        """Numbers of the connections accepted and not yet ended."""
        with self.lock:
            return sorted(set(range(1, len(self.connections) + 1)) - set(self.closed))

    def wait_for(self, predicate, timeout=10):
        """Polls `predicate()` until it is true or the timeout passes; returns
        its last value."""
        deadline = time.time() + timeout
        while True:
            ok = predicate()
            if ok or time.time() >= deadline:
                return ok
            time.sleep(0.02)

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
