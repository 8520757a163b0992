"""Zero-row probes: the row-level queries BI tools send to learn a query's
columns (LIMIT 0, WHERE false), told apart by their literals alone, and the
check that the wrapper pgshroud runs them under kept everything of the
query inside it.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from sqlglot import exp

from pgshroud import sqlstate
from pgshroud.rewriter.refusal import Refusal
from pgshroud.rewriter.statements import parse_statement, split_statements

PROBE_ALIAS = '"pgshroud_probe"'
PROBE_HINT = "To see a query's columns without any row, add LIMIT 0 (or WHERE false)."


def row_level(tree: exp.Expr) -> bool:
    """A single SELECT that returns a row per row it reads: no aggregate in
    its own select list (subqueries aside), no GROUP BY, HAVING or DISTINCT."""
    if not isinstance(tree, exp.Select):
        return False
    if any(tree.args.get(clause) for clause in ("group", "having", "distinct")):
        return False
    for item in tree.expressions:
        for node in item.walk(prune=lambda n: isinstance(n, (exp.Select, exp.Subquery))):
            if isinstance(node, (exp.AggFunc, exp.Window)):
                return False
    return True


def returns_no_row(tree: exp.Expr, row_level_query: bool) -> bool:
    """LIMIT 0 (or FETCH FIRST 0 ROWS) with a literal, or a WHERE that is
    false by its literals alone where that leaves no row: not for an
    aggregate without GROUP BY, which returns its one row over no rows."""
    limit = tree.args.get("limit")
    count = limit.args.get("count") if isinstance(limit, exp.Fetch) else (
        limit.expression if isinstance(limit, exp.Limit) else None)
    if _literal_value(count) == ("number", 0):
        return True
    if not (row_level_query or tree.args.get("group") or tree.args.get("distinct")):
        return False
    where = tree.args.get("where")
    return isinstance(where, exp.Where) and _literal_truth(where.this) is False


def _literal_truth(node: exp.Expr) -> bool | None:
    """The truth of a condition made only of literals (FALSE, NOT TRUE,
    1 = 0, 1 <> 1, 'a' = 'b', and conjunctions), as PostgreSQL folds it;
    None when it is not one or pgshroud cannot tell."""
    if isinstance(node, exp.Paren):
        return _literal_truth(node.this)
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Not):
        inner = _literal_truth(node.this)
        return None if inner is None else not inner
    if isinstance(node, exp.And):
        sides = (_literal_truth(node.this), _literal_truth(node.expression))
        return False if False in sides else (True if sides == (True, True) else None)
    if isinstance(node, (exp.EQ, exp.NEQ)):
        left, right = _literal_value(node.this), _literal_value(node.expression)
        if left is None or right is None or left[0] != right[0]:
            return None  # '1' = 1 is a cast PostgreSQL resolves; not decided here
        return (left == right) == isinstance(node, exp.EQ)
    return None


def _literal_value(node: exp.Expr | None) -> tuple[str, object] | None:
    """('number', Decimal) or ('string', text) of a plain literal: an
    unsigned or negated number, or a '...' string (E'', U&'' and dollar
    quotes are other node types, and are not read)."""
    negative = isinstance(node, exp.Neg)
    if isinstance(node, exp.Neg):
        node = node.this
    if not isinstance(node, exp.Literal) or type(node) is not exp.Literal:  # not a subclass (national strings)
        return None
    if node.is_string:
        return None if negative else ("string", node.this)
    try:
        value = Decimal(node.this)
    except InvalidOperation:
        return None
    return ("number", -value if negative else value)


def check_probe_wrapper(wrapped: str) -> None:
    """The wrapped probe must parse as exactly SELECT * FROM (query) AS alias
    WHERE false: nothing of the query may have escaped its parentheses. A
    check of the text pgshroud wrote, parsed on purpose: only its verdict is used."""
    try:
        (statement,) = split_statements(wrapped)
        tree = parse_statement(statement)
    except Exception:  # noqa: BLE001 - whatever fails to parse fails the check
        tree = None
    if not isinstance(tree, exp.Select):
        raise Refusal(sqlstate.INTERNAL_ERROR, "pgshroud could not verify its own rewrite, so it refused the statement")
    source = tree.args.get("from_") or tree.args.get("from")
    where = tree.args.get("where")
    shape_ok = (
        source is not None and isinstance(source.this, exp.Subquery) and source.this.alias == PROBE_ALIAS.strip('"')
        and len(tree.expressions) == 1 and isinstance(tree.expressions[0], exp.Star)
        and isinstance(where, exp.Where) and isinstance(where.this, exp.Boolean) and where.this.this is False
        and not any(tree.args.get(k) for k in ("joins", "group", "having", "order", "limit", "offset", "with",
                                               "with_", "laterals", "distinct", "locks"))
    )
    if not shape_ok:
        raise Refusal(sqlstate.INTERNAL_ERROR, "pgshroud could not verify its own rewrite, so it refused the statement")
