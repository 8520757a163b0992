"""Prometheus metrics: a few counters, gauges and histograms, served as text.

`pgshroud serve --metrics HOST:PORT` serves `GET /metrics` in the Prometheus
text exposition format (version 0.0.4), written here by hand: the handful of
series pgshroud keeps does not need a client library. Everything is updated
and rendered on the proxy's event loop, so nothing here takes a lock.

What is counted (every name starts with `pgshroud_`):

- `sessions` (gauge) and `sessions_total` (counter): client sessions open
  now and since start (after startup and authentication succeeded);
  `startup_refusals_total`: connections that ended during startup with an
  error pgshroud or PostgreSQL sent (authentication failed, too many clients,
  shutting down, a protocol error), or dropped.
- `statements_total{kind}`: the planner's decisions, one per statement of a
  Query and one per Parse: passthrough, rewrite, release, local or refuse.
- `refusals_total{class}`: errors pgshroud sent instead of running a
  statement, by the SQLSTATE's class (its first two characters): the
  planner's, the ledger's (53 for an exhausted budget) and the session's own.
- `planning_seconds` (histogram): how long the planner took for statements of
  roles it rewrites (raw and policy-less sessions are not planned, so not timed).
- `release_upstream_seconds` (histogram): for private answers, from the
  moment the bounded query is handed to the upstream connection to its
  CommandComplete (PostgreSQL's time plus the relay's, without the charge).
- `charges_total{role,outcome}`: ledger charges by outcome (charged,
  refused: the budget is exhausted or none applies, failed: the ledger could
  not be reached); `budget_spent_epsilon_total{role}` and
  `budget_spent_delta_total{role}`: the epsilon and delta charged by this
  process. (The ledger in PostgreSQL has the totals of all processes;
  `pgshroud budget show` reads them.)
- `audit_records_total`, `audit_dropped_total`: lines written to the audit
  log and records dropped because its writer fell too far behind.

Label values are role names from the policy and a fixed vocabulary, never
user input, so the number of series stays small.
"""

from __future__ import annotations

import asyncio
import logging
import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from time import perf_counter
from typing import Any

from pgshroud import sqlstate
from pgshroud.rewriter.plans import Local, Passthrough, Refuse, Release, Rewrite

log = logging.getLogger("pgshroud.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
KINDS = ("passthrough", "rewrite", "release", "local", "refuse")
# Seconds: planning is sub-millisecond for cached shapes, tens of ms for a private query.
PLANNING_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
UPSTREAM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_PLANNED = frozenset({"query", "parse", "function_call"})
LEDGER_FAILED = sqlstate.SYSTEM_ERROR  # the session's refusal when the ledger cannot be reached
_KIND_OF = {Passthrough: "passthrough", Rewrite: "rewrite", Release: "release", Local: "local", Refuse: "refuse"}


class Histogram:
    """Cumulative buckets as Prometheus wants them, with a sum and a count."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)  # the last is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip(self.bounds, self.counts):
            running += count
            out.append(f'{name}_bucket{{le="{_number(bound)}"}} {running}')
        out.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        out.append(f"{name}_sum {_number(self.sum)}")
        out.append(f"{name}_count {self.count}")
        return out


class Metrics:
    """The counters the session, the server and the audit log update."""

    def __init__(self) -> None:
        self.sessions = 0
        self.sessions_total = 0
        self.startup_refusals_total = 0
        self.statements: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.refusals: dict[str, int] = {}
        self.planning = Histogram(PLANNING_BUCKETS)
        self.release_upstream = Histogram(UPSTREAM_BUCKETS)
        self.charges: dict[tuple[str, str], int] = {}
        self.spent_epsilon: dict[str, float] = {}
        self.spent_delta: dict[str, float] = {}
        # Read at render time (the audit log's own counters live with it).
        self.audit_counts: Callable[[], tuple[int, int]] | None = None

    # -- updates, all on the event loop -------------------------------------

    def decided(self, source: str, plans: Sequence[Any], charge_refusal: Any = None) -> None:
        """The decisions about the statements of one message (see proxy.audit for `source`): statements
        are counted when planned (Query, Parse, FunctionCall), refusals whenever sent."""
        counted = source in _PLANNED
        if len(plans) == 1 and charge_refusal is None:  # most messages
            plan = plans[0]
            kind = _KIND_OF.get(type(plan), "refuse")
            if counted:
                self.statements[kind] += 1
            if kind == "refuse":
                self.refused(plan.sqlstate)
            return
        statements = self.statements
        for plan in plans:
            if plan is charge_refusal:  # a release the ledger refused
                if counted:
                    statements["release"] += 1
                self.refused(plan.sqlstate)
                continue
            kind = _KIND_OF.get(type(plan), "refuse")
            if counted:
                statements[kind] += 1
            if kind == "refuse":
                self.refused(plan.sqlstate)

    def refused(self, sqlstate: str) -> None:
        sqlstate_class = sqlstate[:2] if len(sqlstate) == 5 else "XX"
        self.refusals[sqlstate_class] = self.refusals.get(sqlstate_class, 0) + 1

    def charge(self, role: str | None, cost: Any, refusal: Any) -> None:
        """A ledger charge's outcome: `refusal` None when it was committed."""
        role = role or ""
        if refusal is None:
            outcome = "charged"
            self.spent_epsilon[role] = self.spent_epsilon.get(role, 0.0) + float(cost.epsilon)
            self.spent_delta[role] = self.spent_delta.get(role, 0.0) + float(cost.delta)
        else:
            outcome = "failed" if refusal.sqlstate == LEDGER_FAILED else "refused"
        key = (role, outcome)
        self.charges[key] = self.charges.get(key, 0) + 1

    def timed_release(self, finalize: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """`finalize`, which the session calls at the release's CommandComplete, timing the wait for it."""
        started = perf_counter()
        histogram = self.release_upstream

        def timed(raw: Any) -> Any:
            histogram.observe(perf_counter() - started)
            return finalize(raw)

        return timed

    # -- the exposition ---------------------------------------------------------

    def render(self) -> str:
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str, samples: list[str]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(samples)

        family("pgshroud_sessions", "gauge", "Client sessions open now.", [f"pgshroud_sessions {self.sessions}"])
        family("pgshroud_sessions_total", "counter", "Client sessions started (after authentication).",
               [f"pgshroud_sessions_total {self.sessions_total}"])
        family("pgshroud_startup_refusals_total", "counter", "Connections that ended during startup.",
               [f"pgshroud_startup_refusals_total {self.startup_refusals_total}"])
        family("pgshroud_statements_total", "counter", "Statements planned, by plan kind.",
               [f'pgshroud_statements_total{{kind="{kind}"}} {count}' for kind, count in self.statements.items()])
        family("pgshroud_refusals_total", "counter", "Statements refused, by SQLSTATE class.",
               [f'pgshroud_refusals_total{{class="{_label(c)}"}} {n}' for c, n in sorted(self.refusals.items())])
        family("pgshroud_planning_seconds", "histogram", "Time the planner took for a rewritten role's statement.",
               self.planning.lines("pgshroud_planning_seconds"))
        family("pgshroud_release_upstream_seconds", "histogram",
               "Time from sending a private answer's query upstream to its CommandComplete.",
               self.release_upstream.lines("pgshroud_release_upstream_seconds"))
        family("pgshroud_charges_total", "counter", "Privacy budget charges, by role and outcome.",
               [f'pgshroud_charges_total{{role="{_label(role)}",outcome="{outcome}"}} {n}'
                for (role, outcome), n in sorted(self.charges.items())])
        family("pgshroud_budget_spent_epsilon_total", "counter", "Epsilon charged by this process, by role.",
               [f'pgshroud_budget_spent_epsilon_total{{role="{_label(role)}"}} {_number(value)}'
                for role, value in sorted(self.spent_epsilon.items())])
        family("pgshroud_budget_spent_delta_total", "counter", "Delta charged by this process, by role.",
               [f'pgshroud_budget_spent_delta_total{{role="{_label(role)}"}} {_number(value)}'
                for role, value in sorted(self.spent_delta.items())])
        if self.audit_counts is not None:
            written, dropped = self.audit_counts()
            family("pgshroud_audit_records_total", "counter", "Audit log lines written.",
                   [f"pgshroud_audit_records_total {written}"])
            family("pgshroud_audit_dropped_total", "counter", "Audit records dropped because the writer fell behind.",
                   [f"pgshroud_audit_dropped_total {dropped}"])
        return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class MetricsServer:
    """A minimal HTTP/1.x server for GET /metrics (and GET / with a pointer to it)."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                request = await reader.readuntil(b"\r\n\r\n")
            method, target, *_ = request.split(b"\r\n", 1)[0].decode("latin-1").split(" ") + ["", ""]
            path = target.split("?", 1)[0]
            if method not in ("GET", "HEAD"):
                status, body, content_type = "405 Method Not Allowed", "only GET\n", "text/plain"
            elif path == "/metrics":
                status, body, content_type = "200 OK", self.metrics.render(), CONTENT_TYPE
            elif path == "/":
                status, body, content_type = "200 OK", "pgshroud: metrics at /metrics\n", "text/plain"
            else:
                status, body, content_type = "404 Not Found", "not found; metrics are at /metrics\n", "text/plain"
            payload = body.encode("utf-8")
            head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(payload)}\r\n"
                    "Connection: close\r\n\r\n").encode("ascii")
            writer.write(head if method == "HEAD" else head + payload)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError, ValueError):
            pass
        except Exception:
            log.exception("metrics request failed")
        finally:
            writer.close()
