"""Two widely used POP3 clients from Debian against the daemon: mpop (APOP
and USER/PASS, and over STLS) and fetchmail (APOP). Each fetches the
messages byte for byte, deletes them, and leaves a grant for 127.0.0.1."""
import os
import shutil
import subprocess

import pytest

from popgate_test import deliver_file

MSG1 = b"From: a@example.org\nSubject: one\n\n.leading dot\nbody one\n"
MSG2 = b"From: b@example.org\nSubject: two\n\n8-bit: \xe9t\xe9\n"

pytestmark = pytest.mark.skipif(not shutil.which("mpop") or not shutil.which("fetchmail"),
                                reason="mpop and fetchmail come from deploy/install-deps.sh")


def stock(g, user, pw, *flags):
    g.add_user(user, pw, *flags)
    deliver_file(g.maildir(user), "1700000001.M1P1.gw", MSG1)
    deliver_file(g.maildir(user), "1700000002.M1P1.gw", MSG2)


def delivered(maildir):
    out = []
    for sub in ("new", "cur"):
        d = maildir / sub
        if d.exists():
            out += [p.read_bytes() for p in sorted(d.iterdir())]
    return out


def strip_client_headers(data):
    # mpop and fetchmail prepend their own Received:/Return-Path lines; the
    # message proper follows unchanged.
    i = data.find(b"From: ")
    return data[i:]


def mpop(g, target, user, pw, *extra):
    for sub in ("tmp", "new", "cur"):
        (target / sub).mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        ["mpop", "--host=127.0.0.1", f"--port={g.port('pop3')}", f"--user={user}",
         f"--passwordeval=echo {pw}", f"--delivery=maildir,{target}", "--keep=off",
         "--uidls-file=" + str(target / "uidls"), *extra],
        capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(target)})


@pytest.mark.parametrize("auth,tls", [("apop", "off"), ("user", "off"), ("user", "on")])
def test_mpop_fetches_and_deletes(make_gateway, tmp_path, auth, tls):
    g = make_gateway()
    stock(g, "alice", "pw-alice", "--shared-secret")
    target = tmp_path / f"mpop-{auth}-{tls}"
    extra = [f"--auth={auth}", f"--tls={tls}"]
    if tls == "on":
        extra += ["--tls-starttls=on", "--tls-certcheck=off"]
    r = mpop(g, target, "alice", "pw-alice", *extra)
    assert r.returncode == 0, r.stdout + r.stderr
    got = sorted(strip_client_headers(m) for m in delivered(target))
    assert got == sorted([MSG1, MSG2])
    # QUIT in TRANSACTION removed them from the server.
    assert g.messages("alice") == []
    (method, tls_flag), = g.sql("SELECT method, tls FROM relay_grants WHERE address = '127.0.0.1'")
    assert method == ("apop" if auth == "apop" else "pass")
    assert tls_flag == (1 if tls == "on" else 0)


def test_mpop_wrong_password_fetches_nothing(make_gateway, tmp_path):
    g = make_gateway()
    stock(g, "alice", "pw-alice", "--shared-secret")
    r = mpop(g, tmp_path / "m", "alice", "wrong", "--auth=apop", "--tls=off")
    assert r.returncode != 0
    assert "Authentication failed" in r.stderr + r.stdout
    assert len(g.messages("alice")) == 2
    assert g.sql("SELECT count(*) FROM relay_grants") == [(0,)]


def test_fetchmail_apop(make_gateway, tmp_path):
    g = make_gateway()
    stock(g, "bob", "pw-bob", "--shared-secret")
    out = tmp_path / "fetched"
    out.mkdir()
    rc = tmp_path / "fetchmailrc"
    rc.write_text(f'poll 127.0.0.1 service {g.port("pop3")} protocol APOP\n'
                  f'  user "bob" password "pw-bob" sslproto "" no keep\n'
                  f'  mda "/bin/sh -c \'cat > {out}/msg.$$.$(date +%s%N)\'"\n')
    rc.chmod(0o600)
    r = subprocess.run(["fetchmail", "-f", str(rc), "--nosyslog", "--nodetach", "-v"],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "HOME": str(tmp_path), "FETCHMAILHOME": str(tmp_path)})
    assert r.returncode == 0, r.stdout + r.stderr
    got = sorted(strip_client_headers(p.read_bytes()) for p in out.iterdir())
    assert got == sorted([MSG1, MSG2])
    assert g.messages("bob") == []
    assert g.sql("SELECT user, method FROM relay_grants") == [("bob", "apop")]


@pytest.mark.parametrize("mech", ["plain", "login", "cram-md5"])
def test_mpop_sasl_over_stls(make_gateway, tmp_path, mech):
    # tls-only with loopback not trusted: PLAIN and LOGIN work only after STLS.
    g = make_gateway(overrides={"auth": {"plaintext": "tls-only", "loopback_is_secure": False}})
    stock(g, "carol", "pw-carol", "--shared-secret")
    target = tmp_path / f"mpop-{mech}"
    r = mpop(g, target, "carol", "pw-carol", f"--auth={mech}", "--tls=on", "--tls-starttls=on",
             "--tls-certcheck=off")
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(strip_client_headers(m) for m in delivered(target)) == sorted([MSG1, MSG2])
    assert g.sql("SELECT method, tls FROM relay_grants") == [("sasl-" + mech, 1)]


def test_mpop_plain_refused_without_tls(make_gateway, tmp_path):
    g = make_gateway(overrides={"auth": {"plaintext": "tls-only", "loopback_is_secure": False}})
    stock(g, "carol", "pw-carol")
    r = mpop(g, tmp_path / "m", "carol", "pw-carol", "--auth=plain", "--tls=off")
    assert r.returncode != 0
    assert len(g.messages("carol")) == 2
    assert g.sql("SELECT count(*) FROM relay_grants") == [(0,)]
