"""Which relations a statement reads, resolved against the catalog."""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from pgshroud.rewriter.catalog import Catalog, Relation


class RelationError(ValueError):
    """A reference pgshroud will not resolve; the message says why."""


@dataclass(frozen=True)
class RelationRef:
    node: exp.Table
    relation: Relation
    start: int  # span of the name as written (schema.table), in the Query
    end: int  # exclusive
    has_alias: bool


def fold(identifier: exp.Identifier) -> str:
    """The name PostgreSQL sees: unquoted identifiers fold to lower case."""
    name: str = identifier.this
    return name if identifier.quoted else name.lower()


def _name_span(table: exp.Table) -> tuple[int, int]:
    parts = [p for p in (table.args.get("catalog"), table.args.get("db"), table.this) if isinstance(p, exp.Identifier)]
    metas = [p.meta for p in parts]
    if not metas or any("start" not in m for m in metas):
        raise RelationError(f"cannot locate the relation {table.sql('postgres')!r} in the statement text")
    return min(m["start"] for m in metas), max(m["end"] for m in metas) + 1


def _cte_in_scope(table: exp.Table, name: str) -> bool:
    """Whether an unqualified name at this place means a CTE, by PostgreSQL's
    scoping: a query's CTEs are visible in its own body and, within its WITH,
    to the CTEs after them (and to themselves under RECURSIVE)."""
    child: exp.Expr = table
    node = table.parent
    while node is not None:
        if isinstance(node, exp.With) and isinstance(child, exp.CTE):
            names = [fold(cte.args["alias"].this) for cte in node.expressions]
            position = next(i for i, cte in enumerate(node.expressions) if cte is child)
            visible = names[: position + 1] if node.args.get("recursive") else names[:position]
            if name in visible:
                return True
        else:
            with_clause = node.args.get("with_") or node.args.get("with")
            if isinstance(with_clause, exp.With) and child is not with_clause and name in (
                fold(cte.args["alias"].this) for cte in with_clause.expressions
            ):
                return True
        child, node = node, node.parent
    return False


def find_relations(tree: exp.Expr, catalog: Catalog, user: str) -> list[RelationRef]:
    """Every table reference that is not a CTE, resolved.

    A CTE may not share its name with a relation the session can see:
    otherwise whether a reference means the CTE or the table would depend
    on scoping rules pgshroud would have to get exactly right.
    """
    cte_names = {fold(cte.args["alias"].this) for cte in tree.find_all(exp.CTE)}
    for name in cte_names:
        if catalog.has_relation_named(name, user):
            raise RelationError(f'the CTE name "{name}" hides a relation of the same name; rename the CTE')
    refs: list[RelationRef] = []
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            # A function in FROM (generate_series(...), unnest(...)) is a
            # function call; the function check decides about it.
            continue
        schema = table.args.get("db")
        if table.args.get("catalog") is not None:
            raise RelationError(f"cross-database reference {table.sql('postgres')!r} is not allowed")
        schema_name = fold(schema) if isinstance(schema, exp.Identifier) else None
        name = fold(table.this)
        if schema_name is None and name in cte_names and _cte_in_scope(table, name):
            continue
        relation = catalog.resolve(schema_name, name, user)
        if relation is None:
            shown = f"{schema_name}.{name}" if schema_name else name
            raise RelationError(f'relation "{shown}" is not in the catalog pgshroud knows or is not named in the policy')
        start, end = _name_span(table)
        refs.append(RelationRef(table, relation, start, end, table.args.get("alias") is not None))
    return refs
