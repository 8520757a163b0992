"""What the session expects back from PostgreSQL, and what it sends instead.

Every message the session forwards upstream that PostgreSQL answers gets a
`Unit` in a FIFO queue. PostgreSQL answers in order, so the head unit owns
the next response messages; a unit ends at one of its terminating message
types. A unit without an action is relayed byte for byte. An action swallows,
replaces or transforms its unit's messages: this is how Local answers,
refusals and private releases appear in order between relayed responses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING

from pgshroud import sqlstate
from pgshroud.proxy.codec.messages import CommandComplete, DataRow, ErrorResponse, ParameterDescription, PortalSuspended
from pgshroud.proxy.session.answers import data_row_frames, notices, out_of_range, row_description, simple_query_answer
from pgshroud.rewriter.plans import Column, LocalAnswer, PrivacySetting, RawResult

if TYPE_CHECKING:
    from pgshroud.proxy.session.outcome import Outcome

# Message type bytes as ints, as indexing bytes yields them.
ERROR = ord("E")
NOTICE, PARAMETER_STATUS, NOTIFICATION = ord("N"), ord("S"), ord("A")
ASYNC = frozenset((NOTICE, PARAMETER_STATUS, NOTIFICATION))
DATA_ROW, COMMAND_COMPLETE, READY = ord("D"), ord("C"), ord("Z")
PARAMETER_DESCRIPTION = ord("t")
PORTAL_SUSPENDED = PortalSuspended().encode()

# What ends each kind of unit (protocol docs, "Message Flow").
ENDS_READY = frozenset(b"Z")
ENDS_PARSE = frozenset(b"1E")
ENDS_BIND = frozenset(b"2E")
ENDS_DESCRIBE = frozenset(b"TnE")
ENDS_EXECUTE = frozenset(b"CIsE")
ENDS_CLOSE = frozenset(b"3E")
# Within a simple Query, each statement ends with one of these.
STATEMENT_ENDS = frozenset(b"CIE")


class Action(ABC):
    """Turns one upstream message of its unit into the bytes the client gets."""

    __slots__ = ()

    @abstractmethod
    def frame(self, kind: int, frame: bytes) -> bytes: ...

    def abandon(self) -> None:
        """PostgreSQL will not run this unit (an earlier error skipped it)."""


class Unit:
    __slots__ = ("action", "ends", "extended", "is_sync")

    def __init__(self, ends: frozenset[int], *, extended: bool, is_sync: bool = False, action: Action | None = None):
        self.ends = ends
        self.extended = extended  # an ErrorResponse makes PostgreSQL skip to Sync
        self.is_sync = is_sync
        self.action = action


# Units that only relay carry no state, so one instance of each serves all.
RELAY_QUERY = Unit(ENDS_READY, extended=False)
RELAY_PARSE = Unit(ENDS_PARSE, extended=True)
RELAY_BIND = Unit(ENDS_BIND, extended=True)
RELAY_DESCRIBE = Unit(ENDS_DESCRIBE, extended=True)
RELAY_EXECUTE = Unit(ENDS_EXECUTE, extended=True)
RELAY_CLOSE = Unit(ENDS_CLOSE, extended=True)
SYNC = Unit(ENDS_READY, extended=False, is_sync=True)


class Replace(Action):
    """Send `replacement` in place of the placeholder's message of a kind in
    `at`; PostgreSQL's errors (an aborted transaction, say) pass through."""

    __slots__ = ("at", "passthrough", "replacement")

    def __init__(self, replacement: bytes, at: frozenset[int], passthrough: frozenset[int] = frozenset()) -> None:
        self.replacement = replacement
        self.at = at
        self.passthrough = passthrough

    def frame(self, kind: int, frame: bytes) -> bytes:
        if kind in ASYNC or kind in self.passthrough or kind == ERROR:
            return frame
        if kind in self.at:
            return self.replacement
        return b""


class RefuseAction(Action):
    """Swallow the sentinel's error and send the refusal in its place."""

    __slots__ = ("error",)

    def __init__(self, error: bytes) -> None:
        self.error = error

    def frame(self, kind: int, frame: bytes) -> bytes:
        if kind in ASYNC:
            return frame
        if kind == ERROR:
            return self.error
        return b""


class PortalAnswer:
    """An answer pgshroud holds for a portal: a Local answer, or a Release's
    finalized one.

    The first Execute of the portal runs the statement once, whole; every
    Execute sends the next rows as PostgreSQL sends a portal's: with a row
    limit, that many and then PortalSuspended while any are left (or exactly
    that many were), otherwise the rest and CommandComplete, whose row count
    is that Execute's rows, as PostgreSQL counts them.
    """

    __slots__ = ("next", "notices", "rows", "started", "tag")

    def __init__(self) -> None:
        self.notices = b""
        self.rows: list[bytes] = []
        self.next = 0
        self.tag = "SELECT 0"
        self.started = False

    def fill(self, answer: LocalAnswer, formats: tuple[int, ...]) -> None:
        self.notices = notices(answer)
        self.rows = data_row_frames(answer, formats)
        self.tag = answer.command_tag

    def take_notices(self) -> bytes:
        head, self.notices = self.notices, b""
        return head

    def take(self, max_rows: int) -> bytes:
        """What one Execute with this row limit (0: none) sends."""
        head = self.take_notices()
        rows, start = self.rows, self.next
        started, self.started = self.started, True
        if 0 < max_rows <= len(rows) - start:
            self.next = start + max_rows
            return head + b"".join(rows[start : self.next]) + PORTAL_SUSPENDED
        self.rows, self.next = [], 0
        tag = _counted(self.tag, len(rows) - start) if started else self.tag
        return head + b"".join(rows[start:]) + CommandComplete(tag).encode()


def _counted(tag: str, rows: int) -> str:
    """A command tag with its row count replaced ("SELECT 5" -> "SELECT 2")."""
    word, _, count = tag.rpartition(" ")
    return f"{word} {rows}" if word and count.isdigit() else tag


FETCH_AT = frozenset(b"CIs")


class Fetch(Action):
    """An Execute of a portal whose answer pgshroud holds. The Execute still
    goes upstream, to a portal that has nothing more to give, so that
    PostgreSQL keeps deciding whether it may run (the portal exists, the
    transaction is not aborted) and its completion lands in order; it
    becomes the portal's next rows."""

    __slots__ = ("max_rows", "portal")

    def __init__(self, portal: PortalAnswer, max_rows: int) -> None:
        self.portal = portal
        self.max_rows = max_rows

    def frame(self, kind: int, frame: bytes) -> bytes:
        if kind in ASYNC or kind == ERROR:
            return frame
        if kind in FETCH_AT:
            return self.portal.take(self.max_rows)
        return b""  # nothing else is expected; nothing from upstream gets through


class Deferred(Action):
    """In place of a placeholder's result (a message kind in `at`), what
    `answer()` returns when it arrives: for answers that depend on what the
    statements before it did, such as a held cursor's next rows. PostgreSQL's
    errors (an aborted transaction) pass through instead."""

    __slots__ = ("answer", "at")

    def __init__(self, answer: Callable[[], bytes], at: frozenset[int]) -> None:
        self.answer = answer
        self.at = at

    def frame(self, kind: int, frame: bytes) -> bytes:
        if kind in ASYNC or kind == ERROR:
            return frame
        if kind in self.at:
            return self.answer()
        return b""


class NeedsWorker(Exception):
    """Raised by Transform.frame at CommandComplete: its answer is built off
    the event loop (its work grows with the groups, public domains' groups
    included, not with the rows PostgreSQL returned): run
    `transform.prepare()` on a worker thread, then hand the same frame to
    the action again."""

    def __init__(self, transform: Transform) -> None:
        super().__init__("a large private answer is built on a worker thread")
        self.transform = transform


class Transform(Action):
    """Collect a Release's raw rows and send only its finalized answer.

    Upstream notices are dropped while it runs: a RAISE NOTICE or a warning
    could carry protected values. The answer's own notices go first.
    """

    __slots__ = (
        "columns",
        "describe",
        "finalize",
        "formats",
        "max_rows",
        "on_error",
        "portal",
        "prepared",
        "rows",
    )

    def __init__(
        self,
        finalize: Callable[[RawResult], LocalAnswer],
        columns: tuple[Column, ...],
        formats: tuple[int, ...],
        *,
        describe: bool,
        on_error: Callable[[bytes], bytes],
        portal: PortalAnswer | None = None,
        max_rows: int = 0,
    ) -> None:
        self.finalize = finalize
        self.columns = columns
        self.formats = formats
        self.describe = describe  # simple Query: send a RowDescription first
        self.rows: list[bytes] = []
        self.on_error = on_error
        self.portal = portal  # extended protocol: where the answer is kept for later Executes
        self.max_rows = max_rows
        self.prepared: LocalAnswer | BaseException | None = None  # see prepare()

    def frame(self, kind: int, frame: bytes) -> bytes:
        if kind == DATA_ROW:
            self.rows.append(frame)
            return b""
        if kind == NOTICE:
            return b""
        if kind in ASYNC:
            return frame
        if kind == COMMAND_COMPLETE:
            if self.prepared is None:
                raise NeedsWorker(self)
            answer, self.prepared = self.prepared, None
            if isinstance(answer, BaseException):
                raise answer
            assert answer is not None
            problem = out_of_range(answer)  # of released values only: post-processing, as PostgreSQL fails
            if problem is not None:
                return error_bytes(sqlstate.NUMERIC_VALUE_OUT_OF_RANGE, problem)
            portal = self.portal if self.portal is not None else PortalAnswer()
            portal.fill(answer, self.formats)
            head = portal.take_notices()
            if self.describe:
                head += row_description(self.columns, self.formats)
            return head + portal.take(self.max_rows)
        if kind == ERROR:
            return self.on_error(frame)
        return b""

    def prepare(self) -> None:
        """Build the answer from the collected rows (on a worker thread); a
        failure is kept and raised where the frame is handled."""
        try:
            self.prepared = self.finalize(self._raw())
        except Exception as exc:  # noqa: BLE001 - raised on the event loop, where the answer fails closed
            self.prepared = exc
        self.rows = []

    def _raw(self) -> RawResult:
        values = tuple(
            tuple(None if v is None else v.decode() for v in DataRow.decode(row[5:]).values) for row in self.rows
        )
        return RawResult(tuple(c.name for c in self.columns), tuple(c.type_oid for c in self.columns), values)


class UpstreamCheck(Action):
    """pgshroud's own Parse, Describe and Sync of a statement it built,
    before anything is charged. Nothing runs, so nothing of the outcome
    depends on data. Its frames are the session's, not the client's:
    `outcome` gets None once PostgreSQL accepted the statement, or its
    ErrorResponse frame."""

    __slots__ = ("error", "outcome")

    def __init__(self, outcome: Outcome[bytes | None]) -> None:
        self.outcome = outcome
        self.error: bytes | None = None

    def frame(self, kind: int, frame: bytes) -> bytes:
        if kind == ERROR and self.error is None:
            self.error = frame
        elif kind == READY and not self.outcome.done():
            self.outcome.set_result(self.error)
        return b""

    def abandon(self) -> None:
        if not self.outcome.done():
            self.outcome.cancel()


class ParameterTypes(Action):
    """pgshroud's own Describe of a private statement it prepared: the
    parameter types PostgreSQL inferred go to `types`; nothing reaches the
    client."""

    __slots__ = ("types",)

    def __init__(self, types: Outcome[tuple[int, ...]]) -> None:
        self.types = types

    def frame(self, kind: int, frame: bytes) -> bytes:
        if kind in ASYNC:
            return frame
        if kind == PARAMETER_DESCRIPTION and not self.types.done():
            self.types.set_result(ParameterDescription.decode(frame[5:]).type_oids)
        return b""

    def abandon(self) -> None:
        if not self.types.done():
            self.types.cancel()


class Settle(Action):
    """Around the action of a statement that changes the session's privacy
    settings (None: relayed, e.g. RESET ALL): reports to `settled` whether
    the statement succeeded, once its CommandComplete or error passes or
    once it is known that it will never run."""

    __slots__ = ("change", "done", "inner", "settled")

    def __init__(
        self, inner: Action | None, change: PrivacySetting, settled: Callable[[Settle, bool], None]
    ) -> None:
        self.inner = inner
        self.change = change
        self.settled = settled
        self.done = False

    def frame(self, kind: int, frame: bytes) -> bytes:
        if not self.done and (kind == COMMAND_COMPLETE or kind == ERROR):
            self.done = True
            self.settled(self, kind == COMMAND_COMPLETE)
        return frame if self.inner is None else self.inner.frame(kind, frame)

    def abandon(self) -> None:
        if not self.done:
            self.done = True
            self.settled(self, False)


class Statements(Action):
    """A simple Query whose statements are handled one by one.

    Statement boundaries are the CommandComplete/EmptyQueryResponse/
    ErrorResponse messages; after an error PostgreSQL runs no further
    statement of the Query, so the rest is relayed. Asynchronous messages
    go to the running statement's action, which may drop notices.
    """

    __slots__ = ("actions", "index")

    def __init__(self, actions: list[Action | None]) -> None:
        self.actions = actions
        self.index = 0

    def frame(self, kind: int, frame: bytes) -> bytes:
        if kind == READY or self.index >= len(self.actions):
            return frame
        action = self.actions[self.index]
        if kind in ASYNC:
            return frame if action is None else action.frame(kind, frame)
        out = frame if action is None else action.frame(kind, frame)
        if kind == ERROR:
            self.index += 1
            self.abandon()
        elif kind in STATEMENT_ENDS:
            self.index += 1
        return out

    def abandon(self) -> None:
        actions, index = self.actions, self.index
        self.index = len(actions)
        for action in actions[index:]:
            if action is not None:
                action.abandon()


def local_statement_action(answer: LocalAnswer) -> Replace:
    """In a simple Query, the placeholder's result becomes the answer."""
    return Replace(simple_query_answer(answer), at=frozenset(b"CI"))


def error_bytes(sqlstate: str, message: str, hint: str | None = None, severity: str = "ERROR") -> bytes:
    return ErrorResponse.build(severity, sqlstate, message, hint=hint).encode()


def describe_replacement(columns: tuple[Column, ...], formats: tuple[int, ...]) -> Replace:
    """Keep PostgreSQL's ParameterDescription; describe our own result columns."""
    return Replace(row_description(columns, formats), at=frozenset(b"Tn"), passthrough=frozenset(b"t"))
