"""relay.upstream_starttls = "verify" against a real aiosmtpd upstream with
STARTTLS and a certificate issued by a test CA made here with openssl: the
message goes only when the chain ends at relay.upstream_ca_file and the
certificate names relay.upstream_tls_name (or the upstream's address).
Every refusal (another CA, another name, a self-signed certificate, no
STARTTLS at all) gives the client 451 4.4.1 at its recipient, delivers
nothing, sends no AUTH password, and logs OpenSSL's reason. check-config
refuses a CA file it cannot load, and a CA file or name without "verify"."""
import os
import shutil
import smtplib
import ssl
import subprocess
import threading

import pytest

from popgate_test import free_port, make_gateway  # noqa: F401  (fixture)
from smtp_support import relay_one, relay_overrides

USER, PASSWORD = "relayuser", "verify-relay-pw"
BODY = b"From: a@example.org\r\nTo: x@remote.test\r\nSubject: verified upstream\r\n\r\nhello\r\n"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=cwd)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    return d / f"{name}.pem"


def make_leaf(d, ca, name, san):
    """A certificate for `name` with subjectAltName `san`, signed by `ca`
    (None: self-signed)."""
    (d / f"{name}.ext").write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n")
    if ca is None:
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj",
                f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
                "-addext", f"subjectAltName={san}", cwd=d)
    else:
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj",
                f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
                "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)
    return d / f"{name}.pem", d / f"{name}.key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    return {
        "ca": make_ca(d, "test-ca"),
        "other_ca": make_ca(d, "other-ca"),
        "leaf": make_leaf(d, "test-ca", "mx.test", "DNS:mx.test,IP:127.0.0.1"),
        "self_signed": make_leaf(d, None, "self.test", "DNS:mx.test,IP:127.0.0.1"),
    }


class Upstream:
    """aiosmtpd on loopback with STARTTLS under `cert` (none: no STARTTLS),
    AUTH offered (not required); records AUTHs and messages."""

    def __init__(self, cert):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.auths, self.messages = [], []
        self.lock = threading.Lock()
        outer = self

        def authenticator(server, session, envelope, mechanism, auth_data):
            with outer.lock:
                outer.auths.append((auth_data.login.decode(), auth_data.password.decode()))
            return AuthResult(success=True)

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                with outer.lock:
                    outer.messages.append((list(envelope.rcpt_tos), envelope.content))
                return "250 2.0.0 queued"

        ctx = None
        if cert:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(*cert)
        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, tls_context=ctx,
                                     authenticator=authenticator, auth_required=False, auth_require_tls=False,
                                     server_hostname="mx.test")
        self.controller.start()


@pytest.fixture
def upstream():
    made = []

    def make(cert):
        u = Upstream(cert)
        made.append(u)
        return u

    yield make
    for u in made:
        u.controller.stop()


def gateway(make_gateway, tmp_path, up, start=True, **relay):
    pw = tmp_path / "upstream-password"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    o = relay_overrides(up, relay={"upstream_starttls": "verify", "upstream_user": USER,
                                   "upstream_password_file": str(pw), **relay})
    g = make_gateway(overrides=o, start=start)
    if start:
        g.sql("INSERT INTO relay_grants(address, expires_at) VALUES('127.0.0.1', unixepoch()+600)")
    return g


def send(g):
    return relay_one(g, BODY)


@pytest.mark.parametrize("name", ["mx.test", ""], ids=["by-name", "by-address"])
def test_a_certificate_that_verifies_carries_the_message(make_gateway, tmp_path, upstream, pki, name):
    up = upstream(pki["leaf"])
    g = gateway(make_gateway, tmp_path, up, upstream_ca_file=str(pki["ca"]), upstream_tls_name=name)
    assert send(g)[0] == 250
    assert len(up.messages) == 1 and up.messages[0][0] == ["x@remote.test"]
    assert up.auths == [(USER, PASSWORD)]
    assert g.wait_log("tls=verified")


@pytest.mark.parametrize("case, why", [
    ("other-ca", "unable to get local issuer certificate"),
    ("other-name", "hostname mismatch"),
    ("self-signed", "self-signed certificate"),
    ("system-cas", "unable to get local issuer certificate"),
])
def test_a_certificate_that_does_not_verify_gets_451_and_nothing_is_sent(make_gateway, tmp_path, upstream, pki,
                                                                         case, why):
    cert = pki["self_signed"] if case == "self-signed" else pki["leaf"]
    relay = {
        "other-ca": {"upstream_ca_file": str(pki["other_ca"])},
        "other-name": {"upstream_ca_file": str(pki["ca"]), "upstream_tls_name": "other.test"},
        "self-signed": {"upstream_ca_file": str(pki["ca"])},
        "system-cas": {},  # the system's CAs know nothing of the test CA
    }[case]
    up = upstream(cert)
    g = gateway(make_gateway, tmp_path, up, **relay)
    code, text = send(g)
    assert code == 451 and text.startswith(b"4.4.1"), (code, text)
    assert up.messages == []
    assert up.auths == [], "the password went to an upstream that was not verified"
    assert g.wait_log("certificate not verified: " + why)
    # The next message is refused the same way: no fallback to clear text.
    assert send(g)[0] == 451
    assert up.messages == [] and up.auths == []


def make_crl(d, ca, revoke=None, work=None, expired=False):
    """A CRL of `ca` (its files in d, as make_ca wrote them), revoking the
    certificate file `revoke` if given; made in `work` (a new directory);
    `expired`: its nextUpdate in 2020."""
    work = work or d / f"crl-{ca}-{revoke.stem if revoke else 'none'}"
    work.mkdir()
    (work / "index.txt").write_text("")
    (work / "crlnumber").write_text("1000\n")
    (work / "ca.cnf").write_text(f"""[ca]
default_ca = here
[here]
database = {work}/index.txt
crlnumber = {work}/crlnumber
default_md = sha256
default_crl_days = 2
""")
    keys = ["-config", str(work / "ca.cnf"), "-keyfile", str(d / f"{ca}.key"), "-cert", str(d / f"{ca}.pem")]
    if revoke:
        openssl("ca", *keys, "-revoke", str(revoke), cwd=work)
    dates = ["-crl_lastupdate", "20200101000000Z", "-crl_nextupdate", "20200201000000Z"] if expired else []
    openssl("ca", *keys, "-gencrl", *dates, "-out", str(work / "crl.pem"), cwd=work)
    return (work / "crl.pem").read_text()


@pytest.mark.parametrize("case", ["revoked", "issuer-crl-missing"])
def test_a_crl_in_the_ca_file_is_checked(make_gateway, tmp_path, upstream, pki, case):
    """The CA file may hold CRLs (popgate.toml(5)): they were loaded but
    never checked, so an upstream whose certificate its CA had revoked got
    the mail and the AUTH password. A file with CRLs now has the upstream's
    certificate checked against its issuer's CRL: revoked, or no CRL of its
    issuer in the file, is 451 and nothing sent."""
    d = pki["ca"].parent
    crl = {"revoked": lambda: make_crl(d, "test-ca", revoke=pki["leaf"][0]),
           "issuer-crl-missing": lambda: make_crl(d, "other-ca")}[case]()
    bundle = tmp_path / "ca-with-crl.pem"
    bundle.write_text(pki["ca"].read_text() + crl)
    up = upstream(pki["leaf"])
    g = gateway(make_gateway, tmp_path, up, upstream_ca_file=str(bundle), upstream_tls_name="mx.test")
    code, text = send(g)
    assert code == 451 and text.startswith(b"4.4.1"), (code, text)
    assert up.messages == [] and up.auths == []
    why = {"revoked": "certificate revoked", "issuer-crl-missing": "unable to get certificate CRL"}[case]
    assert g.wait_log("certificate not verified: " + why)


def test_a_crl_that_does_not_revoke_the_upstream_lets_the_message_go(make_gateway, tmp_path, upstream, pki):
    d = pki["ca"].parent
    bundle = tmp_path / "ca-with-crl.pem"
    bundle.write_text(pki["ca"].read_text() + make_crl(d, "test-ca"))
    up = upstream(pki["leaf"])
    g = gateway(make_gateway, tmp_path, up, upstream_ca_file=str(bundle), upstream_tls_name="mx.test")
    assert send(g)[0] == 250
    assert len(up.messages) == 1 and up.auths == [(USER, PASSWORD)]
    assert g.wait_log("tls=verified")


@pytest.mark.parametrize("revoked", [True, False], ids=["intermediate-revoked", "none-revoked"])
def test_an_intermediate_ca_is_checked_against_the_roots_crl(make_gateway, tmp_path, upstream, pki, revoked):
    """Only the leaf was checked (X509_V_FLAG_CRL_CHECK): an upstream whose
    intermediate CA the root had revoked got the mail. Every certificate of
    the chain below the root is now checked against its issuer's CRL."""
    d = tmp_path / "chain"
    d.mkdir()
    for f in ("test-ca.pem", "test-ca.key"):
        shutil.copy(pki["ca"].parent / f, d / f)
    (d / "inter.ext").write_text("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=inter-ca",
            "-keyout", "inter-ca.key", "-out", "inter-ca.csr", cwd=d)
    openssl("x509", "-req", "-in", "inter-ca.csr", "-CA", "test-ca.pem", "-CAkey", "test-ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "inter.ext", "-out", "inter-ca.pem", cwd=d)
    leaf, key = make_leaf(d, "inter-ca", "mx.test", "DNS:mx.test,IP:127.0.0.1")
    chain = d / "chain.pem"
    chain.write_text(leaf.read_text() + (d / "inter-ca.pem").read_text())
    root_crl = make_crl(d, "test-ca", revoke=d / "inter-ca.pem" if revoked else None, work=d / "root-crl")
    bundle = d / "ca-with-crls.pem"
    bundle.write_text(pki["ca"].read_text() + root_crl + make_crl(d, "inter-ca", work=d / "inter-crl"))
    up = upstream((chain, key))
    g = gateway(make_gateway, tmp_path, up, upstream_ca_file=str(bundle), upstream_tls_name="mx.test")
    code, text = send(g)
    if not revoked:
        assert code == 250 and len(up.messages) == 1, (code, text)
        return
    assert code == 451 and text.startswith(b"4.4.1"), (code, text)
    assert up.messages == [] and up.auths == []
    assert g.wait_log("certificate not verified: certificate revoked")


def test_a_crl_written_in_place_counts_for_a_kept_connection(make_gateway, tmp_path, upstream, pki):
    """A kept upstream connection, verified under the old file, carried the
    next message after a CRL revoking the upstream was put in place (until
    relay.upstream_reuse_time ran out)."""
    d = pki["ca"].parent
    bundle = tmp_path / "ca-with-crl.pem"
    bundle.write_text(pki["ca"].read_text() + make_crl(d, "test-ca", work=tmp_path / "crl-before"))
    up = upstream(pki["leaf"])
    g = gateway(make_gateway, tmp_path, up, upstream_ca_file=str(bundle), upstream_tls_name="mx.test",
                upstream_reuse_time=60)
    assert send(g)[0] == 250
    bundle.write_text(pki["ca"].read_text() +
                      make_crl(d, "test-ca", revoke=pki["leaf"][0], work=tmp_path / "crl-after"))
    code, text = send(g)
    assert code == 451 and text.startswith(b"4.4.1"), (code, text)
    assert len(up.messages) == 1
    assert g.wait_log("certificate not verified: certificate revoked")


def test_an_expired_crl_is_named_by_check_config_and_the_log(make_gateway, tmp_path, upstream, pki):
    """An expired CRL refuses every certificate it covers (OpenSSL's "CRL
    has expired"), but check-config said nothing: the first sign was 451
    on every relayed message. check-config now notes the CRL (a note: the
    packaged unit runs it before each start, and POP3 must still start),
    and the daemon logs it when it loads the file. An expired CRL beside a
    fresh one of the same CA is no problem: the fresh one is used."""
    bundle = tmp_path / "ca-with-old-crl.pem"
    bundle.write_text(pki["ca"].read_text() +
                      make_crl(pki["ca"].parent, "test-ca", work=tmp_path / "old-crl", expired=True))
    up = upstream(pki["leaf"])
    g = gateway(make_gateway, tmp_path, up, upstream_ca_file=str(bundle), upstream_tls_name="mx.test")
    r = g.cli("check-config", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "note: relay.upstream_ca_file: the CRL of /CN=test-ca expired 2020-02-01 00:00:00 UTC" in r.stderr, r.stderr
    code, text = send(g)
    assert code == 451 and text.startswith(b"4.4.1"), (code, text)
    assert up.messages == [] and up.auths == []
    assert g.wait_log("certificate not verified: CRL has expired")
    assert g.wait_log("upstream tls: relay.upstream_ca_file: the CRL of /CN=test-ca expired")
    bundle.write_text(bundle.read_text() + make_crl(pki["ca"].parent, "test-ca", work=tmp_path / "new-crl"))
    r = g.cli("check-config", check=False)
    assert r.returncode == 0 and "CRL" not in r.stderr, r.stderr
    assert send(g)[0] == 250


def test_an_upstream_without_starttls_gets_no_message(make_gateway, tmp_path, upstream, pki):
    up = upstream(None)
    g = gateway(make_gateway, tmp_path, up, upstream_ca_file=str(pki["ca"]))
    code, text = send(g)
    assert code == 451 and text.startswith(b"4.4.1"), (code, text)
    assert up.messages == [] and up.auths == []
    assert g.wait_log("upstream does not offer STARTTLS and relay.upstream_starttls")
    line = next(ln for ln in g.log().splitlines() if "upstream does not offer STARTTLS" in ln)
    assert line.endswith('verify"'), line


def test_check_config_loads_the_ca_file(make_gateway, tmp_path, upstream, pki):
    up = upstream(None)
    good = gateway(make_gateway, tmp_path, up, start=False, upstream_ca_file=str(pki["ca"]))
    r = good.cli("check-config", check=False)
    assert r.returncode == 0, r.stdout + r.stderr

    # A bundle over 1 MB (the cap of a certificate or key file): CRLs run to
    # megabytes; text between the blocks stands in for them here.
    big = tmp_path / "big-bundle.pem"
    big.write_text("# a comment line of a large bundle\n" * 50000 + pki["ca"].read_text())
    assert big.stat().st_size > 1 << 20
    r = gateway(make_gateway, tmp_path, up, start=False, upstream_ca_file=str(big)).cli("check-config", check=False)
    assert r.returncode == 0, r.stdout + r.stderr

    (tmp_path / "not-a-ca.pem").write_text("not a certificate\n")
    for bad in (tmp_path / "missing.pem", tmp_path / "not-a-ca.pem"):
        g = gateway(make_gateway, tmp_path, up, start=False, upstream_ca_file=str(bad))
        r = g.cli("check-config", check=False)
        assert r.returncode != 0
        assert f"relay.upstream_ca_file: cannot load {bad}" in r.stderr, r.stderr


@pytest.mark.parametrize("key, value", [("upstream_ca_file", "/nonexistent/ca.pem"),
                                        ("upstream_tls_name", "mx.test")])
def test_a_ca_file_or_name_without_verify_is_a_configuration_error(make_gateway, tmp_path, upstream, key, value):
    up = upstream(None)
    g = gateway(make_gateway, tmp_path, up, start=False, upstream_starttls="required", **{key: value})
    r = g.cli("check-config", check=False)
    assert r.returncode != 0
    assert f'relay.{key}: used only with upstream_starttls = "verify"' in r.stdout + r.stderr


def test_a_fifo_swapped_in_for_the_ca_file_never_holds_a_relay(make_gateway, tmp_path, upstream, pki):
    # The CA file was checked with stat() and then opened by OpenSSL by
    # path: a FIFO renamed into its place between the two held the I/O
    # thread (and every session on it) for ever. A rename loop flips the
    # name between the CA and a FIFO while messages are relayed, each on a
    # new upstream connection; every RCPT must still get its answer: 250
    # when the CA was read, 451 when the FIFO was found.
    up = upstream(pki["leaf"])
    d = tmp_path / "ca"
    d.mkdir()
    ca, fifo_spare, ca_spare = d / "ca.pem", d / "fifo", d / "ca.spare"
    ca_spare.write_bytes(pki["ca"].read_bytes())
    os.mkfifo(fifo_spare)
    os.link(ca_spare, ca)
    g = gateway(make_gateway, tmp_path, up, upstream_ca_file=str(ca), upstream_reuse_time=0)
    stop = threading.Event()

    def flip():
        while not stop.is_set():
            for source in (fifo_spare, ca_spare):
                os.link(source, d / "next")
                os.rename(d / "next", ca)

    t = threading.Thread(target=flip, daemon=True)
    t.start()
    codes = []
    try:
        for _ in range(150):
            with smtplib.SMTP("127.0.0.1", g.port("smtp"), timeout=10) as s:
                s.ehlo("client.test")
                assert s.mail("a@example.org")[0] == 250
                code, _ = s.rcpt("x@remote.test")
                codes.append(code)
                if code == 250:
                    assert s.data(BODY)[0] == 250
    finally:
        stop.set()
        t.join()
    assert set(codes) <= {250, 451}, codes
    assert len(up.messages) == codes.count(250)
    assert g.wait_log("relay.upstream_ca_file: cannot load " + str(ca) + ": not a regular file")
