"""The views that stand in for relations a non-raw role reads: the one
builder of a protected relation's view, and pg_class without its row counts.

Masking (rewriter/masking.py) and private answers
(rewriter/private/analysis.py) both read protected tables through
`relation_view`, so a change to how a column is masked cannot reach one of
them and miss the other. What differs between the two is named by the
caller: whether the privacy unit is read raw (a private answer needs it to
bound each person's contribution; a masked row never shows it), whether
values are clamped into ranges no allowed expression can fail on, and
whether the row filter is fenced off from the user's predicates.
"""

from __future__ import annotations

import re

from pgshroud.policies.masks import mask_expression
from pgshroud.policies.model import ProtectedTable
from pgshroud.rewriter.catalog import Relation

# pg_class's estimates of a relation's size, which come from its rows.
ROW_COUNT_COLUMNS = frozenset({"reltuples", "relpages", "relallvisible"})
# The alias of the stored relation inside its view.
INNER_ALIAS = '"pgshroud_raw"'

# Values outside these ranges are clamped into them (infinite dates and
# timestamps read as NULL), so that no expression a private query allows can
# fail on them: numeric arithmetic stays far below numeric's limit of
# 10**131072, and dates convert to timestamps in any time zone.
NUMERIC_LIMIT = "1e100"
EARLIEST, LATEST = "4700-01-01 BC", "294000-01-01"
# The date and time types (as format_type names them) and their casts.
_TIME_CASTS = {"date": "date", "timestamp without time zone": "timestamp",
               "timestamp with time zone": "timestamptz"}
_MODIFIERS = re.compile(r"\(.*?\)")


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def relation_view(table: ProtectedTable, relation: Relation, role: str, row_filter: str | None, *,
                  raw_unit: bool, clamped: bool, fenced: bool) -> str:
    """`(SELECT <each column as `role` may read it> FROM <relation> [WHERE row_filter])`.

    Every column keeps its name; columns the policy does not name read as
    NULL, typed as before; the others read through the role's mask.
    `raw_unit`: the privacy unit column is read as stored instead of through
    its mask. `clamped`: masked values are clamped into safe ranges
    (`clamp`). `fenced`: the row filter is evaluated before anything the
    user wrote around the view.
    ValueError when a mask of the policy does not apply to its column.
    """
    unit = table.privacy_unit.column
    columns = []
    for name, type_name in relation.columns:
        column_policy = table.columns.get(name)
        target = quote_ident(name)
        if raw_unit and name == unit:
            columns.append(f"{INNER_ALIAS}.{target}")
        elif column_policy is None:
            columns.append(f"NULL::{type_name} AS {target}")
        else:
            value = mask_expression(column_policy.mask_for(role), f"{INNER_ALIAS}.{target}", type_name)
            columns.append(f"{clamp(value, type_name) if clamped else value} AS {target}")
    stored = f"{quote_ident(relation.schema)}.{quote_ident(relation.name)}"
    sql = f"SELECT {', '.join(columns)} FROM {stored} AS {INNER_ALIAS}"
    if row_filter is not None:
        sql += f" WHERE ({row_filter})"
        if fenced:
            # OFFSET 0 keeps PostgreSQL from pulling the subquery up or pushing
            # the user's predicates below the filter, where they would be
            # evaluated on hidden rows (an error there is an oracle).
            sql += " OFFSET 0"
    return f"({sql})"


def clamp(value: str, format_type: str) -> str:
    """`value` (of type `format_type`) clamped into the safe ranges above."""
    type_name = _MODIFIERS.sub("", format_type).strip().lower()
    if type_name == "numeric":
        # GREATEST and LEAST skip NULLs, so NULL must not reach them.
        return (f"(CASE WHEN {value} IS NULL OR {value} = 'NaN'::numeric THEN {value} "
                f"ELSE LEAST(GREATEST({value}, -{NUMERIC_LIMIT}), {NUMERIC_LIMIT}) END)")
    if type_name in _TIME_CASTS:
        cast = _TIME_CASTS[type_name]
        return (f"(CASE WHEN isfinite({value}) THEN LEAST(GREATEST({value}, '{EARLIEST}'::{cast}), "
                f"'{LATEST}'::{cast}) END)")
    return value


def pg_class_without_row_counts(relation: Relation, system_columns: tuple[str, ...] = ()) -> str:
    """pg_class as roles that aggregate read it: its row-count estimates
    read as NULL (for `*` and whole rows), and the system columns the
    statement names, which a subquery would otherwise lose (only those: `*`
    must not gain them). ValueError without the catalog snapshot's columns."""
    if not relation.columns:
        raise ValueError("pg_class cannot be read by aggregate roles without a catalog snapshot")
    columns = ", ".join(
        [f"NULL::{type_name} AS {quote_ident(name)}" if name in ROW_COUNT_COLUMNS else quote_ident(name)
         for name, type_name in relation.columns]
        + [f"{quote_ident(name)} AS {quote_ident(name)}" for name in system_columns]
    )
    return f"(SELECT {columns} FROM pg_catalog.pg_class)"
