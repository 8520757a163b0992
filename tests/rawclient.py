"""A tiny PostgreSQL client on a raw socket, for tests that need to send
exactly the bytes they choose: a chosen protocol version, odd startup
parameters, SSLRequest or GSSENCRequest first, garbage, or nothing at all.

Messages are built and read with `proxy.codec`; everything is blocking with
a timeout, so a server that never answers fails the test instead of hanging it.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from typing import Self

from pgshroud.proxy.codec.messages import (
    AuthenticationCleartextPassword,
    AuthenticationMD5Password,
    AuthenticationOk,
    BackendKeyData,
    CancelRequest,
    ErrorResponse,
    GSSENCRequest,
    NegotiateProtocolVersion,
    ParameterStatus,
    PasswordMessage,
    Query,
    ReadyForQuery,
    SSLRequest,
    StartupMessage,
    Terminate,
    decode_backend,
)

DEFAULT_TIMEOUT = 5.0


class ServerClosed(ConnectionError):
    """The server closed the connection (EOF or reset)."""


@dataclass
class Startup:
    """What the server sent from StartupMessage up to the first ReadyForQuery."""

    messages: list
    negotiation: NegotiateProtocolVersion | None
    key: BackendKeyData | None
    parameters: dict[str, str]


class RawClient:
    def __init__(self, sock: socket.socket | ssl.SSLSocket, host: str, port: int, timeout: float) -> None:
        self.sock = sock
        self.host = host
        self.port = port
        self.timeout = timeout
        self._buf = b""

    # connecting

    @classmethod
    def connect(cls, host: str, port: int, *, timeout: float = DEFAULT_TIMEOUT) -> RawClient:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock, host, port, timeout)

    @classmethod
    def connect_direct_tls(
        cls, host: str, port: int, context: ssl.SSLContext, *, timeout: float = DEFAULT_TIMEOUT
    ) -> RawClient:
        """Open TLS right away, as libpq's sslnegotiation=direct does."""
        client = cls.connect(host, port, timeout=timeout)
        client.sock = context.wrap_socket(client.sock, server_hostname=host)
        return client

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # writing

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_startup(self, params: dict[str, str] | list[tuple[str, str]], *, major: int = 3, minor: int = 0) -> None:
        items = tuple(params.items()) if isinstance(params, dict) else tuple(params)
        self.send(StartupMessage(major, minor, items).encode())

    def ssl_request(self) -> bytes:
        """Send SSLRequest; return the server's one-byte answer."""
        self.send(SSLRequest().encode())
        return self._recv_exactly(1)

    def gssenc_request(self) -> bytes:
        """Send GSSENCRequest; return the server's one-byte answer."""
        self.send(GSSENCRequest().encode())
        return self._recv_exactly(1)

    def start_tls(self, context: ssl.SSLContext) -> None:
        """Switch to TLS after the server answered 'S'."""
        assert not self._buf, "bytes after the SSLRequest answer would be a protocol breach"
        self.sock = context.wrap_socket(self.sock, server_hostname=self.host)

    def query(self, sql: str) -> list:
        """Send a simple Query; return every message up to ReadyForQuery."""
        self.send(Query(sql).encode())
        return self.read_until_ready()

    def terminate(self) -> None:
        self.send(Terminate().encode())

    # reading

    def _recv(self, n: int) -> bytes:
        try:
            chunk = self.sock.recv(n)
        except ConnectionResetError as exc:
            raise ServerClosed("connection reset by the server") from exc
        if not chunk:
            raise ServerClosed("the server closed the connection")
        return chunk

    def _recv_exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._buf += self._recv(max(n - len(self._buf), 65536))
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def read_raw(self) -> tuple[bytes, bytes]:
        """The next message as (type byte, payload)."""
        kind, length = struct.unpack("!cI", self._recv_exactly(5))
        return kind, self._recv_exactly(length - 4)

    def read(self):
        """The next message, decoded."""
        return decode_backend(*self.read_raw())

    def read_until_ready(self) -> list:
        messages = []
        while True:
            message = self.read()
            messages.append(message)
            if isinstance(message, ReadyForQuery):
                return messages

    def read_error(self) -> ErrorResponse:
        """Read until an ErrorResponse arrives and return it."""
        while True:
            message = self.read()
            if isinstance(message, ErrorResponse):
                return message

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Drain until the server closes; True if it did within `timeout`."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self._buf = b""
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                self._recv(65536)
            except ServerClosed:
                return True
            except TimeoutError:
                return False
            except (ssl.SSLError, OSError):
                return True
            finally:
                self.sock.settimeout(self.timeout)
        return False

    # the whole startup

    def startup(
        self,
        user: str,
        database: str,
        *,
        password: str | None = None,
        minor: int = 0,
        major: int = 3,
        params: dict[str, str] | None = None,
    ) -> Startup:
        """StartupMessage, trust/password/md5 authentication, and every
        message up to ReadyForQuery; raises AssertionError on an ErrorResponse."""
        self.send_startup({"user": user, "database": database, **(params or {})}, major=major, minor=minor)
        messages = []
        while True:
            message = self.read()
            messages.append(message)
            assert not isinstance(message, ErrorResponse), f"startup failed: {message.fields}"
            if isinstance(message, AuthenticationCleartextPassword):
                self.send(PasswordMessage((password or "").encode()).encode())
            elif isinstance(message, AuthenticationMD5Password):
                inner = hashlib.md5(((password or "") + user).encode()).hexdigest()
                outer = hashlib.md5(inner.encode() + message.salt).hexdigest()
                self.send(PasswordMessage(b"md5" + outer.encode()).encode())
            elif isinstance(message, ReadyForQuery):
                break
            elif not isinstance(message, (AuthenticationOk, BackendKeyData, NegotiateProtocolVersion,
                                          ParameterStatus)) and type(message).__name__.startswith("Authentication"):
                raise AssertionError(f"the raw client cannot answer {type(message).__name__}")
        negotiation = next((m for m in messages if isinstance(m, NegotiateProtocolVersion)), None)
        key = next((m for m in messages if isinstance(m, BackendKeyData)), None)
        parameters = {m.name: m.value for m in messages if isinstance(m, ParameterStatus)}
        return Startup(messages, negotiation, key, parameters)


def send_cancel(host: str, port: int, process_id: int, secret: bytes, *, ssl_first: bool = False,
                timeout: float = DEFAULT_TIMEOUT) -> bytes | None:
    """Send a CancelRequest on a fresh connection and wait for the server to close it.

    With `ssl_first`, an SSLRequest goes first and must be refused ('N'), as
    libpq does with sslmode=prefer against a server without TLS. Returns the
    SSLRequest answer, if one was asked for.
    """
    with RawClient.connect(host, port, timeout=timeout) as client:
        answer = client.ssl_request() if ssl_first else None
        client.send(CancelRequest(process_id, secret).encode())
        client.wait_closed()
        return answer


def error_fields(error: ErrorResponse) -> dict[str, str]:
    return dict(error.fields)
