"""Per-listener policy (issue 15, item 1) with real clients: tls = "required"
on submission and POP3, a listener's own plaintext rule, RFC 6409 AUTH before
MAIL on submission, check-config's refusals, and SIGHUP applying a changed
policy to new sessions."""
import hashlib
import poplib
import re
import smtplib
import subprocess

import pytest

from popgate_test import POPGATE, client_tls_context, make_gateway  # noqa: F401  (fixture)

BODY = b"Subject: policy\r\n\r\nbody\r\n"
LISTENERS = [
    {"name": "pop3", "protocol": "pop3", "tls": "required"},
    {"name": "pop3any", "protocol": "pop3", "tls": "starttls"},
    {"name": "smtp", "protocol": "smtp", "tls": "starttls"},
    {"name": "internal", "protocol": "smtp", "tls": "none", "plaintext": "always"},
    {"name": "submission", "protocol": "smtp", "tls": "required", "auth_required": True},
    {"name": "smtps", "protocol": "smtp", "tls": "implicit", "auth_required": True},
]


@pytest.fixture
def g(make_gateway):
    # The shipped rule for plaintext, with loopback not counted as secure, so
    # that TLS is what makes the difference here.
    gw = make_gateway(overrides={"auth": {"plaintext": "tls-only", "loopback_is_secure": False,
                                          "cram_md5": False}},
                      listeners=LISTENERS)
    gw.add_user("alice", "pw-alice")
    return gw


def test_submission_with_tls_required_smtplib(g):
    with smtplib.SMTP("127.0.0.1", g.port("submission"), timeout=10) as s:
        s.ehlo("client.example")
        assert s.has_extn("starttls")
        assert not s.has_extn("auth")  # nothing to log in with is offered in clear
        assert s.docmd("AUTH", "PLAIN AGFsaWNlAHB3LWFsaWNl") == \
            (530, b"5.7.0 Must issue a STARTTLS command first")
        assert s.docmd("MAIL", "FROM:<alice@gw.test>") == (530, b"5.7.0 Must issue a STARTTLS command first")
        assert s.noop()[0] == 250
        s.starttls(context=client_tls_context())
        s.ehlo("client.example")
        assert "PLAIN" in s.esmtp_features["auth"]
        # After TLS, still no transaction before AUTH (RFC 6409).
        assert s.docmd("MAIL", "FROM:<alice@gw.test>") == (530, b"5.7.0 Authentication required")
        s.rset()
        s.login("alice", "pw-alice")
        assert s.sendmail("alice@gw.test", ["alice@gw.test", "x@remote.test"], BODY) == {}
    assert len(g.messages("alice")) == 1
    assert len(g.dropped()) == 1


def test_smtps_offers_plaintext_auth_inside_its_tls(g):
    # The implicit handshake comes before the greeting: the session is on TLS
    # from its first line, so "tls-only" offers PLAIN and LOGIN at once, and
    # STARTTLS is refused as TLS already active (RFC 3207 §4).
    with smtplib.SMTP_SSL("127.0.0.1", g.port("smtps"), timeout=10, context=client_tls_context()) as s:
        s.ehlo("client.example")
        assert s.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        assert not s.has_extn("starttls")
        assert s.docmd("STARTTLS")[0] == 503
        s.login("alice", "pw-alice")
        assert s.sendmail("alice@gw.test", ["x@remote.test"], BODY) == {}
    assert len(g.dropped()) == 1
    assert re.search(r"smtp auth user=alice mech=PLAIN ip=\S+ tls=yes result=ok", g.log())
    r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(g.port("smtps")), "--tlsc",
                        "--from", "alice@gw.test", "--to", "y@remote.test", "--auth", "LOGIN",
                        "--auth-user", "alice", "--auth-password", "pw-alice", "--timeout", "15"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "235 2.7.0 Authentication successful" in r.stdout
    assert len(g.dropped()) == 2


def test_submission_with_tls_required_swaks(g):
    port = str(g.port("submission"))
    common = ["swaks", "--server", "127.0.0.1", "--port", port, "--from", "alice@gw.test",
              "--to", "alice@gw.test", "--timeout", "15"]
    clear = subprocess.run(common, capture_output=True, text=True, timeout=30)
    assert clear.returncode != 0
    assert "530 5.7.0 Must issue a STARTTLS command first" in clear.stdout
    tls = subprocess.run(common + ["--tls", "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "pw-alice"],
                         capture_output=True, text=True, timeout=30)
    assert tls.returncode == 0, tls.stdout + tls.stderr
    assert "235 2.7.0 Authentication successful" in tls.stdout
    assert len(g.messages("alice")) == 1


def test_submission_with_tls_required_openssl_s_client(g):
    r = subprocess.run(["openssl", "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{g.port('submission')}",
                        "-quiet", "-ign_eof"],
                       input=b"EHLO client.example\r\nQUIT\r\n", capture_output=True, timeout=30)
    out = r.stdout.decode(errors="replace")
    # s_client did EHLO and STARTTLS itself; after the handshake AUTH is offered.
    assert "250 AUTH PLAIN LOGIN" in out, out + r.stderr.decode(errors="replace")
    assert "221 2.0.0 Bye" in out


def test_pop3_with_tls_required_poplib_and_curl(g):
    p = poplib.POP3("127.0.0.1", g.port("pop3"), timeout=10)
    caps = p.capa()
    assert "STLS" in caps and "USER" not in caps and "SASL" not in caps
    with pytest.raises(poplib.error_proto) as e:
        p.user("alice")
    assert e.value.args[0] == b"-ERR [AUTH] Must issue an STLS command first"
    p.stls(context=client_tls_context())
    assert "USER" in p.capa()
    p.user("alice")
    assert p.pass_("pw-alice").startswith(b"+OK")
    p.quit()

    url = f"pop3://127.0.0.1:{g.port('pop3')}/"
    plain = subprocess.run(["curl", "-s", "-S", "--max-time", "20", "--url", url, "-u", "alice:pw-alice"],
                           capture_output=True, timeout=30)
    assert plain.returncode != 0  # no login method in clear
    tls = subprocess.run(["curl", "-s", "-S", "--max-time", "20", "--ssl-reqd", "-k", "--url", url,
                          "-u", "alice:pw-alice"], capture_output=True, timeout=30)
    assert tls.returncode == 0, tls.stderr
    assert tls.stdout.strip() == b""  # an empty maildrop listed


def test_submission_tls_required_answers_530_before_tls_whatever_the_state(g):
    """Every command but EHLO/HELO, STARTTLS, NOOP, RSET and QUIT gets 530
    before TLS: a RCPT without MAIL or a DATA without RCPT too (not 503)."""
    with smtplib.SMTP("127.0.0.1", g.port("submission"), timeout=10) as s:
        s.ehlo("client.example")
        for cmd, arg in [("RCPT", "TO:<alice@gw.test>"), ("DATA", ""), ("MAIL", "FROM:<alice@gw.test>"),
                         ("VRFY", "alice"), ("EXPN", "staff"), ("HELP", ""), ("AUTH", "PLAIN")]:
            assert s.docmd(cmd, arg) == (530, b"5.7.0 Must issue a STARTTLS command first"), cmd
        assert s.helo("client.example")[0] == 250
        assert s.rset()[0] == 250 and s.noop()[0] == 250
        s.starttls(context=client_tls_context())
        s.ehlo("client.example")
        # After TLS the state is checked as usual.
        assert s.docmd("RCPT", "TO:<alice@gw.test>")[0] == 503
    # A STARTTLS listener that does not require TLS keeps the state answers.
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=10) as s:
        s.ehlo("client.example")
        assert s.docmd("RCPT", "TO:<alice@gw.test>")[0] == 503
        assert s.docmd("DATA")[0] == 503
    # swaks, in clear, is stopped at its first transaction command.
    r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(g.port("submission")),
                        "--from", "alice@gw.test", "--to", "x@remote.test", "--timeout", "15"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "<** 530 5.7.0 Must issue a STARTTLS command first" in r.stdout, r.stdout
    assert len(g.dropped()) == 0


def test_pop3_tls_required_greeting_has_no_apop_timestamp(g):
    """The APOP timestamp is only in the greeting, and the greeting comes in
    clear: on a tls = "required" listener it carries none, and APOP is
    unavailable there (before TLS and after). A STARTTLS listener that does
    not require TLS still offers it."""
    g.add_user("carol", "pw-carol", "--shared-secret")
    p = poplib.POP3("127.0.0.1", g.port("pop3"), timeout=10)
    assert p.getwelcome() == b"+OK popgate POP3 server ready"
    with pytest.raises(poplib.error_proto) as e:
        p.apop("carol", "pw-carol")  # poplib finds no timestamp: nothing to digest
    assert "APOP not supported" in str(e.value.args[0])
    digest = hashlib.md5(b"<1.2.3@gw.test>pw-carol").hexdigest()
    with pytest.raises(poplib.error_proto) as e:
        p._shortcmd(f"APOP carol {digest}")
    assert e.value.args[0] == b"-ERR [AUTH] Must issue an STLS command first"
    p.stls(context=client_tls_context())
    with pytest.raises(poplib.error_proto) as e:
        p._shortcmd(f"APOP carol {digest}")
    assert e.value.args[0] == b"-ERR [AUTH] APOP is not available on this server"
    p.user("carol")
    assert p.pass_("pw-carol").startswith(b"+OK")
    p.quit()
    # Where TLS is optional the greeting still carries the timestamp and APOP works.
    q = poplib.POP3("127.0.0.1", g.port("pop3any"), timeout=10)
    assert re.fullmatch(rb"\+OK popgate POP3 server ready <\d+\.\d+\.[0-9a-f]{16}@[^>]+>", q.getwelcome())
    assert q.apop("carol", "pw-carol").startswith(b"+OK Logged in")
    q.quit()


def test_a_listeners_own_plaintext_rule(g):
    # "internal": AUTH PLAIN in clear (plaintext = "always" on that listener only).
    with smtplib.SMTP("127.0.0.1", g.port("internal"), timeout=10) as s:
        s.ehlo("client.example")
        assert "PLAIN" in s.esmtp_features["auth"]
        s.login("alice", "pw-alice")
        assert s.sendmail("alice@gw.test", ["x@remote.test"], BODY) == {}
    # "smtp" follows auth.plaintext (tls-only): no PLAIN in clear, refused if tried.
    with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=10) as s:
        s.ehlo("client.example")
        assert not s.has_extn("auth")
        code, _ = s.docmd("AUTH", "PLAIN AGFsaWNlAHB3LWFsaWNl")
        assert code == 538  # RFC 4954: encryption required for this mechanism
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            s.sendmail("alice@gw.test", ["x@remote.test"], BODY)
    assert len(g.dropped()) == 1


def test_sighup_applies_a_changed_policy_to_new_sessions(g):
    old = smtplib.SMTP("127.0.0.1", g.port("submission"), timeout=10)
    old.ehlo("client.example")
    text = g.config_file.read_text()
    assert text.count('tls = "required"') == 2
    g.config_file.write_text(text.replace('tls = "required"\nauth_required = true',
                                          'tls = "starttls"\nauth_required = true'))
    g.reload()
    assert g.wait_log("reload done")
    with smtplib.SMTP("127.0.0.1", g.port("submission"), timeout=10) as s:
        s.ehlo("client.example")
        # TLS no longer required first; AUTH still is (RFC 6409).
        assert s.docmd("MAIL", "FROM:<alice@gw.test>") == (530, b"5.7.0 Authentication required")
    # The session opened before the reload keeps the policy it started with.
    assert old.docmd("MAIL", "FROM:<alice@gw.test>") == (530, b"5.7.0 Must issue a STARTTLS command first")
    old.quit()


def test_sighup_can_harden_a_listener_from_no_tls_to_tls_required(g):
    """tls = "none" -> "required" on a reload: new sessions must STARTTLS
    first. Before, a change of tls between none and starttls/required made
    the frame drop the reloaded listener as "another binding" and keep the
    old policy whole, silently; now only address, port, protocol and
    implicit TLS wait for a restart, and a change of those is logged."""
    with smtplib.SMTP("127.0.0.1", g.port("internal"), timeout=10) as s:
        assert "starttls" not in s.ehlo("client.example")[1].decode().lower()
        assert s.docmd("MAIL", "FROM:<alice@gw.test>")[0] == 250
    text = g.config_file.read_text()
    old = 'name = "internal"\nprotocol = "smtp"\ntls = "none"\nplaintext = "always"'
    assert old in text
    text = text.replace(old, 'name = "internal"\nprotocol = "smtp"\ntls = "required"\nplaintext = "tls-only"')
    moved = 'address = "127.0.0.1"\nport = 0\nname = "pop3any"'
    assert moved in text
    text = text.replace(moved, moved.replace("127.0.0.1", "127.0.0.2"))
    g.config_file.write_text(text)
    g.reload()
    assert g.wait_log("reload done")
    assert "reload: listener pop3any changed its name, address" in g.log()
    # and the file's version of it is named too: not bound until a restart
    assert "reload: listener pop3any is not bound (new, or its binding changed): it waits for a restart" in g.log()
    assert "reload: listener internal" not in g.log()
    with smtplib.SMTP("127.0.0.1", g.port("internal"), timeout=10) as s:
        code, features = s.ehlo("client.example")
        assert "STARTTLS" in features.decode() and "AUTH" not in features.decode()
        assert s.docmd("MAIL", "FROM:<alice@gw.test>") == (530, b"5.7.0 Must issue a STARTTLS command first")
        s.starttls(context=client_tls_context())
        s.ehlo("client.example")
        s.login("alice", "pw-alice")
        assert s.docmd("MAIL", "FROM:<alice@gw.test>")[0] == 250


@pytest.mark.parametrize("listener, message", [
    ('protocol = "pop3"\nauth_required = true', "auth_required is for smtp"),
    ('protocol = "smtp"\ngrant = false', "grant is for pop3"),
    ('protocol = "smtp"\nlocal_delivery_without_auth = true',
     "local_delivery_without_auth only means something with auth_required = true"),
    ('protocol = "pop3"\nplaintext = "never"', "no client could ever log in here"),
    ('protocol = "smtp"\nauth_required = true\ntls = "none"\nplaintext = "tls-only"',
     "no client could ever log in here"),
])
def test_check_config_refuses_contradictions(tmp_path, listener, message):
    cfg = tmp_path / "popgate.toml"
    cfg.write_text('[auth]\napop = false\ncram_md5 = false\nloopback_is_secure = false\n'
                   f'[[listener]]\nname = "x"\naddress = "127.0.0.1"\nport = 0\n{listener}\n')
    r = subprocess.run([POPGATE, "-c", str(cfg), "check-config"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert message in r.stdout + r.stderr


def check_config(tmp_path, text):
    cfg = tmp_path / "popgate.toml"
    cfg.write_text(text)
    return subprocess.run([POPGATE, "-c", str(cfg), "check-config"], capture_output=True, text=True, timeout=30)


def test_apop_alone_cannot_serve_a_pop3_listener_that_requires_tls(tmp_path):
    # APOP is not offered where TLS is required (its timestamp would be in the
    # clear greeting), so with plaintext "never" nobody could log in there.
    head = '[auth]\napop = true\ncram_md5 = false\nplaintext = "never"\n'
    listener = '[[listener]]\nname = "x"\nprotocol = "pop3"\naddress = "127.0.0.1"\nport = 0\ntls = "{}"\n'
    r = check_config(tmp_path, head + listener.format("required"))
    assert r.returncode != 0 and "no client could ever log in here" in r.stdout + r.stderr
    r = check_config(tmp_path, head + listener.format("starttls"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_an_ipv4_mapped_listener_address_is_refused_with_its_ipv4_spelling(tmp_path):
    listener = '[[listener]]\nname = "x"\nprotocol = "pop3"\naddress = "{}"\nport = 0\n'
    r = check_config(tmp_path, listener.format("::ffff:127.0.0.1"))
    assert r.returncode != 0 and "an IPv4-mapped one as its IPv4 address" in r.stdout + r.stderr
    assert ":4:" in r.stdout + r.stderr, r.stdout + r.stderr  # the line of the address
    assert check_config(tmp_path, listener.format("127.0.0.1")).returncode == 0
