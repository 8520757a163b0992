"""Each query of a Query text is lexed once and analysed once per plan: the
private answer, the masking rewrite and EXPLAIN's checks read one analysis
(rewriter/query_analysis.py); a plan cache hit neither lexes nor parses
(pure, no PostgreSQL)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pgshroud.rewriter import plan, policy_planner, query_analysis
from pgshroud.rewriter.statements import split_statements
from tests.rewriter_fixtures import context


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """How often the planner lexes a text and analyses a query (the real functions, counted)."""
    counted: Counter[str] = Counter()

    def counting(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            counted[name] += 1
            return function(*args, **kwargs)
        return call

    monkeypatch.setattr(policy_planner, "split_statements", counting("lex", policy_planner.split_statements))
    monkeypatch.setattr(policy_planner, "analyse_query", counting("analyse", query_analysis.analyse_query))
    policy_planner.PLAN_CACHE._entries.clear()
    yield counted
    policy_planner.PLAN_CACHE._entries.clear()


@pytest.mark.parametrize(
    ("user", "sql"),
    [
        ("clinician", "select p.name, v.cost from patients p join visits v on v.patient_id = p.patient_id"),
        ("analyst", "select count(*), avg(cost) from visits"),
        ("analyst", "select name from patients limit 0"),
        ("analyst", "explain select count(*) from visits"),
        ("clinician", "explain select code from diagnoses"),
        ("clinician", "declare c cursor for select name from patients"),
        ("analyst", "declare c cursor for select count(*) from visits"),
        ("clinician", "copy (select name from patients) to stdout"),
    ],
)
def test_a_query_is_analysed_once(calls: Counter[str], user: str, sql: str) -> None:
    plan(sql, context(user))
    assert calls["analyse"] == 1, calls
    # The Query text, and the masked text's own check when something was masked.
    assert calls["lex"] <= 2, calls


def test_each_statement_of_a_text_is_analysed_once(calls: Counter[str]) -> None:
    text = "select name from patients; select code from diagnoses; select count(*) from visits"
    plan(text, context("analyst"))
    assert calls["analyse"] == len(split_statements(text)) == 3, calls


def test_a_cache_hit_neither_lexes_nor_parses(calls: Counter[str]) -> None:
    plan("select name from patients where patient_id = 1", context("clinician"))
    calls.clear()
    plan("select name from patients where patient_id = 2", context("clinician"))
    assert calls == Counter(), calls
