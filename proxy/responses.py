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
from typing import Callable

from proxy.answers import data_rows, notices, row_description, simple_query_answer
from proxy.codec.messages import CommandComplete, DataRow, ErrorResponse
from rewriter.plans import Column, LocalAnswer, RawResult

# Message type bytes as ints, as indexing bytes yields them.
ERROR = ord("E")
NOTICE, PARAMETER_STATUS, NOTIFICATION = ord("N"), ord("S"), ord("A")
ASYNC = frozenset((NOTICE, PARAMETER_STATUS, NOTIFICATION))
DATA_ROW, COMMAND_COMPLETE, READY = ord("D"), ord("C"), ord("Z")

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


class Unit:
    __slots__ = ("ends", "extended", "is_sync", "action")

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

    __slots__ = ("replacement", "at", "passthrough")

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


class Transform(Action):
    """Collect a Release's raw rows and send only its finalized answer.

    Upstream notices are dropped while it runs: a RAISE NOTICE or a warning
    could carry protected values. The answer's own notices go first.
    """

    __slots__ = ("finalize", "columns", "formats", "describe", "rows", "on_error")

    def __init__(
        self,
        finalize: Callable[[RawResult], LocalAnswer],
        columns: tuple[Column, ...],
        formats: tuple[int, ...],
        *,
        describe: bool,
        on_error: Callable[[bytes], bytes],
    ) -> None:
        self.finalize = finalize
        self.columns = columns
        self.formats = formats
        self.describe = describe  # simple Query: send a RowDescription first
        self.rows: list[bytes] = []
        self.on_error = on_error

    def frame(self, kind: int, frame: bytes) -> bytes:
        if kind == DATA_ROW:
            self.rows.append(frame)
            return b""
        if kind == NOTICE:
            return b""
        if kind in ASYNC:
            return frame
        if kind == COMMAND_COMPLETE:
            answer = self.finalize(self._raw())
            self.rows = []
            head = notices(answer)
            if self.describe:
                head += row_description(self.columns, self.formats)
            return head + data_rows(answer, self.formats) + CommandComplete(answer.command_tag).encode()
        if kind == ERROR:
            return self.on_error(frame)
        return b""

    def _raw(self) -> RawResult:
        values = tuple(
            tuple(None if v is None else v.decode() for v in DataRow.decode(row[5:]).values) for row in self.rows
        )
        return RawResult(tuple(c.name for c in self.columns), tuple(c.type_oid for c in self.columns), values)


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
            self.index = len(self.actions)
        elif kind in STATEMENT_ENDS:
            self.index += 1
        return out


def local_statement_action(answer: LocalAnswer) -> Replace:
    """In a simple Query, the placeholder's result becomes the answer."""
    return Replace(simple_query_answer(answer), at=frozenset(b"CI"))


def local_execute_action(answer: LocalAnswer, formats: tuple[int, ...]) -> Replace:
    """An Execute of a Local portal: its notices, the rows, then the answer's command tag."""
    return Replace(notices(answer) + data_rows(answer, formats) + CommandComplete(answer.command_tag).encode(),
                   at=frozenset(b"CIs"))


def error_bytes(sqlstate: str, message: str, hint: str | None = None, severity: str = "ERROR") -> bytes:
    return ErrorResponse.build(severity, sqlstate, message, hint=hint).encode()


def describe_replacement(columns: tuple[Column, ...], formats: tuple[int, ...]) -> Replace:
    """Keep PostgreSQL's ParameterDescription; describe our own result columns."""
    return Replace(row_description(columns, formats), at=frozenset(b"Tn"), passthrough=frozenset(b"t"))
