"""The function allow-list for sessions that do not see raw data.

Calls are found in the token stream (a name followed by an opening
parenthesis), not in sqlglot's tree, which renames some functions (now()
becomes CURRENT_TIMESTAMP) and parses unknown ones as anonymous calls: the
check sees the names PostgreSQL will resolve. A name that is not a known
function is refused, so a construct this check misreads fails closed.

PostgreSQL also runs functions that no `f(` names: an operator runs its
function, `x.f` and `(x).f` call f(x) (attribute notation), a cast runs its
cast function, and a type runs its input, output and comparison functions
and a domain its CHECK constraints. Those are resolved through the catalog
snapshot to what lies outside pg_catalog, and refused unless the policy's
allow_functions names them; where the text alone cannot show which of them
PostgreSQL picks, every one it could pick is checked.
"""

from __future__ import annotations

from sqlglot.tokenizer_core import Token, TokenType

from pgshroud.rewriter.catalog import PINNED_SEARCH_PATH, Catalog, Operator

# Words that take a parenthesis as SQL syntax rather than as a call.
SYNTAX_WORDS = frozenset(
    [
        "in", "exists", "values", "array", "row", "cast", "over", "filter", "as", "using", "on", "and", "or", "not",
        "select", "where", "from", "join", "any", "all", "some", "group", "by", "lateral", "table", "coalesce",
        "nullif", "greatest", "least", "extract", "position", "substring", "overlay", "trim", "distinct", "into",
        "returning", "union", "intersect", "except", "case", "when", "then", "else", "is", "between", "like", "ilike",
        "similar", "window", "partition", "order", "with", "recursive", "rows", "range", "groups", "grouping", "cube",
        "rollup", "sets", "limit", "offset", "fetch", "for", "of", "collate", "at", "zone", "escape", "interval",
        "treat", "only", "inner", "outer", "cross", "full", "natural", "xmlelement", "xmlforest", "xmlattributes",
        "xmlparse", "xmlserialize", "xmlconcat", "xmlroot", "xmlpi", "xmlexists", "xmlagg", "xmltable", "columns",
        "passing", "json_object", "json_array", "json_objectagg", "json_arrayagg", "json_exists", "json_query",
        "json_value", "json_table", "json_scalar", "json_serialize", "json", "varchar", "char", "character", "nchar",
        "numeric", "decimal", "dec", "timestamp", "time", "bit", "varbit", "float", "double", "precision",
        "current_time", "current_timestamp", "localtime", "localtimestamp", "normalize", "having", "to",
    ]
)

# Immutable or stable, yet they read relations, files or other sessions'
# statements, or execute SQL given as text.
DENIED = frozenset(
    [
        "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema", "table_to_xml", "table_to_xmlschema",
        "table_to_xml_and_xmlschema", "cursor_to_xml", "cursor_to_xmlschema", "schema_to_xml", "schema_to_xmlschema",
        "schema_to_xml_and_xmlschema", "database_to_xml", "database_to_xmlschema", "database_to_xml_and_xmlschema",
        "ts_stat", "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_ls_logdir", "pg_ls_waldir",
        "pg_ls_tmpdir", "pg_ls_archive_statusdir", "pg_stat_get_activity", "pg_stat_get_backend_activity",
        "pg_current_logfile", "set_config", "pg_notify",
    ]
)
# Volatile by declaration, but they only read the catalog; psql's \d and
# \d+ call them.
CATALOG_READERS = frozenset(
    [
        "pg_partition_ancestors", "pg_partition_tree", "pg_partition_root", "pg_relation_size", "pg_table_size",
        "pg_total_relation_size", "pg_indexes_size", "pg_database_size", "pg_tablespace_size", "pg_relation_filenode",
        "pg_relation_filepath",
    ]
)
# Near-exact row counts undo the noise of differentially private answers.
ROW_COUNT_FUNCTIONS_PREFIXES = ("pg_stat_get_", "pg_relation_size", "pg_total_relation_size", "pg_table_size",
                                "pg_indexes_size", "pg_stat_", "pg_database_size", "pg_tablespace_size")

_NAME_TOKENS = frozenset({TokenType.VAR, TokenType.IDENTIFIER})


class FunctionRefused(ValueError):
    """A call the policy does not allow; the message names the function."""


OPERATOR = "operator"  # OPERATOR(schema.op) names an operator: check_operators


def called_functions(tokens: tuple[Token, ...], alias_starts: frozenset[int] = frozenset()) -> list[tuple[str | None, str]]:
    """(schema, name) of every call in the statement, as PostgreSQL folds them.

    `alias_starts` are the offsets of table aliases with a column list
    (`generate_series(1, 3) g(n)`), which look like calls but are not.
    """
    calls = []
    for i in range(1, len(tokens)):
        if tokens[i].token_type != TokenType.L_PAREN:
            continue
        name_token = tokens[i - 1]
        if name_token.start in alias_starts:
            continue
        if name_token.text.lower() == OPERATOR:
            continue
        if name_token.token_type in (TokenType.L_PAREN, TokenType.R_PAREN, TokenType.COMMA, TokenType.STRING,
                                     TokenType.NUMBER, TokenType.DOT, TokenType.L_BRACKET):
            continue
        if name_token.token_type not in _NAME_TOKENS and not name_token.text.replace("_", "").isalnum():
            continue  # an operator or punctuation before the parenthesis
        name = _fold(name_token)
        if name_token.token_type not in _NAME_TOKENS and name in SYNTAX_WORDS:
            continue
        if name_token.token_type == TokenType.VAR and name in SYNTAX_WORDS:
            continue
        if i >= 2 and tokens[i - 2].text.lower() == "as":
            continue  # an alias's column list: AS t(a, b)
        if name == "materialized" and i >= 2 and tokens[i - 2].text.lower() in ("as", "not"):
            continue  # WITH q AS [NOT] MATERIALIZED (...)
        schema = None
        if i >= 3 and tokens[i - 2].token_type == TokenType.DOT:
            schema = _fold(tokens[i - 3])
        calls.append((schema, name))
    return calls


def check_functions(
    tokens: tuple[Token, ...],
    catalog: Catalog,
    *,
    allowed: frozenset[str],
    aggregate_role: bool,
    alias_starts: frozenset[int] = frozenset(),
) -> None:
    """Refuses a statement that runs a function the policy does not allow,
    whether it calls it by name, by an operator, a cast, a type or
    attribute notation."""
    for schema, name in called_functions(tokens, alias_starts):
        qualified = f"{schema}.{name}" if schema else name
        if schema == "information_schema" and name.startswith("_pg_"):
            continue  # information_schema's own helpers (e.g. _pg_expandarray) read nothing
        if qualified in allowed or (schema is None and f"pg_catalog.{name}" in allowed):
            continue
        if schema not in (None, "pg_catalog"):
            raise FunctionRefused(f'function "{qualified}" is not allowed by the policy')
        if schema is None and name in catalog.user_function_names:
            raise FunctionRefused(
                f'function "{name}" is defined outside pg_catalog and is not allowed by the policy'
            )
        if name in SYNTAX_WORDS and name not in catalog.catalog_functions:
            continue
        _check_catalog_function(name, catalog.catalog_functions.get(name), aggregate_role)
    check_attribute_calls(tokens, catalog, allowed=allowed, aggregate_role=aggregate_role)
    operator_types = check_operators(tokens, catalog, allowed=allowed)
    check_types_and_casts(tokens, catalog, allowed=allowed, operator_types=operator_types)


def _check_catalog_function(name: str, volatilities: frozenset[str] | None, aggregate_role: bool,
                            written: str = "") -> None:
    """The rules for a function of pg_catalog; `written` says how the
    statement calls it when that is not `name(`."""
    if name in DENIED:
        raise FunctionRefused(f'function "{name}"{written} reads data outside the policy and is not allowed')
    if aggregate_role and name.startswith(ROW_COUNT_FUNCTIONS_PREFIXES):
        raise FunctionRefused(
            f'function "{name}"{written} reveals row counts, which aggregate roles may not read'
        )
    if name in CATALOG_READERS:
        return
    if volatilities is None:
        raise FunctionRefused(f'function "{name}"{written} is not a known function of pg_catalog')
    if "v" in volatilities:
        raise FunctionRefused(
            f'function "{name}"{written} is volatile (it can change state or time a query) and is not allowed'
        )


# -- attribute notation -------------------------------------------------------


def attribute_names(tokens: tuple[Token, ...]) -> list[str]:
    """The lower-cased X of every `.X` that is not `.*` nor a qualified call
    `schema.f(`: PostgreSQL reads `x.f` and `(x).f` as f(x) when x has no
    column f."""
    names = []
    for i in range(1, len(tokens)):
        if tokens[i - 1].token_type != TokenType.DOT or tokens[i].token_type == TokenType.STAR:
            continue
        if i + 1 < len(tokens) and tokens[i + 1].token_type == TokenType.L_PAREN:
            continue
        names.append(tokens[i].text.lower())
    return names


def check_attribute_calls(tokens: tuple[Token, ...], catalog: Catalog, *, allowed: frozenset[str],
                          aggregate_role: bool) -> None:
    """Every function `.X` could call is checked as a call would be: the
    text cannot show whether x has a column X, which PostgreSQL prefers."""
    for name in dict.fromkeys(attribute_names(tokens)):
        overloads = catalog.attribute_functions.get(name, frozenset())
        written = f' (".{name}" calls it: attribute notation)'
        for schema, proname, volatility in sorted(overloads):
            if f"{schema}.{proname}" in allowed or f"pg_catalog.{proname}" in allowed:
                continue  # as for an unqualified call: a bare name in the policy allows it too
            if schema == "pg_catalog":
                _check_catalog_function(proname, frozenset(volatility), aggregate_role, written)
            else:
                raise FunctionRefused(
                    f'function "{schema}.{proname}"{written} is defined outside pg_catalog and is not allowed '
                    f'by the policy; add "{schema}.{proname}" to allow_functions to allow it'
                )


# -- operators ----------------------------------------------------------------

# PostgreSQL's operator characters (scan.l, `op_chars`).
OPERATOR_CHARS = frozenset("~!@#^&|`?+-*/%<>=")
# Operators PostgreSQL looks up by name for syntax that writes none.
IMPLICIT_OPERATORS: dict[str, tuple[str, ...]] = {
    "in": ("=", "<>"),  # IN, NOT IN
    "between": ("<", ">", "<=", ">="),
    "like": ("~~", "!~~"),
    "ilike": ("~~*", "!~~*"),
    "similar": ("~", "!~"),
    "nullif": ("=",),
    "distinct": ("=",),  # IS [NOT] DISTINCT FROM
    "case": ("=",),  # CASE x WHEN y
    "using": ("=",),  # JOIN ... USING
    "natural": ("=",),
}
_STRINGS = frozenset({
    TokenType.STRING, TokenType.NATIONAL_STRING, TokenType.BIT_STRING, TokenType.HEX_STRING,
    TokenType.BYTE_STRING, TokenType.HEREDOC_STRING, TokenType.RAW_STRING, TokenType.UNICODE_STRING,
})
_QUOTED = _STRINGS | {TokenType.IDENTIFIER}


def _operator_token(token: Token) -> bool:
    """Operator characters only, written as they stand (no quotes around)."""
    return (token.token_type not in _QUOTED and bool(token.text)
            and token.end - token.start + 1 == len(token.text) and all(c in OPERATOR_CHARS for c in token.text))


def operator_runs(tokens: tuple[Token, ...]) -> list[tuple[str | None, str]]:
    """(schema, text) of every OPERATOR(schema.op), and (None, run) of every
    maximal run of operator characters outside strings, identifiers and
    comments. sqlglot splits a run into several tokens; adjacent offsets
    join them again, and a comment or space between them ends the run, as
    it ends PostgreSQL's operator."""
    runs: list[tuple[str | None, str]] = []
    i, n = 0, len(tokens)
    while i < n:
        token = tokens[i]
        if (token.token_type not in _QUOTED and token.text.lower() == OPERATOR
                and i + 1 < n and tokens[i + 1].token_type == TokenType.L_PAREN):
            close = next((j for j in range(i + 2, n) if tokens[j].token_type == TokenType.R_PAREN), n)
            inner = tokens[i + 2 : close]
            schema = None
            if len(inner) >= 2 and inner[1].token_type == TokenType.DOT:
                schema, inner = _fold(inner[0]), inner[2:]
            runs.append((schema, "".join(t.text for t in inner)))
            i = close + 1
            continue
        if _operator_token(token):
            j, text = i, token.text
            while j + 1 < n and _operator_token(tokens[j + 1]) and tokens[j + 1].start == tokens[j].end + 1:
                j += 1
                text += tokens[j].text
            runs.append((None, text))
            i = j + 1
            continue
        i += 1
    return runs


def check_operators(tokens: tuple[Token, ...], catalog: Catalog, *, allowed: frozenset[str]) -> frozenset[int]:
    """Refuses an operator outside pg_catalog that the statement may use and
    the policy does not allow; returns the types (in catalog.types) of those
    it allows. An unqualified operator is any one on the pinned search path
    whose name occurs in a run of operator characters: PostgreSQL's lexing
    of a run (trailing + and -, comment starts) is not modelled, so every
    reading is checked."""
    reachable = [op for op in catalog.operators if op.schema in PINNED_SEARCH_PATH]
    used: set[int] = set()
    for schema, text in dict.fromkeys(operator_runs(tokens)):
        if schema is not None:
            named = [op for op in catalog.operators if op.schema == schema and op.name == text]
            if not named and schema != "pg_catalog":
                raise FunctionRefused(
                    f'operator {schema}.{text} is not an operator pgshroud knows of, and operators outside '
                    f'pg_catalog are not allowed by the policy'
                )
            reason = f"is named by OPERATOR({schema}.{text})"
        else:
            named = [op for op in reachable if op.name in text or (op.name == "<>" and "!=" in text)]
            reason = f'may run for "{text}" in the statement'
        for op in named:
            _allow_operator(op, allowed, reason)
            used |= op.types
    words = {t.text.lower() for t in tokens if t.token_type not in _QUOTED}
    for word in sorted(words & IMPLICIT_OPERATORS.keys()):
        for op in reachable:
            if op.name in IMPLICIT_OPERATORS[word]:
                _allow_operator(op, allowed, f"may run for {word.upper()}")
                used |= op.types
    return frozenset(used)


def _allow_operator(op: Operator, allowed: frozenset[str], reason: str) -> None:
    if op.function in allowed or op.qualified in allowed:
        return
    raise FunctionRefused(
        f'operator {op.qualified} (function {op.function}), which {reason}, is defined outside pg_catalog '
        f'and is not allowed by the policy; add "{op.function}" or \'{op.schema}."{op.name}"\' to '
        f'allow_functions to allow it'
    )


# -- types and casts ----------------------------------------------------------


def check_types_and_casts(tokens: tuple[Token, ...], catalog: Catalog, *, allowed: frozenset[str],
                          operator_types: frozenset[int] = frozenset()) -> None:
    """Refuses a statement that may hold a value of a type that runs
    something outside pg_catalog (input, output or comparison functions, a
    domain's CHECK), or may meet both ends of a cast whose function lies
    outside pg_catalog, unless the policy names the type or the function.
    Which values a statement holds is read from the names it uses: the
    types, relations and functions of catalog.type_names, plus the system
    types every statement has and whatever their implicit casts lead to."""
    if not catalog.types and not catalog.casts:
        return
    words = {t.text.lower() for t in tokens if t.token_type not in _STRINGS}
    touched = catalog.touched_types(words, operator_types)
    for oid in sorted(touched):
        entry = catalog.types.get(oid)
        if entry is None or not entry.runs or entry.qualified in allowed:
            continue
        raise FunctionRefused(
            f"type {entry.qualified}{_brought(touched[oid], entry.name)} runs {', '.join(entry.runs)}, "
            f'outside pg_catalog, and is not allowed by the policy; add "{entry.qualified}" to allow_functions '
            f"to allow it"
        )
    for cast in catalog.casts:
        ends = (cast.source, cast.target)
        if cast.function in allowed or not all(o in touched or o not in catalog.types for o in ends):
            continue
        kind = {"i": "implicit cast", "a": "assignment cast"}.get(cast.context, "cast")
        why = next((touched[o] for o in ends if touched.get(o) is not None), None)
        brought = f' (the statement may hold one through "{why}")' if why is not None else ""
        silent = (
            "; PostgreSQL applies it where the types meet, with no cast in the text, so statements that may "
            "hold both types are refused" if cast.context == "i" else ""
        )
        raise FunctionRefused(
            f"{kind} from {cast.source_name} to {cast.target_name}{brought} runs function "
            f"{cast.function}, which is defined outside pg_catalog and is not allowed by the policy{silent}; "
            f'add "{cast.function}" to allow_functions to allow it'
        )


def _brought(name: str | None, own_name: str) -> str:
    """How a type enters the statement, when not by its own name."""
    if name is None:
        return " (every statement may hold it, through implicit casts from system types)"
    if name == own_name.lower():
        return ""
    return f' (the statement may hold one through "{name}")'


def _fold(token: Token) -> str:
    return token.text if token.token_type == TokenType.IDENTIFIER else token.text.lower()
