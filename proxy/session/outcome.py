"""A value the conversation waits for from PostgreSQL's own answers.

Some of the session's work waits for something upstream tells it (whether
PostgreSQL accepted a statement pgshroud built, the parameter types it
inferred, or that it has answered everything sent so far). Such work yields
an Outcome; the conversation resumes it once its upstream answer has set it.
No event loop is involved, so this is not an asyncio future.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class OutcomeCancelled(Exception):
    """What waited for the outcome will never get it (PostgreSQL skipped the
    message that would have told)."""


class Outcome(Generic[T]):
    __slots__ = ("_state", "_value")

    _PENDING, _SET, _CANCELLED = 0, 1, 2

    def __init__(self) -> None:
        self._value: T | None = None
        self._state = self._PENDING

    def done(self) -> bool:
        return self._state != self._PENDING

    def cancelled(self) -> bool:
        return self._state == self._CANCELLED

    def set_result(self, value: T) -> None:
        if self._state == self._PENDING:
            self._value, self._state = value, self._SET

    def cancel(self) -> None:
        if self._state == self._PENDING:
            self._state = self._CANCELLED

    def result(self) -> T:
        """The value; raises OutcomeCancelled if cancelled (call once done)."""
        if self._state == self._CANCELLED:
            raise OutcomeCancelled
        assert self._state == self._SET
        return self._value  # type: ignore[return-value]
