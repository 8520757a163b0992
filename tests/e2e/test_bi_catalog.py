"""BI tools, ORMs and drivers can browse the database through pgshroud.

Before a BI tool shows a single row it reads the catalog: schemas, tables,
columns and their types, keys, indexes, privileges, type OIDs. Those queries
read only pg_catalog and information_schema, so pgshroud must let them
through for the masked user (clinician) and the aggregate user (analyst),
and what they print must be what the tool would see directly. The one
exception is by design: aggregate roles may not read row-count statistics
(reltuples, relpages, pg_stat_*, pg_statio_*), which would undo the noise of
their private answers; those are refused with SQLSTATE 42501.

- psql's describe commands, compared with the admin's output directly;
- the catalog queries of Metabase, Grafana, DBeaver, DataGrip, pgcli,
  jupysql, Npgsql, psycopg and common session probes, kept as data files under tests/bi_queries/ (see its
  README), plus the first data queries Metabase sends after a sync, which the
  clinician must get masked;
- SQLAlchemy 2 reflection and pgjdbc's DatabaseMetaData, driven for real and
  compared with the admin's results directly, and a SQLAlchemy Core query on
  the reflected tables;
- psycopg's type-info fetchers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.composite import CompositeInfo
from psycopg.types.enum import EnumInfo
from psycopg.types.multirange import MultirangeInfo
from psycopg.types.range import RangeInfo

pytestmark = pytest.mark.clients

BI_QUERIES = Path(__file__).resolve().parents[1] / "bi_queries"
ROLES = ("clinician", "analyst")
PSQL = shutil.which("psql")
JDBC_JAR = Path(os.environ.get("PGSHROUD_JDBC_JAR", "/usr/share/java/postgresql.jar"))


# ------------------------------------------------------------------ endpoints


def admin_direct(pg) -> str:
    """The policy's raw user, straight to PostgreSQL: what the tools would see without pgshroud."""
    return make_conninfo(pg.dsn(user="admin", password="admin", dbname="health"), sslmode="disable")


def through_pgshroud(guarded, role: str) -> str:
    return guarded.dsn(role, "health")


def without_password(conninfo: str) -> tuple[str, str]:
    params = conninfo_to_dict(conninfo)
    password = str(params.pop("password", "") or "")
    return make_conninfo(**params), password


# ----------------------------------------------------------------------- psql

PSQL_COMMANDS = [r"\d", r"\dt", r"\d patients", r"\d+ visits", r"\dn", r"\df", r"\l", r"\du", r"\dv", r"\di"]


def run_psql(conninfo: str, command: str) -> tuple[int, str, str]:
    if PSQL is None:
        pytest.fail("psql is not on PATH; install postgresql-client", pytrace=False)
    dsn, password = without_password(conninfo)
    env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"}
    proc = subprocess.run([PSQL, "-X", "-P", "pager=off", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", command],
                          env=env, capture_output=True, text=True, timeout=30, check=False)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def psql_direct(pg, health_db) -> dict[str, tuple[int, str, str]]:
    return {command: run_psql(admin_direct(pg), command) for command in PSQL_COMMANDS}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("command", PSQL_COMMANDS)
def test_psql_describe_commands(guarded, psql_direct, role, command):
    direct_rc, direct_out, direct_err = psql_direct[command]
    assert direct_rc == 0 and "ERROR" not in direct_err, f"psql {command} fails even directly: {direct_err}"
    rc, out, err = run_psql(through_pgshroud(guarded, role), command)
    assert rc == 0 and "ERROR" not in err, f"psql -c '{command}' as {role} through pgshroud: exit {rc}\n{err}"
    assert err == direct_err  # "Did not find any relations." and the like
    # Every line: table and column names, types, owners, keys, indexes, privileges.
    assert out.splitlines() == direct_out.splitlines(), (
        f"psql -c '{command}' as {role} through pgshroud differs from the admin's output directly")


def test_psql_describe_shows_the_real_structure(psql_direct):
    """Guard against comparing two empty outputs: the direct output names what the tests rely on."""
    _, patients, _ = psql_direct[r"\d patients"]
    for column, type_ in [("patient_id", "integer"), ("ssn", "text"), ("birth_date", "date")]:
        assert re.search(rf"^\s*{column}\s*\|\s*{type_}\b", patients, re.MULTILINE), patients
    _, visits, _ = psql_direct[r"\d+ visits"]
    assert "cost" in visits and "numeric(10,2)" in visits and "Foreign-key constraints" in visits
    _, tables, _ = psql_direct[r"\dt"]
    assert all(name in tables for name in ("patients", "visits", "labs", "diagnoses"))


# ------------------------------------------------------------ catalog queries


@dataclass
class CatalogQuery:
    path: Path
    source: str
    sql: str
    params: list[Any] | None = None
    params_from: str | None = None
    min_rows: int = 0
    contains: list[str] = field(default_factory=list)
    roles: tuple[str, ...] = ROLES
    analyst_refusal: tuple[str, str] | None = None  # (sqlstate, words in the message)
    analyst_hides: tuple[str, ...] = ()  # refused with 42501, or these columns all read as NULL

    @property
    def name(self) -> str:
        return str(self.path.relative_to(BI_QUERIES).with_suffix(""))


def load_query(path: Path) -> CatalogQuery:
    header, body = [], []
    for line in path.read_text().splitlines():
        if not body and line.startswith("--"):
            header.append(line[2:].strip())
        else:
            body.append(line)
    query = CatalogQuery(path, header[0] if header else "", "\n".join(body).strip())
    for line in header[1:]:
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "params":
            query.params = json.loads(value)
        elif key == "params_from":
            query.params_from = value
        elif key == "min_rows":
            query.min_rows = int(value)
        elif key == "contains":
            query.contains.append(value)
        elif key == "roles":
            query.roles = tuple(r.strip() for r in value.split(","))
        elif key == "analyst":
            sqlstate, _, words = value.partition(" ")
            query.analyst_refusal = (sqlstate, words)
        elif key == "analyst_hides":
            query.analyst_hides = tuple(value.split())
        else:
            raise ValueError(f"{path}: unknown header key {key!r}")
    if not query.sql:
        raise ValueError(f"{path}: no statement")
    return query


# bi_queries/aggregates holds the private aggregates tools send, in a format of its own
# (tests/e2e/test_bi_aggregates.py runs them).
CATALOG_QUERIES = [load_query(p) for p in sorted(BI_QUERIES.rglob("*.sql"))
                   if p.relative_to(BI_QUERIES).parts[0] != "aggregates"]


def test_catalog_query_files_are_present():
    tools = {q.path.parent.name for q in CATALOG_QUERIES}
    assert {"basics", "metabase", "grafana", "dbeaver", "psycopg", "statistics", "pgcli", "datagrip",
            "jupysql"} <= tools
    assert len(CATALOG_QUERIES) >= 70


@pytest.fixture(scope="module")
def role_connections(guarded):
    connections: dict[str, psycopg.Connection] = {}

    def get(role: str) -> psycopg.Connection:
        conn = connections.get(role)
        if conn is None or conn.closed:
            conn = connections[role] = psycopg.connect(through_pgshroud(guarded, role), autocommit=True)
        return conn

    yield get
    for conn in connections.values():
        conn.close()


def run_catalog_query(conn: psycopg.Connection, query: CatalogQuery, *, with_names: bool = False):
    params = query.params
    if query.params_from is not None:
        params = list(conn.execute(query.params_from).fetchone())
    cursor = conn.execute(query.sql, params) if params is not None else conn.execute(query.sql)
    rows = cursor.fetchall() if cursor.description is not None else []
    if with_names:
        return [d.name for d in cursor.description or ()], rows
    return rows


def revealed(names: list[str], rows: list[tuple], hidden: tuple[str, ...]) -> list[str]:
    """Values of the hidden columns that are not NULL, as columns or as keys of JSON values."""
    found = []
    for row in rows:
        for name, value in zip(names, row):
            if name in hidden and value is not None:
                found.append(f"{name}={value!r}")
            if isinstance(value, str) and value.startswith("{"):
                try:
                    value = json.loads(value)
                except ValueError:
                    continue
            if isinstance(value, dict):
                found += [f"{key}={value[key]!r}" for key in hidden if value.get(key) is not None]
    return found


def cells(rows: list[tuple]) -> str:
    return "\n".join("\t".join(str(value) for value in row) for row in rows)


# A query of a data table (roles: clinician) is not run for the analyst: what an aggregate role
# may read of a protected table is the concern of the release tests, not of catalog browsing.
CATALOG_CASES = [pytest.param(q, role, id=f"{q.name}-{role}") for q in CATALOG_QUERIES for role in q.roles]


@pytest.mark.parametrize(("query", "role"), CATALOG_CASES)
def test_catalog_query(role_connections, role, query):
    conn = role_connections(role)
    refusal = query.analyst_refusal if role == "analyst" else None
    if refusal is not None:
        sqlstate, words = refusal
        with pytest.raises(psycopg.Error) as raised:
            rows = run_catalog_query(conn, query)
            pytest.fail(f"{query.name}: the analyst read row-count statistics; got {len(rows)} rows:\n"
                        f"{cells(rows)[:2000]}")
        error = raised.value
        assert error.sqlstate == sqlstate, f"{query.name}: {error.sqlstate} {error}"
        assert words.lower() in str(error).lower(), f"{query.name}: refusal does not say why: {error}"
        return
    if role == "analyst" and query.analyst_hides:
        try:
            names, rows = run_catalog_query(conn, query, with_names=True)
        except psycopg.Error as exc:
            assert exc.sqlstate == "42501", f"{query.name}: {exc.sqlstate} {exc}"
            assert "row-count" in str(exc) or "row count" in str(exc), f"{query.name}: unclear refusal: {exc}"
            return
        leaked = revealed(names, rows, query.analyst_hides)
        assert not leaked, (f"{query.name}: the analyst read row-count statistics without naming them: "
                            f"{', '.join(leaked[:8])}\nstatement:\n{query.sql}")
        return
    try:
        rows = run_catalog_query(conn, query)
    except psycopg.Error as exc:
        pytest.fail(f"{query.source}\n{query.name} refused for {role}: SQLSTATE {exc.sqlstate}: {exc}\n"
                    f"statement:\n{query.sql}", pytrace=False)
    assert len(rows) >= query.min_rows, f"{query.name}: {len(rows)} rows for {role}"
    text = cells(rows)
    for value in query.contains:
        assert value in text, f"{query.name}: {value!r} not in the rows for {role}"


@pytest.mark.parametrize("role", ROLES)
def test_catalog_queries_return_what_the_admin_sees(role_connections, pg, role):
    """The catalog reads pass through untouched: same rows as the admin directly."""
    same = ["grafana/tables_in_schema", "grafana/columns_qualified", "metabase/describe_fks",
            "dbeaver/constraints", "basics/pg_type_oids"]
    by_name = {q.name: q for q in CATALOG_QUERIES}
    with psycopg.connect(admin_direct(pg), autocommit=True) as direct:
        for name in same:
            expected = sorted(run_catalog_query(direct, by_name[name]), key=repr)
            got = sorted(run_catalog_query(role_connections(role), by_name[name]), key=repr)
            assert got == expected, name


# ------------------------------------------------------------------ SQLAlchemy


def reflect(url: sa.URL) -> dict[str, Any]:
    """What SQLAlchemy 2's inspector learns about the database, as plain data."""
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        found: dict[str, Any] = {
            "schemas": sorted(inspector.get_schema_names()),
            "tables": sorted(inspector.get_table_names()),
            "views": sorted(inspector.get_view_names()),
            "materialized_views": sorted(inspector.get_materialized_view_names()),
            "sequences": sorted(inspector.get_sequence_names()),
            "has_table": [inspector.has_table("patients"), inspector.has_table("visits", schema="public"),
                          inspector.has_table("no_such_table")],
            "default_schema": inspector.default_schema_name,
        }
        for table in found["tables"]:
            found[table] = {
                "columns": [{**c, "type": repr(c["type"])} for c in inspector.get_columns(table)],
                "pk": inspector.get_pk_constraint(table),
                "fks": inspector.get_foreign_keys(table),
                "indexes": inspector.get_indexes(table),
                "unique": inspector.get_unique_constraints(table),
                "checks": inspector.get_check_constraints(table),
                "comment": inspector.get_table_comment(table),
            }
        metadata = sa.MetaData()
        metadata.reflect(bind=engine, schema="public")
        found["metadata"] = {
            name: [(c.name, repr(c.type), c.nullable, c.primary_key, sorted(fk.target_fullname for fk in c.foreign_keys))
                   for c in table.columns]
            for name, table in sorted(metadata.tables.items())
        }
        return found
    finally:
        engine.dispose()


def sqlalchemy_url(conninfo: str) -> sa.URL:
    params = conninfo_to_dict(conninfo)
    return sa.URL.create("postgresql+psycopg", username=params["user"], password=params.get("password"),
                         host=params["host"], port=int(params["port"]), database=params["dbname"],
                         query={"sslmode": "disable"})


@pytest.mark.parametrize("role", ROLES)
def test_sqlalchemy_reflection(guarded, pg, role):
    expected = reflect(sqlalchemy_url(admin_direct(pg)))
    assert {"patients", "visits", "labs", "diagnoses"} <= set(expected["tables"])
    assert any(fk["referred_table"] == "patients" for fk in expected["visits"]["fks"])
    try:
        got = reflect(sqlalchemy_url(through_pgshroud(guarded, role)))
    except sa.exc.DBAPIError as exc:
        pytest.fail(f"SQLAlchemy reflection as {role} was refused: {exc.orig.sqlstate}: {exc.orig}\n"
                    f"statement:\n{exc.statement}", pytrace=False)
    for key in expected:
        assert got[key] == expected[key], f"SQLAlchemy reflection of {key} as {role}"


@pytest.mark.parametrize("schema", [None, "public"])
def test_sqlalchemy_core_query_on_reflected_tables(guarded, schema):
    """Reflected with a schema, SQLAlchemy qualifies every column: "public.patients.ssn"."""
    engine = sa.create_engine(sqlalchemy_url(through_pgshroud(guarded, "clinician")))
    try:
        metadata = sa.MetaData()
        patients = sa.Table("patients", metadata, autoload_with=engine, schema=schema)
        query = sa.select(patients.c.patient_id, patients.c.ssn).order_by(patients.c.patient_id).limit(5)
        with engine.connect() as conn:
            try:
                rows = conn.execute(query).all()
            except sa.exc.DBAPIError as exc:
                pytest.fail(f"SQLAlchemy Core query as clinician failed: {exc.orig.sqlstate}: {exc.orig}\n"
                            f"statement:\n{exc.statement}", pytrace=False)
    finally:
        engine.dispose()
    assert len(rows) == 5
    assert all(re.fullmatch(r"XXX-XX-\d{4}", ssn) for _, ssn in rows), rows


# ---------------------------------------------------------------------- pgjdbc


@pytest.fixture(scope="module")
def jdbc_classes(tmp_path_factory) -> Path:
    """JdbcMetadata compiled once for the module."""
    javac = shutil.which("javac")
    if javac is None or shutil.which("java") is None:
        pytest.fail("javac and java are not on PATH; install openjdk-17-jdk-headless", pytrace=False)
    if not JDBC_JAR.is_file():
        pytest.fail(f"pgjdbc jar {JDBC_JAR} is missing; install libpostgresql-jdbc-java", pytrace=False)
    target = tmp_path_factory.mktemp("jdbc")
    subprocess.run([javac, "-encoding", "UTF-8", "-d", str(target), "-cp", str(JDBC_JAR),
                    str(BI_QUERIES / "jdbc" / "JdbcMetadata.java")], check=True, timeout=180)
    return target


def run_jdbc_metadata(classes: Path, conninfo: str, *extra: str) -> tuple[int, str, str]:
    params = conninfo_to_dict(conninfo)
    proc = subprocess.run(
        [shutil.which("java") or "java", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
         "-cp", f"{JDBC_JAR}{os.pathsep}{classes}", "JdbcMetadata",
         params["host"], str(params["port"]), params["dbname"], params["user"], params.get("password") or "",
         *extra],
        capture_output=True, text=True, timeout=120, check=False)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def jdbc_direct(jdbc_classes, pg, health_db) -> str:
    rc, out, err = run_jdbc_metadata(jdbc_classes, admin_direct(pg))
    assert rc == 0, f"JdbcMetadata fails even directly:\n{out}\n{err}"
    return out


@pytest.mark.parametrize("role", ROLES)
def test_jdbc_database_metadata(guarded, jdbc_classes, jdbc_direct, role):
    expected = jdbc_blocks(jdbc_direct)
    assert "\tpublic\tpatients\tTABLE\t" in jdbc_direct and "\tvisits_patient_id_fkey\t" in jdbc_direct
    # The analyst reads no rows of patients, so the query of ResultSetMetaData is the clinician's only.
    if role == "analyst":
        del expected["ResultSetMetaData(patients)"]
    _rc, out, err = run_jdbc_metadata(jdbc_classes, through_pgshroud(guarded, role),
                                     *(["catalog-only"] if role == "analyst" else []))
    got = jdbc_blocks(out)
    assert list(got) == list(expected), f"pgjdbc stopped early as {role}:\n{out[-2000:]}\n{err[-2000:]}"
    refused, differs = [], []
    for call, lines in expected.items():
        mine = got[call]
        if role == "analyst" and call.startswith("getIndexInfo("):
            # CARDINALITY and PAGES are the index's reltuples and relpages, which aggregate roles
            # may not read: refused by name, or read as NULL. The rest must be the same.
            if mine and mine[0].startswith("ERROR 42501") and "row-count" in mine[0]:
                continue
            counts = [v for line in mine[1:] for v in line.split("\t")[10:12]]
            assert all(v in ("null", "0") for v in counts), f"{call} revealed row counts to the analyst: {counts}"
            mine, lines = index_info_without_counts(mine), index_info_without_counts(lines)
        if call.startswith("ResultSetMetaData"):
            mine, lines = without_nullability(mine), without_nullability(lines)
        if mine and mine[0].startswith("ERROR"):
            refused.append(f"{call}: {mine[0]}")
        elif mine != lines:
            differs.append(call)
    assert not refused, f"pgjdbc DatabaseMetaData as {role} through pgshroud:\n" + "\n".join(refused)
    assert not differs, f"pgjdbc DatabaseMetaData as {role} differs from the admin's directly: {differs}"


def jdbc_blocks(output: str) -> dict[str, list[str]]:
    """JdbcMetadata's output by call: the call's lines after its "== name" line."""
    blocks: dict[str, list[str]] = {}
    current: list[str] = []
    for line in output.splitlines():
        if line.startswith("== "):
            current = blocks.setdefault(line[3:], [])
        else:
            current.append(line)
    return blocks


def without_nullability(lines: list[str]) -> list[str]:
    """ResultSetMetaData's isNullable comes from the column's source table; through a masked
    subquery the source is unknown, and pgjdbc then says columnNullableUnknown (2), which is
    also the truth for a masked column. Names and types must still match."""
    out = []
    for line in lines:
        name, type_, nullable, auto = line.split("\t")
        assert nullable in ("0", "1", "2") and auto in ("true", "false"), line
        out.append(f"{name}\t{type_}\t\t{auto}")
    return out


def index_info_without_counts(lines: list[str]) -> list[str]:
    """getIndexInfo rows without CARDINALITY and PAGES (columns 11 and 12)."""
    return [line if line.startswith("rows: ") else "\t".join(line.split("\t")[:10] + line.split("\t")[12:])
            for line in lines]


# --------------------------------------------------------------------- psycopg


def type_infos(conninfo: str) -> dict[str, Any]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        def plain(info):
            if info is None:
                return None
            return {k: v for k, v in vars(info).items() if not k.startswith("_") and k != "typemod"}

        return {
            "text": plain(psycopg.types.TypeInfo.fetch(conn, "text")),
            "int4[]": plain(psycopg.types.TypeInfo.fetch(conn, "integer[]")),
            "patients": plain(CompositeInfo.fetch(conn, "patients")),
            "no_enum": plain(EnumInfo.fetch(conn, "no_such_enum")),
            "int4range": plain(RangeInfo.fetch(conn, "int4range")),
            "int4multirange": plain(MultirangeInfo.fetch(conn, "int4multirange")),
            "hstore": plain(psycopg.types.TypeInfo.fetch(conn, "hstore")),
        }


@pytest.mark.parametrize("role", ROLES)
def test_psycopg_type_info(guarded, pg, role):
    expected = type_infos(admin_direct(pg))
    assert list(expected["patients"]["field_names"][:2]) == ["patient_id", "name"]
    try:
        got = type_infos(through_pgshroud(guarded, role))
    except psycopg.Error as exc:
        pytest.fail(f"psycopg type info as {role} refused: {exc.sqlstate}: {exc}", pytrace=False)
    assert got == expected


# ----------------------------------------------------------- clear refusals

PARSER_WORDS = ("sqlglot", "<class", "expressions", "Required keyword", "ParseError", "Token")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("sql", [
    "select x::regtype[][ from pg_class",
    "select * from pg_catalog.pg_class where",
    "select relname from pg_catalog.pg_class order by",
    "select 'unterminated",
])
def test_refusals_never_name_the_parser(role_connections, role, sql):
    """A statement pgshroud cannot read is refused with PostgreSQL's syntax-error SQLSTATE, where it
    stopped and what to do, never in the words of the parser pgshroud uses."""
    conn = role_connections(role)
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(sql)
    error = raised.value
    assert error.sqlstate == "42601", error
    text = f"{error.diag.message_primary} {error.diag.message_hint}"
    assert error.diag.message_hint, f"no hint: {text}"
    assert not [w for w in PARSER_WORDS if w in text], text
