from __future__ import annotations

import io
import subprocess
from collections.abc import Iterator

import psycopg
import pytest

from pgshroud.proxy.commands.demo_cluster import instructions, prepare_demo_cluster
from pgshroud.proxy.commands.demo_data import DIAGNOSES, TerminalProgress, load_demo_dataset
from pgshroud.proxy.commands.pgcluster import ThrowawayCluster

PATIENTS = 500

REQUIRED_COLUMNS = {
    "patients": ["patient_id", "name", "ssn", "email", "phone", "birth_date", "sex", "zip", "city"],
    "visits": ["visit_id", "patient_id", "visit_date", "diagnosis_code", "department", "cost", "length_of_stay"],
    "labs": ["lab_id", "patient_id", "test", "value", "taken_at"],
    "diagnoses": ["code", "description"],
}

CHECKSUMS = """
SELECT (SELECT md5(string_agg(t::text, '|' ORDER BY code)) FROM diagnoses t),
       (SELECT md5(string_agg(t::text, '|' ORDER BY patient_id)) FROM patients t),
       (SELECT md5(string_agg(t::text, '|' ORDER BY visit_id)) FROM visits t),
       (SELECT md5(string_agg(t::text, '|' ORDER BY lab_id)) FROM labs t)
"""


def _fresh_database(pg: ThrowawayCluster, name: str) -> str:
    """A new database owned by the unprivileged `app` user; its DSN."""
    pg.execute(f"DROP DATABASE IF EXISTS {name}")
    pg.execute(f"CREATE DATABASE {name} OWNER app")
    return pg.dsn(user="app", password="app", dbname=name)


@pytest.fixture(scope="module")
def demo(pg: ThrowawayCluster) -> Iterator[tuple[psycopg.Connection, dict[str, int], list[tuple]]]:
    dsn = _fresh_database(pg, "demo_data_a")
    calls: list[tuple] = []
    counts = load_demo_dataset(dsn, patients=PATIENTS, seed=7, progress=lambda *call: calls.append(call))
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn, counts, calls
    pg.execute("DROP DATABASE demo_data_a")


def test_tables_and_columns(demo: tuple) -> None:
    conn, counts, _ = demo
    rows = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
    ).fetchall()
    columns: dict[str, list[str]] = {}
    for table, column in rows:
        columns.setdefault(table, []).append(column)
    assert set(columns) == set(REQUIRED_COLUMNS)
    for table, required in REQUIRED_COLUMNS.items():
        assert columns[table][: len(required)] == required
    types = dict(conn.execute(
        "SELECT table_name || '.' || column_name, format_type(atttypid, atttypmod)"
        " FROM information_schema.columns c JOIN pg_attribute a"
        "   ON a.attrelid = c.table_name::regclass AND a.attname = c.column_name"
        " WHERE table_schema = 'public'"
    ).fetchall())
    assert types["visits.cost"] == "numeric(10,2)"
    assert types["visits.visit_date"] == "date"
    assert types["patients.birth_date"] == "date"
    assert types["labs.taken_at"] == "timestamp with time zone"
    for table, count in counts.items():
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (count,)
    assert counts["patients"] == PATIENTS
    assert counts["diagnoses"] == len(DIAGNOSES)


def test_keys_and_referential_integrity(demo: tuple) -> None:
    conn, _, _ = demo
    constraints = set(conn.execute(
        "SELECT conrelid::regclass::text, contype, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE connamespace = 'public'::regnamespace AND contype IN ('p', 'f')"
    ).fetchall())
    assert {
        ("patients", "p", "PRIMARY KEY (patient_id)"),
        ("visits", "p", "PRIMARY KEY (visit_id)"),
        ("labs", "p", "PRIMARY KEY (lab_id)"),
        ("diagnoses", "p", "PRIMARY KEY (code)"),
        ("visits", "f", "FOREIGN KEY (patient_id) REFERENCES patients(patient_id)"),
        ("labs", "f", "FOREIGN KEY (patient_id) REFERENCES patients(patient_id)"),
        ("visits", "f", "FOREIGN KEY (diagnosis_code) REFERENCES diagnoses(code)"),
    } <= constraints
    orphans = conn.execute(
        "SELECT (SELECT count(*) FROM visits v LEFT JOIN patients p USING (patient_id) WHERE p IS NULL),"
        "       (SELECT count(*) FROM labs l LEFT JOIN patients p USING (patient_id) WHERE p IS NULL),"
        "       (SELECT count(*) FROM visits v LEFT JOIN diagnoses d ON d.code = v.diagnosis_code"
        "         WHERE d IS NULL)"
    ).fetchone()
    assert orphans == (0, 0, 0)
    # Nobody is seen before being born.
    assert conn.execute(
        "SELECT count(*) FROM visits JOIN patients USING (patient_id) WHERE visit_date < birth_date"
    ).fetchone() == (0,)


def test_identifier_formats(demo: tuple) -> None:
    conn, _, _ = demo
    bad = conn.execute(
        "SELECT count(*) FILTER (WHERE ssn !~ '^\\d{3}-\\d{2}-\\d{4}$'),"
        "       count(*) FILTER (WHERE phone !~ '^\\(\\d{3}\\) \\d{3}-\\d{4}$'),"
        "       count(*) FILTER (WHERE zip !~ '^\\d{5}$'),"
        "       count(*) FILTER (WHERE email !~ '^[a-z.]+\\d+@[a-z.]+$'),"
        "       count(*) FILTER (WHERE sex NOT IN ('F', 'M'))"
        " FROM patients"
    ).fetchone()
    assert bad == (0, 0, 0, 0, 0)
    distinct = conn.execute("SELECT count(DISTINCT ssn), count(DISTINCT email) FROM patients").fetchone()
    assert distinct == (PATIENTS, PATIENTS)


def test_visits_per_patient_are_heavy_tailed(demo: tuple) -> None:
    conn, _, _ = demo
    median, maximum, mean = conn.execute(
        "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY n), max(n), avg(n)"
        " FROM (SELECT count(*) AS n FROM visits GROUP BY patient_id) AS per_patient"
    ).fetchone()
    assert median <= 6
    assert maximum >= 20 * median
    assert 5 <= mean <= 20


def test_progress_reaches_each_total(demo: tuple) -> None:
    _, counts, calls = demo
    last = {table: (done, total) for table, done, total in calls}
    assert last == {table: (count, count) for table, count in counts.items()}


def test_same_seed_same_data_other_seed_other_data(pg: ThrowawayCluster, demo: tuple) -> None:
    conn, _, _ = demo
    dsn = _fresh_database(pg, "demo_data_b")
    try:
        load_demo_dataset(dsn, patients=PATIENTS, seed=7)
        with psycopg.connect(dsn) as other:
            assert other.execute(CHECKSUMS).fetchone() == conn.execute(CHECKSUMS).fetchone()
        load_demo_dataset(dsn, patients=PATIENTS, seed=8)  # reloading replaces the tables
        with psycopg.connect(dsn) as other:
            assert other.execute(CHECKSUMS).fetchone()[1:] != conn.execute(CHECKSUMS).fetchone()[1:]
    finally:
        pg.execute("DROP DATABASE demo_data_b")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_progress_lines_without_a_tty() -> None:
    stream = io.StringIO()
    progress = TerminalProgress(stream)
    for done in (0, 50, 100):
        progress("visits", done, 100)
    progress("labs", 0, 0)
    progress("labs", 0, 0)
    assert stream.getvalue() == "  visits: 100 rows\n  labs: 0 rows\n"


def test_terminal_progress_draws_a_bar_on_a_tty() -> None:
    stream = _Terminal()
    progress = TerminalProgress(stream, width=10)
    progress("visits", 50, 100)
    progress("visits", 100, 100)
    assert stream.getvalue().endswith("\r  visits     [##########]        100 / 100 rows\n")
    assert "[#####.....]" in stream.getvalue()


def test_demo_cluster_roles_and_instructions() -> None:
    cluster = prepare_demo_cluster(patients=200)
    try:
        text = instructions("0.0.0.0", 6432, cluster)
        assert 'psql "postgresql://clinician:clinician@127.0.0.1:6432/health"' in text
        direct = f'psql "postgresql://analyst:analyst@127.0.0.1:{cluster.port}/health"'
        assert direct in text
        # The direct command works as printed.
        url = direct.split('"')[1]
        command = ["psql", url, "-tAc", "SELECT count(*) FROM patients"]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        assert result.stdout.strip() == "200", result.stderr

        owners = cluster.execute("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'", "health")
        assert owners == [("admin",)]
        for role in ("clinician", "analyst"):
            with psycopg.connect(cluster.dsn(user=role, password=role, dbname="health")) as conn:
                for table in ("patients", "visits", "labs", "diagnoses"):
                    conn.execute(f"SELECT 1 FROM {table} LIMIT 1")
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute("DELETE FROM diagnoses")
    finally:
        cluster.stop()
