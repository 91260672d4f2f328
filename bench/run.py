#!/usr/bin/env python3
"""popgate benchmark: one command, popgate side by side with Dovecot and Postfix.

    python3 bench/run.py                      # build, set up, 3 rounds x 5 s, print the table
    python3 bench/run.py --rounds 5 --duration 10 --only pop3-login-apop,smtp-relay
    python3 bench/run.py --no-compare         # popgate alone

Everything lives in a temporary directory (--workdir to keep it); servers listen
on 127.0.0.1 only; Dovecot and Postfix run from config files in that directory
(dovecot -c, postfix -c), never from /etc. See bench/README.md.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build", "release")
POPGATE = os.path.join(BUILD, "popgate")
LOAD = os.path.join(BUILD, "bench", "popgate_load")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def sh(cmd, **kw):
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


# ---------------------------------------------------------------- /proc readings
def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st[st.rfind(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(pids):
    kids = children_map()
    out, todo = [], list(pids)
    while todo and len(out) < 100000:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


CLK = os.sysconf("SC_CLK_TCK")


def tree_cpu(pids):
    """CPU seconds of a process tree: live processes' own time plus the time of
    the children they reaped (cutime/cstime), so exited workers count once."""
    total = 0
    for p in tree(pids):
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rfind(")") + 2:].split()
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / CLK


def tree_mem(pids):
    """(sum of VmHWM, sum of Pss) in MB over the live tree."""
    hwm = pss = 0
    for p in tree(pids):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            continue
    return hwm / 1024, pss / 1024


# ---------------------------------------------------------------- setup
def build(args):
    if args.no_build:
        return
    if not os.path.exists(os.path.join(BUILD, "build.ninja")) or \
            "POPGATE_BENCH:BOOL=ON" not in open(os.path.join(BUILD, "CMakeCache.txt")).read():
        sh(["cmake", "--preset", "release", "-DPOPGATE_BENCH=ON"], cwd=ROOT, stdout=subprocess.DEVNULL)
    sh(["cmake", "--build", "--preset", "release", "-j", str(args.jobs), "--target", "popgate", "popgate_load"],
       cwd=ROOT, stdout=subprocess.DEVNULL)


def install_comparison():
    """Dovecot and Postfix from Debian, if missing. Services are not started
    (policy-rc.d) nor configured system-wide ('No configuration')."""
    need = []
    if not shutil.which("dovecot"):
        need.append("dovecot-pop3d")
    if not os.path.exists("/usr/sbin/smtp-sink") or not os.path.exists("/usr/sbin/postfix"):
        need += ["postfix"]
    if not os.path.exists("/usr/lib/postfix/postfix-sqlite.so"):
        need += ["postfix-sqlite"]
    # the strongest references: Dovecot's SQL passdb (crypt in auth workers),
    # Postfix's fastest read-only grant maps
    if not os.path.exists("/usr/lib/dovecot/modules/auth/libdriver_sqlite.so"):
        need += ["dovecot-sqlite"]
    for m in ("lmdb", "cdb"):
        if not os.path.exists(f"/usr/lib/postfix/postfix-{m}.so"):
            need += [f"postfix-{m}"]
    if not need:
        return True
    if os.geteuid() != 0:
        log("not root: cannot install", need)
        return False
    log("installing", need)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["debconf-set-selections"], input=b"postfix postfix/main_mailer_type select No configuration\n")
    # invoke-rc.d asks policy-rc.d: 101 = do not start the system service (one already there is left alone)
    policy = "/usr/sbin/policy-rc.d"
    own_policy = not os.path.exists(policy)
    if own_policy:
        with open(policy, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
    try:
        r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + need, env=env,
                           stdout=subprocess.DEVNULL)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env)
            r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + need, env=env,
                               stdout=subprocess.DEVNULL)
    finally:
        if own_policy:
            os.unlink(policy)
    return r.returncode == 0


def make_users(w, n_crypt, n_plain):
    """c00000..: SHA512-crypt hashes (the same on both sides); p00000..: {PLAIN}
    (APOP secret on both sides). users-*.txt are the generator's name:password lines."""
    crypt_pw = [f"pw-c{i:05d}" for i in range(n_crypt)]
    src = os.path.join(w, "crypt-passwords.txt")
    with open(src, "w") as f:
        f.write("\n".join(crypt_pw) + "\n")
    hashes = sh(["openssl", "passwd", "-6", "-in", src], capture_output=True, text=True).stdout.split()
    assert len(hashes) == n_crypt
    with open(os.path.join(w, "users-crypt.txt"), "w") as f:
        for i in range(n_crypt):
            f.write(f"c{i:05d}:{crypt_pw[i]}\n")
    with open(os.path.join(w, "users-plain.txt"), "w") as f:
        for i in range(n_plain):
            f.write(f"p{i:05d}:pw-p{i:05d}\n")
    rows = [(f"c{i:05d}", f"{{SHA512-CRYPT}}{hashes[i]}") for i in range(n_crypt)]
    rows += [(f"p{i:05d}", f"{{PLAIN}}pw-p{i:05d}") for i in range(n_plain)]
    with open(os.path.join(w, "passwd"), "w") as f:
        f.writelines(f"{u}:{p}\n" for u, p in rows)
    # The same lines as a table for Dovecot's SQL passdb (its strongest reference, see DOVECOT_PASSDB)
    import sqlite3
    db = sqlite3.connect(os.path.join(w, "dc-users.db"))
    db.execute("CREATE TABLE users (user TEXT PRIMARY KEY NOT NULL, password TEXT NOT NULL) WITHOUT ROWID")
    db.executemany("INSERT INTO users VALUES (?, ?)", rows)
    db.commit()
    db.close()
    os.chmod(os.path.join(w, "dc-users.db"), 0o644)
    with open(os.path.join(w, "dc-sql.conf"), "w") as f:
        f.write(f"driver = sqlite\nconnect = {w}/dc-users.db\n"
                "password_query = SELECT user, password FROM users WHERE user = '%u'\n")
    return hashes[0], crypt_pw[0]


def message(size):
    head = ("From: <sender@example.org>\r\nTo: <rcpt@localhost>\r\nSubject: bench\r\n"
            "Message-ID: <bench@example.org>\r\n\r\n")
    line = "y" * 76 + "\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    return (head + body).encode()


def fill_maildirs(base, prefix, n, msg, owner=None):
    """One message in new/ of each user's Maildir (tmp/new/cur); msg None:
    the Maildirs only, as an existing site has them."""
    for i in range(n):
        d = os.path.join(base, f"{prefix}{i:05d}")
        for s in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(d, s), exist_ok=True)
        if msg is None:
            continue
        with open(os.path.join(d, "new", f"1700000000.M{i}P1.bench"), "wb") as f:
            f.write(msg)
    if owner:
        sh(["chown", "-R", owner, base])


def clear_maildirs(base):
    if os.path.isdir(base):
        shutil.rmtree(base)


POPGATE_CONF = """
[server]
hostname = "bench.localhost"
threads = {threads}
[[listener]]
name = "pop3"
protocol = "pop3"
address = "127.0.0.1"
port = 0
tls = "starttls"
[[listener]]
name = "pop3s"
protocol = "pop3"
address = "127.0.0.1"
port = 0
tls = "implicit"
[[listener]]
name = "smtp"
protocol = "smtp"
address = "127.0.0.1"
port = 0
tls = "starttls"
[[listener]]
name = "smtps"
protocol = "smtp"
address = "127.0.0.1"
port = 0
tls = "implicit"
[tls]
cert_file = "{w}/tls/ec.pem"
key_file = "{w}/tls/ec.key"
second_cert_file = "{w}/tls/rsa.pem"
second_key_file = "{w}/tls/rsa.key"
self_signed = false
[storage]
database = "{db}"
[mail]
maildir = "{w}/pg-mail/%u"
local_domains = ["localhost"]
relay_drop = "{w}/pg-relay-drop"
[relay]
upstream_host = "127.0.0.1"
upstream_port = {sink_port}
upstream_starttls = "none"
purge_interval = 3600
[auth]
plaintext = "always"
failure_delay_ms = 0
max_failures_per_ip = 1000000
credential_cache_ttl = {cache}
[limits]
max_sessions = 100000
max_sessions_per_ip = 100000
max_connections_per_minute = 0
[log]
level = "warn"
file = "{w}/{tag}.log"
"""


CACHE_TTL = 300  # auth.credential_cache_ttl of the popgate-cache instance


class Popgate:
    """One popgate instance. tag names its config, log, ready file and the table
    column; db its SQLite file (instances may share one; only one runs load at a time)."""

    def __init__(self, w, args, sink, tag="popgate", db="popgate.db", cache=None):
        self.w, self.args, self.sink, self.name = w, args, sink, tag
        self.db = os.path.join(w, db)
        self.cache_ttl = args.credential_cache if cache is None else cache
        self.warmed_at = {}  # users file -> when warm_cache ran
        self.conf = os.path.join(w, f"{tag}.toml")
        with open(self.conf, "w") as f:
            f.write(POPGATE_CONF.format(w=w, db=self.db, tag=tag, sink_port=sink.port, threads=args.threads,
                                        cache=self.cache_ttl))
        self.proc = None

    def cli(self, *a, **kw):
        return sh([POPGATE, "-c", self.conf] + list(a), capture_output=True, text=True, **kw)

    def setup(self, n_grants, n_networks):
        self.cli("db", "migrate")
        self.cli("user", "import", os.path.join(self.w, "passwd"))
        sql = grants_sql(n_grants, n_networks, with_networks=True)
        sh(["sqlite3", self.db], input=sql, text=True, stdout=subprocess.DEVNULL)

    def start(self):
        ready = os.path.join(self.w, f"{self.name}.ready")
        err = os.path.join(self.w, f"{self.name}.err")
        if os.path.exists(ready):
            os.unlink(ready)
        self.proc = subprocess.Popen([POPGATE, "-c", self.conf, "serve", "--ready-file", ready],
                                     cwd=self.w, stdout=subprocess.DEVNULL, stderr=open(err, "w"),
                                     preexec_fn=raise_nofile)
        end = time.time() + 30
        while time.time() < end and not os.path.exists(ready):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: " + open(err).read())
            time.sleep(0.05)
        time.sleep(0.05)
        if not os.path.exists(ready):
            raise RuntimeError(f"{self.name} not ready after 30 s; see {err}")
        ports = json.load(open(ready))
        self.pop_port, self.smtp_port = ports["pop3"], ports["smtp"]
        self.pop3s_port, self.smtps_port = ports["pop3s"], ports["smtps"]
        self.pids = [self.proc.pid]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def raise_nofile():
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if PIN:
        os.sched_setaffinity(0, PIN[0])


# --pin: the servers on the first CPU set, the load generator and the smtp-sinks on the second
PIN = None


def client_side():
    if PIN:
        os.sched_setaffinity(0, PIN[1])


def sink_side():
    raise_nofile()
    client_side()


def make_certs(w):
    """The bench's certificates, the same files for popgate, Dovecot and Postfix:
    ECDSA P-256 and RSA-2048, self-signed. Every server holds both; the load
    generator's --cert picks one (signature algorithms / cipher suites) and
    checks it got it."""
    d = os.path.join(w, "tls")
    os.makedirs(d, exist_ok=True)
    for name, key in (("ec", ["ec", "-pkeyopt", "ec_paramgen_curve:P-256"]), ("rsa", ["rsa:2048"])):
        sh(["openssl", "req", "-x509", "-newkey", *key, "-nodes", "-keyout", f"{d}/{name}.key",
            "-out", f"{d}/{name}.pem", "-days", "30", "-subj", f"/CN=bench-{name}.localhost"],
           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def grants_sql(n_grants, n_networks, with_networks):
    """n_grants rows in 10.0.0.0/8 plus 127.0.0.1 (the granted bench client);
    127.0.0.3 stays ungranted. n_networks /24s in 100.64.0.0/10."""
    s = ["PRAGMA journal_mode=%s;" % ("WAL" if with_networks else "DELETE"), "BEGIN;",
         "INSERT OR REPLACE INTO relay_grants (address, user, method, expires_at) "
         "VALUES ('127.0.0.1', '', 'sql', unixepoch() + 864000);"]
    if n_grants:
        s.append(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d) "
            "INSERT OR IGNORE INTO relay_grants (address, user, method, expires_at) "
            "SELECT '10.' || ((i >> 16) & 255) || '.' || ((i >> 8) & 255) || '.' || (i & 255), '', 'sql', "
            "unixepoch() + 864000 FROM n;" % n_grants)
    if with_networks and n_networks:
        s.append(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < %d) "
            "INSERT OR IGNORE INTO allowed_networks (cidr) "
            "SELECT '100.' || (64 + (i >> 8)) || '.' || (i & 255) || '.0/24' FROM n;" % (n_networks - 1))
    s.append("COMMIT;")
    return "\n".join(s) + "\n"


DOVECOT_CONF = """
base_dir = {w}/{d}-run
state_dir = {w}/{d}-state
log_path = {w}/{tag}.log
info_log_path = /dev/null
protocols = pop3
listen = 127.0.0.1
# TLS: the bench's ECDSA certificate and the RSA one beside it (ssl_alt_cert),
# as popgate's tls.second_cert_file; STLS on the pop3 listener, POP3S on its own.
ssl = yes
ssl_cert = <{w}/tls/ec.pem
ssl_key = <{w}/tls/ec.key
ssl_alt_cert = <{w}/tls/rsa.pem
ssl_alt_key = <{w}/tls/rsa.key
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain apop
mail_location = maildir:{w}/dc-mail/%u
first_valid_uid = 8
last_valid_uid = 0
first_valid_gid = 8
pop3_uidl_format = %08Xu%08Xv
login_greeting = Dovecot ready.
{passdb}
userdb {{
  driver = static
  args = uid=mail gid=mail home={w}/dc-mail/%u
}}
{services}
service anvil {{
  client_limit = 15000
}}
service auth {{
  client_limit = 15000
}}
default_process_limit = 1000
default_client_limit = 15000
"""

# The strongest reference (bench/README.md "The strongest references"): the
# same users as an SQL table, so that password lookups and crypt(3) run in
# auth-worker processes on every core (passwd-file verifies in the one auth
# process: one core of crypt), and the auth cache, so that a cached user's
# APOP secret is answered in the auth process without a worker hop while
# USER/PASS and AUTH PLAIN still run crypt(3) for every login, in a worker
# (auth_cache_verify_password_with_worker): like popgate without
# credential_cache_ttl. The mail settings skip the \\Seen flag update (the
# rename new/ -> cur/ on RETR) and rescans of cur/. Each setting's measured
# effect is in bench/README.md.
DOVECOT_PASSDB = """passdb {{
  driver = sql
  args = {w}/dc-sql.conf
}}
auth_cache_size = 64M
auth_cache_ttl = 1 hour
auth_cache_negative_ttl = 1 hour
auth_cache_verify_password_with_worker = yes
auth_worker_max_count = {workers}
pop3_no_flag_updates = yes
maildir_very_dirty_syncs = yes
mail_max_userip_connections = 0
verbose_proctitle = no
service auth-worker {{
  process_min_avail = {cores}
}}"""

# --dovecot-classic: round 1's reference (passwd-file read by the auth process, no cache).
DOVECOT_PASSDB_CLASSIC = """passdb {{
  driver = passwd-file
  args = {w}/passwd
}}"""

# The pop3-login listeners, the same in both modes.
DOVECOT_LISTENERS = """
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {sport}
    ssl = yes
  }}"""

# High-performance login mode: long-lived pop3-login processes, one per core, kept warm.
DOVECOT_HIGH_PERF = """
service pop3-login {{""" + DOVECOT_LISTENERS + """
  service_count = 0
  process_min_avail = {cores}
  client_limit = 15000
  vsz_limit = 1G
}}
service pop3 {{
  process_limit = 1000
  client_limit = 1
  process_min_avail = {cores}
  # Mail processes reused too (all users share uid mail): without this every
  # login forks a fresh pop3 process, which on a small VM costs more than the
  # login itself.
  service_count = 0
}}
"""

# Dovecot's default login mode: one pop3-login process per connection, nothing pre-forked.
DOVECOT_DEFAULT_MODE = """
service pop3-login {{""" + DOVECOT_LISTENERS + """
  service_count = 1
}}
"""


class Dovecot:
    """One Dovecot instance: tag names its config, log and table column, d its
    base_dir/state_dir prefix; services is DOVECOT_HIGH_PERF or DOVECOT_DEFAULT_MODE.
    Instances share the passwd file and the dc-mail Maildirs."""

    def __init__(self, w, args, tag="dovecot", d="dc", services=DOVECOT_HIGH_PERF):
        self.w, self.name, self.d = w, tag, d
        self.port, self.sport = free_port(), free_port()
        self.conf = os.path.join(w, f"{tag}.conf")
        os.makedirs(os.path.join(w, f"{d}-run"), exist_ok=True)
        os.makedirs(os.path.join(w, f"{d}-state"), exist_ok=True)
        cores = os.cpu_count() or 2
        svc = services.format(port=self.port, sport=self.sport, cores=cores)
        passdb = (DOVECOT_PASSDB_CLASSIC if args.dovecot_classic else DOVECOT_PASSDB).format(
            w=w, cores=cores, workers=args.dovecot_workers)
        with open(self.conf, "w") as f:
            f.write(DOVECOT_CONF.format(w=w, d=d, tag=tag, services=svc, passdb=passdb))
        self.pids = []
        # the auth cache (strongest mode) is filled before the first measured run
        self.cache_ttl = 0 if args.dovecot_classic else 3600
        self.warmed_at = {}  # users file -> when warm_cache ran

    def start(self):
        sh(["dovecot", "-c", self.conf], preexec_fn=raise_nofile, stdin=subprocess.DEVNULL,
           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_port(self.port):
            raise RuntimeError(f"{self.name} did not listen; see " + os.path.join(self.w, f"{self.name}.log"))
        pidf = os.path.join(self.w, f"{self.d}-run", "master.pid")
        for _ in range(50):
            if os.path.exists(pidf):
                break
            time.sleep(0.1)
        self.pids = [int(open(pidf).read())]
        self.pop_port, self.pop3s_port = self.port, self.sport

    def stop(self):
        subprocess.run(["dovecot", "-c", self.conf, "stop"], stderr=subprocess.DEVNULL)
        for _ in range(100):
            if not self.pids or not os.path.exists(f"/proc/{self.pids[0]}"):
                break
            time.sleep(0.1)


POSTFIX_MAIN = """
compatibility_level = 3.6
queue_directory = {w}/pf-queue
data_directory = {w}/pf-data
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.localdomain
mydomain = localdomain
myorigin = $myhostname
mydestination =
mynetworks = 192.0.2.1/32
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
relayhost = [127.0.0.1]:{sink_port}
smtp_dns_support_level = disabled
disable_dns_lookups = yes
smtpd_peername_lookup = no
local_transport = error:no local delivery
alias_maps =
alias_database =
# The grants: --postfix-map (default cdb, built by postmap from the same
# unexpired grants; sqlite reads the live table). See bench/README.md.
smtpd_relay_restrictions = check_client_access {grant_map}, reject_unauth_destination
smtpd_recipient_restrictions =
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_recipient_rate_limit = 0
anvil_rate_time_unit = 60s
# Without this, a RCPT accepted and then abandoned (the decision scenario) waits 1 s for a flow token.
in_flow_delay = 0s
default_process_limit = 200
# An smtpd (cleanup, smtp ...) serves this many sessions before it exits and
# master forks a new one (default 100): fork+exec is dear on a small VM.
max_use = 1000000
smtp_destination_concurrency_limit = 50
default_destination_concurrency_limit = 50
maillog_file = {w}/postfix.log
maillog_file_prefixes = {w}
shlib_directory = /usr/lib/postfix
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
command_directory = /usr/sbin
# TLS: the bench's ECDSA and RSA certificates (both, as popgate and Dovecot
# hold them); STARTTLS on the smtpd port, SMTPS (wrapper mode) on its own.
smtpd_tls_chain_files = {w}/tls/ec.key, {w}/tls/ec.pem, {w}/tls/rsa.key, {w}/tls/rsa.pem
smtpd_tls_security_level = may
smtpd_tls_protocols = >=TLSv1.2
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_tls_loglevel = 0
# TLS 1.2 session-ID resumption across smtpd processes (tickets need no cache)
smtpd_tls_session_cache_database = btree:{w}/pf-data/smtpd_scache
"""

POSTFIX_MASTER = """
127.0.0.1:{port} inet n - n - - smtpd
127.0.0.1:{sport} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    name = "postfix"

    def __init__(self, w, args, sink):
        self.w, self.sink = w, sink
        self.port, self.sport = free_port(), free_port()
        self.dir = os.path.join(w, "pf-conf")
        os.makedirs(self.dir, exist_ok=True)
        self.map_type = args.postfix_map
        grant_map = f"sqlite:{w}/pf-grants.cf" if self.map_type == "sqlite" else f"{self.map_type}:{w}/pf-grants"
        with open(os.path.join(self.dir, "main.cf"), "w") as f:
            f.write(POSTFIX_MAIN.format(w=w, sink_port=sink.port, grant_map=grant_map))
        with open(os.path.join(self.dir, "master.cf"), "w") as f:
            f.write(POSTFIX_MASTER.format(port=self.port, sport=self.sport))
        with open(os.path.join(w, "pf-grants.cf"), "w") as f:
            f.write(f"dbpath = {w}/pf-grants.db\n"
                    "query = SELECT 'OK' FROM relay_grants WHERE address = '%s' AND expires_at > unixepoch()\n")
        self.pids = []

    def setup(self, n_grants):
        db = os.path.join(self.w, "pf-grants.db")
        sql = ("CREATE TABLE relay_grants (address TEXT PRIMARY KEY NOT NULL, user TEXT NOT NULL DEFAULT '', "
               "method TEXT NOT NULL DEFAULT 'sql', expires_at INTEGER NOT NULL) WITHOUT ROWID;\n"
               + grants_sql(n_grants, 0, with_networks=False))
        sh(["sqlite3", db], input=sql, text=True, stdout=subprocess.DEVNULL)
        os.chmod(db, 0o644)
        if self.map_type != "sqlite":
            # the same unexpired grants as a read-only map: changes need a postmap run
            src = os.path.join(self.w, "pf-grants")
            with open(src, "w") as f:
                sh(["sqlite3", db, "SELECT address || ' OK' FROM relay_grants WHERE expires_at > unixepoch()"],
                   stdout=f)
            sh(["postmap", "-c", self.dir, f"{self.map_type}:{src}"])
            for suffix in (".db", ".cdb", ".lmdb"):
                if os.path.exists(src + suffix):
                    os.chmod(src + suffix, 0o644)
        os.chmod(self.w, 0o755)
        for d in ("pf-queue", "pf-data"):
            os.makedirs(os.path.join(self.w, d), exist_ok=True)
        sh(["chown", "postfix", os.path.join(self.w, "pf-data")])

    def start(self):
        env = dict(os.environ, MAIL_CONFIG=self.dir)
        sh(["postfix", "-c", self.dir, "set-permissions"], env=env, stdout=subprocess.DEVNULL,
           stderr=subprocess.DEVNULL, check=False)
        sh(["postfix", "-c", self.dir, "start"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
           stderr=subprocess.DEVNULL,
           preexec_fn=raise_nofile)
        if not wait_port(self.port):
            raise RuntimeError("postfix did not listen; see " + os.path.join(self.w, "postfix.log"))
        pidf = os.path.join(self.w, "pf-queue", "pid", "master.pid")
        self.pids = [int(open(pidf).read().split()[0])]
        self.smtp_port, self.smtps_port = self.port, self.sport

    def stop(self):
        env = dict(os.environ, MAIL_CONFIG=self.dir)
        subprocess.run(["postfix", "-c", self.dir, "stop"], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        for _ in range(100):
            if not self.pids or not os.path.exists(f"/proc/{self.pids[0]}"):
                break
            time.sleep(0.1)

    def queue_empty(self, timeout=30):
        """Wait until the queue has drained to the sink."""
        end = time.time() + timeout
        while time.time() < end:
            n = 0
            for d in ("incoming", "active", "deferred", "maildrop"):
                for _, _, files in os.walk(os.path.join(self.w, "pf-queue", d)):
                    n += len(files)
            if n == 0:
                return True
            time.sleep(0.2)
        return False


class Sink:
    """Postfix's smtp-sink on a loopback port; -c counters go to a file."""

    def __init__(self, w, name):
        self.port = free_port()
        self.out = os.path.join(w, f"sink-{name}.out")
        self.proc = subprocess.Popen(["smtp-sink", "-c", "-u", "postfix", f"127.0.0.1:{self.port}", "1024"],
                                     stdout=open(self.out, "w"), stderr=subprocess.STDOUT, preexec_fn=sink_side)
        if not wait_port(self.port):
            raise RuntimeError("smtp-sink did not listen")

    def messages(self):
        # -c writes "sess=N quit=N mesg=N\r" after every event; keep the last
        try:
            with open(self.out, "rb") as f:
                f.seek(max(0, os.path.getsize(self.out) - 400))
                data = f.read().decode(errors="replace")
        except OSError:
            return 0
        nums = re.findall(r"mesg=(\d+)", data)
        return int(nums[-1]) if nums else 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


class Floor(Sink):
    """The zero-work server: smtp-sink answering the generator itself, with
    no relay, no lookup, no log and no upstream (one event-driven process, as
    Postfix's own test tool). Its rate is what the generator, the kernel and
    the two cores allow any server on an SMTP row; a goal above it cannot be
    met on this machine. reject=True refuses RCPT (500), the denied rows."""

    def __init__(self, w, reject=False):
        self.name = "smtp-sink" + (" -f rcpt" if reject else "")
        self.port = free_port()
        self.out = os.path.join(w, f"floor{'-reject' if reject else ''}.out")
        self.proc = subprocess.Popen(["smtp-sink", "-u", "postfix"] + (["-f", "rcpt"] if reject else [])
                                     + [f"127.0.0.1:{self.port}", "1024"],
                                     stdout=open(self.out, "w"), stderr=subprocess.STDOUT, preexec_fn=raise_nofile)
        if not wait_port(self.port):
            raise RuntimeError("smtp-sink did not listen")
        self.pids = [self.proc.pid]
        self.smtp_port = self.port


# The goal of each SMTP row against Postfix (issue 16): the relay rows 3x, the decisions 5x.
def goal_factor(key):
    return 3 if "relay" in key else 5


# ---------------------------------------------------------------- running
def run_load(args, server, argv, timeout):
    before = tree_cpu(server.pids)
    t = time.time()
    r = subprocess.run([LOAD] + argv, capture_output=True, text=True, timeout=timeout, cwd=args.workdir_path,
                       preexec_fn=client_side)
    wall = time.time() - t
    after = tree_cpu(server.pids)
    hwm, pss = tree_mem(server.pids)
    try:
        res = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"popgate_load failed: {r.stderr.strip()}")
    res["server_cpu_s"] = after - before
    res["server_hwm_mb"] = hwm
    res["server_pss_mb"] = pss
    res["wall_s"] = wall
    return res


def run_idle(args, server, pop_port, smtp_port, n_pop, n_smtp, tls=False):
    """n_pop + n_smtp sessions held open after the greeting (tls: implicit-TLS
    ports, a full TLS 1.3 handshake each, ECDSA); PSS of the server's tree."""
    _, base_pss = tree_mem(server.pids)
    argv = [LOAD, "--scenario", "idle", "-c", "64", "-d", "3", "--idle-pop3", str(n_pop),
            "--idle-smtp", str(n_smtp), "--port", str(pop_port or 0), "--smtp-port", str(smtp_port or 0)]
    if tls:
        argv += ["--tls", "implicit", "--tls-version", "1.3", "--cert", "ec"]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=raise_nofile)
    line = p.stdout.readline()
    opened = int(line.split()[1]) if line.startswith("READY") else 0
    time.sleep(0.5)
    hwm, pss = tree_mem(server.pids)
    out, err = p.communicate(timeout=120)
    res = json.loads(out.strip().splitlines()[-1])
    res.update(opened=opened, server_pss_mb=pss, server_hwm_mb=hwm, base_pss_mb=base_pss,
               kb_per_session=(pss - base_pss) * 1024 / opened if opened else 0,
               ops_per_s=0, server_cpu_s=0)
    return res


def short_count(n):
    """1000000 -> 1M, 20000 -> 20k."""
    for div, unit in ((1000000, "M"), (1000, "k")):
        if n >= div and n % div == 0:
            return f"{n // div}{unit}"
    return str(n)


def scenarios(args):
    """(key, kind, popgate-side role, other-side role, argv). Roles: popgate,
    popgate-cache, popgate-10, dovecot, dovecot-1, postfix (see main)."""
    d = str(args.duration)
    S = []

    def add(key, kind, argv, other, mine="popgate"):
        S.append((key, kind, mine, other, argv))

    def login(auth, c, users):
        return ["--scenario", "pop3-login", "--auth", auth, "-c", str(c), "-d", d, "--users", users]

    for c in args.login_conc:
        add(f"pop3-login-user c={c}", "pop3", login("user", c, "users-crypt.txt"), "dovecot")
    for c in (8, 64):
        add(f"pop3-login-user+cache c={c}", "pop3", login("user", c, "users-crypt.txt"), "dovecot",
            mine="popgate-cache")
    for c in args.login_conc:
        add(f"pop3-login-apop c={c}", "pop3", login("apop", c, "users-plain.txt"), "dovecot")
    add("pop3-login-apop c=8 (dovecot default mode)", "pop3", login("apop", 8, "users-plain.txt"), "dovecot-1")
    add("pop3-login-plain c=8", "pop3", login("plain", 8, "users-crypt.txt"), "dovecot")
    add("pop3-retr-100k c=8", "pop3", ["--scenario", "pop3-poll", "--no-dele", "--auth", "apop", "-c", "8",
                                       "-d", d, "--users", "users-plain.txt"], "dovecot")
    add("pop3-poll c=16", "pop3-refill", ["--scenario", "pop3-poll", "--auth", "user", "-c", "16",
                                          "-d", d, "--users", "users-crypt.txt"], "dovecot")
    for c in args.relay_conc:
        add(f"smtp-relay-4k c={c}", "smtp", ["--scenario", "smtp-relay", "--size", "4", "-c", str(c),
                                             "-d", d, "--bind", "127.0.0.1"], "postfix")
    granted = ["--scenario", "smtp-decision", "--expect", "250", "-c", "50", "-d", d, "--bind", "127.0.0.1"]
    for c in args.decision_conc:
        add(f"smtp-decision-granted c={c}", "smtp", granted[:5] + [str(c)] + granted[6:], "postfix")
    add(f"smtp-decision-granted c=50 {short_count(args.grants)} vs 10 grants", "smtp", granted, "popgate-10")
    add("smtp-decision-denied c=50", "smtp", ["--scenario", "smtp-decision", "--expect", "554", "-c", "50",
                                              "-d", d, "--bind", "127.0.0.3"], "postfix")

    # TLS rows: every server holds both certificates; --cert picks one.
    def tls(mode, cert, ver, resume=False):
        return ["--tls", mode, "--cert", cert, "--tls-version", ver] + (["--resume"] if resume else [])

    relay4k = ["--scenario", "smtp-relay", "--size", "4", "-d", d, "--bind", "127.0.0.1"]
    for cert in ("ec", "rsa"):
        for ver in ("1.3", "1.2"):
            t = f"{cert}/tls{ver}"
            for c in (8, 64):
                add(f"pop3s-login-user {t} c={c}", "pop3s",
                    login("user", c, "users-crypt.txt") + tls("implicit", cert, ver), "dovecot")
            add(f"pop3s-login-plain {t} c=8", "pop3s", login("plain", 8, "users-crypt.txt") + tls("implicit", cert, ver),
                "dovecot")
            add(f"pop3s-login-apop {t} c=8", "pop3s", login("apop", 8, "users-plain.txt") + tls("implicit", cert, ver),
                "dovecot")
            add(f"stls-login-user {t} c=8", "pop3", login("user", 8, "users-crypt.txt") + tls("starttls", cert, ver),
                "dovecot")
            add(f"smtps-relay-4k {t} c=10", "smtps", relay4k + ["-c", "10"] + tls("implicit", cert, ver), "postfix")
            add(f"starttls-relay-4k {t} c=10", "smtp", relay4k + ["-c", "10"] + tls("starttls", cert, ver), "postfix")
    # Resumed handshakes: each worker offers the ticket (session) of its previous connection.
    add("pop3s-login-apop ec/tls1.3 resumed c=8", "pop3s",
        login("apop", 8, "users-plain.txt") + tls("implicit", "ec", "1.3", True), "dovecot")
    add("pop3s-login-user ec/tls1.3 resumed c=8", "pop3s",
        login("user", 8, "users-crypt.txt") + tls("implicit", "ec", "1.3", True), "dovecot")
    add("pop3s-login-apop ec/tls1.2 resumed c=8", "pop3s",
        login("apop", 8, "users-plain.txt") + tls("implicit", "ec", "1.2", True), "dovecot")
    add("smtps-relay-4k ec/tls1.3 resumed c=10", "smtps", relay4k + ["-c", "10"] + tls("implicit", "ec", "1.3", True),
        "postfix")
    if args.only:
        want = [x.strip() for x in args.only.split(",")]
        S = [s for s in S if any(s[0].startswith(x) for x in want)]
    return S


def warm_cache(args, pg, users_file="users-crypt.txt"):
    """Log every user of users_file in once, one client (users 0, 1, 2, ...
    each exactly once), so the popgate-cache instance (crypt users) or
    Dovecot's auth cache (crypt users, or the {PLAIN} users' APOP secrets)
    holds all of them; again when the oldest entries could expire before the
    next run ends."""
    if time.time() + args.duration + 30 < pg.warmed_at.get(users_file, 0.0) + pg.cache_ttl:
        return
    pg.warmed_at[users_file] = time.time()
    crypt = users_file == "users-crypt.txt"
    auth, n = ("user", args.users) if crypt else ("apop", args.plain_users)
    res = run_load(args, pg, ["--scenario", "pop3-login", "--auth", auth, "-c", "1", "-n", str(n),
                              "--users", users_file, "--port", str(pg.pop_port)], timeout=n / 20 + 60)
    log(f"  {pg.name} cache warmed: {res['ops']} {auth} logins in {res['wall_s']:.1f} s, err {res['errors']}"
        + (f" [{res['first_error']}]" if res["first_error"] else ""))


def start_other(servers, make):
    """A comparison server (make() builds it); on failure log and go on without it."""
    srv = None
    try:
        srv = make()
        servers.append(srv)
        srv.start()
        return srv
    except Exception as e:  # noqa: BLE001 - report and go on with popgate alone
        log(f"{srv.name if srv else 'server'} unavailable:", e)
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5, help="seconds per run")
    ap.add_argument("--users", type=int, default=10000, help="SHA512-crypt users (poller mix)")
    ap.add_argument("--plain-users", type=int, default=1000, help="{PLAIN}/APOP users")
    ap.add_argument("--grants", type=int, default=1000000)
    ap.add_argument("--networks", type=int, default=10000)
    ap.add_argument("--lag-trials", type=int, default=10000)
    ap.add_argument("--idle", type=int, default=10000, help="idle sessions (half POP3, half SMTP)")
    ap.add_argument("--login-conc", default="1,8,64")
    ap.add_argument("--relay-conc", default="1,10,50")
    ap.add_argument("--decision-conc", default="50", help="concurrencies of the smtp-decision-granted row")
    ap.add_argument("--pin", default="", metavar="SERVER_CPUS:CLIENT_CPUS",
                    help="taskset the servers to one CPU list and the generator and sinks to another, e.g. 0:1")
    ap.add_argument("--threads", type=int, default=0, help="popgate server.threads")
    ap.add_argument("--credential-cache", type=int, default=0, help="popgate auth.credential_cache_ttl")
    ap.add_argument("--dovecot-classic", action="store_true", help="round 1's Dovecot reference: passwd-file "
                    "in the auth process, no auth cache (default: the strongest, see bench/README.md)")
    ap.add_argument("--dovecot-workers", type=int, default=30, help="Dovecot auth_worker_max_count")
    ap.add_argument("--postfix-map", default="cdb", choices=["lmdb", "cdb", "hash", "sqlite"],
                    help="the grant map Postfix's check_client_access reads (sqlite: live, the others "
                    "built by postmap from the same unexpired grants)")
    ap.add_argument("--only", default="", help="comma-separated scenario name prefixes")
    ap.add_argument("--no-compare", action="store_true", help="popgate alone")
    ap.add_argument("--no-floor", action="store_true",
                    help="skip the zero-work server (smtp-sink answering the generator) on the SMTP rows")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--build-dir", default="", help="use popgate and bench/popgate_load from this build "
                    "(configured with -DPOPGATE_BENCH=ON) instead of building build/release")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--workdir", default="", help="keep everything here (default: a temp dir, removed)")
    ap.add_argument("--json", default="", help="write all raw results here")
    args = ap.parse_args()
    args.login_conc = [int(x) for x in args.login_conc.split(",")]
    args.relay_conc = [int(x) for x in args.relay_conc.split(",")]
    args.decision_conc = [int(x) for x in args.decision_conc.split(",")]
    if args.pin:
        global PIN
        cpus = [{int(c) for c in part.split(",")} for part in args.pin.split(":")]
        if len(cpus) != 2:
            ap.error("--pin SERVER_CPUS:CLIENT_CPUS, e.g. 0:1")
        PIN = (cpus[0], cpus[1])
    if not (1 <= args.rounds <= 50 and 0 < args.duration <= 600):
        ap.error("rounds in 1..50, duration in (0, 600]")

    if args.build_dir:
        global BUILD, POPGATE, LOAD
        BUILD = os.path.abspath(args.build_dir)
        POPGATE, LOAD = os.path.join(BUILD, "popgate"), os.path.join(BUILD, "bench", "popgate_load")
        args.no_build = True
    build(args)
    compare = not args.no_compare and install_comparison()
    w = args.workdir or tempfile.mkdtemp(prefix="popgate-bench-")
    os.makedirs(w, exist_ok=True)
    os.chmod(w, 0o755)
    args.workdir_path = w
    log("workdir", w)
    selected = scenarios(args)
    roles = {s[2] for s in selected} | {s[3] for s in selected}
    servers = []
    sinks = []
    results = []
    try:
        t0 = time.time()
        crypt_hash, crypt_pass = make_users(w, args.users, args.plain_users)
        make_certs(w)
        msg4k, msg100k = message(4096), message(100 * 1024)
        log(f"users made in {time.time() - t0:.1f} s")
        sink_pg = Sink(w, "popgate")
        sinks.append(sink_pg)
        pg = Popgate(w, args, sink_pg)
        t0 = time.time()
        pg.setup(args.grants, args.networks)
        log(f"popgate database ready ({args.grants} grants, {args.networks} networks) in {time.time() - t0:.1f} s")
        fill_maildirs(os.path.join(w, "pg-mail"), "p", args.plain_users, msg100k)
        fill_maildirs(os.path.join(w, "pg-mail"), "c", args.users, None)
        servers.append(pg)
        pg.start()
        pgc = pg10 = None
        if "popgate-cache" in roles:
            # same database and Maildirs as pg, verified-credential cache on
            pgc = Popgate(w, args, sink_pg, tag="popgate-cache", cache=CACHE_TTL)
            servers.append(pgc)
            pgc.start()
        if "popgate-10" in roles:
            # own database: 10 grants (plus 127.0.0.1), the same networks; no relay runs, sink shared
            pg10 = Popgate(w, args, sink_pg, tag="popgate-10", db="popgate-10.db")
            pg10.setup(10, args.networks)
            servers.append(pg10)
            pg10.start()
        dc = dc1 = pf = None
        if compare:
            fill_maildirs(os.path.join(w, "dc-mail"), "p", args.plain_users, msg100k, owner="mail:mail")
            fill_maildirs(os.path.join(w, "dc-mail"), "c", args.users, None, owner="mail:mail")
            dc = start_other(servers, lambda: Dovecot(w, args))
            if "dovecot-1" in roles:
                dc1 = start_other(servers, lambda: Dovecot(w, args, tag="dovecot-1", d="dc1",
                                                           services=DOVECOT_DEFAULT_MODE))
            try:
                sink_pf = Sink(w, "postfix")
                sinks.append(sink_pf)
                pf = Postfix(w, args, sink_pf)
                pf.setup(args.grants)
                servers.append(pf)
                pf.start()
            except Exception as e:  # noqa: BLE001
                log("postfix unavailable:", e)
                pf = None
        by_role = {"popgate": pg, "popgate-cache": pgc, "popgate-10": pg10,
                   "dovecot": dc, "dovecot-1": dc1, "postfix": pf}

        def refill(kind):
            # pop3-poll deletes: give every crypt user one new 4 KB message again
            if kind == "popgate":
                fill_maildirs(os.path.join(w, "pg-mail"), "c", args.users, msg4k)
            else:
                fill_maildirs(os.path.join(w, "dc-mail"), "c", args.users, msg4k, owner="mail:mail")

        def crypt_bound():
            """crypt(3) verifies/s with every core doing nothing else."""
            cr = subprocess.run([LOAD, "--scenario", "crypt", "-c", str(os.cpu_count() or 2), "-d",
                                 str(min(args.duration, 3)), "--crypt-hash", crypt_hash, "--crypt-pass", crypt_pass],
                                capture_output=True, text=True)
            return json.loads(cr.stdout.strip().splitlines()[-1])["ops_per_s"]

        # crypt(3) bound, measured in this run (and again beside each round
        # of the uncached USER/PASS rows: this VM's speed moves within a run)
        crypt_rate = crypt_bound()
        log(f"crypt(3) SHA512-crypt bound on {os.cpu_count()} cores: {crypt_rate:.0f} verifies/s")

        def floor_of(kind, theirs, argv):
            """The zero-work server for a plain SMTP row of popgate against
            Postfix, and the argv it runs with (it refuses with 500)."""
            if args.no_floor or kind != "smtp" or theirs != "postfix" or "--tls" in argv:
                return None, argv
            reject = "--expect" in argv and argv[argv.index("--expect") + 1] != "250"
            if reject not in floors:
                floors[reject] = Floor(w, reject)
                sinks.append(floors[reject])
            if reject:
                argv = list(argv)
                argv[argv.index("--expect") + 1] = "500"
            return floors[reject], argv

        floors = {}
        table = []
        for key, kind, mine, theirs, argv in selected:
            ours, other = by_role[mine], by_role[theirs]
            floor, floor_argv = floor_of(kind, theirs, argv)
            per_round = {"popgate": [], "other": [], "floor": [], "crypt": []}
            beside_crypt = (kind == "pop3" and mine == "popgate" and argv[:2] == ["--scenario", "pop3-login"]
                            and argv[argv.index("--auth") + 1] == "user")
            for r in range(args.rounds):
                if beside_crypt:
                    per_round["crypt"].append(crypt_bound())
                    log(f"  {key:28s} crypt(3)   round {r}: {per_round['crypt'][-1]:8.1f}/s")
                for who, srv in (("popgate", ours), ("other", other), ("floor", floor)):
                    if srv is None:
                        continue
                    if kind == "pop3-refill":
                        refill(srv.name)
                    if srv is pgc:
                        warm_cache(args, pgc)
                    elif isinstance(srv, Dovecot) and srv.cache_ttl and kind.startswith("pop3"):
                        warm_cache(args, srv, argv[argv.index("--users") + 1])
                    port = getattr(srv, {"pop3": "pop_port", "pop3-refill": "pop_port", "pop3s": "pop3s_port",
                                         "smtp": "smtp_port", "smtps": "smtps_port"}[kind])
                    sent_before = None
                    if who == "floor":
                        res = run_load(args, srv, floor_argv + ["--port", str(srv.port)], timeout=args.duration * 4 + 60)
                        res.update(server=srv.name, round=r, key=key)
                        results.append(res)
                        per_round[who].append(res)
                        log(f"  {key:28s} {srv.name:10s} round {r}: {res['ops_per_s']:8.1f}/s p99 {res['p99_ms']:.2f} ms "
                            f"err {res['errors']} server CPU {res['server_cpu_s']:.2f} s"
                            + (f" [{res['first_error']}]" if res['first_error'] else ""))
                        continue
                    if kind.startswith("smtp"):
                        sink = srv.sink
                        sent_before = sink.messages()
                    res = run_load(args, srv, argv + ["--port", str(port)], timeout=args.duration * 4 + 60)
                    if kind.startswith("smtp") and "relay" in key:
                        if srv is pf:
                            pf.queue_empty()
                        time.sleep(0.3)
                        res["sink_delta"] = sink.messages() - sent_before
                    res.update(server=srv.name, round=r, key=key)
                    results.append(res)
                    per_round[who].append(res)
                    log(f"  {key:28s} {srv.name:10s} round {r}: {res['ops_per_s']:8.1f}/s p99 {res['p99_ms']:.2f} ms "
                        f"err {res['errors']} server CPU {res['server_cpu_s']:.2f} s client CPU {res['client_cpu_s']:.2f} s"
                        + (f" sink +{res['sink_delta']}" if "sink_delta" in res else "")
                        + (f" [{res['first_error']}]" if res['first_error'] else ""))
            table.append((key, per_round, other.name if other else "-"))

        # lag: popgate only (Postfix has no POP-before-SMTP of its own)
        lag = None
        if args.lag_trials > 0:
            lag = run_load(args, pg, ["--scenario", "lag", "--auth", "apop", "-c", "8", "-n", str(args.lag_trials),
                                      "--users", "users-plain.txt", "--port", str(pg.pop_port),
                                      "--smtp-port", str(pg.smtp_port)], timeout=600)
            results.append(dict(lag, server="popgate", key="lag"))
        # idle: popgate POP3+SMTP, then POP3S+SMTPS; Dovecot POP3 (POP3S) half for comparison
        idle = []
        if args.idle > 0:
            half = args.idle // 2
            for tls in (False, True):
                r = run_idle(args, pg, pg.pop3s_port if tls else pg.pop_port, pg.smtps_port if tls else pg.smtp_port,
                             half, args.idle - half, tls=tls)
                idle.append((f"popgate ({'POP3S+SMTPS' if tls else 'POP3+SMTP'})", r))
                if dc:
                    idle.append((f"dovecot ({'POP3S' if tls else 'POP3'} only)",
                                 run_idle(args, dc, dc.pop3s_port if tls else dc.pop_port, None, half, 0, tls=tls)))
            results += [dict(r, server=name, key="idle") for name, r in idle]
    finally:
        for s in servers:
            try:
                s.stop()
            except Exception as e:  # noqa: BLE001
                log("stop:", e)
        for s in sinks:
            s.stop()
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
        if not args.workdir:
            shutil.rmtree(w, ignore_errors=True)

    # ---------------------------------------------------------------- table
    def med(xs):
        return statistics.median(xs) if xs else float("nan")

    print()
    print(f"popgate benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, "
          f"{args.rounds} rounds x {args.duration:g} s; crypt(3) SHA512-crypt bound {crypt_rate:.0f}/s")
    kw = max([30] + [len(t[0]) for t in table])  # scenario column
    ow = max([8] + [len(t[2]) for t in table])   # other-server column
    hdr = (f"{'scenario':{kw}s} {'popgate/s':>10s} {'p99 ms':>7s} {'CPU s':>6s} {'PSS MB':>6s} | {'other':{ow}s} "
           f"{'other/s':>9s} {'p99 ms':>7s} {'CPU s':>6s} {'PSS MB':>6s} | {'ratio':>6s} {'errors':>6s} {'gen CPU%':>8s}")
    print(hdr)
    print("-" * len(hdr))
    for key, pr, other in table:
        a, b = pr["popgate"], pr["other"]
        ratios = [x["ops_per_s"] / y["ops_per_s"] for x, y in zip(a, b) if y["ops_per_s"] > 0]
        errs = sum(x["errors"] for x in a) + sum(y["errors"] for y in b)
        gen = med([100 * x["client_cpu_s"] / x["seconds"] for x in a if x["seconds"] > 0])
        line = (f"{key:{kw}s} {med([x['ops_per_s'] for x in a]):10.0f} {med([x['p99_ms'] for x in a]):7.2f} "
                f"{med([x['server_cpu_s'] for x in a]):6.2f} {max(x['server_pss_mb'] for x in a):6.0f} | ")
        if b:
            line += (f"{other:{ow}s} {med([y['ops_per_s'] for y in b]):9.0f} {med([y['p99_ms'] for y in b]):7.2f} "
                     f"{med([y['server_cpu_s'] for y in b]):6.2f} {max(y['server_pss_mb'] for y in b):6.0f} | "
                     f"{med(ratios):6.2f}")
        else:
            line += f"{'-':{ow}s} {'':9s} {'':7s} {'':6s} {'':6s} | {'-':>6s}"
        line += f" {errs:6d} {gen:7.0f}%"
        print(line)
        if "resumed" in key:
            def share(rs):
                full, res = sum(x.get("tls_full", 0) for x in rs), sum(x.get("tls_resumed", 0) for x in rs)
                return f"{100 * res / (full + res):.0f}%" if full + res else "-"
            print(f"{'':{kw}s}   handshakes resumed: popgate {share(a)}" + (f", {other} {share(b)}" if b else ""))
        f = pr["floor"]
        if f:
            fr = med([x["ops_per_s"] for x in f])
            need = goal_factor(key) * med([y["ops_per_s"] for y in b]) if b else float("nan")
            print(f"{'':{kw}s}   zero-work server ({f[0]['server']}): {fr:.0f}/s, step p99 "
                  f"{med([x['step_p99_ms'] for x in f]):.2f} ms; popgate at {100 * med([x['ops_per_s'] for x in a]) / fr:.0f}% "
                  f"of it" + (f"; {goal_factor(key)}x {other} needs {need:.0f}/s = {100 * need / fr:.0f}% of it" if b else ""))
        c = pr["crypt"]
        if c:
            shares = [100 * x["ops_per_s"] / y for x, y in zip(a, c) if y > 0]
            print(f"{'':{kw}s}   crypt(3) bound beside each round: {med(c):.0f}/s; popgate at {med(shares):.0f}% of it "
                  f"(rounds: {', '.join(f'{s:.0f}%' for s in shares)})")
        if "relay" in key:
            sa = sum(x.get("sink_delta", 0) for x in a)
            sb = sum(y.get("sink_delta", 0) for y in b)
            print(f"{'':{kw}s}   sink got {sa} for {sum(x['ops'] for x in a)} popgate 250s"
                  + (f"; {sb} for {sum(y['ops'] for y in b)} {other} 250s" if b else ""))
    if lag:
        print(f"lag: {lag['ops']} trials, {lag['errors']} failures, POP3 +OK -> SMTP RCPT 250 "
              f"p50 {lag['step_p50_ms']:.2f} p99 {lag['step_p99_ms']:.2f} max {lag['step_max_ms']:.2f} ms"
              + (f" [{lag['first_error']}]" if lag["first_error"] else ""))
    for name, r in idle:
        print(f"idle {name}: {r['opened']} sessions open ({r['ops']} still alive), PSS {r['server_pss_mb']:.0f} MB, "
              f"{r['kb_per_session']:.1f} KB/session" + (f" [{r['first_error']}]" if r.get("first_error") else ""))


if __name__ == "__main__":
    main()
