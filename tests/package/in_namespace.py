"""Run by test_package.py as `unshare -m -n python3 in_namespace.py WORK DEB`:
the package installed with dpkg, started as its unit says, used, reloaded,
stopped and purged, all inside this mount and network namespace, where /etc,
/usr and /var are overlays whose changes land in WORK and /run is empty (no
host systemd to talk to). Stops at the first failed step; prints ALL OK."""
import json
import os
import poplib
import pwd
import resource
import shlex
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

work, deb = Path(sys.argv[1]), Path(sys.argv[2])


def sh(*cmd, input=None, check=True, **kw):
    r = subprocess.run([str(c) for c in cmd], input=input, capture_output=True, text=True, timeout=120, **kw)
    if check and r.returncode != 0:
        sys.exit(f"FAILED: {' '.join(map(str, cmd))} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def step(name):
    print("step:", name, flush=True)


step("overlays on /etc /usr /var, tmpfs on /run")
for d in ("etc", "usr", "var"):
    (work / f"{d}.up").mkdir()
    (work / f"{d}.work").mkdir()
    sh("mount", "-t", "overlay", "overlay", "-o",
       f"lowerdir=/{d},upperdir={work}/{d}.up,workdir={work}/{d}.work", f"/{d}")
sh("mount", "-t", "tmpfs", "tmpfs", "/run")
# Never go on to dpkg unless every directory it writes is one of ours.
for d in ("/etc", "/usr", "/var"):
    fstype = sh("findmnt", "-n", "-o", "FSTYPE", d).stdout.strip()
    if fstype != "overlay":
        sys.exit(f"FAILED: {d} is {fstype}, not the overlay: refusing to install")
Path("/etc/.popgate-namespace-marker").write_text("only in the namespace\n")
sh("ip", "link", "set", "lo", "up")

step("dpkg -i")
sh("dpkg", "-i", deb)
pw = pwd.getpwnam("popgate")
for d, mode in (("/var/lib/popgate", 0o750), ("/var/log/popgate", 0o750)):
    st = os.stat(d)
    assert (st.st_uid, st.st_mode & 0o7777) == (pw.pw_uid, mode), (d, st)
db = Path("/var/lib/popgate/popgate.db")
assert db.exists() and db.stat().st_uid == pw.pw_uid, "postinst did not make the database as popgate"
assert os.access("/usr/sbin/popgate", os.X_OK)

step("logrotate accepts the packaged file")
r = sh("logrotate", "--debug", "--state", work / "logrotate.state", "/etc/logrotate.d/popgate")
assert "error" not in (r.stdout + r.stderr).lower(), r.stdout + r.stderr

step("check-config without -c, as root: reads /etc/popgate/popgate.toml, checks as popgate")
r = sh("popgate", "check-config")
assert r.stdout.strip() == "configuration OK (6 listeners)", r.stdout
# The shipped http listener has no api_key_file: Dovecot reports are refused.
assert "note: listener 'http' has no api_key_file" in r.stderr, r.stderr

step("start as the unit says")
unit = {}
for line in Path("/lib/systemd/system/popgate.service").read_text().splitlines():
    if "=" in line and not line.startswith("#"):
        k, v = line.split("=", 1)
        unit.setdefault(k, []).append(v)
assert unit["User"] == ["popgate"] and unit["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
# systemd sets LimitNOFILE as root; here the most this container allows.
limit = min(int(unit["LimitNOFILE"][0]), resource.getrlimit(resource.RLIMIT_NOFILE)[1])
as_unit = ["setpriv", "--reuid=popgate", "--regid=popgate", "--clear-groups", "--no-new-privs",
           "--inh-caps=+net_bind_service", "--ambient-caps=+net_bind_service",
           "--bounding-set=-all,+net_bind_service"]
# A soft limit below the unit's: the daemon raises it itself.
wrap = ["prlimit", f"--nofile=1024:{limit}", "--"] + as_unit
sh(*wrap, *shlex.split(unit["ExecStartPre"][0]), cwd=unit["WorkingDirectory"][0])
journal = open(work / "journal", "w+")
daemon = subprocess.Popen(wrap + shlex.split(unit["ExecStart"][0]), cwd=unit["WorkingDirectory"][0],
                          stdout=journal, stderr=subprocess.STDOUT)


def log():
    return (work / "journal").read_text(errors="replace")


def wait_for(pred, what, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        if daemon.poll() is not None:
            sys.exit(f"FAILED: popgate exited {daemon.returncode} waiting for {what}:\n{log()}")
        time.sleep(0.05)
    sys.exit(f"FAILED: no {what}:\n{log()}")


def port_open(p):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", p)) == 0


wait_for(lambda: all(port_open(p) for p in (110, 995, 25, 587, 465)), "listeners on 110 995 25 587 465")
assert f"limits nofile raised from=1024 to={limit}" in log(), log()
assert "tls self-signed certificate created cert=/var/lib/popgate/tls/cert.pem" in log(), log()
status = Path(f"/proc/{daemon.pid}/status").read_text()
assert f"Uid:\t{pw.pw_uid}\t{pw.pw_uid}" in status, status

step("an administrator adds a user as root; POP3 login grants; SMTP relays")
sh("popgate", "user", "add", "alice", "--scheme", "sha512-crypt", input="secret\n")
m = poplib.POP3("127.0.0.1", 110, timeout=10)
m.user("alice")
m.pass_("secret")
m.quit()
grants = json.loads(sh("popgate", "grant", "list", "--json").stdout)
assert [(g["address"], g["user"]) for g in grants] == [("127.0.0.1", "alice")], grants
with smtplib.SMTP("127.0.0.1", 25, timeout=10) as s:
    s.sendmail("alice@localhost", ["bob@example.org"], b"Subject: packaged\r\n\r\nrelayed\r\n")
dropped = list(Path("/var/lib/popgate/relay-drop/new").iterdir())
assert len(dropped) == 1 and dropped[0].stat().st_uid == pw.pw_uid, dropped
# The root-run commands left the database files popgate's (SQLite hands them over).
for f in Path("/var/lib/popgate").glob("popgate.db*"):
    assert f.stat().st_uid == pw.pw_uid, f

step("SIGHUP reloads")
daemon.send_signal(signal.SIGHUP)
wait_for(lambda: "reload done" in log(), "reload done")
assert port_open(110)

step("SIGTERM stops cleanly")
daemon.send_signal(signal.SIGTERM)
assert daemon.wait(30) == 0, log()
assert "Too many open files" not in log() and " error " not in log(), log()

step("dpkg --purge")
sh("dpkg", "--purge", "popgate")
for gone in ("/usr/sbin/popgate", "/etc/popgate", "/var/lib/popgate", "/var/log/popgate",
             "/lib/systemd/system/popgate.service", "/etc/logrotate.d/popgate"):
    assert not os.path.exists(gone), gone
assert sh("dpkg-query", "-W", "popgate", check=False).returncode != 0
print("ALL OK", flush=True)
