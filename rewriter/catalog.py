"""A snapshot of the upstream catalog: the relations and functions the
rewriter resolves names against, and the operators, types and casts through
which a statement can run a function without calling it by name. Built by
`pgshroud.proxy.ops.catalog`; pure data here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

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
    unique_keys: tuple[frozenset[str], ...] = ()  # columns of each unique index (user tables)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Operator:
    """An operator that runs a function outside pg_catalog (it lives outside
    pg_catalog, or its function does)."""

    schema: str
    name: str
    function: str  # schema.name of the function it runs
    types: frozenset[int] = frozenset()  # oids of the types it takes or returns that are in Catalog.types

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class CatalogType:
    """A type that runs something outside pg_catalog when its values are
    converted, compared or shown (`runs`), or whose values carry or turn
    into such a type without any call in the text (`leads_to`)."""

    oid: int
    schema: str
    name: str
    runs: tuple[str, ...] = ()  # "function s.f", "CHECK constraint c"
    # Array elements and arrays of it, a domain's base type, a composite's
    # fields, a range's subtype, the targets of implicit casts.
    leads_to: frozenset[int] = frozenset()

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Cast:
    """A pg_cast row whose function lies outside pg_catalog."""

    source: int
    target: int
    source_name: str  # format_type of each end
    target_name: str
    function: str  # schema.name
    context: str  # pg_cast.castcontext: e explicit, a assignment, i implicit


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
    operators: tuple[Operator, ...] = ()
    # Functions on the pinned search path that `x.f` or `(x).f` can call as
    # f(x): lower-cased name -> (schema, name, provolatile) of each such
    # overload (one argument, or one without a default).
    attribute_functions: Mapping[str, frozenset[tuple[str, str, str]]] = field(default_factory=dict)
    # Only the types that run something or lead to one that does, and the
    # system types with implicit casts into those; by oid.
    types: Mapping[int, CatalogType] = field(default_factory=dict)
    casts: tuple[Cast, ...] = ()
    # Lower-cased names of types, relations and functions outside the system
    # schemas -> the oids (in `types`) of the values a statement naming them
    # can hold: the type itself, a relation's row and column types, a
    # function's argument and result types.
    type_names: Mapping[str, frozenset[int]] = field(default_factory=dict)

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

    def touched_types(self, names: Iterable[str], extra: Iterable[int] = ()) -> dict[int, str | None]:
        """The types in `types` whose values a statement may hold, each with
        the name that brings it in (None: every statement, as system types
        are in every statement). `names` are the lower-cased words of the
        statement; `extra` the types of operators it uses."""
        reached = dict(self._always_touched)
        starts: list[tuple[int, str | None]] = [(oid, None) for oid in extra]
        for name in names:
            starts.extend((oid, name) for oid in self.type_names.get(name, ()))
        self._reach(starts, reached)
        return reached

    @cached_property
    def _always_touched(self) -> dict[int, str | None]:
        reached: dict[int, str | None] = {}
        self._reach([(oid, None) for oid, t in self.types.items() if t.schema in SYSTEM_SCHEMAS], reached)
        return reached

    def _reach(self, starts: list[tuple[int, str | None]], reached: dict[int, str | None]) -> None:
        stack = [(oid, why) for oid, why in starts if oid not in reached]
        while stack:
            oid, why = stack.pop()
            if oid in reached:
                continue
            reached[oid] = why
            entry = self.types.get(oid)
            if entry is not None:
                stack.extend((next_oid, why) for next_oid in entry.leads_to if next_oid not in reached)
