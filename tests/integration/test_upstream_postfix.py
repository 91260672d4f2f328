"""Issue 13 item 3 with the real server: popgate's upstream (the legacy MTA)
is a private Postfix 3.7 (tests/support/private_postfix.py) that refuses
one recipient with check_recipient_access and relays everything else to a
capture sink. The client sees Postfix's own RCPT verdict for the refused
recipient, the other is delivered once, the end of data is 250 only once
Postfix has queued the message (its queue id is in popgate's reply), a
refusal at Postfix's end of data reaches the client, and a second message
rides on the same upstream connection (Postfix logs one connect)."""
import re
import smtplib
import time

import pytest

from popgate_test import CaptureUpstream, eventually
from private_postfix import PrivatePostfix, delivered, require_root, work_dir  # noqa: F401

GOOD = "good@remote.test"
BAD = "bad@remote.test"
SENDER = "a@example.org"
# What Postfix says to popgate for BAD, and what popgate passes on.
BAD_REPLY = (550, b"5.1.1 <bad@remote.test>: Error: upstream refused: "
                  b"<bad@remote.test>: Recipient address rejected: no such user here")


def body(subject):
    return (f"From: {SENDER}\r\nTo: {GOOD}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '-')}@example.org>\r\n\r\nvia a real Postfix\r\n").encode()


@pytest.fixture
def stack(work_dir, make_gateway):  # noqa: F811
    require_root()
    sink = CaptureUpstream()
    access = work_dir / "recipient_access"
    access.write_text(f"{BAD} 550 5.1.1 no such user here\n")
    checks = work_dir / "header_checks"
    checks.write_text("/^Subject: refuse at end of data/ REJECT 5.7.1 content refused here\n")
    for f in (access, checks):
        f.chmod(0o644)
    # remote.test is this Postfix's relay domain: popgate (127.0.0.1, not in
    # its mynetworks) may hand it mail for it, as to a legacy MTA.
    pf = PrivatePostfix(work_dir, sink.port,
                        f"check_recipient_access texthash:{access}, reject_unauth_destination",
                        own_domain="remote.test", extra=f"header_checks = regexp:{checks}\n")
    pf.start()
    g = make_gateway(overrides={"relay": {"upstream_host": "127.0.0.1", "upstream_port": pf.port,
                                          "upstream_starttls": "none", "upstream_reuse_time": 60}})
    g.sql("INSERT INTO relay_grants(address, expires_at) VALUES('127.0.0.1', unixepoch()+600)")
    yield g, pf, sink
    g.stop()
    pf.stop()
    sink.stop()


def connects(pf):
    return len(re.findall(r"postfix/smtpd\[\d+\]: connect from ", pf.log()))


def test_postfix_refuses_one_recipient_the_other_is_delivered_once(stack):
    g, pf, sink = stack
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=60) as s:
        s.ehlo("client.test")
        assert s.mail(SENDER)[0] == 250
        assert s.rcpt(BAD) == BAD_REPLY
        assert s.rcpt(GOOD)[0] == 250
        code, text = s.data(body("first"))
    # 250 carries Postfix's own "queued as": given only after Postfix's 250.
    assert code == 250, text
    m = re.search(rb"\(Ok: queued as ([0-9A-F]+)\)$", text)
    assert m, text
    qid = m.group(1).decode()
    assert pf.wait_log(f"{qid}: from=<{SENDER}>"), pf.log()[-2000:]
    assert delivered(sink, GOOD)
    time.sleep(1)  # a second copy would have arrived by now
    with sink.lock:
        got = [(m["mail_from"], m["rcpt_tos"], m["data"]) for m in sink.messages]
    assert len(got) == 1 and got[0][:2] == (SENDER, [GOOD]), got
    assert b"Subject: first\r\n" in got[0][2] and got[0][2].endswith(b"via a real Postfix\r\n"), got[0][2]
    assert f"reject: RCPT from unknown[127.0.0.1]: 550 5.1.1 <{BAD}>" in pf.log()
    assert BAD not in str([m["rcpt_tos"] for m in sink.messages])
    assert g.wait_log("upstream_reply=550 upstream_status=5.1.1 result=refused")


def test_refusal_at_postfix_end_of_data_reaches_the_client_and_nothing_is_delivered(stack):
    g, pf, sink = stack
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=60) as s:
        s.ehlo("client.test")
        assert s.mail(SENDER)[0] == 250
        assert s.rcpt(GOOD)[0] == 250
        code, text = s.data(body("refuse at end of data"))
    assert code == 550 and b"content refused here" in text, (code, text)
    assert pf.wait_log("content refused here")
    time.sleep(1)
    assert sink.messages == []


def test_second_message_reuses_the_upstream_connection(stack):
    g, pf, sink = stack
    # The start-up probe of PrivatePostfix.start, once Postfix has logged its
    # end: its log lines come through postlogd a moment after the fact.
    assert eventually(lambda: re.search(r"postfix/smtpd\[\d+\]: disconnect from ", pf.log()), 10), pf.log()
    before = connects(pf)
    for n in (1, 2):
        with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=60) as s:
            assert s.sendmail(SENDER, [GOOD, BAD], body(f"message {n}")) == {BAD: BAD_REPLY}
    assert sink.wait_for(lambda: len(sink.messages) == 2, 30), sink.messages
    time.sleep(1)
    # Both messages on popgate's one kept connection to Postfix.
    assert connects(pf) - before == 1, pf.log()[-3000:]
    assert len(re.findall(r"postfix/cleanup\[\d+\]: [0-9A-F]+: message-id=", pf.log())) == 2
    assert [m["rcpt_tos"] for m in sink.messages] == [[GOOD], [GOOD]]
