"""A raw line client for tests where exact bytes and closes matter, optionally
from another loopback source address (Linux routes all of 127.0.0.0/8 to lo)."""
import socket
import time

import pytest

# Every Client opened; raw_clients_closed (below) closes them before
# the gateways stop (an open session would hold the SIGTERM drain).
OPEN = []


class Client:
    """One raw connection, optionally from another loopback source address."""

    def __init__(self, port, src="127.0.0.1", timeout=5, rcvbuf=None, greet=True):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(timeout)
        s.bind((src, 0))
        s.connect(("127.0.0.1", port))
        self.s = s
        self.buf = b""
        OPEN.append(self)
        self.greeting = self.line() if greet else None

    def send(self, data: bytes):
        self.s.sendall(data)

    def _fill(self, deadline):
        self.s.settimeout(max(0.01, deadline - time.time()))
        chunk = self.s.recv(65536)
        if not chunk:
            raise EOFError(f"closed; have {self.buf!r}")
        self.buf += chunk

    def line(self, timeout=5) -> bytes:
        deadline = time.time() + timeout
        while b"\r\n" not in self.buf:
            self._fill(deadline)
        i = self.buf.index(b"\r\n") + 2
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def reply(self, timeout=5) -> bytes:
        """A whole SMTP reply (multi-line ones included)."""
        out = b""
        while True:
            l = self.line(timeout)
            out += l
            if l[3:4] != b"-":
                return out

    def cmd(self, data: bytes) -> bytes:
        self.send(data)
        return self.line()

    def smtp(self, data: bytes) -> bytes:
        self.send(data)
        return self.reply()

    def multi(self) -> bytes:
        """A POP3 multi-line answer, up to and including the final dot line."""
        out = self.line()
        while not out.endswith(b"\r\n.\r\n"):
            out += self.line()
        return out

    def rest_until_close(self, timeout=5):
        """Everything still sent, and whether the peer closed within `timeout`."""
        deadline = time.time() + timeout
        try:
            while time.time() < deadline:
                self.s.settimeout(max(0.01, deadline - time.time()))
                chunk = self.s.recv(65536)
                if not chunk:
                    return self.buf, True
                self.buf += chunk
        except (socket.timeout, TimeoutError):
            return self.buf, False
        except (ConnectionResetError, OSError):
            return self.buf, True
        return self.buf, False

    def close(self):
        self.s.close()


@pytest.fixture(autouse=True)
def raw_clients_closed(make_gateway):
    """Imported by a test module: every Client is closed after each test,
    before the gateways stop (an open session would hold the SIGTERM drain
    for its whole grace period)."""
    yield
    while OPEN:
        OPEN.pop().close()
