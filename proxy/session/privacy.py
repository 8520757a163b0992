"""A session's pgshroud settings (SET pgshroud.epsilon ...) and their undo.

Statements are planned as if every change sent upstream succeeds, as
PostgreSQL runs them in turn (`planned`); a change holds once PostgreSQL
says it succeeded (`current`). While a transaction that changed them is
open, their value before it is kept, so that a rollback undoes them as it
undoes a SET. RESET ALL and DISCARD ALL, which pass through to PostgreSQL,
put every pgshroud setting back to the policy's default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

from pgshroud.proxy.session import responses as r
from pgshroud.rewriter.plans import Local, Passthrough, Plan, PrivacySetting

NO_SETTINGS: Mapping[str, str] = MappingProxyType({})
# RESET ALL and DISCARD ALL: every pgshroud setting back to the policy's default.
RESET_ALL = PrivacySetting("*", None)
# They pass through to PostgreSQL; the session recognises them by their words.
_RESETS_ALL = re.compile(r"\s*+(?:reset|discard)\s++all\s*+(?:;\s*+)?\Z", re.IGNORECASE)
IDLE = ord("I")


class PrivacySettings:
    __slots__ = ("_before", "_settling", "_undo", "current", "planned", "watching")

    def __init__(self) -> None:
        # As of the statements that succeeded.
        self.current: Mapping[str, str] = NO_SETTINGS
        # As statements are planned: with every change whose outcome is not known yet.
        self.planned: Mapping[str, str] = NO_SETTINGS
        # While a transaction that changed them is open: their value before it.
        self._before: Mapping[str, str] | None = None
        # A transaction that changed them is open: its end decides them.
        self.watching = False
        self._undo = False  # the open transaction's last statement failed or rolled back
        self._settling: list[r.Settle] = []

    @property
    def any(self) -> bool:
        """Some setting is or will be set: a RESET ALL then changes something."""
        return bool(self.planned or self.current)

    def settle(self, inner: r.Action | None, change: PrivacySetting) -> r.Settle:
        """The action of a statement that changes the settings: later
        statements are planned with the change, which holds once it succeeds."""
        settle = r.Settle(inner, change, self._settled)
        self._settling.append(settle)
        self._replanned()
        return settle

    def _settled(self, settle: r.Settle, succeeded: bool) -> None:
        try:
            self._settling.remove(settle)
        except ValueError:
            return
        if succeeded:
            if self._before is None:
                self._before, self._undo, self.watching = self.current, False, True
            self.current = applied(self.current, settle.change)
        self._replanned()

    def _replanned(self) -> None:
        planned = self.current
        for settle in self._settling:
            planned = applied(planned, settle.change)
        if planned != self.planned:
            self.planned = planned

    def watch_transaction(self, kind: int, data: bytes, pos: int) -> None:
        """An upstream CommandComplete, ErrorResponse or ReadyForQuery at
        `pos` while watching: when the transaction ends, keep the settings if
        it committed, undo them if it rolled back, as PostgreSQL does a SET.
        (A ROLLBACK TO SAVEPOINT does not undo them.)"""
        if kind == r.ERROR:
            self._undo = True
        elif kind == r.COMMAND_COMPLETE:
            self._undo = data.startswith(b"ROLLBACK\0", pos + 5)
        elif data[pos + 5] == IDLE:  # ReadyForQuery outside a transaction
            if self._undo and self._before is not None:
                self.current = self._before
            self._before, self._undo, self.watching = None, False, False
            self._replanned()


def resets_all(plan: Plan) -> bool:
    """A RESET ALL or DISCARD ALL, which the planner passes through."""
    return type(plan) is Passthrough and _RESETS_ALL.match(plan.sql) is not None


def setting_change(plan: Plan) -> PrivacySetting | None:
    if isinstance(plan, Local):
        return plan.setting
    return RESET_ALL if resets_all(plan) else None


def applied(settings: Mapping[str, str], change: PrivacySetting) -> Mapping[str, str]:
    """The settings after a change (never changed in place: plan contexts hold them)."""
    if change is RESET_ALL:
        return NO_SETTINGS
    if change.value is None:
        if change.name not in settings:
            return settings
        return MappingProxyType({k: v for k, v in settings.items() if k != change.name})
    if settings.get(change.name) == change.value:
        return settings
    return MappingProxyType({**settings, change.name: change.value})
