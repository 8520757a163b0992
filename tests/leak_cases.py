"""Adversarial statements against the masking of the demo's healthcare
database, as data: tests/e2e/test_leaks.py runs each through real clients as the
masked roles and looks for raw values in everything that comes back.

Each case is a list of steps run on one fresh connection. A step says how it
is sent (`how`), what must happen (`expect`) and, for the oracles, which rows
must come back. Raw values the attacker knows (or guesses) are written as
symbols and filled in from the database by the test:

- in SQL text, `<<name>>` becomes a quoted SQL literal of that value;
- in parameters, `@name` becomes the value itself.

Symbols: raw_ssn, raw_name, raw_email, raw_email_prefix (local part and '%'),
raw_phone, raw_birth (an exact birth date that is not a 1 January),
raw_birth_day_after, raw_zip (one that does not end in 00), raw_cost (a cost
that no visible noisy cost equals), hidden_visit_id (the clinician's pseudonym
of a Psychiatry visit, which the clinician's row filter hides).

The THREATS.md technique each case belongs to is its `technique`.
"""

from __future__ import annotations

from dataclasses import dataclass

# What a step must do.
OK = "ok"  # runs without error
REFUSED = "refused"  # fails with a refusal SQLSTATE (REFUSAL_STATES)
FAILS = "fails"  # fails with any SQLSTATE but an internal error (say, a cast error upstream)
ANY = "any"  # either; only the leak checks apply

REFUSAL_STATES = frozenset({"42501", "42601", "0A000", "54001"})

# How a step is sent.
EXECUTE = "execute"  # psycopg, simple Query without parameters, extended protocol with
PREPARED = "prepared"  # psycopg with prepare=True: a named server-side statement, then reused
COPY_OUT = "copy"  # psycopg cursor.copy(), reading every byte
PIPELINE = "pipeline"  # psycopg conn.pipeline(): `sql` holds several statements
NAMED_CURSOR = "named_cursor"  # psycopg server-side cursor (DECLARE ... FETCH)
FASTPATH = "fastpath"  # a FunctionCall message for the function `sql` names (regprocedure)
ASYNCPG_FETCH = "asyncpg_fetch"
ASYNCPG_PREPARE = "asyncpg_prepare"
ASYNCPG_CURSOR = "asyncpg_cursor"
ASYNCPG_COPY_TABLE = "asyncpg_copy_table"  # `sql` is the table name
ASYNCPG_COPY_QUERY = "asyncpg_copy_query"


@dataclass(frozen=True)
class Step:
    sql: str | bytes | tuple[str, ...]
    params: tuple | None = None
    expect: str = OK
    rows: list | None = None  # the exact rows an oracle must return
    how: str = EXECUTE


@dataclass(frozen=True)
class Case:
    id: str
    technique: str
    steps: tuple[Step, ...]
    roles: tuple[str, ...] = ("clinician", "redactor")
    note: str = ""


def case(id: str, technique: str, *steps: Step | str, **kw) -> Case:
    return Case(id, technique, tuple(s if isinstance(s, Step) else Step(s) for s in steps), **kw)


def analyst(id: str, *steps: Step | str) -> Case:
    return case(id, AGGREGATE, *steps, roles=("analyst",))


def ok(sql, params=None, rows=None, how=EXECUTE) -> Step:
    return Step(sql, params, OK, rows, how)


def refused(sql, params=None, how=EXECUTE) -> Step:
    return Step(sql, params, REFUSED, None, how)


def fails(sql, params=None, how=EXECUTE) -> Step:
    return Step(sql, params, FAILS, None, how)


def any_(sql, params=None, how=EXECUTE) -> Step:
    return Step(sql, params, ANY, None, how)


PREDICATES = "predicates and range probes on raw values"
JOINS = "joins and ordering"
FUNCTIONS = "functions over masked columns"
SHAPES = "aliases, CTEs, subqueries, set operations"
WHOLE_ROW = "whole-row references and serialisers"
WINDOWS = "windows, DISTINCT ON, FILTER, min/max, aggregates"
ERRORS = "casts and errors as oracles, row-filter pushdown"
CURSORS = "cursors, PREPARE/EXECUTE, extended protocol"
COPY = "COPY"
EXPLAIN = "EXPLAIN"
STATS = "statistics and monitoring views"
NAMES = "schema-qualified and quoted names"
IDENTITY = "settings and identity changes"
LEXER = "the lexer: strings, encodings, comments, escapes"
SIDE_PATHS = "XML/file/large-object/dblink functions"
WRITES = "writes, DDL and DO"
MULTI = "multi-statement, pipelines, fast path"
INTERNALS = "pgshroud's own schema and settings"
AGGREGATE = "row counts for the aggregate role"

CASES: list[Case] = [
    # 1. predicates, joins and ordering on raw values
    case("eq-ssn", PREDICATES, ok("select count(*) from patients where ssn = %s", ("@raw_ssn",), rows=[(0,)])),
    case("eq-ssn-literal", PREDICATES, ok("select patient_id, name from patients where ssn = <<raw_ssn>>", rows=[])),
    case("eq-name", PREDICATES, ok("select count(*) from patients where name = %s", ("@raw_name",), rows=[(0,)])),
    case("like-email", PREDICATES,
         ok("select count(*) from patients where email like %s", ("@raw_email_prefix",), rows=[(0,)])),
    case("eq-phone", PREDICATES, ok("select count(*) from patients where phone = %s", ("@raw_phone",), rows=[(0,)])),
    case("range-birth-date", PREDICATES,
         ok("select count(*) from patients where birth_date >= %s and birth_date < %s",
            ("@raw_birth", "@raw_birth_day_after"), rows=[(0,)])),
    case("eq-zip", PREDICATES, ok("select count(*) from patients where zip = <<raw_zip>>", rows=[(0,)])),
    case("eq-cost", PREDICATES, ok("select count(*) from visits where cost = %s", ("@raw_cost",), rows=[(0,)])),
    case("substring-ssn", PREDICATES,
         ok("select count(*) from patients where left(ssn, 3) = left(%s, 3)", ("@raw_ssn",), rows=[(0,)])),
    case("in-list-ssn", PREDICATES,
         ok("select name from patients where ssn in (<<raw_ssn>>, 'x') or email = <<raw_email>>", rows=[])),
    # joins and ordering
    case("join-order-cost", JOINS,
         ok("select p.name, p.ssn, v.cost, v.visit_date from patients p join visits v "
            "on v.patient_id = p.patient_id order by v.cost desc, p.ssn limit 50")),
    case("order-by-masked", JOINS, ok("select name, ssn, phone from patients order by ssn, birth_date, name")),
    case("self-join-on-masked", JOINS,
         ok("select p.name, q.email from patients p join patients q on p.ssn = q.ssn and p.email = q.email")),
    case("right-join-using", JOINS,
         ok("select * from visits v right join patients p using (patient_id) order by 1, 2 limit 200")),
    case("join-hidden-visit", JOINS,
         ok("select count(*) from patients p join visits v on v.patient_id = p.patient_id "
            "where v.department = 'Psychiatry' or v.visit_id = %s", ("@hidden_visit_id",), rows=[(0,)])),

    # 2. functions over masked columns
    case("text-functions", FUNCTIONS,
         ok("select upper(name), lower(email), reverse(ssn), length(phone), substr(zip, 1, 5), initcap(city), "
            "split_part(email, '@', 1), regexp_replace(ssn, '[^0-9]', '', 'g'), translate(phone, 'X', '0') "
            "from patients")),
    case("date-functions", FUNCTIONS,
         ok("select to_char(birth_date, 'YYYY-MM-DD'), extract(doy from birth_date), age(date '2026-01-01', "
            "birth_date), date_trunc('day', birth_date), birth_date + 0 from patients")),
    case("number-functions", FUNCTIONS,
         ok("select cost::text, round(cost, 2), cost * 1.0, ceil(cost), cost / 1, visit_id::text, "
            "to_char(cost, '99999.99') from visits")),
    case("hash-and-overlay", FUNCTIONS,
         ok("select md5(ssn), overlay(ssn placing '1' from 1), format('%s|%s|%s', name, ssn, email), "
            "concat_ws(',', name, city, zip) from patients")),

    # 3. aliases, CTEs, subqueries, set operations
    case("cte", SHAPES, ok("with x as (select * from patients) select * from x")),
    case("cte-materialized", SHAPES,
         ok("with x as materialized (select * from visits where cost > 0) select * from x limit 600")),
    case("recursive-cte", SHAPES,
         ok("with recursive r(n, s) as (select 1, (select min(ssn) from patients) union all "
            "select n + 1, (select ssn from patients order by ssn offset n limit 1) from r where n < 4) "
            "select * from r")),
    case("cte-column-list", SHAPES, ok("with x(a, b) as (select name, ssn from patients) select * from x")),
    case("scalar-subquery", SHAPES,
         ok("select (select q.ssn from patients q where q.patient_id = p.patient_id), "
            "(select max(cost) from visits v where v.patient_id = p.patient_id) "
            "from (select * from patients order by ssn limit 3) p")),
    case("in-subquery-hidden", SHAPES,
         ok("select count(*) from patients where patient_id in "
            "(select patient_id from visits where department = 'Psychiatry')", rows=[(0,)])),
    case("exists-hidden", SHAPES,
         ok("select count(*) from patients p where exists (select 1 from visits v "
            "where v.patient_id = p.patient_id and v.department = 'Psychiatry')", rows=[(0,)])),
    case("lateral", SHAPES,
         ok("select p.name, x.cost, x.visit_date from (select * from patients order by name limit 2) p "
            "cross join lateral (select cost, visit_date from visits v where v.patient_id = p.patient_id "
            "order by cost desc limit 2) x")),
    case("union", SHAPES, ok("select ssn from patients union select email from patients union select phone "
                             "from patients union select name from patients")),
    case("intersect-raw", SHAPES, ok("select ssn from patients intersect select %s::text", ("@raw_ssn",), rows=[])),
    case("except", SHAPES, ok("select name, ssn from patients except select name, ssn from patients where false")),
    case("alias-column-list", SHAPES, ok("select a, b, c, d, e from patients as p(a, b, c, d, e)")),
    case("nested-derived", SHAPES, ok("select * from (select * from (select * from visits) a) b limit 600")),
    case("cte-named-like-protected", SHAPES, refused("with patients as (select 1 as ssn) select * from patients")),
    case("cte-scope-unknown-relation", SHAPES, refused("select * from late_copy"),
         refused("select * from (with late_copy as (select 1) select 1) s, late_copy"),
         refused("with x as (select 1) select * from (with late_copy as (select 2) select * from late_copy) a, "
                 "(select * from late_copy) b"),
         roles=("redactor",),
         note="redactor.late_copy exists upstream but not in the proxy's catalog snapshot: a reference "
              "outside the CTE's scope reads the relation, which pgshroud skipped as the CTE"),
    case("cte-named-like-public", SHAPES,
         refused("with diagnoses as (select ssn as code from patients) select * from diagnoses")),
    case("table-in-subquery", SHAPES, ok("select count(*) from (table patients) t")),

    # 3. whole-row references and serialisers
    case("whole-row-alias", WHOLE_ROW, ok("select p from patients p")),
    case("whole-row-unaliased", WHOLE_ROW, ok("select patients from patients")),
    case("whole-row-star", WHOLE_ROW,
         ok("select p.*, v.* from patients p join visits v using (patient_id) order by v.cost limit 300")),
    case("row-to-json", WHOLE_ROW, ok("select row_to_json(p), to_jsonb(p), to_json(p) from patients p")),
    case("row-to-json-attribute", WHOLE_ROW, ok("select p.row_to_json, p.to_jsonb from patients p")),
    case("json-agg", WHOLE_ROW, ok("select json_agg(v) from (select * from visits limit 500) v "
                                   "union all select jsonb_agg(p)::json from patients p")),
    case("xmlforest", WHOLE_ROW,
         ok("select xmlforest(name, ssn, email, phone, birth_date, zip, city), xmlelement(name v, cost) "
            "from patients p join visits v using (patient_id) limit 300")),
    case("row-constructor-text", WHOLE_ROW, ok("select row(p.*)::text, (p).ssn from patients p")),
    case("table-command", WHOLE_ROW, ok("TABLE patients")),
    case("table-command-visits", WHOLE_ROW, ok("TABLE public.visits")),

    # 4. window functions, DISTINCT ON, FILTER, min/max
    case("window-rank-lag", WINDOWS,
         ok("select name, rank() over (order by ssn), lag(ssn) over (order by birth_date), "
            "first_value(email) over (partition by zip order by phone) from patients")),
    case("window-ntile-cost", WINDOWS,
         ok("select ntile(10) over (order by cost), cost, cume_dist() over (order by visit_date) from visits")),
    case("distinct-on", WINDOWS,
         ok("select distinct on (birth_date) birth_date, name, ssn from patients order by birth_date, phone")),
    case("filter-hidden", WINDOWS,
         ok("select count(*) filter (where department = 'Psychiatry'), sum(cost) filter "
            "(where department = 'Psychiatry') from visits", rows=[(0, None)])),
    case("min-max", WINDOWS,
         ok("select min(ssn), max(ssn), min(name), max(email), min(birth_date), max(birth_date), "
            "min(phone), max(zip) from patients")),
    case("min-max-cost", WINDOWS, ok("select min(cost), max(cost), min(visit_date), max(visit_date) from visits")),
    case("string-array-agg", WINDOWS,
         ok("select string_agg(ssn, ','), array_agg(email order by birth_date), string_agg(name || city, ';') "
            "from patients")),
    case("percentiles", WINDOWS,
         ok("select percentile_disc(0.5) within group (order by cost), mode() within group (order by birth_date) "
            "from visits, patients where visits.patient_id = patients.patient_id")),

    # 5. casts and errors
    case("cast-ssn-int", ERRORS, fails("select ssn::int from patients")),
    case("cast-name-date", ERRORS, fails("select name::date from patients")),
    # (the redactor's email, city and phone are NULL: casting them cannot fail)
    case("cast-email-numeric", ERRORS, any_("select cast(email as numeric) from patients order by name")),
    case("cast-city-in-where", ERRORS, any_("select 1 from patients where city::int > 0")),
    case("cast-phone-json", ERRORS, any_("select phone::json from patients")),
    case("cast-cost-smallint", ERRORS, any_("select (cost * 100)::smallint from visits")),
    case("div-zero-raw-ssn", ERRORS,
         ok("select count(*) from patients where 1 / (case when ssn = %s then 0 else 1 end) = 1",
            ("@raw_ssn",), rows=[(400,)])),
    case("div-zero-raw-birth", ERRORS,
         ok("select count(*) from patients where 1 / (case when birth_date = %s then 0 else 1 end) = 1",
            ("@raw_birth",), rows=[(400,)])),
    case("row-filter-pushdown", ERRORS,
         ok("select * from visits where 1/(case when department='Psychiatry' then 0 else 1 end) = 1")),
    case("row-filter-pushdown-join", ERRORS,
         ok("select count(*) from patients p join visits v on v.patient_id = p.patient_id "
            "and 1 / (case when v.department = 'Psychiatry' then 0 else 1 end) = 1")),
    case("row-filter-pushdown-cast", ERRORS,
         ok("select count(*) from visits where (case when department = 'Psychiatry' "
            "then department::int else 1 end) = 1")),
    case("row-filter-scalar-subquery", ERRORS,
         ok("select (select 1 / (length_of_stay - length_of_stay) from visits "
            "where department = 'Psychiatry' limit 1)", rows=[(None,)])),
    case("row-filter-hidden-id-probe", ERRORS,
         ok("select count(*) from visits where 1 / (case when visit_id = %s then 0 else 1 end) = 1",
            ("@hidden_visit_id",))),

    # 7, 10. cursors, PREPARE/EXECUTE, the extended protocol
    case("declare-fetch", CURSORS, ok("begin"), ok("declare c cursor for select name, ssn, email from patients"),
         ok("fetch 50 from c"), ok("fetch all from c"), ok("commit")),
    case("declare-with-hold-visits", CURSORS,
         ok("declare c cursor with hold for select * from visits where department = 'Psychiatry' or true"),
         ok("fetch all from c"), ok("close c")),
    case("declare-offset-trick", CURSORS, ok("begin"),
         any_("declare c cursor for            select ssn, email from /*xxxxxxxxxxxxxxxxxxxxxxxxxx*/ patients"),
         any_("fetch 20 from c"), any_("rollback"),
         note="whitespace after FOR shifts where the masked subquery is spliced"),
    case("declare-table", CURSORS, ok("begin"), ok("declare c scroll cursor for table patients"),
         ok("fetch last from c"), ok("fetch prior from c"), ok("commit")),
    case("prepare-execute", CURSORS, ok("prepare p as select name, ssn, birth_date from patients"), ok("execute p")),
    case("prepare-offset-trick", CURSORS,
         any_("prepare p as            select ssn, phone from /*xxxxxxxxxxxxxxxxxxxxxxxxxx*/ patients"),
         any_("execute p")),
    case("prepare-param-oracle", CURSORS,
         ok("prepare p(text) as select count(*) from patients where ssn = $1"),
         ok("execute p(<<raw_ssn>>)", rows=[(0,)])),
    case("prepare-table", CURSORS, ok("prepare p as table visits"), ok("execute p")),
    case("extended-params", CURSORS,
         ok("select name, ssn, email from patients where birth_date >= %s or ssn = %s", ("@raw_birth", "@raw_ssn"))),
    case("server-prepared-reused", CURSORS,
         ok("select ssn, phone, cost from patients p join visits v using (patient_id) where v.cost > %s "
            "limit 200", (0,), how=PREPARED),
         ok("select ssn, phone, cost from patients p join visits v using (patient_id) where v.cost > %s "
            "limit 200", (100,), how=PREPARED)),
    case("psycopg-named-cursor", CURSORS, ok("select * from patients p join visits v using (patient_id)",
                                             how=NAMED_CURSOR)),
    case("asyncpg-fetch", CURSORS, ok("select p.*, v.cost from patients p join visits v using (patient_id) "
                                      "where v.cost > $1 limit 300", (0,), how=ASYNCPG_FETCH)),
    case("asyncpg-prepare", CURSORS,
         ok("select ssn, name, birth_date from patients where ssn <> $1", ("@raw_ssn",), how=ASYNCPG_PREPARE)),
    case("asyncpg-cursor", CURSORS, ok("select * from visits", how=ASYNCPG_CURSOR)),
    case("asyncpg-refused", CURSORS, refused("select * from pg_stats", how=ASYNCPG_FETCH)),

    # 7. COPY
    case("copy-table", COPY, ok("COPY patients TO STDOUT", how=COPY_OUT)),
    case("copy-table-columns-csv", COPY,
         ok("COPY public.patients (ssn, email, phone) TO STDOUT WITH (FORMAT csv, HEADER)", how=COPY_OUT)),
    case("copy-visits", COPY, ok("copy visits to stdout", how=COPY_OUT)),
    case("copy-query", COPY,
         ok("COPY (select p.name, v.cost from patients p join visits v using (patient_id) limit 500) TO STDOUT",
            how=COPY_OUT)),
    case("copy-table-command", COPY, ok("COPY (TABLE patients) TO STDOUT", how=COPY_OUT)),
    case("copy-binary", COPY, ok("COPY visits TO STDOUT (FORMAT binary)", how=COPY_OUT)),
    case("copy-to-file", COPY, refused("COPY patients TO '/tmp/pgshroud-leak.txt'")),
    case("copy-to-program", COPY, refused("COPY patients TO PROGRAM 'cat'")),
    case("asyncpg-copy-table", COPY, ok("patients", how=ASYNCPG_COPY_TABLE)),
    case("asyncpg-copy-query", COPY, ok("select * from visits", how=ASYNCPG_COPY_QUERY)),

    # 8. EXPLAIN
    case("explain", EXPLAIN, refused("explain select * from patients where ssn = 'x'")),
    case("explain-analyze", EXPLAIN, refused("explain analyze select * from visits")),
    case("explain-analyze-table", EXPLAIN, refused("explain (analyze, verbose) table patients")),
    case("explain-hidden-filter", EXPLAIN,
         refused("explain (analyze, format json) select count(*) from visits where department = 'Psychiatry'")),
    case("explain-create-table-as", EXPLAIN, refused("explain analyze create temp table t as select * from patients")),
    case("explain-public", EXPLAIN, ok("explain (analyze, verbose, format json) select * from diagnoses")),

    # 9. statistics and monitoring
    case("pg-stats", STATS, refused("select most_common_vals::text, histogram_bounds::text from pg_stats "
                                    "where tablename = 'patients'")),
    case("pg-statistic", STATS, refused("select * from pg_catalog.pg_statistic")),
    case("pg-stats-ext", STATS, refused("select * from pg_stats_ext")),
    case("pg-stat-activity", STATS, refused("select query from pg_stat_activity")),
    case("pg-stat-get-activity", STATS, refused("select * from pg_stat_get_activity(null)")),
    case("pg-stat-statements", STATS, refused("select query from pg_stat_statements")),
    case("pg-stat-user-tables", STATS, any_("select relname, n_live_tup from pg_stat_user_tables")),
    case("pg-class-star", STATS, any_("select * from pg_class where relname in ('patients', 'visits')")),

    # names
    case("quoted-public-patients", NAMES, ok('select * from public."patients"')),
    case("upper-case-unquoted", NAMES, ok("select * from PUBLIC.PATIENTS")),
    case("quoted-upper-schema", NAMES, refused('select * from "PUBLIC".patients')),
    case("quoted-upper-table", NAMES, refused('select * from "Patients"')),
    case("cross-database", NAMES, refused("select * from health.public.patients")),
    case("pg-temp-schema", NAMES, refused("select * from pg_temp.patients")),
    case("comments-in-name", NAMES, ok("select ssn from public/**/./**/patients")),
    case("schema-qualified-column", NAMES, ok("select public.patients.ssn from public.patients")),

    # 13. settings and identity
    case("set-config-search-path", IDENTITY,
         refused("select set_config('search_path', 'pgshroud, public', false)"), ok("select ssn from patients")),
    case("set-config-quoted", IDENTITY, refused("select pg_catalog.\"set_config\"('role', 'admin', false)")),
    case("set-search-path", IDENTITY, refused("SET search_path = pg_temp, public")),
    # The path pgshroud pins, and resolves names with, may be set again (Superset's SQL Lab does).
    case("set-search-path-pinned", IDENTITY, ok('set search_path = "public"'), ok("SET search_path TO DEFAULT"),
         ok("RESET search_path"), refused("SET search_path = pgshroud")),
    case("set-local-search-path", IDENTITY, ok("begin"), refused("SET LOCAL search_path TO pgshroud"),
         ok("rollback")),
    case("set-role", IDENTITY, refused("SET ROLE admin")),
    case("set-role-quoted", IDENTITY, refused('SET "role" = \'pgshroud_masked\'')),
    case("set-session-authorization", IDENTITY, refused("SET SESSION AUTHORIZATION admin")),
    case("reset-role", IDENTITY, refused("RESET ROLE")),
    case("reset-session-authorization", IDENTITY, refused("RESET SESSION AUTHORIZATION")),
    case("reset-all", IDENTITY, ok("RESET ALL"), ok("select ssn from patients")),
    case("set-scs-off", IDENTITY, refused("SET standard_conforming_strings = off")),
    case("reset-scs", IDENTITY, refused("RESET standard_conforming_strings")),
    case("set-backslash-quote", IDENTITY, refused("SET backslash_quote = on")),
    case("client-min-messages-debug", IDENTITY, ok("SET client_min_messages = debug5"),
         ok("select name, ssn from patients where birth_date > '1950-01-01' order by ssn")),

    # 15. the lexer
    case("scs-backslash-quote", LEXER, ok("select 'a\\' , ssn from patients --'")),
    case("escape-string-quote", LEXER, ok("select E'\\'', ssn from patients --'")),
    case("escape-string-backslash", LEXER, ok("select e'\\\\' , ssn from patients --'")),
    case("unicode-escape-string", LEXER, ok("select U&'\\0027', ssn from patients --'")),
    case("unicode-escape-uescape", LEXER, ok("select U&'!0027' UESCAPE '!', ssn from patients --'")),
    case("unicode-escape-identifier", LEXER, refused('select * from U&"p\\0061tients"')),
    case("unicode-uescape-backslash", LEXER, ok("select U&'a\\' UESCAPE '!' , ssn from patients --'")),
    case("national-string-backslash", LEXER, ok("select n'a\\' , ssn from patients --'")),
    case("escape-string-hex-quote", LEXER, ok("select e'\\x27', ssn from patients --'")),
    case("dollar-in-identifier", LEXER, ok("select 1 as a$b$ , ssn from patients --$b$")),
    case("operator-next-to-comment", LEXER, ok("select 2 */* c */ 3, 1 +-- x\n 2, ssn from patients")),
    case("dollar-quote-tag", LEXER, ok("select $a$ ' $a$, ssn from patients")),
    case("dollar-quote-nested-tags", LEXER, ok("select $$ $a$ $$, ssn from patients -- $a$")),
    case("nested-comments", LEXER, ok("select /* /* */ ssn from patients */ 1", rows=[(1,)])),
    case("nested-comments-around", LEXER, ok("select /* /* */ 1 */ ssn from patients")),
    case("comments-hide-keywords", LEXER, ok("select/**/ssn/**/,email/**/from/**/patients--x\n")),
    case("line-comment-newline", LEXER, ok("select -- from pg_stats\n ssn from patients")),
    case("string-continuation", LEXER, ok("select 'a'\n'b', ssn from patients")),
    case("client-encoding-sjis", LEXER, refused("SET client_encoding = 'SJIS'")),
    case("client-encoding-alias-exploit", LEXER, refused("SET client_encoding = 'shiftjis'"),
         any_(b"select E'\x83\\' , ssn, name from patients --'"),
         note="PostgreSQL reads encoding names without punctuation or case: shiftjis, S-JIS, WIN-932 are SJIS"),
    case("client-encoding-gbk-alias", LEXER, refused("SET NAMES 'GB-K'"),
         any_(b"select E'\x83\\' , email from patients --'")),

    # 14. side paths
    case("query-to-xml", SIDE_PATHS, refused("select query_to_xml('select * from patients', true, false, '')")),
    case("table-to-xml", SIDE_PATHS, refused("select table_to_xml('patients', true, false, '')")),
    case("cursor-to-xml", SIDE_PATHS, ok("begin"), ok("declare c cursor for select code from diagnoses"),
         refused("select cursor_to_xml('c', 10, true, false, '')"), ok("rollback")),
    case("database-to-xml", SIDE_PATHS, refused("select database_to_xml(true, false, '')")),
    case("pg-read-file", SIDE_PATHS, refused("select pg_read_file('/etc/passwd')")),
    case("pg-read-binary-file", SIDE_PATHS, refused("select pg_catalog.pg_read_binary_file('postgresql.conf')")),
    case("lo-import-get", SIDE_PATHS, refused("select lo_get(lo_import('/etc/passwd'))")),
    case("lo-from-bytea", SIDE_PATHS, refused("select lo_from_bytea(0, convert_to((select string_agg(ssn, ',') "
                                              "from patients), 'UTF8'))")),
    case("pg-largeobject", SIDE_PATHS, refused("select * from pg_largeobject")),
    case("dblink", SIDE_PATHS, refused("select * from dblink('dbname=health', 'select ssn from patients') "
                                       "as t(ssn text)")),
    case("ts-stat", SIDE_PATHS, refused("select * from ts_stat('select to_tsvector(ssn) from patients')")),

    # 14. writes and DO
    case("insert-returning", WRITES, refused("insert into visits select * from visits limit 1 returning *")),
    case("update-returning", WRITES, refused("update patients set name = name where false returning ssn")),
    case("delete-returning", WRITES, refused("delete from visits where department = 'Psychiatry' returning cost")),
    case("with-delete", WRITES, refused("with d as (delete from visits where false returning *) select * from d")),
    case("create-temp-as", WRITES, refused("create temp table t as select * from patients")),
    case("select-into", WRITES, refused("select * into temp t from patients")),
    case("do-block", WRITES,
         refused("do $$ begin raise notice '%', (select string_agg(ssn, ',') from patients); end $$")),
    case("create-function", WRITES,
         refused("create function pg_temp.f() returns setof text language sql as 'select ssn from patients'")),
    case("merge", WRITES, refused("merge into visits v using visits w on false when not matched then do nothing")),
    case("prepare-insert", WRITES, refused("prepare p as insert into visits select * from visits returning *")),

    # 12, 10, 11. several statements, pipelines, fast path
    case("multi-refused-last", MULTI, refused("select 1; select ssn from patients limit 3; select * from pg_stats")),
    case("multi-refused-first", MULTI, refused("select * from pg_stats; select ssn from public.patients")),
    case("multi-set-then-read", MULTI, refused("set search_path = pgshroud, public; select * from key")),
    case("multi-encoding-then-read", MULTI,
         refused(b"set client_encoding = 'shiftjis'; select E'\x83\\' , ssn from patients --'")),
    case("multi-begin-refused", MULTI, refused("begin; select * from pg_stats; commit"), ok("rollback")),
    case("pipeline-refused-middle", MULTI,
         Step(("select ssn from patients limit 2", "select * from pg_stats", "select email from patients limit 2"),
              None, REFUSED, None, PIPELINE)),
    case("pipeline-all-allowed", MULTI,
         ok(("select ssn from patients", "select cost from visits", "select name from patients"), how=PIPELINE)),
    case("fastpath-version", MULTI, refused("pg_catalog.version()", how=FASTPATH)),
    case("fastpath-lo-get", MULTI, refused("pg_catalog.lo_get(oid)", how=FASTPATH)),

    # pgshroud's own schema and settings
    case("pgshroud-key-table", INTERNALS, refused("select * from pgshroud.key")),
    case("pgshroud-dictionary", INTERNALS, refused("select * from pgshroud.dictionary")),
    case("pgshroud-function", INTERNALS, refused("select pgshroud.pseudonym_text(ssn, 'x', 16) from patients")),
    case("pgshroud-function-quoted", INTERNALS, refused("select \"pgshroud\".fake('city', city, '') from patients")),
    case("pgshroud-function-unqualified", INTERNALS, refused("select noise_fraction('1', 'cost')")),
    case("pgshroud-current-setting", INTERNALS,
         ok("select current_setting('pgshroud.key', true), current_setting('pgshroud.salt', true)")),
    case("pgshroud-set-custom", INTERNALS, any_("SET pgshroud.role = 'admin'"), ok("select ssn from patients")),
]

# The aggregate role: row-level reads of protected tables are refused, and so
# is every row count of them (reltuples, pg_stat_*, sizes).
ANALYST_CASES: list[Case] = [
    analyst("analyst-select", refused("select * from patients")),
    # Answered with differential privacy (or refused when no ledger is configured).
    analyst("analyst-count", any_("select count(*) from visits")),
    analyst("analyst-explain", refused("explain select * from visits")),
    analyst("analyst-reltuples", refused("select reltuples from pg_class where relname = 'visits'")),
    # pg_class is readable, with its row-count estimates read as NULL
    analyst("analyst-pg-class-star", any_("select * from pg_class where relname = 'visits'")),
    analyst("analyst-pg-class-qualified",
            any_("select t.* from pg_catalog.pg_class as t where relname = 'visits'")),
    analyst("analyst-pg-class-whole-row", any_("select c from pg_class c where relname in ('visits', 'labs')")),
    analyst("analyst-pg-class-field", any_("select (c).reltuples from pg_class c where relname = 'visits'")),
    analyst("analyst-pg-class-json", any_("select to_jsonb(c) from pg_class c where relname = 'labs'")),
    analyst("analyst-pg-stat-user-tables", refused("select n_live_tup from pg_stat_user_tables")),
    analyst("analyst-pg-stat-database", refused("select tup_inserted from pg_stat_database")),
    analyst("analyst-stat-function", refused("select pg_stat_get_live_tuples('visits'::regclass)")),
    analyst("analyst-stat-function-quoted",
            refused("select pg_catalog.\"pg_stat_get_live_tuples\"('visits'::regclass)")),
    analyst("analyst-relation-size", refused("select pg_relation_size('visits')")),
]
