"""What the masks need inside PostgreSQL: the `pgshroud` schema.

`pgshroud setup` (proxy/commands/setup.py) runs these statements in one
transaction, in each database pgshroud masks, as the role that is to own the
schema. They are idempotent: a second run changes nothing, and keeps the key.

The schema holds
- `pgshroud.key`, one row: the 16 to 64 byte key of every keyed mask, with its
  HMAC pads. Only the schema's owner (and superusers) can read it.
- `pgshroud.dictionary` and `pgshroud.dictionary_size`: the names and cities
  the fake masks choose from, loaded from this package's `data/*.txt`.
- `pgshroud.budget_ledger`, the privacy budget ledger (proxy/budget/ledger.py):
  append-only rows of kind 'charge' (a private answer's cost, with the user
  and the role it was charged to), 'grant' (budget added to a user, a role
  or the dataset) and 'reset' (that scope's earlier rows no longer count).
  Epsilon, delta and a charge's rho (its zCDP cost, for budgets.composition
  zcdp) are numeric, so sums are exact. UPDATE, DELETE and
  TRUNCATE are revoked from everyone, the owner included: a correction is a
  new row. `pgshroud.budget_lock` holds one row per user, role and the
  dataset ('dataset', ''), which a charge locks (SELECT ... FOR UPDATE)
  before it compares and appends, with that scope's running totals since
  its last reset (kept by the charges, grants and resets that lock the row,
  and recomputed from the ledger when pgshroud is not sure of them). Both
  are the owner's only.
- when setup runs as a superuser (CREATE EVENT TRIGGER needs one): the
  event triggers `pgshroud_catalog_ddl` (ddl_command_end) and
  `pgshroud_catalog_drop` (sql_drop), whose function bumps the sequence
  `pgshroud.catalog_version` and sends its value on the channel
  `pgshroud_catalog` at every schema change outside temporary schemas, so
  that pgshroud reads its catalog snapshot again as soon as the change
  commits (proxy/ops/catalog.py). Without them it does so only on an interval.
- the functions the keyed masks call (see policies/masks.py), all taking the
  value as text and a salt:
    pseudonym_text(value, salt, hex_digits) -> text 'p_' || hex digits
    pseudonym_bigint(value, salt, top)      -> bigint in 1 .. top
    pseudonym_uuid(value, salt)             -> uuid (version 4 layout)
    noise_fraction(value, salt)             -> double precision in [-1, 1]
    noise_offset(value, salt, max_abs)      -> bigint in -max_abs .. max_abs
    fake(dictionary, value, salt)           -> text, an entry of the dictionary
  Each is SECURITY DEFINER with `SET search_path = pg_catalog, pg_temp`,
  STABLE, PARALLEL SAFE and STRICT, and raises no error on any input: without
  a key or a dictionary it returns NULL.

Keyed hashing is HMAC-SHA256 built from PostgreSQL's own sha256() (11 and
later), so no extension is needed:
    HMAC(key, msg) = sha256((key xor opad) || sha256((key xor ipad) || msg))
with the two padded keys computed once, by `key_row`, and stored beside the
key. The message is
    purpose ':' char_length(salt) ':' salt ':' value
in the database encoding, where purpose is 'pseudonym', 'noise', 'shift' or
'fake:<dictionary>', so that no two uses of the key can give the same hash.

Who may call them: EXECUTE is revoked from PUBLIC and granted to the NOLOGIN
role `pgshroud_masked`, which setup creates; the roles that masked users log
in as must be members of it (`pgshroud setup --grant-to`). The rewriter
refuses statements that name the pgshroud schema, so through pgshroud these
functions run only inside masks. A member that can also connect to
PostgreSQL directly can call them on values of its choosing (and so test
guesses against pseudonyms), so masked users must reach PostgreSQL only
through pgshroud (pg_hba.conf) — as they must anyway, since directly they
read the raw tables.

The key never appears in statement text or bind parameters, which
log_statement and pg_stat_activity could show: the caller COPYs it into the
temporary table `pg_temp.pgshroud_key_in` (`KEY_STAGING_DDL`, `KEY_COPY`)
before running `setup_statements`, whose last statement moves it into
`pgshroud.key`.
"""

from __future__ import annotations

import hashlib
from importlib import resources

SCHEMA = "pgshroud"
MASKED_ROLE = "pgshroud_masked"

KEY_STAGING_DDL = (
    "CREATE TEMP TABLE pgshroud_key_in (key bytea NOT NULL, inner_pad bytea NOT NULL, "
    "outer_pad bytea NOT NULL) ON COMMIT DROP"
)
KEY_COPY = "COPY pg_temp.pgshroud_key_in (key, inner_pad, outer_pad) FROM STDIN"
# After setup_statements: does the stored key equal the one given, where did
# it come from, since when. No row: no key could be stored.
KEY_STATUS = (
    "SELECT k.key = s.key, k.origin, k.stored_at FROM pgshroud.key AS k "
    "CROSS JOIN pg_temp.pgshroud_key_in AS s WHERE k.id = 1"
)
# Before setup_statements: is a key table there, and if so does its key
# equal the one given (no row: no key stored yet).
KEY_TABLE_EXISTS = "SELECT pg_catalog.to_regclass('pgshroud.key') IS NOT NULL"
KEY_MATCHES = (
    "SELECT k.key = s.key FROM pgshroud.key AS k CROSS JOIN pg_temp.pgshroud_key_in AS s WHERE k.id = 1"
)

KEY_MIN_BYTES = 16
_BLOCK = 64  # SHA-256's block size: longer keys are hashed first (RFC 2104)

# The functions masked sessions call, as GRANT names them.
MASK_FUNCTIONS = (
    f"{SCHEMA}.pseudonym_text(text, text, integer)",
    f"{SCHEMA}.pseudonym_bigint(text, text, bigint)",
    f"{SCHEMA}.pseudonym_uuid(text, text)",
    f"{SCHEMA}.noise_fraction(text, text)",
    f"{SCHEMA}.noise_offset(text, text, bigint)",
    f"{SCHEMA}.fake(text, text, text)",
)


def normalize_key(key: bytes) -> bytes:
    """The key as HMAC uses it: keys longer than a block are hashed first."""
    if len(key) < KEY_MIN_BYTES:
        raise ValueError(f"a pgshroud key has at least {KEY_MIN_BYTES} bytes, this one {len(key)}")
    return hashlib.sha256(key).digest() if len(key) > _BLOCK else key


def key_row(key: bytes) -> tuple[bytes, bytes, bytes]:
    """The row to COPY into pgshroud_key_in: the key and its inner and outer HMAC pads."""
    key = normalize_key(key)
    padded = key.ljust(_BLOCK, b"\x00")
    return key, bytes(byte ^ 0x36 for byte in padded), bytes(byte ^ 0x5C for byte in padded)


def quote_ident(name: str) -> str:
    """A SQL identifier for `name`, exactly as spelled."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ValueError(f"not a role name: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    if "\x00" in text or "\\" in text:
        raise ValueError(f"unexpected character in {text!r}")
    return "'" + text.replace("'", "''") + "'"


def dictionaries() -> dict[str, list[str]]:
    """The fake masks' dictionaries shipped in data/: name -> entries, in order."""
    found: dict[str, list[str]] = {}
    for entry in sorted(resources.files("pgshroud.policies").joinpath("data").iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".txt"):
            continue
        values: list[str] = []
        for line in entry.read_text(encoding="utf-8").splitlines():
            value = line.strip()
            if value and not value.startswith("#") and value not in values:
                values.append(value)
        found[entry.name[: -len(".txt")]] = values
    return found


_SCHEMA_DDL = [
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    # A schema someone else owns (created before setup, perhaps to plant
    # objects in it) is not taken over.
    f"""DO $do$
DECLARE
    owner name;
BEGIN
    SELECT pg_catalog.pg_get_userbyid(nspowner) INTO owner
    FROM pg_catalog.pg_namespace WHERE nspname = '{SCHEMA}';
    IF owner <> current_user THEN
        RAISE EXCEPTION USING
            MESSAGE = 'schema {SCHEMA} belongs to role ' || owner || ', not to ' || current_user,
            HINT = 'Run pgshroud setup as ' || owner || ', or have the schema''s owner changed.';
    END IF;
END
$do$""",
    (f"COMMENT ON SCHEMA {SCHEMA} IS 'pgshroud: the key and functions of its masks, and the privacy budget ledger "
    f"(pgshroud setup)'"),
    f"""DO $do$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{MASKED_ROLE}') THEN
        CREATE ROLE {MASKED_ROLE} NOLOGIN;
    END IF;
END
$do$""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.key (
    id integer PRIMARY KEY CHECK (id = 1),
    key bytea NOT NULL CHECK (octet_length(key) BETWEEN {KEY_MIN_BYTES} AND {_BLOCK}),
    inner_pad bytea NOT NULL CHECK (octet_length(inner_pad) = {_BLOCK}),
    outer_pad bytea NOT NULL CHECK (octet_length(outer_pad) = {_BLOCK}),
    origin text NOT NULL CHECK (origin IN ('generated', 'given')),
    stored_at timestamptz NOT NULL DEFAULT now()
)""",
    (f"COMMENT ON TABLE {SCHEMA}.key IS 'The key of pgshroud''s pseudonyms, noise and fakes. Changing it changes "
    f"every masked value; readable by the schema owner only.'"),
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.dictionary (
    name text NOT NULL,
    position integer NOT NULL CHECK (position >= 0),
    entry text NOT NULL,
    PRIMARY KEY (name, position)
)""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.dictionary_size (
    name text PRIMARY KEY,
    size integer NOT NULL CHECK (size >= 0)
)""",
]

# Who may be charged what is pgshroud's business alone: no grants, and the
# ledger is append-only even for its owner (superusers aside).
_LEDGER_DDL = [
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.budget_ledger (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind text NOT NULL CHECK (kind IN ('charge', 'grant', 'reset')),
    user_name text,
    role_name text,
    epsilon numeric NOT NULL CHECK (epsilon >= 0 AND epsilon <> 'NaN'),
    delta numeric NOT NULL CHECK (delta >= 0 AND delta <= 1),
    note text,
    -- A charge names its user (and the role it counted against, if any), or
    -- the user '' (no PostgreSQL user has that name) for the shared account of
    -- a role whose users share answers; a grant or reset names a user, or a
    -- role, or neither (the dataset).
    CHECK (CASE WHEN kind = 'charge' THEN user_name IS NOT NULL ELSE user_name IS NULL OR role_name IS NULL END),
    CHECK (kind <> 'reset' OR (epsilon = 0 AND delta = 0))
)""",
    # For rolling periods (and recomputing a scope's totals): a scope's rows by time.
    # A charge's rho, for budgets.composition zcdp (NULL on grants and resets,
    # and on charges made before the column existed, which count as
    # epsilon^2/2). Added to databases set up before it, so they upgrade.
    f"""ALTER TABLE {SCHEMA}.budget_ledger
    ADD COLUMN IF NOT EXISTS rho numeric CHECK (rho IS NULL OR (rho >= 0 AND rho <> 'NaN'))""",
    (f"CREATE INDEX IF NOT EXISTS budget_ledger_user ON {SCHEMA}.budget_ledger (user_name, recorded_at) "
    f"WHERE user_name IS NOT NULL"),
    (f"CREATE INDEX IF NOT EXISTS budget_ledger_role ON {SCHEMA}.budget_ledger (role_name, recorded_at) "
    f"WHERE role_name IS NOT NULL"),
    f"CREATE INDEX IF NOT EXISTS budget_ledger_time ON {SCHEMA}.budget_ledger (recorded_at)",
    (f"COMMENT ON TABLE {SCHEMA}.budget_ledger IS 'pgshroud''s privacy budget ledger: every charge, grant and "
    f"reset, appended, never changed'"),
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.budget_lock (
    scope text NOT NULL CHECK (scope IN ('user', 'role', 'dataset')),
    name text NOT NULL CHECK (scope <> 'dataset' OR name = ''),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, name)
)""",
    # The scope's totals since its last reset (reset_id, 0 for none), in
    # budget_ledger's terms; a charge reads them under the row's lock.
    f"""ALTER TABLE {SCHEMA}.budget_lock
    ADD COLUMN IF NOT EXISTS spent_epsilon numeric NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS spent_delta numeric NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS granted_epsilon numeric NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS granted_delta numeric NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS reset_id bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS spent_rho numeric NOT NULL DEFAULT 0""",
    (f"COMMENT ON TABLE {SCHEMA}.budget_lock IS 'pgshroud: the rows a budget charge locks, one per user, role and "
    f"the dataset, with that scope''s totals since its last reset'"),
]

LEDGER_TABLES = (f"{SCHEMA}.budget_ledger", f"{SCHEMA}.budget_lock")

_DEFINER = "SECURITY DEFINER SET search_path = pg_catalog, pg_temp"


def _hmac(purpose: str) -> str:
    """HMAC-SHA256 of (purpose, salt, value) under the key row `k`, in a function's body."""
    return (
        "sha256(k.outer_pad || sha256(k.inner_pad || convert_to("
        f"{purpose} || ':' || CAST(char_length(salt) AS text) || ':' || salt || ':' || value, "
        "getdatabaseencoding())))"
    )


def _u63(hash_sql: str) -> str:
    """The first 8 bytes of a hash as a bigint in 0 .. 2^63-1."""
    return f"(CAST(CAST('x' || encode(substr({hash_sql}, 1, 8), 'hex') AS bit(64)) AS bigint) & 9223372036854775807)"


def _function(signature: str, returns: str, body: str) -> str:
    # One level of SQL function per call: a nested call per row costs several
    # times the hash.
    return (
        f"CREATE OR REPLACE FUNCTION {SCHEMA}.{signature} RETURNS {returns}\n"
        f"LANGUAGE sql STABLE STRICT PARALLEL SAFE {_DEFINER}\n"
        f"AS $fn$\n{body}\n$fn$"
    )


_KEY_ROW = f"FROM {SCHEMA}.key AS k WHERE k.id = 1"
_PSEUDONYM = _hmac("'pseudonym'")
_NOISE = _hmac("'noise'")
_SHIFT = _hmac("'shift'")
_FAKE = _hmac("'fake:' || s.name")

_FUNCTIONS = [
    _function(
        "pseudonym_text(value text, salt text, hex_digits integer)", "text",
        f"SELECT 'p_' || left(encode({_PSEUDONYM}, 'hex'), least(greatest(hex_digits, 1), 64))\n{_KEY_ROW}",
    ),
    _function(
        "pseudonym_bigint(value text, salt text, top bigint)", "bigint",
        f"SELECT mod({_u63(_PSEUDONYM)}, greatest(top, 1)) + 1\n{_KEY_ROW}",
    ),
    # A version 4 layout, as a generated uuid has.
    _function(
        "pseudonym_uuid(value text, salt text)", "uuid",
        "SELECT CAST(encode(set_byte(set_byte(h, 6, (get_byte(h, 6) & 15) | 64), 8, (get_byte(h, 8) & 63) | 128), "
        f"'hex') AS uuid)\nFROM (SELECT substr({_PSEUDONYM}, 1, 16) AS h {_KEY_ROW}) AS hashed",
    ),
    # 53 bits, so that every fraction is exact in double precision.
    _function(
        "noise_fraction(value text, salt text)", "double precision",
        f"SELECT CAST({_u63(_NOISE)} >> 10 AS double precision)\n"
        f"       / CAST(9007199254740991 AS double precision) * 2 - 1\n{_KEY_ROW}",
    ),
    _function(
        "noise_offset(value text, salt text, max_abs bigint)", "bigint",
        f"SELECT mod({_u63(_SHIFT)}, 2 * m + 1) - m\n"
        f"FROM (SELECT least(greatest(max_abs, 0), 1000000000) AS m) AS bounded, {SCHEMA}.key AS k\n"
        "WHERE k.id = 1",
    ),
    # The position is computed once, then looked up by primary key.
    _function(
        "fake(dictionary text, value text, salt text)", "text",
        f"SELECT d.entry\nFROM (SELECT s.name, mod({_u63(_FAKE)}, s.size) AS position\n"
        f"      FROM {SCHEMA}.dictionary_size AS s, {SCHEMA}.key AS k\n"
        "      WHERE s.name = dictionary AND s.size > 0 AND k.id = 1 OFFSET 0) AS picked\n"
        f"JOIN {SCHEMA}.dictionary AS d ON d.name = picked.name AND d.position = picked.position",
    ),
]

_PRIVILEGES = [
    f"REVOKE ALL ON SCHEMA {SCHEMA} FROM PUBLIC",
    f"GRANT USAGE ON SCHEMA {SCHEMA} TO {MASKED_ROLE}",
    f"REVOKE ALL ON TABLE {SCHEMA}.key, {SCHEMA}.dictionary, {SCHEMA}.dictionary_size FROM PUBLIC, {MASKED_ROLE}",
    f"REVOKE ALL ON TABLE {', '.join(LEDGER_TABLES)} FROM PUBLIC, {MASKED_ROLE}",
    f"REVOKE UPDATE, DELETE, TRUNCATE ON TABLE {SCHEMA}.budget_ledger FROM CURRENT_USER",
    f"REVOKE ALL ON FUNCTION {', '.join(MASK_FUNCTIONS)} FROM PUBLIC",
    f"GRANT EXECUTE ON FUNCTION {', '.join(MASK_FUNCTIONS)} TO {MASKED_ROLE}",
]


CATALOG_CHANNEL = "pgshroud_catalog"
CATALOG_SEQUENCE = f"{SCHEMA}.catalog_version"
CATALOG_TRIGGERS = {"pgshroud_catalog_ddl": "ddl_command_end", "pgshroud_catalog_drop": "sql_drop"}

# Every command, not a list of the tags that matter today: a command kind
# left off the list would be a change pgshroud never hears of. Only
# commands on temporary objects alone are skipped (other sessions cannot
# use them, and ETL jobs make many). A DROP is told by sql_drop, which
# knows whether what it drops is temporary. SECURITY DEFINER, since the
# role running the DDL may not use the pgshroud schema; an error here would
# fail every DDL statement, so the body only reads and notifies.
_CATALOG_FUNCTION = f"""CREATE OR REPLACE FUNCTION {SCHEMA}.catalog_changed() RETURNS event_trigger
LANGUAGE plpgsql {_DEFINER}
AS $fn$
BEGIN
    IF TG_EVENT = 'sql_drop' THEN
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_event_trigger_dropped_objects() AS d WHERE NOT d.is_temporary) THEN
            RETURN;
        END IF;
    ELSIF pg_catalog.starts_with(TG_TAG, 'DROP ') THEN
        RETURN;
    ELSIF EXISTS (SELECT FROM pg_catalog.pg_event_trigger_ddl_commands())
          AND NOT EXISTS (SELECT FROM pg_catalog.pg_event_trigger_ddl_commands() AS c
                          WHERE c.schema_name IS DISTINCT FROM 'pg_temp') THEN
        RETURN;
    END IF;
    PERFORM pg_catalog.pg_notify('{CATALOG_CHANNEL}', pg_catalog.nextval('{CATALOG_SEQUENCE}')::text);
END
$fn$"""


def catalog_trigger_statements() -> list[str]:
    """The event triggers that tell pgshroud of schema changes; a superuser's
    to run, after setup_statements, idempotently. ENABLE ALWAYS: they fire
    under session_replication_role = replica too."""
    statements = [
        f"CREATE SEQUENCE IF NOT EXISTS {CATALOG_SEQUENCE}",
        f"REVOKE ALL ON SEQUENCE {CATALOG_SEQUENCE} FROM PUBLIC",
        _CATALOG_FUNCTION,
        f"REVOKE ALL ON FUNCTION {SCHEMA}.catalog_changed() FROM PUBLIC",
    ]
    for name, event in CATALOG_TRIGGERS.items():
        statements += [
            f"""DO $do$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_event_trigger WHERE evtname = '{name}') THEN
        CREATE EVENT TRIGGER {name} ON {event} EXECUTE FUNCTION {SCHEMA}.catalog_changed();
    END IF;
END
$do$""",
            f"ALTER EVENT TRIGGER {name} ENABLE ALWAYS",
        ]
    return statements


def _dictionary_statements() -> list[str]:
    statements = []
    for name, values in dictionaries().items():
        rows = ", ".join(f"({_literal(name)}, {position}, {_literal(value)})" for position, value in enumerate(values))
        statements += [
            (f"INSERT INTO {SCHEMA}.dictionary (name, position, entry) VALUES {rows} "
            f"ON CONFLICT (name, position) DO UPDATE SET entry = EXCLUDED.entry "
            f"WHERE {SCHEMA}.dictionary.entry IS DISTINCT FROM EXCLUDED.entry"),
            f"DELETE FROM {SCHEMA}.dictionary WHERE name = {_literal(name)} AND position >= {len(values)}",
            (f"INSERT INTO {SCHEMA}.dictionary_size (name, size) VALUES ({_literal(name)}, {len(values)}) "
            f"ON CONFLICT (name) DO UPDATE SET size = EXCLUDED.size "
            f"WHERE {SCHEMA}.dictionary_size.size IS DISTINCT FROM EXCLUDED.size"),
        ]
    return statements


def _key_statement(key_ref_given: bool, rotate_key: bool) -> str:
    origin = "given" if key_ref_given else "generated"
    statement = (
        f"INSERT INTO {SCHEMA}.key (id, key, inner_pad, outer_pad, origin) "
        f"SELECT 1, key, inner_pad, outer_pad, '{origin}' FROM pg_temp.pgshroud_key_in "
    )
    if rotate_key:
        return statement + (
            "ON CONFLICT (id) DO UPDATE SET key = EXCLUDED.key, inner_pad = EXCLUDED.inner_pad, "
            "outer_pad = EXCLUDED.outer_pad, origin = EXCLUDED.origin, stored_at = now()"
        )
    # A stored key is never replaced silently.
    return statement + "ON CONFLICT (id) DO NOTHING"


def setup_statements(key_ref_given: bool, rotate_key: bool = False) -> list[str]:
    """The DDL, dictionaries, privileges and key of the pgshroud schema, in order.

    Run them in one transaction, after KEY_STAGING_DDL and KEY_COPY have put
    the key row (`key_row`) in pg_temp.pgshroud_key_in. The last statement
    stores that key if none is stored yet; with `rotate_key`, it replaces the
    stored one. `key_ref_given` says whether the key came from the
    administrator (recorded as origin 'given') or was generated by setup
    ('generated'); whether a given key differs from a stored one is for the
    caller to check, with KEY_MATCHES and KEY_STATUS. The statements hold no
    key material and no '%', so they run with or without client-side
    parameter substitution.
    """
    return [
        *_SCHEMA_DDL,
        *_LEDGER_DDL,
        *_FUNCTIONS,
        *_PRIVILEGES,
        *_dictionary_statements(),
        _key_statement(key_ref_given, rotate_key),
    ]


def grant_statements(roles: list[str]) -> list[str]:
    """Make each role (an exact role name) a member of pgshroud_masked."""
    return [f"GRANT {MASKED_ROLE} TO {quote_ident(role)}" for role in roles]
