"""The plan cache: literals out of the key, and nothing keyable that could lex two ways."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgshroud.rewriter import plan
from pgshroud.rewriter.cache import PlanCache, normalise
from pgshroud.rewriter.plans import Passthrough, Refuse
from pgshroud.rewriter.policy_planner import PLAN_CACHE, QueryAnalyser
from tests.rewriter_fixtures import CATALOG, POLICY, context


def test_literals_leave_the_key():
    a = normalise("select * from diagnoses where code = 'I10' and x > 5")
    b = normalise("select * from diagnoses where code = 'E11.9' and x > 12.5")
    assert a is not None and b is not None
    assert a[0] == b[0]
    assert [("select * from diagnoses where code = 'I10' and x > 5"[s:e]) for s, e in a[1]] == ["'I10'", "5"]


@pytest.mark.parametrize(
    "sql",
    [
        r"select 'a\' , ssn from patients --'",  # backslash: lexes differently under other settings
        "select E'a\\' , ssn from patients --'",
        "select $$x$$ from diagnoses",
        "select $1::int",
        "select 1 -- comment",
        "select /* c */ 1",
        'select "code" from diagnoses',
        "select 'it''s'",
        "select U&'\\0061'",
        "select 'unterminated",
        "select \x00",
    ],
)
def test_risky_texts_are_never_keyed(sql):
    assert normalise(sql) is None


def test_identifiers_with_digits_are_not_literals():
    key, spans = normalise("select t1.x2 from t1 limit 10")
    assert "t1.x2" in key and len(spans) == 1


def test_cached_plans_carry_the_new_literals():
    cache = PlanCache()
    owners = (object(), object())
    sql = "select code from diagnoses where code = 'I10'"
    cache.put("r", owners, sql, [Passthrough(sql)], [(0, len(sql), [])])
    assert cache.get("r", owners, "select code from diagnoses where code = 'J45'") == [
        Passthrough("select code from diagnoses where code = 'J45'")
    ]
    assert cache.get("r", (object(), owners[1]), sql) is None  # another policy: a miss
    assert cache.get("other", owners, sql) is None  # another role: a miss


def test_refusals_are_cached_as_refusals():
    first = plan("select pg_sleep(1) from diagnoses where code = 'x'", context("clinician"))
    again = plan("select pg_sleep(2) from diagnoses where code = 'y'", context("clinician"))
    assert isinstance(first[0], Refuse) and isinstance(again[0], Refuse)


def test_settings_are_never_served_from_the_cache():
    assert plan("set client_encoding = 'UTF8'", context("clinician")) == (Passthrough("set client_encoding = 'UTF8'"),)
    assert isinstance(plan("set client_encoding = 'SJIS'", context("clinician"))[0], Refuse)


def _uncached(sql: str):
    role = POLICY.roles["clinician"]
    analyser = QueryAnalyser(POLICY, role, CATALOG, "clinician")
    PLAN_CACHE._entries.clear()
    return analyser.plan_text(sql)


@settings(max_examples=60, deadline=None)
@given(
    code=st.text(alphabet=st.characters(codec="utf-8", exclude_characters="'\\\x00"), max_size=12),
    number=st.integers(min_value=0, max_value=10**9),
)
def test_cache_hits_equal_full_plans(code, number):
    template = "select code, description from diagnoses where code = '{}' and length(description) > {}"
    first = template.format("A00", 1)
    plan(first, context("clinician"))  # fills the cache
    sql = template.format(code, number)
    assert list(plan(sql, context("clinician"))) == _uncached(sql)
