# Primitives shared by the message modules: precompiled structs, a bounds-
# checked cursor over a payload, and the string rules of the protocol.
#
# Every decoding failure surfaces as ProtocolViolation; nothing here may let
# IndexError, struct.error or UnicodeDecodeError escape to the caller.

from __future__ import annotations

import struct
from typing import ClassVar, Self

from .errors import ProtocolViolation

INT8 = struct.Struct("!B")
INT16 = struct.Struct("!h")
UINT16 = struct.Struct("!H")
INT32 = struct.Struct("!i")
UINT32 = struct.Struct("!I")
UINT32_PAIR = struct.Struct("!II")
HEADER = struct.Struct("!ci")

NULL_VALUE = INT32.pack(-1)

# Strings travel as NUL-terminated byte strings whose encoding the protocol
# leaves to client_encoding; surrogateescape lets arbitrary bytes survive a
# decode/encode round trip unchanged.
ENCODING = "utf-8"
ERRORS = "surrogateescape"


# A message type byte as error messages show it: 'Q', '\x00'.
def type_repr(type_byte: bytes) -> str:
    return repr(type_byte.decode("latin-1"))


# A protocol String: the text and its terminating NUL.
def cstr(value: str) -> bytes:
    raw = value.encode(ENCODING, ERRORS)
    if 0 in raw:
        # An embedded NUL would end the string early on the wire and shift
        # every following field: refuse rather than emit a corrupt message.
        raise ValueError(f"string {value[:40]!r} contains a NUL byte")
    return raw + b"\0"


# Int32-length-prefixed values, -1 for NULL (DataRow, Bind, FunctionCall).
def values_bytes(values: tuple[bytes | None, ...]) -> list[bytes]:
    parts: list[bytes] = []
    append = parts.append
    for value in values:
        if value is None:
            append(NULL_VALUE)
        else:
            append(INT32.pack(len(value)))
            append(value)
    return parts


# Reads the fields of one payload in order; running off the end, or leaving
# bytes over, is the peer's fault and raises ProtocolViolation.
class Cursor:

    __slots__ = ("buf", "pos", "what")

    def __init__(self, buf: bytes, what: str) -> None:
        self.buf = buf
        self.pos = 0
        self.what = what

    def fail(self, problem: str) -> ProtocolViolation:
        return ProtocolViolation(f"invalid {self.what} message: {problem}")

    def advance(self, n: int) -> int:
        pos = self.pos
        if pos + n > len(self.buf):
            raise self.fail(f"truncated at byte {pos}, needed {n} more")
        self.pos = pos + n
        return pos

    def byte1(self) -> bytes:
        pos = self.advance(1)
        return self.buf[pos : pos + 1]

    def uint8(self) -> int:
        return self.buf[self.advance(1)]

    def int16(self) -> int:
        value: int = INT16.unpack_from(self.buf, self.advance(2))[0]
        return value

    def uint16(self) -> int:
        value: int = UINT16.unpack_from(self.buf, self.advance(2))[0]
        return value

    def int32(self) -> int:
        value: int = INT32.unpack_from(self.buf, self.advance(4))[0]
        return value

    def uint32(self) -> int:
        value: int = UINT32.unpack_from(self.buf, self.advance(4))[0]
        return value

    def take(self, n: int) -> bytes:
        pos = self.advance(n)
        return self.buf[pos : pos + n]

    def rest(self) -> bytes:
        pos = self.pos
        self.pos = len(self.buf)
        return self.buf[pos:]

    def cstr(self) -> str:
        buf = self.buf
        pos = self.pos
        end = buf.find(0, pos)
        if end < 0:
            raise self.fail(f"unterminated string at byte {pos}")
        self.pos = end + 1
        return buf[pos:end].decode(ENCODING, ERRORS)

    def int16_array(self, count: int) -> tuple[int, ...]:
        if not count:
            return ()
        return struct.unpack_from(f"!{count}h", self.buf, self.advance(2 * count))

    def uint32_array(self, count: int) -> tuple[int, ...]:
        if not count:
            return ()
        return struct.unpack_from(f"!{count}I", self.buf, self.advance(4 * count))

    def values(self, count: int) -> tuple[bytes | None, ...]:
        buf = self.buf
        size = len(buf)
        pos = self.pos
        # Each value needs at least its 4-byte length: reject absurd counts
        # before looping over them.
        if pos + 4 * count > size:
            raise self.fail(f"{count} values cannot fit in {size - pos} bytes")
        out: list[bytes | None] = []
        append = out.append
        unpack = INT32.unpack_from
        for _ in range(count):
            if pos + 4 > size:
                raise self.fail(f"truncated at byte {pos}, needed 4 more")
            (length,) = unpack(buf, pos)
            pos += 4
            if length < 0:
                if length != -1:
                    raise self.fail(f"invalid value length {length}")
                append(None)
                continue
            end = pos + length
            if end > size:
                raise self.fail(f"value of {length} bytes overruns the message")
            append(buf[pos:end])
            pos = end
        self.pos = pos
        return tuple(out)

    def end(self) -> None:
        # PostgreSQL's pq_getmsgend: bytes left over mean the message is
        # malformed, even if every field parsed.
        left = len(self.buf) - self.pos
        if left:
            raise self.fail(f"{left} unexpected trailing bytes")


def frame(type_byte: bytes, payload: bytes) -> bytes:
    """Return a typed message: type byte, int32 length (counting itself), payload."""
    return HEADER.pack(type_byte, len(payload) + 4) + payload


# Base of the messages that carry nothing but their type byte.
class EmptyMessage:

    __slots__ = ()
    TYPE: ClassVar[bytes]

    def encode(self) -> bytes:
        return frame(self.TYPE, b"")

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        if payload:
            raise ProtocolViolation(
                f"invalid {cls.__name__} message: {len(payload)} unexpected trailing bytes"
            )
        return cls()
