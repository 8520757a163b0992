"""One client's session after startup, on the event loop.

The session's decisions are the conversation's (proxy/session/conversation.py),
which does no I/O. This driver feeds it what each leg receives and carries
out the effects it returns (proxy/session/effects.py): writes, pauses and
closes at once, and the requests (a charge, a ledger read, a claim on the
answer cache, planning or a large answer on a worker thread) as tasks whose
results go back to the conversation. Backpressure stays here: a slow reader
pauses the other side's reads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from pgshroud.proxy.session.context import SessionContext
from pgshroud.proxy.session.conversation import Conversation
from pgshroud.proxy.session.effects import (
    CancelUpstream,
    Charge,
    ClaimAnswer,
    Close,
    Effect,
    FinalizeOffLoop,
    PauseReading,
    PlanOffLoop,
    ReadStanding,
    Request,
    ResumeReading,
    SendClient,
    SendUpstream,
    Side,
    WaitCancelled,
)
from pgshroud.proxy.session.planning import run_planner
from pgshroud.proxy.wire.leg import Leg
from pgshroud.proxy.wire.upstream import send_cancel

if TYPE_CHECKING:
    from pgshroud.proxy.budget.answer_cache import CachedAnswer, Claim
    from pgshroud.proxy.wire.startup import Established

__all__ = ["Session", "SessionContext"]

log = logging.getLogger("pgshroud.session")

# Long statements are planned, and large private answers built, here.
_WORKERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pgshroud-worker")


class Session:
    def __init__(self, client: Leg, established: Established, shared: SessionContext) -> None:
        self.client = client
        self.upstream = established.upstream
        self.shared = shared
        self.upstream_key = established.upstream_key
        self.conversation = Conversation(established.user, established.role, established.statuses, shared)
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._claim_wait: asyncio.Future[CachedAnswer | Claim] | None = None  # see _claim
        self._on_client_data = self._relay(self.conversation.receive_client, SendUpstream, self.upstream)
        self._on_upstream_data = self._relay(self.conversation.receive_upstream, SendClient, self.client)

    # lifecycle

    def start(self) -> None:
        self.client.on_data = self._on_client_data
        self.upstream.on_data = self._on_upstream_data
        self.client.on_lost = self._on_client_lost
        self.upstream.on_lost = self._on_upstream_lost
        # Backpressure: a slow reader pauses the other side's reads.
        self.client.on_pause_writing = lambda: self.upstream.pause("client-slow")
        self.client.on_resume_writing = lambda: self.upstream.resume("client-slow")
        self.upstream.on_pause_writing = lambda: self.client.pause("upstream-slow")
        self.upstream.on_resume_writing = lambda: self.client.resume("upstream-slow")
        # Bytes that arrived while startup was still reading frames.
        leftover = self.client.frames.take_all()
        if leftover:
            self._on_client_data(leftover)
        leftover = self.upstream.frames.take_all()
        if leftover:
            self._on_upstream_data(leftover)

    def drain(self) -> None:
        """Close at the next moment nothing is running."""
        self._carry_out(self.conversation.drain())

    def cancel_upstream(self) -> asyncio.Future[None] | None:
        """Send a cancel upstream; the returned task ends once PostgreSQL
        has taken it (it closes the cancel connection after signalling)."""
        waiting = self._claim_wait
        if waiting is not None and not waiting.done():
            self._claim_wait = None  # tells _claim the wait was cancelled
            waiting.cancel()
        if self.upstream_key is None:
            return None
        key = self.upstream_key
        task = asyncio.ensure_future(send_cancel(self.shared.config.upstream, key.process_id, key.secret))
        task.add_done_callback(_log_cancel_failure)
        return task

    def _on_client_lost(self, exc: Exception | None) -> None:
        if not self.upstream.closed.done():
            self._carry_out(self.conversation.client_lost())
        self._finish()

    def _on_upstream_lost(self, exc: Exception | None) -> None:
        if not self.client.closed.done():
            self._carry_out(self.conversation.upstream_lost())
        self._finish()

    def _finish(self) -> None:
        if not self.finished.done():
            self.finished.set_result(None)

    # bytes in, effects out

    def _relay(self, receive: Callable[[bytes], list[Effect]], send: type[SendUpstream | SendClient],
               to: Leg) -> Callable[[bytes], None]:
        """The callback of one leg's bytes: the conversation's effects carried
        out, the relay's usual case (one send to the other leg) without a loop."""
        write, carry_out = to.write, self._carry_out

        def received(data: bytes) -> None:
            effects = receive(data)
            if len(effects) == 1 and type(effects[0]) is send:
                write(effects[0].data)
            else:
                carry_out(effects)

        return received

    def _carry_out(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, SendUpstream):
                self.upstream.write(effect.data)
            elif isinstance(effect, SendClient):
                self.client.write(effect.data)
            elif isinstance(effect, PauseReading):
                self._leg(effect.side).pause(effect.reason)
            elif isinstance(effect, ResumeReading):
                self._leg(effect.side).resume(effect.reason)
            elif isinstance(effect, Close):
                self._leg(effect.side).close()
            elif isinstance(effect, CancelUpstream):
                self.cancel_upstream()
            else:
                self._request(effect)

    def _leg(self, side: Side) -> Leg:
        return self.client if side is Side.CLIENT else self.upstream

    # requests: carried out as tasks, their results fed back

    def _request(self, request: Request) -> None:
        task = asyncio.ensure_future(self._perform(request))
        task.add_done_callback(lambda done: self._performed(request, done))

    def _performed(self, request: Request, task: asyncio.Future[Any]) -> None:
        if task.cancelled() or self.client.closed.done():
            return
        error = task.exception()
        value = None if error is not None else task.result()
        self._carry_out(self.conversation.receive_result(request, value, error))

    async def _perform(self, request: Request) -> Any:
        loop = asyncio.get_running_loop()
        ledger = self.shared.ledger
        if isinstance(request, Charge):
            assert ledger is not None
            return await ledger.charge_standing(request.user, request.cost, request.release)
        if isinstance(request, ReadStanding):
            assert ledger is not None
            return await ledger.standing(request.user)
        if isinstance(request, ClaimAnswer):
            return await self._claim(request)
        if isinstance(request, PlanOffLoop):
            return await loop.run_in_executor(_WORKERS, run_planner, self.shared.planner, request.sql,
                                              request.context)
        assert isinstance(request, FinalizeOffLoop)
        return await loop.run_in_executor(_WORKERS, request.transform.prepare)


    async def _claim(self, request: ClaimAnswer) -> CachedAnswer | Claim | None:
        """The answer cache's claim, waited for at most the request's timeout
        (None); a cancel request ends the wait (WaitCancelled)."""
        answers = self.shared.answers
        assert answers is not None
        waiting = self._claim_wait = asyncio.ensure_future(answers.claim(request.key))
        try:
            return await asyncio.wait_for(waiting, request.timeout)
        except TimeoutError:
            return None
        except asyncio.CancelledError:
            if self._claim_wait is None:  # cancel_upstream ended the wait
                raise WaitCancelled from None
            raise
        finally:
            self._claim_wait = None


def _log_cancel_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("could not deliver a cancel request upstream: %s", task.exception())
