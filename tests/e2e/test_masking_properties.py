"""Generated SELECT statements over the demo schema, run through pgshroud as
the clinician.

Hypothesis draws column subsets, WHERE predicates that compare masked columns
with literals taken from the raw data (so a predicate that saw raw values
would match), ORDER BY, GROUP BY, joins of patients and visits on
patient_id, and subqueries. It draws statements with numbered slots for the
literals, so a failing example prints no raw value. Properties:

- no raw protected value, and nothing of a row the row filter hides, appears
  in the answer (tests/e2e/test_leaks.py's detector);
- each statement runs or is refused with a refusal SQLSTATE, never an
  internal error;
- the answer is the one the same statement gives over a copy of what the
  clinician may see (its masked rows, loaded into a database of their own):
  predicates, joins and aggregates only ever saw masked values.
"""

from __future__ import annotations

import datetime
import re
from decimal import Decimal
from importlib import resources

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import leak_cases as lc
from tests.e2e.test_leaks import _dump, load_truth

COPY_DB = "health_masked_copy"

PATIENTS = {"patient_id": "integer", "name": "text", "ssn": "text", "email": "text", "phone": "text",
            "birth_date": "date", "sex": "text", "zip": "text", "city": "text", "state": "text"}
VISITS = {"visit_id": "bigint", "patient_id": "integer", "visit_date": "date", "diagnosis_code": "text",
          "department": "text", "cost": "numeric", "length_of_stay": "integer"}
TABLES = {"patients": PATIENTS, "visits": VISITS}


@pytest.fixture(scope="session")
def masked_copy(pg, guarded, raw_health):
    """A database holding exactly the rows the clinician sees through pgshroud; its superuser DSN."""
    pg.execute(f"DROP DATABASE IF EXISTS {COPY_DB}")
    pg.execute(f"CREATE DATABASE {COPY_DB}")
    dsn = pg.admin_dsn(COPY_DB)
    schema = resources.files("pgshroud.proxy.commands.demo_data").joinpath("schema.sql").read_text()
    with psycopg.connect(guarded.dsn("clinician", "health"), autocommit=True) as masked, \
            psycopg.connect(dsn, autocommit=True) as copy:
        copy.execute(schema)
        for table, columns in TABLES.items():
            names = ", ".join(columns)
            rows = masked.execute(f"select {names} from {table}").fetchall()
            with copy.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as out:
                for row in rows:
                    out.write_row(row)
        copy.execute("ANALYZE")
    return dsn


@pytest.fixture(scope="session")
def raw_literals(raw_health, guarded):
    """Per column, a few raw values and a few masked ones, as SQL literals."""
    literals: dict[tuple[str, str], list[str]] = {}
    with psycopg.connect(raw_health, autocommit=True) as raw, \
            psycopg.connect(guarded.dsn("clinician", "health"), autocommit=True) as masked:
        for table, columns in TABLES.items():
            for column, type_name in columns.items():
                values = [r[0] for r in raw.execute(
                    f"select distinct {column} from {table} order by 1 limit 12").fetchall()]
                values += [r[0] for r in masked.execute(
                    f"select distinct {column} from {table} order by 1 limit 4").fetchall()]
                literals[(table, column)] = [_literal(v, type_name) for v in values if v is not None]
    return literals


def _literal(value, type_name: str) -> str:
    if isinstance(value, (int, Decimal)):
        return str(value)
    if isinstance(value, datetime.date):
        return f"date '{value.isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"


# -- the statements ----------------------------------------------------------

TEXT_OPS = ("=", "<>", "<", ">=")
NUMBER_OPS = ("=", "<>", "<", ">", "<=", ">=")


@st.composite
def predicate(draw, literals, alias: str, table: str, depth: int = 0):
    if depth < 2 and draw(st.integers(0, 3)) == 0:
        joiner = draw(st.sampled_from(("AND", "OR")))
        left = draw(predicate(literals, alias, table, depth + 1))
        right = draw(predicate(literals, alias, table, depth + 1))
        negate = draw(st.booleans())
        return f"{'NOT ' if negate else ''}({left} {joiner} {right})"
    column = draw(st.sampled_from(sorted(TABLES[table])))
    type_name = TABLES[table][column]
    ref = f"{alias}.{column}"

    def literal() -> str:
        # A slot the test fills in, so that no raw value is ever printed.
        return f"<<{table}.{column}#{draw(st.integers(0, literals[(table, column)] - 1))}>>"

    value = literal()
    if type_name == "text":
        kind = draw(st.integers(0, 5))
        if kind == 0:
            return f"{ref} LIKE left({value}, 3) || '%'"
        if kind == 1:
            return f"{ref} IN ({value}, {literal()})"
        if kind == 2:
            return f"upper({ref}) = upper({value})"
        if kind == 3:
            return f"left({ref}, 3) = left({value}, 3)"
        return f"{ref} {draw(st.sampled_from(TEXT_OPS))} {value}"
    if type_name == "date":
        kind = draw(st.integers(0, 3))
        if kind == 0:
            return f"{ref} BETWEEN {value} AND {literal()}"
        if kind == 1:
            return f"extract(year from {ref}) = extract(year from {value})"
        return f"{ref} {draw(st.sampled_from(NUMBER_OPS))} {value}"
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return f"{ref} BETWEEN {value} AND {literal()}"
    return f"{ref} {draw(st.sampled_from(NUMBER_OPS))} {value}"


def _columns(draw, alias: str, table: str) -> list[str]:
    names = draw(st.lists(st.sampled_from(sorted(TABLES[table])), min_size=1, max_size=4, unique=True))
    return [f"{alias}.{name}" for name in names]


@st.composite
def statement(draw, literals):
    shape = draw(st.sampled_from(("patients", "visits", "join", "in", "exists", "derived", "cte", "scalar")))
    where: list[str] = []
    if shape in ("patients", "visits"):
        table, alias = shape, shape[0]
        columns = _columns(draw, alias, table)
        source = f"{table} {alias}"
        if draw(st.booleans()):
            where.append(draw(predicate(literals, alias, table)))
    elif shape == "join":
        columns = _columns(draw, "p", "patients") + _columns(draw, "v", "visits")
        source = "patients p JOIN visits v ON v.patient_id = p.patient_id"
        for alias, table in (("p", "patients"), ("v", "visits")):
            if draw(st.booleans()):
                where.append(draw(predicate(literals, alias, table)))
    elif shape in ("in", "exists"):
        columns = _columns(draw, "p", "patients")
        source = "patients p"
        inner = draw(predicate(literals, "v", "visits"))
        if shape == "in":
            where.append(f"p.patient_id IN (SELECT v.patient_id FROM visits v WHERE {inner})")
        else:
            where.append(f"EXISTS (SELECT 1 FROM visits v WHERE v.patient_id = p.patient_id AND {inner})")
    elif shape == "derived":
        inner = draw(predicate(literals, "p", "patients"))
        columns = [c.replace("p.", "s.", 1) for c in _columns(draw, "p", "patients")]
        source = f"(SELECT * FROM patients p WHERE {inner}) AS s"
    elif shape == "cte":
        inner = draw(predicate(literals, "v", "visits"))
        columns = [c.replace("v.", "w.", 1) for c in _columns(draw, "v", "visits")]
        source = "w"
    else:  # scalar
        inner = draw(predicate(literals, "v", "visits"))
        columns = _columns(draw, "p", "patients") + [
            f"(SELECT count(*) FROM visits v WHERE v.patient_id = p.patient_id AND {inner})"]
        source = "(SELECT * FROM patients ORDER BY ssn, patient_id LIMIT 2) p"
    text = ("WITH w AS (SELECT * FROM visits v WHERE " + inner + ") " if shape == "cte" else "") + "SELECT "
    grouped = shape != "scalar" and draw(st.integers(0, 3)) == 0
    if grouped:
        keys = columns[: draw(st.integers(1, len(columns)))]
        text += ", ".join(keys) + ", count(*), min(" + columns[-1] + ")::text, max(" + columns[0] + ")::text"
    else:
        text += ", ".join(columns)
    text += f" FROM {source}"
    if where:
        text += " WHERE " + " AND ".join(where)
    if grouped:
        text += " GROUP BY " + ", ".join(keys)
    if draw(st.booleans()):
        orderable = keys if grouped else columns
        order = orderable[: draw(st.integers(1, len(orderable)))]
        text += " ORDER BY " + ", ".join(order) + draw(st.sampled_from(("", " DESC", " NULLS FIRST")))
    return text


def _rows(rows) -> list[tuple[str, ...]]:
    return sorted(tuple(_dump(v) for v in row) for row in rows)


@pytest.fixture(scope="session")
def clinician_conn(guarded):
    with psycopg.connect(guarded.dsn("clinician", "health"), autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def copy_conn(masked_copy):
    with psycopg.connect(masked_copy, autocommit=True) as conn:
        yield conn


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_generated_selects_see_only_masked_values(data, guarded, raw_health, clinician_conn, copy_conn,
                                                   raw_literals):
    truth = load_truth(raw_health, guarded.dsn("clinician", "health"), None)
    template = data.draw(statement({key: len(values) for key, values in raw_literals.items()}), label="statement")
    sql = re.sub(r"<<(\w+)\.(\w+)#(\d+)>>", lambda m: raw_literals[(m[1], m[2])][int(m[3])], template)
    try:
        rows = clinician_conn.execute(sql).fetchall()
    except psycopg.Error as exc:
        assert exc.sqlstate != "XX000", f"internal error for a generated statement: {exc.sqlstate}"
        assert exc.sqlstate in lc.REFUSAL_STATES, f"a generated statement failed with {exc.sqlstate}"
        leaks = truth.leaks(str(exc), sql)
        assert not leaks, f"raw values in the error: {leaks}"
        return
    leaks = truth.leaks("\n".join(_dump(row) for row in rows), sql)
    assert not leaks, f"raw values in the answer: {leaks}"
    expected = copy_conn.execute(sql).fetchall()
    assert _rows(rows) == _rows(expected), (
        f"the answer differs from the same statement over the masked rows "
        f"({len(rows)} rows against {len(expected)}): a predicate saw raw values or hidden rows")


def test_the_generator_would_catch_a_proxy_that_does_not_mask(guarded, raw_health, copy_conn, raw_literals):
    """The same statements as the admin (raw role) through pgshroud: most of them
    must fail the properties above, or they would prove nothing."""
    truth = load_truth(raw_health, guarded.dsn("clinician", "health"), None)
    sizes = {key: len(values) for key, values in raw_literals.items()}
    caught: list[bool] = []
    with psycopg.connect(guarded.dsn("admin", "health"), autocommit=True) as admin:

        @settings(max_examples=20, deadline=None, database=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow])
        @given(data=st.data())
        def probe(data):
            template = data.draw(statement(sizes))
            sql = re.sub(r"<<(\w+)\.(\w+)#(\d+)>>", lambda m: raw_literals[(m[1], m[2])][int(m[3])], template)
            try:
                rows = admin.execute(sql).fetchall()
                expected = copy_conn.execute(sql).fetchall()
            except psycopg.Error:
                return
            leaked = bool(truth.leaks("\n".join(_dump(row) for row in rows), sql))
            caught.append(leaked or _rows(rows) != _rows(expected))

        probe()
    assert len(caught) >= 15 and sum(caught) >= 0.6 * len(caught), (
        f"only {sum(caught)} of {len(caught)} generated statements tell raw from masked data")
