#!/usr/bin/env python3
"""Accuracy and latency of pgshroud's private answers, next to smartnoise-sql and the exact answers.

In one run: starts a throwaway PostgreSQL with the demo data (as `pgshroud
demo` loads it, then `pgshroud setup`), starts pgshroud (`python -m
proxy.cli serve`) with a benchmark copy of policies/examples/healthcare.yaml
(only the budgets raised, so that the rounds fit), and runs a fixed set of
aggregate queries (bench/accuracy/queries.py) at the same total epsilon and
delta per query, several rounds each, through

  exact       PostgreSQL directly, as the demo's `admin` (the reference answer and latency);
  pgshroud    as the demo's `analyst`, with `SET pgshroud.epsilon` / `SET pgshroud.delta`;
  smartnoise  smartnoise-sql 1.0.10 (OpenDP) in its own virtualenv, on the raw database as `admin`,
              with metadata derived from the same policy (bench/accuracy/smartnoise_worker.py).

Prints and writes as markdown, per query: the median relative error per
output cell against the exact answer (groups matched by key), the groups
released against the exact groups, and the median latency against the
exact query's. Refusals by either system are listed with their messages.

    python bench/accuracy/run.py                         # 20 rounds, epsilon 1, delta 1e-6, 20,000 patients
    python bench/accuracy/run.py --rounds 50 --json bench/results/accuracy.json
    python bench/accuracy/run.py --rounds 5 --only smartnoise   # leave pgshroud out

Run it with the project's virtualenv (`.venv/bin/python`). smartnoise-sql's
virtualenv (default bench/accuracy/.venv) is created and installed from the
package index on first use. Everything runs on loopback and is removed at
exit. Needs the PostgreSQL server binaries (proxy.pgcluster.find_pg_bindir).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import psycopg
import yaml
from psycopg.conninfo import make_conninfo
from queries import QUERIES, Query

from pgshroud.policies.loader import load_policy
from pgshroud.proxy.commands.demo_cluster import DATABASE, OWNER, READERS, prepare_demo_cluster
from pgshroud.proxy.commands.pgcluster import ThrowawayCluster
from pgshroud.proxy.commands.setup import run_setup

POLICY_FILE = REPO / "policies" / "examples" / "healthcare.yaml"
ANALYST = "analyst"
SYSTEMS = ("exact", "pgshroud", "smartnoise")
SMARTNOISE_PACKAGES = ("smartnoise-sql==1.0.10", "psycopg2-binary==2.9.13")
# The example policy's budgets allow a hundred queries or so per analyst; a run needs hundreds at epsilon 1.
BENCH_BUDGET = {"epsilon": 1_000_000, "delta": 0.5}
PG_TYPES = {
    "smallint": "int", "integer": "int", "bigint": "int",
    "numeric": "float", "real": "float", "double precision": "float",
    "text": "string", "character varying": "string", "character": "string",
    "date": "datetime", "timestamp without time zone": "datetime", "timestamp with time zone": "datetime",
    "boolean": "boolean",
}


# ------------------------------------------------------------------ helpers


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def git_commit() -> str:
    """HEAD, and whether the work tree differs from it outside bench/ (what pgshroud ran is then not HEAD)."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], check=False,
                              capture_output=True, text=True, timeout=10).stdout.strip() or "?"
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":!bench"], check=False, capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return "?"
    return f"`{head}` + uncommitted changes" if dirty else f"`{head}`"


def plain(value):
    """A database value as JSON and arithmetic want it."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value


def one_line(text: str, limit: int = 240) -> str:
    text = re.sub(r"<([\w.]+) object at 0x[0-9a-fA-F]+>", r"<\1>", " ".join(str(text).split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------ setup


def prepare_database(patients: int) -> ThrowawayCluster:
    """What `pgshroud demo` does upstream: the demo cluster and data, then `pgshroud setup`."""
    cluster = prepare_demo_cluster(patients=patients)
    try:
        out = io.StringIO()
        if run_setup(cluster.admin_dsn(DATABASE), key_env=None, key_file=None, rotate_key=False,
                     grant_to=list(READERS), out=out) != 0:
            raise SystemExit(f"pgshroud setup failed:\n{out.getvalue()}")
        cluster.execute("VACUUM ANALYZE", dbname=DATABASE)
        counts = cluster.execute("SELECT (SELECT count(*) FROM patients), (SELECT count(*) FROM visits)",
                                 dbname=DATABASE)[0]
        log(f"demo data: {counts[0]:,} patients, {counts[1]:,} visits")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def benchmark_policy(workdir: Path, epsilon: float, delta: float) -> Path:
    """The example policy with two changes: budgets large enough for every round, and the per-query
    default epsilon and delta set to the benchmark's (the session SETs them too; with the default
    equal, an answer is at the benchmark's epsilon even if a SET were lost)."""
    document = yaml.safe_load(POLICY_FILE.read_text())
    document["budgets"] = {"period": "never", "per_user": dict(BENCH_BUDGET),
                           "per_role": {role: dict(BENCH_BUDGET) for role in document.get("roles", {})},
                           "per_dataset": dict(BENCH_BUDGET)}
    per_query = document.setdefault("privacy", {}).setdefault("per_query", {})
    for name, value in (("epsilon", epsilon), ("delta", delta)):
        per_query.setdefault(name, {})["default"] = value
    path = workdir / "healthcare-accuracy.yaml"
    path.write_text("# policies/examples/healthcare.yaml with bench/accuracy's budgets and per-query defaults\n"
                    + yaml.safe_dump(document, sort_keys=False))
    load_policy(path)  # must still be a valid policy (a default above the policy's maximum is not)
    return path


def smartnoise_metadata(policy, conn: psycopg.Connection) -> dict:
    """smartnoise-sql metadata equivalent to the policy: per protected table the privacy unit as the
    private id, max_ids = max_groups_per_unit * max_rows_per_group, the declared bounds, and the column
    types of the live catalog. Counts are clamped at zero (post-processing, as pgshroud does)."""
    tables: dict[str, dict] = {}
    for full_name, table in policy.protected_tables.items():
        schema, name = full_name.split(".")
        types = dict(conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name = %s ORDER BY ordinal_position", (schema, name)).fetchall())
        entry: dict = {
            "max_ids": table.contribution.max_groups_per_unit * table.contribution.max_rows_per_group,
            "row_privacy": False,
            "sample_max_ids": True,
            "clamp_counts": True,
            "clamp_columns": True,
            "censor_dims": True,  # set per query by the worker
        }
        for column, pg_type in types.items():
            spec: dict = {"type": PG_TYPES.get(pg_type, "string")}
            if column == table.privacy_unit.column:
                spec["private_id"] = True
            rules = table.columns.get(column)
            if rules is not None and rules.bounds is not None and spec["type"] in ("int", "float"):
                spec["lower"], spec["upper"] = rules.bounds
            entry[column] = spec
        tables[name] = entry
    return {DATABASE: {"public": tables}}


def public_key(policy, column: str) -> bool:
    table, name = column.split(".")
    protected = policy.protected_tables.get(f"public.{table}")
    if protected is None:
        return f"public.{table}" in policy.public_tables
    rules = protected.columns.get(name)
    return rules is not None and (rules.public_domain is not None
                                  or getattr(rules, "public_domain_table", None) is not None)


class PgShroud:
    """`python -m pgshroud serve` with the benchmark policy, as a subprocess."""

    def __init__(self, workdir: Path, upstream: str, policy: Path) -> None:
        self.port = free_port()
        self.logfile = workdir / f"pgshroud-{self.port}.log"
        argv = [sys.executable, "-m", "pgshroud.proxy.commands.cli", "--log-level", "warning", "serve", "--listen",
                f"127.0.0.1:{self.port}", "--upstream", upstream, "--policy", str(policy), "--drain-timeout", "5",
                # Each round needs fresh noise: a repeat from the answer cache would be the same draw.
                "--answer-cache-seconds", "0"]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        with open(self.logfile, "wb") as errors:
            self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=errors,
                                         stderr=errors)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"pgshroud exited with {self.proc.returncode} at start:\n{tail(self.logfile)}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"pgshroud did not listen within 30 s:\n{tail(self.logfile)}")
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def ensure_smartnoise_venv(venv: Path) -> Path:
    """The virtualenv with smartnoise-sql and psycopg2, created on first use."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import snsql, psycopg2"]
    if python.exists() and subprocess.run(check, check=False, capture_output=True).returncode == 0:
        return python
    base = getattr(sys, "_base_executable", None) or sys.executable
    log(f"creating smartnoise-sql's virtualenv in {venv} ({', '.join(SMARTNOISE_PACKAGES)})")
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *SMARTNOISE_PACKAGES], check=True)
    subprocess.run(check, check=True)
    return python


class Smartnoise:
    """bench/accuracy/smartnoise_worker.py in smartnoise's virtualenv, over JSON lines."""

    def __init__(self, python: Path, workdir: Path) -> None:
        self.logfile = workdir / "smartnoise-worker.log"
        self._errors = open(self.logfile, "wb")  # noqa: SIM115 - the worker's stderr while it lives
        self.proc = subprocess.Popen([str(python), str(HERE / "smartnoise_worker.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._errors, text=True)

    def call(self, request: dict) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"smartnoise worker exited:\n{tail(self.logfile)}")
        answer = json.loads(line)
        if "fatal" in answer:
            raise SystemExit(f"smartnoise worker failed:\n{answer['fatal']}")
        return answer

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write('{"op": "quit"}\n')
                self.proc.stdin.close()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        self._errors.close()


# ------------------------------------------------------------------ running


@dataclass
class Outcome:
    seconds: float
    columns: list[str] | None = None
    rows: list[list] | None = None
    refused: str | None = None


class Postgres:
    """A psycopg connection, exact (admin, direct) or private (analyst, through pgshroud)."""

    def __init__(self, conninfo: str, setup: tuple[str, ...] = ()) -> None:
        self.conninfo = conninfo
        self.setup = setup
        self.conn: psycopg.Connection | None = None
        self.settings: dict[str, str] = {}

    def connect(self) -> psycopg.Connection:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.conn = psycopg.connect(self.conninfo, autocommit=True)
            for statement in self.setup:
                self.conn.execute(statement)
        return self.conn

    def run(self, sql: str) -> Outcome:
        conn = self.connect()
        started = time.perf_counter()
        try:
            cursor = conn.execute(sql)
            rows = cursor.fetchall()
        except psycopg.Error as exc:
            seconds = time.perf_counter() - started
            primary = exc.diag.message_primary or str(exc)
            return Outcome(seconds, refused=f"{exc.sqlstate or '?'}: {one_line(primary, 400)}")
        seconds = time.perf_counter() - started
        columns = [c.name for c in cursor.description or ()]
        return Outcome(seconds, columns, [[plain(v) for v in row] for row in rows])

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def run_rounds(args, targets: dict, queries: tuple[Query, ...]) -> dict[str, dict[str, list[Outcome]]]:
    """One warm-up round (not counted), then args.rounds rounds. Within a round each query goes to every
    target in turn, in an order rotated from query to query and round to round."""
    results: dict[str, dict[str, list[Outcome]]] = {q.name: {s: [] for s in targets} for q in queries}
    systems = list(targets)
    for round_number in range(-1, args.rounds):
        started = time.monotonic()
        for index, query in enumerate(queries):
            shift = (round_number + 1 + index) % len(systems)
            for system in systems[shift:] + systems[:shift]:
                outcome = targets[system](query)
                if round_number >= 0:
                    results[query.name][system].append(outcome)
        if round_number < 0:
            log(f"warm-up round done in {time.monotonic() - started:.1f} s")
        else:
            log(f"round {round_number + 1}/{args.rounds} done in {time.monotonic() - started:.1f} s")
    return results


def ledger_charges(cluster: ThrowawayCluster) -> dict | None:
    """What pgshroud's budget ledger recorded for the analyst: one charge per private answer."""
    try:
        row = cluster.execute(
            "SELECT count(*), sum(epsilon), min(epsilon), max(epsilon), sum(delta), min(delta), max(delta) "
            f"FROM pgshroud.budget_ledger WHERE kind = 'charge' AND user_name = '{ANALYST}'", dbname=DATABASE)[0]
    except psycopg.Error as exc:
        log(f"cannot read pgshroud's ledger: {one_line(str(exc), 160)}")
        return None
    names = ("charges", "epsilon_sum", "epsilon_min", "epsilon_max", "delta_sum", "delta_min", "delta_max")
    return {name: plain(value) for name, value in zip(names, row)}


# ------------------------------------------------------------------ analysis


@dataclass
class Summary:
    answered: int = 0
    rounds: int = 0
    refusals: list[str] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)  # relative error of every compared cell, all rounds
    signed: list[float] = field(default_factory=list)  # the same, (answer - exact) / |exact|: its median is the bias
    zero_cells: int = 0  # cells whose exact value is 0 or NULL: no relative error
    null_cells: int = 0  # cells answered NULL where the exact answer is not (counted as error 1.0)
    released: list[int] = field(default_factory=list)  # rows released per round
    matched: list[int] = field(default_factory=list)  # of which match an exact group
    extra: list[int] = field(default_factory=list)  # released groups absent from the exact answer
    seconds: list[float] = field(default_factory=list)  # of the answered rounds
    wrong_columns: str | None = None

    @property
    def median_error(self) -> float | None:
        return statistics.median(self.errors) if self.errors else None

    def digest(self) -> dict:
        errors = sorted(self.errors)
        return {
            "answered": self.answered, "rounds": self.rounds, "refusals": sorted(set(self.refusals)),
            "median_error": self.median_error,
            "p90_error": errors[min(len(errors) - 1, int(0.9 * len(errors)))] if errors else None,
            "median_signed_error": statistics.median(self.signed) if self.signed else None,
            "cells": len(self.errors), "zero_cells": self.zero_cells, "null_cells": self.null_cells,
            "matched": self.matched, "extra": self.extra, "median_ms": self.median_ms,
        }

    @property
    def median_ms(self) -> float | None:
        return statistics.median(self.seconds) * 1000 if self.seconds else None


def key_text(value) -> str:
    """A group key as text, alike whichever system answered: 2016, 2016.0 and Decimal('2016') are '2016'."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def summarise(query: Query, exact: Outcome, outcomes: list[Outcome]) -> Summary:
    summary = Summary(rounds=len(outcomes))
    exact_columns = [c.lower() for c in exact.columns or []]
    values = [c for c in exact_columns if c not in query.keys]
    exact_rows = {tuple(key_text(row[exact_columns.index(k)]) for k in query.keys): row for row in exact.rows or []}
    for outcome in outcomes:
        if outcome.refused is not None:
            summary.refusals.append(outcome.refused)
            continue
        columns = [c.lower() for c in outcome.columns or []]
        if sorted(columns) != sorted(exact_columns):
            summary.wrong_columns = f"columns {columns}, exact {exact_columns}"
            summary.refusals.append(f"answered with other columns: {summary.wrong_columns}")
            continue
        summary.answered += 1
        summary.seconds.append(outcome.seconds)
        summary.released.append(len(outcome.rows or []))
        matched = extra = 0
        for row in outcome.rows or []:
            key = tuple(key_text(row[columns.index(k)]) for k in query.keys)
            truth = exact_rows.get(key)
            if truth is None:
                extra += 1
                continue
            matched += 1
            for column in values:
                true_value, noisy = truth[exact_columns.index(column)], row[columns.index(column)]
                if true_value is None or float(true_value) == 0:
                    summary.zero_cells += 1
                elif noisy is None:
                    summary.null_cells += 1
                    summary.errors.append(1.0)
                else:
                    signed = (float(noisy) - float(true_value)) / abs(float(true_value))
                    summary.signed.append(signed)
                    summary.errors.append(abs(signed))
        summary.matched.append(matched)
        summary.extra.append(extra)
    return summary


def percent(value: float | None) -> str:
    if value is None:
        return ""
    if value >= 10:
        return f"{value * 100:,.0f}%"
    if value >= 0.01:
        return f"{value * 100:.1f}%"
    return f"{value * 100:.2f}%"


def spread(values: list[int]) -> str:
    if not values:
        return ""
    low, high, middle = min(values), max(values), statistics.median(values)
    shown = f"{middle:g}"
    return shown if low == high else f"{shown} ({low}-{high})"


def groups_cell(summary: Summary, exact_groups: int) -> str:
    if not summary.answered:
        return ""
    text = f"{spread(summary.matched)}/{exact_groups}"
    if any(summary.extra):
        text += f" +{spread(summary.extra)} not in exact"
    return text


def error_cell(summary: Summary, notes: dict[str, int]) -> str:
    if summary.answered == 0:
        reason = summary.refusals[0] if summary.refusals else "no answer"
        number = notes.setdefault(reason, len(notes) + 1)
        return f"refused [{number}]"
    text = percent(summary.median_error)
    if summary.answered < summary.rounds:
        reason = summary.refusals[0]
        number = notes.setdefault(reason, len(notes) + 1)
        text += f" ({summary.rounds - summary.answered}/{summary.rounds} refused [{number}])"
    return text


def latency_cell(summary: Summary, exact_ms: float | None) -> str:
    if summary.answered == 0 or summary.median_ms is None:
        return ""
    ms = summary.median_ms
    ratio = f" ({ms / exact_ms:.1f}x)" if exact_ms else ""
    return f"{ms:,.1f} ms{ratio}"


def markdown_table(header: tuple[str, ...], rows: list[tuple[str, ...]], left: int = 2) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(c.ljust(w) if i < left else c.rjust(w)
                                        for i, (c, w) in enumerate(zip(r, widths))) + " |")
    return "\n".join(lines)


def report(args, queries, exact_answers, summaries, calibration, meta) -> str:
    notes: dict[str, int] = {}
    rows = []
    for number, query in enumerate(queries, 1):
        exact = exact_answers[query.name]
        s = summaries[query.name]
        exact_groups = len(exact.rows or [])
        exact_ms = s["exact"].median_ms
        pg, sn = s.get("pgshroud"), s.get("smartnoise")
        ratio = ""
        if pg and sn and pg.median_error is not None and sn.median_error:
            ratio = f"{pg.median_error / sn.median_error:.2g}"
        rows.append((
            str(number), query.title, str(exact_groups),
            error_cell(pg, notes) if pg else "not run",
            error_cell(sn, notes) if sn else "not run",
            ratio,
            groups_cell(pg, exact_groups) if pg else "",
            groups_cell(sn, exact_groups) if sn else "",
            f"{exact_ms:,.1f} ms" if exact_ms is not None else "",
            latency_cell(pg, exact_ms) if pg else "",
            latency_cell(sn, exact_ms) if sn else "",
        ))
    header = ("#", "query", "exact groups", "pgshroud error", "smartnoise error", "pgshroud/smartnoise",
              "pgshroud groups", "smartnoise groups", "exact latency", "pgshroud latency", "smartnoise latency")
    lines = [markdown_table(header, rows), ""]
    if notes:
        lines.append("Refusals:")
        lines.append("")
        for reason, number in notes.items():
            lines.append(f"[{number}] {one_line(reason, 300)}")
        lines.append("")
    lines.append("Queries:")
    lines.append("")
    for number, query in enumerate(queries, 1):
        lines.append(f"{number}. `{query.sql}`")
    lines.append("")
    if meta.get("set_ignored"):
        lines.append(f"pgshroud did not keep `SET {'` / `SET '.join(meta['set_ignored'])}` in this run (SHOW "
                     "returned the policy's default after it); its answers were at the benchmark policy's "
                     "per-query default, which is the benchmark's epsilon and delta.")
        lines.append("")
    ledger = meta.get("ledger")
    if ledger and not ledger["charges"]:
        lines.append(f"pgshroud's budget ledger after the run: no charges to `{ANALYST}` for "
                     f"{ledger['answers']} private answers.")
        lines.append("")
    elif ledger:
        lines.append(f"pgshroud's budget ledger after the run: {ledger['charges']} charges to `{ANALYST}` for "
                     f"{ledger['answers']} private answers (warm-up round included), epsilon "
                     f"{ledger['epsilon_min']:g} to {ledger['epsilon_max']:g} each, delta {ledger['delta_min']:g} "
                     f"to {ledger['delta_max']:g} each.")
        lines.append("")
    if calibration:
        lines.append(f"smartnoise-sql per-mechanism epsilon (its odometer: total epsilon {args.epsilon:g}, "
                     f"delta {args.delta:g} per query):")
        lines.append("")
        for number, query in enumerate(queries, 1):
            c = calibration.get(query.name, {})
            if c and "refused" not in c:
                lines.append(f"{number}. {c['mechanisms']} noisy column(s) x epsilon "
                             f"{c['epsilon_per_mechanism']:.4g} (delta parameter {c['delta_parameter']:.3g}; "
                             f"unscaled it would cost epsilon {c['unscaled_epsilon']:.3g}); censor_dims "
                             f"{'on' if c['censor_dims'] else 'off'}")
        lines.append("")
    header_lines = [
        (f"`{meta['command']}`, {meta['started']} ({meta['seconds']:.0f} s): pgshroud at {meta['commit']}, "
        f"{meta['patients']:,} patients ({meta['visits']:,} visits), epsilon {args.epsilon:g} and delta "
        f"{args.delta:g} per query, {args.rounds} rounds (after one warm-up round). {meta['machine']}; "
        f"PostgreSQL {meta['postgres']}; {meta['smartnoise']}. Load average {meta['load_start']} at start, "
        f"{meta['load_end']} at end."),
        "",
        ("Error: median over rounds and output cells of |answer - exact| / |exact| (groups matched by key; cells "
        "whose exact value is 0 or NULL are left out). Groups: released groups that match an exact group "
        "(median over rounds, min-max), over the exact groups. Latency: median wall time of one query at the "
        "client, rows fetched; (Nx) is the ratio to the exact query sent directly."),
        "",
    ]
    return "\n".join(header_lines + lines)


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="measured rounds per query and system (default 20)")
    parser.add_argument("--epsilon", type=float, default=1.0, help="total epsilon per query (default 1)")
    parser.add_argument("--delta", type=float, default=1e-6, help="total delta per query (default 1e-6)")
    parser.add_argument("--patients", type=int, default=20_000, help="demo patients (default 20000, as the demo)")
    parser.add_argument("--only", choices=("pgshroud", "smartnoise"), help="run only this system next to exact")
    parser.add_argument("--queries", help="comma-separated query names (default: all)")
    parser.add_argument("--smartnoise-venv", type=Path, default=HERE / ".venv",
                        help="virtualenv for smartnoise-sql, created if missing (default bench/accuracy/.venv)")
    parser.add_argument("--markdown", type=Path, default=REPO / "bench" / "results" / "accuracy.md",
                        help="where to write the table (default bench/results/accuracy.md)")
    parser.add_argument("--json", type=Path, help="also write every answer and timing here")
    args = parser.parse_args(argv)

    queries = QUERIES
    if args.queries:
        wanted = args.queries.split(",")
        unknown = set(wanted) - {q.name for q in QUERIES}
        if unknown:
            parser.error(f"unknown queries: {', '.join(sorted(unknown))}; known: "
                         f"{', '.join(q.name for q in QUERIES)}")
        queries = tuple(q for q in QUERIES if q.name in wanted)
    systems = [s for s in SYSTEMS if args.only in (None, s) or s == "exact"]

    started_at = dt.datetime.now(dt.UTC)
    commit = git_commit()  # at the start: pgshroud runs what the work tree holds now
    load_start = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    wall = time.monotonic()
    python = ensure_smartnoise_venv(args.smartnoise_venv) if "smartnoise" in systems else None
    policy = load_policy(POLICY_FILE)

    workdir = Path(tempfile.mkdtemp(prefix="pgshroud-accuracy-"))
    cluster = prepare_database(args.patients)
    shroud = smartnoise = None
    exact_db = private_db = None
    finished = False
    try:
        admin = make_conninfo(cluster.dsn(user=OWNER, password=OWNER, dbname=DATABASE), sslmode="disable")
        exact_db = Postgres(admin)
        conn = exact_db.connect()
        postgres_version = conn.execute("SHOW server_version").fetchone()[0]
        patients, visits = conn.execute("SELECT (SELECT count(*) FROM patients), "
                                        "(SELECT count(*) FROM visits)").fetchone()
        targets = {"exact": lambda q: exact_db.run(q.sql)}

        calibration: dict = {}
        answered_by_pgshroud: list[bool] = []  # every call, the warm-up round's too
        set_ignored: list[str] = []
        smartnoise_versions = "smartnoise-sql not run"
        if "smartnoise" in systems:
            smartnoise = Smartnoise(python, workdir)
            metadata = smartnoise_metadata(policy, conn)
            answer = smartnoise.call({
                "op": "init", "dsn": admin, "metadata": metadata, "epsilon": args.epsilon, "delta": args.delta,
                "queries": [{"name": q.name, "sql": q.sql,
                             "censor_dims": not all(public_key(policy, c) for c in q.key_columns)}
                            for q in queries],
            })
            calibration = answer["calibration"]
            smartnoise_versions = ", ".join(f"{k} {v}" for k, v in answer["versions"].items())
            for name, c in calibration.items():
                if "refused" in c:
                    log(f"smartnoise-sql refuses {name}: {one_line(c['refused'], 160)}")
                else:
                    log(f"smartnoise-sql {name}: {c['mechanisms']} mechanism(s) x epsilon "
                        f"{c['epsilon_per_mechanism']:.4g}, delta parameter {c['delta_parameter']:.3g} -> "
                        f"odometer ({c['spent_epsilon']:.6g}, {c['spent_delta']:.3g})")

            def run_smartnoise(query: Query) -> Outcome:
                a = smartnoise.call({"op": "run", "name": query.name})
                return Outcome(a["seconds"], a.get("columns"), a.get("rows"), a.get("refused"))

            targets["smartnoise"] = run_smartnoise

        if "pgshroud" in systems:
            upstream = make_conninfo(cluster.dsn(dbname=DATABASE), sslmode="disable")
            shroud = PgShroud(workdir, upstream, benchmark_policy(workdir, args.epsilon, args.delta))
            private_db = Postgres(
                make_conninfo(host="127.0.0.1", port=shroud.port, user=ANALYST, password=ANALYST, dbname=DATABASE,
                              sslmode="disable"),
                setup=(f"SET pgshroud.epsilon = {args.epsilon!r}", f"SET pgshroud.delta = {args.delta!r}"))
            conn = private_db.connect()
            for name, wanted in (("pgshroud.epsilon", args.epsilon), ("pgshroud.delta", args.delta)):
                try:
                    shown = conn.execute(f"SHOW {name}").fetchone()[0]
                    # Does pgshroud keep a SET? The policy's default is the same value, so try another.
                    conn.execute(f"SET {name} = {wanted / 2!r}")
                    halved = conn.execute(f"SHOW {name}").fetchone()[0]
                    conn.execute(f"SET {name} = {wanted!r}")
                    shown = conn.execute(f"SHOW {name}").fetchone()[0]
                except psycopg.Error as exc:
                    raise SystemExit(f"pgshroud: SET/SHOW {name} failed: {exc.sqlstate} {one_line(str(exc), 200)}")
                log(f"pgshroud: SHOW {name} = {shown}")
                if not math.isclose(float(halved), wanted / 2, rel_tol=1e-9):
                    set_ignored.append(name)
                    log(f"pgshroud does not keep SET {name} = {wanted / 2!r} (SHOW says {halved}); "
                        f"its answers are at the benchmark policy's default, {wanted!r}")
                if not math.isclose(float(shown), wanted, rel_tol=1e-9):
                    raise SystemExit(f"pgshroud answers at {name} = {shown}, not {wanted!r}")

            def run_pgshroud(query: Query) -> Outcome:
                outcome = private_db.run(query.sql)
                answered_by_pgshroud.append(outcome.refused is None)
                return outcome

            targets["pgshroud"] = run_pgshroud

        exact_answers = {q.name: exact_db.run(q.sql) for q in queries}
        for name, outcome in exact_answers.items():
            if outcome.refused:
                raise SystemExit(f"the exact query {name} failed: {outcome.refused}")
        results = run_rounds(args, {s: targets[s] for s in systems}, queries)
        ledger = ledger_charges(cluster) if "pgshroud" in systems else None
        if ledger is not None:
            ledger["answers"] = sum(answered_by_pgshroud)
            log(f"pgshroud's ledger: {ledger}")
        for name in results:
            again = exact_db.run(next(q for q in queries if q.name == name).sql)
            if sorted(map(repr, again.rows)) != sorted(map(repr, exact_answers[name].rows)):
                log(f"note: the exact answer of {name} changed during the run (floating point?)")
        finished = True
    finally:
        for thing in (smartnoise, shroud):
            if thing is not None:
                thing.stop()
        for db in (exact_db, private_db):
            if db is not None:
                db.close()
        cluster.stop()
        if finished:
            shutil.rmtree(workdir, ignore_errors=True)  # pgshroud's and the worker's logs
        else:
            log(f"logs of pgshroud and the smartnoise worker kept in {workdir}")

    summaries = {q.name: {s: summarise(q, exact_answers[q.name], results[q.name][s]) for s in systems}
                 for q in queries}
    meta = {
        "command": "python bench/accuracy/run.py" + "".join(f" {a}" for a in (argv if argv is not None
                                                                               else sys.argv[1:])),
        "started": started_at.strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": time.monotonic() - wall,
        "commit": commit,
        "patients": patients, "visits": visits,
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "postgres": postgres_version.split()[0],
        "smartnoise": smartnoise_versions,
        "load_start": load_start,
        "load_end": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    meta["ledger"] = ledger
    meta["set_ignored"] = set_ignored
    text = report(args, queries, exact_answers, summaries, calibration, meta)
    print(text)
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(text + "\n")
    log(f"table written to {args.markdown}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "meta": meta, "args": {k: str(v) for k, v in vars(args).items()}, "calibration": calibration,
            "queries": [asdict(q) for q in queries],
            "summary": {name: {s: summary.digest() for s, summary in by.items()} for name, by in summaries.items()},
            "exact": {name: asdict(o) for name, o in exact_answers.items()},
            "results": {name: {s: [asdict(o) for o in outs] for s, outs in by.items()}
                        for name, by in results.items()},
        }, indent=1, default=str))
        log(f"answers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
