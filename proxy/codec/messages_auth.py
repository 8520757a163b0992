"""The authentication exchange: the server's 'R' requests, the client's 'p' replies.

Every Authentication* message has type 'R' and is told apart by its leading
int32 code.  The client's replies all have type 'p' and cannot be told apart
at all: only the session knows which one it is waiting for, so each class has
its own decode().
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Self

from ._wire import INT32, Cursor, cstr, frame
from .errors import ProtocolViolation


class Authentication:
    """Base of every Authentication* ('R') message.

    ``Authentication.decode(payload)`` dispatches on the code, like
    ``decode_authentication``; a subclass's decode() accepts only its own code.
    """

    __slots__ = ()
    TYPE: ClassVar[bytes] = b"R"
    CODE: ClassVar[int]

    def _body(self) -> bytes:
        return b""

    def encode(self) -> bytes:
        return frame(b"R", INT32.pack(self.CODE) + self._body())

    @classmethod
    def decode(cls, payload: bytes) -> Authentication:
        if cls is Authentication:
            return decode_authentication(payload)
        cur = Cursor(payload, cls.__name__)
        if cur.int32() != cls.CODE:
            raise cur.fail(f"authentication code is not {cls.CODE}")
        return cls._decode_body(cur)

    @classmethod
    def _decode_body(cls, cur: Cursor) -> Self:
        cur.end()
        return cls()


@dataclass(frozen=True, slots=True)
class AuthenticationOk(Authentication):
    """Authentication succeeded."""

    CODE: ClassVar[int] = 0


@dataclass(frozen=True, slots=True)
class AuthenticationKerberosV5(Authentication):
    """Kerberos V5 is required (no longer supported by PostgreSQL)."""

    CODE: ClassVar[int] = 2


@dataclass(frozen=True, slots=True)
class AuthenticationCleartextPassword(Authentication):
    """A clear-text password is required."""

    CODE: ClassVar[int] = 3


@dataclass(frozen=True, slots=True)
class AuthenticationMD5Password(Authentication):
    """An MD5-hashed password is required, salted with ``salt`` (4 bytes)."""

    CODE: ClassVar[int] = 5

    salt: bytes

    def _body(self) -> bytes:
        if len(self.salt) != 4:
            raise ValueError(f"MD5 salt must be 4 bytes, not {len(self.salt)}")
        return self.salt

    @classmethod
    def _decode_body(cls, cur: Cursor) -> Self:
        salt = cur.take(4)
        cur.end()
        return cls(salt)


@dataclass(frozen=True, slots=True)
class AuthenticationGSS(Authentication):
    """GSSAPI authentication is required."""

    CODE: ClassVar[int] = 7


@dataclass(frozen=True, slots=True)
class AuthenticationSSPI(Authentication):
    """SSPI authentication is required."""

    CODE: ClassVar[int] = 9


@dataclass(frozen=True, slots=True)
class AuthenticationSASL(Authentication):
    """SASL authentication is required, with one of ``mechanisms``."""

    CODE: ClassVar[int] = 10

    mechanisms: tuple[str, ...]

    def _body(self) -> bytes:
        if not all(self.mechanisms):
            # An empty name is the list terminator on the wire.
            raise ValueError("SASL mechanism names must not be empty")
        return b"".join(map(cstr, self.mechanisms)) + b"\0"

    @classmethod
    def _decode_body(cls, cur: Cursor) -> Self:
        mechanisms: list[str] = []
        while name := cur.cstr():
            mechanisms.append(name)
        cur.end()
        return cls(tuple(mechanisms))


@dataclass(frozen=True, slots=True)
class _AuthenticationData(Authentication):
    # The code is followed by opaque mechanism data up to the end.
    data: bytes

    def _body(self) -> bytes:
        return self.data

    @classmethod
    def _decode_body(cls, cur: Cursor) -> Self:
        return cls(cur.rest())


@dataclass(frozen=True, slots=True)
class AuthenticationGSSContinue(_AuthenticationData):
    """GSSAPI or SSPI data for the client."""

    CODE: ClassVar[int] = 8


@dataclass(frozen=True, slots=True)
class AuthenticationSASLContinue(_AuthenticationData):
    """A SASL challenge."""

    CODE: ClassVar[int] = 11


@dataclass(frozen=True, slots=True)
class AuthenticationSASLFinal(_AuthenticationData):
    """The SASL outcome ("additional data") once authentication completed."""

    CODE: ClassVar[int] = 12


AUTHENTICATION_MESSAGES: dict[int, type[Authentication]] = {
    cls.CODE: cls
    for cls in (
        AuthenticationOk,
        AuthenticationKerberosV5,
        AuthenticationCleartextPassword,
        AuthenticationMD5Password,
        AuthenticationGSS,
        AuthenticationGSSContinue,
        AuthenticationSSPI,
        AuthenticationSASL,
        AuthenticationSASLContinue,
        AuthenticationSASLFinal,
    )
}


def decode_authentication(payload: bytes) -> Authentication:
    """Decode an 'R' payload into the Authentication* class its code names."""
    cur = Cursor(payload, "Authentication")
    code = cur.int32()
    cls = AUTHENTICATION_MESSAGES.get(code)
    if cls is None:
        raise ProtocolViolation(f"unknown authentication request code {code}")
    return cls._decode_body(cur)


@dataclass(frozen=True, slots=True)
class PasswordMessage:
    """A password, clear-text or MD5-hashed; ``password`` excludes the terminating NUL."""

    TYPE: ClassVar[bytes] = b"p"

    password: bytes

    def encode(self) -> bytes:
        if 0 in self.password:
            raise ValueError("password contains a NUL byte")
        return frame(b"p", self.password + b"\0")

    @classmethod
    def decode(cls, payload: bytes) -> PasswordMessage:
        # recv_password_packet(): the string must fill the packet exactly
        # ("invalid password packet size").
        end = payload.find(0)
        if end < 0 or end != len(payload) - 1:
            raise ProtocolViolation("invalid PasswordMessage message: invalid password packet size")
        return cls(payload[:end])


@dataclass(frozen=True, slots=True)
class SASLInitialResponse:
    """The chosen SASL mechanism and the client's first message (None: no data)."""

    TYPE: ClassVar[bytes] = b"p"

    mechanism: str
    data: bytes | None

    def encode(self) -> bytes:
        data = self.data
        tail = INT32.pack(-1) if data is None else INT32.pack(len(data)) + data
        return frame(b"p", cstr(self.mechanism) + tail)

    @classmethod
    def decode(cls, payload: bytes) -> SASLInitialResponse:
        cur = Cursor(payload, "SASLInitialResponse")
        mechanism = cur.cstr()
        (data,) = cur.values(1)
        cur.end()
        return cls(mechanism, data)


@dataclass(frozen=True, slots=True)
class _ResponseData:
    TYPE: ClassVar[bytes] = b"p"

    data: bytes

    def encode(self) -> bytes:
        return frame(b"p", self.data)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        return cls(payload)


@dataclass(frozen=True, slots=True)
class SASLResponse(_ResponseData):
    """A SASL message from the client after the first one."""


@dataclass(frozen=True, slots=True)
class GSSResponse(_ResponseData):
    """GSSAPI or SSPI data from the client."""
