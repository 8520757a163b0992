#!/usr/bin/env python3
"""The empirical privacy audit at full size.

The same audit as tests/e2e/test_dp_audit.py (helpers in tests/dp_audit.py),
with more answers and, by default, the demo's healthcare data and policy:

1. starts a throwaway PostgreSQL (proxy.pgcluster.ThrowawayCluster) and
   loads the demo dataset (proxy.demo_data, seed 7; `--patients`, default
   400, as the test suite's healthcare fixture) into two databases, D and
   D'; D' gets one more patient, the adversary, with `--adversary-visits`
   visits (default 2,000), all in Cardiology, each costing 99,999,999.99
   (bounds: 0 to 50,000) and staying 100,000 nights (bounds: 0 to 30);
   runs `pgshroud setup` on both. The dataset's size changes nothing the
   audit can see (the noise and the adversary's shift do not depend on
   it), only the time per query;
2. starts pgshroud in this process with the real planner, the unchanged
   policies/examples/healthcare.yaml and an unlimited in-memory ledger;
3. as the demo's `analyst`, with `SET pgshroud.epsilon = 1` (the policy's
   per-query maximum), sends each query many times to each database
   (`--samples`; default 20,000, and 40,000 for the average), prepared
   once and executed in psycopg pipelines (every execution is a release
   of its own; D and D' on two connections at once), and bounds the
   achieved epsilon from below;
4. does it again with a broken mechanism: `Measurement.sensitivity`
   patched to return half, so the noise is calibrated for half the
   sensitivity and the true epsilon is twice the claim;
5. prints a table, claimed against lower-bounded epsilon per query, real and
   broken (`--json FILE` also writes it).

`--dataset small` runs the CI test's database and policy instead (100
people, 350 rows; tests/dp_audit.py). `--simulate R` does not use the wire:
it repeats the audit R times on answers drawn offline from the same release
code (PrivateRelease.finalize with a seeded generator, on raw totals the
bounded SQL returned), to estimate how often the audit would miss the
broken mechanism and how its bound spreads.

    .venv/bin/python bench/audit/run.py                              # demo data, 400 patients
    .venv/bin/python bench/audit/run.py --json bench/results/audit.json
    .venv/bin/python bench/audit/run.py --samples 2000                   # a quick look
    .venv/bin/python bench/audit/run.py --dataset small --simulate 100   # the CI audit's power, offline

Everything runs on loopback and is removed at exit. Needs the PostgreSQL
server binaries (proxy.pgcluster.find_pg_bindir).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import math
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

import psycopg
from psycopg.conninfo import make_conninfo

from pgshroud.policies.loader import load_policy
from pgshroud.proxy.commands.demo_data import load_demo_dataset
from pgshroud.proxy.commands.pgcluster import ThrowawayCluster
from pgshroud.proxy.commands.setup import run_setup
from pgshroud.proxy.ops.catalog import read_catalog
from pgshroud.rewriter.private import bounding
from tests import dp_audit as A

# All the adversary's visits in one department: bounding allows a person 50
# rows over all groups (5 groups x 10 rows), so all 50 land in that group,
# the largest shift of one cell there is.
ADVERSARY_DEPARTMENTS = ("Cardiology",)

# Answers per database (half to choose the event, half to test it). The
# average's loss is split between a noisy sum and a noisy count, so its
# telling events are rarer.
DEMO_SAMPLES = {"count": 20000, "sum": 20000, "grouped count": 20000, "avg": 40000}

DEMO_QUERIES = (
    A.AuditQuery("count", "SELECT count(*) FROM visits"),
    A.AuditQuery("sum", "SELECT sum(cost) FROM visits"),
    A.AuditQuery("grouped count", "SELECT department, count(*) FROM visits GROUP BY department", keys=1,
                 focus=ADVERSARY_DEPARTMENTS),
    A.AuditQuery("avg", "SELECT avg(cost) FROM visits"),
)


def demo_adversary(visits: int) -> str:
    departments = ", ".join(f"'{d}'" for d in ADVERSARY_DEPARTMENTS)
    return f"""
INSERT INTO patients
SELECT max(patient_id) + 1, 'Ada Versary', '999-99-9999', 'ada@example.com', '(555) 000-0000',
       date '1950-01-01', 'F', '99999', 'Nowhere', 'XX'
FROM patients;
INSERT INTO visits
SELECT (SELECT max(visit_id) FROM visits) + g, (SELECT max(patient_id) FROM patients),
       date '2024-06-01' + g % 365, 'I10', (ARRAY[{departments}])[1 + g % {len(ADVERSARY_DEPARTMENTS)}],
       99999999.99, 100000
FROM generate_series(1, {visits}) AS g;
ANALYZE patients, visits;
"""


@dataclass
class Setup:
    name: str
    policy: object
    user: str
    role: str
    queries: tuple[A.AuditQuery, ...]
    samples: dict[str, int]
    databases: dict[str, str]  # "d", "d_prime" -> database name
    description: str


def setup_demo(cluster: ThrowawayCluster, patients: int, adversary_visits: int) -> Setup:
    for role in ("admin", "analyst"):
        cluster.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{role}'")
    databases = {"d": "audit_d", "d_prime": "audit_d_prime"}
    for which, name in databases.items():
        cluster.execute(f"CREATE DATABASE {name} OWNER admin")
        load_demo_dataset(cluster.dsn(user="admin", password="admin", dbname=name), patients=patients)
        cluster.execute("GRANT SELECT ON patients, visits, labs, diagnoses TO analyst", dbname=name)
        status = run_setup(cluster.admin_dsn(name), key_env=None, key_file=None, rotate_key=False,
                           grant_to=["analyst"], out=io.StringIO())
        if status != 0:
            raise SystemExit(f"pgshroud setup failed on {name}")
        if which == "d_prime":
            cluster.execute(demo_adversary(adversary_visits), dbname=name)
    with resources.as_file(resources.files("pgshroud.policies") / "examples" / "healthcare.yaml") as path:
        policy = load_policy(path)
    rows = cluster.execute("SELECT count(*) FROM visits", dbname=databases["d"])[0][0]
    return Setup("demo", policy, "analyst", "analyst", DEMO_QUERIES, DEMO_SAMPLES, databases,
                 f"demo dataset, {patients:,} patients ({rows:,} visits); D' adds one patient with "
                 f"{adversary_visits:,} visits in {', '.join(ADVERSARY_DEPARTMENTS)} at cost 99,999,999.99; "
                 f"policies/examples/healthcare.yaml, role analyst (visits: 5 groups x 10 rows = 50 rows per person)")


def setup_small(cluster: ThrowawayCluster) -> Setup:
    databases = {"d": "audit_d", "d_prime": "audit_d_prime"}
    A.create_audit_databases(lambda sql, dbname: cluster.execute(sql, dbname=dbname), databases)
    return Setup("small", A.audit_policy(), A.ROLE, A.ROLE, A.QUERIES, A.CI_SAMPLES, databases,
                 "the CI audit's database (tests/dp_audit.py): 100 people, 350 claims; D' adds one person "
                 "with 1,000 claims in one ward; 2 groups x 3 rows = 6 rows per person")


@contextmanager
def mechanism(broken: bool):
    """The real mechanism, or one whose noise is calibrated for half of every sensitivity."""
    if not broken:
        yield
        return
    original = bounding.Measurement.sensitivity
    bounding.Measurement.sensitivity = lambda self, max_rows: original(self, max_rows) / 2
    try:
        yield
    finally:
        bounding.Measurement.sensitivity = original


def samples_for(setup: Setup, query: A.AuditQuery, args) -> int:
    return args.samples or setup.samples[query.name]


def run_wire(setup: Setup, cluster: ThrowawayCluster, args) -> list[dict]:
    ledger = A.CountingLedger()
    proxy = A.start_audit_proxy(make_conninfo(cluster.dsn(), sslmode="disable"), setup.policy,
                                cluster.admin_dsn(setup.databases["d"]), ledger)
    rows = []
    try:
        for broken in (False, True):
            if args.only and args.only != ("broken" if broken else "real"):
                continue
            with mechanism(broken):
                for query in setup.queries:
                    n = samples_for(setup, query, args)
                    timer = A.Timer()
                    before = len(ledger.charges)
                    # D and D' at once, on two connections: PostgreSQL's work
                    # (most of the time here) runs on two backends.
                    with ThreadPoolExecutor(2) as pool:
                        futures = {which: pool.submit(A.sample, A.proxy_dsn(proxy, setup.user, name), query, n,
                                                      args.epsilon, protocol=args.protocol)
                                   for which, name in setup.databases.items()}
                        answers = {which: future.result() for which, future in futures.items()}
                    charged = {c.epsilon for _, c in ledger.charges[before:]}
                    if charged != {float(args.epsilon)}:
                        raise SystemExit(f"the ledger was charged {charged}, not {args.epsilon}")
                    result = A.audit(answers["d"], answers["d_prime"], query.focus or (), alpha=args.alpha)
                    row = {"query": query.name, "sql": query.sql, "mechanism": "broken" if broken else "real",
                           "claimed": float(args.epsilon), **result.row, "seconds": timer.seconds,
                           "ms_per_query": 1000 * timer.seconds / (2 * n)}
                    rows.append(row)
                    print(line(row), flush=True)
    finally:
        proxy.stop()
    return rows


def run_simulated(setup: Setup, cluster: ThrowawayCluster, args) -> list[dict]:
    catalog = asyncio.run(read_catalog(cluster.admin_dsn(setup.databases["d"])))
    rows = []
    for broken in (False, True):
        if args.only and args.only != ("broken" if broken else "real"):
            continue
        with mechanism(broken):
            for query in setup.queries:
                release = A.private_release(query.sql, setup.policy, catalog, args.epsilon, setup.user, setup.role)
                raws = {}
                for which, name in setup.databases.items():
                    with psycopg.connect(cluster.admin_dsn(name)) as conn:
                        raws[which] = [A.raw_result(conn, release) for _ in range(args.raw_runs)]
                n = samples_for(setup, query, args)
                bounds = []
                timer = A.Timer()
                for r in range(args.simulate):
                    rng = random.Random(1_000_003 * r + 7)
                    answers = {which: A.simulate(release, pool, query, n, rng) for which, pool in raws.items()}
                    bounds.append(A.audit(answers["d"], answers["d_prime"], query.focus or (),
                                          alpha=args.alpha).epsilon_lb)
                claimed = float(args.epsilon)
                mean, sd = statistics.fmean(bounds), statistics.pstdev(bounds)
                miss = _normal_cdf((claimed - mean) / sd) if sd > 0 else float(mean <= claimed)
                row = {"query": query.name, "mechanism": "broken" if broken else "real", "claimed": claimed,
                       "audits": len(bounds), "n": n, "eps_lb mean": mean, "eps_lb sd": sd,
                       "eps_lb min": min(bounds), "eps_lb max": max(bounds),
                       "above claim": sum(b > claimed for b in bounds),
                       "normal P[eps_lb <= claim]": miss,
                       "seconds": timer.seconds}
                rows.append(row)
                print(simulated_line(row), flush=True)
    return rows


def _normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2))


def line(row: dict) -> str:
    p_d, p_d_prime = row["P[S|D]"], row["P[S|D']"]
    return (f"| {row['query']:<13} | {row['mechanism']:<6} | {row['claimed']:>7g} | {row['eps_lb']:>6.3f} | "
            f"{'CAUGHT' if row['eps_lb'] > row['claimed'] else 'pass':<6} | {row['event']} | "
            f"{p_d:.4f} | {p_d_prime:.4f} | {row['n']:>6,} | "
            f"{row['ms_per_query']:.2f} ms |")


HEADER = ("| query         | noise  | claimed | eps_lb | audit  | event (chosen on the selection half) | "
          "P[S|D] | P[S|D'] | test answers per db | time per query |\n"
          "|---------------|--------|--------:|-------:|--------|------|------:|------:|------:|------:|")


def simulated_line(row: dict) -> str:
    return (f"| {row['query']:<13} | {row['mechanism']:<6} | {row['claimed']:g} | {row['audits']} | {row['n']:,} | "
            f"{row['eps_lb mean']:.3f} | {row['eps_lb sd']:.3f} | {row['eps_lb min']:.3f} | {row['eps_lb max']:.3f} | "
            f"{row['above claim']} | {row['normal P[eps_lb <= claim]']:.1e} |")


SIMULATED_HEADER = ("| query | noise | claimed | audits | answers per db | eps_lb mean | sd | min | max | "
                    "audits with eps_lb > claim | normal approx. P[eps_lb <= claim] |\n"
                    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("demo", "small"), default="demo")
    parser.add_argument("--patients", type=int, default=400, help="demo dataset size (default 400)")
    parser.add_argument("--adversary-visits", type=int, default=2000)
    parser.add_argument("--samples", type=int,
                        help="answers per database for every query (default: 20,000, 40,000 for avg; with "
                             "--dataset small the CI test's 4,000, 16,000 for avg)")
    parser.add_argument("--epsilon", default="1")
    parser.add_argument("--alpha", type=float, default=2.5e-4, help="per audit (default 2.5e-4)")
    parser.add_argument("--protocol", choices=("pipeline", "simple"), default="pipeline")
    parser.add_argument("--only", choices=("real", "broken"))
    parser.add_argument("--simulate", type=int, default=0, metavar="R",
                        help="repeat the audit R times offline instead of through the wire")
    parser.add_argument("--raw-runs", type=int, default=20,
                        help="with --simulate: runs of the bounded SQL per database to draw raw totals from")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    # A SIGTERM ends the run like Ctrl-C, so the cluster is stopped and removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = dt.datetime.now(dt.UTC)
    timer = A.Timer()
    with ThrowawayCluster(settings={"shared_buffers": "256MB"}) as cluster:
        setup = setup_demo(cluster, args.patients, args.adversary_visits) if args.dataset == "demo" \
            else setup_small(cluster)
        print(f"# pgshroud empirical privacy audit, {started:%Y-%m-%d %H:%M} UTC, commit {_commit()}")
        print(f"# {setup.description}")
        print(f"# {platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
              f"{cluster.execute('SHOW server_version')[0][0].split()[0]}; load {os.getloadavg()[0]:.2f}")
        print(f"# epsilon {args.epsilon} per query (SET pgshroud.epsilon), alpha {args.alpha:g} per audit, "
              f"{'simulated x' + str(args.simulate) if args.simulate else args.protocol}; setup {timer.seconds:.0f} s")
        if args.simulate:
            print(SIMULATED_HEADER)
            rows = run_simulated(setup, cluster, args)
        else:
            print(HEADER)
            rows = run_wire(setup, cluster, args)
    print(f"# total {timer.seconds:.0f} s")
    if args.json:
        report = {"started": started.isoformat(), "args": {k: str(v) for k, v in vars(args).items()},
                  "setup": setup.description, "rows": rows}
        args.json.write_text(json.dumps(report, indent=2))


def _commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    main()
