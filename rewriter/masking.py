"""The masking rewrite: every protected relation becomes a masked subquery.

The subquery selects each column's mask under the column's own name, so
everything the user wrote (WHERE, JOIN, GROUP BY, ORDER BY, casts, whole-row
references, `*`) only ever sees masked values. It is spliced into the
original text in place of the relation's name, so the rest of the statement
keeps exactly the meaning the user gave it.
"""

from __future__ import annotations

from pgshroud.policies.masks import mask_expression
from pgshroud.policies.model import ProtectedTable
from pgshroud.rewriter.catalog import Relation
from pgshroud.rewriter.relations import RelationRef

INNER_ALIAS = '"pgshroud_raw"'


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def masked_subquery(table: ProtectedTable, relation: Relation, role: str, row_filter: str | None) -> str:
    columns = []
    for name, type_name in relation.columns:
        column_policy = table.columns.get(name)
        target = quote_ident(name)
        if column_policy is None:
            # Columns the policy does not name read as NULL, typed as before.
            columns.append(f"NULL::{type_name} AS {target}")
        else:
            expression = mask_expression(column_policy.mask_for(role), f"{INNER_ALIAS}.{target}", type_name)
            columns.append(f"{expression} AS {target}")
    source = f"{quote_ident(relation.schema)}.{quote_ident(relation.name)} AS {INNER_ALIAS}"
    sql = f"SELECT {', '.join(columns)} FROM {source}"
    if row_filter is not None:
        # OFFSET 0 keeps PostgreSQL from pulling the subquery up or pushing
        # the user's predicates below the filter, where they would be
        # evaluated on hidden rows (an error there is an oracle).
        sql += f" WHERE ({row_filter}) OFFSET 0"
    return f"({sql})"


def splice(text: str, offset: int, replacements: list[tuple[int, int, str]]) -> str:
    """Replace [start, end) spans (offsets into the whole Query) in `text`."""
    out, position = [], offset
    for start, end, new in sorted(replacements):
        if start < position:
            raise ValueError("overlapping rewrite spans")
        out.append(text[position - offset : start - offset])
        out.append(new)
        position = end
    out.append(text[position - offset :])
    return "".join(out)


def replacement_for(ref: RelationRef, subquery: str) -> tuple[int, int, str]:
    alias = "" if ref.has_alias else f" AS {quote_ident(ref.relation.name)}"
    return ref.start, ref.end, subquery + alias
