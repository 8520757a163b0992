#!/usr/bin/env python3
"""The timing channel of private answers: how much one person moves a
private query's running time.

1. starts a throwaway PostgreSQL and loads the demo dataset (`--patients`,
   default 5,000) and runs `pgshroud setup`;
2. starts pgshroud in this process with the real planner, the unchanged
   policies/examples/healthcare.yaml and an unlimited in-memory ledger;
3. picks a patient with a Psychiatry visit (present) and one without
   (absent), and sends each probe as the demo's `analyst` for both, in
   alternation, `--rounds` times (default 20), at the policy's floor
   epsilon, timing each answer at the client;
4. prints, per probe, the median time with the person present and absent,
   their difference, and the spread (interquartile range) of the absent
   times: a difference well inside the spread is hard to read from one
   query, one far outside it is a channel.

A probe pgshroud refuses is printed as refused (the cross join of the
original finding is one).

    .venv/bin/python bench/timing/run.py
    .venv/bin/python bench/timing/run.py --patients 100000 --rounds 50
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import time
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
from tests import dp_audit as A

CONDITION = "v.patient_id = {person} AND v.department = 'Psychiatry'"
HEAVY = " + ".join(f"v.cost * {1 + i / 1000}" for i in range(100))
PROBES = {
    "condition on one person": f"SELECT count(*) FROM visits v WHERE {CONDITION}",
    "heavy expression on one person's rows": (
        f"SELECT count(*) FROM visits v WHERE CASE WHEN {CONDITION} THEN {HEAVY} ELSE 0 END > 0"),
    "public table joined on its key": (
        f"SELECT count(*) FROM visits v JOIN diagnoses d ON d.code = v.diagnosis_code WHERE {CONDITION}"),
    "cross join with public tables (the finding)": (
        f"SELECT count(*) FROM visits v, diagnoses a, diagnoses b, diagnoses c WHERE {CONDITION}"),
}


def setup(cluster: ThrowawayCluster, patients: int) -> str:
    for role in ("admin", "analyst"):
        cluster.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{role}'")
    cluster.execute("CREATE DATABASE timing OWNER admin")
    load_demo_dataset(cluster.dsn(user="admin", password="admin", dbname="timing"), patients=patients)
    cluster.execute("GRANT SELECT ON patients, visits, labs, diagnoses TO analyst", dbname="timing")
    if run_setup(cluster.admin_dsn("timing"), key_env=None, key_file=None, rotate_key=False,
                 grant_to=["analyst"], out=io.StringIO()) != 0:
        raise SystemExit("pgshroud setup failed")
    return "timing"


def people(cluster: ThrowawayCluster) -> tuple[int, int]:
    present = cluster.execute("SELECT min(patient_id) FROM visits WHERE department = 'Psychiatry'",
                              dbname="timing")[0][0]
    absent = cluster.execute("SELECT min(patient_id) FROM patients p WHERE NOT EXISTS (SELECT FROM visits v "
                             "WHERE v.patient_id = p.patient_id AND v.department = 'Psychiatry')",
                             dbname="timing")[0][0]
    return present, absent


def timed(conn: psycopg.Connection, sql: str) -> float | None:
    started = time.perf_counter()
    try:
        conn.execute(sql).fetchall()
    except psycopg.errors.InsufficientPrivilege:
        return None
    return time.perf_counter() - started


def quartiles(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with ThrowawayCluster(settings={"shared_buffers": "256MB"}) as cluster:
        database = setup(cluster, args.patients)
        present, absent = people(cluster)
        with resources.as_file(resources.files("pgshroud.policies") / "examples" / "healthcare.yaml") as path:
            policy = load_policy(path)
        visits = cluster.execute("SELECT count(*) FROM visits", dbname=database)[0][0]
        proxy = A.start_audit_proxy(make_conninfo(cluster.dsn(), sslmode="disable"), policy,
                                    cluster.admin_dsn(database), A.CountingLedger())
        print(f"# pgshroud timing channel: {args.patients:,} patients, {visits:,} visits; {args.rounds} rounds; "
              f"{platform.node()}: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
        print(f"{'probe':45} {'present ms':>11} {'absent ms':>10} {'difference':>11} {'absent IQR':>15}")
        try:
            with psycopg.connect(A.proxy_dsn(proxy, "analyst", database), autocommit=True) as conn:
                conn.execute(f"SET pgshroud.epsilon = {policy.privacy.floor.epsilon}")
                for name, template in PROBES.items():
                    times: dict[int, list[float]] = {present: [], absent: []}
                    refused = False
                    for _ in range(args.rounds):
                        for person in (present, absent):
                            seconds = timed(conn, template.format(person=person))
                            if seconds is None:
                                refused = True
                                break
                            times[person].append(seconds * 1000)
                        if refused:
                            break
                    if refused:
                        print(f"{name:45} {'refused':>11}")
                        continue
                    on, off = statistics.median(times[present]), statistics.median(times[absent])
                    low, high = quartiles(times[absent])
                    print(f"{name:45} {on:11.1f} {off:10.1f} {on - off:+11.1f} {low:7.1f}-{high:<7.1f}", flush=True)
        finally:
            proxy.stop()


if __name__ == "__main__":
    main()
