"""Cursors declared for private queries.

`DECLARE c CURSOR FOR <private query>` is charged once and runs once; the
session holds the released answer here, and FETCH and MOVE read it forward,
as a NO SCROLL cursor is read, without running anything again. A cursor
lives as PostgreSQL's would: until CLOSE, or until its transaction ends
unless it was declared WITH HOLD.
"""

from __future__ import annotations

from pgshroud.rewriter.names import upstream_name
from pgshroud.rewriter.plans import CursorStep, LocalAnswer


class HeldCursor:
    """One cursor's released answer and how far it has been read."""

    __slots__ = ("name", "answer", "next", "hold")

    def __init__(self, name: str, answer: LocalAnswer, hold: bool) -> None:
        self.name = name
        self.answer = answer
        self.next = 0
        self.hold = hold

    def read(self, step: CursorStep) -> LocalAnswer:
        """The rows a forward FETCH returns (none for MOVE), with PostgreSQL's command tag."""
        rows = self.answer.rows
        start = self.next
        end = len(rows) if step.count is None else min(len(rows), start + step.count)
        self.next = end
        if step.move:
            return LocalAnswer(f"MOVE {end - start}")
        return LocalAnswer(f"FETCH {end - start}", self.answer.columns, rows[start:end])


class HeldCursors:
    """A session's held cursors, by the name PostgreSQL would give each:
    names that share their first 63 bytes are one cursor."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: dict[str, HeldCursor] = {}

    def __bool__(self) -> bool:
        return bool(self._held)

    def declare(self, name: str, answer: LocalAnswer, hold: bool) -> None:
        self._held[upstream_name(name)] = HeldCursor(name, answer, hold)

    def get(self, name: str) -> HeldCursor | None:
        return self._held.get(upstream_name(name)) if self._held else None

    def close(self, cursor: HeldCursor) -> None:
        self._held.pop(upstream_name(cursor.name), None)

    def transaction_ended(self) -> None:
        """Cursors without HOLD end with their transaction."""
        self._held = {key: cursor for key, cursor in self._held.items() if cursor.hold}

    def clear(self) -> None:
        self._held = {}
