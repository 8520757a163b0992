"""SQL statements that name a prepared statement or cursor: PREPARE,
EXECUTE, DEALLOCATE, DECLARE, FETCH, MOVE and CLOSE, read by tokens.

For sessions that do not see raw data the name is translated, as the
session translates protocol names (rewriter/names.py), so SQL reaches only
what the client itself prepared or declared, under whichever protocol.
"""

from __future__ import annotations

import itertools

from sqlglot.tokenizer_core import Token, TokenType

from pgshroud.rewriter.names import quoted_upstream_name, sql_name
from pgshroud.rewriter.plans import CursorStep
from pgshroud.rewriter.statements import Statement

# FETCH and MOVE: what may stand between the command and the cursor's name.
_DIRECTION_WORDS = frozenset(
    {"next", "prior", "first", "last", "absolute", "relative", "all", "forward", "backward", "from", "in"}
)
_SIGN_TYPES = frozenset({TokenType.DASH, TokenType.PLUS})


class NamedCommandError(ValueError):
    """The statement is not one pgshroud can read; the message says why."""


def is_name(token: Token) -> bool:
    return token.token_type == TokenType.IDENTIFIER or (
        token.token_type != TokenType.STRING and token.text.replace("_", "a").replace("$", "a").isalnum()
        and not token.text[0].isdigit()
    )


def renamed(statement: Statement, index: int) -> str:
    """The statement's text with its name at token `index` translated."""
    token = statement.tokens[index]
    if not is_name(token):
        raise NamedCommandError(f'"{token.text}" is not a name pgshroud can read here')
    base = statement.start
    return (statement.text[: token.start - base] + quoted_upstream_name(token)
            + statement.text[token.end + 1 - base :])


def fetch_or_move(statement: Statement) -> tuple[str, str]:
    """FETCH/MOVE [direction] [FROM | IN] cursor: the statement with the
    cursor translated, and the cursor's name."""
    tokens = statement.tokens
    if len(tokens) < 2:
        raise NamedCommandError(f"{statement.first_word.upper()} needs a cursor name")
    for token in tokens[1:-1]:
        if not (token.text.lower() in _DIRECTION_WORDS or token.token_type == TokenType.NUMBER
                or token.token_type in _SIGN_TYPES):
            raise NamedCommandError(f'unexpected "{token.text}" in {statement.first_word.upper()}')
    return renamed(statement, len(tokens) - 1), sql_name(tokens[-1])


def close_or_deallocate(statement: Statement) -> tuple[str, str | None]:
    """CLOSE {name | ALL} and DEALLOCATE [PREPARE] {name | ALL}: the
    statement with its name translated, and the name (None for ALL)."""
    tokens = statement.tokens
    index = 2 if statement.words(2) == ["deallocate", "prepare"] else 1
    if len(tokens) != index + 1:
        raise NamedCommandError(f"{statement.first_word.upper()} takes one name or ALL")
    if tokens[index].text.lower() == "all" and tokens[index].token_type != TokenType.IDENTIFIER:
        return statement.text, None
    return renamed(statement, index), sql_name(tokens[index])


def execute_arguments(statement: Statement) -> tuple[str, str, str | None]:
    """EXECUTE name [(arguments)]: the statement with its name translated,
    the name, and the text of its arguments (None without), which PostgreSQL
    evaluates as expressions and so must be analysed like a query's."""
    tokens = statement.tokens
    if len(tokens) < 2:
        raise NamedCommandError("EXECUTE needs a statement name")
    text, name = renamed(statement, 1), sql_name(tokens[1])
    if len(tokens) == 2:
        return text, name, None
    if tokens[2].token_type != TokenType.L_PAREN or tokens[-1].token_type != TokenType.R_PAREN:
        raise NamedCommandError("EXECUTE takes a name and a parenthesised list of arguments")
    base = statement.start
    return text, name, statement.text[tokens[3].start - base : tokens[-1].start - base] if len(tokens) > 4 else None


# DECLARE name [BINARY] [ASENSITIVE | INSENSITIVE] [[NO] SCROLL] CURSOR
# [{WITH | WITHOUT} HOLD] FOR query: the words that may stand before FOR.
_DECLARE_WORDS = frozenset({"binary", "asensitive", "insensitive", "no", "scroll", "cursor", "with", "without", "hold"})


def declared_cursor(statement: Statement) -> tuple[str, bool, bool]:
    """DECLARE's cursor name, whether it is WITH HOLD, and whether BINARY."""
    tokens = statement.tokens
    if len(tokens) < 2:
        raise NamedCommandError("DECLARE needs a cursor name")
    words = []
    for token in tokens[2:]:
        word = token.text.lower()
        if word == "for" and token.token_type != TokenType.IDENTIFIER:
            break
        if word not in _DECLARE_WORDS or token.token_type == TokenType.IDENTIFIER:
            raise NamedCommandError(f'unexpected "{token.text}" in DECLARE')
        words.append(word)
    hold = any(a == "with" and b == "hold" for a, b in itertools.pairwise(words))
    return sql_name(tokens[1]), hold, "binary" in words


def fetch_step(statement: Statement) -> CursorStep:
    """How far a FETCH or MOVE goes, read as PostgreSQL reads its direction:
    none, NEXT, n, ALL, FORWARD [n | ALL] go forward; anything else
    (BACKWARD, PRIOR, FIRST, LAST, ABSOLUTE, RELATIVE, a count of 0 or
    less) is marked as not forward."""
    move = statement.first_word == "move"
    words = [t for t in statement.tokens[1:-1] if t.text.lower() not in ("from", "in")]
    texts = [t.text.lower() for t in words]
    if texts and texts[0] == "forward":
        texts = texts[1:] or ["1"]
    if not texts or texts == ["next"]:
        return CursorStep(move, 1)
    if texts == ["all"]:
        return CursorStep(move, None)
    if len(texts) == 1 and texts[0].isdigit() and int(texts[0]) > 0:
        return CursorStep(move, int(texts[0]))
    return CursorStep(move, 0, forward=False)
