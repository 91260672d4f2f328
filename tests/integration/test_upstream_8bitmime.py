"""8-bit mail and an upstream without 8BITMIME (RFC 6152 §3), against the
aiosmtpd capture upstream with and without 8BITMIME in its EHLO. popgate
converts nothing: a message declared BODY=8BITMIME whose data holds an 8-bit
octet is refused whole (554 5.6.3) when the upstream does not offer 8BITMIME,
and the upstream gets none of it (cut off before the final dot); the same
message declared that way but 7-bit goes through, as does 8-bit data to an
upstream that offers 8BITMIME (with BODY=8BITMIME passed on)."""
import smtplib

import pytest

from popgate_test import make_gateway, upstream  # noqa: F401  (fixtures)
from smtp_support import relay_overrides, strip_received

EIGHT = b"From: a@example.org\r\nTo: x@remote.test\r\nSubject: eight\r\n\r\nGr\xc3\xbc\xc3\x9fe \xe2\x98\x83\r\n"
SEVEN = b"From: a@example.org\r\nTo: x@remote.test\r\nSubject: seven\r\n\r\nplain ASCII\r\n"


@pytest.fixture
def gw(make_gateway, upstream):
    g = make_gateway(overrides=relay_overrides(upstream))
    g.add_user("alice", "pw-alice")
    g.sql("INSERT INTO relay_grants(address, expires_at) VALUES('127.0.0.1', unixepoch()+600)")
    return g


def send(s, body, local=False):
    rcpts = ["x@remote.test"] + (["alice@localhost"] if local else [])
    return s.sendmail("a@example.org", rcpts, body, mail_options=["BODY=8BITMIME"])


def test_8bit_data_to_an_upstream_without_8bitmime_is_refused_and_not_delivered(gw, upstream):
    upstream.eight_bit_mime = False
    with smtplib.SMTP("127.0.0.1", gw.port("smtp"), timeout=15) as s:
        with pytest.raises(smtplib.SMTPDataError) as e:
            send(s, EIGHT, local=True)
        assert e.value.smtp_code == 554 and e.value.smtp_error.startswith(b"5.6.3"), e.value
        # The session goes on: a 7-bit message declared 8BITMIME is relayed.
        assert send(s, SEVEN) == {}
    assert [strip_received(m["data"]) for m in upstream.messages] == [SEVEN]
    assert "BODY=8BITMIME" not in upstream.messages[0]["mail_options"]
    assert gw.messages("alice") == [], "a refused message must not be kept for the local recipient either"
    assert gw.wait_log("reason=8bit-to-7bit-upstream")
    assert gw.wait_log("result=8bit-not-accepted reply=554")


def test_8bit_data_to_an_upstream_with_8bitmime_is_relayed_as_it_is(gw, upstream):
    with smtplib.SMTP("127.0.0.1", gw.port("smtp"), timeout=15) as s:
        assert send(s, EIGHT) == {}
    assert len(upstream.messages) == 1
    assert strip_received(upstream.messages[0]["data"]) == EIGHT
    assert "BODY=8BITMIME" in upstream.messages[0]["mail_options"]
