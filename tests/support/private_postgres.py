"""A private PostgreSQL 15 (Debian's package) for tests: initdb and pg_ctl in
a directory of the test's own, as an unprivileged user (`runuser -u
postgres` when the tests run as root, as CI does), listening on 127.0.0.1 on
an ephemeral port and on a Unix socket in that directory. Never the system
cluster, /etc/postgresql or /var/run/postgresql.

Who may connect: the superuser "postgres" over the Unix socket without a
password (trust); the login role "popgate", owner of the databases made by
create_database(), over TCP with scram-sha-256. Its password is in a pgpass
file (0600) that the URIs name (passfile=...), never in the URI itself.

    pg = PrivatePostgres(dir)
    pg.start()                        # initdb on first start; same port on a restart
    uri = pg.create_database("t1")    # postgresql://popgate@127.0.0.1:PORT/t1?passfile=...&connect_timeout=3
    rows = pg.psql("t1", "SELECT 1")  # [("1",)], as superuser; raises PsqlError on any error
    pg.stop(); pg.start()             # fault tests stop and restart it mid-test
    pg.uri("t1")

pytest: the session fixture `postgres_server` (one server per pytest run) and
the function fixture `pg_database` (a fresh database, its URI; `.dbname`);
both skip only when PostgreSQL 15 is not installed.

Command line, for CTest fixtures (tests/CMakeLists.txt, pg.start/pg.stop):
    python3 private_postgres.py start DIR   # DIR/uri.txt: URI of a fresh database popgate_unit
                                            # DIR/admin.txt: libpq conninfo of the superuser on it
    python3 private_postgres.py stop DIR    # stops the server and removes DIR
"""
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from popgate_test import free_port  # noqa: E402

PG_BIN = Path("/usr/lib/postgresql/15/bin")
RUN_AS = "postgres"      # made by the postgresql-15 package
SUPERUSER = "postgres"
ROLE = "popgate"
NULL = "\x1d"            # psql prints NULL as this (no value of ours holds it)

CONF = """
# popgate tests: a throwaway server, speed over durability.
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sock}'
max_connections = 100
shared_buffers = 16MB
fsync = off
synchronous_commit = off
full_page_writes = off
password_encryption = scram-sha-256
log_line_prefix = '%m [%p] %q%u@%d '
log_min_messages = warning
"""

HBA = """
local all all trust
host  all all 127.0.0.1/32 scram-sha-256
"""


class PsqlError(RuntimeError):
    pass


def installed():
    return (PG_BIN / "initdb").exists() and (PG_BIN / "pg_ctl").exists()


def _clean_env():
    """No PG* variable of the caller's leaks into our clients."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


class PrivatePostgres:
    def __init__(self, root):
        self.root = Path(root).resolve()
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.log_file = self.root / "postgres.log"
        self.pgpass = self.root / "pgpass"
        self.port_file = self.root / "port"
        self.as_root = os.geteuid() == 0
        # A restart keeps the port (URIs handed out stay valid).
        self.port = int(self.port_file.read_text()) if self.port_file.exists() else None
        self.password = None

    # -- running the server's own programs as the unprivileged user ---------
    def _run(self, *argv, check=True, timeout=120):
        cmd = [str(a) for a in argv]
        if self.as_root:
            cmd = ["runuser", "-u", RUN_AS, "--"] + cmd
        r = subprocess.run(cmd, env=_clean_env(), stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stdout}{r.stderr}\n{self.log()}")
        return r

    def log(self):
        try:
            return self.log_file.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def _prepare_dir(self):
        self.root.mkdir(parents=True, exist_ok=True)
        self.sock.mkdir(exist_ok=True)
        if self.as_root:
            for p in (self.root, self.sock):
                shutil.chown(p, RUN_AS, RUN_AS)
            os.chmod(self.root, 0o711)
            r = subprocess.run(["runuser", "-u", RUN_AS, "--", "test", "-w", str(self.root)])
            if r.returncode != 0:
                raise RuntimeError(f"the {RUN_AS} user cannot reach {self.root}: every directory above it "
                                   "needs search permission for others (o+x)")

    def _initdb(self):
        self._prepare_dir()
        self._run(PG_BIN / "initdb", "-D", self.data, "-U", SUPERUSER, "-E", "UTF8", "--no-locale",
                  "--no-sync", "--auth-local=trust", "--auth-host=scram-sha-256")
        self.port = free_port()
        self.port_file.write_text(str(self.port))
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(CONF.format(port=self.port, sock=self.sock))
        (self.data / "pg_hba.conf").write_text(HBA)

    def running(self):
        if not (self.data / "PG_VERSION").exists():
            return False
        return self._run(PG_BIN / "pg_ctl", "-D", self.data, "status", check=False).returncode == 0

    def start(self):
        fresh = not (self.data / "PG_VERSION").exists()
        if fresh:
            self._initdb()
        elif self.running():
            return self
        self._run(PG_BIN / "pg_ctl", "-D", self.data, "-l", self.log_file, "-w", "-t", "60", "start")
        if fresh:
            self.password = secrets.token_urlsafe(18)
            self.psql("postgres", f"CREATE ROLE {ROLE} LOGIN PASSWORD '{self.password}'")
            self.pgpass.write_text(f"127.0.0.1:{self.port}:*:{ROLE}:{self.password}\n")
            os.chmod(self.pgpass, 0o600)   # libpq ignores a passfile others may read
        return self

    def stop(self, mode="fast"):
        """pg_ctl stop; mode "immediate" is a crash (no shutdown checkpoint)."""
        if self.running():
            self._run(PG_BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop")

    # -- clients ------------------------------------------------------------
    def uri(self, dbname):
        return (f"postgresql://{ROLE}@127.0.0.1:{self.port}/{dbname}"
                f"?passfile={self.pgpass}&connect_timeout=3")

    def admin_conninfo(self, dbname):
        return f"host={self.sock} port={self.port} user={SUPERUSER} dbname={dbname}"

    def psql(self, dbname, sql, user=None, password=None, single_transaction=False):
        """Runs `sql` (one or more statements, psql meta-commands too) and
        returns the rows of what it printed as tuples of str (None for NULL).
        As the superuser over the socket; with `user`, as that role over TCP
        (popgate's password from the pgpass file, another's from `password`).
        Raises PsqlError with psql's message on the first error."""
        env = _clean_env()
        if user is None:
            target = ["-h", str(self.sock), "-U", SUPERUSER]
        else:
            target = ["-h", "127.0.0.1", "-U", user]
            if password is not None:
                env["PGPASSWORD"] = password
            else:
                env["PGPASSFILE"] = str(self.pgpass)
        cmd = [str(PG_BIN / "psql"), "-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1",
               "--field-separator=\x1f", "--record-separator-zero", "-P", f"null={NULL}",
               "-p", str(self.port), *target, "-d", dbname]
        if single_transaction:
            cmd.append("-1")
        r = subprocess.run(cmd + ["-f", "-"], input=sql, env=env, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise PsqlError(r.stderr.strip() or f"psql exited {r.returncode}")
        rows = []
        for rec in r.stdout.split("\0"):
            rec = rec.lstrip("\n")   # psql ends each result with a newline
            if rec:
                rows.append(tuple(None if v == NULL else v for v in rec.split("\x1f")))
        return rows

    def create_database(self, name):
        """A new empty database owned by popgate (an old one of that name is
        dropped first); its URI."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"database name {name!r}: lowercase letters, digits and _")
        self.psql("postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self.psql("postgres", f"CREATE DATABASE {name} OWNER {ROLE}")
        return self.uri(name)

    def drop_database(self, name):
        self.psql("postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def schema_files():
    """sql/postgresql/NNN_name.sql, in order: (version, name, path)."""
    src = os.environ.get("POPGATE_SOURCE_DIR") or str(Path(__file__).resolve().parents[2])
    out = []
    for f in sorted((Path(src) / "sql" / "postgresql").glob("[0-9][0-9][0-9]_*.sql")):
        number, name = f.stem.split("_", 1)
        out.append((int(number), name, f))
    return out


def apply_schema(pg, dbname, owner=ROLE, versions=range(5, 1000)):
    """What popgate's store does on an empty database: schema_migrations,
    then each file of sql/postgresql (005_initial.sql and those after it;
    those in `versions`, for an older schema) with its version row, in one
    transaction, as the popgate role (so popgate owns every object), or as
    the superuser with owner=SUPERUSER (an administrator's `db migrate`)."""
    sql = ("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
           " applied_at bigint NOT NULL DEFAULT extract(epoch from now())::bigint);\n")
    for version, name, path in schema_files():
        if version not in versions:
            continue
        sql += path.read_text() + f"\nINSERT INTO schema_migrations (version, name) VALUES ({version}, '{name}');\n"
    pg.psql(dbname, sql, user=None if owner == SUPERUSER else owner, single_transaction=True)


# -- pytest ------------------------------------------------------------------
try:
    import pytest
except ImportError:   # the command line below needs no pytest
    pytest = None

if pytest is not None:
    class PgURI(str):
        """A database URI that knows its database name."""
        dbname: str

    @pytest.fixture(scope="session")
    def postgres_server():
        if not installed():
            pytest.skip(f"PostgreSQL 15 is not installed ({PG_BIN}; deploy/install-deps.sh installs it)")
        d = Path(tempfile.mkdtemp(prefix="popgate-pg-"))
        pg = PrivatePostgres(d)
        try:
            pg.start()
            yield pg
        finally:
            pg.stop()
            shutil.rmtree(d, ignore_errors=True)

    @pytest.fixture
    def pg_database(postgres_server, request):
        """A fresh database on the session's server (started again if a test
        stopped it), owned by popgate; its URI, with `.dbname`."""
        pg = postgres_server
        pg.start()
        name = ("t_" + re.sub(r"[^a-z0-9_]", "_", request.node.name.lower()))[:50] + "_" + secrets.token_hex(3)
        uri = PgURI(pg.create_database(name))
        uri.dbname = name
        yield uri
        pg.start()
        pg.drop_database(name)


def main(argv):
    if len(argv) != 3 or argv[1] not in ("start", "stop"):
        print(f"usage: {argv[0]} start|stop DIR", file=sys.stderr)
        return 2
    d = Path(argv[2])
    if argv[1] == "start":
        if not installed():
            print(f"PostgreSQL 15 is not installed ({PG_BIN})", file=sys.stderr)
            return 1
        if d.exists():   # left over from a run that did not stop it
            PrivatePostgres(d).stop("immediate")
            shutil.rmtree(d)
        pg = PrivatePostgres(d).start()
        uri = pg.create_database("popgate_unit")
        (d / "uri.txt").write_text(uri + "\n")
        (d / "admin.txt").write_text(pg.admin_conninfo("popgate_unit") + "\n")
        return 0
    if d.exists():
        PrivatePostgres(d).stop()
        shutil.rmtree(d)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
