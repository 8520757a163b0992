"""Messages a server sends, apart from authentication (protocol.sgml, "Message Formats")."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import ClassVar, NamedTuple, Self

from ._wire import (
    INT8,
    UINT16,
    UINT32,
    UINT32_PAIR,
    Cursor,
    EmptyMessage,
    cstr,
    frame,
    values_bytes,
)
from .errors import ProtocolViolation
from .messages_startup import check_secret

_FIELD = struct.Struct("!IhIhih")  # RowDescription, after each name
_SQLSTATE = re.compile(r"[0-9A-Z]{5}")


@dataclass(frozen=True, slots=True)
class BackendKeyData:
    """Cancellation key of the session: 4 bytes in protocol 3.0, 4 to 256 in 3.2."""

    TYPE: ClassVar[bytes] = b"K"

    process_id: int
    secret: bytes

    def encode(self) -> bytes:
        check_secret(self.secret, "BackendKeyData")
        return frame(b"K", UINT32.pack(self.process_id) + self.secret)

    @classmethod
    def decode(cls, payload: bytes) -> BackendKeyData:
        cur = Cursor(payload, "BackendKeyData")
        process_id = cur.uint32()
        # The key runs to the end of the message (protocol 3.2).
        secret = cur.rest()
        check_secret(secret, "BackendKeyData")
        return cls(process_id, secret)


@dataclass(frozen=True, slots=True)
class BindComplete(EmptyMessage):
    """Bind succeeded."""

    TYPE: ClassVar[bytes] = b"2"


@dataclass(frozen=True, slots=True)
class CloseComplete(EmptyMessage):
    """Close succeeded."""

    TYPE: ClassVar[bytes] = b"3"


@dataclass(frozen=True, slots=True)
class CommandComplete:
    """A command finished; ``tag`` is e.g. "SELECT 3" or "INSERT 0 1"."""

    TYPE: ClassVar[bytes] = b"C"

    tag: str

    def encode(self) -> bytes:
        return frame(b"C", cstr(self.tag))

    @classmethod
    def decode(cls, payload: bytes) -> CommandComplete:
        cur = Cursor(payload, "CommandComplete")
        tag = cur.cstr()
        cur.end()
        return cls(tag)


@dataclass(frozen=True, slots=True)
class _CopyResponse:
    # Int8 overall format, then Int16 count and one Int16 format per column.
    TYPE: ClassVar[bytes]

    overall_format: int
    column_formats: tuple[int, ...]

    def encode(self) -> bytes:
        count = len(self.column_formats)
        return frame(
            self.TYPE,
            INT8.pack(self.overall_format)
            + UINT16.pack(count)
            + struct.pack(f"!{count}h", *self.column_formats),
        )

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        cur = Cursor(payload, cls.__name__)
        overall_format = cur.uint8()
        column_formats = cur.int16_array(cur.uint16())
        cur.end()
        return cls(overall_format, column_formats)


@dataclass(frozen=True, slots=True)
class CopyInResponse(_CopyResponse):
    """COPY FROM STDIN started: the server awaits CopyData from the client."""

    TYPE: ClassVar[bytes] = b"G"


@dataclass(frozen=True, slots=True)
class CopyOutResponse(_CopyResponse):
    """COPY TO STDOUT started: CopyData follows from the server."""

    TYPE: ClassVar[bytes] = b"H"


@dataclass(frozen=True, slots=True)
class CopyBothResponse(_CopyResponse):
    """Copy-both mode started (streaming replication)."""

    TYPE: ClassVar[bytes] = b"W"


@dataclass(frozen=True, slots=True)
class DataRow:
    """One result row; None is SQL NULL."""

    TYPE: ClassVar[bytes] = b"D"

    values: tuple[bytes | None, ...]

    def encode(self) -> bytes:
        return frame(b"D", b"".join([UINT16.pack(len(self.values)), *values_bytes(self.values)]))

    @classmethod
    def decode(cls, payload: bytes) -> DataRow:
        # The hottest message of all: Cursor.values() keeps the loop local.
        cur = Cursor(payload, "DataRow")
        values = cur.values(cur.uint16())
        cur.end()
        return cls(values)


@dataclass(frozen=True, slots=True)
class EmptyQueryResponse(EmptyMessage):
    """The query string was empty."""

    TYPE: ClassVar[bytes] = b"I"


@dataclass(frozen=True, slots=True)
class _Fields:
    # ErrorResponse and NoticeResponse: (code byte, string) pairs ended by a
    # NUL; codes are listed in "Error and Notice Message Fields".
    TYPE: ClassVar[bytes]

    fields: tuple[tuple[str, str], ...]

    def field(self, code: str) -> str | None:
        """Value of the field with this one-letter code, if present."""
        for key, value in self.fields:
            if key == code:
                return value
        return None

    @property
    def sqlstate(self) -> str | None:
        """The SQLSTATE code (field 'C')."""
        return self.field("C")

    @property
    def message(self) -> str | None:
        """The primary human-readable message (field 'M')."""
        return self.field("M")

    @classmethod
    def build(
        cls,
        severity: str,
        sqlstate: str,
        message: str,
        *,
        detail: str | None = None,
        hint: str | None = None,
    ) -> Self:
        """Fields in PostgreSQL's order: S, V, C, M, then D and H if given."""
        if not _SQLSTATE.fullmatch(sqlstate):
            raise ValueError(f"invalid SQLSTATE {sqlstate!r}")
        # 'S' may be localized, 'V' never is (send_message_to_frontend() in
        # elog.c); we do not localize, so both carry the same word.
        fields = [("S", severity), ("V", severity), ("C", sqlstate), ("M", message)]
        if detail is not None:
            fields.append(("D", detail))
        if hint is not None:
            fields.append(("H", hint))
        return cls(tuple(fields))

    def encode(self) -> bytes:
        parts = []
        for code, value in self.fields:
            raw = code.encode("utf-8", "surrogateescape")
            if len(raw) != 1 or raw == b"\0":
                raise ValueError(f"field code {code!r} must be a single non-NUL byte")
            parts.append(raw)
            parts.append(cstr(value))
        parts.append(b"\0")
        return frame(self.TYPE, b"".join(parts))

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        cur = Cursor(payload, cls.__name__)
        fields = []
        while (code := cur.byte1()) != b"\0":
            fields.append((code.decode("utf-8", "surrogateescape"), cur.cstr()))
        cur.end()
        return cls(tuple(fields))


@dataclass(frozen=True, slots=True)
class ErrorResponse(_Fields):
    """An error; see field(), sqlstate, message and build()."""

    TYPE: ClassVar[bytes] = b"E"


@dataclass(frozen=True, slots=True)
class NoticeResponse(_Fields):
    """A notice or warning; same fields as ErrorResponse."""

    TYPE: ClassVar[bytes] = b"N"


@dataclass(frozen=True, slots=True)
class FunctionCallResponse:
    """Result of a FunctionCall; None is SQL NULL."""

    TYPE: ClassVar[bytes] = b"V"

    value: bytes | None

    def encode(self) -> bytes:
        return frame(b"V", b"".join(values_bytes((self.value,))))

    @classmethod
    def decode(cls, payload: bytes) -> FunctionCallResponse:
        cur = Cursor(payload, "FunctionCallResponse")
        (value,) = cur.values(1)
        cur.end()
        return cls(value)


@dataclass(frozen=True, slots=True)
class NegotiateProtocolVersion:
    """The server supports only minor version ``newest_minor``, and not these ``_pq_.`` options."""

    TYPE: ClassVar[bytes] = b"v"

    newest_minor: int
    unrecognized: tuple[str, ...]

    def encode(self) -> bytes:
        return frame(
            b"v",
            UINT32_PAIR.pack(self.newest_minor, len(self.unrecognized))
            + b"".join(map(cstr, self.unrecognized)),
        )

    @classmethod
    def decode(cls, payload: bytes) -> NegotiateProtocolVersion:
        cur = Cursor(payload, "NegotiateProtocolVersion")
        newest_minor = cur.uint32()
        count = cur.uint32()
        # Each name takes at least its NUL: bound the loop by the bytes left.
        if count > len(payload) - cur.pos:
            raise cur.fail(f"{count} option names cannot fit in the message")
        unrecognized = tuple(cur.cstr() for _ in range(count))
        cur.end()
        return cls(newest_minor, unrecognized)


@dataclass(frozen=True, slots=True)
class NoData(EmptyMessage):
    """The described statement or portal returns no rows."""

    TYPE: ClassVar[bytes] = b"n"


@dataclass(frozen=True, slots=True)
class NotificationResponse:
    """A NOTIFY on ``channel`` from the backend with ``process_id``."""

    TYPE: ClassVar[bytes] = b"A"

    process_id: int
    channel: str
    payload: str

    def encode(self) -> bytes:
        return frame(b"A", UINT32.pack(self.process_id) + cstr(self.channel) + cstr(self.payload))

    @classmethod
    def decode(cls, payload: bytes) -> NotificationResponse:
        cur = Cursor(payload, "NotificationResponse")
        process_id = cur.uint32()
        channel = cur.cstr()
        text = cur.cstr()
        cur.end()
        return cls(process_id, channel, text)


@dataclass(frozen=True, slots=True)
class ParameterDescription:
    """Type OIDs of a prepared statement's parameters."""

    TYPE: ClassVar[bytes] = b"t"

    type_oids: tuple[int, ...]

    def encode(self) -> bytes:
        count = len(self.type_oids)
        return frame(b"t", UINT16.pack(count) + struct.pack(f"!{count}I", *self.type_oids))

    @classmethod
    def decode(cls, payload: bytes) -> ParameterDescription:
        cur = Cursor(payload, "ParameterDescription")
        type_oids = cur.uint32_array(cur.uint16())
        cur.end()
        return cls(type_oids)


@dataclass(frozen=True, slots=True)
class ParameterStatus:
    """The current value of a run-time parameter the client is told about."""

    TYPE: ClassVar[bytes] = b"S"

    name: str
    value: str

    def encode(self) -> bytes:
        return frame(b"S", cstr(self.name) + cstr(self.value))

    @classmethod
    def decode(cls, payload: bytes) -> ParameterStatus:
        cur = Cursor(payload, "ParameterStatus")
        name = cur.cstr()
        value = cur.cstr()
        cur.end()
        return cls(name, value)


@dataclass(frozen=True, slots=True)
class ParseComplete(EmptyMessage):
    """Parse succeeded."""

    TYPE: ClassVar[bytes] = b"1"


@dataclass(frozen=True, slots=True)
class PortalSuspended(EmptyMessage):
    """Execute stopped at its row limit; the portal can be resumed."""

    TYPE: ClassVar[bytes] = b"s"


_TRANSACTION_STATUSES = (b"I", b"T", b"E")


@dataclass(frozen=True, slots=True)
class ReadyForQuery:
    """Ready for a new query; ``status`` is b"I" idle, b"T" in a transaction, b"E" failed one."""

    TYPE: ClassVar[bytes] = b"Z"

    status: bytes

    def encode(self) -> bytes:
        if self.status not in _TRANSACTION_STATUSES:
            raise ValueError(f"invalid transaction status {self.status!r}")
        return frame(b"Z", self.status)

    @classmethod
    def decode(cls, payload: bytes) -> ReadyForQuery:
        if payload not in _TRANSACTION_STATUSES:
            raise ProtocolViolation(f"invalid ReadyForQuery message: status {payload!r}")
        return cls(payload)


class FieldDescription(NamedTuple):
    """One column of a RowDescription."""

    # A NamedTuple rather than a frozen dataclass: a RowDescription builds one
    # per column, and tuple construction is several times cheaper.

    name: str
    table_oid: int  # 0 unless the column is a plain table column
    column_number: int  # attribute number within that table, else 0
    type_oid: int
    type_size: int  # pg_type.typlen: negative for variable width
    type_modifier: int  # pg_attribute.atttypmod, -1 if none
    format: int  # 0 text, 1 binary; 0 in replies to Describe of a statement


@dataclass(frozen=True, slots=True)
class RowDescription:
    """The columns of the rows that follow."""

    TYPE: ClassVar[bytes] = b"T"

    fields: tuple[FieldDescription, ...]

    def encode(self) -> bytes:
        parts = [UINT16.pack(len(self.fields))]
        pack = _FIELD.pack
        for f in self.fields:
            parts.append(cstr(f.name))
            parts.append(
                pack(
                    f.table_oid, f.column_number, f.type_oid, f.type_size, f.type_modifier, f.format
                )
            )
        return frame(b"T", b"".join(parts))

    @classmethod
    def decode(cls, payload: bytes) -> RowDescription:
        cur = Cursor(payload, "RowDescription")
        count = cur.uint16()
        # Each field takes at least a NUL and 18 fixed bytes.
        if count * 19 > len(payload) - cur.pos:
            raise cur.fail(f"{count} fields cannot fit in the message")
        # Inlined cursor reads: this runs once per column of every result.
        fields = []
        make = FieldDescription._make
        unpack = _FIELD.unpack_from
        pos = cur.pos
        size = len(payload)
        for _ in range(count):
            end = payload.find(0, pos)
            if end < 0 or end + 19 > size:
                cur.pos = pos
                raise cur.fail(f"truncated field description at byte {pos}")
            name = payload[pos:end].decode("utf-8", "surrogateescape")
            fields.append(make((name, *unpack(payload, end + 1))))
            pos = end + 19
        cur.pos = pos
        cur.end()
        return cls(tuple(fields))


__all__ = [
    "BackendKeyData",
    "BindComplete",
    "CloseComplete",
    "CommandComplete",
    "CopyBothResponse",
    "CopyInResponse",
    "CopyOutResponse",
    "DataRow",
    "EmptyQueryResponse",
    "ErrorResponse",
    "FieldDescription",
    "FunctionCallResponse",
    "NegotiateProtocolVersion",
    "NoData",
    "NoticeResponse",
    "NotificationResponse",
    "ParameterDescription",
    "ParameterStatus",
    "ParseComplete",
    "PortalSuspended",
    "ReadyForQuery",
    "RowDescription",
]
