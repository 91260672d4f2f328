"""TLS 1.2 cipher defaults (issue 17 item 8): AEAD suites with ECDHE only, on
implicit-TLS and STARTTLS listeners alike, checked with `openssl s_client`."""
import subprocess

import pytest

from popgate_test import gateway, make_gateway  # noqa: F401

# CBC suites a TLS 1.2 client may offer with the certificate popgate makes (P-256):
# SHA-1 and SHA-2 MACs. OpenSSL's own default accepts all of them.
CBC = ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-ECDSA-AES128-SHA256",
       "ECDHE-ECDSA-AES256-SHA384"]
AEAD = ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305"]

# listener name -> extra s_client arguments
LISTENERS = {
    "pop3s": [],
    "smtps": [],
    "pop3": ["-starttls", "pop3"],
    "smtp": ["-starttls", "smtp"],
}


def handshake(port, cipher, extra):
    """A TLS 1.2 handshake offering only `cipher`; returns the cipher agreed or None."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_2", "-cipher", cipher,
                        "-servername", "gw.test", *extra],
                       input=b"", capture_output=True, timeout=60)
    out = r.stdout.decode(errors="replace")
    for line in out.splitlines():
        # "New, TLSv1.2, Cipher is X" on success, "Cipher is (NONE)" when refused.
        if "Cipher is " in line:
            agreed = line.split("Cipher is ", 1)[1].strip()
            return None if agreed == "(NONE)" else agreed
    return None


@pytest.mark.parametrize("listener", sorted(LISTENERS))
def test_cbc_suites_refused_and_aead_accepted_by_default(gateway, listener):
    port = gateway.port(listener)
    for c in CBC:
        assert handshake(port, c, LISTENERS[listener]) is None, f"{listener} accepted {c}"
    for c in AEAD:
        assert handshake(port, c, LISTENERS[listener]) == c, f"{listener} refused {c}"


def test_empty_cipher_list_means_the_aead_default(make_gateway):
    # A config written for an older release says ciphers = "": it gets the safe list too.
    g = make_gateway(overrides={"tls": {"ciphers": ""}})
    for name in ("pop3s", "smtp"):
        assert handshake(g.port(name), "ECDHE-ECDSA-AES128-SHA", LISTENERS[name]) is None
        assert handshake(g.port(name), "ECDHE-ECDSA-AES128-GCM-SHA256", LISTENERS[name]) == \
            "ECDHE-ECDSA-AES128-GCM-SHA256"


def test_configured_cipher_list_still_applies(make_gateway):
    # The key is honoured: an administrator who needs CBC for an old client can say so.
    g = make_gateway(overrides={"tls": {"ciphers": "ECDHE-ECDSA-AES128-SHA"}})
    assert handshake(g.port("pop3s"), "ECDHE-ECDSA-AES128-SHA", []) == "ECDHE-ECDSA-AES128-SHA"
    assert handshake(g.port("pop3s"), "ECDHE-ECDSA-AES128-GCM-SHA256", []) is None
