"""A refusal raised anywhere while a statement is planned, and turned into
the statement's Refuse plan by the planner."""

from __future__ import annotations

from pgshroud.rewriter.plans import Refuse


class Refusal(Exception):
    def __init__(self, sqlstate: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.refuse = Refuse(sqlstate, message, hint)
