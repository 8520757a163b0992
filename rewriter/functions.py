"""The function allow-list for sessions that do not see raw data.

Calls are found in the token stream (a name followed by an opening
parenthesis), not in sqlglot's tree, which renames some functions (now()
becomes CURRENT_TIMESTAMP) and parses unknown ones as anonymous calls: the
check sees the names PostgreSQL will resolve. A name that is not a known
function is refused, so a construct this check misreads fails closed.
"""

from __future__ import annotations

from sqlglot.tokens import Token, TokenType

from rewriter.catalog import Catalog

# Words that take a parenthesis as SQL syntax rather than as a call.
SYNTAX_WORDS = frozenset(
    """in exists values array row cast over filter as using on and or not select where from join any all some
    group by lateral table coalesce nullif greatest least extract position substring overlay trim distinct into
    returning union intersect except case when then else is between like ilike similar window partition order
    with recursive rows range groups grouping cube rollup sets limit offset fetch for of collate at zone escape
    interval treat only inner outer cross full natural xmlelement xmlforest xmlattributes xmlparse xmlserialize
    xmlconcat xmlroot xmlpi xmlexists xmlagg xmltable columns passing json_object json_array json_objectagg
    json_arrayagg json_exists json_query json_value json_table json_scalar json_serialize json
    varchar char character nchar numeric decimal dec timestamp time bit varbit float double precision
    current_time current_timestamp localtime localtimestamp normalize""".split()
)

# Immutable or stable, yet they read relations, files or other sessions'
# statements, or execute SQL given as text.
DENIED = frozenset(
    """query_to_xml query_to_xmlschema query_to_xml_and_xmlschema table_to_xml table_to_xmlschema
    table_to_xml_and_xmlschema cursor_to_xml cursor_to_xmlschema schema_to_xml schema_to_xmlschema
    schema_to_xml_and_xmlschema database_to_xml database_to_xmlschema database_to_xml_and_xmlschema
    ts_stat pg_read_file pg_read_binary_file pg_ls_dir pg_stat_file pg_ls_logdir pg_ls_waldir pg_ls_tmpdir
    pg_ls_archive_statusdir pg_stat_get_activity pg_stat_get_backend_activity pg_current_logfile
    set_config pg_notify""".split()
)
# Volatile by declaration, but they only read the catalog; psql's \d and
# \d+ call them.
CATALOG_READERS = frozenset(
    """pg_partition_ancestors pg_partition_tree pg_partition_root pg_relation_size pg_table_size
    pg_total_relation_size pg_indexes_size pg_database_size pg_tablespace_size pg_relation_filenode
    pg_relation_filepath""".split()
)
# Near-exact row counts undo the noise of differentially private answers.
ROW_COUNT_FUNCTIONS_PREFIXES = ("pg_stat_get_", "pg_relation_size", "pg_total_relation_size", "pg_table_size",
                                "pg_indexes_size", "pg_stat_")

_NAME_TOKENS = frozenset({TokenType.VAR, TokenType.IDENTIFIER})


class FunctionRefused(ValueError):
    """A call the policy does not allow; the message names the function."""


OPERATOR = "operator"  # OPERATOR(schema.op): the schema is checked like a function's


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
            inner = tokens[i + 1 : i + 4]
            schema = _fold(inner[0]) if len(inner) == 3 and inner[1].token_type == TokenType.DOT else None
            calls.append((schema, OPERATOR))
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
    for schema, name in called_functions(tokens, alias_starts):
        qualified = f"{schema}.{name}" if schema else name
        if name == OPERATOR:
            if schema not in (None, "pg_catalog"):
                raise FunctionRefused(f'operators of schema "{schema}" are not allowed by the policy')
            continue
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
        if name in DENIED:
            raise FunctionRefused(f'function "{name}" reads data outside the policy and is not allowed')
        if aggregate_role and name.startswith(ROW_COUNT_FUNCTIONS_PREFIXES):
            raise FunctionRefused(f'function "{name}" reveals row counts, which aggregate roles may not read')
        if name in CATALOG_READERS:
            continue
        volatilities = catalog.catalog_functions.get(name)
        if volatilities is None:
            if name in SYNTAX_WORDS:
                continue
            raise FunctionRefused(f'function "{name}" is not a known function of pg_catalog')
        if "v" in volatilities:
            raise FunctionRefused(
                f'function "{name}" is volatile (it can change state or time a query) and is not allowed'
            )


def _fold(token: Token) -> str:
    return token.text if token.token_type == TokenType.IDENTIFIER else token.text.lower()
