"""psql through pgshroud behaves as psql against PostgreSQL directly.

Each test runs the same psql invocation (same arguments, same script on
stdin) against PostgreSQL and against pgshroud, and compares exit status,
stdout and stderr. The only rewriting is of values that legitimately differ
between two sessions (a backend PID, a large object OID).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.compare import Endpoint, Endpoints, run_both

pytestmark = pytest.mark.clients

PSQL = shutil.which("psql")


def psql(endpoint: Endpoint, *args: str, script: str | None = None, timeout: float = 30) -> tuple[int, str, str]:
    """Run psql; the script, if given, is read from stdin (`-f -`)."""
    if PSQL is None:
        pytest.fail("psql is not on PATH; install postgresql-client", pytrace=False)
    argv = [PSQL, "-X", "-P", "pager=off", "-v", "ON_ERROR_STOP=0", *args]
    if script is not None:
        argv += ["-f", "-"]
    try:
        proc = subprocess.run(argv, check=False, input=script, env=endpoint.libpq_env(), capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"psql against {endpoint.name} timed out after {timeout}s: {argv}\n"
                    f"stdout: {exc.stdout!r}\nstderr: {exc.stderr!r}")
    return proc.returncode, proc.stdout, proc.stderr


def same_psql(endpoints: Endpoints, *args: str, script: str | None = None,
              normalize=None) -> tuple[int, str, str]:
    def observe(endpoint: Endpoint) -> tuple[int, str, str]:
        result = psql(endpoint, *args, script=script)
        return normalize(result) if normalize else result

    observe.__name__ = f"psql {' '.join(args)}" + (" <script>" if script else "")
    return run_both(endpoints, observe)


# --------------------------------------------------------------- queries


def test_plain_queries(endpoints):
    rc, out, err = same_psql(endpoints, "-A", "-t", "-c",
                             "select id, name, price, tags, created, payload, doc from items order by id")
    assert (rc, err) == (0, "")
    assert len(out.splitlines()) == 500
    # Aligned output measures every value's display width (quotes, non-ASCII).
    rc, out, err = same_psql(endpoints, "-c", "select * from items where id <= 30 order by id")
    assert rc == 0 and "(30 rows)" in out
    # Expanded output, NULL display and a field separator.
    same_psql(endpoints, "-x", "-P", "null=<null>", "-c", "select * from items where id in (10, 13, 17, 19)")
    same_psql(endpoints, "-A", "-F", "\t", "-c", "select name, tags from items order by id desc limit 40")


def test_fetch_count_uses_a_cursor(endpoints):
    # With FETCH_COUNT psql reads through DECLARE ... CURSOR / FETCH in a transaction.
    rc, out, _err = same_psql(endpoints, "-A", "-t", "-v", "FETCH_COUNT=7", "-c",
                             "select id, name, doc from items order by id")
    assert rc == 0 and len(out.splitlines()) == 500


def test_multi_statement_string(endpoints):
    rc, out, err = same_psql(endpoints, "-A", "-t", "-c", "select 1; select 2")
    assert (rc, out, err) == (0, "1\n2\n", "")
    same_psql(endpoints, "-c", "select 1 as a; select 'x' as b, 2 as c; select * from items where false")
    # A failing statement in the middle of one Query string: nothing after it runs.
    rc, out, err = same_psql(endpoints, "-A", "-t", "-c", "select 1; select 1/0; select 3")
    assert rc == 1 and "division by zero" in err


def test_describe_commands(endpoints):
    for command in (r"\d items", r"\dt", r"\d+", r"\d+ items", r"\di", r"\dn", r"\l app",
                    r"\df pg_catalog.lower", r"\dT+ pg_catalog.int4", r"\du app", r"\dx"):
        rc, _out, err = same_psql(endpoints, "-c", command)
        assert (rc, err) == (0, ""), command


# --------------------------------------------------------------- COPY


def test_copy_to_stdout(endpoints):
    rc, out, _err = same_psql(endpoints, "-c", r"\copy items to stdout")
    assert rc == 0 and len(out.splitlines()) == 500
    same_psql(endpoints, "-c", r"\copy items to stdout with (format csv, header, force_quote *)")
    same_psql(endpoints, "-c", r"\copy (select id, tags, doc from items where id % 7 = 0 order by id) to stdout")


def test_copy_from_file(endpoints, tmp_path: Path):
    dump = tmp_path / "items.txt"
    rc, _, err = psql(endpoints.direct, "-c", rf"\copy items to '{dump}'")
    assert (rc, err) == (0, "")
    csv = tmp_path / "hand.csv"
    csv.write_text('id,name\n1,"a, b"\n2,\n3,"say ""hi"""\n4,café ☕\n', encoding="utf-8")
    bad = tmp_path / "bad.txt"
    bad.write_text("1\tfine\nnot a number\tbad\n", encoding="utf-8")
    script = rf"""
create temp table copied (like items including all);
\copy copied from '{dump}'
select count(*), md5(string_agg(copied::text, '|' order by id)) from copied;
select count(*) as differences from (select * from copied except select * from items) d;
create temp table hand (id int, name text);
\copy hand from '{csv}' with (format csv, header)
select id, name, name is null as isnull from hand order by id;
\copy hand from '{bad}'
select count(*) from hand;
copy hand from stdin;
10	inline
11	\N
\.
select * from hand where id >= 10 order by id;
"""
    rc, out, err = same_psql(endpoints, "-A", "-t", script=script)
    assert rc == 0
    assert "500|" in out and "\n0\n" in out
    assert "invalid input syntax for type integer" in err


# --------------------------------------------------------------- errors, transactions


def test_error_then_query(endpoints):
    script = """
select 1/0;
select 2 as after_error;
select nosuch from items;
select 'still here' as msg;
\\errverbose
"""
    rc, out, err = same_psql(endpoints, "-A", "-t", script=script)
    assert rc == 0 and "2\n" in out and "still here" in out
    assert "division by zero" in err and "column \"nosuch\" does not exist" in err
    # With ON_ERROR_STOP psql stops at the first error and exits with 3.
    rc, out, err = same_psql(endpoints, "-A", "-t", "-v", "ON_ERROR_STOP=1", script=script)
    assert rc == 3 and "after_error" not in out


def test_transaction_with_rollback(endpoints):
    script = """
create temp table t (id int primary key, v text);
begin;
insert into t values (1, 'one'), (2, 'two');
select count(*) from t;
rollback;
select count(*) from t;
begin;
insert into t values (3, 'three');
savepoint s1;
insert into t values (3, 'duplicate');
select 'in failed transaction';
rollback to savepoint s1;
insert into t values (4, 'four');
commit;
select * from t order by id;
\\set ON_ERROR_ROLLBACK on
begin;
insert into t values (5, 'five');
insert into t values (5, 'again');
insert into t values (6, 'six');
commit;
select * from t order by id;
begin;
select 1/0;
commit;
select txid_current_if_assigned() is null as no_open_transaction;
"""
    rc, out, err = same_psql(endpoints, "-A", "-t", script=script)
    assert rc == 0
    counts = [line for line in out.splitlines() if line.isdigit()]
    assert counts[:2] == ["2", "0"]
    assert "current transaction is aborted" in err
    assert "3|three\n4|four\n5|five\n6|six\n" in out


def test_gset_gexec_and_conditionals(endpoints):
    script = r"""
select count(*) as n, max(id) as top, min(name) as first_name from items \gset
\echo n=:n top=:top first=:first_name
select format('select %s as g, %L as label', g, 'row ' || g) from generate_series(1, 3) g \gexec
select id, name from items where id = :top \gx
select :n > 0 as nonzero \gset
\if :nonzero
\echo nonzero
\else
\echo zero
\endif
select 'a' as x, 1/0 as y \gset
\echo :ERROR :SQLSTATE :LAST_ERROR_SQLSTATE
select 5 \g
\echo :ROW_COUNT
\c app
select current_database(), current_user, current_setting('application_name');
"""
    rc, out, err = same_psql(endpoints, "-A", "-t", script=script)
    assert rc == 0 and "division by zero" in err
    assert "n=500 top=500" in out and "nonzero" in out and "3|row 3" in out
    assert "You are now connected" in out


def test_notices(endpoints):
    rc, out, err = same_psql(endpoints, "-c", "DO $$ BEGIN RAISE NOTICE 'x'; END $$")
    assert (rc, out, err) == (0, "DO\n", "NOTICE:  x\n")
    script = """
DO $$ BEGIN RAISE NOTICE 'x'; END $$;
\\set VERBOSITY verbose
DO $$ BEGIN
  RAISE NOTICE 'first %', 1;
  RAISE WARNING 'careful' USING DETAIL = 'some detail', HINT = 'a hint';
  RAISE INFO 'info';
  RAISE NOTICE 'last';
END $$;
\\set VERBOSITY default
create temp table if not exists n1 (id int);
create temp table if not exists n1 (id int);
drop table if exists no_such_table_here;
select 'done';
"""
    rc, out, err = same_psql(endpoints, "-A", "-t", script=script)
    assert rc == 0 and "careful" in err and "already exists, skipping" in err


def test_listen_notify_in_one_session(endpoints):
    script = """
select pg_backend_pid() as self_pid \\gset
\\echo SELF :self_pid
listen chan;
notify chan, 'hello';
select pg_notify('chan', 'second');
listen "Other Chan";
notify "Other Chan";
begin;
notify chan, 'in transaction';
select 'not yet delivered';
commit;
unlisten chan;
notify chan, 'not delivered';
select 'end';
"""

    def normalize(result):
        rc, out, err = result
        match = re.search(r"^SELF (\d+)$", out, re.MULTILINE)
        assert match, out
        out = out.replace(match.group(0), "SELF")
        return rc, out.replace(f"PID {match.group(1)}.", "PID <self>."), err

    _rc, out, _err = same_psql(endpoints, "-A", "-t", script=script, normalize=normalize)
    assert out.count("Asynchronous notification") == 4
    assert "not delivered\"" not in out


def test_large_objects(endpoints, tmp_path: Path):
    # \lo_import and \lo_export run on libpq's fast-path function calls.
    source = tmp_path / "blob.bin"
    source.write_bytes(bytes(range(256)) * 1000)
    target = tmp_path / "out.bin"
    script = rf"""
\lo_import '{source}'
\echo OID :LASTOID
select length(lo_get(:LASTOID)), md5(lo_get(:LASTOID));
\lo_export :LASTOID '{target}'
\lo_unlink :LASTOID
select count(*) from pg_largeobject_metadata where oid = :LASTOID;
"""

    def normalize(result):
        rc, out, err = result
        match = re.search(r"^OID (\d+)$", out, re.MULTILINE)
        assert match, (out, err)
        oid = match.group(1)
        exported = target.read_bytes() == source.read_bytes()
        target.unlink()
        return rc, out.replace(oid, "<oid>"), err, exported

    rc, out, err, exported = same_psql(endpoints, "-A", "-t", script=script, normalize=normalize)
    assert (rc, err, exported) == (0, "", True)
    assert "256000|" in out


def test_sigint_cancels_the_running_query(endpoints):
    # psql sends libpq's PQcancel on SIGINT, then stops.
    def observe(endpoint: Endpoint):
        argv = [PSQL, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=0",
                "-c", "select pg_sleep(20)", "-c", "select 'after cancel'"]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=endpoint.libpq_env())
        start = time.monotonic()
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        return proc.returncode, out, err, time.monotonic() - start < 6

    _rc, _out, err, quick = run_both(endpoints, observe)
    assert err == "Cancel request sent\nERROR:  canceling statement due to user request\n" and quick
