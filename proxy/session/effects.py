"""What the conversation asks its driver to do.

The conversation (proxy/session/conversation.py) does no I/O: fed bytes from
either side, it returns these values, in the order they must happen. The
driver (proxy/session/driver.py) carries them out. Sends, pauses, closes and
a cancel need no answer; a `Request` does: the driver hands its result (or
the exception it raised) back with `Conversation.receive_result`, and the
conversation waits for nothing else from the client meanwhile.
"""

from __future__ import annotations

import enum
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pgshroud.proxy.session.outcome import Outcome

if TYPE_CHECKING:
    from pgshroud.proxy.budget.answer_cache import AnswerKey
    from pgshroud.proxy.budget.protocol import SharedRelease
    from pgshroud.proxy.session.responses import Transform
    from pgshroud.rewriter import PlanContext
    from pgshroud.rewriter.plans import Cost


class Side(enum.Enum):
    CLIENT = "client"
    UPSTREAM = "upstream"


@dataclass(frozen=True, slots=True)
class SendUpstream:
    data: bytes


@dataclass(frozen=True, slots=True)
class SendClient:
    data: bytes


@dataclass(frozen=True, slots=True)
class PauseReading:
    """Stop reading from `side` until a ResumeReading of the same reason."""

    side: Side
    reason: str


@dataclass(frozen=True, slots=True)
class ResumeReading:
    side: Side
    reason: str


@dataclass(frozen=True, slots=True)
class Close:
    """Close one side's connection (after what was sent to it)."""

    side: Side


@dataclass(frozen=True, slots=True)
class CancelUpstream:
    """Ask PostgreSQL to cancel what the upstream connection runs, over a
    connection of its own (the client went away mid-statement)."""


@dataclass(frozen=True, slots=True)
class Charge:
    """Charge `cost` to `user` in the ledger (Ledger.charge_standing). Result:
    the ledger's Refuse, or where the user's budgets stand after the charge."""

    user: str
    cost: Cost
    release: SharedRelease | None


@dataclass(frozen=True, slots=True)
class ReadStanding:
    """Where `user`'s budgets stand now. Result: a list of Standing."""

    user: str


@dataclass(frozen=True, slots=True)
class ClaimAnswer:
    """The answer cache's claim on `key`, waited for `timeout` seconds at most.
    Result: a CachedAnswer, a Claim, or None once the time is up; raises
    WaitCancelled when a cancel request ended the wait."""

    key: AnswerKey
    timeout: float


@dataclass(frozen=True, slots=True)
class PlanOffLoop:
    """Plan `sql` under `context` on a worker thread. Result: its plans."""

    sql: str
    context: PlanContext


@dataclass(frozen=True, slots=True)
class FinalizeOffLoop:
    """Run `transform.prepare()` on a worker thread (a large private answer);
    the conversation reads nothing from upstream meanwhile. Result: None."""

    transform: Transform


class WaitCancelled(Exception):
    """A cancel request ended a ClaimAnswer's wait."""


Request = Charge | ReadStanding | ClaimAnswer | PlanOffLoop | FinalizeOffLoop
Effect = SendUpstream | SendClient | PauseReading | ResumeReading | Close | CancelUpstream | Request
REQUESTS = (Charge, ReadStanding, ClaimAnswer, PlanOffLoop, FinalizeOffLoop)

T = TypeVar("T")
# The conversation's work that waits: a generator that yields what it waits
# for (a Request for the driver, or an Outcome of PostgreSQL's answers), is
# sent what became of it, and returns its value.
Work = Generator[Effect | Outcome[Any], Any, T]
