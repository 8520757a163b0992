"""A snapshot of the upstream catalog: the relations and functions the
rewriter resolves names against. Built by `proxy.catalog`; pure data here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema"})
# pg_catalog is searched first implicitly; `public` is the pinned search_path.
PINNED_SEARCH_PATH = ("pg_catalog", "public")


@dataclass(frozen=True)
class Relation:
    schema: str
    name: str
    kind: str  # pg_class.relkind: r table, v view, m matview, p partitioned, f foreign, ...
    columns: tuple[tuple[str, str], ...] = ()  # (name, format_type), in attnum order
    not_null: frozenset[str] = frozenset()  # columns declared NOT NULL

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Catalog:
    relations: Mapping[tuple[str, str], Relation]
    # pg_catalog functions by name: the volatilities of their overloads.
    catalog_functions: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # Names of functions outside the system schemas, which could shadow
    # or stand in for a pg_catalog function of the same name.
    user_function_names: frozenset[str] = frozenset()
    schemas: frozenset[str] = frozenset({"public"})
    version: int = 0

    def resolve(self, schema: str | None, name: str, user: str) -> Relation | None:
        """Resolve like PostgreSQL with search_path `public`, which pgshroud
        pins at startup for sessions that do not see raw data (so neither a
        role's default search_path nor a schema named like the user applies;
        `user` is kept for the day the pinned path names it)."""
        if schema is not None:
            return self.relations.get((schema, name))
        for candidate in PINNED_SEARCH_PATH:
            relation = self.relations.get((candidate, name))
            if relation is not None:
                return relation
        return None

    def has_relation_named(self, name: str, user: str) -> bool:
        return self.resolve(None, name, user) is not None
