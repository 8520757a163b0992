"""Incremental framing of the PostgreSQL byte stream, without any I/O.

Bytes go in with ``receive_data()``; complete units come out of
``next_frame()`` / ``next_packet()``, or ``NEED_DATA`` when the buffer holds
only part of one.  Like pgbouncer's ``get_header()``, the readers peek at the
header and never consume a partial message.
"""

from __future__ import annotations

import enum
from typing import Final, Literal

from ._wire import INT32, frame, type_repr
from .errors import ProtocolViolation

__all__ = [
    "MAX_STARTUP_PACKET_LENGTH",
    "NEED_DATA",
    "FrameReader",
    "NeedData",
    "StartupReader",
    "frame",
]

# From PostgreSQL's MAX_STARTUP_PACKET_LENGTH in src/include/libpq/pqcomm.h.
MAX_STARTUP_PACKET_LENGTH: Final = 10_000

# Consumed bytes at the front of a buffer are dropped once there are this
# many of them and they outweigh the unread tail, so compaction costs O(1)
# amortised per byte and a long-lived connection does not grow its buffer.
_COMPACT_THRESHOLD = 64 * 1024

# One interned 1-byte object per value, so type bytes cost no allocation.
_TYPE_BYTES = tuple(bytes((i,)) for i in range(256))


class _Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return self.value

    __str__ = __repr__


NEED_DATA: Final = _Sentinel.NEED_DATA
NeedData = Literal[_Sentinel.NEED_DATA]


class _Buffer:
    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def receive_data(self, data: bytes) -> None:
        """Append bytes read from the peer."""
        self._buf += data

    def buffered(self) -> int:
        """Number of received bytes not yet returned."""
        return len(self._buf) - self._pos

    def take_all(self) -> bytes:
        """Return and forget every buffered byte (e.g. before a TLS handshake)."""
        data = bytes(self._buf[self._pos :])
        self._buf = bytearray()
        self._pos = 0
        return data

    def _consume(self, start: int, end: int) -> bytes:
        buf = self._buf
        if end - start < 1024:
            data = bytes(buf[start:end])
        else:
            # Slicing a bytearray copies twice; a view copies once.  The view
            # is freed before the buffer is resized below.
            data = bytes(memoryview(buf)[start:end])
        if end == len(buf):
            buf.clear()
            self._pos = 0
        elif end >= _COMPACT_THRESHOLD and end * 2 >= len(buf):
            del buf[:end]
            self._pos = 0
        else:
            self._pos = end
        return data


class FrameReader(_Buffer):
    """Splits a stream of typed messages (everything after startup).

    ``max_length`` bounds the int32 length field, which counts itself but not
    the type byte, as PostgreSQL's ``pq_getmessage()`` does.
    """

    __slots__ = ("_max_length",)

    def __init__(self, *, max_length: int) -> None:
        super().__init__()
        self._max_length = max_length

    def next_frame(self) -> tuple[bytes, bytes] | NeedData:
        """Return (type byte, payload) of the next complete message, or NEED_DATA."""
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < 5:
            return NEED_DATA
        type_byte = _TYPE_BYTES[buf[pos]]
        (length,) = INT32.unpack_from(buf, pos + 1)
        # Validate as soon as the header is in, so a hostile length is refused
        # before we wait for (and buffer) its body.
        if length < 4:
            raise ProtocolViolation(
                f"invalid message length {length} for message type {type_repr(type_byte)}"
            )
        if length > self._max_length:
            raise ProtocolViolation(
                f"message of {length} bytes exceeds the limit of {self._max_length} bytes"
            )
        end = pos + 1 + length
        if len(buf) < end:
            return NEED_DATA
        return type_byte, self._consume(pos + 5, end)


class StartupReader(_Buffer):
    """Splits the untyped packets of the startup phase.

    A startup packet is an int32 length (counting itself) and a body that
    starts with an int32 protocol version or request code.
    """

    __slots__ = ("_max_length",)

    def __init__(self, *, max_length: int = MAX_STARTUP_PACKET_LENGTH) -> None:
        super().__init__()
        self._max_length = max_length

    def next_packet(self) -> bytes | NeedData:
        """Return the body of the next complete packet, or NEED_DATA."""
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < 4:
            return NEED_DATA
        (length,) = INT32.unpack_from(buf, pos)
        # ProcessStartupPacket() in backend_startup.c bounds the body (length
        # minus its own 4 bytes) by 4 (the version code) and
        # MAX_STARTUP_PACKET_LENGTH.
        if length < 8:
            raise ProtocolViolation(f"invalid length {length} of startup packet")
        if length - 4 > self._max_length:
            raise ProtocolViolation(
                f"startup packet of {length} bytes exceeds the limit of "
                f"{self._max_length} bytes"
            )
        end = pos + length
        if len(buf) < end:
            return NEED_DATA
        return self._consume(pos + 4, end)
