"""asyncpg through pgshroud behaves as against PostgreSQL directly.

asyncpg speaks the extended protocol only, with binary formats for every
type it has a codec for, its own statement cache, portals fetched a few rows
at a time (PortalSuspended), pipelined executemany and binary COPY. Each
test drives it with the same coroutine against both endpoints and compares
what it returned.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import time
from decimal import Decimal

import asyncpg
import pytest

from tests.compare import Endpoint, run_both

pytestmark = pytest.mark.clients

COLUMNS = "id, name, price, tags, created, payload, doc"
ITEMS = f"select {COLUMNS} from items order by id"


def observe(coroutine_function):
    """A run_both observation that runs the coroutine on a fresh event loop."""

    def run(ep: Endpoint):
        return asyncio.run(asyncio.wait_for(coroutine_function(ep), 60))

    run.__name__ = coroutine_function.__name__
    return run


async def connect(ep: Endpoint, **kwargs) -> asyncpg.Connection:
    return await asyncpg.connect(**ep.asyncpg_args(**kwargs))


def rows(records) -> list[tuple]:
    return [tuple(r) for r in records]


def error(exc: BaseException) -> tuple:
    fields = exc.as_dict() if isinstance(exc, asyncpg.PostgresError) else {}
    # A temporary schema is named after the backend's slot (pg_temp_3), which
    # depends on the connections open at the moment, not on the path taken.
    if re.fullmatch(r"pg_temp_\d+", str(fields.get("schema_name", ""))):
        fields["schema_name"] = "pg_temp_N"
    return type(exc).__name__, getattr(exc, "sqlstate", None), str(exc), sorted(fields.items())


async def outcome(awaitable):
    try:
        return "ok", await awaitable
    except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return "error", error(exc)


def attributes(statement) -> list[tuple]:
    return [(a.name, a.type.oid, a.type.name, a.type.kind, a.type.schema) for a in statement.get_attributes()]


# --------------------------------------------------------------- results and codecs


def test_fetch_items_with_binary_codecs(endpoints):
    async def fetch_items(ep):
        conn = await connect(ep)
        try:
            seen = {"all": rows(await conn.fetch(ITEMS))}
            seen["row"] = tuple(await conn.fetchrow(f"select {COLUMNS} from items where id = $1", 13))
            seen["none"] = await conn.fetchrow("select * from items where id = $1", -1)
            seen["val"] = await conn.fetchval("select doc from items where id = $1", 7)
            seen["col"] = await conn.fetchval(f"select {COLUMNS} from items where id = $1", 19, column=3)
            seen["attrs"] = attributes(await conn.prepare(ITEMS))
            # Every value back as a parameter, encoded by asyncpg's binary codecs.
            echo = await conn.prepare("select $1::int, $2::text, $3::numeric, $4::text[], $5::date, $6::bytea, $7::jsonb")
            seen["echo"] = [tuple(await echo.fetchrow(*row)) == row for row in seen["all"]]
            # A jsonb codec of the application's own.
            await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
            seen["json"] = await conn.fetch("select id, doc from items where id <= 12 order by id")
            seen["json"] = [tuple(r) for r in seen["json"]]
            # Types asyncpg has to look up in the catalogs: an enum, a composite, a domain, ranges.
            await conn.execute("create type pg_temp.mood as enum ('sad', 'ok', 'happy')")
            await conn.execute("create temp table pair (a int, b text[], m pg_temp.mood)")
            await conn.execute("create domain pg_temp.positive as int check (value > 0)")
            seen["introspected"] = tuple(await conn.fetchrow(
                "select row(1, array['x', null], 'ok')::pair, 'happy'::pg_temp.mood, 5::pg_temp.positive,"
                " int4range(1, 10), array[daterange('2024-01-01', '2024-02-01')], $1::pg_temp.mood[]",
                ["sad", "ok"]))
            seen["types"] = [(t[0], t[1]) for t in await conn.fetch(
                "select typname, typtype from pg_type where typnamespace = pg_my_temp_schema() order by typname")]
            seen["numbers"] = tuple(repr(v) for v in await conn.fetchrow(  # repr: NaN != NaN
                "select 'NaN'::numeric, 1e-20::numeric, 123456789012345678901234567890.123::numeric,"
                " 'infinity'::float8, '-infinity'::timestamptz, '1 year 2 mons 3 days 04:05:06.789'::interval,"
                " '2024-02-29 12:34:56.789+05:30'::timestamptz, '12:00:01+02'::timetz, '\\x00ff'::bytea,"
                " '192.168.0.1/24'::inet, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, B'1011'::bit varying"))
            return seen
        finally:
            await conn.close()

    seen = run_both(endpoints, observe(fetch_items))
    assert len(seen["all"]) == 500 and all(seen["echo"])


# --------------------------------------------------------------- prepared statements


def test_prepared_statements(endpoints):
    async def prepared(ep):
        conn = await connect(ep)
        try:
            seen = []
            stmt = await conn.prepare(f"select {COLUMNS} from items where id > $1 order by id limit $2")
            seen.append([(t.name, t.kind) for t in stmt.get_parameters()])
            seen.append(attributes(stmt))
            seen.append(rows(await stmt.fetch(10, 5)))
            seen.append(tuple(await stmt.fetchrow(490, 1)))
            seen.append(await stmt.fetchval(100, 3, column=1))
            seen.append(stmt.get_statusmsg())
            seen.append(await stmt.explain(20, 3))
            seen.append(await outcome(stmt.fetch("not an int", 3)))
            seen.append(await outcome(stmt.fetch(1, -1)))  # LIMIT must not be negative
            seen.append(rows(await stmt.fetch(1, 2)))
            # The statement cache: repeated queries reuse named statements.
            for i in range(5):
                seen.append(await conn.fetchval("select name from items where id = $1", i + 1))
            seen.append(await conn.fetchval("select count(*) > 0 from pg_prepared_statements"))
            # A cached statement whose result type changed underneath.
            await conn.execute("create temp table shape (a int)")
            await conn.execute("insert into shape values (1)")
            seen.append(rows(await conn.fetch("select * from shape")))
            await conn.execute("alter table shape add column b text default 'x'")
            seen.append(await outcome(conn.fetch("select * from shape")))
            async with conn.transaction():
                await conn.execute("alter table shape add column c int default 3")
                seen.append(await outcome(conn.fetch("select * from shape")))
            seen.append(rows(await conn.fetch("select * from shape")))
            # A small cache: asyncpg closes the statements it evicts.
            small = await connect(ep, statement_cache_size=3)
            try:
                for i in range(12):
                    seen.append(await small.fetchval(f"select {i} + $1::int", i))
                seen.append(await small.fetchval("select count(*) from pg_prepared_statements"))
            finally:
                await small.close()
            # Unnamed statements, without the cache.
            uncached = await connect(ep, statement_cache_size=0)
            try:
                seen.append(rows(await uncached.fetch("select $1::int + 1, $2::text", 41, "x")))
                seen.append(await uncached.fetchval("select count(*) from pg_prepared_statements"))
            finally:
                await uncached.close()
            return seen
        finally:
            await conn.close()

    run_both(endpoints, observe(prepared))


# --------------------------------------------------------------- cursors


def test_cursors_in_a_transaction(endpoints):
    async def cursors(ep):
        conn = await connect(ep)
        try:
            seen = []
            async with conn.transaction():
                seen.append(rows([r async for r in conn.cursor(ITEMS, prefetch=7)]))
                seen.append(rows([r async for r in conn.cursor("select g from generate_series(1, $1) g", 50, prefetch=1)]))
                cur = await conn.cursor(f"select {COLUMNS} from items where id > $1 order by id", 100)
                seen.append(rows(await cur.fetch(5)))
                seen.append(await cur.forward(10))
                seen.append(tuple(await cur.fetchrow()))
                seen.append(rows(await cur.fetch(3)))
                seen.append(await cur.forward(1000))
                seen.append(await cur.fetchrow())
                seen.append(await conn.fetchval("select count(*) from pg_cursors"))
            async with conn.transaction():
                cur = await conn.cursor("select 1 / (g - 30) from generate_series(1, 50) g")
                seen.append(rows(await cur.fetch(10)))
                seen.append(await outcome(cur.fetch(100)))
                seen.append(await outcome(conn.fetchval("select 1")))
            # the failed transaction rolled back on exit
        except asyncpg.PostgresError as exc:
            seen.append(("transaction exit", error(exc)))
        finally:
            seen.append(await conn.fetchval("select 'usable'"))
            await conn.close()
        return seen

    seen = run_both(endpoints, observe(cursors))
    assert len(seen[0]) == 500 and len(seen[1]) == 50


# --------------------------------------------------------------- COPY


def test_copy_from_query(endpoints):
    async def copy_out(ep):
        conn = await connect(ep)
        try:
            seen = {}
            for fmt in ("text", "binary", "csv"):
                buf = io.BytesIO()
                status = await conn.copy_from_query(ITEMS, output=buf, format=fmt)
                seen[fmt] = (status, hashlib.sha256(buf.getvalue()).hexdigest(), len(buf.getvalue()))
            buf = io.BytesIO()
            seen["args"] = await conn.copy_from_query("select id, name from items where id < $1 order by id", 50,
                                                      output=buf, format="csv", header=True)
            seen["args_data"] = buf.getvalue()
            chunks = []

            async def sink(chunk):
                chunks.append(bytes(chunk))

            seen["big"] = await conn.copy_from_query(
                "select g, repeat('z', g % 400) from generate_series(1, 100000) g", output=sink)
            seen["big_data"] = hashlib.sha256(b"".join(chunks)).hexdigest()
            buf = io.BytesIO()
            seen["table"] = (await conn.copy_from_table("items", output=buf, columns=["id", "tags"]),
                             hashlib.sha256(buf.getvalue()).hexdigest())
            seen["error"] = await outcome(conn.copy_from_query("select 1 / (id - 250) from items order by id",
                                                               output=io.BytesIO()))
            seen["after"] = await conn.fetchval("select 'usable'")
            return seen
        finally:
            await conn.close()

    seen = run_both(endpoints, observe(copy_out))
    assert seen["text"][0] == "COPY 500" and seen["big"] == "COPY 100000"


def test_copy_records_to_table(endpoints):
    async def copy_in(ep):
        conn = await connect(ep)
        try:
            seen = {}
            records = await conn.fetch(ITEMS)
            await conn.execute("create temp table c_items (like items including all)")
            seen["records"] = await conn.copy_records_to_table("c_items", records=records)
            seen["same"] = await conn.fetchval(
                "select count(*) from (select * from c_items except select * from items) d")
            seen["dup"] = await outcome(conn.copy_records_to_table("c_items", records=records[:3]))
            await conn.execute("create temp table c_many (id int, body text, n numeric)")
            many = [(i, "w" * (i % 700), Decimal(i) / 3) for i in range(30000)]
            seen["many"] = await conn.copy_records_to_table("c_many", records=many)
            seen["many_sum"] = tuple(await conn.fetchrow("select count(*), sum(length(body)), sum(n) from c_many"))

            async def generate():
                for i in range(1000):
                    yield (i, "async", None)

            seen["async"] = await conn.copy_records_to_table("c_many", records=generate(), columns=["id", "body", "n"])
            data = io.BytesIO(b"".join(f"{i}\ttext {i}\t{i}.5\n".encode() for i in range(500)))
            seen["text_file"] = await conn.copy_to_table("c_many", source=data)
            bad = io.BytesIO(b"1\tok\t1\nx\tbad\t2\n")
            seen["bad"] = await outcome(conn.copy_to_table("c_many", source=bad))
            seen["count"] = await conn.fetchval("select count(*) from c_many")
            return seen
        finally:
            await conn.close()

    seen = run_both(endpoints, observe(copy_in))
    assert seen["records"] == "COPY 500" and seen["same"] == 0 and seen["count"] == 31500


# --------------------------------------------------------------- executemany, transactions, errors


def test_executemany(endpoints):
    async def many(ep):
        conn = await connect(ep)
        try:
            seen = []
            await conn.execute("create temp table em (id int primary key, v text, n numeric)")
            seen.append(await conn.executemany("insert into em values ($1, $2, $3)",
                                               [(i, f"v{i}", Decimal(i) / 8) for i in range(300)]))
            seen.append(await conn.executemany("update em set v = $1 where id = $2", [(f"u{i}", i) for i in range(0, 300, 7)]))
            # A failing row: asyncpg's executemany is atomic.
            seen.append(await outcome(conn.executemany("insert into em values ($1, $2, $3)",
                                                       [(1000, "a", 1), (1001, "b", 2), (5, "dup", 3), (1002, "c", 4)])))
            seen.append(await outcome(conn.executemany("insert into em values ($1, $2, $3)", [(2000, "a", "not a number")])))
            async with conn.transaction():
                await conn.executemany("insert into em values ($1, $2, $3)", [(3000 + i, "t", i) for i in range(50)])
            seen.append(rows(await conn.fetch("select id, v, n from em where id >= 1000 or id % 50 = 0 order by id")))
            return seen
        finally:
            await conn.close()

    run_both(endpoints, observe(many))


def test_transactions_and_rollback(endpoints):
    async def transactions(ep):
        conn = await connect(ep)
        try:
            seen = []
            await conn.execute("create temp table tx (id int primary key)")
            tr = conn.transaction()
            await tr.start()
            await conn.execute("insert into tx values (1)")
            seen.append(conn.is_in_transaction())
            await tr.rollback()
            seen.append((conn.is_in_transaction(), await conn.fetchval("select count(*) from tx")))
            async with conn.transaction():
                await conn.execute("insert into tx values (2)")
                try:
                    async with conn.transaction():
                        await conn.execute("insert into tx values (3)")
                        await conn.execute("insert into tx values (2)")
                except asyncpg.UniqueViolationError as exc:
                    seen.append(error(exc))
                async with conn.transaction():
                    await conn.execute("insert into tx values (4)")
            seen.append(await conn.fetchval("select array_agg(id order by id) from tx"))
            async with conn.transaction(isolation="serializable", readonly=True, deferrable=True):
                seen.append(tuple(await conn.fetchrow(
                    "select current_setting('transaction_isolation'), current_setting('transaction_read_only'),"
                    " current_setting('transaction_deferrable')")))
                seen.append(await outcome(conn.execute("create temp table not_allowed (id int)")))
            try:
                async with conn.transaction(isolation="repeatable_read"):
                    await conn.execute("insert into tx values (5)")
                    raise RuntimeError("application error")
            except RuntimeError:
                pass
            seen.append(await conn.fetchval("select array_agg(id order by id) from tx"))
            return seen
        finally:
            await conn.close()

    seen = run_both(endpoints, observe(transactions))
    assert seen[-1] == [2, 4]


def test_error_then_recovery(endpoints):
    async def errors(ep):
        conn = await connect(ep)
        try:
            seen = []
            for sql, args in [("select 1/0", ()), ("select nosuch from items where id = $1", (1,)),
                              ("select * from items where id = 'x'", ()), ("insert into items (id) values (1)", ()),
                              ("selec 1", ()), ("select $1::int", ("NaN",)),
                              ("DO $$ BEGIN RAISE EXCEPTION 'custom' USING ERRCODE = 'P0042', DETAIL = 'd', HINT = 'h'; END $$", ())]:
                seen.append(await outcome(conn.fetch(sql, *args)))
                seen.append(await conn.fetchval("select count(*) from items"))
            seen.append(await outcome(conn.execute("select 1; select 1/0; select 3")))
            seen.append(await conn.fetchval("select 'usable'"))
            return seen
        finally:
            await conn.close()

    run_both(endpoints, observe(errors))


def test_connection_errors(endpoints):
    async def failures(ep):
        seen = []
        for overrides in ({"password": "wrong"}, {"database": "no_such_database"},
                          {"user": "no_such_user", "password": "x"},
                          {"server_settings": {"no_such_setting": "1"}},
                          {"server_settings": {"work_mem": "nonsense"}}):
            try:
                conn = await asyncpg.connect(**{**ep.asyncpg_args(), **overrides})
            except asyncpg.PostgresError as exc:
                seen.append(error(exc))
            else:
                seen.append("connected")
                await conn.close()
        return seen

    seen = run_both(endpoints, observe(failures))
    assert seen[0][0] == "InvalidPasswordError" and seen[1][0] == "InvalidCatalogNameError"


def test_notices_notifications_and_settings(endpoints):
    async def session(ep):
        conn = await connect(ep, server_settings={"application_name": "asyncpg-suite", "search_path": "pg_catalog,public"})
        sender = await connect(ep)
        try:
            seen = {}
            notices, notes = [], asyncio.Queue()
            conn.add_log_listener(lambda c, m: notices.append((type(m).__name__, m.sqlstate, str(m), m.as_dict().get("hint"))))
            await conn.execute("DO $$ BEGIN RAISE NOTICE 'x'; RAISE WARNING 'w' USING HINT = 'h'; END $$")
            await conn.fetch("select 1 from (select 1) s where (select count(*) from (select 1) t) = 1")
            sender_pid = await sender.fetchval("select pg_backend_pid()")
            await conn.add_listener("chan", lambda c, pid, channel, payload: notes.put_nowait((pid == sender_pid, channel, payload)))
            await sender.execute("notify chan, 'one'")
            await sender.execute("select pg_notify('chan', $1)", "two ☕")
            seen["notes"] = [await asyncio.wait_for(notes.get(), 5) for _ in range(2)]
            await asyncio.sleep(0.1)
            seen["notices"] = notices
            settings = conn.get_settings()
            seen["settings"] = (settings.server_version, settings.server_encoding, settings.client_encoding,
                                settings.application_name, settings.DateStyle, settings.TimeZone,
                                tuple(conn.get_server_version()))
            seen["current"] = tuple(await conn.fetchrow(
                "select current_setting('application_name'), current_setting('search_path')"))
            await conn.remove_listener("chan", lambda *a: None)
            return seen
        finally:
            await conn.close()
            await sender.close()

    seen = run_both(endpoints, observe(session))
    assert seen["notes"] == [(True, "chan", "one"), (True, "chan", "two ☕")]


def test_pool_reset(endpoints):
    async def pool(ep):
        seen = []
        async with asyncpg.create_pool(**ep.asyncpg_args(), min_size=1, max_size=1) as pool:
            async with pool.acquire() as conn:
                await conn.execute("set work_mem = '7MB'")
                await conn.execute("listen pooled")
                await conn.execute("select pg_advisory_lock(4242)")
                await conn.execute("prepare leftover as select 1")
            # Released: asyncpg resets the session (RESET ALL, UNLISTEN *, advisory unlock, DEALLOCATE ...).
            async with pool.acquire() as conn:
                seen.append(await conn.fetchval("select current_setting('work_mem')"))
                seen.append(await conn.fetchval("select count(*) from pg_listening_channels()"))
                seen.append(await conn.fetchval("select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()"))
                seen.append(await conn.fetchval("select count(*) from pg_prepared_statements where name = 'leftover'"))
            seen.append(await pool.fetchval("select 'pooled'"))
        return seen

    seen = run_both(endpoints, observe(pool))
    assert seen[:3] == ["4MB", 0, 0] and seen[-1] == "pooled"


# --------------------------------------------------------------- timeouts cancel the query


def test_timeout_cancels_the_query(endpoints, pg):
    async def timeout(ep):
        conn = await connect(ep, command_timeout=None)
        try:
            seen = []
            start = time.monotonic()
            result = await outcome(conn.fetchval("select pg_sleep(30)", timeout=1))
            seen.append((result[0], result[1][0] if result[0] == "error" else result[1]))
            seen.append(time.monotonic() - start < 4)
            seen.append(await conn.fetchval("select 'usable'"))
            async with conn.transaction():
                seen.append(await outcome(conn.fetchval("select pg_sleep(30)", timeout=0.5)))
            return seen
        except asyncpg.PostgresError as exc:
            return seen + [("transaction exit", error(exc))]
        finally:
            await conn.close()

    def observe_timeout(ep):
        seen = asyncio.run(timeout(ep))
        time.sleep(1.5)
        sleeping = pg.execute("select count(*) from pg_stat_activity where query like 'select pg_sleep(30)%'"
                              " and state = 'active' and pid <> pg_backend_pid()")
        return seen, sleeping

    seen, sleeping = run_both(endpoints, observe_timeout)
    assert seen[:3] == [("error", "TimeoutError"), True, "usable"]
    assert sleeping == [(0,)]
