"""The `pgshroud` command: serve, demo, setup, check, explain, budget."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence

import asyncpg

from pgshroud.policies.errors import PolicyError
from pgshroud.policies.loader import load_policy
from pgshroud.policies.model import Policy
from pgshroud.proxy.commands.serve import run_event_loop, serve_until_signalled
from pgshroud.proxy.ops.catalog import own_conninfo
from pgshroud.proxy.ops.config import ConfigError, ServerConfig, UpstreamTarget, parse_listen, server_tls_context
from pgshroud.proxy.session.driver import SessionContext
from pgshroud.proxy.wire.client_auth import ClientAuthenticator, certificate_end_point
from pgshroud.rewriter import plan

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
    serve.add_argument("--auth-file", metavar="FILE",
                       help="pgshroud checks clients' passwords itself, with SCRAM-SHA-256 (and SCRAM-SHA-256-PLUS "
                            "channel binding over TLS), against this file of '\"user\" \"secret\"' lines "
                            "(PgBouncer's format; the secret is the user's SCRAM verifier from pg_authid, or the "
                            "password), then logs in to PostgreSQL as the same user; SIGHUP reloads it")
    serve.add_argument("--auth-query", metavar="SQL",
                       help="like --auth-file, with the secret read by this query over pgshroud's own connection, "
                            "the user name as $1 (e.g. 'SELECT usename, passwd FROM pg_shadow WHERE usename=$1'); "
                            "with --auth-file too, for users the file does not list")
    serve.add_argument("--max-connections", type=int, default=1000, metavar="N",
                       help="client connections served at once; more get SQLSTATE 53300 (default: 1000)")
    serve.add_argument("--max-message-size", type=int, default=256 * 1024 * 1024, metavar="BYTES",
                       help="largest protocol message a client may send (default: 256 MiB)")
    serve.add_argument("--drain-timeout", type=float, default=60.0, metavar="SECONDS",
                       help="on SIGTERM, how long running statements may take before sessions are closed "
                            "(default: 60)")
    serve.add_argument("--answer-cache-seconds", type=float, default=300.0, metavar="N",
                       help="repeat a released private answer, at no new privacy cost, to a user who asks the same "
                            "query again (same text, literals, bind values, epsilon and delta) within N seconds; "
                            "answers are kept per user (per role for a role with share_answers), in memory; a "
                            "policy's answers.reuse_for sets the time instead; 0 switches the cache off whatever "
                            "the policy says (default: 300)")
    serve.add_argument("--max-statement-length", type=int, default=256 * 1024, metavar="CHARS",
                       help="longest statement text pgshroud analyses for roles that do not see raw data; longer "
                            "ones are refused with SQLSTATE 54000 (default: 262144)")
    serve.add_argument("--audit-log", metavar="PATH",
                       help="append a JSON line per statement decision to PATH (time, user, role, plan kind, a "
                            "fingerprint of the statement without its literals, cost, refusal SQLSTATE and "
                            "reason; never SQL text or values)")
    serve.add_argument("--metrics", metavar="HOST:PORT",
                       help="serve Prometheus metrics at http://HOST:PORT/metrics (sessions, statements by plan "
                            "kind, refusals, planning and upstream latency, budget spent)")

    check = commands.add_parser("check", help="validate a policy file (and compare it with a live catalog)",
                                description="Validate a policy; with --upstream also compare it with the live "
                                            "catalog and warn where non-raw users could bypass pgshroud.")
    check.add_argument("policy", metavar="FILE")
    check.add_argument("--upstream", metavar="DSN", help="compare with this PostgreSQL's catalog and privileges")

    setup = commands.add_parser("setup", help="install what masks need into the upstream database",
                                description="Create the pgshroud schema (mask functions, dictionaries and the "
                                            "pseudonym key) in the --upstream database, idempotently. The key is "
                                            "generated once and never rotated silently.")
    setup.add_argument("--upstream", required=True, metavar="DSN",
                       help="the database to set up, with a user allowed to create schemas there")
    key = setup.add_mutually_exclusive_group()
    key.add_argument("--key-env", metavar="NAME", help="take the pseudonym key (hex or base64) from this variable")
    key.add_argument("--key-file", metavar="PATH", help="take the pseudonym key (hex or base64) from this file")
    setup.add_argument("--rotate-key", action="store_true",
                       help="replace a stored key with a different one (changes every pseudonym)")
    setup.add_argument("--grant-to", metavar="USERS", default="",
                       help="comma-separated users that may run the mask functions (the masked and aggregate users)")

    explain = commands.add_parser("explain", help="show how pgshroud plans a statement for a role",
                                  description="Print the plan and rewritten SQL of a statement, for humans.")
    explain.add_argument("sql", metavar="SQL")
    explain.add_argument("--policy", required=True, metavar="FILE")
    explain.add_argument("--upstream", required=True, metavar="DSN", help="where to read the catalog from")
    explain.add_argument("--role", required=True, help="the policy role to plan for")

    budget = commands.add_parser("budget", help="show, grant or reset privacy budgets in the ledger",
                                 description="The privacy budget ledger, for its administrator. Grants and "
                                             "resets are appended to the ledger, never changed in place.")
    budget_commands = budget.add_subparsers(dest="budget_command", required=True, metavar="ACTION")
    show = budget_commands.add_parser("show", help="print each user's spend and what is left",
                                      description="Print, per user, the epsilon and delta spent, granted and left "
                                                  "in the current period, the number of charges and the last one, "
                                                  "a bar of spend per user, and the role and dataset budgets.")
    show.add_argument("--user", help="only this user")
    grant = budget_commands.add_parser("grant", help="add budget to a user, a role or the dataset",
                                       description="Append a grant to the ledger: the scope may spend this much "
                                                   "more (in the current period).")
    grant.add_argument("user", nargs="?", metavar="USER", help="the user to grant to")
    grant.add_argument("--epsilon", required=True, metavar="X", help="epsilon to add")
    grant.add_argument("--delta", default="0", metavar="D", help="delta to add (default: 0)")
    reset = budget_commands.add_parser("reset", help="void a user's (role's, dataset's) charges of the period",
                                       description="Append a reset to the ledger: the scope's earlier charges and "
                                                   "grants count no more (its role's and the dataset's budgets "
                                                   "still count the charges).")
    reset.add_argument("user", nargs="?", metavar="USER", help="the user to reset")
    for action in (grant, reset):
        scope = action.add_mutually_exclusive_group()
        scope.add_argument("--role", metavar="ROLE", help="the role's shared budget (budgets.per_role) instead")
        scope.add_argument("--dataset", action="store_true", help="the dataset's budget (budgets.per_dataset) instead")
        action.add_argument("--note", metavar="TEXT", help="why, kept in the ledger entry with who ran the command")
        action.add_argument("--audit-log", metavar="PATH", help="also append the action to this JSON lines audit log")
    for action in (show, grant, reset):
        action.add_argument("--upstream", required=True, metavar="DSN",
                            help="the database holding the ledger (the policy's admin_dsn, when set, is used "
                                 "instead, as by serve)")
        action.add_argument("--policy", required=True, metavar="FILE", help="the policy whose budgets apply")
    show.set_defaults(role=None, dataset=False)

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
        if args.command == "check":
            from pgshroud.proxy.commands.policy import run_check

            return run_check(args.policy, args.upstream)
        if args.command == "setup":
            from pgshroud.proxy.commands.setup import parse_grant_to, run_setup

            return run_setup(args.upstream, key_env=args.key_env, key_file=args.key_file,
                             rotate_key=args.rotate_key, grant_to=parse_grant_to(args.grant_to))
        if args.command == "budget":
            from pgshroud.proxy.commands.budget import run_budget

            return run_budget(args, sys.stdout)
        if args.command == "explain":
            from pgshroud.proxy.commands.policy import run_explain

            return run_explain(args.sql, policy_path=args.policy, upstream=args.upstream, role=args.role)
        from pgshroud.proxy.commands.demo import run_demo

        return run_demo(port=args.port, patients=args.patients)
    except ConfigError as exc:
        print(f"pgshroud: {exc}", file=sys.stderr)
        return 2
    except PolicyError as exc:
        print(f"pgshroud: invalid policy:\n{exc}", file=sys.stderr)
        return 2
    except (OSError, asyncpg.PostgresError) as exc:
        # A policy file that cannot be read, an upstream that cannot be reached.
        print(f"pgshroud: {exc}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    config = ServerConfig(
        *parse_listen(args.listen),
        upstream=UpstreamTarget.parse(args.upstream),
        tls=server_tls_context(args.tls_cert, args.tls_key),
        max_connections=args.max_connections,
        max_message_size=args.max_message_size,
        drain_timeout=args.drain_timeout,
        answer_cache_seconds=args.answer_cache_seconds,
        max_statement_length=args.max_statement_length,
    )
    metrics_listen = None
    if args.metrics is not None:
        try:
            metrics_listen = parse_listen(args.metrics)
        except ConfigError:
            raise ConfigError(f"--metrics {args.metrics!r} must be HOST:PORT") from None
    if args.policy is None:
        log.warning("no --policy given: pgshroud relays every statement unchanged")
    policy = load_policy(args.policy) if args.policy else None
    if args.auth_file is not None or args.auth_query is not None:
        config = dataclasses.replace(config, client_auth=client_authenticator(args, config.upstream, policy))
    shared = SessionContext(config, plan, policy=policy)
    if args.audit_log is not None:
        from pgshroud.proxy.ops.audit import AuditLog

        shared.audit = AuditLog(args.audit_log)
    try:
        run_event_loop(serve_until_signalled(shared, policy_path=args.policy, metrics_listen=metrics_listen))
    finally:
        if shared.audit is not None:
            shared.audit.close()
    return 0


def client_authenticator(
    args: argparse.Namespace, upstream: UpstreamTarget, policy: Policy | None
) -> ClientAuthenticator:
    end_point = None
    if args.tls_cert is not None:
        end_point = certificate_end_point(args.tls_cert)
        if end_point is None:
            log.warning("the signature algorithm of --tls-cert names no hash for SCRAM channel binding "
                        "(tls-server-end-point): clients get SCRAM-SHA-256 without -PLUS")
    conninfo = own_conninfo(upstream, policy) if args.auth_query is not None else None
    authenticator = ClientAuthenticator(auth_file=args.auth_file, auth_query=args.auth_query, conninfo=conninfo,
                                        end_point=end_point)
    log.info("pgshroud checks clients' passwords itself (SCRAM-SHA-256%s)",
             ", with channel binding over TLS" if end_point is not None else "")
    return authenticator


if __name__ == "__main__":
    sys.exit(main())
