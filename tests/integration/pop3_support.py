"""Helpers shared by the POP3 integration tests: a raw line client that reads
exact bytes, and message fixtures with their expected wire forms."""
import poplib
import socket
import time

import pytest

import popgate_test
from popgate_test import client_tls_context

# Every client a test opens, closed before its gateway stops (a session left
# open would hold the daemon's SIGTERM drain for its whole grace period).
OPEN = []


def track(client):
    OPEN.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_clients(make_gateway):
    yield
    while OPEN:
        c = OPEN.pop()
        try:
            c.close()
        except Exception:
            pass


class Raw:
    """A POP3 connection spoken byte by byte, so tests can assert exact replies."""

    def __init__(self, port, tls=False, timeout=5):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls:
            self.sock = client_tls_context().wrap_socket(self.sock)
        self.buf = b""
        track(self)
        self.greeting = self.line()

    def send(self, data: bytes):
        self.sock.sendall(data)

    def _fill(self, deadline):
        self.sock.settimeout(max(0.01, deadline - time.time()))
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError(f"closed; have {self.buf!r}")
        self.buf += chunk

    def until(self, marker: bytes, timeout=5) -> bytes:
        deadline = time.time() + timeout
        while marker not in self.buf:
            self._fill(deadline)
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def line(self, timeout=5) -> bytes:
        return self.until(b"\r\n", timeout)

    def multi(self, timeout=5) -> bytes:
        """A multi-line response, or a single -ERR line."""
        first = self.line(timeout)
        if not first.startswith(b"+OK"):
            return first
        deadline = time.time() + timeout
        while not self.buf.startswith(b".\r\n") and b"\r\n.\r\n" not in self.buf:
            self._fill(deadline)
        if self.buf.startswith(b".\r\n"):
            return first + self.exact(3)
        return first + self.until(b"\r\n.\r\n")

    def cmd(self, line: str) -> bytes:
        self.send(line.encode() + b"\r\n")
        return self.line()

    def exact(self, n: int, timeout=5) -> bytes:
        deadline = time.time() + timeout
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def nothing(self, wait=0.4) -> bool:
        """True if the server sends nothing (and does not close) within `wait`."""
        self.sock.settimeout(wait)
        try:
            chunk = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return self.buf == b""
        self.buf += chunk
        return False

    def closed(self, timeout=5) -> bool:
        deadline = time.time() + timeout
        try:
            while time.time() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.time()))
                if not self.sock.recv(65536):
                    return True
        except (socket.timeout, TimeoutError):
            return False
        except (ConnectionResetError, OSError):
            return True
        return False

    def login(self, user, pw):
        assert self.cmd(f"USER {user}") == b"+OK\r\n"
        r = self.cmd(f"PASS {pw}")
        assert r.startswith(b"+OK Logged in"), r
        return r

    def close(self):
        self.sock.close()


def wire(stored: bytes) -> bytes:
    """RFC 1939 multi-line body of a stored (LF) message: CRLF, dot-stuffed,
    CRLF added at the end if missing, then the terminator."""
    lines = stored.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = b""
    for l in lines:
        out += (b"." + l if l.startswith(b".") else l) + b"\r\n"
    return out + b".\r\n"


def octets(stored: bytes) -> int:
    """Size as sent (LF counted as CRLF), without stuffing or terminator."""
    return len(stored) + stored.count(b"\n") - stored.count(b"\r\n")


def crlf(stored: bytes) -> bytes:
    """The message as a client stores it: CRLF line ends, final CRLF added."""
    body = stored.replace(b"\n", b"\r\n")
    return body if body.endswith(b"\r\n") else body + b"\r\n"


DOTS = b"Subject: dots\nFrom: a@gw.test\n\n.leading dot\n..two dots\n.\nend\n"
EIGHTBIT = "Subject: 8bit\n\nGrüße aus Köln \u00ff\n".encode("utf-8") + b"raw \xff\xfe\x80 bytes\n"
NO_NEWLINE = b"Subject: nonl\n\nfirst\nlast line without newline"


class SourcePOP3(popgate_test.SourcePOP3):
    """popgate_test.SourcePOP3, closed by _close_clients after the test."""

    def __init__(self, port, source="127.0.0.1", timeout=10):
        super().__init__(port, source, timeout)
        track(self)

    def close(self):
        try:
            super().close()
        except Exception:
            pass


class SourcePOP3_SSL(poplib.POP3_SSL):
    """poplib over implicit TLS (POP3S) from a chosen loopback source address."""

    def __init__(self, port, source="127.0.0.1", timeout=10):
        self._source = source
        super().__init__("127.0.0.1", port, timeout=timeout, context=client_tls_context())
        track(self)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout, source_address=(self._source, 0))
        return self.context.wrap_socket(sock, server_hostname=self.host)
