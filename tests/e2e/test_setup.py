"""`pgshroud setup`: the pgshroud schema, its privileges and its key, on a real PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Callable, Iterator

import psycopg
import pytest

from pgshroud.policies.setup_sql import (
    CATALOG_CHANNEL,
    CATALOG_TRIGGERS,
    MASK_FUNCTIONS,
    MASKED_ROLE,
    dictionaries,
    grant_statements,
    key_row,
    quote_ident,
    setup_statements,
)
from pgshroud.proxy.commands.pgcluster import ThrowawayCluster
from pgshroud.proxy.commands.setup import SetupError, decode_key, parse_grant_to, run_setup

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))


@pytest.fixture(scope="module")
def databases(pg: ThrowawayCluster) -> Iterator[Callable[..., str]]:
    """Make a fresh database (optionally owned by someone); all are dropped at the end."""
    made: list[str] = []

    def make(name: str, owner: str | None = None) -> str:
        pg.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        pg.execute(f"CREATE DATABASE {name}" + (f" OWNER {owner}" if owner else ""))
        made.append(name)
        return name

    yield make
    for name in made:
        pg.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    pg.execute(f"DO $$ BEGIN DROP ROLE IF EXISTS {MASKED_ROLE}; EXCEPTION WHEN dependent_objects_still_exist THEN "
               "NULL; END $$")


def _setup(dsn: str, *, key_env: str | None = None, key_file: str | None = None, rotate_key: bool = False,
           grant_to: list[str] | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = run_setup(dsn, key_env=key_env, key_file=key_file, rotate_key=rotate_key, grant_to=grant_to or [], out=out)
    return code, out.getvalue()


def _stored_key(pg: ThrowawayCluster, db: str) -> bytes:
    return bytes(pg.execute("SELECT key FROM pgshroud.key", dbname=db)[0][0])


def _pseudonym(pg: ThrowawayCluster, db: str, value: str = "alice") -> str:
    return pg.execute(f"SELECT pgshroud.pseudonym_text('{value}', '', 16)", dbname=db)[0][0]


def test_setup_is_idempotent_and_keeps_its_key(pg: ThrowawayCluster, databases) -> None:
    db = databases("pgshroud_setup_idem")
    code, first = _setup(pg.admin_dsn(db))
    assert code == 0
    assert "generated a random 32-byte key and stored it" in first
    key, pseudonym = _stored_key(pg, db), _pseudonym(pg, db)
    assert len(key) == 32
    code, second = _setup(pg.admin_dsn(db))
    assert code == 0 and "kept the stored key (generated" in second
    assert _stored_key(pg, db) == key and _pseudonym(pg, db) == pseudonym
    sizes = dict(pg.execute("SELECT name, size FROM pgshroud.dictionary_size", dbname=db))
    assert sizes == {name: len(values) for name, values in dictionaries().items()}
    assert pg.execute("SELECT count(*) FROM pgshroud.dictionary", dbname=db)[0][0] == sum(sizes.values())
    assert pg.execute("SELECT origin FROM pgshroud.key", dbname=db)[0][0] == "generated"


def test_functions_are_definer_stable_parallel_safe_and_not_public(pg: ThrowawayCluster, databases) -> None:
    db = databases("pgshroud_setup_fn")
    assert _setup(pg.admin_dsn(db))[0] == 0
    rows = pg.execute(
        "SELECT p.oid::regprocedure::text, prosecdef, provolatile, proparallel, proisstrict, proconfig,"
        " has_function_privilege('public', p.oid, 'EXECUTE'),"
        f" has_function_privilege('{MASKED_ROLE}', p.oid, 'EXECUTE')"
        " FROM pg_proc p WHERE pronamespace = 'pgshroud'::regnamespace AND prorettype <> 'event_trigger'::regtype",
        dbname=db,
    )
    # The event triggers' function runs for them alone.
    assert pg.execute("SELECT has_function_privilege('public', 'pgshroud.catalog_changed()', 'EXECUTE'),"
                      f" has_function_privilege('{MASKED_ROLE}', 'pgshroud.catalog_changed()', 'EXECUTE')",
                      dbname=db) == [(False, False)]
    assert sorted(row[0] for row in rows) == sorted(
        function.replace(", ", ",").replace("integer", "integer") for function in MASK_FUNCTIONS
    )
    for name, definer, volatility, parallel, strict, config, public, masked in rows:
        assert definer and volatility == "s" and parallel == "s" and strict, name
        assert config == ["search_path=pg_catalog, pg_temp"], name
        assert not public and masked, name
    acl = pg.execute("SELECT relname, relacl::text FROM pg_class WHERE relnamespace = 'pgshroud'::regnamespace"
                     " AND relkind = 'r'", dbname=db)
    for name, privileges in acl:
        assert "=" not in (privileges or "").replace("postgres=", ""), (name, privileges)


def test_the_key_is_readable_by_the_owner_only(pg: ThrowawayCluster, databases) -> None:
    db = databases("pgshroud_setup_acl")
    assert _setup(pg.admin_dsn(db), grant_to=["u_scram"])[0] == 0
    try:
        with psycopg.connect(pg.dsn(user="u_scram", dbname=db, password="u_scram"), autocommit=True) as member:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for table key"):
                member.execute("SELECT key FROM pgshroud.key")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                member.execute("SELECT entry FROM pgshroud.dictionary")
            # A member runs the masks' functions, which read the key for it.
            assert member.execute("SELECT pgshroud.pseudonym_text('alice', '', 16)").fetchone()[0] == _pseudonym(
                pg, db)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                member.execute("UPDATE pgshroud.key SET origin = 'given'")
        with psycopg.connect(pg.dsn(user="u_md5", dbname=db, password="u_md5"), autocommit=True) as outsider:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for schema pgshroud"):
                outsider.execute("SELECT key FROM pgshroud.key")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                outsider.execute("SELECT pgshroud.pseudonym_text('alice', '', 16)")
    finally:
        pg.execute(f"REVOKE {MASKED_ROLE} FROM u_scram")


def test_a_key_given_by_reference_is_used(pg: ThrowawayCluster, databases, monkeypatch, tmp_path) -> None:
    from_env = databases("pgshroud_setup_env")
    monkeypatch.setenv("PGSHROUD_KEY", KEY_A.hex())
    code, out = _setup(pg.admin_dsn(from_env), key_env="PGSHROUD_KEY")
    assert code == 0 and "stored the given key" in out
    assert _stored_key(pg, from_env) == KEY_A
    assert pg.execute("SELECT origin FROM pgshroud.key", dbname=from_env)[0][0] == "given"

    from_file = databases("pgshroud_setup_file")
    path = tmp_path / "key"
    path.write_text(base64.b64encode(KEY_A).decode() + "\n")
    assert _setup(pg.admin_dsn(from_file), key_file=str(path))[0] == 0
    assert _stored_key(pg, from_file) == KEY_A
    # The same key, the same pseudonyms, in every database.
    assert _pseudonym(pg, from_env) == _pseudonym(pg, from_file)
    # Giving the stored key again is fine.
    code, out = _setup(pg.admin_dsn(from_file), key_env="PGSHROUD_KEY")
    assert code == 0 and "the given key is the one already stored" in out

    long_key = databases("pgshroud_setup_long")
    monkeypatch.setenv("PGSHROUD_LONG_KEY", (b"k" * 100).hex())
    assert _setup(pg.admin_dsn(long_key), key_env="PGSHROUD_LONG_KEY")[0] == 0
    assert _stored_key(pg, long_key) == hashlib.sha256(b"k" * 100).digest()  # as HMAC uses a long key


def test_a_different_key_is_refused_unless_rotated(pg: ThrowawayCluster, databases, monkeypatch, capsys) -> None:
    db = databases("pgshroud_setup_rotate")
    monkeypatch.setenv("KEY_A", KEY_A.hex())
    monkeypatch.setenv("KEY_B", base64.urlsafe_b64encode(KEY_B).decode().rstrip("="))
    assert _setup(pg.admin_dsn(db), key_env="KEY_A")[0] == 0
    before = _pseudonym(pg, db)
    capsys.readouterr()
    code, out = _setup(pg.admin_dsn(db), key_env="KEY_B", grant_to=["u_scram"])
    assert code == 1 and out == ""
    error = capsys.readouterr().err
    assert "a different key is already stored" in error and "--rotate-key" in error and "nothing was changed" in error
    assert _stored_key(pg, db) == KEY_A and _pseudonym(pg, db) == before
    assert not pg.execute(f"SELECT pg_has_role('u_scram', '{MASKED_ROLE}', 'MEMBER')")[0][0]  # rolled back too
    # A generated key never replaces a stored one either.
    code, out = _setup(pg.admin_dsn(db))
    assert code == 0 and "kept the stored key (given" in out and _stored_key(pg, db) == KEY_A

    code, out = _setup(pg.admin_dsn(db), key_env="KEY_B", rotate_key=True)
    assert code == 0 and "replaced the stored key with the given one" in out
    assert _stored_key(pg, db) == KEY_B
    after = _pseudonym(pg, db)
    assert after != before
    code, out = _setup(pg.admin_dsn(db), rotate_key=True)
    assert code == 0 and "replaced the stored key with a new random one" in out
    assert _stored_key(pg, db) not in (KEY_A, KEY_B) and _pseudonym(pg, db) not in (before, after)


def test_the_key_never_reaches_statement_text_or_the_server_log(pg: ThrowawayCluster, databases,
                                                                monkeypatch) -> None:
    db = databases("pgshroud_setup_log")
    pg.execute(f"ALTER DATABASE {db} SET log_statement = 'all'")
    pg.execute(f"ALTER DATABASE {db} SET log_min_duration_statement = 0")
    secret = bytes(range(200, 232))
    monkeypatch.setenv("PGSHROUD_SECRET", secret.hex())
    assert _setup(pg.admin_dsn(db), key_env="PGSHROUD_SECRET", grant_to=["u_scram"])[0] == 0
    pg.execute(f"REVOKE {MASKED_ROLE} FROM u_scram")
    assert _stored_key(pg, db) == secret
    log = pg.log_tail(10**7)
    assert "COPY pg_temp.pgshroud_key_in" in log  # statement logging was on
    forms = [secret.hex(), base64.b64encode(secret).decode(), *(part.hex() for part in key_row(secret)[1:])]
    for form in forms:
        assert form not in log
        assert form.upper() not in log
    statements = [*setup_statements(True), *setup_statements(True, rotate_key=True), *grant_statements(["u_scram"])]
    for statement in statements:
        for form in forms:
            assert form not in statement
        assert "%" not in statement


def test_functions_give_null_not_errors_without_a_key_or_on_odd_input(pg: ThrowawayCluster, databases) -> None:
    db = databases("pgshroud_setup_odd")
    assert _setup(pg.admin_dsn(db))[0] == 0
    odd = pg.execute(
        "SELECT pgshroud.pseudonym_text('a', '', -5), pgshroud.pseudonym_text('a', '', 1000),"
        " pgshroud.pseudonym_bigint('a', '', 0), pgshroud.pseudonym_bigint('a', '', -9223372036854775808),"
        " pgshroud.noise_offset('a', '', -1), pgshroud.noise_offset('a', '', 9223372036854775807),"
        " pgshroud.fake('no such dictionary', 'a', ''), pgshroud.fake('city', '', repeat('s', 100000)),"
        " pgshroud.pseudonym_text(NULL, '', 16), pgshroud.noise_fraction('a', NULL)",
        dbname=db,
    )[0]
    assert odd[0] == "p_" + odd[1][2:3] and len(odd[1]) == 66
    assert odd[2] == 1 and odd[3] == 1 and odd[4] == 0 and abs(odd[5]) <= 10**9
    assert odd[6] is None and odd[7] is not None and odd[8] is None and odd[9] is None
    with psycopg.connect(pg.admin_dsn(db)) as conn:
        conn.execute("DELETE FROM pgshroud.key")
        assert conn.execute(
            "SELECT pgshroud.pseudonym_text('a', '', 16), pgshroud.pseudonym_bigint('a', '', 10),"
            " pgshroud.pseudonym_uuid('a', ''), pgshroud.noise_fraction('a', ''), pgshroud.noise_offset('a', '', 5),"
            " pgshroud.fake('city', 'a', '')"
        ).fetchone() == (None,) * 6
        conn.rollback()


def test_a_schema_owned_by_someone_else_is_not_taken_over(pg: ThrowawayCluster, databases, capsys) -> None:
    db = databases("pgshroud_setup_owner", owner="app")
    pg.execute(f"DO $$ BEGIN CREATE ROLE {MASKED_ROLE} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    # The database's owner, not a superuser and without CREATEROLE, sets it up for itself.
    code, out = _setup(pg.dsn(user="app", dbname=db, password="app"))
    assert code == 0 and 'as "app"' in out
    assert pg.execute("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'pgshroud'", dbname=db) == [
        ("app",)]
    capsys.readouterr()
    code, _ = _setup(pg.admin_dsn(db))
    assert code == 1
    assert "schema pgshroud belongs to role app, not to postgres" in capsys.readouterr().err


def test_setup_fails_whole_on_an_unknown_role(pg: ThrowawayCluster, databases, capsys) -> None:
    db = databases("pgshroud_setup_norole")
    code, _ = _setup(pg.admin_dsn(db), grant_to=["no_such_user"])
    assert code == 1
    assert 'role "no_such_user" does not exist' in capsys.readouterr().err
    assert pg.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'pgshroud'", dbname=db) == [(0,)]


def test_bad_key_references(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setenv("SHORT_KEY", "00" * 15)
    monkeypatch.setenv("JUNK_KEY", "not a key!")
    monkeypatch.delenv("MISSING_KEY", raising=False)
    for kwargs, message in (
        ({"key_env": "SHORT_KEY"}, "holds 15 bytes; a pgshroud key needs at least 16"),
        ({"key_env": "JUNK_KEY"}, "neither hex nor base64"),
        ({"key_env": "MISSING_KEY"}, "environment variable MISSING_KEY is not set"),
        ({"key_file": str(tmp_path / "absent")}, "cannot read key file"),
        ({"key_env": "SHORT_KEY", "key_file": "x"}, "not both"),
    ):
        # Refused before connecting anywhere.
        code = run_setup("host=/nonexistent dbname=none", rotate_key=False, grant_to=[],
                         **{"key_env": None, "key_file": None, **kwargs})
        assert code == 2
        assert message in capsys.readouterr().err


def test_key_decoding_and_names() -> None:
    assert decode_key(KEY_A.hex().upper(), "k") == KEY_A
    assert decode_key(base64.b64encode(KEY_B).decode(), "k") == KEY_B
    assert decode_key(base64.urlsafe_b64encode(KEY_B).decode().rstrip("="), "k") == KEY_B
    wrapped = base64.encodebytes(bytes(range(64))).decode()  # with line breaks
    assert decode_key(wrapped, "k") == bytes(range(64))
    with pytest.raises(SetupError):
        decode_key("", "k")
    assert parse_grant_to(" alice, bob ,,") == ["alice", "bob"]
    assert parse_grant_to(None) == []
    assert quote_ident('we"ird') == '"we""ird"'
    with pytest.raises(ValueError):
        quote_ident("")
    key, inner, outer = key_row(KEY_A)
    assert key == KEY_A and len(inner) == len(outer) == 64
    assert bytes(a ^ b for a, b in zip(inner, outer)) == bytes([0x36 ^ 0x5C]) * 64


def _notifications(conn: psycopg.Connection) -> list[str]:
    """The payloads on pgshroud's channel that `conn` (LISTENing) has received so far."""
    conn.execute("SELECT 1")  # a round trip: notifications committed before it have arrived
    return [n.payload for n in conn.notifies(timeout=0.2, stop_after=None) if n.channel == CATALOG_CHANNEL]


def test_a_superuser_setup_notifies_schema_changes(pg: ThrowawayCluster, databases) -> None:
    db = databases("pgshroud_setup_notify")
    code, out = _setup(pg.admin_dsn(db))
    assert code == 0
    assert ("schema changes: event triggers pgshroud_catalog_ddl, pgshroud_catalog_drop notify pgshroud on channel "
            "pgshroud_catalog") in out
    assert _setup(pg.admin_dsn(db))[0] == 0  # idempotent
    triggers = pg.execute("SELECT evtname, evtevent, evtenabled FROM pg_event_trigger ORDER BY evtname", dbname=db)
    assert triggers == [(name, event, "A") for name, event in sorted(CATALOG_TRIGGERS.items())]
    pg.execute("GRANT CREATE ON SCHEMA public TO u_scram", dbname=db)
    with psycopg.connect(pg.admin_dsn(db), autocommit=True) as listener, \
            psycopg.connect(pg.dsn(user="u_scram", dbname=db, password="u_scram"), autocommit=True) as creator:
        listener.execute(f"LISTEN {CATALOG_CHANNEL}")
        # A role that may not use the pgshroud schema: its DDL still counts.
        creator.execute("CREATE FUNCTION public.notify_probe(a int, b int) RETURNS int LANGUAGE sql AS 'SELECT a'")
        creator.execute("CREATE OPERATOR public.<~> (LEFTARG = int, RIGHTARG = int, FUNCTION = public.notify_probe)")
        first = _notifications(listener)
        assert len(first) == 2 and int(first[0]) < int(first[1])
        creator.execute("CREATE TEMP TABLE notify_scratch (a serial); ALTER TABLE notify_scratch ADD b int; "
                        "DROP TABLE notify_scratch")
        assert _notifications(listener) == []
        creator.execute("DROP FUNCTION public.notify_probe(int, int) CASCADE")
        dropped = _notifications(listener)
        assert dropped and int(dropped[0]) > int(first[1])
    pg.execute("REVOKE CREATE ON SCHEMA public FROM u_scram", dbname=db)


def test_setup_without_superuser_says_schema_changes_are_not_notified(pg: ThrowawayCluster, databases) -> None:
    db = databases("pgshroud_setup_no_notify", owner="app")
    pg.execute(f"DO $$ BEGIN CREATE ROLE {MASKED_ROLE} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    code, out = _setup(pg.dsn(user="app", dbname=db, password="app"))
    assert code == 0
    assert ("schema changes: NOT notified: app is not a superuser, which CREATE EVENT TRIGGER needs. pgshroud then "
            "reads its catalog snapshot only on its interval (10 s)") in out
    assert pg.execute("SELECT count(*) FROM pg_event_trigger", dbname=db) == [(0,)]
