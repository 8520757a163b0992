"""Startup-phase packets: no type byte, only an int32 length and a body.

The body opens with an int32 that is either a protocol version or one of the
special request codes (protocol.sgml, "Message Formats").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final, TypeVar

from ._wire import INT32, UINT32, UINT32_PAIR, Cursor, cstr
from .errors import ProtocolViolation

SSL_REQUEST_CODE: Final = 80877103  # 1234 << 16 | 5679
GSSENC_REQUEST_CODE: Final = 80877104  # 1234 << 16 | 5680
CANCEL_REQUEST_CODE: Final = 80877102  # 1234 << 16 | 5678

# Protocol 3.0 cancel keys are exactly 4 bytes; 3.2 made them variable, with
# "minimum and maximum key length 4 and 256 bytes" (protocol.sgml,
# BackendKeyData).  Whether 4 is required depends on the negotiated version,
# which only the session knows.
MIN_SECRET_KEY_LENGTH: Final = 4
MAX_SECRET_KEY_LENGTH: Final = 256


def check_secret(secret: bytes, what: str) -> None:
    """Reject a cancel key whose length the protocol does not allow."""
    if not MIN_SECRET_KEY_LENGTH <= len(secret) <= MAX_SECRET_KEY_LENGTH:
        raise ProtocolViolation(
            f"invalid {what}: secret key of {len(secret)} bytes, expected "
            f"{MIN_SECRET_KEY_LENGTH} to {MAX_SECRET_KEY_LENGTH}"
        )


def _packet(body: bytes) -> bytes:
    return INT32.pack(len(body) + 4) + body


@dataclass(frozen=True, slots=True)
class StartupMessage:
    """Opens a session: protocol version and the client's parameters, in order."""

    major: int
    minor: int
    params: tuple[tuple[str, str], ...]

    def param(self, name: str) -> str | None:
        """Value of a parameter; the last one wins, as in PostgreSQL."""
        found = None
        for key, value in self.params:
            if key == name:
                found = value
        return found

    def encode(self) -> bytes:
        parts = [UINT32.pack(self.major << 16 | self.minor)]
        for key, value in self.params:
            if not key:
                # An empty name is the list terminator on the wire.
                raise ValueError("startup parameter names must not be empty")
            parts.append(cstr(key))
            parts.append(cstr(value))
        parts.append(b"\0")
        return _packet(b"".join(parts))

    @classmethod
    def decode(cls, body: bytes) -> StartupMessage:
        """Decode a packet body as returned by StartupReader.next_packet()."""
        cur = Cursor(body, "startup packet")
        version = cur.uint32()
        major, minor = version >> 16, version & 0xFFFF
        if major != 3:
            raise ProtocolViolation(
                f"unsupported frontend protocol {major}.{minor}: "
                "only protocol 3 (3.0 to 3.2) is supported"
            )
        params: list[tuple[str, str]] = []
        # Name/value pairs end at an empty name, which must be the last byte
        # ("expected terminator as last byte" in backend_startup.c).
        while True:
            name = cur.cstr()
            if not name:
                break
            params.append((name, cur.cstr()))
        cur.end()
        return cls(major, minor, tuple(params))


@dataclass(frozen=True, slots=True)
class SSLRequest:
    """Asks the server to switch to TLS before startup."""

    CODE: ClassVar[int] = SSL_REQUEST_CODE

    def encode(self) -> bytes:
        return _packet(UINT32.pack(self.CODE))

    @classmethod
    def decode(cls, body: bytes) -> SSLRequest:
        """Decode a packet body as returned by StartupReader.next_packet()."""
        return _decode_bare(cls, body, "SSLRequest")


@dataclass(frozen=True, slots=True)
class GSSENCRequest:
    """Asks the server to switch to GSSAPI encryption before startup."""

    CODE: ClassVar[int] = GSSENC_REQUEST_CODE

    def encode(self) -> bytes:
        return _packet(UINT32.pack(self.CODE))

    @classmethod
    def decode(cls, body: bytes) -> GSSENCRequest:
        """Decode a packet body as returned by StartupReader.next_packet()."""
        return _decode_bare(cls, body, "GSSENCRequest")


_Bare = TypeVar("_Bare", SSLRequest, GSSENCRequest)


def _decode_bare(cls: type[_Bare], body: bytes, what: str) -> _Bare:
    cur = Cursor(body, what)
    if cur.uint32() != cls.CODE:
        raise cur.fail("wrong request code")
    cur.end()
    return cls()


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """Asks the server to cancel the query running in another session."""

    CODE: ClassVar[int] = CANCEL_REQUEST_CODE

    process_id: int
    secret: bytes

    def encode(self) -> bytes:
        check_secret(self.secret, "CancelRequest")
        return _packet(UINT32_PAIR.pack(self.CODE, self.process_id) + self.secret)

    @classmethod
    def decode(cls, body: bytes) -> CancelRequest:
        """Decode a packet body as returned by StartupReader.next_packet()."""
        cur = Cursor(body, "CancelRequest")
        if cur.uint32() != cls.CODE:
            raise cur.fail("wrong request code")
        process_id = cur.uint32()
        # The key runs to the end of the packet (protocol 3.2).
        secret = cur.rest()
        check_secret(secret, "CancelRequest")
        return cls(process_id, secret)


StartupPacket = StartupMessage | SSLRequest | GSSENCRequest | CancelRequest

_BY_CODE: dict[int, type[SSLRequest | GSSENCRequest | CancelRequest]] = {
    SSL_REQUEST_CODE: SSLRequest,
    GSSENC_REQUEST_CODE: GSSENCRequest,
    CANCEL_REQUEST_CODE: CancelRequest,
}


def decode_startup_packet(body: bytes) -> StartupPacket:
    """Decode any startup-phase packet body, dispatching on its leading code."""
    if len(body) < 4:
        raise ProtocolViolation(f"startup packet of {len(body)} bytes has no version code")
    special = _BY_CODE.get(UINT32.unpack_from(body)[0])
    if special is not None:
        return special.decode(body)
    return StartupMessage.decode(body)
