"""The empirical privacy audit: shared by tests/e2e/test_dp_audit.py (small, in
CI) and bench/audit/run.py (full size).

The audit runs a private query through a real pgshroud (the real planner,
a real policy, a real PostgreSQL) many times on each of two neighbouring
databases, D and D' = D plus one adversarial person, and bounds from below
the privacy loss the answers show, in the style of DP-Sniper (Bichsel et
al. 2021) and StatDP (Ding et al. 2018):

1. Each answer is reduced to a few scalar statistics: each output cell,
   the row each group lands at (a release whose row order depends on the
   data shows it there, not in any value), the sum of all cells, and, over
   the cells the adversary writes to, their sum and their minimum (cells
   are centred on their medians under D, so that a minimum compares like
   with like).
2. The samples of each database are split in two halves. On the first
   (selection) half, every event `statistic >= t` and `statistic <= t`,
   for thresholds t at the observed values, is scored in both directions,
   P[S|D] / P[S|D'] and P[S|D'] / P[S|D], by the same bound as in step 3;
   the best-scoring event and direction is kept.
3. On the second (test) half, which played no part in choosing the event,
   that one event's probabilities are bounded with one-sided
   Clopper-Pearson intervals, each at confidence 1 - alpha/2:
   eps_lb = ln(lower bound of the larger / upper bound of the smaller).

If the mechanism is epsilon-DP, every event has P[S|D] <= e^eps P[S|D']
and the other way round, so eps_lb > epsilon happens only when one of the
two intervals misses, with probability at most alpha. A mechanism whose
noise is too small shows a larger ratio on tail events, which the test half
then confirms.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

import numpy as np
import psycopg
from psycopg.conninfo import make_conninfo
from scipy import stats

from pgshroud.policies.loader import loads_policy
from pgshroud.policies.model import Policy
from pgshroud.rewriter import PlanContext, plan
from pgshroud.rewriter.plans import Cost, RawResult, Release  # noqa: F401 (Cost: test_dp_audit reads A.Cost)
from tests.memory_ledger import MemoryLedger

# --- the small audit database ---------------------------------------------

ROLE = "dp_auditor"  # the policy's aggregate role, and the PostgreSQL login behind it
WARDS = ("north", "south", "east", "west")
MAX_GROUPS, MAX_ROWS = 2, 3
LOW, HIGH = 0, 100
ADVERSARY = 0  # the person_id only D' has

AUDIT_POLICY = f"""
version: 1
default_role: deny
roles:
  {ROLE}: {{access: aggregate, users: [{ROLE}]}}
protected_tables:
  claims:
    privacy_unit: person_id
    contribution: {{max_groups_per_unit: {MAX_GROUPS}, max_rows_per_group: {MAX_ROWS}}}
    columns:
      person_id: pseudonym
      ward: {{mask: none, public_domain: [{", ".join(WARDS)}]}}
      amount: {{mask: none, bounds: [{LOW}, {HIGH}]}}
privacy:
  per_query:
    # Not the audit's epsilon: the audit sets it with SET pgshroud.epsilon,
    # and the ledger's charges show that the SET took effect.
    epsilon: {{default: 0.25, max: 4.0}}
    # Up to 0.1, so that the partition selection audit can see delta at work.
    delta: {{default: 1.0e-7, max: 0.1}}
"""

SCHEMA = f"""
DROP TABLE IF EXISTS claims;
CREATE TABLE claims (person_id integer NOT NULL, ward text, amount numeric);
GRANT SELECT ON claims TO {ROLE};
"""

# 100 people with 1 to 6 claims each (350 rows: nobody above the allowance
# of MAX_GROUPS x MAX_ROWS rows), each in at most MAX_GROUPS wards, so that
# bounding keeps all their rows and groups and the bounded totals of D are
# the same on every run; small amounts (0..4,
# near the low bound, so that the count in an average matters), a few above
# the bounds, a few NULL.
BASE_ROWS = f"""
INSERT INTO claims
SELECT p,
       (ARRAY{list(WARDS)})[1 + (p + j % 2) % 4],
       CASE WHEN (p + j) % 41 = 0 THEN NULL
            WHEN (p * j) % 29 = 0 THEN 250
            ELSE (p * 13 + j * 7) % 5 END
FROM generate_series(1, 100) AS p, generate_series(1, 6) AS j
WHERE j <= 1 + p % 6;
"""

# D''s extra person: a thousand claims, all in one ward (bounding allows a
# person `max_groups x max_rows` rows over all groups, so the whole
# allowance lands in that ward: the largest shift of one cell there is),
# with extreme amounts, far above the bounds or infinite. Half and half, so
# that grouped by amount the allowance splits evenly (3 and 3 rows) and the
# person is in two groups of its own, as many as are counted (max_groups).
ADVERSARY_ROWS = f"""
INSERT INTO claims
SELECT {ADVERSARY}, 'north', CASE WHEN g % 2 = 0 THEN 'Infinity'::numeric ELSE 1e12 END
FROM generate_series(1, 1000) AS g;
"""
ADVERSARY_GROUPS = ("north",)

# For the exact bounding check only: a person who writes everywhere, with
# everything that could escape a clamp (NaN, infinities, huge negatives,
# NULLs, wards outside the public domain and NULL wards).
WILD_ADVERSARY_ROWS = f"""
INSERT INTO claims
SELECT {ADVERSARY},
       (ARRAY['north', 'south', 'east', 'west', 'elsewhere', NULL])[1 + g % 6],
       (ARRAY['1e12', '-1e12', 'NaN', 'Infinity', '-Infinity', NULL, '100', '0'])[1 + g % 8]::numeric
FROM generate_series(1, 5000) AS g;
"""


@dataclass(frozen=True)
class AuditQuery:
    """One query of the audit.

    `keys`: how many leading output columns are group keys; the rest are
    values. `focus`: the groups the adversary writes to (None: the only
    group of an ungrouped query)."""

    name: str
    sql: str
    keys: int = 0
    focus: tuple[str, ...] | None = None


# Answers per database in CI. The average needs more: its privacy loss is
# split between a noisy sum and a noisy count, so single events on its
# output show less of it (see bench/README.md).
CI_SAMPLES = {"count": 4000, "sum": 4000, "grouped count": 4000, "avg": 16000, "one person's wards": 1000}

QUERIES: tuple[AuditQuery, ...] = (
    AuditQuery("count", "SELECT count(*) FROM claims"),
    AuditQuery("sum", "SELECT sum(amount) FROM claims"),
    AuditQuery("grouped count", "SELECT ward, count(*) FROM claims GROUP BY ward", keys=1,
               focus=ADVERSARY_GROUPS),
    AuditQuery("avg", "SELECT avg(amount) FROM claims"),
)


# One person's rows grouped by a public key. PostgreSQL lists the groups
# that hold rows first and pgshroud appends the empty ones, so a release in
# PostgreSQL's order tells D (no rows of the adversary: every ward empty,
# in order) from D' (north first) by the rows' positions alone.
ORDER_QUERY = AuditQuery("one person's wards",
                         f"SELECT ward, count(*) FROM claims WHERE person_id = {ADVERSARY} GROUP BY ward", keys=1,
                         focus=ADVERSARY_GROUPS)


# A key without a public domain: groups go through private partition
# selection. The adversary's amounts (1e12 and infinity) are groups that only
# it creates, as many as bounding keeps; each may be shown with probability
# at most delta / max_groups, so that one of them is, at most delta.
PARTITION_QUERY = AuditQuery("partition selection", "SELECT amount, count(*) FROM claims GROUP BY amount", keys=1)


def audit_policy() -> Policy:
    return loads_policy(AUDIT_POLICY, "dp-audit-policy.yaml")


def create_audit_databases(execute: Callable[[str, str], object], names: dict[str, str]) -> None:
    """Create the role and the databases `names["d"]`, `names["d_prime"]`
    (D plus the adversary) and `names["wild"]` (D plus the wild adversary).
    `execute(sql, dbname)` runs SQL as a superuser."""
    if not _role_exists(execute):
        execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{ROLE}'", "postgres")
    extra = {"d": "", "d_prime": ADVERSARY_ROWS, "wild": WILD_ADVERSARY_ROWS}
    for which, dbname in names.items():
        execute(f"DROP DATABASE IF EXISTS {dbname}", "postgres")
        execute(f"CREATE DATABASE {dbname}", "postgres")
        execute(SCHEMA + BASE_ROWS + extra[which] + "ANALYZE claims;", dbname)


def _role_exists(execute: Callable[[str, str], object]) -> bool:
    rows = execute(f"SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}'", "postgres")
    return bool(rows)


# --- pgshroud in this process ----------------------------------------------


# The audit's ledger: no limit, every charge recorded as (user, cost) in `charges`.
CountingLedger = MemoryLedger


def start_audit_proxy(upstream_dsn: str, policy: Policy, catalog_dsn: str, ledger: CountingLedger):
    """pgshroud with the real planner, `policy` and `ledger`, in this process
    (so that a monkeypatch of the rewriter applies to it)."""
    from pgshroud.proxy.ops.catalog import read_catalog
    from pgshroud.proxy.session.driver import SessionContext
    from tests.fix_proxy import RunningProxy, proxy_config

    catalog = asyncio.run(read_catalog(catalog_dsn))
    # No answer cache: the audit needs fresh noise at every query.
    shared = SessionContext(proxy_config(upstream_dsn, answer_cache_seconds=0), plan, ledger, policy, lambda: catalog)
    return RunningProxy(shared)


def proxy_dsn(proxy, user: str, dbname: str, password: str | None = None) -> str:
    return make_conninfo(host=proxy.host, port=proxy.port, user=user, dbname=dbname,
                         password=user if password is None else password, sslmode="disable")


# --- sampling through the wire ---------------------------------------------

Answer = dict[str, float]  # output cell ("value", "<group>/<column>" or "<group>/#row") -> value
ROW = "#row"  # the cell of a group's row index in its answer


def answer_of(rows: Sequence[tuple], columns: Sequence[str], keys: int) -> Answer:
    cells: Answer = {}
    for index, row in enumerate(rows):
        group = "/".join(str(k) for k in row[:keys])
        if keys:
            cells[f"{group}/{ROW}"] = float(index)
        for name, value in zip(columns[keys:], row[keys:]):
            cell = f"{group}/{name}" if keys else name
            cells[cell] = math.nan if value is None else float(value)
    return cells


def sample(dsn: str, query: AuditQuery, n: int, epsilon: str, batch: int = 100,
           protocol: str = "pipeline", delta: str | None = None) -> list[Answer]:
    """`n` answers to `query` at `SET pgshroud.epsilon = epsilon`, on one
    connection.

    protocol "pipeline": the statement is prepared once (one Parse, so one
    plan) and executed `batch` times per round trip in psycopg's pipeline
    mode; each Execute is a separate release, charged and noised on its own.
    protocol "simple": `batch` copies of the statement in one simple Query
    message, each planned and released on its own (about 2-3 times slower).
    """
    answers: list[Answer] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, value in (("epsilon", epsilon), ("delta", delta)):
            if value is None:
                continue
            conn.execute(f"SET pgshroud.{name} = {value}")
            shown = conn.execute(f"SHOW pgshroud.{name}").fetchone()[0]
            if Fraction(shown) != Fraction(value):
                raise AssertionError(f"SET pgshroud.{name} = {value} did not hold: SHOW says {shown}")
        while len(answers) < n:
            count = min(batch, n - len(answers))
            if protocol == "pipeline":
                with conn.pipeline():
                    cursors = [conn.cursor() for _ in range(count)]
                    for cursor in cursors:
                        cursor.execute(query.sql, prepare=True)
                for cursor in cursors:
                    columns = [d.name for d in cursor.description]
                    answers.append(answer_of(cursor.fetchall(), columns, query.keys))
            elif protocol == "simple":
                cursor = psycopg.ClientCursor(conn)
                cursor.execute(";".join([query.sql] * count))
                while True:
                    columns = [d.name for d in cursor.description]
                    answers.append(answer_of(cursor.fetchall(), columns, query.keys))
                    if not cursor.nextset():
                        break
            else:
                raise ValueError(f"unknown protocol {protocol!r}")
    return answers


# --- the statistics: Clopper-Pearson bounds and the event search ---------


def cp_lower(k: int | np.ndarray, n: int, alpha: float) -> float | np.ndarray:
    """One-sided Clopper-Pearson lower bound on p from k successes in n
    trials: P[bound > p] <= alpha."""
    k = np.asarray(k, dtype=float)
    with np.errstate(all="ignore"):
        bound = stats.beta.ppf(alpha, k, n - k + 1)
    return np.where(k <= 0, 0.0, bound)


def cp_upper(k: int | np.ndarray, n: int, alpha: float) -> float | np.ndarray:
    """One-sided Clopper-Pearson upper bound: P[bound < p] <= alpha."""
    k = np.asarray(k, dtype=float)
    with np.errstate(all="ignore"):
        bound = stats.beta.isf(alpha, k + 1, n - k)
    return np.where(k >= n, 1.0, bound)


def _log_ratio_bound(k_num, n_num: int, k_den, n_den: int, alpha: float):
    lower = cp_lower(k_num, n_num, alpha / 2)
    upper = cp_upper(k_den, n_den, alpha / 2)
    with np.errstate(divide="ignore"):
        return np.log(lower) - np.log(upper)


@dataclass(frozen=True)
class Event:
    statistic: str
    above: bool  # statistic >= threshold, else statistic <= threshold
    threshold: float
    numerator: str  # "D" or "D'": the database whose probability is the larger

    def holds(self, values: np.ndarray) -> np.ndarray:
        return values >= self.threshold if self.above else values <= self.threshold

    def describe(self) -> str:
        return f"{self.statistic} {'>=' if self.above else '<='} {self.threshold:g} (more likely on {self.numerator})"


@dataclass(frozen=True)
class AuditResult:
    """The held-out bound for the event chosen on the selection half."""

    epsilon_lb: float
    event: Event
    p_d: float  # the test half's frequencies of the event
    p_d_prime: float
    n_test: int  # answers per database in the test half
    alpha: float

    @property
    def row(self) -> dict[str, object]:
        return {"eps_lb": self.epsilon_lb, "event": self.event.describe(), "P[S|D]": self.p_d,
                "P[S|D']": self.p_d_prime, "n": self.n_test}


def statistics_of(answers: Sequence[Answer], centre: Answer, focus: Iterable[str]) -> dict[str, np.ndarray]:
    """The scalar statistics of each answer (see the module docstring)."""
    cells = sorted(centre)
    matrix = np.array([[a.get(c, math.nan) - centre[c] for c in cells] for a in answers])
    matrix = np.nan_to_num(matrix, nan=-1e300)
    found = {cell: matrix[:, i] for i, cell in enumerate(cells)}
    if len(cells) > 1:
        found["sum of all cells"] = matrix.sum(axis=1)
    focused = [i for i, c in enumerate(cells) if c.split("/")[0] in set(focus)]
    if len(focused) > 1:
        found["sum over the adversary's cells"] = matrix[:, focused].sum(axis=1)
        found["min over the adversary's cells"] = matrix[:, focused].min(axis=1)
    return found


def _centre(answers: Sequence[Answer]) -> Answer:
    cells = sorted({c for a in answers for c in a})
    return {c: float(np.nanmedian([a.get(c, math.nan) for a in answers])) for c in cells}


def _best_event(d: dict[str, np.ndarray], dp: dict[str, np.ndarray], alpha: float) -> tuple[Event, float]:
    best: tuple[Event, float] | None = None
    for name, values in d.items():
        x, y = np.sort(values), np.sort(dp[name])
        thresholds = np.unique(np.concatenate([x, y]))
        if len(thresholds) > 2000:
            thresholds = np.unique(np.quantile(thresholds, np.linspace(0, 1, 2000)))
        for above in (True, False):
            if above:
                k_d = len(x) - np.searchsorted(x, thresholds, side="left")
                k_p = len(y) - np.searchsorted(y, thresholds, side="left")
            else:
                k_d = np.searchsorted(x, thresholds, side="right")
                k_p = np.searchsorted(y, thresholds, side="right")
            for numerator, k_num, n_num, k_den, n_den in (("D", k_d, len(x), k_p, len(y)),
                                                          ("D'", k_p, len(y), k_d, len(x))):
                scores = _log_ratio_bound(k_num, n_num, k_den, n_den, alpha)
                i = int(np.argmax(scores))
                if best is None or scores[i] > best[1]:
                    best = (Event(name, above, float(thresholds[i]), numerator), float(scores[i]))
    assert best is not None
    return best


def audit(d: Sequence[Answer], d_prime: Sequence[Answer], focus: Iterable[str] = (), alpha: float = 1e-3,
          selection: float = 0.5, selection_alpha: float | None = None) -> AuditResult:
    """A lower bound on the privacy loss between D and D' from their answers,
    valid (not above the true loss of the chosen event) with probability at
    least 1 - alpha over the test half. Events are scored on the selection
    half at `selection_alpha` (default alpha / 100): stricter than the test,
    so that a rare event that looked good by chance loses to a likelier
    one with the same ratio."""
    if selection_alpha is None:
        selection_alpha = alpha / 100
    cut_d, cut_p = int(len(d) * selection), int(len(d_prime) * selection)
    centre = _centre(d[:cut_d])
    focus = tuple(focus)
    event, _ = _best_event(statistics_of(d[:cut_d], centre, focus),
                           statistics_of(d_prime[:cut_p], centre, focus), selection_alpha)
    test_d = event.holds(statistics_of(d[cut_d:], centre, focus)[event.statistic])
    test_p = event.holds(statistics_of(d_prime[cut_p:], centre, focus)[event.statistic])
    n_d, n_p = len(test_d), len(test_p)
    k_d, k_p = int(test_d.sum()), int(test_p.sum())
    if event.numerator == "D":
        bound = _log_ratio_bound(k_d, n_d, k_p, n_p, alpha)
    else:
        bound = _log_ratio_bound(k_p, n_p, k_d, n_d, alpha)
    return AuditResult(float(bound), event, k_d / n_d, k_p / n_p, min(n_d, n_p), alpha)


@dataclass(frozen=True)
class DeltaResult:
    """How often answers on D' show a group that only the adversary is in
    (never on D: the group does not exist there)."""

    shown: int
    n: int
    lower: float  # Clopper-Pearson bounds at 1 - alpha each
    upper: float

    @property
    def rate(self) -> float:
        return self.shown / self.n


def tight_delta(release: Release, target: float = 0.04) -> str:
    """The largest delta at most `target` that is a tail probability of the
    release's selection noise: P(noise >= m) = q**m / (1 + q) for a whole
    m (rounded up in the 12th digit). With a discrete noise most deltas fall
    between two thresholds, with slack; at this one, a threshold that lets
    each of a person's groups be kept with probability up to delta has none,
    and the correct one (delta / max_groups each) has little (for the CI
    query, one group of the two is kept with probability 0.93 delta)."""
    q = math.exp(-1 / float(release.spec.selection.mechanism.scale))
    m = 0
    while q**m / (1 + q) > target:
        m += 1
    return f"{q**m / (1 + q) * (1 + 1e-11):.12g}"


def delta_audit(answers: Sequence[Answer], known_groups: Iterable[str], alpha: float) -> DeltaResult:
    """How many answers show a group outside `known_groups` (D's groups,
    as `answer_of` names them)."""
    known = set(known_groups)
    shown = sum(any(cell.rsplit("/", 1)[0] not in known for cell in answer) for answer in answers)
    n = len(answers)
    return DeltaResult(shown, n, float(cp_lower(shown, n, alpha)), float(cp_upper(shown, n, alpha)))


def groups_in(conn: psycopg.Connection, key_sql: str) -> set[str]:
    """The distinct values of a group key on a database, named as `answer_of` names groups."""
    return {str(value) for (value,) in conn.execute(f"SELECT DISTINCT {key_sql}").fetchall()}


# --- the exact bounding check ---------------------------------------------


def private_release(sql: str, policy: Policy, catalog, epsilon: str = "1", user: str = ROLE,
                    role: str = ROLE, delta: str | None = None) -> Release:
    """The planner's Release of one private query."""
    privacy = {"epsilon": epsilon} if delta is None else {"epsilon": epsilon, "delta": delta}
    (only,) = plan(sql, PlanContext(user=user, policy=policy, role=policy.roles[role], catalog=catalog,
                                    privacy=privacy))
    assert isinstance(only, Release), f"{sql!r} was not planned as a private release: {only}"
    return only


def bounded_totals(conn: psycopg.Connection, release: Release) -> dict[tuple, tuple[Fraction, ...]]:
    """The raw totals of a Release's bounded SQL, run directly on
    PostgreSQL: (kind, bucket, key...) -> (units, m1, m2, ...). Kind 0 rows
    (bucket None) hold a group's unit count and measurements; a histogram
    row of measurement i has kind i and a bucket, and its count as units."""
    width = len(release.spec.query.keys)
    totals: dict[tuple, tuple[Fraction, ...]] = {}
    for row in conn.execute(release.sql).fetchall():
        kind, bucket, key, values = int(row[0]), row[1], tuple(row[2:2 + width]), row[2 + width:]
        totals[(kind, bucket, *key)] = tuple(Fraction(Decimal(v)) if v is not None else Fraction(0)
                                             for v in values)
    return totals


def raw_result(conn: psycopg.Connection, release: Release) -> RawResult:
    """The bounded SQL's rows as pgshroud receives them (text)."""
    cursor = conn.execute(release.sql)
    rows = tuple(tuple(None if v is None else str(v) for v in row) for row in cursor.fetchall())
    return RawResult(tuple(d.name for d in cursor.description), tuple(d.type_code for d in cursor.description), rows)


def simulate(release: Release, raws: Sequence[RawResult], query: AuditQuery, n: int,
             rng: random.Random) -> list[Answer]:
    """`n` answers from the release step alone, offline: the planner's
    PrivateRelease finalizing raw totals with a seeded generator instead of
    the CSPRNG, answer i from `raws[i % len(raws)]` (runs of the bounded
    SQL, which chooses groups at random). Only for estimating how the
    audit's bound spreads and how often it misses."""
    spec = dataclasses.replace(release.spec, rng=rng)
    answers = []
    for i in range(n):
        answer = spec.finalize(raws[i % len(raws)])
        answers.append(answer_of(answer.rows, [c.name for c in answer.columns], query.keys))
    return answers


class Timer:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started
