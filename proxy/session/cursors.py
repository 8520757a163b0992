"""Cursors declared for private queries.

`DECLARE c CURSOR FOR <private query>` is charged once and runs once; the
session holds the released answer here, and FETCH and MOVE read it forward,
as a NO SCROLL cursor is read, without running anything again. A cursor
lives as PostgreSQL's would: until CLOSE, or until its transaction ends
unless it was declared WITH HOLD.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from pgshroud import sqlstate
from pgshroud.proxy.session import responses as r
from pgshroud.proxy.session.answers import simple_query_answer
from pgshroud.rewriter.names import upstream_name
from pgshroud.rewriter.plans import Column, CursorStep, Local, LocalAnswer, Passthrough, Plan, Refuse, Release, Rewrite

if TYPE_CHECKING:
    from pgshroud.proxy.session.registry import Statement

IDLE = ord("I")
CURSOR_OUTSIDE_TRANSACTION = Refuse(sqlstate.NO_ACTIVE_SQL_TRANSACTION,
                                    "DECLARE CURSOR can only be used in transaction blocks",
                                    hint="Run BEGIN first, or declare the cursor WITH HOLD.")


class HeldCursor:
    """One cursor's released answer and how far it has been read."""

    __slots__ = ("answer", "hold", "name", "next")

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

    def as_of_now(self, plan: Local | Release | Passthrough) -> Local | Release | Passthrough:
        """A prepared FETCH as of now: the cursor it reads may have been
        declared again, with other columns, since it was prepared (Tableau
        and psqlODBC repeat one FETCH text, which drivers then prepare)."""
        if not isinstance(plan, CursorRead) or plan.step is None or plan.step.move:
            return plan
        held = self.get(plan.cursor)
        if held is None or held.answer.columns == plan.answer.columns:
            return plan
        return replace(plan, answer=replace(plan.answer, columns=held.answer.columns))

    def carry_out(self, plan: CursorRead) -> LocalAnswer | None:
        """FETCH, MOVE or CLOSE of a held cursor, carried out when
        PostgreSQL's answer to its placeholder arrives, so in its turn
        among the statements around it (None: no such cursor now)."""
        cursor = self.get(plan.cursor)
        if cursor is None:  # closed, or its transaction ended
            return None
        if plan.step is None:
            self.close(cursor)
            return plan.answer
        return cursor.read(plan.step)

    def transaction_ended(self) -> None:
        """Cursors without HOLD end with their transaction."""
        self._held = {key: cursor for key, cursor in self._held.items() if cursor.hold}

    def clear(self) -> None:
        self._held = {}


@dataclass(frozen=True, slots=True)
class CursorRead(Local):
    """A Local plan whose answer is the next rows of a held cursor (or its
    CLOSE, without `step`), taken when PostgreSQL answers its placeholder.
    `answer` gives the command tag and columns only."""

    cursor: str = ""
    step: CursorStep | None = None


def held_cursor_plan(plan: Rewrite, name: str, columns: tuple[Column, ...]) -> Plan:
    """FETCH, MOVE or CLOSE of a cursor that holds (or, declared earlier in
    the same Query, will hold) a private answer with these columns."""
    step = plan.step
    if step is None:  # CLOSE
        return CursorRead(LocalAnswer("CLOSE CURSOR"), cursor=name)
    if not step.forward:
        return Refuse(sqlstate.FEATURE_NOT_SUPPORTED,
                      f'cursor "{name}" holds a private answer, which is read forward only',
                      hint="Use FETCH [FORWARD] n, FETCH NEXT or FETCH ALL; declare the cursor again to read "
                      "from the start (a repeat is answered from the answer cache while it keeps the answer).")
    tag = "MOVE" if step.move else "FETCH"
    return CursorRead(LocalAnswer(tag, () if step.move else columns), cursor=name, step=step)


def read_declared_cursors(plans: list[Plan]) -> list[Plan]:
    """A Query that declares a cursor for a private query and reads it
    (DECLARE ...; FETCH 100 IN ..., as psqlODBC sends): the reads were
    planned before the cursor existed, so they are pointed at it here."""
    declared: dict[str, tuple[Column, ...]] = {}
    for index, plan in enumerate(plans):
        if isinstance(plan, Release) and plan.cursor is not None:
            declared[upstream_name(plan.cursor.name)] = plan.spec.columns
        elif declared and type(plan) is Rewrite and plan.reaches is not None and plan.reaches[0] == "P":
            columns = declared.get(upstream_name(plan.reaches[1]))
            if columns is not None:
                plans[index] = held_cursor_plan(plan, plan.reaches[1], columns)
    return plans


def outside_transaction(plan: Release, status: int, *, alone: bool) -> bool:
    """A DECLARE without HOLD that PostgreSQL would refuse: no transaction
    block is open and (`alone`) no implicit one holds the statement."""
    return plan.cursor is not None and not plan.cursor.hold and alone and status == IDLE


def cursor_action(cursors: HeldCursors, plan: CursorRead, portal: Statement | None = None,
                  max_rows: int = 0) -> r.Action:
    """The action that answers a held cursor's FETCH, MOVE or CLOSE in
    place of its placeholder: a simple Query's statement, or (`portal`)
    an Execute of the extended protocol."""

    def answer() -> bytes:
        read = cursors.carry_out(plan)
        if read is None:
            return r.error_bytes(sqlstate.INVALID_CURSOR_NAME, f'cursor "{plan.cursor}" does not exist')
        if portal is None:
            return simple_query_answer(read)
        held = portal.answer = r.PortalAnswer()
        held.fill(read, portal.formats or (0,) * len(read.columns))
        return held.take(max_rows)

    return r.Deferred(answer, at=r.FETCH_AT)
