"""The durable privacy budget ledger and the cache of released answers."""

from pgshroud.proxy.budget.protocol import Ledger, LedgerAdministration

__all__ = ["Ledger", "LedgerAdministration"]
