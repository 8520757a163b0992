"""Aggregate SQL exactly as BI tools and ORMs write it, answered privately.

Every `*.sql` file under tests/bi_queries/aggregates/<tool>/ is one
statement shaped as the named tool sends it (see that folder's README for
the header format). Each runs through pgshroud with the healthcare policy:

- as the analyst (aggregate role): answered with the admin's direct
  answer's column names and type OIDs, only groups the direct answer has
  (partition selection may hold some back), values near the exact ones
  (within the 95% margins the notice reports, widened for contribution
  bounding), and charged; or refused by design with the file's SQLSTATE and
  words, and nothing charged;
- as the clinician (masked role): answered with the same columns, on masked
  rows, unless the file says otherwise.

The corpus is the specification of what pgshroud must answer: a file whose
statement fails here is a missing feature or a bug, never a reason to
change the file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pgshroud.policies.model import Budgets, EpsilonDelta, PrivacyDefaults
from pgshroud.proxy.budget.ledger import PostgresLedger
from pgshroud.proxy.commands.setup import run_setup
from pgshroud.proxy.ops.catalog import read_catalog
from pgshroud.proxy.session.driver import SessionContext
from pgshroud.rewriter import plan
from tests.fix_proxy import RunningProxy, proxy_config

pytestmark = pytest.mark.clients

CORPUS = Path(__file__).resolve().parents[1] / "bi_queries" / "aggregates"
TOOLS = ("metabase", "superset", "looker", "tableau", "powerbi", "grafana", "redash", "django",
         "sqlalchemy", "prisma", "knex", "sequelize", "pandas")
ROLES = ("analyst", "clinician")
# A high epsilon makes the noise small enough for a comparison with the exact answer
# to find a wrong column or a bias; the policy is the demo's otherwise.
EPSILON = 8.0
LEDGER_DB = "bi_aggregates_ledger"
NUMERIC_OIDS = frozenset({20, 21, 23, 700, 701, 1700})  # int8, int2, int4, float4, float8, numeric
PARSER_WORDS = ("sqlglot", "<class", "exp.", "ParseError", "Token")
MARGINS = re.compile(r"95% margins of error[^:]*:\s*(?P<list>.*)$")


# ---------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Outcome:
    """What a role must get: answered, or refused with this SQLSTATE and words."""

    refused: bool = False
    sqlstate: str = ""
    words: str = ""

    @classmethod
    def parse(cls, value: str) -> Outcome:
        kind, _, rest = value.strip().partition(" ")
        if kind == "answered" and not rest:
            return cls()
        if kind == "refused":
            sqlstate, _, words = rest.strip().partition(" ")
            if re.fullmatch(r"[0-9A-Z]{5}", sqlstate) and words.strip():
                return cls(True, sqlstate, words.strip())
        raise ValueError(f"expected 'answered' or 'refused <SQLSTATE> <words>', got {value!r}")


@dataclass
class AggregateQuery:
    path: Path
    title: str
    sql: str
    source: str = ""
    analyst: Outcome = Outcome()
    clinician: Outcome = Outcome()
    params: list[Any] | None = None
    roles: tuple[str, ...] = ROLES
    keys: tuple[str, ...] | None = None  # output columns naming a group; default: the non-numeric ones
    ranked: bool = False  # a top-N of noisy values: a released group may rank just outside the exact top N
    domain_groups: bool = True  # groups of a public domain may be released though no row has them
    # Columns whose noise no notice reports and can exceed their value (a deviation near zero):
    # released values must lie in the range the policy's bounds allow, instead of near the exact.
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    charged: bool = True  # an analyst's answer costs budget (a zero-row probe does not)
    protocol: str = "extended"  # as JDBC, Npgsql, pgx and psycopg 3 send it; "simple": as psycopg2 and node-postgres do
    before: list[str] = field(default_factory=list)  # statements sent first (BEGIN)
    then: list[str] = field(default_factory=list)  # statements sent after it (FETCH, CLOSE, COMMIT)

    @property
    def name(self) -> str:
        return str(self.path.relative_to(CORPUS).with_suffix(""))


def load_query(path: Path) -> AggregateQuery:
    # The header is the leading comment lines up to the first blank line, so that a
    # statement may start with the comment a tool puts in front of it (Metabase does).
    header, body = [], []
    lines = path.read_text().splitlines()
    for index, line in enumerate(lines):
        if not line.startswith("--"):
            body = lines[index:]
            break
        header.append(line[2:].strip())
    if not header:
        raise ValueError(f"{path}: no header naming the tool")
    query = AggregateQuery(path, header[0], "\n".join(body).strip().removesuffix(";"))
    for line in header[1:]:
        key, _, value = line.partition(":")
        apply_header(query, key.strip(), value.strip(), path)
    if not query.sql:
        raise ValueError(f"{path}: no statement")
    if not query.source:
        raise ValueError(f"{path}: no 'source:' naming what the statement was modelled on")
    return query


def apply_header(query: AggregateQuery, key: str, value: str, path: Path) -> None:
    if key == "source":
        query.source = value
    elif key == "expect":
        query.analyst = Outcome.parse(value)
    elif key == "clinician":
        query.clinician = Outcome.parse(value)
    elif key == "params":
        query.params = json.loads(value)
    elif key == "roles":
        query.roles = tuple(r.strip() for r in value.split(","))
    elif key == "keys":
        query.keys = tuple(k.strip() for k in value.split(",") if k.strip())
    elif key == "ranked":
        query.ranked = value == "yes"
    elif key == "groups":
        if value not in ("direct", "domain"):
            raise ValueError(f"{path}: groups: expected 'direct' or 'domain', got {value!r}")
        query.domain_groups = value == "domain"
    elif key == "range":
        column, low, high = value.rsplit(" ", 2)
        query.ranges[column.strip()] = (float(low), float(high))
    elif key == "charged":
        query.charged = value != "no"
    elif key == "protocol":
        if value not in ("simple", "extended"):
            raise ValueError(f"{path}: protocol: expected 'simple' or 'extended', got {value!r}")
        query.protocol = value
    elif key == "before":
        query.before.append(value)
    elif key == "then":
        query.then.append(value)
    elif key == "note":
        pass
    else:
        raise ValueError(f"{path}: unknown header key {key!r}")


QUERIES = [load_query(p) for p in sorted(CORPUS.rglob("*.sql"))]


def test_the_corpus_covers_the_tools():
    assert len(QUERIES) >= 60
    found = {q.path.parent.name for q in QUERIES}
    assert found <= set(TOOLS), found - set(TOOLS)
    assert found == set(TOOLS), f"no files yet for {set(TOOLS) - found}"
    assert any(q.analyst.refused for q in QUERIES) and any(q.params for q in QUERIES)


# -------------------------------------------------------------------- pgshroud


@pytest.fixture(scope="module")
def ledger_db(pg) -> Iterator[str]:
    """A database of its own for the corpus's privacy budget ledger: the corpus spends
    thousands of epsilon, which in `health`'s ledger would count against the analyst
    role's and the dataset's budgets of the tests that run after it."""
    pg.execute(f"DROP DATABASE IF EXISTS {LEDGER_DB} WITH (FORCE)")
    pg.execute(f"CREATE DATABASE {LEDGER_DB}")
    assert run_setup(pg.admin_dsn(LEDGER_DB), key_env=None, key_file=None, rotate_key=False, grant_to=[],
                     out=io.StringIO()) == 0
    yield pg.admin_dsn(LEDGER_DB)
    pg.execute(f"DROP DATABASE IF EXISTS {LEDGER_DB} WITH (FORCE)")


@pytest.fixture(scope="module")
def aggregates_proxy(pg, health_db, health_policy, ledger_db) -> Iterator[RunningProxy]:
    """The analyst's pgshroud: the `guarded` one (healthcare policy in front of `health`)
    with what private answers need and `guarded` lacks, a privacy budget ledger, and a
    budget no run of the corpus exhausts, at EPSILON per query."""
    policy = dataclasses.replace(
        health_policy,
        budgets=Budgets(per_user=EpsilonDelta(1_000_000, 1.0)),
        privacy=PrivacyDefaults(default=EpsilonDelta(EPSILON, 1e-7), maximum=EpsilonDelta(EPSILON, 1e-5)),
    )
    catalog = asyncio.run(read_catalog(health_db))
    upstream = make_conninfo(pg.dsn(), sslmode="disable")
    ledger = PostgresLedger(ledger_db, policy)
    proxy = RunningProxy(SessionContext(proxy_config(upstream), plan, ledger=ledger, policy=policy,
                                        catalog=lambda: catalog))
    yield proxy
    proxy.stop()


def admin_direct(pg) -> str:
    """The policy's raw user, straight to PostgreSQL: the exact answer."""
    return make_conninfo(pg.dsn(user="admin", password="admin", dbname="health"), sslmode="disable")


@dataclass
class Answer:
    names: list[str]
    oids: list[int]
    rows: list[tuple]
    notices: list[str]


class Refused(Exception):
    def __init__(self, error: psycopg.Error, statement: str) -> None:
        super().__init__(f"SQLSTATE {error.sqlstate}: {error}")
        self.error = error
        self.statement = statement


def send(conn: psycopg.Connection, statement: str, params: list[Any] | None, protocol: str) -> psycopg.Cursor:
    """One statement as the tool's driver sends it. Extended: Parse, Bind (params as $1, $2,
    ...), Describe, Execute, Sync of an unnamed statement, as JDBC, Npgsql, pgx and psycopg 3
    do (psycopg sends a statement without params as a simple Query outside a pipeline).
    Simple: one Query with the params quoted into the text, as psycopg2, Django's default
    client-side binding and node-postgres without values do."""
    if protocol == "simple":
        cursor = psycopg.ClientCursor(conn)
        cursor.execute(statement, params)
        return cursor
    with conn.pipeline() as pipeline:
        cursor = conn.execute(statement, params)
        pipeline.sync()
    return cursor


def run(conninfo: str, query: AggregateQuery) -> Answer:
    """The query's statements on a new connection; the answer is the last one's that has
    columns."""
    notices: list[str] = []
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        answer = None
        for statement in [*query.before, query.sql, *query.then]:
            params = query.params if statement is query.sql else None
            try:
                cursor = send(conn, statement, params, query.protocol)
            except psycopg.Error as exc:
                if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                    conn.execute("ROLLBACK")
                raise Refused(exc, statement) from exc
            if cursor.description is not None:
                answer = Answer([d.name for d in cursor.description], [d.type_code for d in cursor.description],
                                cursor.fetchall(), notices)
        assert answer is not None, f"{query.name}: no statement returned columns"
        return answer


def budget(conninfo: str) -> str:
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        return conn.execute("SHOW pgshroud.budget").fetchone()[0]


@pytest.fixture(scope="module")
def direct_answers(pg, health_db) -> dict[str, Answer | Refused]:
    answers: dict[str, Answer | Refused] = {}
    for query in QUERIES:
        try:
            answers[query.name] = run(admin_direct(pg), query)
        except Refused as refused:
            answers[query.name] = refused
    return answers


# ----------------------------------------------------------------- comparisons


def margins(notices: list[str]) -> dict[str, float]:
    """Each output column's 95% margin of error, as the release's notice reports it."""
    found: dict[str, float] = {}
    for notice in notices:
        match = MARGINS.search(notice)
        if match is None:
            continue
        for part in match.group("list").split(", "):
            name, sep, value = part.rpartition(" ±")
            if sep:
                found[name.strip()] = float(value)
    return found


def key_columns(query: AggregateQuery, answer: Answer) -> list[int]:
    if query.keys is not None:
        missing = [k for k in query.keys if k not in answer.names]
        assert not missing, f"{query.name}: keys {missing} are not output columns {answer.names}"
        return [answer.names.index(k) for k in query.keys]
    return [i for i, oid in enumerate(answer.oids) if oid not in NUMERIC_OIDS]


def near(noisy: Any, exact: Any, margin: float | None, scale: float) -> bool:
    """Whether a released value is what an unbiased mechanism over the right column gives.
    Contribution bounding (at most 10 rows per person and group, values clamped to the
    policy's bounds) moves counts and sums by up to a third here, so the tolerance is the
    noise's margin three times over plus half the exact value. Without a reported margin
    (min, max, percentiles, deviations) it is four times the larger of the exact value and
    `scale`, the largest exact value of the column. Either fails for a wrong column, a
    wrong aggregate or a gross bias, not for noise or bounding."""
    if exact is None:
        return True
    if noisy is None:
        return False
    if isinstance(exact, list):  # percentile_cont of an array of fractions, say
        return (isinstance(noisy, list) and len(noisy) == len(exact)
                and all(near(n, e, margin, scale) for n, e in zip(noisy, exact)))
    if not isinstance(exact, (int, float, Decimal)):
        return True  # a date or text aggregate: its type was compared
    noisy, exact = float(noisy), float(exact)
    if math.isnan(noisy):
        return False
    if margin is None:
        return abs(noisy - exact) <= 4 * max(abs(exact), scale, 1.0)
    return abs(noisy - exact) <= 3 * margin + 0.5 * abs(exact) + 1


def empty(noisy: Any, margin: float | None) -> bool:
    """Whether a released value is what an empty group gives: a count or sum near zero.
    Values without a margin (an average or a median of no rows) may be anything."""
    if margin is None or noisy is None or not isinstance(noisy, (int, float, Decimal)):
        return True
    return abs(float(noisy)) <= 3 * margin + 1


def column_scale(rows: list[tuple], index: int) -> float:
    values = [row[index] for row in rows]
    numbers = [v for value in values for v in (value if isinstance(value, list) else [value])
               if isinstance(v, (int, float, Decimal))]
    return max((abs(float(v)) for v in numbers), default=0.0)


def compare_private(query: AggregateQuery, got: Answer, exact: Answer) -> list[str]:
    problems = []
    if got.names != exact.names:
        problems.append(f"column names {got.names}, directly {exact.names}")
    if got.oids != exact.oids:
        problems.append(f"type OIDs {got.oids}, directly {exact.oids}")
    if problems:
        return problems
    keys = key_columns(query, exact)
    by_key = {tuple(row[i] for i in keys): row for row in exact.rows}
    if len(by_key) != len(exact.rows):
        return [(f"keys {[exact.names[i] for i in keys]} do not identify the direct answer's rows; "
                f"name them with '-- keys:'")]
    if not keys and len(got.rows) != len(exact.rows):
        return [f"{len(got.rows)} rows, directly {len(exact.rows)}"]
    found = margins(got.notices)
    values = [i for i in range(len(got.names)) if i not in keys]
    misses: dict[int, list[str]] = {i: [] for i in values}
    for row in got.rows:
        key = tuple(row[i] for i in keys)
        direct = by_key.get(key)
        if direct is None:
            if query.ranked:
                continue
            if query.domain_groups and all(empty(row[i], found.get(got.names[i])) for i in values):
                continue  # a value of the column's public domain that no row has
            problems.append(f"released group {key!r} is not in the direct answer: {row!r}")
            continue
        for i in values:
            margin = found.get(got.names[i])
            if got.names[i] in query.ranges:
                low, high = query.ranges[got.names[i]]
                if row[i] is None or not low <= float(row[i]) <= high:
                    problems.append(f"{got.names[i]} of group {key!r}: released {row[i]!r}, outside [{low}, {high}]")
                continue
            if not near(row[i], direct[i], margin, column_scale(exact.rows, i) if margin is None else 0.0):
                misses[i].append(f"{got.names[i]} of group {key!r}: released {row[i]!r}, exactly {direct[i]!r} "
                                 f"(margin {margin})")
    for i, missed in misses.items():
        # Without a margin, a small group's percentile or deviation is mostly noise; a wrong
        # column or a bias shows in most groups.
        if missed and (got.names[i] in found or 2 * len(missed) > len(got.rows)):
            problems += missed
    return problems


def describe(query: AggregateQuery) -> str:
    params = f"\nparams: {query.params}" if query.params is not None else ""
    return f"{query.name} ({query.title}; {query.source})\nstatement:\n{query.sql}{params}"


# ----------------------------------------------------------------------- tests

CASES = [pytest.param(q, role, id=f"{q.name}-{role}") for q in QUERIES for role in ROLES if role in q.roles]


@pytest.mark.parametrize(("query", "role"), CASES)
def test_bi_aggregate(guarded, aggregates_proxy, direct_answers, query, role):
    exact = direct_answers[query.name]
    if isinstance(exact, Refused):
        pytest.fail(f"PostgreSQL itself rejects the statement of {describe(query)}\n{exact}", pytrace=False)
    # The clinician needs no ledger: the suite's `guarded` pgshroud serves it as configured.
    conninfo = (aggregates_proxy if role == "analyst" else guarded).dsn(role, "health")
    expected = query.analyst if role == "analyst" else query.clinician
    before = budget(conninfo) if role == "analyst" else None
    try:
        got = run(conninfo, query)
    except Refused as refused:
        got = refused
    spent = role == "analyst" and budget(conninfo) != before
    if expected.refused:
        assert isinstance(got, Refused), (
            f"{describe(query)}\nmust be refused for {role} by design ({expected.sqlstate} {expected.words}); "
            f"it was answered with {len(got.rows)} rows")
        assert got.error.sqlstate == expected.sqlstate and expected.words.lower() in str(got.error).lower(), (
            f"{describe(query)}\nrefused for {role} with {got}, expected {expected.sqlstate} {expected.words!r}")
        assert not spent, f"{describe(query)}\nthe refusal charged the analyst's budget"
        assert got.error.diag.message_hint, f"{describe(query)}\nthe refusal does not say what to write instead"
        said = f"{got.error.diag.message_primary} {got.error.diag.message_hint}"
        assert not any(word in said for word in PARSER_WORDS), f"{describe(query)}\nthe refusal names parser internals"
        return
    if isinstance(got, Refused):
        charged = " and charged the analyst" if spent else ""
        pytest.fail(f"{describe(query)}\nrefused for {role}{charged}: {got}\nfailing statement: {got.statement}",
                    pytrace=False)
    if role == "clinician":
        assert (got.names, got.oids) == (exact.names, exact.oids), (
            f"{describe(query)}\nas clinician: columns {list(zip(got.names, got.oids))}, "
            f"directly {list(zip(exact.names, exact.oids))}")
        # The policy's row filter hides psychiatry visits from the clinician.
        assert not any("Psychiatry" in row for row in got.rows), (
            f"{describe(query)}\nthe clinician sees a group of psychiatry visits, which the row filter hides")
        return
    problems = compare_private(query, got, exact)
    assert not problems, f"{describe(query)}\nas analyst:\n" + "\n".join(problems)
    if query.charged:
        assert spent, f"{describe(query)}\nthe analyst's answer was not charged: was it released privately?"
    else:
        assert not spent, f"{describe(query)}\nthe answer cost budget, though it reads no row"
