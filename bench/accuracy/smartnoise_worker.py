"""The smartnoise-sql side of bench/accuracy, run in smartnoise's own virtualenv.

smartnoise-sql pins its own dependencies (opendp, pandas, SQLAlchemy, an
old antlr4 runtime), so it lives in a virtualenv of its own and this script
runs there, as a subprocess of run.py, speaking JSON lines: one request on
stdin, one answer on stdout.

    {"op": "init", "dsn": ..., "metadata": {...}, "epsilon": 1.0, "delta": 1e-6,
     "queries": [{"name": ..., "sql": ..., "censor_dims": bool}, ...]}
        -> {"calibration": {name: {...} or {"refused": message}}, "versions": {...}}
    {"op": "run", "name": ...}
        -> {"columns": [...], "rows": [[...], ...], "seconds": float} or {"refused": message, "seconds": float}
    {"op": "quit"}

Each query gets its own PrivateReader, on one psycopg2 connection to the raw
database (the admin's credentials: smartnoise-sql runs in-process on the
raw data). The metadata is the same for all but `censor_dims`, which is on
only for queries grouped by a key whose domain the policy does not declare
public (smartnoise-sql's equivalent of pgshroud's partition selection).

Privacy: `Privacy(epsilon=e)` in smartnoise-sql is the epsilon of *each*
noisy column (a COUNT, a SUM, the key count of censored dimensions; AVG is a
SUM and a COUNT, STDDEV three), and its odometer composes them. For each
query, e and Privacy.delta are solved for so that
`PrivateReader.get_privacy_cost(query)` (its own odometer, which also adds
a slack of delta/2 for advanced composition) reports exactly the target
total epsilon and delta; the calibration is returned to run.py and printed.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
import warnings
from datetime import date, datetime
from decimal import Decimal

warnings.simplefilter("ignore")  # smartnoise-sql warns about floating-point mechanisms on every reader

import psycopg2
import snsql
from snsql import Privacy


def plain(value):
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, (float, Decimal)):
        return float(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return plain(value.item())
    return str(value)


def message(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"


def _solve(function, target: float, start: float) -> float:
    """The x > 0 with function(x) == target, for an increasing function, by bisection around start."""
    low, high = start, start
    while function(low) > target:
        low /= 2
    while function(high) < target:
        high *= 2
    for _ in range(100):
        middle = (low + high) / 2
        if function(middle) < target:
            low = middle
        else:
            high = middle
        if high - low <= 1e-13 * high:
            break
    # The largest value found that does not exceed the target.
    return low if function(high) > target else high


class Worker:
    def __init__(self) -> None:
        self.conn = None
        self.readers: dict[str, snsql.sql.private_reader.PrivateReader] = {}
        self.sql: dict[str, str] = {}
        self.refused: dict[str, str] = {}

    def init(self, request: dict) -> dict:
        self.conn = psycopg2.connect(request["dsn"])
        self.conn.autocommit = True
        epsilon, delta = float(request["epsilon"]), float(request["delta"])
        calibration = {}
        for query in request["queries"]:
            name, sql = query["name"], query["sql"]
            self.sql[name] = sql
            metadata = json.loads(json.dumps(request["metadata"]))
            for schema in metadata.values():
                for tables in schema.values():
                    for table in tables.values():
                        table["censor_dims"] = bool(query["censor_dims"])
            try:
                reader = snsql.from_connection(self.conn, privacy=Privacy(epsilon=epsilon, delta=delta),
                                               metadata=metadata, engine="postgres")
                calibration[name] = self.calibrate(reader, sql, epsilon, delta)
                calibration[name]["censor_dims"] = bool(query["censor_dims"])
                self.readers[name] = reader
            except Exception as exc:  # noqa: BLE001 - smartnoise-sql refuses the query (parser, validator, rewriter)
                calibration[name] = {"refused": message(exc)}
                self.refused[name] = message(exc)
        return {"calibration": calibration, "versions": versions()}

    @staticmethod
    def calibrate(reader, sql: str, epsilon: float, delta: float) -> dict:
        """Per-mechanism epsilon e and Privacy.delta d such that the odometer reports (epsilon, delta).

        The odometer (OdometerHeterogeneous) composes k mechanisms of epsilon e as min(k e, two
        advanced-composition bounds), so e = epsilon / k unless an advanced bound is lower (then e is
        solved for by bisection); its delta is 1 - (1 - d/2) (1 - d)^m, d/2 being the composition
        slack and m the mechanisms that use delta (the key count thresholds of censored dimensions,
        COUNT(DISTINCT private id)). Both are checked against get_privacy_cost at the end."""

        def cost(e: float, d: float) -> tuple[float, float]:
            reader.privacy = Privacy(epsilon=e, delta=d)
            spent = reader.get_privacy_cost(sql)
            return float(spent[0]), float(spent[1])

        at_target = cost(epsilon, delta)
        mechanisms = [c for c in reader._get_mechanism_costs(sql) if c]
        if not mechanisms:
            raise ValueError("smartnoise-sql adds no noise to this query")
        with_delta = sum(1 for _, d in mechanisms if d > 0)
        d = _solve(lambda x: 1 - (1 - x / 2) * (1 - x) ** with_delta, delta, delta)
        e = epsilon / len(mechanisms)
        if cost(e, d)[0] < epsilon * (1 - 1e-9):
            e = _solve(lambda x: cost(x, d)[0], epsilon, e)
        spent = cost(e, d)
        if abs(spent[0] - epsilon) > 1e-6 * epsilon or abs(spent[1] - delta) > 1e-6 * delta:
            raise ValueError(f"cannot calibrate smartnoise-sql to ({epsilon}, {delta}): its odometer "
                             f"reports {spent} for epsilon {e}, delta {d}")
        return {"mechanisms": len(mechanisms), "delta_mechanisms": with_delta, "epsilon_per_mechanism": e,
                "delta_parameter": d, "spent_epsilon": spent[0], "spent_delta": spent[1],
                "unscaled_epsilon": at_target[0], "unscaled_delta": at_target[1]}

    def run(self, request: dict) -> dict:
        name = request["name"]
        reader = self.readers.get(name)
        if reader is None:
            return {"refused": self.refused.get(name, "not calibrated"), "seconds": 0.0}
        started = time.perf_counter()
        try:
            result = reader.execute(self.sql[name])
        except Exception as exc:  # noqa: BLE001 - a refusal, whatever smartnoise-sql raises for it
            return {"refused": message(exc), "seconds": time.perf_counter() - started}
        seconds = time.perf_counter() - started
        columns, rows = result[0], result[1:]
        return {"columns": [str(c) for c in columns], "rows": [[plain(v) for v in row] for row in rows],
                "seconds": seconds}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("smartnoise-sql", "opendp", "psycopg2-binary"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "?"
    return found


def main() -> int:
    worker = Worker()
    out = sys.stdout
    sys.stdout = sys.stderr  # anything the library prints must not corrupt the protocol
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "quit":
            break
        try:
            answer = getattr(worker, request["op"])(request)
        except Exception:  # noqa: BLE001 - reported to the runner, which stops
            answer = {"fatal": traceback.format_exc()}
        out.write(json.dumps(answer) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
