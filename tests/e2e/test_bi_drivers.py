"""Real drivers and tools, unchanged, through pgshroud with the healthcare
policy: what an analyst or a clinician sees when they only change the host.

Each test drives a real client (Django's ORM and inspectdb, SQLAlchemy's
ORM, knex, psql with FETCH_COUNT, psycopg's named cursors, pgcli, pgjdbc
with a fetch size) against pgshroud with the healthcare policy: the
clinician on the `guarded` fixture must get masked rows; the analyst, on
the same set-up with a privacy budget ledger, must get answers, not
refusals, whose values lie near the true ones.

"Near" is measured against the admin's direct answer to the same question
as pgshroud's contribution bounding defines it (rewriter/private/bounding.py):
each patient keeps at most max_groups x max_rows of their rows, the same
share of each of their groups, and each cost is clamped to the policy's
bounds. The direct query gives the bounded count (or sum) of every group
between the values for rounding each patient's share down and up; the
released value must lie in that range widened by four times the 95%
margin of error pgshroud reports for the column in its notice (for Laplace
noise, a one-in-160,000 chance per value of a false failure; the file
checks about a hundred values).

A tool that is not installed fails its test with what to install; nothing
here is skipped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy import BigInteger, Date, Integer, Numeric, Text, create_engine, event, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import NullPool

from pgshroud.policies.model import Budgets, EpsilonDelta
from pgshroud.proxy.budget.ledger import PostgresLedger
from pgshroud.proxy.ops.catalog import read_catalog
from pgshroud.proxy.session.driver import SessionContext
from pgshroud.rewriter import plan
from tests.e2e.test_clients_jvm_node import JDBC_JAR, NODE_DIR, node_modules  # noqa: F401
from tests.fix_proxy import RunningProxy, proxy_config

pytestmark = pytest.mark.clients

CLIENTS = Path(__file__).resolve().parents[1] / "clients"
DEPARTMENTS = frozenset({  # the policy's public domain of visits.department
    "Primary Care", "Endocrinology", "Orthopedics", "Emergency", "Neurology", "Pulmonology",
    "Infectious Disease", "Gastroenterology", "Surgery", "Nephrology", "Cardiology", "Psychiatry",
    "Dermatology", "Ophthalmology", "Oncology", "Obstetrics",
})
NOISE_WIDTH = 4  # released values may lie this many 95% margins outside the bounded range
SINCE = date(2023, 1, 1)  # the date filter of the ORM tests


# ------------------------------------------------------------ the analyst's pgshroud


@pytest.fixture(scope="module")
def answering(pg: Any, health_db: str, health_policy: Any) -> Iterator[RunningProxy]:
    """The `guarded` set-up with a privacy budget ledger (in `health`), which
    private answers need: the analyst's tests run here, the clinician's on
    `guarded`. The budget is large enough for every test of the suite, since
    the ledger is shared by all that charge the analyst."""
    policy = dataclasses.replace(health_policy, budgets=Budgets(per_user=EpsilonDelta(10_000, 1.0)))
    catalog = asyncio.run(read_catalog(health_db))
    upstream = make_conninfo(pg.dsn(), sslmode="disable")
    shared = SessionContext(proxy_config(upstream), plan, ledger=PostgresLedger(health_db, policy),
                            policy=policy, catalog=lambda: catalog)
    proxy = RunningProxy(shared)
    yield proxy
    proxy.stop()


# ------------------------------------------------------------ true values


@dataclass(frozen=True)
class Bounded:
    """A value as contribution bounding defines it: between low and high
    (each patient's share of their rows rounded down, and up)."""

    low: float
    high: float


@dataclass(frozen=True)
class Truth:
    """The admin's direct answers, read once: bounded per-department counts
    and the bounded overall average cost, for all visits and since SINCE."""

    counts: dict[str, Bounded]
    counts_since: dict[str, Bounded]
    average_cost: Bounded
    average_cost_2023: Bounded
    count_2023: Bounded
    masked_counts: dict[str, int]  # the clinician's exact per-department counts (row filter applied)
    visits_shown_to_clinician: int
    patients: int
    diagnoses: int
    ssn_last_four: list[str]
    real_patient_ids: frozenset[int]


def _allowance(policy: Any) -> int:
    contribution = policy.protected_tables["public.visits"].contribution
    return contribution.max_groups_per_unit * contribution.max_rows_per_group


def _cost_bounds(policy: Any) -> tuple[Decimal, Decimal]:
    low, high = policy.protected_tables["public.visits"].columns["cost"].bounds
    return Decimal(str(low)), Decimal(str(high))


# Per patient and group (department, or one group): rows, the clamped sum of
# cost, and the patient's share of them under the allowance.
_SHARES = """
WITH person_group AS (
    SELECT patient_id, {group} AS grp, count(*) AS n,
           sum(least(greatest(cost, %(low)s), %(high)s)) AS clamped
    FROM visits WHERE {where} GROUP BY 1, 2
), person AS (
    SELECT patient_id, sum(n) AS total FROM person_group GROUP BY 1
)
SELECT grp,
       sum(floor(n * least(1, %(allowance)s::numeric / total))) AS rows_low,
       sum(ceil(n * least(1, %(allowance)s::numeric / total))) AS rows_high,
       sum(floor(n * least(1, %(allowance)s::numeric / total)) * clamped / n) AS sum_low,
       sum(ceil(n * least(1, %(allowance)s::numeric / total)) * clamped / n) AS sum_high
FROM person_group JOIN person USING (patient_id)
GROUP BY grp
"""


def _bounded_groups(conn: psycopg.Connection, policy: Any, *, group: str, where: str = "true",
                    params: dict[str, Any] | None = None) -> dict[Any, tuple[Bounded, Bounded]]:
    """Per group: the bounded count and the bounded average cost."""
    low, high = _cost_bounds(policy)
    args = {"low": low, "high": high, "allowance": _allowance(policy), **(params or {})}
    out = {}
    for grp, rows_low, rows_high, sum_low, sum_high in conn.execute(
            _SHARES.format(group=group, where=where), args):
        count = Bounded(float(rows_low), float(rows_high))
        average = Bounded(float(sum_low / rows_high), float(sum_high / rows_low) if rows_low else float(high))
        out[grp] = (count, average)
    return out


@pytest.fixture(scope="module")
def truth(raw_health: str, health_policy: Any) -> Truth:
    with psycopg.connect(raw_health) as conn:
        by_department = _bounded_groups(conn, health_policy, group="department")
        since = _bounded_groups(conn, health_policy, group="department", where="visit_date >= %(since)s",
                                params={"since": SINCE})
        overall = _bounded_groups(conn, health_policy, group="0")[0]
        year = _bounded_groups(conn, health_policy, group="0",
                               where="visit_date >= %(since)s AND visit_date < %(until)s",
                               params={"since": SINCE, "until": date(2024, 1, 1)})[0]
        masked = dict(conn.execute("SELECT department, count(*) FROM visits WHERE department <> 'Psychiatry' "
                                   "GROUP BY 1").fetchall())
        patients = conn.execute("SELECT patient_id, right(ssn, 4) FROM patients").fetchall()
        diagnoses = conn.execute("SELECT count(*) FROM diagnoses").fetchone()[0]
    return Truth(
        counts={d: c for d, (c, _) in by_department.items()},
        counts_since={d: c for d, (c, _) in since.items()},
        average_cost=overall[1],
        average_cost_2023=year[1],
        count_2023=year[0],
        masked_counts=masked,
        visits_shown_to_clinician=sum(masked.values()),
        patients=len(patients),
        diagnoses=diagnoses,
        ssn_last_four=sorted(last for _, last in patients),
        real_patient_ids=frozenset(pid for pid, _ in patients),
    )


# ------------------------------------------------------------ checks


_MARGIN = re.compile(r"(?P<name>\"[^\"]+\"|[^\s,:]+) ±(?P<value>[0-9.eE+-]+)")


def margins(notices: list[str]) -> dict[str, float]:
    """The 95% margins of error pgshroud reported, by column name."""
    found: dict[str, float] = {}
    for notice in notices:
        _, marker, listed = notice.partition("95% margins of error")
        if marker:
            for match in _MARGIN.finditer(listed):
                found[match["name"].strip('"')] = float(match["value"])
    return found


def margin_of(notices: list[str], column: str) -> float:
    found = margins(notices)
    assert column in found, (
        f"pgshroud reported no margin of error for column {column!r}; the notices were: {notices!r}")
    return found[column]


def assert_near(what: str, released: Any, bounded: Bounded, margin: float) -> None:
    assert released is not None, f"{what}: released NULL, expected about {bounded}"
    value = float(released)
    slack = NOISE_WIDTH * margin
    assert bounded.low - slack <= value <= bounded.high + slack, (
        f"{what}: released {value}, but the bounded true value lies in [{bounded.low}, {bounded.high}] "
        f"and the reported 95% margin of error is ±{margin}")


def assert_counts_near(what: str, released: dict[str, Any], truth: dict[str, Bounded], margin: float,
                       *, groups: int | None = None) -> None:
    """Each released department is a real one and its count near the true one;
    `groups` is how many rows must come back (default: every department)."""
    assert set(released) <= DEPARTMENTS, f"{what}: unknown departments {set(released) - DEPARTMENTS}"
    expected = len(DEPARTMENTS) if groups is None else groups
    assert len(released) == expected, f"{what}: {len(released)} groups released, expected {expected}"
    for department, count in released.items():
        assert_near(f"{what}, count of {department}", count, truth.get(department, Bounded(0, 0)), margin)


def release_notices(notices: list[str]) -> list[str]:
    """The notices that report a release (one per charge)."""
    return [n for n in notices if n.startswith("privacy cost")]


def charges(raw_health: str) -> int:
    """How many releases the ledger has charged to the analyst so far."""
    with psycopg.connect(raw_health) as conn:
        return conn.execute("SELECT count(*) FROM pgshroud.budget_ledger WHERE user_name = 'analyst'").fetchone()[0]


def require_tool(name: str, install: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name!r} is not on PATH; install it with: {install}", pytrace=False)
    return path


def client_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8", TZ="UTC", PAGER="", PSQL_PAGER="", **extra)
    return env


def run(cmd: list[str], *, what: str, timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{what} timed out after {timeout}s\nstdout: {exc.stdout!r}\nstderr: {exc.stderr!r}")


def direct_dsn(pg: Any, user: str) -> str:
    """The demo user connecting to PostgreSQL itself, bypassing pgshroud."""
    return make_conninfo(pg.dsn(user=user, dbname="health", password=user), sslmode="disable")


# ------------------------------------------------------------ Django


def _django_database(dsn: str, **options: str) -> dict[str, Any]:
    params = conninfo_to_dict(dsn)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": params["dbname"], "USER": params["user"], "PASSWORD": params["password"],
        "HOST": params["host"], "PORT": str(params["port"]),
        "OPTIONS": {"sslmode": "disable", **options},
    }


@pytest.fixture(scope="module")
def django_db(pg: Any, guarded: RunningProxy, answering: RunningProxy) -> Iterator[Any]:
    """Django with its default settings and one database per way in:
    `clinician` and `analyst` through pgshroud, the same users with a
    session time zone other than UTC (so that Django must set it with
    set_config at connect, whatever the server's default), and `direct`,
    the clinician on PostgreSQL itself."""
    try:
        import django
        from django.conf import settings
    except ImportError:
        pytest.fail("Django is not installed; install the test extras: pip install -e '.[test]'", pytrace=False)
    databases = {
        "default": _django_database(direct_dsn(pg, "admin")),
        "direct": _django_database(direct_dsn(pg, "clinician")),
    }
    for user, proxy in (("clinician", guarded), ("analyst", answering)):
        databases[user] = _django_database(proxy.dsn(user, "health"))
        databases[f"{user}_chicago"] = _django_database(proxy.dsn(user, "health"),
                                                        options="-c TimeZone=America/Chicago")
    if settings.configured:
        pytest.fail("Django's settings were configured before this module; it needs its own", pytrace=False)
    settings.configure(DATABASES=databases, INSTALLED_APPS=[])
    django.setup()
    from django.db import connections

    yield connections
    connections.close_all()


@functools.cache
def visit_model() -> Any:
    """An unmanaged model over the demo's visits table, as a Django project
    maps an existing table (defined once, after Django's set-up)."""
    from django.db import models

    class Visit(models.Model):
        visit_id = models.BigIntegerField(primary_key=True)
        patient_id = models.IntegerField()
        visit_date = models.DateField()
        diagnosis_code = models.TextField()
        department = models.TextField()
        cost = models.DecimalField(max_digits=10, decimal_places=2)
        length_of_stay = models.IntegerField()

        class Meta:
            app_label = "health"
            managed = False
            db_table = "visits"

    return Visit


def django_notices(connections: Any, alias: str) -> list[str]:
    """Connect `alias` afresh and collect the notices of its connection."""
    connection = connections[alias]
    connection.close()
    connection.ensure_connection()
    notices: list[str] = []
    connection.connection.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
    return notices


@pytest.mark.parametrize("alias", ["clinician", "analyst", "clinician_chicago", "analyst_chicago"])
def test_django_connects(django_db, alias):
    # At connect Django runs SELECT set_config('TimeZone', 'UTC', false)
    # unless the session's time zone is already UTC.
    connection = django_db[alias]
    connection.close()
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SHOW TimeZone")
        assert cursor.fetchone() == ("UTC",)
    connection.close()


def test_django_inspectdb_as_clinician(django_db):
    from django.core.management import call_command

    def inspect(alias: str) -> str:
        out = io.StringIO()
        django_db[alias].close()
        call_command("inspectdb", database=alias, stdout=out)
        return out.getvalue()

    proxied = inspect("clinician")
    for model in ("class Patients(models.Model)", "class Visits(models.Model)", "class Labs(models.Model)",
                  "class Diagnoses(models.Model)", "cost = models.DecimalField(max_digits=10, decimal_places=2)"):
        assert model in proxied, f"inspectdb through pgshroud lacks {model!r}:\n{proxied}"
    assert proxied == inspect("direct")


def test_django_grouped_count_as_analyst(django_db, truth):
    from django.db.models import Count

    notices = django_notices(django_db, "analyst")
    rows = list(visit_model().objects.using("analyst").values("department").annotate(n=Count("visit_id")))
    released = {row["department"]: row["n"] for row in rows}
    assert_counts_near("Django values().annotate(Count)", released, truth.counts, margin_of(notices, "n"))


def test_django_average_as_analyst(django_db, truth):
    from django.db.models import Avg

    notices = django_notices(django_db, "analyst")
    answer = visit_model().objects.using("analyst").aggregate(Avg("cost"))
    assert set(answer) == {"cost__avg"}
    assert isinstance(answer["cost__avg"], Decimal)
    assert_near("Django aggregate(Avg('cost'))", answer["cost__avg"], truth.average_cost,
                margin_of(notices, "cost__avg"))


def test_django_date_filter_and_slice_as_analyst(django_db, truth):
    # Django binds on the client by default: the date and the slice's LIMIT
    # arrive as literals.
    from django.db.models import Count

    notices = django_notices(django_db, "analyst")
    rows = list(visit_model().objects.using("analyst").filter(visit_date__gte=SINCE)
                .values("department").annotate(n=Count("visit_id")).order_by("department")[:10])
    assert [row["department"] for row in rows] == sorted(DEPARTMENTS)[:10]
    assert_counts_near("Django filter(visit_date__gte).annotate(Count)[:10]",
                       {row["department"]: row["n"] for row in rows}, truth.counts_since,
                       margin_of(notices, "n"), groups=10)


def test_django_iterator_reads_through_a_cursor_as_analyst(django_db, truth, raw_health):
    # .iterator() reads through a server-side cursor: in autocommit, DECLARE
    # ... NO SCROLL CURSOR WITH HOLD FOR ..., then FETCH FORWARD chunk_size.
    from django.db.models import Count

    notices = django_notices(django_db, "analyst")
    before = charges(raw_health)
    rows = list(visit_model().objects.using("analyst").values("department")
                .annotate(n=Count("visit_id")).order_by("department").iterator(chunk_size=4))
    assert [row["department"] for row in rows] == sorted(DEPARTMENTS)
    assert len(release_notices(notices)) == 1, f"one release, charged once: {notices}"
    assert charges(raw_health) == before + 1
    assert_counts_near("Django .iterator(chunk_size=4)", {row["department"]: row["n"] for row in rows},
                       truth.counts, margin_of(notices, "n"))


def test_django_masked_rows_as_clinician(django_db, truth):
    django_db["clinician"].close()
    visits = visit_model().objects.using("clinician")
    departments = set(visits.values_list("department", flat=True).distinct())
    assert departments == set(truth.masked_counts)
    assert visits.count() == truth.visits_shown_to_clinician
    first = list(visits.filter(visit_date__gte=SINCE).order_by("visit_date", "visit_id")[:5])
    assert len(first) == 5 and all(v.visit_date.day == 1 and v.visit_date >= SINCE for v in first)


# ------------------------------------------------------------ SQLAlchemy ORM


def sqlalchemy_session(url: str) -> tuple[Any, list[str]]:
    """A SQLAlchemy engine over psycopg and the notices of its connections."""
    engine = create_engine(url, poolclass=NullPool)
    notices: list[str] = []

    @event.listens_for(engine, "connect")
    def _collect(dbapi_connection, _record):
        dbapi_connection.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))

    return engine, notices


class Base(DeclarativeBase):
    pass


class Visit(Base):
    """The demo's visits table, mapped as an application maps it."""

    __tablename__ = "visits"
    visit_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    patient_id: Mapped[int] = mapped_column(Integer)
    visit_date: Mapped[date] = mapped_column(Date)
    department: Mapped[str] = mapped_column(Text)
    cost: Mapped[Decimal] = mapped_column(Numeric(10, 2))


def proxy_url(proxy: RunningProxy, user: str) -> str:
    return f"postgresql+psycopg://{user}:{user}@{proxy.host}:{proxy.port}/health?sslmode=disable"


def test_sqlalchemy_grouped_count_with_date_filter_and_limit(answering, truth):
    # psycopg sends the date as $1::DATE and the limit as $2::INTEGER.
    engine, notices = sqlalchemy_session(proxy_url(answering, "analyst"))
    try:
        with Session(engine) as session:
            rows = session.execute(
                select(Visit.department, func.count().label("n"))
                .where(Visit.visit_date >= SINCE)
                .group_by(Visit.department)
                .limit(10)).all()
    finally:
        engine.dispose()
    assert_counts_near("SQLAlchemy count() since 2023 LIMIT 10", dict(rows), truth.counts_since,
                       margin_of(notices, "n"), groups=10)


def test_sqlalchemy_count_and_average_between_dates(answering, truth):
    engine, notices = sqlalchemy_session(proxy_url(answering, "analyst"))
    try:
        with Session(engine) as session:
            count, average = session.execute(
                select(func.count().label("n"), func.avg(Visit.cost).label("avg_cost"))
                .where(Visit.visit_date >= SINCE, Visit.visit_date < date(2024, 1, 1))).one()
    finally:
        engine.dispose()
    assert_near("SQLAlchemy count() in 2023", count, truth.count_2023, margin_of(notices, "n"))
    assert_near("SQLAlchemy avg(cost) in 2023", average, truth.average_cost_2023, margin_of(notices, "avg_cost"))


def test_sqlalchemy_streamed_results_as_analyst(answering, truth, raw_health):
    # yield_per streams through a psycopg named cursor (DECLARE, FETCH FORWARD 3).
    engine, notices = sqlalchemy_session(proxy_url(answering, "analyst"))
    before = charges(raw_health)
    try:
        with Session(engine) as session:
            result = session.execute(
                select(Visit.department, func.count().label("n"))
                .group_by(Visit.department).order_by(Visit.department),
                execution_options={"yield_per": 3})
            rows = [tuple(row) for row in result]
    finally:
        engine.dispose()
    assert [d for d, _ in rows] == sorted(DEPARTMENTS)
    assert len(release_notices(notices)) == 1, f"one release, charged once: {notices}"
    assert charges(raw_health) == before + 1
    assert_counts_near("SQLAlchemy yield_per count()", dict(rows), truth.counts, margin_of(notices, "n"))


def test_sqlalchemy_masked_rows_with_date_filter_and_limit(guarded, truth):
    engine, _ = sqlalchemy_session(proxy_url(guarded, "clinician"))
    try:
        with Session(engine) as session:
            visits = session.scalars(select(Visit).where(Visit.visit_date >= SINCE)
                                     .order_by(Visit.visit_date, Visit.visit_id).limit(7)).all()
    finally:
        engine.dispose()
    assert len(visits) == 7
    assert all(v.visit_date >= SINCE and v.visit_date.day == 1 for v in visits)
    assert all(v.department != "Psychiatry" and v.patient_id not in truth.real_patient_ids for v in visits)


# ------------------------------------------------------------ knex


def test_knex_grouped_count_with_limit_as_analyst(node_modules, answering, truth):  # noqa: F811 - the fixture imported above
    node = require_tool("node", "apt-get install -y nodejs")
    proc = run([node, str(NODE_DIR / "knex_check.js"), answering.host, str(answering.port), "health",
                "analyst", "analyst"], cwd=NODE_DIR, env=client_env(), what="node knex_check.js")
    assert proc.returncode == 0, f"knex_check.js exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    lines = proc.stdout.splitlines()
    assert lines and lines[-1] == "done", proc.stdout + proc.stderr
    results = {r["name"]: r for r in map(json.loads, lines[:-1])}
    grouped = results["grouped"]
    assert "error" not in grouped, f"knex's grouped count was refused: {grouped}"
    released = {row["department"]: int(row["n"]) for row in grouped["rows"]}
    assert_counts_near("knex count('* as n') LIMIT $1", released, truth.counts,
                       margin_of(grouped["notices"], "n"), groups=10)
    average = results["average"]
    assert "error" not in average, f"knex's average was refused: {average}"
    assert_near("knex avg('cost as avg_cost')", average["rows"][0]["avg_cost"], truth.average_cost,
                margin_of(average["notices"], "avg_cost"))


# ------------------------------------------------------------ psql with FETCH_COUNT


def psql(proxy: RunningProxy, user: str, script: str) -> subprocess.CompletedProcess:
    binary = require_tool("psql", "apt-get install -y postgresql-client")
    env = client_env(PGPASSWORD=user, PGSSLMODE="disable", PGCONNECT_TIMEOUT="10")
    return run([binary, "-X", "-A", "-F", "|", "-v", "ON_ERROR_STOP=1", "-h", proxy.host, "-p", str(proxy.port),
                "-U", user, "-d", "health", "-f", "-"], input=script, env=env, what=f"psql as {user}")


def psql_notices(stderr: str) -> list[str]:
    """Notices as psql prints them reading a script: `psql:<stdin>:2: NOTICE:  text`."""
    return [match[1] for match in re.finditer(r"^(?:psql:[^:]+:\d+: )?NOTICE:  (.*)$", stderr, re.MULTILINE)]


def test_psql_fetch_count_aggregate_as_analyst(answering, truth, raw_health):
    # With FETCH_COUNT psql reads through BEGIN; DECLARE _psql_cursor NO
    # SCROLL CURSOR FOR ...; FETCH FORWARD 100 FROM _psql_cursor; ... COMMIT.
    before = charges(raw_health)
    proc = psql(answering, "analyst", "\\set FETCH_COUNT 100\n"
                "SELECT department, count(*) AS n FROM visits GROUP BY department ORDER BY department;\n")
    assert proc.returncode == 0, f"psql failed:\n{proc.stderr}"
    lines = proc.stdout.splitlines()
    assert lines[0] == "department|n" and lines[-1] == f"({len(DEPARTMENTS)} rows)", proc.stdout
    rows = [line.split("|") for line in lines[1:-1]]
    assert [d for d, _ in rows] == sorted(DEPARTMENTS)
    notices = psql_notices(proc.stderr)
    assert len(release_notices(notices)) == 1, f"one release, charged once: {notices}"
    assert charges(raw_health) == before + 1
    assert_counts_near("psql FETCH_COUNT count(*)", {d: int(n) for d, n in rows}, truth.counts,
                       margin_of(notices, "n"))


def test_psql_fetch_count_masked_rows_as_clinician(guarded, truth):
    proc = psql(guarded, "clinician", "\\set FETCH_COUNT 100\n"
                "SELECT patient_id, name, ssn, birth_date FROM patients ORDER BY patient_id;\n")
    assert proc.returncode == 0, f"psql failed:\n{proc.stderr}"
    lines = proc.stdout.splitlines()
    assert lines[0] == "patient_id|name|ssn|birth_date" and lines[-1] == f"({truth.patients} rows)"
    rows = [line.split("|") for line in lines[1:-1]]
    assert all(re.fullmatch(r"XXX-XX-\d{4}", ssn) for _, _, ssn, _ in rows)
    assert sorted(ssn[-4:] for _, _, ssn, _ in rows) == truth.ssn_last_four
    assert all(born.endswith("-01-01") for *_, born in rows)
    assert not {int(pid) for pid, *_ in rows} & truth.real_patient_ids


# ------------------------------------------------------------ psycopg named cursors


GROUPED = ("SELECT department, count(*) AS n, avg(cost) AS avg_cost FROM visits "
           "GROUP BY department ORDER BY department")


def read_named_cursor(dsn: str, sql: str, *, withhold: bool, itersize: int = 5) -> tuple[list[tuple], Any, list[str]]:
    """Rows, description and notices of `sql` read through a server-side
    cursor (DECLARE, a Describe of the portal, FETCH FORWARD itersize)."""
    notices: list[str] = []
    with psycopg.connect(dsn) as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        with conn.cursor(name="c", withhold=withhold) as cursor:
            cursor.itersize = itersize
            cursor.execute(sql)
            if withhold:
                conn.commit()  # a cursor WITH HOLD outlives its transaction
            rows = list(cursor)
            description = [(c.name, c.type_code) for c in cursor.description]
    return rows, description, notices


@pytest.mark.parametrize("withhold", [False, True], ids=["in_transaction", "with_hold"])
def test_psycopg_named_cursor_aggregate_as_analyst(answering, truth, health_policy, raw_health, withhold):
    before = charges(raw_health)
    rows, description, notices = read_named_cursor(answering.dsn("analyst", "health"), GROUPED, withhold=withhold)
    assert [name for name, _ in description] == ["department", "n", "avg_cost"]
    assert [d for d, _, _ in rows] == sorted(DEPARTMENTS)
    assert len(release_notices(notices)) == 1, f"one release, charged once: {notices}"
    assert charges(raw_health) == before + 1
    assert_counts_near("psycopg named cursor count(*)", {d: n for d, n, _ in rows}, truth.counts,
                       margin_of(notices, "n"))
    # A released average is clamped to the cost's bounds.
    low, high = _cost_bounds(health_policy)
    assert all(avg is None or low <= avg <= high for _, _, avg in rows), rows


@pytest.mark.parametrize("withhold", [False, True], ids=["in_transaction", "with_hold"])
def test_psycopg_named_cursor_masked_rows_as_clinician(guarded, truth, withhold):
    dsn = guarded.dsn("clinician", "health")
    counts, _, _ = read_named_cursor(dsn, "SELECT department, count(*) FROM visits GROUP BY 1", withhold=withhold)
    assert dict(counts) == truth.masked_counts
    rows, description, _ = read_named_cursor(
        dsn, "SELECT visit_id, patient_id, visit_date, department, cost FROM visits ORDER BY visit_id",
        withhold=withhold, itersize=500)
    assert [name for name, _ in description] == ["visit_id", "patient_id", "visit_date", "department", "cost"]
    assert len(rows) == truth.visits_shown_to_clinician
    assert all(day.day == 1 and department != "Psychiatry" for _, _, day, department, _ in rows)
    assert not {pid for _, pid, *_ in rows} & truth.real_patient_ids


# ------------------------------------------------------------ pgcli


PGCLI_METADATA = ("search_path", "schemata", "tables", "views", "table_columns", "view_columns",
                  "databases", "foreignkeys", "functions", "datatypes", "casing")


def pgcli_executor(dsn: str) -> Any:
    try:
        from pgcli.pgexecute import PGExecute
    except ImportError:
        pytest.fail("pgcli is not installed; install the test extras: pip install -e '.[test]'", pytrace=False)
    params = conninfo_to_dict(dsn)
    return PGExecute(params["dbname"], params["user"], params["password"], params["host"], int(params["port"]),
                     "", sslmode="disable")


@pytest.mark.parametrize("user", ["clinician", "analyst"])
def test_pgcli_completion_queries(pg, guarded, user):
    # pgcli fills its completions from these catalog queries at start-up.
    proxied = pgcli_executor(guarded.dsn(user, "health"))
    direct = pgcli_executor(direct_dsn(pg, user))
    try:
        for method in PGCLI_METADATA:
            try:
                seen = list(getattr(proxied, method)())
            except psycopg.Error as exc:
                pytest.fail(f"pgcli's {method}() query failed through pgshroud: {exc.sqlstate} {exc}", pytrace=False)
            assert seen == list(getattr(direct, method)()), f"pgcli's {method}() differs through pgshroud"
    finally:
        proxied.conn.close()
        direct.conn.close()


def test_pgcli_completion_refresh_at_start_up(guarded):
    """pgcli's own start-up refresh, in its background thread, completes."""
    from pgcli.completion_refresher import CompletionRefresher
    from pgspecial.main import PGSpecial

    failures: list[BaseException] = []
    previous_hook = threading.excepthook
    threading.excepthook = lambda args: failures.append(args.exc_value)
    completers: list[Any] = []
    executor = pgcli_executor(guarded.dsn("clinician", "health"))
    try:
        refresher = CompletionRefresher()
        refresher.refresh(executor, PGSpecial(), completers.append)
        refresher._completer_thread.join(60)
    finally:
        threading.excepthook = previous_hook
        executor.conn.close()
    assert not failures, f"pgcli's completion refresh failed: {failures[0]!r}"
    assert len(completers) == 1
    names = completers[0].dbmetadata["tables"]["public"]
    assert {"patients", "visits", "labs", "diagnoses"} <= set(names)
    assert {"visit_id", "department", "cost"} <= set(names["visits"])


def test_pgcli_session_as_clinician(guarded, truth, tmp_path):
    """pgcli as a user starts it: a few commands on stdin, then \\q; the
    completion refresh that runs beside them must finish without error."""
    pgcli = str(Path(sys.executable).parent / "pgcli")
    if not os.access(pgcli, os.X_OK):
        pytest.fail("pgcli is not installed; install the test extras: pip install -e '.[test]'", pytrace=False)
    log = tmp_path / "pgcli.log"
    config = tmp_path / "pgcli" / "config"
    config.parent.mkdir()
    config.write_text(f"[main]\nlog_file = {log}\nlog_level = DEBUG\nhistory_file = {tmp_path / 'history'}\n"
                      "less_chatty = True\n")
    env = client_env(PGPASSWORD="clinician", XDG_CONFIG_HOME=str(tmp_path), HOME=str(tmp_path))
    sessions_before = guarded.session_count
    proc = subprocess.Popen([pgcli, "-h", guarded.host, "-p", str(guarded.port), "-U", "clinician", "-d", "health",
                             "--pgclirc", str(config)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    out, err = _drain(proc)
    try:
        proc.stdin.write("SELECT count(*) AS diagnoses FROM diagnoses;\n"
                         "SELECT ssn FROM patients ORDER BY patient_id LIMIT 3;\n")
        proc.stdin.flush()
        _wait_for(lambda: "Functions Query" in _read(log) and (
            guarded.session_count <= sessions_before + 1 or "Traceback" in "".join(err)),
            what="pgcli's completion refresh", detail=lambda: "".join(out) + "".join(err))
        proc.stdin.write("\\q\n")
        proc.stdin.close()
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stdout, stderr = "".join(out), "".join(err)
    assert proc.returncode == 0, f"pgcli exited with {proc.returncode}:\n{stdout}\n{stderr}"
    assert "Traceback" not in stderr + stdout, f"pgcli raised:\n{stderr}\n{stdout}"
    assert re.search(rf"\|\s*{truth.diagnoses}\s*\|", stdout), stdout
    assert len(re.findall(r"XXX-XX-\d{4}", stdout)) == 3, stdout


def _drain(proc: subprocess.Popen) -> tuple[list[str], list[str]]:
    """Read a process's stdout and stderr in threads, so neither pipe fills."""
    out: list[str] = []
    err: list[str] = []
    for stream, sink in ((proc.stdout, out), (proc.stderr, err)):
        threading.Thread(target=lambda s=stream, k=sink: k.extend(iter(s.readline, "")), daemon=True).start()
    return out, err


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _wait_for(ready: Callable[[], bool], *, what: str, detail: Callable[[], str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not finish in {timeout}s:\n{detail()}", pytrace=False)
        time.sleep(0.1)


# ------------------------------------------------------------ pgjdbc with a fetch size


@pytest.fixture(scope="module")
def fetch_size_classes(tmp_path_factory) -> Path:
    javac = require_tool("javac", "apt-get install -y default-jdk-headless")
    if not JDBC_JAR.is_file():
        pytest.fail(f"pgjdbc jar {JDBC_JAR} is missing; install it with: apt-get install -y libpostgresql-jdbc-java",
                    pytrace=False)
    target = tmp_path_factory.mktemp("fetch-size")
    proc = run([javac, "-encoding", "UTF-8", "-d", str(target), "-cp", str(JDBC_JAR),
                str(CLIENTS / "jdbc" / "FetchSizeCheck.java")], what="javac FetchSizeCheck.java", timeout=180)
    assert proc.returncode == 0, proc.stderr
    return target


def test_pgjdbc_fetch_size_aggregate_as_analyst(fetch_size_classes, answering, truth, raw_health):
    before = charges(raw_health)
    java = require_tool("java", "apt-get install -y default-jre-headless")
    proc = run([java, "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", f"{JDBC_JAR}{os.pathsep}{fetch_size_classes}",
                "FetchSizeCheck", answering.host, str(answering.port), "health", "analyst", "analyst", "2", GROUPED],
               env=client_env(), what="java FetchSizeCheck", timeout=180)
    assert proc.returncode == 0, f"pgjdbc with fetch size 2 failed:\n{proc.stdout}\n{proc.stderr}"
    lines = [line.split("\t") for line in proc.stdout.splitlines()]
    assert lines[-1] == ["done"]
    columns = [(name, type_name) for kind, name, type_name in (x for x in lines if x[0] == "column")]
    assert columns == [("department", "text"), ("n", "int8"), ("avg_cost", "numeric")]
    rows = [x[1:] for x in lines if x[0] == "row"]
    assert [d for d, _, _ in rows] == sorted(DEPARTMENTS)
    notices = [x[1] for x in lines if x[0] == "notice"]
    assert len(release_notices(notices)) == 1, f"one release, charged once: {notices}"
    assert charges(raw_health) == before + 1
    assert_counts_near("pgjdbc fetch size 2 count(*)", {d: int(n) for d, n, _ in rows}, truth.counts,
                       margin_of(notices, "n"))
