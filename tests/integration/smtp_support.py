"""Helpers shared by the SMTP integration tests."""
import smtplib


def relay_overrides(up, **sections):
    """Config overrides that relay to the capture upstream `up`, plus any
    further sections (merged key by key)."""
    o = {"relay": {"upstream_host": "127.0.0.1", "upstream_port": up.port, "upstream_starttls": "none"}}
    for k, v in sections.items():
        o.setdefault(k, {}).update(v)
    return o


def strip_received(data: bytes) -> bytes:
    """The message as the client sent it: our Received header (its first line
    and the folded ones after it) removed. Works on CRLF (upstream) and LF
    (Maildir) copies alike."""
    nl = b"\r\n" if b"\r\n" in data else b"\n"
    lines = data.split(nl)
    assert lines[0].startswith(b"Received: from "), data[:200]
    i = 1
    while lines[i].startswith(b"\t"):
        i += 1
    return nl.join(lines[i:])


def relay_one(g, body, rcpt="x@remote.test"):
    """One message from a granted client through the gateway's smtp listener:
    the RCPT's (code, text), and DATA (which must be accepted) only when
    that was 250."""
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=15) as s:
        s.ehlo("client.test")
        assert s.mail("a@example.org")[0] == 250
        code, text = s.rcpt(rcpt)
        if code == 250:
            assert s.data(body)[0] == 250
        return code, text
