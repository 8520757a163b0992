"""`pgshroud demo`: a throwaway PostgreSQL with patient data, pgshroud in front."""

from __future__ import annotations

import asyncio
import logging
import sys
from importlib import resources
from typing import Any

from psycopg.conninfo import make_conninfo

from pgshroud.policies.loader import load_policy
from pgshroud.proxy.commands.pgcluster import PgBinariesNotFound
from pgshroud.proxy.commands.serve import run_event_loop, serve_until_signalled
from pgshroud.proxy.commands.setup import run_setup
from pgshroud.proxy.ops.config import ServerConfig, UpstreamTarget
from pgshroud.proxy.session.driver import SessionContext
from pgshroud.rewriter import plan

log = logging.getLogger("pgshroud.demo")


def run_demo(*, port: int, patients: int) -> int:
    from pgshroud.proxy.commands.demo_cluster import instructions, prepare_demo_cluster
    from pgshroud.proxy.commands.demo_data import TerminalProgress

    print(f"Starting a throwaway PostgreSQL and loading {patients:,} synthetic patients...", file=sys.stderr)
    try:
        cluster = prepare_demo_cluster(patients=patients, progress=TerminalProgress())
    except PgBinariesNotFound as exc:
        print(f"pgshroud demo: {exc}", file=sys.stderr)
        return 1
    try:
        if run_setup(cluster.admin_dsn("health"), key_env=None, key_file=None, rotate_key=False,
                     grant_to=["clinician", "analyst"], out=sys.stderr) != 0:
            return 1
        policy_file = resources.files("pgshroud.policies") / "examples" / "healthcare.yaml"
        with resources.as_file(policy_file) as policy_path:
            policy = load_policy(policy_path)
        # Client sessions reach the cluster over TCP with their own passwords;
        # pgshroud's own connections (the catalog) use the superuser's.
        upstream = UpstreamTarget.parse(make_conninfo(cluster.dsn(dbname="health"), sslmode="disable"))
        config = ServerConfig("127.0.0.1", port, upstream)

        async def main() -> None:
            ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            serving = asyncio.create_task(serve_until_signalled(SessionContext(config, plan, policy=policy), ready))
            first: list[asyncio.Future[Any]] = [ready, serving]
            await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
            if ready.done():
                print("\n" + instructions("127.0.0.1", ready.result(), cluster), flush=True)
                print(f"Policy: {policy.source} (admin sees raw data, clinician masked rows, analyst only "
                      "private aggregates). Ctrl-C stops the demo and removes its data.", flush=True)
            await serving

        run_event_loop(main())
    except OSError as exc:
        print(f"pgshroud demo: cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}; try --port", file=sys.stderr)
        return 1
    finally:
        cluster.stop()
    return 0
