"""The `pgshroud` command: serve, demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Sequence

from proxy.config import ConfigError, ServerConfig, UpstreamTarget, parse_listen, server_tls_context
from proxy.server import Server
from proxy.session import SessionContext
from rewriter import plan

log = logging.getLogger("pgshroud")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgshroud",
        description="A privacy proxy for PostgreSQL: analysts connect to it as to PostgreSQL.",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                        help="how much to log on stderr (never SQL text or row values; default: info)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the proxy in front of a PostgreSQL server",
                                description="Accept PostgreSQL clients and relay them to --upstream.")
    serve.add_argument("--listen", default="127.0.0.1:6432", metavar="HOST:PORT",
                       help="address clients connect to (default: 127.0.0.1:6432; [::1]:PORT for IPv6)")
    serve.add_argument("--upstream", required=True, metavar="DSN",
                       help="the PostgreSQL server, as a libpq DSN or URI. Client sessions use its host, port "
                            "and sslmode/sslrootcert/sslcert/sslkey, with the client's own user, database and "
                            "password; its user and password (or PGPASSWORD, ~/.pgpass) are for pgshroud's own "
                            "connections only")
    serve.add_argument("--policy", metavar="FILE", help="the YAML privacy policy (without it: plain pass-through)")
    serve.add_argument("--tls-cert", metavar="FILE", help="PEM certificate chain for TLS with clients")
    serve.add_argument("--tls-key", metavar="FILE", help="PEM private key for --tls-cert")
    serve.add_argument("--max-connections", type=int, default=1000, metavar="N",
                       help="client connections served at once; more get SQLSTATE 53300 (default: 1000)")
    serve.add_argument("--max-message-size", type=int, default=256 * 1024 * 1024, metavar="BYTES",
                       help="largest protocol message a client may send (default: 256 MiB)")
    serve.add_argument("--drain-timeout", type=float, default=60.0, metavar="SECONDS",
                       help="on SIGTERM, how long running statements may take before sessions are closed "
                            "(default: 60)")

    demo = commands.add_parser("demo", help="run pgshroud on a throwaway PostgreSQL with synthetic patient data",
                               description="Start a throwaway PostgreSQL cluster with a synthetic healthcare "
                                           "dataset and pgshroud in front of it; Ctrl-C removes everything.")
    demo.add_argument("--port", type=int, default=6432, help="port pgshroud listens on (default: 6432)")
    demo.add_argument("--patients", type=int, default=20_000, help="number of synthetic patients (default: 20000)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.command == "serve":
            return _serve(args)
        from proxy.demo_command import run_demo

        return run_demo(port=args.port, patients=args.patients)
    except ConfigError as exc:
        print(f"pgshroud: {exc}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    if args.policy:
        raise ConfigError(f"--policy {args.policy}: this version of pgshroud cannot load policies yet")
    config = ServerConfig(
        *parse_listen(args.listen),
        upstream=UpstreamTarget.parse(args.upstream),
        tls=server_tls_context(args.tls_cert, args.tls_key),
        max_connections=args.max_connections,
        max_message_size=args.max_message_size,
        drain_timeout=args.drain_timeout,
    )
    log.warning("no --policy given: pgshroud relays every statement unchanged")
    run_event_loop(serve_until_signalled(SessionContext(config, plan)))
    return 0


async def serve_until_signalled(shared: SessionContext, ready: asyncio.Future[int] | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then drain."""
    server = Server(shared)
    await server.start()
    log.info("listening on %s:%d, upstream %s", shared.config.listen_host, server.port,
             shared.config.upstream.describe())
    if ready is not None:
        ready.set_result(server.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("draining: no new connections, waiting for running statements")
    await server.shutdown()


def run_event_loop(main_coroutine) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_coroutine)
        return
    uvloop.run(main_coroutine)


if __name__ == "__main__":
    sys.exit(main())
