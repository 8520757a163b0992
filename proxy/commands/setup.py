"""`pgshroud setup`: create the pgshroud schema, its functions, its key and the budget ledger in a database.

It connects with the DSN's own credentials, as the role that is to own the
schema, and runs policies.setup_sql's statements in one transaction: all or
nothing. Running it again changes nothing and keeps the key. Run by a
superuser, it also installs the event triggers that tell pgshroud of schema
changes as they commit; otherwise it says that pgshroud will learn of them
only at its periodic catalog refresh.

The key: without --key-env/--key-file, a random 32-byte key is generated
(secrets.token_bytes) the first time and kept afterwards. A key given by
reference (an environment variable or a file holding it in hex or base64) is
stored if none is; if a different key is stored already, setup refuses unless
--rotate-key is given, since changing the key changes every pseudonym, noise
value and fake. The key travels to PostgreSQL in a COPY, never in statement
text or bind parameters, and is never printed.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Any, TextIO

import psycopg

from pgshroud.policies.setup_sql import (
    CATALOG_CHANNEL,
    CATALOG_TRIGGERS,
    KEY_COPY,
    KEY_MATCHES,
    KEY_MIN_BYTES,
    KEY_STAGING_DDL,
    KEY_STATUS,
    KEY_TABLE_EXISTS,
    LEDGER_TABLES,
    MASK_FUNCTIONS,
    MASKED_ROLE,
    SCHEMA,
    catalog_trigger_statements,
    dictionaries,
    grant_statements,
    key_row,
    setup_statements,
)

# What a setup without superuser leaves open ({user}: the role it ran as).
NO_TRIGGER_LINE = (
    "  schema changes: NOT notified: {user} is not a superuser, which CREATE EVENT TRIGGER needs. pgshroud "
    "then reads its catalog snapshot only on its interval (10 s), and for that long a function, operator, type or "
    "cast just created is unknown to it and can run in masked and aggregate users' statements. Have a superuser "
    "run pgshroud setup to install the triggers"
)


class SetupError(Exception):
    """Setup cannot go on; the message says why and what to do."""


def decode_key(text: str, source: str) -> bytes:
    """A key written in hex (only 0-9a-f) or else base64 (standard or URL-safe); whitespace is ignored."""
    compact = re.sub(r"\s+", "", text)
    if not compact:
        raise SetupError(f"{source} is empty")
    if re.fullmatch(r"[0-9a-fA-F]+", compact) and len(compact) % 2 == 0:
        key = bytes.fromhex(compact)
    else:
        try:
            alphabet = b"-_" if re.search(r"[-_]", compact) else None
            key = base64.b64decode(compact + "=" * (-len(compact) % 4), altchars=alphabet, validate=True)
        except (binascii.Error, ValueError):
            raise SetupError(f"{source} is neither hex nor base64") from None
    if len(key) < KEY_MIN_BYTES:
        raise SetupError(f"{source} holds {len(key)} bytes; a pgshroud key needs at least {KEY_MIN_BYTES} "
                         f"(generate one with: python -c 'import secrets; print(secrets.token_hex(32))')")
    return key


def load_key(*, key_env: str | None, key_file: str | None) -> bytes | None:
    """The key given by reference, or None when none is."""
    if key_env and key_file:
        raise SetupError("give --key-env or --key-file, not both")
    if key_env:
        value = os.environ.get(key_env)
        if value is None:
            raise SetupError(f"environment variable {key_env} is not set")
        return decode_key(value, f"environment variable {key_env}")
    if key_file:
        try:
            content = Path(key_file).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise SetupError(f"cannot read key file {key_file}: {exc}") from None
        return decode_key(content, f"key file {key_file}")
    return None


def parse_grant_to(text: str | None) -> list[str]:
    """`--grant-to alice,bob` -> ['alice', 'bob']."""
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def run_setup(
    upstream_dsn: str,
    *,
    key_env: str | None,
    key_file: str | None,
    rotate_key: bool,
    grant_to: list[str],
    out: TextIO | None = None,
) -> int:
    """Set up the pgshroud schema in the DSN's database. 0: done; 1: refused or failed; 2: bad arguments."""
    out = out or sys.stdout
    try:
        given = load_key(key_env=key_env, key_file=key_file)
        grants = grant_statements(grant_to)
    except (SetupError, ValueError) as exc:
        print(f"pgshroud setup: {exc}", file=sys.stderr)
        return 2
    try:
        with psycopg.connect(upstream_dsn) as conn:
            lines = _setup(conn, given, rotate_key, grants, grant_to)
    except SetupError as exc:
        print(f"pgshroud setup: {exc}; nothing was changed", file=sys.stderr)
        return 1
    except psycopg.Error as exc:
        print(f"pgshroud setup: {_describe(exc)}; nothing was changed", file=sys.stderr)
        return 1
    for line in lines:
        print(line, file=out)
    return 0


def _one_row(cur: psycopg.Cursor[tuple[Any, ...]], sql: str) -> tuple[Any, ...]:
    """The row of a query that always returns exactly one."""
    row = cur.execute(sql).fetchone()
    if row is None:
        raise psycopg.DataError(f"no row from: {sql}")
    return row


def _setup(conn: psycopg.Connection[tuple[Any, ...]], given: bytes | None, rotate_key: bool, grants: list[str],
           grant_to: list[str]) -> list[str]:
    key = given if given is not None else secrets.token_bytes(32)
    cur = conn.cursor()
    database, user, superuser = _one_row(
        cur, "SELECT current_database(), current_user, rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user"
    )
    cur.execute(KEY_STAGING_DDL)
    with cur.copy(KEY_COPY) as copy:
        copy.write_row(key_row(key))
    del key
    same_before = None
    if _one_row(cur, KEY_TABLE_EXISTS)[0]:
        row = cur.execute(KEY_MATCHES).fetchone()
        same_before = row[0] if row else None
    for statement in setup_statements(given is not None, rotate_key):
        cur.execute(statement)
    if superuser:
        for statement in catalog_trigger_statements():
            cur.execute(statement)
    for statement in grants:
        cur.execute(statement)
    status = cur.execute(KEY_STATUS).fetchone()
    if status is None:
        raise SetupError(f"no key is stored in {SCHEMA}.key")
    same_now, origin, stored_at = status
    if given is not None and not same_now:
        conn.rollback()
        raise SetupError(
            f"a different key is already stored in {SCHEMA}.key (since {stored_at:%Y-%m-%d %H:%M %Z}); "
            f"pass --rotate-key to replace it, which changes every pseudonym, noise value and fake"
        )
    conn.commit()

    if same_before is None:
        key_line = "stored the given key" if given is not None else "generated a random 32-byte key and stored it"
    elif rotate_key and not same_before:
        key_line = ("replaced the stored key with the given one" if given is not None
                    else "replaced the stored key with a new random one")
        key_line += ": every pseudonym, noise value and fake has changed"
    elif given is not None:
        key_line = "the given key is the one already stored"
    else:
        key_line = f"kept the stored key ({origin}, since {stored_at:%Y-%m-%d %H:%M %Z})"
    sizes = ", ".join(f"{name} ({len(values)})" for name, values in dictionaries().items())
    functions = ", ".join(function.split("(")[0] for function in MASK_FUNCTIONS)
    lines = [
        f'pgshroud setup: database "{database}", as "{user}"',
        f"  schema {SCHEMA}: ready, owned by {user}",
        f"  functions: {functions}; EXECUTE granted to {MASKED_ROLE} only",
        f"  dictionaries: {sizes}",
        f"  key: {key_line}; readable by {user} (and superusers) only",
        f"  privacy budget ledger: {', '.join(LEDGER_TABLES)}; {user}'s only, and append-only",
    ]
    if superuser:
        lines.append(f"  schema changes: event triggers {', '.join(CATALOG_TRIGGERS)} notify pgshroud on channel "
                     f"{CATALOG_CHANNEL}, which reads its catalog snapshot again as each change commits")
    else:
        lines.append(NO_TRIGGER_LINE.format(user=user))
    if grant_to:
        lines.append(f"  granted {MASKED_ROLE} to: {', '.join(grant_to)}")
    lines.append(f"  masked users must be members of {MASKED_ROLE} (pgshroud setup --grant-to USER,...)")
    return lines


def _describe(exc: psycopg.Error) -> str:
    diag = getattr(exc, "diag", None)
    message = (diag.message_primary if diag is not None else None) or str(exc).strip()
    hint = diag.message_hint if diag is not None else None
    if isinstance(exc, psycopg.errors.InsufficientPrivilege) and "role" in message:
        hint = hint or (f"setup creates the NOLOGIN role {MASKED_ROLE} and grants it; run it as a role with "
                        f"CREATEROLE, or have a superuser run CREATE ROLE {MASKED_ROLE} NOLOGIN first")
    return f"{message} ({hint})" if hint else message
