"""The names of prepared statements, portals and cursors upstream.

PostgreSQL keeps one namespace of prepared statements and one of portals
per session, shared by the protocol (Parse, Bind) and SQL (PREPARE, EXECUTE,
DECLARE, FETCH). pgshroud sends its own SQL under names too: a private
answer's bounded query, the placeholder of a repeated answer. If a client
could name those upstream, SQL EXECUTE or FETCH would run them with no noise
and no charge. So for sessions that do not see raw data every name a client
gives, by protocol or in SQL, is translated into a name of pgshroud's own;
no client name translates into a name pgshroud uses for itself.
"""

from __future__ import annotations

import hashlib

from sqlglot.tokens import Token, TokenType

# PostgreSQL truncates names to NAMEDATALEN - 1 bytes, at a character boundary.
MAX_NAME_BYTES = 63
# Every translated name is this prefix and 40 hex digits; pgshroud's own
# names (such as the session's "pgshroud_cached_answer") never are.
_PREFIX = "pgshroud_u"


def upstream_name(name: str) -> str:
    """The name a client's statement, portal or cursor has upstream ("" stays unnamed)."""
    if not name:
        return ""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > MAX_NAME_BYTES:
        raw = raw[:MAX_NAME_BYTES].decode("utf-8", "ignore").encode("utf-8")
    return _PREFIX + hashlib.sha256(raw).hexdigest()[:40]


def sql_name(token: Token) -> str:
    """A name as SQL spells it: folded to lower case unless double-quoted."""
    return token.text if token.token_type == TokenType.IDENTIFIER else token.text.lower()


def quoted_upstream_name(token: Token) -> str:
    """The SQL identifier of a name token's upstream name."""
    return f'"{upstream_name(sql_name(token))}"'
