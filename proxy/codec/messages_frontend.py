"""Messages a client sends after startup (protocol.sgml, "Message Formats").

CopyData and CopyDone are shared with the backend and live here.  The
authentication replies of type 'p' are in messages_auth.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from ._wire import (
    INT16,
    UINT16,
    UINT32,
    Cursor,
    EmptyMessage,
    cstr,
    frame,
    values_bytes,
)


@dataclass(frozen=True, slots=True)
class Query:
    """Simple query: one string that may hold several statements."""

    TYPE: ClassVar[bytes] = b"Q"

    sql: str

    def encode(self) -> bytes:
        return frame(b"Q", cstr(self.sql))

    @classmethod
    def decode(cls, payload: bytes) -> Query:
        cur = Cursor(payload, "Query")
        sql = cur.cstr()
        cur.end()
        return cls(sql)


@dataclass(frozen=True, slots=True)
class Parse:
    """Extended query: prepare ``sql`` as statement ``name`` ("" is unnamed)."""

    TYPE: ClassVar[bytes] = b"P"

    name: str
    sql: str
    param_types: tuple[int, ...]

    def encode(self) -> bytes:
        count = len(self.param_types)
        return frame(
            b"P",
            cstr(self.name)
            + cstr(self.sql)
            + UINT16.pack(count)
            + struct.pack(f"!{count}I", *self.param_types),
        )

    @classmethod
    def decode(cls, payload: bytes) -> Parse:
        cur = Cursor(payload, "Parse")
        name = cur.cstr()
        sql = cur.cstr()
        param_types = cur.uint32_array(cur.uint16())
        cur.end()
        return cls(name, sql, param_types)


def _check_formats(cur: Cursor, formats: int, values: int) -> None:
    # exec_bind_message() and HandleFunctionRequest() accept no format codes
    # (all text), one (applies to all), or exactly one per value.
    if formats > 1 and formats != values:
        raise cur.fail(f"{formats} format codes for {values} values")


def _format_of(formats: tuple[int, ...], index: int) -> int:
    if not formats:
        return 0
    if len(formats) == 1:
        return formats[0]
    return formats[index]


@dataclass(frozen=True, slots=True)
class Bind:
    """Extended query: bind parameter values to a statement, creating a portal."""

    TYPE: ClassVar[bytes] = b"B"

    portal: str
    statement: str
    param_formats: tuple[int, ...]
    params: tuple[bytes | None, ...]
    result_formats: tuple[int, ...]

    def param_format(self, index: int) -> int:
        """Format code (0 text, 1 binary) that applies to parameter ``index``."""
        return _format_of(self.param_formats, index)

    def encode(self) -> bytes:
        nformats = len(self.param_formats)
        nresults = len(self.result_formats)
        parts = [
            cstr(self.portal),
            cstr(self.statement),
            UINT16.pack(nformats),
            struct.pack(f"!{nformats}h", *self.param_formats),
            UINT16.pack(len(self.params)),
            *values_bytes(self.params),
            UINT16.pack(nresults),
            struct.pack(f"!{nresults}h", *self.result_formats),
        ]
        return frame(b"B", b"".join(parts))

    @classmethod
    def decode(cls, payload: bytes) -> Bind:
        cur = Cursor(payload, "Bind")
        portal = cur.cstr()
        statement = cur.cstr()
        param_formats = cur.int16_array(cur.uint16())
        params = cur.values(cur.uint16())
        _check_formats(cur, len(param_formats), len(params))
        result_formats = cur.int16_array(cur.uint16())
        cur.end()
        return cls(portal, statement, param_formats, params, result_formats)


@dataclass(frozen=True, slots=True)
class _Target:
    # Describe and Close name a prepared statement (b"S") or a portal (b"P").
    TYPE: ClassVar[bytes]

    kind: bytes
    name: str

    def encode(self) -> bytes:
        if self.kind not in (b"S", b"P"):
            raise ValueError(f"kind must be b'S' or b'P', not {self.kind!r}")
        return frame(self.TYPE, self.kind + cstr(self.name))

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        cur = Cursor(payload, cls.__name__)
        kind = cur.byte1()
        if kind not in (b"S", b"P"):
            raise cur.fail(f"invalid subtype {kind!r}")
        name = cur.cstr()
        cur.end()
        return cls(kind, name)


@dataclass(frozen=True, slots=True)
class Describe(_Target):
    """Extended query: describe a statement (b"S") or portal (b"P")."""

    TYPE: ClassVar[bytes] = b"D"


@dataclass(frozen=True, slots=True)
class Close(_Target):
    """Extended query: close a statement (b"S") or portal (b"P")."""

    TYPE: ClassVar[bytes] = b"C"


@dataclass(frozen=True, slots=True)
class Execute:
    """Extended query: run a portal; ``max_rows`` 0 means no limit."""

    TYPE: ClassVar[bytes] = b"E"

    portal: str
    max_rows: int

    def encode(self) -> bytes:
        return frame(b"E", cstr(self.portal) + UINT32.pack(self.max_rows))

    @classmethod
    def decode(cls, payload: bytes) -> Execute:
        cur = Cursor(payload, "Execute")
        portal = cur.cstr()
        # exec_execute_message() reads the count unsigned.
        max_rows = cur.uint32()
        cur.end()
        return cls(portal, max_rows)


@dataclass(frozen=True, slots=True)
class Sync(EmptyMessage):
    """Extended query: end of a batch; the server answers ReadyForQuery."""

    TYPE: ClassVar[bytes] = b"S"


@dataclass(frozen=True, slots=True)
class Flush(EmptyMessage):
    """Extended query: ask the server to send what it has buffered."""

    TYPE: ClassVar[bytes] = b"H"


@dataclass(frozen=True, slots=True)
class Terminate(EmptyMessage):
    """The client is closing the connection."""

    TYPE: ClassVar[bytes] = b"X"


@dataclass(frozen=True, slots=True)
class CopyData:
    """A chunk of COPY data, in either direction."""

    TYPE: ClassVar[bytes] = b"d"

    data: bytes

    def encode(self) -> bytes:
        return frame(b"d", self.data)

    @classmethod
    def decode(cls, payload: bytes) -> CopyData:
        return cls(payload)


@dataclass(frozen=True, slots=True)
class CopyDone(EmptyMessage):
    """End of COPY data, in either direction."""

    TYPE: ClassVar[bytes] = b"c"


@dataclass(frozen=True, slots=True)
class CopyFail:
    """The client aborts COPY FROM STDIN with an error message."""

    TYPE: ClassVar[bytes] = b"f"

    message: str

    def encode(self) -> bytes:
        return frame(b"f", cstr(self.message))

    @classmethod
    def decode(cls, payload: bytes) -> CopyFail:
        cur = Cursor(payload, "CopyFail")
        message = cur.cstr()
        cur.end()
        return cls(message)


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """Legacy fast-path call of a function by OID."""

    TYPE: ClassVar[bytes] = b"F"

    function_oid: int
    arg_formats: tuple[int, ...]
    args: tuple[bytes | None, ...]
    result_format: int

    def encode(self) -> bytes:
        nformats = len(self.arg_formats)
        parts = [
            UINT32.pack(self.function_oid),
            UINT16.pack(nformats),
            struct.pack(f"!{nformats}h", *self.arg_formats),
            UINT16.pack(len(self.args)),
            *values_bytes(self.args),
            INT16.pack(self.result_format),
        ]
        return frame(b"F", b"".join(parts))

    @classmethod
    def decode(cls, payload: bytes) -> FunctionCall:
        cur = Cursor(payload, "FunctionCall")
        function_oid = cur.uint32()
        arg_formats = cur.int16_array(cur.uint16())
        args = cur.values(cur.uint16())
        _check_formats(cur, len(arg_formats), len(args))
        result_format = cur.int16()
        cur.end()
        return cls(function_oid, arg_formats, args, result_format)


__all__ = [
    "Bind",
    "Close",
    "CopyData",
    "CopyDone",
    "CopyFail",
    "Describe",
    "Execute",
    "Flush",
    "FunctionCall",
    "Parse",
    "Query",
    "Sync",
    "Terminate",
]
