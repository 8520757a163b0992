"""Connections to the upstream PostgreSQL: the session leg and cancel requests."""

from __future__ import annotations

import asyncio
import socket
import ssl

from pgshroud.proxy.codec.messages import CancelRequest, SSLRequest
from pgshroud.proxy.ops.config import UpstreamTarget
from pgshroud.proxy.wire.leg import Leg


class UpstreamUnavailable(ConnectionError):
    """The upstream could not be reached; the message names it."""


async def _open_socket(target: UpstreamTarget) -> socket.socket:
    loop = asyncio.get_running_loop()
    if target.is_unix_socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        await loop.sock_connect(sock, target.socket_path)
        return sock
    infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    last: OSError | None = None
    for family, type_, proto, _, addr in infos:
        sock = socket.socket(family, type_, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, addr)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise last or OSError(f"no address for {target.host}")


async def _negotiate_tls(sock: socket.socket, target: UpstreamTarget) -> ssl.SSLContext | None:
    """Send SSLRequest when the sslmode asks for TLS; return the context to wrap with."""
    ctx = target.client_tls_context()
    if ctx is None or target.sslmode == "allow":
        return None
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, SSLRequest().encode())
    answer = await loop.sock_recv(sock, 1)
    if answer == b"S":
        return ctx
    if answer == b"N" and not target.tls_required:
        return None
    if answer == b"N":
        raise UpstreamUnavailable(
            f"the upstream PostgreSQL at {target.describe()} does not accept TLS, "
            f"but --upstream asks for sslmode={target.sslmode}"
        )
    raise UpstreamUnavailable(f"the upstream at {target.describe()} answered SSLRequest with {answer!r}")


async def connect(target: UpstreamTarget, *, max_length: int) -> Leg:
    """Open the upstream leg of a session (TCP or Unix socket, TLS per sslmode)."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(target.connect_timeout):
            sock = await _open_socket(target)
            try:
                ctx = await _negotiate_tls(sock, target)
                leg = Leg(max_length=max_length)
                # With TLS, uvloop returns its SSL protocol here, not ours.
                await loop.create_connection(
                    lambda: leg, sock=sock, ssl=ctx, server_hostname=target.host if ctx is not None else None
                )
            except BaseException:
                sock.close()
                raise
    except UpstreamUnavailable:
        raise
    except TimeoutError:
        raise UpstreamUnavailable(
            f"timed out after {target.connect_timeout:g}s connecting to the upstream PostgreSQL at {target.describe()}"
        ) from None
    except (OSError, ssl.SSLError) as exc:
        raise UpstreamUnavailable(
            f"cannot connect to the upstream PostgreSQL at {target.describe()}: {exc.strerror or exc}"
        ) from None
    return leg


async def send_cancel(target: UpstreamTarget, process_id: int, secret: bytes) -> None:
    """Deliver a CancelRequest for an upstream backend; failures are not reported to anyone."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(target.connect_timeout):
        sock = await _open_socket(target)
        stream_owns_socket = False
        try:
            ctx = await _negotiate_tls(sock, target)
            packet = CancelRequest(process_id, secret).encode()
            if ctx is None:
                await loop.sock_sendall(sock, packet)
                # The server closes the connection when it has read the request.
                await loop.sock_recv(sock, 1)
                return
            reader, writer = await asyncio.open_connection(
                sock=sock, ssl=ctx, server_hostname=target.host
            )
            stream_owns_socket = True
            writer.write(packet)
            await writer.drain()
            await reader.read(1)
            writer.close()
        finally:
            if not stream_owns_socket:
                sock.close()
