"""Differential test of private aggregates: the SQL BI tools send, run
directly on PostgreSQL and through pgshroud as the analyst.

Thousands of aggregate statements are generated from a grammar of the
shapes Metabase, Superset, Power BI, Tableau, Looker, psql, Django and
SQLAlchemy write over the demo schema (tests/bi_grammar.py: names as the
tools qualify and quote them, joins, aggregates, date buckets, filters with
literals, bound values and dates relative to now, HAVING, ORDER BY,
LIMIT/OFFSET/FETCH, outer queries around the aggregate, cursors). Each runs
as the raw admin straight on PostgreSQL and as a user of the aggregate role
through pgshroud with the demo policy and a real ledger. Whenever
PostgreSQL accepts the statement, pgshroud must:

- answer it, with the direct answer's column names, column count and types,
  in values the client can read as those types (text and binary results);
- or refuse it when it plans it, with a SQLSTATE other than 22000, XX000 or
  08xxx and a message that names no parser internals and states no
  analysis error PostgreSQL did not raise (an ambiguous column, a column
  that must appear in GROUP BY);
- never fail in PostgreSQL's parse or analysis of the SQL it built (the
  withheld "private aggregate failed upstream" error, or an error from
  PostgreSQL itself, told by its source location, that the direct statement
  did not get);
- never end the connection or send FATAL, and answer within 30 s;
- never charge the budget for a statement that failed (the ledger's rows of
  the test's user, counted before and after each statement); a cursor is
  charged at its DECLARE and read by FETCH without failing.

Statements go as tools send them: extended protocol with bound values,
simple Query, named prepared statements, binary results, DECLARE/FETCH in
a transaction and psycopg's named cursors. The outcomes are counted
(answered, refused by reason, with one statement per reason) and printed
(`pytest -s` shows them, with the shapes that fail most); the test fails on
any violation and lists the first few statements of each kind with their
errors. Derandomized, so CI sees the same statements every run;
PGSHROUD_BI_DIFFERENTIAL_EXAMPLES sets how many (2000, about two minutes).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg
import pytest
import sqlglot.expressions
from hypothesis import HealthCheck, Phase, given, settings
from psycopg.conninfo import make_conninfo

from pgshroud.policies.model import Budgets, EpsilonDelta
from pgshroud.proxy.budget.ledger import PostgresLedger
from pgshroud.proxy.commands.demo_data import load_demo_dataset
from pgshroud.proxy.commands.setup import run_setup
from pgshroud.proxy.ops.catalog import read_catalog
from pgshroud.proxy.session.driver import SessionContext
from pgshroud.rewriter import plan
from tests.bi_grammar import PSYCOPG, BiQuery, bi_queries
from tests.fix_proxy import RunningProxy, proxy_config

DATABASE = "bi_differential"
USER = "bi_differential"  # of the aggregate role; its own ledger rows
PATIENTS = 150
EXAMPLES = int(os.environ.get("PGSHROUD_BI_DIFFERENTIAL_EXAMPLES", "2000"))
SHOWN = 3  # offending statements listed per kind of violation
STATEMENT_SECONDS = 30


# ------------------------------------------------------------------ the setup


@pytest.fixture(scope="module")
def bi_db(pg, health_db) -> str:
    """A small copy of the demo database (the demo roles exist once health_db has run); its superuser DSN."""
    pg.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
    pg.execute(f"DROP ROLE IF EXISTS {USER}")
    pg.execute(f"CREATE ROLE {USER} LOGIN PASSWORD '{USER}' IN ROLE analyst")
    pg.execute(f"CREATE DATABASE {DATABASE} OWNER admin")
    load_demo_dataset(pg.dsn(user="admin", password="admin", dbname=DATABASE), patients=PATIENTS)
    pg.execute(f"GRANT SELECT ON patients, visits, labs, diagnoses TO analyst, {USER}", dbname=DATABASE)
    status = run_setup(pg.admin_dsn(DATABASE), key_env=None, key_file=None, rotate_key=False,
                       grant_to=["analyst", USER], out=io.StringIO())
    assert status == 0
    return pg.admin_dsn(DATABASE)


@pytest.fixture(scope="module")
def bi_proxy(pg, bi_db, health_policy) -> Iterator[RunningProxy]:
    """pgshroud with the demo policy, USER among the analysts, budgets no run exhausts, and a real ledger."""
    analyst = health_policy.roles["analyst"]
    roles = {**health_policy.roles, "analyst": dataclasses.replace(analyst, users=(*analyst.users, USER))}
    plenty = EpsilonDelta(1e9, 1.0)
    budgets = Budgets(per_user=plenty, per_role={"analyst": plenty}, per_dataset=plenty)
    policy = dataclasses.replace(health_policy, roles=roles, budgets=budgets)
    catalog = asyncio.run(read_catalog(bi_db))
    shared = SessionContext(proxy_config(make_conninfo(pg.dsn(), sslmode="disable")), plan,
                            ledger=PostgresLedger(bi_db, policy), policy=policy, catalog=lambda: catalog)
    proxy = RunningProxy(shared)
    yield proxy
    proxy.stop()


# ------------------------------------------------------------ running a query


@dataclass
class Outcome:
    """What one side made of a statement: its columns (name, type oid), or its error."""

    columns: list[tuple[str, int]] | None = None
    sqlstate: str | None = None
    severity: str | None = None
    message: str = ""
    hint: str = ""
    from_postgres: bool = False  # the error carries PostgreSQL's source location: PostgreSQL raised it
    closed: bool = False
    unreadable: bool = False  # the client could not read a value as the type its column was described with
    step: str = ""  # of a cursor: the statement that failed (DECLARE, FETCH ..., CLOSE)

    @property
    def failed(self) -> bool:
        return self.columns is None

    def error(self) -> str:
        at = f"at {self.step}: " if self.step else ""
        if self.closed:
            return f"{at}connection closed: {self.message}"
        if self.unreadable:
            return f"{at}{self.message}"
        hint = f" (hint: {self.hint})" if self.hint else ""
        return f"{at}{self.severity} {self.sqlstate}: {self.message}{hint}"


def execute(conn: psycopg.Connection, query: BiQuery) -> Outcome:
    cursor = psycopg.ClientCursor(conn) if query.simple else psycopg.RawCursor(conn)
    step: list[str] = []
    try:
        with cursor:
            if query.cursor is None:
                cursor.execute(query.sql, query.params or None, prepare=query.prepared or None,
                               binary=query.binary or None)
                columns = _columns(cursor)
                cursor.fetchall()
                return Outcome(columns)
            if query.cursor.options == PSYCOPG:
                return Outcome(_through_psycopg_cursor(conn, query, step))
            return Outcome(_through_cursor(conn, cursor, query, step))
    except psycopg.Error as error:
        return _failure(conn, error, step[-1] if step else "")
    except (ValueError, ArithmeticError) as error:  # decimal.InvalidOperation is an ArithmeticError
        # psycopg's loaders: a value that is not of the type its column was described with
        return Outcome(message=f"the client cannot read a value: {type(error).__name__}: {error}",
                       closed=conn.closed or conn.broken, unreadable=True, step=step[-1] if step else "")


def _through_cursor(conn: psycopg.Connection, cursor: psycopg.Cursor, query: BiQuery,
                    step: list[str]) -> list[tuple[str, int]]:
    """DECLARE, then FETCH/MOVE as the tool does, then CLOSE, in one transaction; `step` says how far it got."""
    assert query.cursor is not None
    columns: list[tuple[str, int]] = []
    with conn.transaction():
        step.append("DECLARE")
        cursor.execute(query.cursor.declare(query.sql), query.params or None)
        for statement in query.cursor.statements():
            step.append(statement.split()[0])
            cursor.execute(statement)
            if cursor.description is not None:
                columns = _columns(cursor)
                cursor.fetchall()
        step.append("CLOSE")
        cursor.execute(f"CLOSE {query.cursor.name}")
        step.append("COMMIT")
    return columns


def _through_psycopg_cursor(conn: psycopg.Connection, query: BiQuery, step: list[str]) -> list[tuple[str, int]]:
    """psycopg's named cursor: DECLARE with the bound values, Describe of its portal, FETCH FORWARD n."""
    assert query.cursor is not None
    with conn.transaction():
        step.append("DECLARE")
        with psycopg.RawServerCursor(conn, query.cursor.name.strip('"')) as cursor:
            cursor.execute(query.sql, query.params or None)
            columns = _columns(cursor)
            step.append("FETCH")
            cursor.fetchmany(2)
            cursor.fetchall()
            step.append("CLOSE")
        step.append("COMMIT")
    return columns


def _columns(cursor: psycopg.Cursor) -> list[tuple[str, int]]:
    return [(column.name, column.type_code) for column in cursor.description or ()]


def _failure(conn: psycopg.Connection, error: psycopg.Error, step: str) -> Outcome:
    diag = error.diag
    return Outcome(
        sqlstate=error.sqlstate, severity=diag.severity_nonlocalized or diag.severity, message=diag.message_primary
        or str(error), hint=diag.message_hint or "", from_postgres=diag.source_file is not None,
        closed=conn.closed or conn.broken, step=step,
    )


class Side:
    """A connection that is opened again if it ends (ending it is a violation, counted elsewhere)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn = self._connect()

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
        # Statements are prepared where the grammar says so, not after five runs
        # of one text (a prepared FETCH has a test of its own, below).
        conn.prepare_threshold = None
        return conn

    def run(self, query: BiQuery) -> Outcome:
        # A statement still running after STATEMENT_SECONDS is cancelled, so that a hang fails the test, not CI.
        watchdog = threading.Timer(STATEMENT_SECONDS, self.conn.cancel_safe)
        watchdog.start()
        try:
            outcome = execute(self.conn, query)
        finally:
            watchdog.cancel()
        if outcome.failed and not outcome.closed:
            outcome.closed = not self._usable()
        if outcome.closed:
            self.conn.close()
            self.conn = self._connect()
        return outcome

    def _usable(self) -> bool:
        """After an error the session must still answer (and be out of any transaction)."""
        try:
            return self.conn.execute("SELECT 1").fetchone() == (1,)
        except psycopg.Error:
            return False

    def close(self) -> None:
        self.conn.close()


# ------------------------------------------------------------------ judging


# sqlglot's expression classes, as a refusal must never name them, in any
# case: CamelCase ones (DateTrunc, CurrentTimestamp, also as CURRENTTIMESTAMP)
# and the single words no PostgreSQL message would use.
_CLASSES = {name for name, value in vars(sqlglot.expressions).items()
            if isinstance(value, type) and issubclass(value, sqlglot.expressions.Expression)}
_CAMEL = sorted((c for c in _CLASSES if re.search(r"[a-z][A-Z]", c)), key=len, reverse=True)
_INTERNAL = re.compile(
    r"\b(?:(?i:" + "|".join(_CAMEL) + r"|Anonymous|Dpipe|sqlglot)"
    + r"|Paren|Identifier|Subquery|Traceback|NoneType|KeyError|AttributeError|TypeError"
    + r"|object has no attribute)\b|\bexp\.")


# PostgreSQL's own analysis errors: a refusal that states one about a
# statement PostgreSQL accepted has read the statement otherwise than PostgreSQL.
_FALSE_ERRORS = re.compile(r"is ambiguous|does not exist|must appear in (?:the )?GROUP BY|"
                           r"aggregate functions are not allowed|syntax error")


def names_internals(outcome: Outcome) -> str | None:
    match = _INTERNAL.search(f"{outcome.message} {outcome.hint}")
    return match.group(0) if match else None


def reason(outcome: Outcome) -> str:
    """A refusal's reason with its particulars (names, numbers) taken out, to count refusals by kind."""
    text = re.sub(r'"[^"]*"', '"…"', outcome.message)
    text = re.sub(r"'[^']*'", "'…'", text)
    text = re.sub(r'(?:(?:\w+|"…")\.)+(?:\w+|"…")', "…", text)  # column references, however qualified
    text = re.sub(r"\d+(\.\d+)?", "N", text)
    text = text.removeprefix("pgshroud cannot answer this privately: ")
    return f"refused {outcome.sqlstate}: {text[:130]}"


def violations(direct: Outcome, shrouded: Outcome, charges: int) -> list[str]:
    """The kinds of property violation of pgshroud's outcome for a statement PostgreSQL accepts, worst first."""
    if shrouded.closed or shrouded.severity in ("FATAL", "PANIC"):
        return ["the connection ended (FATAL or closed)"]
    if not shrouded.failed:
        return _answer_violations(direct, shrouded, charges)
    found = [_failure_kind(shrouded)]
    if charges > 0 and shrouded.step in ("", "DECLARE"):
        found.append("charged for a statement that failed")
    return [kind for kind in found if kind is not None]


def _answer_violations(direct: Outcome, shrouded: Outcome, charges: int) -> list[str]:
    assert direct.columns is not None and shrouded.columns is not None
    if [n for n, _ in shrouded.columns] != [n for n, _ in direct.columns]:
        return ["answered with other column names or count"]
    if shrouded.columns != direct.columns:
        return ["answered with other column types"]
    return ["one answer charged more than once"] if charges > 1 else []


def _failure_kind(shrouded: Outcome) -> str | None:
    if shrouded.unreadable:
        return "the answer does not decode as the types it describes (the client fails)"
    if shrouded.step not in ("", "DECLARE"):
        return f"a cursor's {shrouded.step} failed after its DECLARE was answered ({shrouded.sqlstate})"
    if shrouded.sqlstate == "57014":
        return f"no answer within {STATEMENT_SECONDS} s (cancelled)"
    if shrouded.sqlstate == "22000" and "failed upstream" in shrouded.message:
        return "the SQL pgshroud built failed upstream (withheld 22000)"
    if shrouded.from_postgres:
        return f"PostgreSQL rejected the SQL pgshroud built ({shrouded.sqlstate})"
    if shrouded.sqlstate is None or shrouded.sqlstate in ("22000", "XX000") or shrouded.sqlstate.startswith("08"):
        return f"refused with SQLSTATE {shrouded.sqlstate}"
    if names_internals(shrouded):
        return f"the refusal names parser internals ({names_internals(shrouded)})"
    claimed = _FALSE_ERRORS.search(shrouded.message)
    if claimed:
        return f"the refusal states an error PostgreSQL does not raise ({claimed.group(0)})"
    if not shrouded.message:
        return "refused without a message"
    return None


@dataclass
class Tally:
    """Outcomes by kind, violations by kind with their first statements, and outcomes per shape."""

    outcomes: Counter[str] = field(default_factory=Counter)
    violations: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    counts: Counter[str] = field(default_factory=Counter)
    shapes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    rejected: list[str] = field(default_factory=list)  # statements PostgreSQL itself rejects (a grammar slip)
    refusals: dict[str, str] = field(default_factory=dict)  # one statement per refusal reason

    def record(self, query: BiQuery, direct: Outcome, shrouded: Outcome, charges: int) -> None:
        if direct.failed:
            self.outcomes[f"PostgreSQL rejects the statement itself ({direct.sqlstate})"] += 1
            if len(self.rejected) < SHOWN:
                self.rejected.append(f"{query.show()}\n      -> {direct.error()}")
            if shrouded.closed or shrouded.severity in ("FATAL", "PANIC"):
                self._violate("the connection ended (FATAL or closed)", query, shrouded)
                self.outcomes["VIOLATION: the connection ended (FATAL or closed)"] += 1
            return
        kinds = violations(direct, shrouded, charges)
        for kind in kinds:
            self._violate(kind, query, shrouded, direct)
        if kinds:
            self.outcomes[f"VIOLATION: {kinds[0]}"] += 1
        elif shrouded.failed:
            self.outcomes[reason(shrouded)] += 1
            self.refusals.setdefault(reason(shrouded), query.show())
        else:
            self.outcomes["answered" if charges else "answered, not charged"] += 1
        verdict = "violation" if kinds else "refused" if shrouded.failed else "answered"
        for tag in query.tags:
            self.shapes[tag][verdict] += 1

    def _violate(self, kind: str, query: BiQuery, shrouded: Outcome, direct: Outcome | None = None) -> None:
        self.counts[kind] += 1
        detail = shrouded.error() if shrouded.failed else \
            f"columns {shrouded.columns} against {direct and direct.columns}"
        shown = self.violations[kind]
        # Examples with different errors say more than three of one.
        if len(shown) < SHOWN and not any(example.endswith(detail) for example in shown):
            shown.append(f"{query.show()}\n      -> {detail}")

    def report(self) -> str:
        total = sum(self.outcomes.values())
        lines = [f"{total} statements, through pgshroud as the analyst and directly as admin:"]
        lines += [f"{count:6d}  {outcome}" for outcome, count in self.outcomes.most_common()]
        lines.append("\nshapes by share of violations (answered / refused / violations):")
        for tag, verdicts in sorted(self.shapes.items(), key=lambda kv: -kv[1]["violation"] / sum(kv[1].values())):
            lines.append(f"  {tag:32s} {verdicts['answered']:5d} {verdicts['refused']:5d} {verdicts['violation']:5d}")
        lines.append("\nrefusals, one statement each:")
        lines += [f"  {why[:90]}\n    {example}" for why, example in self.refusals.items()]
        if self.rejected:
            lines.append("\nrejected by PostgreSQL directly, e.g.:")
            lines += [f"  - {example}" for example in self.rejected]
        for kind, examples in self.violations.items():
            lines.append(f"\n{self.counts[kind]} x {kind}, e.g.:")
            lines += [f"  - {example}" for example in examples]
        return "\n".join(lines)


def charge_count(ledger: psycopg.Connection) -> int:
    row = ledger.execute("SELECT count(*) FROM pgshroud.budget_ledger WHERE user_name = %s AND kind = 'charge'",
                         [USER]).fetchone()
    assert row is not None
    return int(row[0])


# ------------------------------------------------------------------- the test


def test_bi_aggregates_are_answered_or_refused_cleanly(pg, bi_db, bi_proxy):
    direct = Side(make_conninfo(pg.dsn(user="admin", password="admin", dbname=DATABASE), sslmode="disable"))
    shrouded = Side(bi_proxy.dsn(USER, DATABASE, password=USER))
    ledger = psycopg.connect(bi_db, autocommit=True)
    tally = Tally()

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(bi_queries())
    def explore(query: BiQuery) -> None:
        before = charge_count(ledger)
        outcome = shrouded.run(query)
        tally.record(query, direct.run(query), outcome, charge_count(ledger) - before)

    try:
        explore()
    finally:
        direct.close()
        shrouded.close()
        ledger.close()
    print("\n" + tally.report())
    assert sum(tally.outcomes.values()) >= EXAMPLES // 2, "the grammar produced too few distinct statements"
    rejected = sum(c for o, c in tally.outcomes.items() if o.startswith("PostgreSQL rejects"))
    assert rejected <= sum(tally.outcomes.values()) // 10, "the grammar writes too much SQL PostgreSQL rejects"
    assert not tally.counts, f"{sum(tally.counts.values())} violations:\n{tally.report()}"


def test_a_prepared_fetch_describes_the_cursor_it_reads(pg, bi_db, bi_proxy):
    """Drivers prepare a statement they repeat (psycopg after 5 runs, pgjdbc's
    prepareThreshold): Tableau's and psqlODBC's `FETCH 10000 IN "SQL_CUR..."`
    becomes one prepared statement run against each new cursor of that name.
    Each run must describe the cursor it reads now, as PostgreSQL does."""
    direct = make_conninfo(pg.dsn(user="admin", password="admin", dbname=DATABASE), sslmode="disable")
    seen = {}
    for side, dsn in (("direct", direct), ("pgshroud", bi_proxy.dsn(USER, DATABASE, password=USER))):
        with psycopg.connect(dsn, autocommit=True) as conn:
            cursor = psycopg.RawCursor(conn)
            seen[side] = []
            for i, sql in enumerate(["SELECT count(*) AS first FROM visits",
                                     "SELECT department, count(*) AS second FROM visits GROUP BY 1",
                                     "SELECT sum(1) AS third, count(*) AS fourth FROM visits"]):
                with conn.transaction():
                    cursor.execute(f'DECLARE "SQL_CUR1" CURSOR WITH HOLD FOR {sql}')
                    cursor.execute('FETCH 10000 IN "SQL_CUR1"', prepare=True)
                    seen[side].append([column.name for column in cursor.description or ()])
                    cursor.execute('CLOSE "SQL_CUR1"')
    assert seen["direct"] == [["first"], ["department", "second"], ["third", "fourth"]]
    assert seen["pgshroud"] == seen["direct"]
