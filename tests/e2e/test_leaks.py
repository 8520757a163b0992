"""The leak suite: adversarial statements (tests/leak_cases.py) through real
clients, as the clinician of the example policy and as `redactor`, whose
policy (tests/data/mask_everything.yaml) masks every column with a constant or
NULL; the analyst's cases as the aggregate role.

For every case: no raw value of a protected column (names, SSNs, emails,
phones, exact birth and visit dates, ZIP codes, cities, costs) and nothing of
a row that the row filter hides (the clinician's pseudonyms and noisy costs
of Psychiatry visits) may appear in any returned row, COPY byte, notice or
error; a refused statement gets a refusal SQLSTATE; nothing is an internal
error; and the session still answers `select 1` afterwards.

Failures name the case, the step and the kind of value, never the value.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import json
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.pq import TransactionStatus

from pgshroud.policies.loader import load_policy
from pgshroud.proxy.codec.messages import ErrorResponse, FunctionCall, ReadyForQuery, decode_backend
from pgshroud.proxy.ops.catalog import read_catalog
from pgshroud.proxy.session.driver import SessionContext
from pgshroud.rewriter import plan
from pgshroud.rewriter.masking import masked_subquery
from tests import leak_cases as lc
from tests.fix_proxy import RunningProxy, proxy_config

MASK_EVERYTHING = Path(__file__).resolve().parents[1] / "data" / "mask_everything.yaml"
INTERNAL = "XX000"


# -- the role whose policy masks everything ----------------------------------


@pytest.fixture(scope="session")
def redacted(pg, health_db) -> Iterator[RunningProxy]:
    """pgshroud with tests/data/mask_everything.yaml in front of `health`: user `redactor`."""
    pg.execute("DROP ROLE IF EXISTS redactor")
    pg.execute("CREATE ROLE redactor LOGIN PASSWORD 'redactor'")
    pg.execute("GRANT SELECT ON patients, visits, labs, diagnoses TO redactor", dbname="health")
    pg.execute("GRANT pgshroud_masked TO redactor", dbname="health")
    policy = load_policy(MASK_EVERYTHING)
    catalog = asyncio.run(read_catalog(health_db))
    # A relation this pgshroud's catalog snapshot does not know yet (as after
    # a CREATE TABLE between two refreshes), on the redactor's search_path
    # only ("$user"): a copy of raw values.
    pg.execute("DROP SCHEMA IF EXISTS redactor CASCADE", dbname="health")
    pg.execute("CREATE SCHEMA redactor", dbname="health")
    pg.execute("CREATE TABLE redactor.late_copy AS SELECT name, ssn FROM public.patients", dbname="health")
    pg.execute("GRANT USAGE ON SCHEMA redactor TO redactor", dbname="health")
    pg.execute("GRANT SELECT ON redactor.late_copy TO redactor", dbname="health")
    upstream = make_conninfo(pg.dsn(), sslmode="disable")
    proxy = RunningProxy(SessionContext(proxy_config(upstream), plan, policy=policy, catalog=lambda: catalog))
    yield proxy
    proxy.stop()


# -- what must not come back -------------------------------------------------

_WORD_RUN = re.compile(r"[A-Za-z][A-Za-z'-]*(?: [A-Za-z][A-Za-z'-]*)*")


def _ngrams(text: str, sizes: tuple[int, ...]) -> set[str]:
    grams: set[str] = set()
    for run in _WORD_RUN.findall(text):
        words = run.split(" ")
        for n in sizes:
            grams.update(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
    return grams


def _regex(pattern: str):
    compiled = re.compile(pattern)
    return lambda text: set(compiled.findall(text))


_DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")


def _cost(value: Decimal | str) -> str:
    """A decimal without its trailing zeros (1024.50 and 1024.5 are one value; JSON drops the zero)."""
    text = str(value)
    return text.rstrip("0").rstrip(".") if "." in text else text


def _costs(text: str) -> set[str]:
    return {_cost(token) for token in _DECIMAL.findall(text)}


# Each kind of secret value, and how candidates are found in a text.
EXTRACTORS = {
    "patients.ssn": _regex(r"\d{3}-\d{2}-\d{4}"),
    "patients.ssn digits": _regex(r"(?<!\d)\d{9}(?!\d)"),
    "patients.phone": _regex(r"\(\d{3}\) \d{3}-\d{4}"),
    "patients.phone digits": _regex(r"(?<!\d)\d{10}(?!\d)"),
    "patients.email": _regex(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]*[A-Za-z]"),
    "patients.email local part": _regex(r"[A-Za-z0-9._%+-]+"),
    "patients.birth_date": _regex(r"\d{4}-\d{2}-\d{2}"),
    "patients.zip": _regex(r"(?<![\w.-])\d{5}(?![\w.-])"),
    "patients.name": lambda text: _ngrams(text, (2, 3)),
    "patients.city": lambda text: _ngrams(text, (1, 2, 3)),
    "visits.visit_date": _regex(r"\d{4}-\d{2}-\d{2}"),
    "visits.cost": _costs,
    "hidden visit's pseudonym": _regex(r"(?<![\w.])\d{6,}(?![\w.])"),
    "hidden visit's noisy cost": _costs,
    "row count of a protected table": _regex(r"(?<![\w.])(\d+)(?:\.0)?(?![\w.])"),
}


@dataclass
class Truth:
    secrets: dict[str, frozenset[str]]
    samples: dict[str, Any]
    counts: dict[str, int] = field(default_factory=dict)

    def leaks(self, text: str, own: str = "", *, kinds: tuple[str, ...] | None = None) -> dict[str, int]:
        """Kinds of secret values found in `text` (those the statement itself wrote excepted): kind -> count."""
        found = {}
        for kind, secrets in self.secrets.items():
            if kinds is not None and kind not in kinds:
                continue
            if kinds is None and kind == "row count of a protected table":
                continue
            extract = EXTRACTORS[kind]
            hits = (extract(text) & secrets) - extract(own)
            if hits:
                found[kind] = len(hits)
        return found


def _dump(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str, ensure_ascii=False)
    if isinstance(value, tuple):
        return "\t".join(_dump(v) for v in value)
    if isinstance(value, asyncpg.Record):
        return "\t".join(_dump(v) for v in value.values())
    return str(value)


def _fetch(dsn: str, sql: str) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


@functools.cache
def load_truth(raw_dsn: str, clinician_dsn: str, redactor_dsn: str | None) -> Truth:
    """The raw values (read directly), less whatever the masks legitimately show."""
    patients = _fetch(raw_dsn, "select name, ssn, email, phone, birth_date, zip, city from patients")
    visits = _fetch(raw_dsn, "select visit_date, cost, department from visits")
    raw: dict[str, set[str]] = {kind: set() for kind in EXTRACTORS}
    for name, ssn, email, phone, birth_date, zip_code, city in patients:
        raw["patients.name"].add(name)
        raw["patients.ssn"].add(ssn)
        raw["patients.ssn digits"].add(re.sub(r"\D", "", ssn))
        raw["patients.email"].add(email)
        raw["patients.email local part"].add(email.split("@")[0])
        raw["patients.phone"].add(phone)
        raw["patients.phone digits"].add(re.sub(r"\D", "", phone))
        raw["patients.birth_date"].add(birth_date.isoformat())
        raw["patients.zip"].add(zip_code)
        raw["patients.city"].add(city)
    for visit_date, cost, _ in visits:
        raw["visits.visit_date"].add(visit_date.isoformat())
        if cost != cost.to_integral_value():
            raw["visits.cost"].add(_cost(cost))

    # The clinician's view of the rows its row filter hides, computed directly.
    policy = load_policy(Path(__file__).resolve().parents[2] / "policies" / "examples" / "healthcare.yaml")
    catalog = asyncio.run(read_catalog(raw_dsn))
    relation = catalog.relations[("public", "visits")]
    hidden_sql = masked_subquery(policy.protected_tables["public.visits"], relation, "clinician",
                                 "department = 'Psychiatry'")
    hidden = _fetch(raw_dsn, f"select visit_id, cost from {hidden_sql} as h")
    raw["hidden visit's pseudonym"] = {str(visit_id) for visit_id, _ in hidden}
    raw["hidden visit's noisy cost"] = {_cost(cost) for _, cost in hidden if cost != cost.to_integral_value()}
    counts = {table: _fetch(raw_dsn, f"select count(*) from {table}")[0][0] for table in ("visits", "labs")}
    raw["row count of a protected table"] = {str(n) for n in counts.values() if n >= 1000}

    # What masked roles see on purpose: fakes may equal someone's real name or
    # city, generalized dates may equal a real 1 January, and so on.
    visible_text = []
    for dsn in filter(None, (clinician_dsn, redactor_dsn)):
        for table in ("patients", "visits", "labs", "diagnoses"):
            visible_text.append("\n".join(_dump(row) for row in _fetch(dsn, f"select * from {table}")))
    # A masked cost rounded to a whole number is a five-digit number now and then, and may equal someone's zip
    # code; the noise (keyed by the cluster's own key) decides which, so it is visible, not a leak.
    visible_text.append("\n".join(_dump(row) for row in _fetch(
        clinician_dsn, "select ceil(cost), floor(cost), round(cost), trunc(cost) from visits")))
    visible = "\n".join(visible_text)
    today = datetime.date.today()
    around_now = {(today + datetime.timedelta(days=d)).isoformat() for d in (-1, 0, 1)}
    secrets = {}
    for kind, values in raw.items():
        values = values - EXTRACTORS[kind](visible)
        if kind.endswith("date"):
            values -= around_now
        secrets[kind] = frozenset(values)

    visible_costs = EXTRACTORS["visits.cost"](visible)
    visible_names = EXTRACTORS["patients.name"](visible)
    cost = next(c for _, c, _ in sorted(visits) if _cost(c) not in visible_costs and c != c.to_integral_value())
    birth = next(b for _, _, _, _, b, _, _ in sorted(patients, key=lambda p: p[1])
                 if (b.month, b.day) != (1, 1) and b.isoformat() in secrets["patients.birth_date"])
    name = next(n for n, *_ in sorted(patients) if n not in visible_names)
    ssn, email, phone = min(patients, key=lambda p: p[1])[1:4]
    samples = {
        "raw_ssn": ssn,
        "raw_name": name,
        "raw_email": email,
        "raw_email_prefix": email.split("@")[0] + "%",
        "raw_phone": phone,
        "raw_birth": birth,
        "raw_birth_day_after": birth + datetime.timedelta(days=1),
        "raw_zip": next(z for *_, z, _ in sorted(patients) if not z.endswith("00")),
        "raw_cost": cost,
        "hidden_visit_id": min(visit_id for visit_id, _ in hidden),
    }
    return Truth(secrets, samples, counts)


@pytest.fixture(scope="session")
def truth(guarded, raw_health, redacted) -> Truth:
    return load_truth(raw_health, guarded.dsn("clinician", "health"), redacted.dsn("redactor", "health"))


def test_truth_is_meaningful(truth):
    """The suite only means something if most raw values differ from what the masks show."""
    minimum = {"patients.ssn": 390, "patients.name": 300, "patients.email": 390, "patients.phone": 390,
               "patients.birth_date": 300, "patients.zip": 300, "visits.cost": 3000, "visits.visit_date": 1500,
               "hidden visit's pseudonym": 100, "hidden visit's noisy cost": 100, "patients.city": 10}
    for kind, n in minimum.items():
        assert len(truth.secrets[kind]) >= n, f"only {len(truth.secrets[kind])} distinctive values of {kind}"
    assert truth.leaks("\t".join(truth.secrets["patients.ssn"])) == {"patients.ssn": len(truth.secrets["patients.ssn"])}


# -- running a case ----------------------------------------------------------


@dataclass
class Outcome:
    rows: list = field(default_factory=list)
    texts: list[tuple[str, str]] = field(default_factory=list)  # (where, text)
    sqlstates: list[str | None] = field(default_factory=list)
    error: bool = False


def _fill(value: Any, samples: dict[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("@"):
        return samples[value[1:]]
    return value


def _literal(value: Any) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _sql(step: lc.Step, samples: dict[str, Any]):
    def fill(text):
        if isinstance(text, bytes):
            return text
        return re.sub(r"<<(\w+)>>", lambda m: _literal(samples[m.group(1)]), text)

    if isinstance(step.sql, tuple):
        return tuple(fill(s) for s in step.sql)
    return fill(step.sql)


def _error_text(exc: BaseException) -> str:
    parts = [str(exc)]
    diag = getattr(exc, "diag", None)
    if diag is not None:
        for name in ("message_primary", "message_detail", "message_hint", "context", "internal_query",
                     "schema_name", "table_name", "column_name", "datatype_name", "constraint_name"):
            parts.append(getattr(diag, name, None) or "")
    for name in ("detail", "hint", "context", "internal_query", "where"):  # asyncpg
        parts.append(str(getattr(exc, name, None) or ""))
    return "\n".join(parts)


def _record_error(outcome: Outcome, where: str, exc: BaseException) -> None:
    outcome.error = True
    outcome.sqlstates.append(getattr(exc, "sqlstate", None))
    outcome.texts.append((f"error of {where}", _error_text(exc)))


def _notice_text(diag) -> str:
    return "\n".join(filter(None, (diag.severity, diag.message_primary, diag.message_detail, diag.message_hint,
                                   diag.context, diag.internal_query)))


def _psycopg_step(conn: psycopg.Connection, step: lc.Step, sql, params, outcome: Outcome, where: str) -> None:
    try:
        if step.how == lc.EXECUTE:
            cur = conn.execute(sql, params)
            while True:
                if cur.description is not None:
                    outcome.rows.extend(cur.fetchall())
                if not cur.nextset():
                    break
        elif step.how == lc.PREPARED:
            outcome.rows.extend(conn.execute(sql, params, prepare=True).fetchall())
        elif step.how == lc.COPY_OUT:
            with conn.cursor() as cur, cur.copy(sql) as copy:
                data = b"".join(bytes(chunk) for chunk in copy)
            outcome.texts.append((f"COPY data of {where}", data.decode("utf-8", "replace")))
        elif step.how == lc.NAMED_CURSOR:
            with conn.transaction(), conn.cursor(name="leak_cursor") as cur:
                cur.execute(sql, params)
                outcome.rows.extend(cur.fetchmany(100))
                outcome.rows.extend(cur.fetchall())
        elif step.how == lc.PIPELINE:
            _pipeline(conn, sql, outcome, where)
        else:
            raise AssertionError(f"unknown way of sending a step: {step.how}")
    except psycopg.Error as exc:
        _record_error(outcome, where, exc)


def _pipeline(conn: psycopg.Connection, statements: tuple[str, ...], outcome: Outcome, where: str) -> None:
    cursors = []
    try:
        with conn.pipeline() as pipeline:
            for statement in statements:
                cur = conn.cursor()
                cur.execute(statement)
                cursors.append(cur)
            pipeline.sync()
            for cur in cursors:
                try:
                    if cur.description is not None:
                        outcome.rows.extend(cur.fetchall())
                except psycopg.errors.PipelineAborted:
                    outcome.error = True
                except psycopg.Error as exc:
                    _record_error(outcome, where, exc)
    except psycopg.errors.PipelineAborted:
        outcome.error = True
    except psycopg.Error as exc:
        _record_error(outcome, where, exc)


def _fastpath(conn: psycopg.Connection, oid: int, outcome: Outcome, where: str) -> None:
    """Send a FunctionCall ('F') on the connection's own socket, and read to ReadyForQuery."""
    sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
    try:
        sock.settimeout(10)
        sock.sendall(FunctionCall(oid, (), (), 0).encode())
        buffer = b""
        while True:
            while len(buffer) < 5 or len(buffer) < 1 + int.from_bytes(buffer[1:5], "big"):
                chunk = sock.recv(65536)
                if not chunk:
                    raise AssertionError("the server closed the connection after a FunctionCall")
                buffer += chunk
            end = 1 + int.from_bytes(buffer[1:5], "big")
            message = decode_backend(buffer[:1], buffer[5:end])
            buffer = buffer[end:]
            if isinstance(message, ErrorResponse):
                fields = dict(message.fields)
                outcome.error = True
                outcome.sqlstates.append(fields.get("C"))
                outcome.texts.append((f"error of {where}", "\n".join(fields.values())))
            else:
                outcome.texts.append((f"reply to {where}", repr(message)))
            if isinstance(message, ReadyForQuery):
                return
    finally:
        sock.close()


async def _asyncpg_step(dsn_parts: dict, step: lc.Step, sql, params, outcome: Outcome, where: str) -> None:
    conn = await asyncpg.connect(**dsn_parts)
    try:
        try:
            if step.how == lc.ASYNCPG_FETCH:
                outcome.rows.extend(await conn.fetch(sql, *params))
            elif step.how == lc.ASYNCPG_PREPARE:
                statement = await conn.prepare(sql)
                outcome.rows.extend(await statement.fetch(*params))
                outcome.rows.extend(await statement.fetch(*params))
            elif step.how == lc.ASYNCPG_CURSOR:
                async with conn.transaction():
                    async for record in conn.cursor(sql, *params, prefetch=100):
                        outcome.rows.append(record)
            elif step.how in (lc.ASYNCPG_COPY_TABLE, lc.ASYNCPG_COPY_QUERY):
                chunks: list[bytes] = []

                async def sink(chunk: bytes) -> None:
                    chunks.append(bytes(chunk))

                if step.how == lc.ASYNCPG_COPY_TABLE:
                    await conn.copy_from_table(sql, output=sink, format="csv")
                else:
                    await conn.copy_from_query(sql, output=sink, format="csv")
                outcome.texts.append((f"COPY data of {where}", b"".join(chunks).decode("utf-8", "replace")))
            else:
                raise AssertionError(f"unknown way of sending a step: {step.how}")
        except asyncpg.PostgresError as exc:
            _record_error(outcome, where, exc)
        assert await conn.fetchval("select 1") == 1, f"{where}: the session is not usable afterwards"
    finally:
        await conn.close()


def run_case(case: lc.Case, role: str, proxy: RunningProxy, truth: Truth, raw_dsn: str) -> list[str]:
    """Run every step of `case` as `role`; the problems found (none when all is well)."""
    problems: list[str] = []
    samples = truth.samples
    kinds = ("row count of a protected table",) if role == "analyst" else None
    dsn = proxy.dsn(role, "health")
    notices: list[str] = []
    conn = None
    for number, step in enumerate(case.steps, 1):
        where = f"step {number}"
        sql = _sql(step, samples)
        params = tuple(_fill(p, samples) for p in step.params) if step.params is not None else None
        outcome = Outcome()
        if step.how.startswith("asyncpg"):
            parts = {"host": proxy.host, "port": proxy.port, "user": role, "password": role, "database": "health", "ssl": False}
            asyncio.run(_asyncpg_step(parts, step, sql, params or (), outcome, where))
        else:
            if conn is None:
                conn = psycopg.connect(dsn, autocommit=True)
                conn.add_notice_handler(lambda diag: notices.append(_notice_text(diag)))
            if step.how == lc.FASTPATH:
                oid = _fetch(raw_dsn, f"select {_literal(sql)}::regprocedure::oid")[0][0]
                _fastpath(conn, oid, outcome, where)
            else:
                _psycopg_step(conn, step, sql, params, outcome, where)
        own = _dump(sql) + "\t" + _dump(params)
        texts = [(f"rows of {where}", "\n".join(_dump(row) for row in outcome.rows))] + outcome.texts
        for place, text in texts:
            for kind, n in truth.leaks(text, own, kinds=kinds).items():
                problems.append(f"LEAK: {n} {kind} value(s) in the {place}")
        if INTERNAL in outcome.sqlstates:
            problems.append(f"{where}: internal error XX000")
        states = [s for s in outcome.sqlstates if s]
        if step.expect == lc.OK and outcome.error:
            problems.append(f"{where}: expected to run, failed with SQLSTATE {states}")
        elif step.expect == lc.REFUSED and not any(s in lc.REFUSAL_STATES for s in states):
            problems.append(f"{where}: expected a refusal ({'/'.join(sorted(lc.REFUSAL_STATES))}), "
                            f"got {states if outcome.error else 'success'}")
        elif step.expect == lc.FAILS and not outcome.error:
            problems.append(f"{where}: expected an error, it ran")
        if step.rows is not None and not outcome.error:
            got = [tuple(row) for row in outcome.rows]
            if got != [tuple(r) for r in step.rows]:
                problems.append(f"{where}: the oracle answered {len(got)} row(s) other than the {len(step.rows)} "
                                "expected (a predicate saw raw values or hidden rows)")
    if conn is not None:
        try:
            for notice in notices:
                for kind, n in truth.leaks(notice, kinds=kinds).items():
                    problems.append(f"LEAK: {n} {kind} value(s) in a notice")
            if conn.info.transaction_status != TransactionStatus.IDLE:
                conn.execute("rollback")
            if conn.execute("select 1").fetchone() != (1,):
                problems.append("the session does not answer select 1 afterwards")
        except psycopg.Error as exc:
            problems.append(f"the session is not usable afterwards: SQLSTATE {exc.sqlstate}")
        finally:
            conn.close()
    return problems


PARAMS = [pytest.param(c, role, id=f"{c.id}-{role}") for c in lc.CASES + lc.ANALYST_CASES for role in c.roles]


@pytest.mark.parametrize(("case", "role"), PARAMS)
def test_leak_case(case, role, guarded, redacted, truth, raw_health):
    proxy = redacted if role == "redactor" else guarded
    problems = run_case(case, role, proxy, truth, raw_health)
    assert not problems, f"{case.id} as {role} ({case.technique}):\n  " + "\n  ".join(problems)


def test_the_suite_has_enough_cases():
    ids = [c.id for c in lc.CASES + lc.ANALYST_CASES]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    assert len(lc.CASES) >= 60
    assert len({c.technique for c in lc.CASES}) >= 15
