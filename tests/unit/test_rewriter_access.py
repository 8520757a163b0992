"""Statement access control for roles that do not see raw data (pure)."""

from __future__ import annotations

import pytest

from pgshroud.rewriter import plan
from pgshroud.rewriter.plans import Passthrough, Refuse, Rewrite
from tests.rewriter_fixtures import context


def only(sql: str, user: str = "clinician"):
    (result,) = plan(sql, context(user))
    return result


def refused(sql: str, user: str = "clinician") -> Refuse:
    result = plan(sql, context(user))[-1]
    assert isinstance(result, Refuse), f"{sql!r} was not refused: {result}"
    return result


def test_raw_role_passes_the_whole_text_untouched():
    text = "select ssn from patients; select pg_sleep(1)"
    assert plan(text, context("admin")) == (Passthrough(text),)


@pytest.mark.parametrize(
    "sql",
    [
        "select 1",
        "select code, description from diagnoses where code like 'I%'",
        "select c.relname from pg_catalog.pg_class c join pg_namespace n on n.oid = c.relnamespace",
        "select column_name from information_schema.columns where table_name = 'patients'",
        "select lower(description), count(*) from diagnoses group by 1",
        "select now(), to_char(now(), 'YYYY'), current_setting('timezone')",
        "begin", "commit", "rollback", "savepoint a", "release savepoint a", "rollback to savepoint a",
        "show timezone", "set application_name = 'metabase'", "set statement_timeout to 5000",
        "set time zone 'UTC'", "set transaction isolation level serializable", "reset all", "reset statement_timeout",
        "close all", "deallocate all", "deallocate prepare all", "discard all", "unlisten *",
    ],
)
def test_allowed_statements_pass_untouched(sql):
    assert only(sql) == Passthrough(sql)


@pytest.mark.parametrize(
    ("sql", "name", "translated"),
    [
        ("fetch 10 from c", "c", 'fetch 10 from "{}"'),
        ("FETCH FORWARD 100 FROM _psql_cursor", "_psql_cursor", 'FETCH FORWARD 100 FROM "{}"'),
        ("fetch absolute -1 in c", "c", 'fetch absolute -1 in "{}"'),
        ('move backward all from "Mixed"', "Mixed", 'move backward all from "{}"'),
        ("close C", "c", 'close "{}"'),
        ("deallocate prepare s", "s", 'deallocate prepare "{}"'),
        ("execute s(1, 'a')", "s", "execute \"{}\"(1, 'a')"),
        ("execute pgshroud_cached_answer", "pgshroud_cached_answer", 'execute "{}"'),
        ("prepare s(int) as select $1", "s", 'prepare "{}"(int) as select $1'),
        ("declare c no scroll cursor for select 1", "c", 'declare "{}" no scroll cursor for select 1'),
    ],
)
def test_statement_and_cursor_names_are_translated(sql, name, translated):
    """SQL reaches only what the client prepared or declared, under names of
    pgshroud's choosing, never a name pgshroud uses for its own statements."""
    from pgshroud.rewriter.names import upstream_name

    assert only(sql) == Rewrite(translated.format(upstream_name(name)))
    assert upstream_name(name) != name and upstream_name(name).startswith("pgshroud_u")


@pytest.mark.parametrize(
    "sql",
    ["listen x", "execute s(leak_everything(1))", "execute s((select ssn from patients))",
     "fetch 10 from c d", "fetch 'c'", "close c, d", "execute s 1"],
)
def test_named_commands_that_cannot_be_read_safely_are_refused(sql):
    assert refused(sql).sqlstate in ("42501", "42601")


@pytest.mark.parametrize(
    ("sql", "words"),
    [
        ("select * from unlisted", ["unlisted", "not named in the policy"]),
        ("select * from pgshroud.keys", ["pgshroud"]),
        ("select * from pg_stats", ["pg_stats"]),
        ("select * from pg_catalog.pg_statistic", ["pg_statistic"]),
        ("select query from pg_stat_activity", ["pg_stat_activity"]),
        ("select pg_sleep(1)", ["pg_sleep", "volatile"]),
        ("select random()", ["random"]),
        ("select nextval('s')", ["nextval"]),
        ("select set_config('search_path', 'x', false)", ["set_config"]),
        ("select query_to_xml('select * from patients', true, true, '')", ["query_to_xml"]),
        ("select pg_catalog.pg_read_file('/etc/passwd')", ["pg_read_file"]),
        ("select leak_everything()", ["leak_everything"]),
        ("select public.lower('x')", ["public.lower"]),
        ('select "pg_sleep"(1)', ["pg_sleep"]),
        ("select no_such_function(1)", ["no_such_function"]),
        ("with patients as (select 1) select * from patients", ["CTE", "patients"]),
        ("select * into t from diagnoses", ["INTO"]),
        ("insert into diagnoses values ('x', 'y')", ["INSERT"]),
        ("update patients set ssn = 'x'", ["UPDATE"]),
        ("delete from visits", ["DELETE"]),
        ("create table t (x int)", ["CREATE"]),
        ("drop table patients", ["DROP"]),
        ("do $$ begin perform 1; end $$", ["DO"]),
        ("call p()", ["CALL"]),
        ("set search_path = evil, public", ["search_path"]),
        ("set standard_conforming_strings = off", ["standard_conforming_strings"]),
        ("set role admin", ["ROLE"]),
        ("set session authorization admin", ["AUTHORIZATION"]),
        ("set client_encoding = 'SJIS'", ["SJIS"]),
        ("set names 'BIG5'", ["BIG5"]),
        ("reset role", ["ROLE"]),
        ("copy patients to '/tmp/x'", ["STDOUT"]),
        ("copy patients from stdin", ["STDOUT"]),
        ("copy (select 1) to program 'id'", ["STDOUT"]),
        ("explain select * from patients", ["EXPLAIN"]),
        ("lock table patients", ["LOCK"]),
        ("prepare transaction 'x'", ["two-phase"]),
        ("select * from other_db.public.patients", ["cross-database"]),
        ("with x as (delete from visits returning *) select * from x", ["data-modifying"]),
    ],
)
def test_refusals_name_what_was_refused(sql, words):
    refusal = refused(sql)
    assert refusal.sqlstate in ("42501", "42601", "0A000")
    text = refusal.message + (refusal.hint or "")
    for word in words:
        assert word.lower() in text.lower(), (sql, refusal)


def test_every_statement_of_a_multi_statement_text_is_planned():
    plans = plan("select 1; select pg_sleep(1); select 2", context("clinician"))
    assert plans[0] == Passthrough("select 1")
    assert isinstance(plans[1], Refuse)


def test_unparsable_sql_is_refused_not_passed():
    assert refused("select from from from where").sqlstate == "42601"
    assert refused("select ((((((").sqlstate == "42601"


def test_deep_nesting_is_refused():
    sql = "select " + "(" * 3000 + "1" + ")" * 3000
    assert isinstance(plan(sql, context("clinician"))[-1], Refuse)


def test_aggregate_role_cannot_read_rows_or_row_counts():
    assert "differentially private" in refused("select ssn from patients", "analyst").message
    assert refused("select reltuples from pg_class", "analyst")
    assert refused("select * from pg_stat_user_tables", "analyst")
    assert refused("select pg_stat_get_live_tuples(1)", "analyst")
    assert only("select reltuples from pg_class", "clinician") == Passthrough("select reltuples from pg_class")


def test_per_table_deny_override():
    assert "may not read" in refused("select * from visits", "filtered").message


def test_declare_prepare_copy_of_catalog_queries_pass():
    for sql in ("declare c cursor for select 1", "prepare s as select code from diagnoses",
                "copy (select code from diagnoses) to stdout", "copy diagnoses to stdout with csv"):
        result = only(sql)
        assert isinstance(result, (Passthrough, Rewrite)), (sql, result)


@pytest.mark.parametrize("sql", ["select pg_database_size(current_database())",
                                 "select pg_tablespace_size('pg_default')"])
def test_database_sizes_are_row_counts_to_the_aggregate_role(sql):
    assert "row counts" in refused(sql, "analyst").message


def test_private_statements_are_small_enough_that_a_row_costs_little():
    """A heavy expression evaluated only on one person's rows made their
    presence measurable in time: private statements are capped in size."""
    heavy = " + ".join(f"cost * {i}" for i in range(400))
    result = refused(f"SELECT count(*) FROM visits WHERE CASE WHEN patient_id = 5 THEN {heavy} ELSE 0 END > 0",
                     "analyst")
    assert result.sqlstate == "54000" and "terms" in result.message
