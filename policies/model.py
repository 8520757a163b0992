"""The policy model: what each role may see, and at what cost.

Typed, frozen objects built by `policies.loader` from one YAML file. Table
and column names are stored as PostgreSQL folds them (unquoted names in
lower case), tables qualified with their schema (`public` unless given).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Access(str, Enum):
    RAW = "raw"  # sees everything, statements pass through
    MASKED = "masked"  # row-level queries with masks and row filters applied
    AGGREGATE = "aggregate"  # only differentially private aggregates
    DENY = "deny"  # nothing


@dataclass(frozen=True)
class MaskSpec:
    """One mask: a kind from `policies.masks.MASKS` and its parameters."""

    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)



@dataclass(frozen=True)
class ColumnPolicy:
    name: str
    mask: MaskSpec  # the default for masked roles
    role_masks: Mapping[str, MaskSpec] = field(default_factory=dict)
    # Differential privacy: values are clamped into these bounds.
    bounds: tuple[float, float] | None = None
    # Group keys whose values may be published without partition selection:
    # a list, or the values of a public table's column ("schema.table.column").
    public_domain: tuple[str, ...] | None = None
    public_domain_table: str | None = None
    # Differential privacy for a date column: its values are clamped into
    # these dates (bounds: [2015-01-01, 2025-12-31]), for min, max and percentile_disc.
    date_bounds: tuple[datetime.date, datetime.date] | None = None

    def mask_for(self, role: str) -> MaskSpec:
        return self.role_masks.get(role, self.mask)


@dataclass(frozen=True)
class PrivacyUnit:
    """The person each row belongs to: a column of the table, or a column
    that references the privacy unit of another table."""

    column: str
    references: str | None = None  # "schema.table.column"


@dataclass(frozen=True)
class ContributionBounds:
    max_groups_per_unit: int = 1
    max_rows_per_group: int = 1


@dataclass(frozen=True)
class ProtectedTable:
    name: str  # schema.table
    privacy_unit: PrivacyUnit
    columns: Mapping[str, ColumnPolicy]
    row_filters: Mapping[str, str] = field(default_factory=dict)  # role -> SQL predicate
    contribution: ContributionBounds = ContributionBounds()


@dataclass(frozen=True)
class Role:
    name: str
    access: Access
    users: tuple[str, ...] = ()
    table_access: Mapping[str, Access] = field(default_factory=dict)  # schema.table -> override
    allow_functions: frozenset[str] = frozenset()  # schema.function, bare names as pg_catalog.name
    # The role's private answers are released once for all its users and
    # charged to the role's budget (budgets.per_role), not to each user's:
    # any user of the role repeating a statement gets the one release.
    share_answers: bool = False

    def access_to(self, table: str) -> Access:
        return self.table_access.get(table, self.access)

    @property
    def aggregates_privately(self) -> bool:
        """Some table is read by this role only through private aggregates."""
        return self.access == Access.AGGREGATE or Access.AGGREGATE in self.table_access.values()


@dataclass(frozen=True)
class SecretRef:
    """A secret named by reference only: an environment variable or a file."""

    env: str | None = None
    file: str | None = None


@dataclass(frozen=True)
class EpsilonDelta:
    epsilon: float
    delta: float = 0.0


@dataclass(frozen=True)
class PrivacyDefaults:
    default: EpsilonDelta = EpsilonDelta(0.1, 1e-7)
    maximum: EpsilonDelta = EpsilonDelta(1.0, 1e-5)
    # The least epsilon, and the least delta other than 0, a query may be
    # answered at: below them an answer costs next to nothing, so an analyst
    # could ask as many as they like (an oracle at epsilon 1e-6 is free).
    floor: EpsilonDelta = EpsilonDelta(0.01, 1e-12)


@dataclass(frozen=True)
class Budgets:
    per_user: EpsilonDelta | None = None
    per_role: Mapping[str, EpsilonDelta] = field(default_factory=dict)
    per_dataset: EpsilonDelta | None = None
    # How a budget renews: "never", or a period such as "1d", "7d", "30d".
    period: str = "never"
    # How charges compose into (epsilon, delta): "basic" (epsilons add, deltas
    # add) or "zcdp" (approximate zCDP: rho adds, converted to epsilon at the
    # delta the charges leave unspent; see policies/README.md).
    composition: str = "basic"
    # With a period: every budget also has a lifetime cap of this many times
    # its (epsilon, delta), over all periods, so repeated windows cannot leak
    # without limit. None with period "never" (the caps are lifetime caps).
    lifetime: float | None = None


@dataclass(frozen=True)
class AnswerReuse:
    """How long a released private answer is given again, at no cost, to whoever may have it.

    `reuse_for` as written (`12h`, `1d`, `budget_period`; None: the serve
    option --answer-cache-seconds decides) and `seconds`, what it comes to."""

    reuse_for: str | None = None
    seconds: float | None = None


# budgets.lifetime when a period is set and the policy does not say.
DEFAULT_LIFETIME = 10.0
COMPOSITIONS = ("basic", "zcdp")


@dataclass(frozen=True)
class AuthenticationPolicy:
    """What a login through pgshroud must prove while pgshroud relays
    authentication to PostgreSQL.

    A login that PostgreSQL completes without any password exchange (trust,
    or peer, ident or cert for pgshroud's own connection) proves nothing
    about the client: anyone who can reach pgshroud could claim the user.
    Such logins are refused unless the user's role is listed here.
    """

    allow_upstream_trust: frozenset[str] = frozenset()  # role names

    def allows_upstream_trust(self, role: Role | None) -> bool:
        return role is not None and role.name in self.allow_upstream_trust


@dataclass(frozen=True)
class Policy:
    source: str  # the file it was loaded from, for messages
    roles: Mapping[str, Role]
    default_role: str | None  # None: users the policy does not name are denied
    protected_tables: Mapping[str, ProtectedTable]
    public_tables: frozenset[str]
    allow_functions: frozenset[str] = frozenset()  # for every non-raw role, as in Role
    secrets: Mapping[str, SecretRef] = field(default_factory=dict)
    privacy: PrivacyDefaults = PrivacyDefaults()
    budgets: Budgets = Budgets()
    admin_dsn: SecretRef | None = None  # for catalog reads and the ledger
    authentication: AuthenticationPolicy = AuthenticationPolicy()
    answers: AnswerReuse = AnswerReuse()

    def role_for(self, user: str) -> Role | None:
        """The user's role, or None when the user is denied."""
        for role in self.roles.values():
            if user in role.users:
                return role
        if self.default_role is None:
            return None
        return self.roles.get(self.default_role)
