"""What every session shares: configuration, planner, ledger, policy, the
catalog snapshot, where decisions are reported, and the answer cache."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pgshroud.policies.model import Policy
from pgshroud.proxy.budget import Ledger
from pgshroud.proxy.budget.answer_cache import AnswerCache
from pgshroud.proxy.ops.config import ServerConfig
from pgshroud.rewriter import Planner
from pgshroud.rewriter.catalog import Catalog

if TYPE_CHECKING:
    from pgshroud.proxy.ops.audit import AuditLog
    from pgshroud.proxy.ops.metrics import Metrics


class SessionContext:
    """What every session shares: configuration, planner, ledger, policy
    (replaced as a whole on reload), the catalog snapshot, where decisions
    are reported (audit log, metrics; each optional), and the answer cache
    (None when config.answer_cache_seconds is 0)."""

    def __init__(
        self,
        config: ServerConfig,
        planner: Planner,
        ledger: Ledger | None = None,
        policy: Policy | None = None,
        catalog: Callable[[], Catalog | None] = lambda: None,
        audit: AuditLog | None = None,
        metrics: Metrics | None = None,
    ):
        self.config = config
        self.planner = planner
        self.ledger = ledger
        self.policy = policy
        self.catalog = catalog
        self.audit = audit
        self.metrics = metrics
        seconds = config.answer_cache_seconds
        self.answers: AnswerCache | None = AnswerCache(seconds) if seconds > 0 else None
