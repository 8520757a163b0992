"""Splitting a Query text into statements, with sqlglot's postgres lexer.

sqlglot lexes strings, dollar quotes, escape strings and nested comments as
PostgreSQL does with standard_conforming_strings on (which pgshroud pins
for every session it rewrites), so token offsets index the original text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.parsers.postgres import PostgresParser
from sqlglot.tokenizer_core import Token, TokenType

_DIALECT = Postgres()


class _Tokenizer(Postgres.Tokenizer):
    # sqlglot swallows the rest of EXPLAIN, DECLARE, PREPARE, ... as one raw
    # string; pgshroud needs their every token, like any other statement's.
    COMMANDS: ClassVar[set[TokenType]] = set()


# sqlglot reads date_part(f, x) as EXTRACT(f FROM x), which PostgreSQL types
# numeric where date_part is double precision: the parser marks date_part's
# node with this key in its meta, so that its type can be told.
DATE_PART_MARK = "date_part"
# An interval string of one `n unit` part, which sqlglot reads without loss.
_ONE_INTERVAL_PART = re.compile(r"\s*[+-]?\d+(?:\.\d+)?\s*[a-z]+\s*", re.IGNORECASE)


def _marked_date_part(parser: _Parser) -> exp.Expr:
    node: exp.Expr = PostgresParser.FUNCTION_PARSERS["DATE_PART"](parser)
    node.meta[DATE_PART_MARK] = True
    return node


class _Parser(PostgresParser):
    """sqlglot's postgres parser, reading arrays of object identifier types
    (`x::regtype[]` in pgcli's function list, `CAST(x AS oid[])`) as the
    array types PostgreSQL reads them as: sqlglot takes regtype, oid,
    regclass, ... for types that cannot be followed by brackets. It marks
    date_part apart from extract (DATE_PART_MARK)."""

    FUNCTION_PARSERS: ClassVar[dict[str, Callable[..., exp.Expr]]] = {
        **PostgresParser.FUNCTION_PARSERS, "DATE_PART": _marked_date_part}
    # Token offsets index the whole Query; the text the parser is given is
    # one statement's, which starts at this offset.
    text_start = 0

    def _find_sql(self, start: Token, end: Token) -> str:
        return self.sql[start.start - self.text_start : end.end + 1 - self.text_start]

    def _parse_interval_span(self, this: exp.Expr, parse_function_unit: bool = True) -> exp.Interval:
        """`interval '1 day 02:00'`, `'3 days ago'`, `'P1DT2H'`: kept as
        written. sqlglot keeps only the string's first `n unit` and drops the
        rest ('1 day 02:00' would reach PostgreSQL as '1 DAY')."""
        if this is None or not this.is_string or _ONE_INTERVAL_PART.fullmatch(this.name):
            return super()._parse_interval_span(this, parse_function_unit=parse_function_unit)
        if self._curr is not None and self._curr.text.upper() in self.dialect.VALID_INTERVAL_UNITS:
            self.raise_error("an interval literal with units of its own cannot also take a field qualifier")
        return self.expression(exp.Interval(this=this))

    def _parse_types(self, *args: Any, **kwargs: Any) -> exp.Expr | None:
        this = super()._parse_types(*args, **kwargs)
        if not isinstance(this, exp.ObjectIdentifier):
            return this
        while self._match(TokenType.L_BRACKET):
            self._match(TokenType.NUMBER)  # oid[3] is oid[] to PostgreSQL
            if not self._match(TokenType.R_BRACKET):
                self.raise_error("Expected ]")
            element = this if isinstance(this, exp.DataType) else exp.DataType(
                this=exp.DataType.Type.USERDEFINED, kind=this.name.lower())
            this = exp.DataType(this=exp.DataType.Type.ARRAY, expressions=[element], nested=True)
        return this


class LexError(ValueError):
    """The text cannot be split into statements."""


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

    def part(self, first: int, stop: int | None = None) -> Statement:
        """Tokens [first:stop] as a statement of their own (the query of a
        DECLARE, EXPLAIN or COPY), without lexing again: its text runs from
        the first of them to the last, offsets stay the whole Query's."""
        tokens = self.tokens[first:stop]
        if not tokens:
            return Statement("", self.start + len(self.text), ())
        start = tokens[0].start
        return Statement(self.text[start - self.start : tokens[-1].end + 1 - self.start], start, tokens)


def split_statements(sql: str) -> list[Statement]:
    try:
        tokens = _Tokenizer().tokenize(sql)
    except Exception as exc:  # noqa: BLE001 - sqlglot raises TokenError and, on odd input, others
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


# PostgreSQL takes any keyword as a column alias after AS (Metabase writes
# `... AS select,`); sqlglot wants a name there.
_ALIAS_FOLLOWERS = frozenset({TokenType.COMMA, TokenType.FROM, TokenType.R_PAREN})
_NAME_LIKE = frozenset({TokenType.VAR, TokenType.IDENTIFIER, TokenType.L_PAREN, TokenType.STRING})


def _keyword_aliases_as_names(tokens: list[Token]) -> list[Token]:
    out = list(tokens)
    # For each open parenthesis, whether it opens CAST(x AS type), where the
    # word after AS is a type, not an alias. One pass: linear in the tokens.
    in_cast: list[bool] = []
    for i in range(len(out) - 1):
        kind = out[i].token_type
        if kind == TokenType.L_PAREN:
            in_cast.append(i > 0 and out[i - 1].text.lower() in ("cast", "try_cast", "treat"))
            continue
        if kind == TokenType.R_PAREN:
            if in_cast:
                in_cast.pop()
            continue
        if kind != TokenType.ALIAS:
            continue
        word = out[i + 1]
        follower = out[i + 2].token_type if i + 2 < len(out) else None
        if word.token_type not in _NAME_LIKE and word.text.isidentifier() and (
            follower is None or follower in _ALIAS_FOLLOWERS
        ) and not (in_cast and in_cast[-1]):
            out[i + 1] = Token(TokenType.VAR, word.text, word.line, word.col, word.start, word.end, word.comments)
    return out


def parse_statement(statement: Statement) -> exp.Expr:
    """The sqlglot tree of one statement (positions index the whole Query)."""
    parser = _Parser(dialect=_DIALECT)
    parser.text_start = statement.start
    trees = parser.parse(_keyword_aliases_as_names(list(statement.tokens)), statement.text)
    if len(trees) != 1 or trees[0] is None:
        raise LexError("expected exactly one statement")
    return trees[0]
