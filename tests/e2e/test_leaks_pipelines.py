"""Attacks through the extended protocol's batches, portals and names, and
on the one relation view, as the analyst (aggregate) and the clinician
(masked): a failed batch followed by Queries, portals PostgreSQL already
dropped, names of pgshroud's own statements, frames split anywhere. Each
test states the safe behaviour.

Raw protocol bytes are sent on a connection psycopg authenticated (SCRAM or
whatever the proxy asks), by writing to its socket directly.
"""

from __future__ import annotations

import os
import socket

import psycopg
import pytest

from pgshroud.proxy.codec.messages import (
    Bind,
    Close,
    DataRow,
    Describe,
    ErrorResponse,
    Execute,
    Flush,
    Parse,
    Query,
    ReadyForQuery,
    Sync,
)
from tests.fix_health import ledgered_proxy
from tests.fix_proxy import RunningProxy
from tests.rawclient import RawClient

PRIVATE_QUERY = "SELECT department, count(*) FROM visits GROUP BY department"


@pytest.fixture(scope="module")
def proxy(pg, health_db, health_policy):
    with ledgered_proxy(pg, health_db, health_policy) as running:
        yield running


@pytest.fixture(scope="module")
def cached_proxy(pg, health_db, health_policy):
    """The same, with the answer cache on, as `pgshroud serve` runs by default."""
    with ledgered_proxy(pg, health_db, health_policy, answer_cache_seconds=300) as running:
        yield running


@pytest.fixture(scope="module")
def truth(health_db):
    with psycopg.connect(health_db) as raw:
        rows = raw.execute("SELECT patient_id, name, ssn FROM patients").fetchall()
        dept = dict(raw.execute("SELECT department, count(*) FROM visits GROUP BY department").fetchall())
    return {
        "ids": {str(r[0]) for r in rows},
        "names": {r[1] for r in rows},
        "ssns": {r[2] for r in rows},
        "dept": dept,
    }


class Hijacked:
    """A psycopg-authenticated connection whose socket we drive by hand."""

    def __init__(self, proxy: RunningProxy, user: str) -> None:
        self.conn = psycopg.connect(proxy.dsn(user, "health"), autocommit=True, sslmode="disable")
        sock = socket.socket(fileno=os.dup(self.conn.pgconn.socket))
        sock.settimeout(15)
        self.raw = RawClient(sock, proxy.host, proxy.port, 15)

    def send(self, *messages) -> None:
        self.raw.send(b"".join(m if isinstance(m, bytes) else m.encode() for m in messages))

    def until_ready(self, n: int = 1) -> list:
        out: list = []
        for _ in range(n):
            out += self.raw.read_until_ready()
        return out

    def close(self) -> None:
        self.raw.close()
        self.conn.close()


def values(messages) -> list[str]:
    return [v.decode() for m in messages if isinstance(m, DataRow) for v in m.values if v is not None]


def errors(messages) -> list[ErrorResponse]:
    return [m for m in messages if isinstance(m, ErrorResponse)]


@pytest.fixture
def analyst(proxy):
    client = Hijacked(proxy, "analyst")
    yield client
    client.close()


@pytest.fixture
def clinician(proxy):
    client = Hijacked(proxy, "clinician")
    yield client
    client.close()


# ------------------------------------------------------------- names (threat 19)

def test_sql_cannot_reach_private_upstream_names(analyst, truth):
    """A private statement and portal live upstream as pgshroud_r1 / pgshroud_q1;
    neither SQL nor protocol names given by the client may reach them."""
    analyst.send(Parse("s", PRIVATE_QUERY, ()), Bind("p", "s", (), (), ()), Execute("p", 1), Sync())
    first = analyst.until_ready()
    assert not errors(first), errors(first)
    for sql in ("BEGIN", "EXECUTE pgshroud_r1", "ROLLBACK", "BEGIN", "FETCH ALL FROM pgshroud_q1", "ROLLBACK",
                'EXECUTE "pgshroud_r1"', 'EXECUTE "pgshroud_cached_answer"', "BEGIN",
                'FETCH ALL FROM "pgshroud_q1"', "ROLLBACK", "EXECUTE s", "BEGIN", "FETCH ALL FROM p", "ROLLBACK"):
        analyst.send(Query(sql))
        got = analyst.until_ready()
        assert not [v for v in values(got) if v.isdigit()], (sql, got)
    for name in ("pgshroud_r1", "pgshroud_cached_answer"):
        analyst.send(Bind("", name, (), (), ()), Execute("", 0), Sync())
        got = analyst.until_ready()
        assert errors(got) and not values(got), (name, got)
    analyst.send(Execute("pgshroud_q1", 0), Sync())
    got = analyst.until_ready()
    assert errors(got) and not values(got), got


def test_protocol_execute_of_sql_cursor_name(analyst, truth):
    """DECLARE c CURSOR FOR <private query>, then a protocol Execute of portal "c"."""
    analyst.send(Query("BEGIN"))
    analyst.until_ready()
    analyst.send(Query(f"DECLARE c CURSOR FOR {PRIVATE_QUERY}"))
    got = analyst.until_ready()
    assert not errors(got), got
    analyst.send(Describe(b"P", "c"), Execute("c", 0), Sync())
    got = analyst.until_ready()
    exact = {str(v) for v in truth["dept"].values()}
    counts = [v for v in values(got) if v.isdigit()]
    # reading it through the protocol must not give PostgreSQL's raw aggregate
    assert not counts or set(counts) != exact, got
    analyst.send(Query("ROLLBACK"))
    analyst.until_ready()


# ------------------------------------------------------- pipelines and refusals

def test_raw_query_sent_while_upstream_skips(clinician, truth):
    """An upstream error in a batch without Sync; pgshroud then relays a simple
    Query untouched (PostgreSQL ignores it until Sync). Nothing raw may come back,
    and the session must work afterwards."""
    clinician.send(Parse("bad", "SELECT $1::int4 AS x FROM diagnoses", ()), Bind("", "bad", (), (b"nope",), ()),
                   Execute("", 0), Flush())
    err = clinician.raw.read_error()
    assert err is not None
    clinician.send(Query("SELECT name, ssn FROM patients LIMIT 5"), Sync())
    got = clinician.until_ready(1)
    # whatever came, no real name or ssn
    assert not (set(values(got)) & (truth["ssns"] | truth["names"])), got
    clinician.send(Query("SELECT ssn FROM patients LIMIT 3"))
    got = clinician.until_ready()
    assert values(got) and not (set(values(got)) & truth["ssns"]), got


def test_refusal_then_messages_then_several_syncs(analyst, truth):
    """A refused row-level read, more messages before Sync (one a private read),
    then a second batch: nothing raw, nothing charged for what was skipped, the
    second batch answered privately."""
    analyst.send(
        Parse("", "SELECT patient_id, ssn FROM patients", ()), Bind("", "", (), (), ()), Execute("", 0),
        Parse("q", PRIVATE_QUERY, ()), Bind("", "q", (), (), ()), Execute("", 0),
        Query("SELECT ssn FROM patients"),
        Sync(),
        Parse("q2", PRIVATE_QUERY + " ORDER BY 1", ()), Bind("", "q2", (), (), ()), Execute("", 0), Sync(),
    )
    first = analyst.until_ready()
    assert errors(first)
    assert not [v for v in values(first) if v in truth["ssns"] or v in truth["ids"]], first
    second = analyst.until_ready()
    assert not errors(second), errors(second)
    assert values(second)
    analyst.send(Query("SELECT 1"))
    assert values(analyst.until_ready()) == ["1"]


def test_frames_split_at_every_byte(clinician, truth):
    """A simple Query and an extended batch, sent one byte at a time."""
    data = (Query("SELECT name, ssn FROM patients ORDER BY 1 LIMIT 3").encode()
            + Parse("", "SELECT ssn, patient_id FROM patients LIMIT 3", ()).encode()
            + Bind("", "", (), (), ()).encode() + Execute("", 0).encode() + Sync().encode())
    for i in range(len(data)):
        clinician.raw.send(data[i:i + 1])
    got = clinician.until_ready(2)
    vals = set(values(got))
    assert vals and not (vals & (truth["ssns"] | truth["names"])), got


def test_close_of_private_then_reuse_of_name(analyst, truth):
    """Close a private statement; Parse a row-level read under the same name; Bind/Execute."""
    analyst.send(Parse("s", PRIVATE_QUERY, ()), Sync())
    analyst.until_ready()
    analyst.send(Close(b"S", "s"), Parse("s", "SELECT patient_id FROM patients", ()), Bind("", "s", (), (), ()),
                 Execute("", 0), Sync())
    got = analyst.until_ready()
    assert errors(got)
    assert not (set(values(got)) & truth["ids"]), got


# ------------------------------------------------------- masked view: privacy unit

@pytest.mark.parametrize("sql", [
    "SELECT patient_id FROM patients ORDER BY 1 LIMIT 5",
    "SELECT v.patient_id FROM visits v JOIN patients p USING (patient_id) LIMIT 5",
    "WITH x AS (SELECT * FROM visits) SELECT patient_id FROM x LIMIT 5",
    "SELECT (SELECT min(patient_id) FROM patients)",
    "SELECT * FROM (SELECT patient_id FROM patients) s WHERE patient_id < 1001 LIMIT 5",
    "COPY (SELECT patient_id FROM visits LIMIT 5) TO STDOUT",
])
def test_masked_unit_never_raw(proxy, sql, truth):
    with psycopg.connect(proxy.dsn("clinician", "health"), autocommit=True) as conn:
        if sql.startswith("COPY"):
            with conn.cursor() as cur, cur.copy(sql) as copy:
                got = {bytes(row).decode().strip() for row in copy}
        else:
            got = {str(r[0]) for r in conn.execute(sql).fetchall()}
    # pseudonyms are 9-10 digit numbers; raw ids are 1..N
    assert not any(v.isdigit() and int(v) <= len(truth["ids"]) for v in got), got


def test_masked_unit_through_declare(proxy, truth):
    with psycopg.connect(proxy.dsn("clinician", "health")) as conn:
        conn.execute("DECLARE c CURSOR FOR SELECT patient_id FROM patients ORDER BY 1")
        got = {str(r[0]) for r in conn.execute("FETCH 5 FROM c").fetchall()}
    assert not any(int(v) <= len(truth["ids"]) for v in got), got


# ------------------------------------------------------- charges for nothing

def _spent(client: Hijacked) -> str:
    client.send(Query("SHOW pgshroud.budget"))
    got = values(client.until_ready())
    assert got, "SHOW pgshroud.budget gave no row"
    return got[0].split(" epsilon left")[0]


@pytest.mark.parametrize("drop", ["sync", "close all"])
def test_no_charge_for_a_portal_postgres_already_dropped(analyst, drop):
    """A named portal ends with its transaction (or with CLOSE ALL): an Execute
    of it afterwards gets PostgreSQL's error and charges no budget (the user's,
    the role's or the dataset's) for no answer."""
    before = _spent(analyst)
    if drop == "sync":
        analyst.send(Parse("s", PRIVATE_QUERY, ()), Bind("p", "s", (), (), ()), Sync())
        assert not errors(analyst.until_ready())
        analyst.send(Execute("p", 0), Sync())
    else:
        analyst.send(Query("BEGIN"))
        analyst.until_ready()
        analyst.send(Parse("s", PRIVATE_QUERY, ()), Bind("p", "s", (), (), ()), Sync())
        assert not errors(analyst.until_ready())
        analyst.send(Query("CLOSE ALL"))
        analyst.until_ready()
        analyst.send(Execute("p", 0), Sync())
    got = analyst.until_ready()
    if drop != "sync":
        analyst.send(Query("ROLLBACK"))
        analyst.until_ready()
    assert errors(got), got
    after = _spent(analyst)
    assert after == before, f"charged for an Execute of a portal that no longer exists: {before} -> {after}"


def test_failed_release_does_not_keep_its_answer_claim(cached_proxy):
    """A private Execute whose upstream run fails gives up its answer cache
    claim: another session of the user asking the same question is answered
    without waiting the whole claim wait (2 s)."""
    sql = PRIVATE_QUERY + " ORDER BY 1 DESC"
    analyst = Hijacked(cached_proxy, "analyst")
    analyst.send(Parse("s", sql, ()), Bind("p", "s", (), (), ()), Sync())
    assert not errors(analyst.until_ready())
    analyst.send(Execute("p", 0), Sync())
    assert errors(analyst.until_ready())
    import time
    with psycopg.connect(cached_proxy.dsn("analyst", "health"), autocommit=True) as other:
        started = time.monotonic()
        other.execute(sql).fetchall()
        took = time.monotonic() - started
    analyst.close()
    assert took < 1.0, f"another session waited {took:.2f}s for a claim that a failed release never ended"


def test_no_charge_for_a_private_query_postgres_skips(analyst):
    """An extended batch fails upstream (a Bind value its type cannot read) and
    the client pipelines a simple Query with a private answer before the Sync:
    PostgreSQL ignores that Query until Sync, so nothing is charged for it."""
    before = _spent(analyst)
    analyst.send(Parse("", "SELECT $1::int4 AS x FROM diagnoses", ()), Bind("", "", (), (b"nope",), ()),
                 Execute("", 0), Flush(), Query("SELECT sex, count(*) FROM patients GROUP BY sex"))
    analyst.raw.read_error()
    analyst.send(Sync())
    got = analyst.until_ready()
    assert not values(got), got
    after = _spent(analyst)
    assert after == before, f"charged for a Query PostgreSQL never ran: {before} -> {after}"


def test_upstream_check_sync_inside_a_failed_batch(analyst, truth):
    """An extended batch fails upstream (no Sync yet), a plain Query follows,
    then a private Query and a refused one: the batch is open until Sync, so
    pgshroud sends no check of its own with a Sync (which would end
    PostgreSQL's skipping early), charges nothing for Queries PostgreSQL
    ignores, and the client sees what PostgreSQL would send, then the session
    goes on."""
    analyst.raw.sock.settimeout(5)
    analyst.send(Parse("", "SELECT $1::int4 AS x FROM diagnoses", ()), Bind("", "", (), (b"nope",), ()),
                 Execute("", 0), Flush(), Query("SELECT 1"), Query("SELECT sex, count(*) FROM patients GROUP BY sex"),
                 Query("SELECT name, ssn FROM patients LIMIT 2"), Sync())
    seen: list = []
    try:
        while True:
            message = analyst.raw.read()
            seen.append(message)
            if isinstance(message, ReadyForQuery):
                break
    except TimeoutError:
        pytest.fail(f"the session stopped answering after {[type(m).__name__ for m in seen]}")
    # As PostgreSQL answers it: the Bind's error, then nothing until the Sync's ReadyForQuery.
    assert [type(m).__name__ for m in seen] == ["ParseComplete", "ErrorResponse", "ReadyForQuery"], seen
    assert not (set(values(seen)) & (truth["ssns"] | truth["names"])), seen
    analyst.send(Query("SELECT 1"))
    assert "1" in values(analyst.until_ready())


def test_hung_sessions_do_not_keep_upstream_connections(proxy, health_db):
    """Sessions that went through the failed batch above end with their
    clients: no PostgreSQL connection is left behind (else, repeated, one
    analyst could use up max_connections for everyone)."""
    import time

    def analyst_backends() -> int:
        with psycopg.connect(health_db, autocommit=True) as admin:
            return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'analyst'").fetchone()[0]

    before = analyst_backends()
    for _ in range(3):
        client = Hijacked(proxy, "analyst")
        client.send(Parse("", "SELECT $1::int4 AS x FROM diagnoses", ()), Bind("", "", (), (b"nope",), ()),
                    Execute("", 0), Flush(), Query("SELECT 1"),
                    Query("SELECT sex, count(*) FROM patients GROUP BY sex"), Sync())
        time.sleep(0.5)
        client.close()
    deadline = time.monotonic() + 10
    while analyst_backends() > before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert analyst_backends() <= before, "closed clients left their sessions' PostgreSQL connections open"
