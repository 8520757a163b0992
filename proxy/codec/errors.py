"""Errors raised by the wire-protocol codec."""

from __future__ import annotations

from pgshroud.sqlstate import PROTOCOL_VIOLATION


class ProtocolViolation(Exception):
    """The remote peer broke the PostgreSQL wire protocol.

    The message says what was wrong; ``sqlstate`` is the code PostgreSQL
    itself reports for such input (ERRCODE_PROTOCOL_VIOLATION).
    """

    sqlstate = PROTOCOL_VIOLATION
