"""Scripted byte exchanges with a Conversation, in memory: no sockets, no PostgreSQL.

A `Script` plays both the client and PostgreSQL and carries out what the
conversation asks for, as its driver would: sends are recorded per side,
requests are answered at once (the ledger's calls from tests/memory_ledger.py,
the answer cache's claims, planning and a large answer's finalize in place). Every effect is kept, in
order, in `effects`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from pgshroud.policies.accounting import Standing
from pgshroud.policies.model import Policy
from pgshroud.proxy.budget.protocol import Charged, SharedRelease
from pgshroud.proxy.codec.framing import NEED_DATA, FrameReader
from pgshroud.proxy.codec.messages import BackendMessage, FrontendMessage, decode_backend, decode_frontend
from pgshroud.proxy.ops.config import ServerConfig, UpstreamTarget
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
    ResumeReading,
    SendClient,
    SendUpstream,
    Side,
)
from pgshroud.proxy.session.planning import run_planner
from pgshroud.rewriter import plan
from pgshroud.rewriter.catalog import Catalog
from pgshroud.rewriter.plans import Cost, Refuse
from tests.memory_ledger import MemoryLedger
from tests.rewriter_fixtures import CATALOG, POLICY

DATE_STYLE = {"DateStyle": "ISO, MDY", "TimeZone": "UTC", "IntervalStyle": "postgres"}


class DownLedger(MemoryLedger):
    """A ledger that cannot be reached: every call fails."""

    async def charge_standing(self, user: str, cost: Cost, release: SharedRelease | None = None) -> Refuse | Charged:
        raise ConnectionError("the ledger is unreachable")

    async def standing(self, user: str) -> list[Standing]:
        raise ConnectionError("the ledger is unreachable")


def complete(call: Coroutine[Any, Any, Any]) -> Any:
    """The value of a coroutine that waits for nothing outside it (the
    in-memory ledger's: an uncontended lock, a sleep of no time)."""
    for _ in range(100):
        try:
            call.send(None)
        except StopIteration as done:
            return done.value
    raise AssertionError("the coroutine waits for something")


class Script:
    def __init__(self, user: str, *, ledger: object | None = None, policy: Policy | None = POLICY,
                 catalog: Catalog = CATALOG, planner: Callable[..., Any] = plan, cache_seconds: float = 0,
                 claim: Callable[[ClaimAnswer], Any] | None = None) -> None:
        """`cache_seconds`: the answer cache's lifetime (0: off); `claim`: how a
        claim on it is answered (by default, the cache's claim, which finds no
        other session's release in flight)."""
        config = ServerConfig("127.0.0.1", 0, UpstreamTarget.parse("host=localhost port=5432"),
                              answer_cache_seconds=cache_seconds)
        self._claim = claim
        self.shared = SessionContext(config, planner, ledger, policy, lambda: catalog)  # type: ignore[arg-type]
        role = policy.role_for(user) if policy is not None else None
        self.conversation = Conversation(user, role, DATE_STYLE, self.shared)
        self.effects: list[Effect] = []
        self.to_upstream = bytearray()
        self.to_client = bytearray()
        self.closed: set[Side] = set()
        self.paused: set[tuple[Side, str]] = set()

    # the two sides

    def client(self, *messages: bytes | Any) -> None:
        self._carry_out(self.conversation.receive_client(_bytes(messages)))

    def upstream(self, *messages: bytes | Any) -> None:
        self._carry_out(self.conversation.receive_upstream(_bytes(messages)))

    def drain(self) -> None:
        self._carry_out(self.conversation.drain())

    def client_lost(self) -> None:
        self._carry_out(self.conversation.client_lost())

    def upstream_sent(self) -> bytes:
        """What went upstream since the last call."""
        sent, self.to_upstream = bytes(self.to_upstream), bytearray()
        return sent

    def client_got(self) -> bytes:
        """What the client got since the last call."""
        got, self.to_client = bytes(self.to_client), bytearray()
        return got

    # the driver's part

    def _carry_out(self, effects: list[Effect]) -> None:
        for effect in effects:
            self.effects.append(effect)
            if isinstance(effect, SendUpstream):
                self.to_upstream += effect.data
            elif isinstance(effect, SendClient):
                self.to_client += effect.data
            elif isinstance(effect, PauseReading):
                self.paused.add((effect.side, effect.reason))
            elif isinstance(effect, ResumeReading):
                self.paused.discard((effect.side, effect.reason))
            elif isinstance(effect, Close):
                self.closed.add(effect.side)
            elif isinstance(effect, CancelUpstream):
                pass  # kept in self.effects for the tests that look for it; no socket to cancel on
            else:
                try:
                    value = self._perform(effect)
                except Exception as exc:  # noqa: BLE001 - handed to the conversation, as the driver does
                    self._carry_out(self.conversation.receive_result(effect, None, exc))
                else:
                    self._carry_out(self.conversation.receive_result(effect, value))

    def _perform(self, request: Effect) -> Any:
        ledger: Any = self.shared.ledger
        if isinstance(request, Charge):
            return complete(ledger.charge_standing(request.user, request.cost, request.release))
        if isinstance(request, ReadStanding):
            return complete(ledger.standing(request.user))
        if isinstance(request, PlanOffLoop):
            return run_planner(self.shared.planner, request.sql, request.context)
        if isinstance(request, FinalizeOffLoop):
            return request.transform.prepare()
        if isinstance(request, ClaimAnswer):
            if self._claim is not None:
                return self._claim(request)
            assert self.shared.answers is not None
            return complete(self.shared.answers.claim(request.key))
        raise AssertionError(f"unexpected request {request!r}")


def _bytes(messages: Iterable[bytes | Any]) -> bytes:
    return b"".join(m if isinstance(m, bytes) else m.encode() for m in messages)


def _frames(data: bytes) -> list[tuple[bytes, bytes]]:
    reader = FrameReader(max_length=1 << 30)
    reader.receive_data(data)
    frames = []
    while (frame := reader.next_frame()) is not NEED_DATA:
        frames.append(frame)
    assert not reader.take_all(), "a partial frame"
    return frames  # type: ignore[return-value]


def backend(data: bytes) -> list[BackendMessage]:
    """The messages PostgreSQL's side sent (or pgshroud sent the client)."""
    return [decode_backend(kind, payload) for kind, payload in _frames(data)]


def frontend(data: bytes) -> list[FrontendMessage]:
    """The messages the client's side sent (or pgshroud sent upstream)."""
    return [decode_frontend(kind, payload) for kind, payload in _frames(data)]
