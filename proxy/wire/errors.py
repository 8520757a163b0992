"""Errors that end a client's connection with a FATAL ErrorResponse."""

from __future__ import annotations


class ClientFacingError(Exception):
    """Report `message` to the client as FATAL with `sqlstate`, then close.

    `already_sent()` marks a failure whose ErrorResponse (usually the
    upstream's own) has been relayed, so nothing more is written.
    """

    def __init__(self, sqlstate: str, message: str, *, hint: str | None = None, sent: bool = False) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message
        self.hint = hint
        self.sent = sent

    @classmethod
    def already_sent(cls) -> ClientFacingError:
        return cls("", "", sent=True)
