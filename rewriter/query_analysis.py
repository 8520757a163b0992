"""A query's analysis: its tree and the relations it reads, computed once.

The planner lexes a Query once (rewriter/statements.py); each query in it
is parsed here once, its functions checked against the allow-list and its
relations resolved against the catalog, and everything after (the private
answer, the masking rewrite, EXPLAIN's checks) reads this one analysis.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from pgshroud import sqlstate
from pgshroud.policies.model import Access, Policy, Role
from pgshroud.rewriter.catalog import Catalog
from pgshroud.rewriter.functions import FunctionRefused, check_functions
from pgshroud.rewriter.refusal import Refusal
from pgshroud.rewriter.relations import RelationError, RelationRef, find_relations
from pgshroud.rewriter.statements import Statement, parse_statement
from pgshroud.rewriter.views import ROW_COUNT_COLUMNS

RELATION_HINT = ("Read the tables and views the policy declares public or protected, by their names in this "
                 "database; ask the privacy officer to declare any other.")
PARSE_HINT = ("pgshroud analyses every statement before PostgreSQL sees it and refuses what it cannot read: if "
              "PostgreSQL accepts this statement, write the construct near that place another way.")


@dataclass(frozen=True)
class QueryAnalysis:
    """One query as pgshroud read it; offsets (in the tree's meta and the
    references) index the whole Query text the statement came from."""

    statement: Statement
    tree: exp.Expr
    refs: tuple[RelationRef, ...]


def analyse_query(statement: Statement, policy: Policy, role: Role, catalog: Catalog, user: str) -> QueryAnalysis:
    """Parse a query, check its functions, and resolve its relations; Refusal
    for anything that is not one query pgshroud can read."""
    if not statement.tokens:
        raise Refusal(sqlstate.SYNTAX_ERROR, "pgshroud cannot analyse this statement: a query here must be one "
                      "statement", hint="Remove the semicolon inside it.")
    try:
        tree = parse_statement(statement)
    except RecursionError:
        raise
    except Exception as exc:  # noqa: BLE001 - sqlglot's ParseError and anything unexpected: refuse, never pass
        # Never the parser's own words: they name its internals, not the user's SQL.
        raise Refusal(sqlstate.SYNTAX_ERROR, f"pgshroud cannot parse this statement{_parse_position(exc)}",
                      hint=PARSE_HINT) from None
    if not isinstance(tree, (exp.Select, exp.SetOperation, exp.Values, exp.Subquery)):
        raise Refusal(sqlstate.INSUFFICIENT_PRIVILEGE, "only queries are allowed here")
    if any(isinstance(node, exp.Into) for node in tree.find_all(exp.Into)):
        raise Refusal(sqlstate.INSUFFICIENT_PRIVILEGE, "SELECT INTO creates a table and is not allowed")
    if any(isinstance(node, (exp.Insert, exp.Update, exp.Delete, exp.Merge)) for node in tree.walk()):
        raise Refusal(sqlstate.INSUFFICIENT_PRIVILEGE, "data-modifying statements in WITH are not allowed")
    aggregate = role.access == Access.AGGREGATE
    alias_starts = frozenset(
        alias.this.meta["start"]
        for alias in tree.find_all(exp.TableAlias)
        if alias.args.get("columns") and isinstance(alias.this, exp.Identifier) and "start" in alias.this.meta
    )
    allowed = policy.allow_functions | role.allow_functions
    if role.aggregates_privately:
        allowed = allowed | {"pg_catalog.median"}  # not PostgreSQL's: pgshroud answers it privately
    try:
        check_functions(statement.tokens, catalog, allowed=allowed, aggregate_role=aggregate,
                        alias_starts=alias_starts)
        refs = find_relations(tree, catalog, user)
    except FunctionRefused as exc:
        raise Refusal(sqlstate.INSUFFICIENT_PRIVILEGE, str(exc), hint=_function_hint(str(exc))) from None
    except RelationError as exc:
        raise Refusal(sqlstate.INSUFFICIENT_PRIVILEGE, str(exc), hint=RELATION_HINT) from None
    if aggregate and any(c.name.lower() in ROW_COUNT_COLUMNS for c in tree.find_all(exp.Column)):
        raise Refusal(sqlstate.INSUFFICIENT_PRIVILEGE,
                      "row-count statistics (reltuples, relpages) are not available to aggregate roles",
                      hint="Count rows with count(*), which pgshroud answers privately.")
    return QueryAnalysis(statement, tree, tuple(refs))


def _function_hint(message: str) -> str:
    if '"set_config"' in message:
        return ("Write SET name = value, or SELECT set_config('name', 'value', false) alone with literal arguments, "
                "for a setting SET may change.")
    return "Write the query without it, or ask the privacy officer to name it in the policy's allow_functions."


def _parse_position(exc: Exception) -> str:
    """ near line L, column C, where the parser says it stopped; empty when it does not say."""
    errors = getattr(exc, "errors", None)
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        line, column = errors[0].get("line"), errors[0].get("col")
        if isinstance(line, int) and isinstance(column, int):
            return f" near line {line}, column {column}"
    return ""
