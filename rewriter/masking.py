"""The masking rewrite: every protected relation becomes a masked subquery.

The subquery selects each column's mask under the column's own name, so
everything the user wrote (WHERE, JOIN, GROUP BY, ORDER BY, casts, whole-row
references, `*`) only ever sees masked values. It is spliced into the
original text in place of the relation's name, so the rest of the statement
keeps exactly the meaning the user gave it.
"""

from __future__ import annotations

from pgshroud.policies.model import ProtectedTable
from pgshroud.rewriter.catalog import Relation
from pgshroud.rewriter.relations import RelationRef
from pgshroud.rewriter.views import quote_ident, relation_view


def masked_subquery(table: ProtectedTable, relation: Relation, role: str, row_filter: str | None) -> str:
    """The relation as a masked role reads it row by row: every column
    through its mask (the privacy unit too), the row filter fenced off from
    the user's predicates, values as the masks give them."""
    return relation_view(table, relation, role, row_filter, raw_unit=False, clamped=False, fenced=True)


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
