"""TLS session resumption by tickets, ticket key rotation, and a second (RSA)
certificate beside the ECDSA one (issue 16, item 1). Real clients:
`openssl s_client` (-sess_out/-sess_in, -sigalgs, -cipher) and Python's ssl."""
import socket
import ssl
import subprocess
import time

import pytest

from popgate_test import client_tls_context, gateway, make_gateway  # noqa: F401

# listener name -> s_client arguments for its TLS start and the command that ends the session
LISTENERS = {
    "pop3s": ([], b"QUIT\r\n"),
    "smtps": ([], b"QUIT\r\n"),
    "pop3": (["-starttls", "pop3"], b"QUIT\r\n"),
    "smtp": (["-starttls", "smtp"], b"QUIT\r\n"),
}


def s_client(port, listener, *args):
    """One TLS session through `openssl s_client`: handshake, the greeting (or the
    STARTTLS exchange), QUIT, read until the server closes. Returns stdout."""
    extra, quit_cmd = LISTENERS[listener]
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "gw.test",
                        "-ign_eof", *extra, *args],
                       input=quit_cmd, capture_output=True, timeout=60)
    return r.stdout.decode(errors="replace")


def handshake_kind(out):
    """'New' or 'Reused' and the protocol, from s_client's "New, TLSv1.3, Cipher is ..." line."""
    for line in out.splitlines():
        if line.startswith(("New, ", "Reused, ")) and "Cipher is" in line:
            kind, version = line.split(",")[0:2]
            return kind, version.strip()
    return None, None


def session_file(tmp_path, port, listener, version):
    """A full handshake that saves its session (ticket) for -sess_in."""
    f = tmp_path / f"{listener}-{version}.sess"
    out = s_client(port, listener, f"-{version}", "-sess_out", str(f))
    assert handshake_kind(out)[0] == "New", out
    assert f.exists() and f.stat().st_size > 0, "no session ticket saved:\n" + out
    return f


@pytest.mark.parametrize("listener", ["pop3s", "smtps", "pop3", "smtp"])
@pytest.mark.parametrize("version", ["tls1_3", "tls1_2"])
def test_a_ticket_resumes_the_session(gateway, tmp_path, listener, version):
    port = gateway.port(listener)
    f = session_file(tmp_path, port, listener, version)
    out = s_client(port, listener, f"-{version}", "-sess_in", str(f))
    want = "TLSv1.3" if version == "tls1_3" else "TLSv1.2"
    assert handshake_kind(out) == ("Reused", want), out
    # The session after a resumed handshake works: the server answered QUIT.
    assert ("+OK" if listener.startswith("pop3") else "221") in out


def test_python_ssl_reuses_the_session_on_pop3s_and_smtps(gateway):
    # Python's ssl: the session of one connection offered on the next.
    for name, greeting in (("pop3s", b"+OK"), ("smtps", b"220")):
        ctx = client_tls_context()
        sess = None
        for attempt in range(2):
            with socket.create_connection(("127.0.0.1", gateway.port(name)), timeout=10) as raw:
                with ctx.wrap_socket(raw, session=sess) as s:
                    assert s.recv(512).startswith(greeting)  # TLS 1.3: the ticket came before it
                    assert s.session_reused == (attempt == 1), (name, attempt)
                    sess = s.session
                    s.sendall(b"QUIT\r\n")
                    s.recv(512)


def test_a_ticket_under_a_foreign_key_gets_a_full_handshake(make_gateway, tmp_path):
    # Another popgate (another process, its own keys) cannot read this ticket:
    # the client still gets in, with a full handshake.
    a = make_gateway(name="a")
    b = make_gateway(name="b")
    f = session_file(tmp_path, a.port("pop3s"), "pop3s", "tls1_3")
    out = s_client(b.port("pop3s"), "pop3s", "-tls1_3", "-sess_in", str(f))
    assert handshake_kind(out) == ("New", "TLSv1.3"), out
    assert "+OK" in out


def test_tickets_off_means_full_handshakes(make_gateway, tmp_path):
    g = make_gateway(overrides={"tls": {"session_tickets": False}})
    for version in ("tls1_3", "tls1_2"):
        f = tmp_path / f"off-{version}.sess"
        s_client(g.port("pop3s"), "pop3s", f"-{version}", "-sess_out", str(f))
        if f.exists() and f.stat().st_size:
            out = s_client(g.port("pop3s"), "pop3s", f"-{version}", "-sess_in", str(f))
            assert handshake_kind(out)[0] == "New", out


def wait_for_phase(interval, lo, hi):
    """Sleeps until time() mod interval is in [lo, hi)."""
    while not (lo <= time.time() % interval < hi):
        time.sleep(0.02)


@pytest.mark.parametrize("version", ["tls1_3", "tls1_2"])
def test_rotation_keeps_the_previous_key_and_drops_older_ones(make_gateway, tmp_path, version):
    # Keys rotate at multiples of 3 s on the wall clock. A ticket made late in
    # period P resumes in P (current key) and in P+1 (previous key), and gets a
    # full handshake in P+2, though it is younger than its lifetime (2 x 3 s):
    # its key is gone.
    R = 3
    g = make_gateway(overrides={"tls": {"ticket_key_rotation": R}})
    port = g.port("pop3s")
    wait_for_phase(R, 1.9, 2.3)
    issued = time.time()
    period = int(issued // R)
    f = session_file(tmp_path, port, "pop3s", version)
    want = "TLSv1.3" if version == "tls1_3" else "TLSv1.2"

    if int(time.time() // R) == period:
        assert handshake_kind(s_client(port, "pop3s", f"-{version}", "-sess_in", str(f))) == ("Reused", want)

    while time.time() < (period + 1) * R + 0.3:
        time.sleep(0.05)
    assert int(time.time() // R) == period + 1, "the machine is too slow for this test's timing"
    out = s_client(port, "pop3s", f"-{version}", "-sess_in", str(f))
    assert handshake_kind(out) == ("Reused", want), out

    while time.time() < (period + 2) * R + 0.3:
        time.sleep(0.05)
    out = s_client(port, "pop3s", f"-{version}", "-sess_in", str(f))
    assert time.time() - issued < 2 * R, "the ticket's own lifetime ran out: the test proves nothing"
    assert handshake_kind(out) == ("New", want), out
    assert "+OK" in out


# ---------------------------------------------------------------- two certificates
def make_cert(tmp_path, name, key_args):
    key, cert = tmp_path / f"{name}.key", tmp_path / f"{name}.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", *key_args, "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", f"/CN={name}.gw.test"], check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture
def certs(tmp_path):
    return {"ec": make_cert(tmp_path, "ec", ["ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
            "rsa": make_cert(tmp_path, "rsa", ["rsa:2048"]),
            "ec2": make_cert(tmp_path, "ec2", ["ec", "-pkeyopt", "ec_paramgen_curve:P-256"])}


def served_cn(out):
    for line in out.splitlines():
        if line.startswith("subject=") and "CN" in line:
            return line.split("=")[-1].strip()
    return None


def dual_gateway(make_gateway, certs, first="ec", second="rsa", **kw):
    (c1, k1), (c2, k2) = certs[first], certs[second]
    return make_gateway(overrides={"tls": {"cert_file": str(c1), "key_file": str(k1), "self_signed": False,
                                           "second_cert_file": str(c2), "second_key_file": str(k2)}}, **kw)


@pytest.mark.parametrize("listener", ["pop3s", "smtp"])
def test_rsa_only_clients_get_the_rsa_certificate_modern_ones_the_ecdsa_one(make_gateway, certs, listener):
    g = dual_gateway(make_gateway, certs)
    port = g.port(listener)
    # TLS 1.3: the certificate follows the signature algorithms the client accepts.
    assert served_cn(s_client(port, listener, "-tls1_3")) == "ec.gw.test"
    out = s_client(port, listener, "-tls1_3", "-sigalgs", "rsa_pss_rsae_sha256:rsa_pss_rsae_sha384")
    assert served_cn(out) == "rsa.gw.test", out
    assert handshake_kind(out) == ("New", "TLSv1.3")
    # TLS 1.2: the certificate follows the cipher suites.
    assert served_cn(s_client(port, listener, "-tls1_2")) == "ec.gw.test"
    out = s_client(port, listener, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")
    assert served_cn(out) == "rsa.gw.test", out
    assert handshake_kind(out) == ("New", "TLSv1.2")
    out = s_client(port, listener, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert served_cn(out) == "ec.gw.test", out


def test_rsa_first_and_ecdsa_second_works_too(make_gateway, certs):
    g = dual_gateway(make_gateway, certs, first="rsa", second="ec")
    port = g.port("pop3s")
    assert served_cn(s_client(port, "pop3s", "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")) == "rsa.gw.test"
    assert served_cn(s_client(port, "pop3s", "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")) == "ec.gw.test"


def test_without_a_second_certificate_an_rsa_only_client_is_refused(make_gateway, certs):
    c, k = certs["ec"]
    g = make_gateway(overrides={"tls": {"cert_file": str(c), "key_file": str(k), "self_signed": False}})
    out = s_client(g.port("pop3s"), "pop3s", "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")
    assert handshake_kind(out)[0] is None or "Cipher is (NONE)" in out, out
    out = s_client(g.port("pop3s"), "pop3s", "-tls1_3", "-sigalgs", "rsa_pss_rsae_sha256")
    assert served_cn(out) is None, out


def test_a_second_certificate_of_the_same_type_is_refused(make_gateway, certs):
    g = dual_gateway(make_gateway, certs, first="ec", second="ec2", start=False)
    r = g.cli("check-config", str(g.config_file), check=False)
    assert r.returncode != 0
    assert "tls.second_cert_file" in r.stderr + r.stdout and "same key type" in r.stderr + r.stdout
    with pytest.raises(RuntimeError, match="same key type"):
        g.start()
    g.allow_unclean_exit = True


def test_a_second_key_that_does_not_match_is_refused(make_gateway, certs):
    g = make_gateway(start=False, overrides={"tls": {
        "cert_file": str(certs["ec"][0]), "key_file": str(certs["ec"][1]), "self_signed": False,
        "second_cert_file": str(certs["rsa"][0]), "second_key_file": str(certs["ec2"][1])}})
    r = g.cli("check-config", str(g.config_file), check=False)
    assert r.returncode != 0
    assert "tls.second_key_file" in r.stderr + r.stdout, r.stderr + r.stdout
    with pytest.raises(RuntimeError, match="tls.second_key_file"):
        g.start()
    g.allow_unclean_exit = True


def test_a_second_certificate_without_its_key_is_a_config_error(make_gateway, certs):
    g = make_gateway(start=False, overrides={"tls": {"second_cert_file": str(certs["rsa"][0])}})
    r = g.cli("check-config", str(g.config_file), check=False)
    assert r.returncode != 0
    assert "set both or neither" in r.stderr + r.stdout


def test_resumption_with_two_certificates(make_gateway, certs, tmp_path):
    # An RSA-only TLS 1.2 client resumes too.
    g = dual_gateway(make_gateway, certs)
    port = g.port("smtps")
    f = tmp_path / "rsa.sess"
    out = s_client(port, "smtps", "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256", "-sess_out", str(f))
    assert served_cn(out) == "rsa.gw.test"
    out = s_client(port, "smtps", "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256", "-sess_in", str(f))
    assert handshake_kind(out) == ("Reused", "TLSv1.2"), out


def test_ticket_keys_survive_a_reload(gateway, tmp_path):
    f = session_file(tmp_path, gateway.port("pop3s"), "pop3s", "tls1_3")
    gateway.reload()
    assert gateway.wait_log("reload done")
    out = s_client(gateway.port("pop3s"), "pop3s", "-tls1_3", "-sess_in", str(f))
    assert handshake_kind(out) == ("Reused", "TLSv1.3"), out



@pytest.mark.parametrize("listener,greeting", [("pop3s", b"+OK"), ("smtps", b"220")])
def test_the_server_ends_tls_with_a_close_notify(gateway, listener, greeting):
    # Without one a client sees a truncated stream (Python: SSLEOFError) and
    # OpenSSL-based clients discard the session instead of resuming it.
    with socket.create_connection(("127.0.0.1", gateway.port(listener)), timeout=10) as raw:
        ctx = client_tls_context()
        ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)  # Python's default hides a missing one
        with ctx.wrap_socket(raw, suppress_ragged_eofs=False) as s:
            assert s.recv(512).startswith(greeting)
            s.sendall(b"QUIT\r\n")
            data = b""
            while True:
                chunk = s.recv(512)  # raises ssl.SSLEOFError on a close without close_notify
                if not chunk:
                    break
                data += chunk
            assert data.startswith(b"+OK" if listener == "pop3s" else b"221")
