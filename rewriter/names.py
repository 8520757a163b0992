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
import re

from sqlglot.tokenizer_core import Token, TokenType

# PostgreSQL truncates names to NAMEDATALEN - 1 bytes, at a character boundary.
MAX_NAME_BYTES = 63
# Every translated name is this prefix and 40 hex digits; pgshroud's own
# names (such as the session's "pgshroud_cached_answer") never are.
_PREFIX = "pgshroud_u"
_TRANSLATED = re.compile(_PREFIX + "[0-9a-f]{40}")
# Translated names back to the client's, for PostgreSQL's messages that
# quote them ('cursor "c" does not exist'). A translation is the same for
# every session, so one table serves all; it is cleared when it grows large.
_CLIENT_NAMES: dict[str, str] = {}
_MAX_REMEMBERED = 65536


def upstream_name(name: str) -> str:
    """The name a client's statement, portal or cursor has upstream ("" stays unnamed)."""
    if not name:
        return ""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > MAX_NAME_BYTES:
        raw = raw[:MAX_NAME_BYTES].decode("utf-8", "ignore").encode("utf-8")
    translated = _PREFIX + hashlib.sha256(raw).hexdigest()[:40]
    if translated not in _CLIENT_NAMES:
        if len(_CLIENT_NAMES) >= _MAX_REMEMBERED:
            _CLIENT_NAMES.clear()
        _CLIENT_NAMES[translated] = raw.decode("utf-8", "surrogateescape")
    return translated


def with_client_names(text: str) -> str:
    """PostgreSQL's text with each translated name as the client wrote it
    (as PostgreSQL would have quoted it); one it no longer remembers stays."""
    return _TRANSLATED.sub(lambda found: _CLIENT_NAMES.get(found[0], found[0]), text)


def sql_name(token: Token) -> str:
    """A name as SQL spells it: folded to lower case unless double-quoted."""
    return token.text if token.token_type == TokenType.IDENTIFIER else token.text.lower()


def quoted_upstream_name(token: Token) -> str:
    """The SQL identifier of a name token's upstream name."""
    return f'"{upstream_name(sql_name(token))}"'
