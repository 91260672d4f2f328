"""SIGHUP reloads the certificate: a new connection gets the new one while a
session opened before keeps working on the old one."""
import hashlib
import os
import socket
import ssl
import subprocess

from popgate_test import POPGATE, client_tls_context, gateway, make_gateway  # noqa: F401


def fingerprint(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with client_tls_context().wrap_socket(raw) as s:
            der = s.getpeercert(binary_form=True)
            s.recv(512)
            return hashlib.sha256(der).hexdigest()


def test_sighup_swaps_certificate_for_new_connections_only(gateway):
    port = gateway.port("pop3s")
    before = fingerprint(port)
    old = client_tls_context().wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5))
    assert old.recv(512).startswith(b"+OK")

    new_key, new_cert = gateway.root / "new-key.pem", gateway.root / "new-cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-subj", "/CN=reloaded.test", "-keyout", str(new_key), "-out", str(new_cert), "-days", "2"],
                   check=True, capture_output=True)
    os.replace(new_key, gateway.key)
    os.replace(new_cert, gateway.cert)
    gateway.reload()
    assert gateway.wait_log("reload done")

    after = fingerprint(port)
    assert after != before
    with open(gateway.cert, "rb") as f:
        expected = hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read().decode())).hexdigest()
    assert after == expected

    # The session opened before the reload still works.
    old.sendall(b"CAPA\r\n")
    data = b""
    while not data.endswith(b"\r\n.\r\n"):
        chunk = old.recv(4096)
        assert chunk
        data += chunk
    assert data.startswith(b"+OK")
    old.sendall(b"QUIT\r\n")
    assert old.recv(512).startswith(b"+OK")
    old.close()


def smtp_greeting(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        return s.recv(512)


def test_sighup_with_broken_key_keeps_old_certificate_and_the_whole_file_out(gateway):
    # The documented "a file with any error is refused whole": the rest of
    # the file (here server.hostname) was applied beside a key that does
    # not load, which check-config refuses.
    port = gateway.port("pop3s")
    before = fingerprint(port)
    good_key = gateway.key.read_text()
    text = gateway.config_file.read_text()
    assert 'hostname = "gw.test"' in text
    gateway.config_file.write_text(text.replace('hostname = "gw.test"', 'hostname = "changed.test"'))
    gateway.key.write_text("not a key\n")
    gateway.reload()
    assert gateway.wait_log("reload refused, keeping the running configuration: TLS not reloaded")
    assert fingerprint(port) == before
    assert smtp_greeting(gateway.port("smtp")).startswith(b"220 gw.test "), "the rest of the file was applied"
    assert "reload done" not in gateway.log()
    # With the key back, the same file applies whole.
    gateway.key.write_text(good_key)
    gateway.reload()
    assert gateway.wait_log("reload done")
    assert smtp_greeting(gateway.port("smtp")).startswith(b"220 changed.test ")


def test_only_tls12_and_later(gateway):
    import warnings
    ctx = client_tls_context()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # so that our client can offer TLS 1.1 at all
    with socket.create_connection(("127.0.0.1", gateway.port("pop3s")), timeout=5) as raw:
        try:
            ctx.wrap_socket(raw).close()
            error = ""
        except ssl.SSLError as e:
            error = str(e)
    # The server, not our client, refuses: it answers with a protocol_version alert.
    assert "ALERT_PROTOCOL_VERSION" in error
    with socket.create_connection(("127.0.0.1", gateway.port("smtps")), timeout=5) as raw:
        with client_tls_context().wrap_socket(raw) as s:
            assert s.version() in ("TLSv1.2", "TLSv1.3")
            assert s.recv(512).startswith(b"220 ")


def test_sighup_never_makes_a_self_signed_certificate(gateway):
    # A renewed config with a mistyped path (both files missing) had the
    # reload make a self-signed pair there and serve it, logged as routine
    # (a review's finding): only a start makes one.
    port = gateway.port("pop3s")
    before = fingerprint(port)
    typo = gateway.root / "letsencrypt" / "live" / "mail.exmaple"
    text = gateway.config_file.read_text()
    gateway.config_file.write_text(text.replace(str(gateway.cert), str(typo / "fullchain.pem"))
                                   .replace(str(gateway.key), str(typo / "privkey.pem")))
    r = subprocess.run([POPGATE, "-c", str(gateway.config_file), "check-config"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr  # a first start would make them, so the file is valid...
    assert "note: tls.cert_file " + str(typo / "fullchain.pem") in r.stderr  # ...but it says so
    assert "a reload (SIGHUP) never replaces a certificate in service with one" in r.stderr
    made = gateway.log().count("self-signed certificate created")
    gateway.reload()
    assert gateway.wait_log("reload refused, keeping the running configuration")
    assert gateway.wait_log("are both missing: a reload does not replace the certificate in service")
    assert not typo.exists()
    assert gateway.log().count("self-signed certificate created") == made
    assert fingerprint(port) == before


def test_the_reload_that_first_turns_tls_on_makes_the_pair(make_gateway):
    # No certificate in service yet: nothing a typo could replace, so the
    # reload that turns STARTTLS on makes the self-signed pair, as a start
    # would (the first cut of the refusal above refused this too).
    g = make_gateway(listeners=[{"name": "smtp", "protocol": "smtp", "tls": "none"}])
    assert not g.cert.exists()
    g.config_file.write_text(g.config_file.read_text().replace('tls = "none"', 'tls = "starttls"', 1))
    g.reload()
    assert g.wait_log("reload done")
    assert g.wait_log("tls self-signed certificate created")
    assert g.cert.exists() and g.key.exists()
    with socket.create_connection(("127.0.0.1", g.port("smtp")), timeout=5) as s:
        assert s.recv(512).startswith(b"220")
        s.sendall(b"EHLO client.test\r\n")
        ehlo = b""
        while not ehlo.endswith(b"\r\n") or b"250 " not in ehlo:
            ehlo += s.recv(512)
        assert b"STARTTLS" in ehlo
