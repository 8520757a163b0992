"""The listening socket, per-connection negotiation, and draining on shutdown.

Everything before TLS happens on the raw socket, so that a client's first
bytes can be peeked: a TLS ClientHello means direct TLS (PostgreSQL 17's
sslnegotiation=direct), anything else is an SSLRequest, GSSENCRequest,
CancelRequest or StartupMessage.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct

from pgshroud import sqlstate
from pgshroud.policies.model import Policy
from pgshroud.proxy.codec.errors import ProtocolViolation
from pgshroud.proxy.codec.framing import MAX_STARTUP_PACKET_LENGTH
from pgshroud.proxy.codec.messages import (
    BackendKeyData,
    CancelRequest,
    ErrorResponse,
    GSSENCRequest,
    ReadyForQuery,
    SSLRequest,
    StartupMessage,
    decode_startup_packet,
)
from pgshroud.proxy.session.driver import Session, SessionContext
from pgshroud.proxy.wire.cancel import CancelRegistry
from pgshroud.proxy.wire.errors import ClientFacingError
from pgshroud.proxy.wire.leg import Leg, LegClosed
from pgshroud.proxy.wire.startup import establish

log = logging.getLogger("pgshroud.server")

TLS_HANDSHAKE_RECORD = 0x16


class Server:
    def __init__(self, shared: SessionContext) -> None:
        self.shared = shared
        self.config = shared.config
        self.cancels = CancelRegistry()
        self.sessions: set[Session] = set()
        self._handshakes: set[asyncio.Task[None]] = set()
        self._clients = 0
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._draining = False
        self.port = self.config.listen_port

    async def start(self) -> None:
        host = self.config.listen_host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, self.config.listen_port), family=family, backlog=1024)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._accepting = asyncio.create_task(self._accept_loop())

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._listener is not None
        while True:
            try:
                sock, _ = await loop.sock_accept(self._listener)
            except OSError as exc:  # e.g. EMFILE: keep serving the sessions we have
                log.error("accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = asyncio.create_task(self._handle(sock))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _handle(self, sock: socket.socket) -> None:
        leg: Leg | None = None
        wrapped: list[Leg] = []
        try:
            async with asyncio.timeout(self.config.startup_timeout):
                leg, packet = await self._negotiate(sock, wrapped)
            if isinstance(packet, CancelRequest):
                await self._cancel(packet)
                leg.close()
                return
            await self._serve_client(leg, packet)
        except ProtocolViolation as exc:
            leg = leg or (wrapped[0] if wrapped else None)
            log.warning("closing a connection that broke the protocol: %s", exc)
            self._fatal(leg, sock, sqlstate.PROTOCOL_VIOLATION, str(exc))
        except TimeoutError:
            leg = leg or (wrapped[0] if wrapped else None)
            self._fatal(leg, sock, sqlstate.PROTOCOL_VIOLATION, "incomplete startup packet: timed out")
        except (LegClosed, ConnectionError, ssl.SSLError, OSError) as exc:
            log.info("connection closed during startup: %s", type(exc).__name__)
            self._fatal(leg, sock, None, None)
        except Exception:
            log.exception("internal error while serving a connection")
            self._fatal(leg or (wrapped[0] if wrapped else None), sock, sqlstate.INTERNAL_ERROR, "internal error in pgshroud")

    async def _negotiate(self, sock: socket.socket, wrapped: list[Leg]) -> tuple[Leg, StartupMessage | CancelRequest]:
        tls = self.config.tls
        first = await _peek_byte(sock)
        if first == TLS_HANDSHAKE_RECORD:
            if tls is None:
                raise ProtocolViolation("direct TLS connection, but pgshroud has no --tls-cert configured")
            leg = await self._wrap(sock, tls)
            wrapped.append(leg)
            ssl_object = leg.ssl_object
            if ssl_object is None or ssl_object.selected_alpn_protocol() != "postgresql":
                raise ProtocolViolation("direct TLS connection without the ALPN protocol 'postgresql'")
            return leg, await _after_tls(leg)
        loop = asyncio.get_running_loop()
        while True:
            packet = decode_startup_packet(await _recv_packet(sock))
            if isinstance(packet, SSLRequest):
                await loop.sock_sendall(sock, b"S" if tls is not None else b"N")
                if tls is not None:
                    leg = await self._wrap(sock, tls)
                    wrapped.append(leg)
                    return leg, await _after_tls(leg)
            elif isinstance(packet, GSSENCRequest):
                await loop.sock_sendall(sock, b"N")
            else:
                return await self._wrap(sock, None), packet

    async def _wrap(self, sock: socket.socket, tls: ssl.SSLContext | None) -> Leg:
        loop = asyncio.get_running_loop()
        leg = Leg(max_length=self.config.max_message_size, raw=tls is not None)
        # With TLS, uvloop returns its SSL protocol here, not ours.
        await loop.connect_accepted_socket(lambda: leg, sock, ssl=tls)
        return leg

    async def _cancel(self, request: CancelRequest) -> None:
        on_cancel = self.cancels.lookup(request.process_id, request.secret)
        if on_cancel is None:
            log.info("ignoring a cancel request with an unknown key")
            return
        delivered = on_cancel()
        if delivered is not None:
            # Like PostgreSQL, close the client's cancel connection only once
            # the cancel has landed, so a client that then sends its next
            # statement cannot have that one cancelled instead.
            await asyncio.wait([delivered], timeout=self.config.upstream.connect_timeout)

    async def _serve_client(self, leg: Leg, startup: StartupMessage) -> None:
        if self._draining:
            self._fatal(leg, None, sqlstate.CANNOT_CONNECT_NOW, "pgshroud is shutting down")
            return
        if self._clients >= self.config.max_connections:
            self._fatal(leg, None, sqlstate.TOO_MANY_CONNECTIONS, "sorry, too many clients already")
            return
        self._clients += 1
        try:
            await self._run_session(leg, startup)
        finally:
            self._clients -= 1

    async def _run_session(self, leg: Leg, startup: StartupMessage) -> None:
        try:
            async with asyncio.timeout(self.config.startup_timeout):
                policy = self.shared.policy
                established = await establish(leg, startup, self.config, policy if isinstance(policy, Policy) else None)
        except ClientFacingError as exc:
            if not exc.sent:
                leg.write(ErrorResponse.build("FATAL", exc.sqlstate, exc.message, hint=exc.hint).encode())
            log.info("startup refused (%s)", exc.sqlstate or "upstream")
            if self.shared.metrics is not None:
                self.shared.metrics.startup_refusals_total += 1
            leg.close()
            return
        # From here on this is a session, not a handshake: shutdown drains it.
        self._handshakes.discard(asyncio.current_task())
        session = Session(leg, established, self.shared)
        upstream_pid = established.upstream_key.process_id if established.upstream_key else None
        key = self.cancels.issue(established.client_minor, session.cancel_upstream, process_id=upstream_pid)
        leg.write(BackendKeyData(key.process_id, key.secret).encode() + ReadyForQuery(b"I").encode())
        log.info(
            "session started: user=%s database=%s tls=%s protocol=3.%d",
            established.user, established.database, leg.is_tls, established.client_minor,
        )
        self.sessions.add(session)
        metrics = self.shared.metrics
        if metrics is not None:
            metrics.sessions += 1
            metrics.sessions_total += 1
        try:
            session.start()
            if self._draining:
                session.drain()
            await asyncio.shield(session.finished)
        finally:
            if metrics is not None:
                metrics.sessions -= 1
            self.sessions.discard(session)
            self.cancels.revoke(key)
            log.info("session ended: user=%s", established.user)

    def _fatal(self, leg: Leg | None, sock: socket.socket | None, sqlstate: str | None, message: str | None) -> None:
        if self.shared.metrics is not None:
            self.shared.metrics.startup_refusals_total += 1
        error = ErrorResponse.build("FATAL", sqlstate, message).encode() if sqlstate and message else b""
        if leg is not None:
            leg.write(error)
            leg.close()
        elif sock is not None:
            try:
                if error:
                    sock.send(error)
            except OSError:
                pass
            sock.close()

    async def shutdown(self) -> None:
        """Stop accepting; let running statements finish; then close."""
        self._draining = True
        if self._accepting is not None:
            self._accepting.cancel()
        if self._listener is not None:
            self._listener.close()
        for task in list(self._handshakes):
            task.cancel()
        for session in list(self.sessions):
            session.drain()
        waiting = [s.finished for s in self.sessions]
        if waiting:
            _, still = await asyncio.wait(waiting, timeout=self.config.drain_timeout)
            if still:
                log.warning("closing %d sessions that did not finish within the drain timeout", len(still))
                for session in list(self.sessions):
                    session.client.close()
                    session.upstream.close()


async def _after_tls(leg: Leg) -> StartupMessage | CancelRequest:
    packet = decode_startup_packet(await leg.read_startup_packet())
    if not isinstance(packet, (StartupMessage, CancelRequest)):
        raise ProtocolViolation(f"unexpected {type(packet).__name__} inside TLS")
    return packet


_LENGTH = struct.Struct("!I")


async def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    loop = asyncio.get_running_loop()
    chunks = bytearray()
    while len(chunks) < n:
        chunk = await loop.sock_recv(sock, n - len(chunks))
        if not chunk:
            raise LegClosed("connection closed during startup")
        chunks += chunk
    return bytes(chunks)


async def _recv_packet(sock: socket.socket) -> bytes:
    (length,) = _LENGTH.unpack(await _recv_exactly(sock, 4))
    if length < 8 or length - 4 > MAX_STARTUP_PACKET_LENGTH:
        raise ProtocolViolation(f"invalid length of startup packet: {length}")
    return await _recv_exactly(sock, length - 4)


async def _peek_byte(sock: socket.socket) -> int:
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await readable
    finally:
        loop.remove_reader(sock.fileno())
    first = sock.recv(1, socket.MSG_PEEK)
    if not first:
        raise LegClosed("connection closed before startup")
    return first[0]
