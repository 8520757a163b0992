"""Splitting a Query text into statements, with sqlglot's postgres lexer.

sqlglot lexes strings, dollar quotes, escape strings and nested comments as
PostgreSQL does with standard_conforming_strings on (which pgshroud pins
for every session it rewrites), so token offsets index the original text.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot.dialects.postgres import Postgres
from sqlglot.tokens import Token, TokenType

_DIALECT = Postgres()


class _Tokenizer(Postgres.Tokenizer):
    # sqlglot swallows the rest of EXPLAIN, DECLARE, PREPARE, ... as one raw
    # string; pgshroud needs their every token, like any other statement's.
    COMMANDS: set = set()


class LexError(ValueError):
    pass


@dataclass(frozen=True)
class Statement:
    text: str  # exactly as the client wrote it
    start: int  # offset of `text` in the whole Query
    tokens: tuple[Token, ...]

    @property
    def first_word(self) -> str:
        return self.tokens[0].text.lower() if self.tokens else ""

    def words(self, n: int) -> list[str]:
        return [t.text.lower() for t in self.tokens[:n]]


def split_statements(sql: str) -> list[Statement]:
    try:
        tokens = _Tokenizer().tokenize(sql)
    except Exception as exc:  # sqlglot raises TokenError and, on odd input, others
        raise LexError(f"cannot tokenize the statement: {exc}") from None
    statements: list[Statement] = []
    current: list[Token] = []
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            _close(sql, current, statements)
            current = []
        else:
            current.append(token)
    _close(sql, current, statements)
    return statements


def _close(sql: str, tokens: list[Token], out: list[Statement]) -> None:
    if not tokens:
        return
    start, end = tokens[0].start, tokens[-1].end + 1
    # A leading comment belongs to no token; keep the statement's own text.
    out.append(Statement(sql[start:end], start, tuple(tokens)))


def parse_statement(statement: Statement):
    """The sqlglot tree of one statement (positions index the whole Query)."""
    parser = _DIALECT.parser()
    trees = parser.parse(list(statement.tokens), statement.text)
    if len(trees) != 1 or trees[0] is None:
        raise LexError("expected exactly one statement")
    return trees[0]
