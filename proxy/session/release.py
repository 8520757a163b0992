"""The release of a private answer: its charge, the answer cache, its notices.

A Release is charged before anything of it is sent (proxy/budget/ledger.py
commits the cost durably, or refuses); its answer is then built from
PostgreSQL's raw aggregates, kept in the answer cache, and sent with a
notice of what it cost and what is left (proxy/session/budget_notes.py). A
repeat within the cache's lifetime is the same answer at no cost. The
ledger and the cache's claims are reached through effects, so this module
does no I/O: its generators yield what they wait for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from pgshroud import sqlstate
from pgshroud.proxy.budget.answer_cache import AnswerCache, AnswerKey, CachedAnswer, Claim
from pgshroud.proxy.codec.messages import ErrorResponse
from pgshroud.proxy.session import budget_notes
from pgshroud.proxy.session import responses as r
from pgshroud.proxy.session.cursors import HeldCursors
from pgshroud.proxy.session.effects import Charge, ClaimAnswer, ReadStanding, WaitCancelled, Work
from pgshroud.rewriter.plans import Cursor, Local, LocalAnswer, RawResult, Refuse, Release

if TYPE_CHECKING:
    from pgshroud.policies.accounting import Standing
    from pgshroud.proxy.session.context import SessionContext
    from pgshroud.rewriter import PlanContext

log = logging.getLogger("pgshroud.session")

NO_LEDGER = Refuse(sqlstate.OBJECT_NOT_IN_PREREQUISITE_STATE,
                   "private answers need a privacy budget ledger, and none is configured")
LEDGER_DOWN = Refuse(sqlstate.SYSTEM_ERROR, "the privacy budget ledger is unavailable, so nothing was released")
STANDING_DOWN = Refuse(sqlstate.SYSTEM_ERROR,
                       "the privacy budget ledger is unavailable, so pgshroud cannot show the budget")
QUERY_CANCELED = Refuse(sqlstate.QUERY_CANCELED, "canceling statement due to user request")
# How long a private statement waits for another session's release of the same answer.
CLAIM_WAIT_SECONDS = 2.0

WITHHELD_ERROR = r.error_bytes(
    sqlstate.DATA_EXCEPTION,
    "the private aggregate failed upstream; its error is withheld because it could depend on protected data",
)


class Charged(NamedTuple):
    """What a charged release's answer needs: its answer cache key (None: not
    kept) and where the user's budgets stood after the charge (None: unknown)."""

    key: AnswerKey | None
    standings: Sequence[Standing] | None
    overlapping: float | None = None  # answer_cache.Claim.overlapping


NOT_KEPT = Charged(None, None)


def withheld_error(frame: bytes) -> bytes:
    """An upstream error inside a charged Release could depend on protected
    data, and so could which error it is: a timeout, a cancel, running out
    of memory or a failed cast all get the same answer. Only an aborted
    transaction's refusal, raised before anything runs, is relayed."""
    upstream = ErrorResponse.decode(frame[5:])
    if (upstream.sqlstate or "")[:2] == "25":
        return frame
    return WITHHELD_ERROR


class Releases:
    """One session's private answers: what it asks of the ledger and the
    answer cache, and what the last answer cost (SHOW pgshroud.last_answer)."""

    def __init__(self, user: str, shared: SessionContext, cursors: HeldCursors) -> None:
        self.user = user
        self._shared = shared
        self.answers = shared.answers
        self._metrics = shared.metrics
        self._cursors = cursors
        self.last_answer = "no private answer has been released in this session yet"

    # the ledger

    def charge(self, plan: Release, key: AnswerKey | None, role: str | None
               ) -> Work[tuple[Refuse | None, Sequence[Standing] | None]]:
        """Charge the release (`key`: its answer cache key, which tells a role's
        shared release): the ledger's refusal, or None and where the user's
        budgets stand after the charge."""
        refusal: Refuse | None
        standings = None
        if self._shared.ledger is None:
            refusal = NO_LEDGER
        else:
            answers = self.answers
            release = answers.release_of(key) if key is not None and answers is not None else None
            try:
                outcome = yield Charge(self.user, plan.spec.cost, release)
            except Exception:
                log.exception("ledger charge failed")
                refusal = LEDGER_DOWN
            else:
                refusal, standings = (outcome, None) if isinstance(outcome, Refuse) else (None, outcome)
        if self._metrics is not None:
            self._metrics.charge(role, plan.spec.cost, refusal)
        return refusal, standings

    def standing(self) -> Work[Sequence[Standing] | Refuse]:
        """Where the user's budgets stand now, or why that cannot be told."""
        if self._shared.ledger is None:
            return NO_LEDGER
        try:
            standings: Sequence[Standing] = yield ReadStanding(self.user)
        except Exception:
            log.exception("reading the privacy budget ledger failed")
            return STANDING_DOWN
        return standings

    # the answer cache

    def key(self, statement: object, plan: Release, privacy: Mapping[str, str], context: PlanContext,
            role: str | None, settings: Mapping[str, str]) -> AnswerKey | None:
        """The answer cache's key of a release (None without a cache)."""
        if self.answers is None:
            return None
        return AnswerCache.key(user=self.user, role=role, policy=context.policy, catalog=context.catalog,
                               privacy=privacy, cost=plan.spec.cost, statement=statement, settings=settings)

    def claim(self, key: AnswerKey | None) -> Work[CachedAnswer | Claim | Refuse | None]:
        """The kept answer (after a release of the same key in flight, if any),
        or the claim to release it. Another session's release is waited for
        CLAIM_WAIT_SECONDS at most (None: release without a claim), so that no
        client stalls another; a cancel request ends the wait (Refuse)."""
        if key is None or self.answers is None:
            return None
        try:
            found: CachedAnswer | Claim | None = yield ClaimAnswer(key, CLAIM_WAIT_SECONDS)
        except WaitCancelled:
            return QUERY_CANCELED
        return found

    def abandon(self, key: AnswerKey | None) -> None:
        if key is not None and self.answers is not None:
            self.answers.abandon(key)

    def cached(self, key: AnswerKey | None) -> CachedAnswer | None:
        if key is None or self.answers is None:
            return None
        return self.answers.get(key)

    def repeat(self, cached: CachedAnswer, cursor: Cursor | None = None) -> Work[Local]:
        """A released answer again, with a notice that it cost nothing now and
        what is left; for a DECLARE, held by the cursor it declares."""
        standings = yield from self.standing()
        failed = isinstance(standings, Refuse) and standings is not NO_LEDGER
        notice = budget_notes.cached_notice(cached, None if isinstance(standings, Refuse) else standings, failed)
        answer = budget_notes.with_notice(cached.answer, notice)
        self.last_answer = "; ".join(answer.notices)
        if cursor is None:
            return Local(answer)
        self._cursors.declare(cursor.name, answer, cursor.hold)
        return Local(LocalAnswer("DECLARE CURSOR", notices=answer.notices))

    # the answer

    def transform(
        self,
        plan: Release,
        *,
        describe: bool,
        formats: tuple[int, ...] | None = None,
        portal: r.PortalAnswer | None = None,
        max_rows: int = 0,
        charged: Charged | None = None,
    ) -> r.Transform:
        """The action that turns PostgreSQL's raw aggregates into the answer."""
        columns = plan.spec.columns
        finalize = self._released(plan, charged or NOT_KEPT)
        if self._metrics is not None:
            finalize = self._metrics.timed_release(finalize)  # timed from here to CommandComplete
        return r.Transform(
            finalize,
            columns,
            formats if formats is not None else (0,) * len(columns),
            describe=describe,
            on_error=self._failed(charged),
            portal=portal,
            max_rows=max_rows,
        )

    def _failed(self, charged: Charged | None) -> Callable[[bytes], bytes]:
        """The release's error, withheld; its claim on the answer cache is
        given up, so that whoever waits for the answer asks PostgreSQL."""
        answers, key = self.answers, charged.key if charged is not None else None

        def failed(frame: bytes) -> bytes:
            if answers is not None and key is not None:
                answers.abandon(key)
            return withheld_error(frame)

        return failed

    def _released(self, plan: Release, charged: Charged) -> Callable[[RawResult], LocalAnswer]:
        """The release's finalize, whose answer is kept in the answer cache
        and gets the notice of its cost and what is left."""
        spec = plan.spec
        finalize, cost = spec.finalize, spec.cost
        notice = budget_notes.cost_notice(cost, charged.standings, charged.overlapping)
        answers, key = self.answers, charged.key
        cursor = plan.cursor

        def released(raw: RawResult) -> LocalAnswer:
            answer = finalize(raw)
            if answers is not None and key is not None:
                answers.put(key, answer, cost)
            answer = budget_notes.with_notice(answer, notice)
            self.last_answer = "; ".join(answer.notices)
            if cursor is None:
                return answer
            # Held for FETCH; the DECLARE itself returns no row.
            self._cursors.declare(cursor.name, answer, cursor.hold)
            return LocalAnswer("DECLARE CURSOR", notices=answer.notices)

        return released

