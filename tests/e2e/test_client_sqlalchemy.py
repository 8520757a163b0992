"""SQLAlchemy 2 through pgshroud behaves as against PostgreSQL directly.

The same Core, ORM and reflection code runs on an engine for each endpoint,
with the psycopg driver (`postgresql+psycopg://`) and, through
`create_async_engine`, with asyncpg (`postgresql+asyncpg://`) and psycopg's
async connection. SQLAlchemy adds its own first-connect queries, insertmany
batching with RETURNING, server-side cursors for streamed results, and
catalog queries for reflection on top of each driver.
"""

from __future__ import annotations

import asyncio
from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import (
    Column,
    Date,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    Table,
    Text,
    bindparam,
    create_engine,
    delete,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateIndex, CreateTable

from tests.compare import Endpoint, run_both, scratch_name

pytestmark = pytest.mark.clients

ASYNC_DRIVERS = ("asyncpg", "psycopg")


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str | None] = mapped_column(Text)
    price: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
    tags: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    created: Mapped[date | None] = mapped_column(Date)
    payload: Mapped[bytes | None] = mapped_column(LargeBinary)
    doc: Mapped[dict | None] = mapped_column(JSONB)

    def as_tuple(self) -> tuple:
        return (self.id, self.name, self.price, self.tags, self.created, self.payload, self.doc)


def sync_engine(ep: Endpoint):
    return create_engine(ep.sqlalchemy_url("psycopg"), poolclass=NullPool)


def run_async(ep: Endpoint, driver: str, work):
    """Run work(async_engine) on a fresh event loop and dispose the engine."""

    async def main():
        engine = create_async_engine(ep.sqlalchemy_url(driver), poolclass=NullPool)
        try:
            return await asyncio.wait_for(work(engine), 60)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def error(exc: DBAPIError) -> tuple:
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(getattr(orig, "__cause__", None), "sqlstate", None)
    return type(exc).__name__, sqlstate


# --------------------------------------------------------------- Core


def core_roundtrip(conn, table_name: str) -> list:
    """Create, fill, query, change and drop a scratch table; names aside, what comes back."""
    seen = []
    metadata = MetaData()
    scratch = Table(
        table_name, metadata,
        Column("id", Integer, primary_key=True),
        Column("name", Text, nullable=False),
        Column("price", Numeric(10, 2)),
        Column("tags", ARRAY(Text)),
        Column("doc", JSONB),
    )
    metadata.create_all(conn)
    try:
        rows = [{"id": i, "name": f"n{i}", "price": Decimal(i) / 4, "tags": [f"t{i % 3}"], "doc": {"i": i}}
                for i in range(1, 301)]
        result = conn.execute(insert(scratch).returning(scratch.c.id, scratch.c.name), rows)
        seen.append(result.all())
        seen.append(conn.execute(insert(scratch), [{"id": 1000 + i, "name": "bulk"} for i in range(50)]).rowcount)
        seen.append(conn.execute(
            select(scratch).where(scratch.c.price > 10, scratch.c.tags.contains(["t1"]))
            .order_by(scratch.c.price.desc()).limit(10)).all())
        seen.append(conn.execute(select(func.count(), func.sum(scratch.c.price))).one())
        seen.append(conn.execute(update(scratch).where(scratch.c.id <= 10).values(name="changed")).rowcount)
        seen.append(conn.execute(delete(scratch).where(scratch.c.id > 1040).returning(scratch.c.id)).scalars().all())
        seen.append(conn.execute(select(scratch.c.doc["i"].as_integer()).where(scratch.c.id.in_([3, 5, 8]))
                                 .order_by(scratch.c.id)).scalars().all())
        stmt = text(f"select id, name from {table_name} where id = any(:ids) order by id")
        seen.append(conn.execute(stmt.bindparams(bindparam("ids", type_=ARRAY(Integer))), {"ids": [1, 2, 299]}).all())
        savepoint = conn.begin_nested()
        try:
            conn.execute(insert(scratch), {"id": 1, "name": "duplicate"})
        except IntegrityError as exc:
            seen.append(error(exc))
            savepoint.rollback()
        seen.append(conn.execute(select(func.count()).select_from(scratch)).scalar())
    finally:
        metadata.drop_all(conn)
    return seen


def test_core_with_psycopg(endpoints):
    def observe(ep):
        engine = sync_engine(ep)
        try:
            with engine.begin() as conn:
                seen = core_roundtrip(conn, scratch_name("sa_core"))
            with engine.connect() as conn:
                # Streamed results: a server-side (named) cursor.
                streamed = conn.execution_options(yield_per=37).execute(select(Item.__table__).order_by(Item.id))
                seen.append([len(p) for p in streamed.partitions()][:3])
                seen.append(conn.execute(text("select cast(:x as int) + 1"), {"x": 41}).scalar())
                try:
                    conn.execute(text("select 1/0"))
                except DBAPIError as exc:
                    seen.append(error(exc))
                conn.rollback()
                seen.append(conn.execute(text("select 'usable'")).scalar())
            seen.append(engine.dialect.server_version_info)
            return seen
        finally:
            engine.dispose()

    seen = run_both(endpoints, observe)
    assert len(seen[0]) == 300 and seen[-3] == ("DataError", "22012")


@pytest.mark.parametrize("driver", ASYNC_DRIVERS)
def test_core_async(endpoints, driver):
    async def work(engine):
        async with engine.begin() as conn:
            seen = await conn.run_sync(core_roundtrip, scratch_name("sa_core"))
        async with engine.connect() as conn:
            stream = await conn.stream(select(Item.__table__).order_by(Item.id), execution_options={"yield_per": 23})
            seen.append([tuple(row) async for row in stream])
            try:
                await conn.execute(text("select 1/0"))
            except DBAPIError as exc:
                seen.append(error(exc))
            await conn.rollback()
            seen.append((await conn.execute(text("select 'usable'"))).scalar())
        seen.append(engine.dialect.server_version_info)
        return seen

    seen = run_both(endpoints, lambda ep: run_async(ep, driver, work), what=f"Core over {driver}")
    assert len(seen[0]) == 300 and len(seen[-4]) == 500


# --------------------------------------------------------------- ORM


def orm_queries(session: Session) -> list:
    seen = []
    found = session.scalars(select(Item).where(Item.price > 10).order_by(Item.price.desc(), Item.id).limit(20))
    seen.append([item.as_tuple() for item in found])
    seen.append(session.get(Item, 13).as_tuple())
    seen.append(session.get(Item, 100000))
    seen.append([i.id for i in session.scalars(
        select(Item).where(Item.tags.contains(["t1"]), Item.doc["even"].as_boolean()).order_by(Item.id).offset(5).limit(10))])
    seen.append([i.id for i in session.scalars(
        select(Item).where(Item.name.ilike("%café%")).order_by(Item.created, Item.id).limit(7))])
    seen.append(session.execute(select(func.count(Item.id), func.min(Item.created), func.max(Item.price))
                                .where(Item.payload.is_not(None))).one())
    seen.append(session.execute(select(Item.created, func.count()).group_by(Item.created)
                                .order_by(func.count().desc(), Item.created).limit(5)).all())
    # A change, seen inside the transaction and gone after the rollback.
    item = session.get(Item, 21)
    item.name = "renamed"
    session.add(Item(id=100001, name="new", tags=["x"], doc={"new": True}, payload=b"\x00\x01"))
    session.flush()
    seen.append(session.scalars(select(Item.name).where(Item.id.in_([21, 100001])).order_by(Item.id)).all())
    session.rollback()
    seen.append(session.scalars(select(Item.name).where(Item.id.in_([21, 100001])).order_by(Item.id)).all())
    return seen


def test_orm_with_psycopg(endpoints):
    def observe(ep):
        engine = sync_engine(ep)
        try:
            with Session(engine) as session:
                return orm_queries(session)
        finally:
            engine.dispose()

    seen = run_both(endpoints, observe)
    assert len(seen[0]) == 20 and seen[-1] == ["item 21"]


@pytest.mark.parametrize("driver", ASYNC_DRIVERS)
def test_orm_async(endpoints, driver):
    async def work(engine):
        async with AsyncSession(engine) as session:
            seen = await session.run_sync(orm_queries)
            seen.append([i.as_tuple() for i in (await session.scalars(
                select(Item).where(Item.id.between(95, 105)).order_by(Item.id))).all()])
            return seen

    seen = run_both(endpoints, lambda ep: run_async(ep, driver, work), what=f"ORM over {driver}")
    assert len(seen[0]) == 20 and len(seen[-1]) == 11


# --------------------------------------------------------------- reflection


def reflect(conn) -> dict:
    inspector = inspect(conn)

    def columns(table):
        return [(c["name"], repr(c["type"]), c["nullable"], c["default"], c.get("autoincrement"), c.get("comment"))
                for c in inspector.get_columns(table)]

    items = Table("items", MetaData(), autoload_with=conn)
    return {
        "schemas": inspector.get_schema_names(),
        "default_schema": inspector.default_schema_name,
        "tables": inspector.get_table_names(),
        "views": inspector.get_view_names(),
        "columns": columns("items"),
        "pk": inspector.get_pk_constraint("items"),
        "indexes": inspector.get_indexes("items"),
        "foreign_keys": inspector.get_foreign_keys("items"),
        "unique": inspector.get_unique_constraints("items"),
        "checks": inspector.get_check_constraints("items"),
        "comment": inspector.get_table_comment("items"),
        "has_table": (inspector.has_table("items"), inspector.has_table("no_such_table")),
        "autoload": [(c.name, repr(c.type), c.primary_key, c.nullable) for c in items.columns],
        "multi": repr(sorted(inspector.get_multi_columns(filter_names=["items"]).items(), key=repr)),
    }


def test_reflection_with_psycopg(endpoints):
    def observe(ep):
        engine = sync_engine(ep)
        try:
            with engine.connect() as conn:
                return reflect(conn)
        finally:
            engine.dispose()

    seen = run_both(endpoints, observe)
    assert "items" in seen["tables"] and seen["pk"]["constrained_columns"] == ["id"]
    assert [c[0] for c in seen["columns"]] == ["id", "name", "price", "tags", "created", "payload", "doc"]


@pytest.mark.parametrize("driver", ASYNC_DRIVERS)
def test_reflection_async(endpoints, driver):
    async def work(engine):
        async with engine.connect() as conn:
            return await conn.run_sync(reflect)

    seen = run_both(endpoints, lambda ep: run_async(ep, driver, work), what=f"reflection over {driver}")
    assert "items" in seen["tables"] and len(seen["columns"]) == 7


@pytest.fixture
def constrained_table(endpoints):
    """A table with every kind of constraint and index, one name for both runs."""
    import psycopg

    name = scratch_name("sa_reflect")
    ddl = f"""
        create type {name}_mood as enum ('sad', 'ok', 'happy');
        create table {name} (
            id int generated always as identity primary key,
            item_id int not null references items (id) on delete cascade,
            code text not null default 'none' check (length(code) < 20),
            mood {name}_mood,
            amount numeric(12, 3) default 0,
            unique (item_id, code)
        );
        comment on table {name} is 'reflected through pgshroud';
        comment on column {name}.code is 'a short code';
        create index {name}_lower on {name} (lower(code));
        create index {name}_partial on {name} (amount desc) where amount > 0;
        create view {name}_v as select id, code from {name};
    """
    with psycopg.connect(endpoints.direct.conninfo(), autocommit=True) as conn:
        conn.execute(ddl)
    yield name
    with psycopg.connect(endpoints.direct.conninfo(), autocommit=True) as conn:
        conn.execute(f"drop view {name}_v; drop table {name}; drop type {name}_mood")


def reflect_constraints(conn, name: str) -> dict:
    inspector = inspect(conn)
    table = Table(name, MetaData(), autoload_with=conn)
    return {
        "columns": repr(inspector.get_columns(name)),
        "pk": inspector.get_pk_constraint(name),
        "fks": inspector.get_foreign_keys(name),
        "indexes": inspector.get_indexes(name),
        "unique": inspector.get_unique_constraints(name),
        "checks": inspector.get_check_constraints(name),
        "comment": inspector.get_table_comment(name),
        "views": [v for v in inspector.get_view_names() if v.startswith(name)],
        "view_definition": inspector.get_view_definition(f"{name}_v"),
        "enums": [e for e in inspector.get_enums() if e["name"].startswith(name)],
        # The autoloaded Table, as the DDL SQLAlchemy would emit for it.
        "ddl": [str(CreateTable(table).compile(dialect=conn.dialect))]
               + sorted(str(CreateIndex(index).compile(dialect=conn.dialect)) for index in table.indexes),
    }


def test_reflection_of_constraints_and_indexes(endpoints, constrained_table):
    def observe(ep):
        engine = sync_engine(ep)
        try:
            with engine.connect() as conn:
                return reflect_constraints(conn, constrained_table)
        finally:
            engine.dispose()

    def observe_async(ep):
        async def work(engine):
            async with engine.connect() as conn:
                return await conn.run_sync(reflect_constraints, constrained_table)

        return run_async(ep, "asyncpg", work)

    seen = run_both(endpoints, observe)
    assert len(seen["indexes"]) == 3 and len(seen["fks"]) == 1 and len(seen["checks"]) == 1
    assert "GENERATED ALWAYS AS IDENTITY" in seen["ddl"][0]
    run_both(endpoints, observe_async)
