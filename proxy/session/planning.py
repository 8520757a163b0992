"""What a session's statements are planned under, and their planning.

The plan context follows the policy and catalog snapshot of the moment (a
reload decides the session's role again) and the privacy settings
statements are planned under (proxy/session/privacy.py). A long statement
of an analysed session is planned on a worker thread: the conversation asks
its driver to (effects.PlanOffLoop) and keeps the plans here, by what they
depend on, for the handling that follows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from time import perf_counter
from typing import TYPE_CHECKING

from pgshroud import sqlstate
from pgshroud.policies.model import Access, Policy, Role
from pgshroud.proxy.session.privacy import PrivacySettings
from pgshroud.rewriter import PlanContext, Planner
from pgshroud.rewriter.plans import Plan, Refuse

if TYPE_CHECKING:
    from pgshroud.proxy.session.context import SessionContext

log = logging.getLogger("pgshroud.session")

# Query and Parse frames longer than this are planned on a worker thread:
# short enough that a statement planned in place holds the loop for
# milliseconds even where planning is not linear in its length.
OFF_LOOP_LENGTH = 1024


class Planning:
    def __init__(self, user: str, role: Role | None, shared: SessionContext, privacy: PrivacySettings) -> None:
        self.user = user
        self.role = role
        self._shared = shared
        self._privacy = privacy
        # A session that started raw was not vetted at startup (settings, search_path).
        self.started_rewritten = role is not None and role.access != Access.RAW
        self.context = self._fresh()
        # Plans made on a worker thread for the message being handled, by plan_key.
        self.preplanned: dict[tuple[object, ...], list[Plan]] = {}

    @property
    def role_name(self) -> str | None:
        return self.role.name if self.role is not None else None

    def _fresh(self) -> PlanContext:
        role = self.role
        policy = self._shared.policy
        if isinstance(policy, Policy) and role is not None:
            # The reloaded policy decides again. A session that started raw
            # may not turn into a rewritten one: it gets no role and is refused.
            role = policy.role_for(self.user)
            if role is not None and (role.access == Access.DENY or (
                    not self.started_rewritten and role.access != Access.RAW)):
                role = None
            self.role = role
        return PlanContext(
            user=self.user,
            policy=policy,
            role_sees_raw=role is not None and role.access == Access.RAW,
            role=role,
            catalog=self._shared.catalog(),
            privacy=self._privacy.planned,
        )

    def current(self) -> PlanContext:
        """The plan context, renewed when the policy or catalog changed, and
        with the privacy settings statements are now planned under."""
        context = self.context
        shared = self._shared
        if context.policy is not shared.policy or (
            context.policy is not None and not context.role_sees_raw and context.catalog is not shared.catalog()
        ):
            context = self.context = self._fresh()
        elif context.privacy is not self._privacy.planned:
            context = self.context = replace(context, privacy=self._privacy.planned)
        return context

    def plan(self, sql: str, privacy: Mapping[str, str] | None = None) -> list[Plan]:
        """The statement's plans under the current context (`privacy`: under
        these settings instead); a refusal when it cannot be analysed."""
        context = self.current()
        if privacy is not None and privacy != context.privacy:
            context = replace(context, privacy=privacy)
        analysed = context.policy is not None and not context.role_sees_raw
        limit = self._shared.config.max_statement_length
        if analysed and len(sql) > limit:
            return [Refuse(sqlstate.PROGRAM_LIMIT_EXCEEDED, f"the statement is too long for pgshroud to analyse "
                           f"({len(sql)} characters; the limit is {limit})",
                           hint="Shorten it, or ask the operator to raise pgshroud serve --max-statement-length.")]
        preplanned = self.preplanned.get(plan_key(sql, context)) if self.preplanned else None
        if preplanned is not None:
            plans = preplanned
        else:
            # Only statements that the planner analyses are timed.
            metrics = self._shared.metrics if analysed else None
            started = perf_counter() if metrics is not None else 0.0
            plans = run_planner(self._shared.planner, sql, context)
            if metrics is not None:
                metrics.planning.observe(perf_counter() - started)
        if not plans:
            return [Refuse(sqlstate.INTERNAL_ERROR, "pgshroud could not analyse this statement, so it was refused")]
        return plans

    def off_loop(self, frame_length: int) -> bool:
        """Long statements of analysed sessions are planned on a worker
        thread, so that no one statement holds up every other session;
        short ones (and every raw session's) are planned in place."""
        return frame_length > OFF_LOOP_LENGTH and self.started_rewritten


def run_planner(planner: Planner, sql: str, context: PlanContext) -> list[Plan]:
    """The planner's plans; none when it failed (the statement is refused)."""
    try:
        return list(planner(sql, context))
    except Exception:
        log.exception("planner failed; refusing the statement")
        return []


def plan_key(sql: str, context: PlanContext) -> tuple[object, ...]:
    """What a plan depends on besides the planner: the text, the policy and
    catalog snapshot (by identity) and the privacy settings."""
    return (sql, id(context.policy), id(context.catalog), tuple(sorted(context.privacy.items())))
