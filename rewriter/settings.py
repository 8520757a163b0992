"""SET and RESET for sessions that do not see raw data.

The lexical environment the rewriter relies on stays fixed: settings that
change how text is lexed (standard_conforming_strings, backslash_quote, the
client encoding), how names resolve (search_path) or who the session is
(role, session_authorization) cannot change. Everything else that a client
or driver commonly sets is allowed; the rest is refused.
"""

from __future__ import annotations

from sqlglot.tokenizer_core import Token, TokenType

from pgshroud.rewriter.statements import Statement

ALLOWED_SETTINGS = frozenset(
    [
        "application_name", "datestyle", "timezone", "extra_float_digits", "intervalstyle", "statement_timeout",
        "lock_timeout", "idle_in_transaction_session_timeout", "idle_session_timeout", "client_min_messages",
        "bytea_output", "default_transaction_isolation", "default_transaction_read_only",
        "default_transaction_deferrable", "transaction_isolation", "transaction_read_only", "lc_messages",
        "lc_monetary", "lc_numeric", "lc_time", "work_mem", "jit", "geqo", "enable_seqscan", "enable_indexscan",
        "enable_bitmapscan", "enable_hashjoin", "enable_mergejoin", "enable_nestloop", "client_encoding", "xmloption",
        "gin_fuzzy_search_limit", "max_parallel_workers_per_gather",
    ]
)
# Client encodings whose every multibyte character has all bytes >= 0x80,
# so no byte of one can be read as a quote or backslash: text lexes alike
# in pgshroud and on the server. Names as PostgreSQL cleans them (lower
# case, only letters and digits). SJIS, BIG5, GBK, GB18030, JOHAB and UHC
# are not among them.
SAFE_ENCODINGS = frozenset(
    {"utf8", "unicode", "sqlascii", "eucjp", "euccn", "euckr", "euctw", "eucjis2004", "muleinternal",
     "koi8", "koi8r", "koi8u", "alt", "win866", "win874", "tcvn", "tcvn5712", "abc", "vscii"}
    | {f"latin{i}" for i in range(1, 11)}
    | {f"iso8859{i}" for i in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 14, 15, 16)}
    | {f"win{i}" for i in range(1250, 1259)}
    | {f"windows{i}" for i in range(1250, 1259)} | {"windows866", "windows874"}
)


# Settings that turn a statement's running time into an error. Sessions
# that get private answers have them pinned off at startup
# (proxy/wire/startup.py), and may not SET them.
TIMING_SETTINGS = frozenset({"statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout"})
# Settings that change how long a query runs, which such sessions may not
# SET either: they would widen a difference one person makes in it.
TIMING_SHAPERS = frozenset(
    [
        "work_mem", "jit", "geqo", "enable_seqscan", "enable_indexscan", "enable_bitmapscan", "enable_hashjoin",
        "enable_mergejoin", "enable_nestloop", "max_parallel_workers_per_gather", "gin_fuzzy_search_limit",
    ]
)


class SettingRefused(ValueError):
    """A setting a non-raw session may not change; the message names it."""


def check_setting(name: str, value: str | None) -> None:
    name = name.lower()
    if name.startswith("pgshroud."):
        return
    if name == "search_path":
        raise SettingRefused('setting "search_path" cannot be changed through pgshroud: it resolves names with '
                             'search_path '
                             'public (SET search_path = public is allowed); qualify names with their schema instead')
    if name not in ALLOWED_SETTINGS:
        raise SettingRefused(f'setting "{name}" cannot be changed through pgshroud')
    if name == "client_encoding" and value is not None and _encoding_name(value) not in SAFE_ENCODINGS:
        raise SettingRefused(f'client encoding "{value}" is not allowed: use UTF8')


def _encoding_name(value: str) -> str:
    """As PostgreSQL's clean_encoding_name: letters and digits, lower case."""
    return "".join(c for c in value.lower() if c.isascii() and c.isalnum())


def check_set(statement: Statement, *, pinned: frozenset[str] = frozenset()) -> None:
    """Raise SettingRefused for a SET this session may not run; `pinned`
    settings are fixed by pgshroud for this session."""
    words = [t.text for t in statement.tokens[1:]]
    lowered = [w.lower() for w in words]
    if lowered[:1] in (["session"], ["local"]):
        if lowered[1:2] == ["authorization"]:
            raise SettingRefused("SET SESSION AUTHORIZATION is not allowed through pgshroud")
        if lowered[1:2] == ["characteristics"]:
            return
        words, lowered = words[1:], lowered[1:]
    if not lowered:
        raise SettingRefused("SET without a setting")
    if lowered[0] == "role":
        raise SettingRefused("SET ROLE is not allowed through pgshroud")
    if lowered[0] == "transaction" or lowered[:2] == ["time", "zone"]:
        return
    if lowered[0] == "names":
        check_setting("client_encoding", words[1] if len(words) > 1 else None)
        return
    # SET name {TO | =} value; a dotted custom name arrives as several tokens.
    separator = next((i for i, w in enumerate(lowered) if w in ("to", "=")), len(lowered))
    name = "".join(lowered[:separator])
    _check_pinned(name, pinned)
    if name == "search_path" and _pinned_search_path(statement.tokens[len(statement.tokens) - len(words) + separator + 1:]):
        return
    check_setting(name, words[separator + 1] if separator + 1 < len(words) else None)


def _pinned_search_path(value: tuple[Token, ...]) -> bool:
    """The value is the search_path pgshroud pins and resolves names with
    (rewriter/catalog.py): `public`, `"public"`, `'public'` or DEFAULT (the
    pinned one), so setting it changes nothing (Superset's SQL Lab sets the
    selected schema before each query)."""
    if len(value) != 1:
        return False
    token = value[0]
    if token.token_type in (TokenType.IDENTIFIER, TokenType.STRING):
        return token.text == "public"
    return token.text.lower() in ("public", "default")


def _check_pinned(name: str, pinned: frozenset[str]) -> None:
    if name in pinned:
        raise SettingRefused(f'setting "{name}" is fixed by pgshroud for roles that get private answers: it '
                             "would change how long private queries run, or turn their running time into an error")


def set_config_arguments(statement: Statement) -> tuple[bool, str, str | None] | None:
    """(qualified, name, value) of a statement that is exactly
    `SELECT [pg_catalog.]set_config('name', 'value' | $n, true | false)`;
    None for any other statement. The value is None when it is a bound
    parameter. Only plain quoted strings count: their token text is the
    value PostgreSQL reads."""
    tokens = statement.tokens
    if not tokens or tokens[0].token_type != TokenType.SELECT:
        return None
    qualified = [t.token_type for t in tokens[1:3]] == [TokenType.VAR, TokenType.DOT] and (
        tokens[1].text.lower() == "pg_catalog")
    call = tokens[3:] if qualified else tokens[1:]
    head, tail = call[:4], call[4:]
    if [t.token_type for t in head] != [TokenType.VAR, TokenType.L_PAREN, TokenType.STRING, TokenType.COMMA]:
        return None
    if head[0].text.lower() != "set_config" or not _plain_string(statement, head[2]) or not tail:
        return None
    value: str | None
    if tail[0].token_type == TokenType.STRING and _plain_string(statement, tail[0]):
        value, tail = tail[0].text, tail[1:]
    elif [t.token_type for t in tail[:2]] == [TokenType.PARAMETER, TokenType.NUMBER]:
        value, tail = None, tail[2:]
    else:
        return None
    if [t.token_type for t in tail] not in _SET_CONFIG_ENDS:
        return None
    return qualified, head[2].text, value


_SET_CONFIG_ENDS = ([TokenType.COMMA, TokenType.TRUE, TokenType.R_PAREN],
                    [TokenType.COMMA, TokenType.FALSE, TokenType.R_PAREN])


def _plain_string(statement: Statement, token: Token) -> bool:
    """A '...' literal, not E'', U&'' or a dollar quote, whose token text may differ from its value."""
    return statement.text[token.start - statement.start] == "'"


def check_set_config(name: str, value: str | None, *, pinned: frozenset[str] = frozenset()) -> None:
    """Raise SettingRefused unless set_config(name, value, ...) does what a
    SET this session may run does. A value that is a bound parameter
    (None) is refused only where SET checks the value (client_encoding)."""
    lowered = name.lower()
    if lowered.startswith("pgshroud."):
        raise SettingRefused(f'set_config cannot change "{name}": pgshroud settings are set with SET')
    if lowered in ("role", "session_authorization"):
        raise SettingRefused(f'set_config of "{lowered}" is not allowed through pgshroud')
    _check_pinned(lowered, pinned)
    if lowered == "client_encoding" and value is None:
        raise SettingRefused("set_config of client_encoding needs a literal value")
    check_setting(lowered, value)


def check_reset(statement: Statement) -> None:
    rest = [t.text.lower() for t in statement.tokens[1:]]
    if rest == ["all"]:
        return  # back to the session's own defaults, which pgshroud vetted at startup
    name = "".join(rest)
    if name in ("role", "sessionauthorization", "session_authorization"):
        raise SettingRefused(f"RESET {name.upper()} is not allowed through pgshroud")
    if name == "search_path":
        return  # back to the path pgshroud pinned at startup
    check_setting(name, None)


# Startup parameters a non-raw session may send; `options` is checked
# setting by setting.
STARTUP_PARAMETERS = frozenset(
    {"user", "database", "application_name", "fallback_application_name", "client_encoding", "datestyle",
     "timezone", "extra_float_digits", "intervalstyle", "options", "lc_messages", "replication"}
)


def check_startup_parameters(params: tuple[tuple[str, str], ...]) -> None:
    """Raise SettingRefused for a startup parameter a non-raw role may not send."""
    for name, value in params:
        lowered = name.lower()
        if lowered.startswith("_pq_."):
            continue
        if lowered not in STARTUP_PARAMETERS:
            raise SettingRefused(f'startup parameter "{name}" is not allowed')
        if lowered == "client_encoding":
            check_setting(lowered, value)
        if lowered == "options":
            for setting, setting_value in _options(value):
                check_setting(setting, setting_value)


def _options(value: str) -> list[tuple[str, str]]:
    """The settings in a libpq `options` string: -c name=value or --name=value."""
    words = value.split()
    settings = []
    i = 0
    while i < len(words):
        word = words[i]
        if word == "-c" and i + 1 < len(words):
            word, i = words[i + 1], i + 1
        elif word.startswith(("-c", "--")):
            word = word[2:]
        else:
            raise SettingRefused(f'startup option "{word}" is not allowed')
        name, _, setting_value = word.partition("=")
        settings.append((name.replace("-", "_"), setting_value))
        i += 1
    return settings


def check_parameter_status(name: str, value: str) -> str | None:
    """Why a reported server setting makes the session unsafe to rewrite, if it does."""
    lowered = name.lower()
    if lowered == "standard_conforming_strings" and value.lower() != "on":
        return "standard_conforming_strings is off for this session"
    if lowered == "client_encoding" and _encoding_name(value) not in SAFE_ENCODINGS:
        return f"client encoding {value} is not allowed"
    return None
