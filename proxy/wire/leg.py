"""One side of a proxied connection as an asyncio Protocol.

During startup a coroutine awaits whole packets from it; once the session
relays, incoming bytes go straight to a callback, so the hot path runs
without a coroutine per message.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import cast

from pgshroud.proxy.codec.framing import NEED_DATA, FrameReader, StartupReader


class LegClosed(ConnectionError):
    """The peer closed the connection."""


class Leg(asyncio.Protocol):
    def __init__(self, *, max_length: int, raw: bool = False) -> None:
        self.transport: asyncio.Transport | None = None
        self.frames = FrameReader(max_length=max_length)
        self.startup = StartupReader()
        self._waiter: asyncio.Future[None] | None = None
        self._pause_reasons: set[str] = set()
        self._eof = False
        self.on_data: Callable[[bytes], None] | None = None
        self.on_lost: Callable[[Exception | None], None] | None = None
        self.on_pause_writing: Callable[[], None] | None = None
        self.on_resume_writing: Callable[[], None] | None = None
        self._raw_mode = raw
        self.closed = asyncio.get_running_loop().create_future()

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream protocol is given a Transport; asyncio's stubs name the base class for every protocol.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.on_data is not None:
            self.on_data(data)
            return
        if self._raw_mode:
            self.startup.receive_data(data)
        else:
            self.frames.receive_data(data)
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._wake()
        if not self.closed.done():
            self.closed.set_result(None)
        if self.on_lost is not None:
            self.on_lost(exc)

    def pause_writing(self) -> None:
        if self.on_pause_writing is not None:
            self.on_pause_writing()

    def resume_writing(self) -> None:
        if self.on_resume_writing is not None:
            self.on_resume_writing()

    # coroutine side, for the startup phase
    async def read_frame(self) -> tuple[bytes, bytes]:
        """The next typed message; raises ProtocolViolation or LegClosed."""
        if self._raw_mode:  # bytes pipelined after the startup packet
            self._raw_mode = False
            self.frames.receive_data(self.startup.take_all())
        while True:
            frame = self.frames.next_frame()
            if frame is not NEED_DATA:
                return frame
            await self._wait_data()

    async def read_startup_packet(self) -> bytes:
        """The next untyped startup packet body (after its length word)."""
        self._raw_mode = True
        while True:
            packet = self.startup.next_packet()
            if packet is not NEED_DATA:
                return packet
            await self._wait_data()

    async def _wait_data(self) -> None:
        if self._eof:
            raise LegClosed("connection closed by peer")
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # writing and flow control
    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def pause(self, reason: str) -> None:
        if not self._pause_reasons and self.transport is not None:
            self.transport.pause_reading()
        self._pause_reasons.add(reason)

    def resume(self, reason: str) -> None:
        self._pause_reasons.discard(reason)
        if not self._pause_reasons and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        """The TLS connection's object (certificates, ALPN), or None without TLS."""
        if self.transport is None:
            return None
        ssl_object: ssl.SSLObject | None = self.transport.get_extra_info("ssl_object")
        return ssl_object

    @property
    def is_tls(self) -> bool:
        return self.ssl_object is not None
