"""Planning time grows linearly with the statement, whatever its shape.

One analysed statement runs on a worker thread, but a statement whose
planning grows quadratically still lets one user tie up the planner (a
54 KB `SELECT 1 AS all, ...` once took 30 s). For each pathological shape,
repeated n and 8n times, the planner's CPU time for 8n must stay far below
the 64x a quadratic algorithm would take (the bound, 24x, leaves room for
noise). Hypothesis picks the shapes' mixtures; the named shapes come first.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgshroud.rewriter import plan
from tests.rewriter_fixtures import context

# Each shape repeated n times makes one statement.
SHAPES = {
    "keyword aliases": ("SELECT ", "1 AS all", ", ", ""),
    "cast aliases": ("SELECT ", "CAST(1 AS int) AS table", ", ", ""),
    "in list": ("SELECT name FROM patients WHERE patient_id IN (", "1", ", ", ")"),
    "case arms": ("SELECT CASE ", "WHEN cost > 1 THEN 'a'", " ", " END FROM visits"),
    "strings and comments": ("SELECT ", "'a''b' /* c */ || $$d$$", " || ", ""),
    "ctes": ("WITH ", "c AS (SELECT 1 AS x)", ", ", " SELECT * FROM c"),
    "statements": ("", "SELECT lower(name) FROM patients", "; ", ""),
    "aggregate items": ("SELECT ", "count(*)", ", ", " FROM visits"),
    "private filters": ("SELECT count(*) FROM visits WHERE ", "cost > 5", " AND ", ""),
    "arithmetic on an aggregate": ("SELECT avg(cost)", " * 7 / 3", "", " FROM visits"),
}
BASE = 150
GROWTH = 8
WORST_RATIO = 24


def _statement(shape: tuple[str, str, str, str], n: int) -> str:
    head, item, separator, tail = shape
    return head + separator.join([item] * n) + tail


def _planning_seconds(sql: str, user: str) -> float:
    """The least CPU time of three plans (the plan cache keeps literal-free
    texts, so every run is planned in full by varying a comment)."""
    best = float("inf")
    for attempt in range(3):
        started = time.process_time()
        plan(f"/* {attempt} {time.perf_counter_ns()} */ " + sql, context(user))
        best = min(best, time.process_time() - started)
    return best


def _growth(sql_small: str, sql_large: str, user: str) -> float:
    small = max(_planning_seconds(sql_small, user), 1e-3)
    return _planning_seconds(sql_large, user) / small


@pytest.mark.parametrize("user", ["clinician", "analyst"])
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_planning_time_is_linear_in_the_statement(name, user):
    shape = SHAPES[name]
    ratio = _growth(_statement(shape, BASE), _statement(shape, BASE * GROWTH), user)
    assert ratio < WORST_RATIO, f"{name}: {GROWTH}x the statement took {ratio:.1f}x the planning time"


@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(sorted(SHAPES)), min_size=2, max_size=4))
def test_mixtures_of_shapes_plan_in_linear_time(names):
    """Shapes nested in one statement's select list, as a fuzzer would mix them."""
    items = [SHAPES[name][1] for name in names if SHAPES[name][0] == "SELECT "] or ["1 AS all"]

    def statement(n: int) -> str:
        return "SELECT " + ", ".join(items * n)

    ratio = _growth(statement(BASE // len(items) + 1), statement((BASE // len(items) + 1) * GROWTH), "clinician")
    assert ratio < WORST_RATIO, f"{names}: {GROWTH}x the statement took {ratio:.1f}x the planning time"
