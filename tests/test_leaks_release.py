"""Leaks through what a private answer carries besides its values (issue 9,
"Released rows carry nothing but their values"), as the analyst of the
example policy (an aggregate role):

- row order: the order PostgreSQL produced the groups in (a person's own
  groups first, the empty public groups appended) must not reach the
  client, nor pick the rows of LIMIT without ORDER BY, nor break ties under
  ORDER BY.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from proxy.catalog import read_catalog
from rewriter import PlanContext, plan
from rewriter.plans import RawResult, Release
from tests import dp_audit as A

DEPARTMENTS = sorted(["Primary Care", "Endocrinology", "Orthopedics", "Emergency", "Neurology", "Pulmonology",
                      "Infectious Disease", "Gastroenterology", "Surgery", "Nephrology", "Cardiology",
                      "Psychiatry", "Dermatology", "Ophthalmology", "Oncology", "Obstetrics"])
PEOPLE = (1, 2, 3, 5, 8, 13)


@pytest.fixture(scope="module")
def ledger() -> A.CountingLedger:
    return A.CountingLedger()


@pytest.fixture(scope="module")
def analyst(pg, health_db, health_policy, ledger) -> Iterator[object]:
    """pgshroud with the example policy and a ledger that records every charge."""
    proxy = A.start_audit_proxy(make_conninfo(pg.dsn(), sslmode="disable"), health_policy, health_db, ledger)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def health_catalog(health_db):
    return asyncio.run(read_catalog(health_db))


def analyst_rows(proxy, *statements: str) -> list[tuple]:
    """The rows of the last statement, run as the analyst after the others."""
    with psycopg.connect(A.proxy_dsn(proxy, "analyst", "health"), autocommit=True) as conn:
        for statement in statements[:-1]:
            conn.execute(statement)
        return conn.execute(statements[-1]).fetchall()


def planned(sql: str, policy, catalog, **privacy: str) -> Release:
    (only,) = plan(sql, PlanContext(user="analyst", policy=policy, role=policy.roles["analyst"], catalog=catalog,
                                    privacy=privacy or {"epsilon": "1", "delta": "1e-6"}))
    assert isinstance(only, Release), only
    return only


def raw_result(health_db: str, release: Release) -> RawResult:
    with psycopg.connect(health_db) as conn:
        return A.raw_result(conn, release)


# -- row order -----------------------------------------------------------------


def own_departments(health_db: str, person: int) -> list[str]:
    with psycopg.connect(health_db) as conn:
        rows = conn.execute("SELECT DISTINCT department FROM visits WHERE patient_id = %s", (person,)).fetchall()
    return sorted(department for (department,) in rows)


def test_the_people_tried_have_groups_of_their_own(health_db):
    """The attack needs people whose departments are not the first few by name."""
    assert any(own_departments(health_db, p) and own_departments(health_db, p)[0] != DEPARTMENTS[0] for p in PEOPLE)


@pytest.mark.parametrize("person", PEOPLE)
def test_groups_leave_in_key_order_not_postgresql_order(analyst, person):
    """One person's visits grouped by a public key: every department comes
    back, in the order of their names, whichever the person visited."""
    rows = analyst_rows(analyst, "SET pgshroud.epsilon = 0.01",
                        f"SELECT department, count(*) FROM visits WHERE patient_id = {person} GROUP BY department")
    assert [department for department, _ in rows] == DEPARTMENTS


@pytest.mark.parametrize("person", PEOPLE)
def test_limit_without_order_by_picks_by_key(analyst, person):
    rows = analyst_rows(analyst, "SET pgshroud.epsilon = 0.01",
                        f"SELECT department, count(*) FROM visits WHERE patient_id = {person} "
                        "GROUP BY department LIMIT 3 OFFSET 1")
    assert [department for department, _ in rows] == DEPARTMENTS[1:4]


@pytest.mark.parametrize("person", PEOPLE)
def test_ties_under_order_by_break_by_key(analyst, person):
    """ORDER BY a value that is the same in every group: the order is the keys'."""
    rows = analyst_rows(analyst, "SET pgshroud.epsilon = 0.01",
                        f"SELECT department, count(*) * 0 AS nothing FROM visits WHERE patient_id = {person} "
                        "GROUP BY department ORDER BY nothing DESC")
    assert [department for department, _ in rows] == DEPARTMENTS


def test_the_order_of_the_raw_rows_does_not_reach_the_answer(health_db, health_policy, health_catalog):
    """The finalize step alone: the bounded SQL's rows in any order give the
    same rows in the same order (with the same noise), with public keys and
    with partition selection, with and without ORDER BY and LIMIT."""
    queries = (
        "SELECT department, count(*) FROM visits WHERE patient_id = 2 GROUP BY department",
        "SELECT department, count(*) FROM visits WHERE patient_id = 2 GROUP BY department LIMIT 2",
        "SELECT department, sex, count(*) FROM visits JOIN patients USING (patient_id) GROUP BY department, sex",
        "SELECT date_part('year', visit_date) AS year, count(*) FROM visits GROUP BY 1",
        "SELECT date_part('year', visit_date) AS year, count(*) * 0 AS c FROM visits GROUP BY 1 ORDER BY c LIMIT 3",
    )
    for sql in queries:
        release = planned(sql, health_policy, health_catalog, epsilon="2", delta="1e-5")
        raw = raw_result(health_db, release)
        answers = set()
        for seed in range(6):
            rows = list(raw.rows)
            random.Random(seed).shuffle(rows)
            spec = dataclasses.replace(release.spec, rng=random.Random(7))
            answers.add(spec.finalize(dataclasses.replace(raw, rows=tuple(rows))).rows)
        assert len(answers) == 1, sql
        (answer,) = answers
        keys = [row[:-1] for row in answer]
        assert len(answer) >= 2 and keys == sorted(keys, key=lambda k: [(v is None, v) for v in k]), sql

