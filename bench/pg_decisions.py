#!/usr/bin/env python3
"""RCPT relay decisions per second with the database on SQLite and on
PostgreSQL, side by side (bench/README.md, "PostgreSQL store").

One popgate per engine (the same config but storage.database), a private
PostgreSQL 15 on loopback (tests/support/private_postgres.py: as the
postgres user when run as root), one grant for 127.0.0.1, and
popgate_load's smtp-decision scenario: MAIL, then RCPT to a remote domain,
granted from 127.0.0.1 and denied from 127.0.0.9. Prints each round and the
medians. Run by hand:

    python3 bench/pg_decisions.py --popgate build/release/popgate --load build/release/bench/popgate_load
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests" / "support")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--popgate", required=True)
    ap.add_argument("--load", required=True, help="popgate_load")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=4)
    ap.add_argument("-c", "--concurrency", type=int, default=50)
    a = ap.parse_args()
    os.environ["POPGATE_BIN"] = str(Path(a.popgate).resolve())
    from popgate_test import Gateway  # noqa: E402  (reads POPGATE_BIN)
    from private_postgres import PrivatePostgres  # noqa: E402

    root = Path(tempfile.mkdtemp(prefix="popgate-pgbench-"))
    os.chmod(root, 0o755)  # the postgres user must reach its directory
    pg = PrivatePostgres(root / "pg").start()
    out = {}
    try:
        for engine, db in (("sqlite", None), ("postgresql", pg.create_database("bench"))):
            o = {"log": {"level": "warn"},
                 "limits": {"max_sessions_per_ip": 1000, "max_connections_per_minute": 0}}
            if db:
                o["storage"] = {"database": db}
            g = Gateway(root / engine, o, [{"name": "smtp", "protocol": "smtp", "tls": "none"}]).start()
            try:
                g.cli("grant", "add", "127.0.0.1")
                for kind, expect, source in (("granted", "250", "127.0.0.1"), ("denied", "554", "127.0.0.9")):
                    rows = []
                    for _ in range(a.rounds):
                        r = subprocess.run([a.load, "--scenario", "smtp-decision", "--port", str(g.port("smtp")),
                                            "-c", str(a.concurrency), "-d", str(a.duration), "--expect", expect,
                                            "--bind", source], capture_output=True, text=True, check=True)
                        row = json.loads(r.stdout.strip().splitlines()[-1])
                        assert row["errors"] == 0, row
                        rows.append(row)
                        print(engine, kind, f"{row['ops_per_s']:.0f}/s", f"rcpt p50 {row['step_p50_ms']} ms",
                              f"p99 {row['step_p99_ms']} ms", flush=True)
                    out[(engine, kind)] = rows
            finally:
                g.stop()
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"\nmedians of {a.rounds} x {a.duration:g} s at c={a.concurrency}:")
    for (engine, kind), rows in out.items():
        med = lambda k: statistics.median(r[k] for r in rows)  # noqa: E731
        print(f"  {engine:10} {kind:7} {med('ops_per_s'):8.0f}/s  RCPT p50 {med('step_p50_ms'):.3f} ms"
              f"  p99 {med('step_p99_ms'):.3f} ms")
    for kind in ("granted", "denied"):
        s = statistics.median(r["ops_per_s"] for r in out[("sqlite", kind)])
        p = statistics.median(r["ops_per_s"] for r in out[("postgresql", kind)])
        print(f"  {kind}: PostgreSQL {p / s:.0%} of SQLite")


if __name__ == "__main__":
    main()
