"""One client's session after startup: every statement through the planner,
responses relayed or replaced in order.

Both directions are scanned frame by frame in Protocol callbacks. Frames
that pass unchanged are written in runs, as the slices of the received
chunk they already are; only Query, Parse, Bind, Describe, Execute, Close
and FunctionCall are decoded, and upstream result rows never are unless a
Release needs them.

Some statements wait for the privacy budget ledger before they are sent
(the client's input is paused meanwhile, so answers stay in order): a
private answer's charge, `SHOW pgshroud.budget` (a Local plan whose row is
read from the ledger), and a repeat served from the answer cache, whose
notice says what is left. Each private answer gets a notice of its cost and
of what is left, joined to its margins of error (proxy/session/budget_notes.py). A
repeat of a released answer by the same user within --answer-cache-seconds
is sent again at no cost (proxy/budget/answer_cache.py): a simple Query's release
becomes a Local answer; a prepared one's portal is bound upstream to a
placeholder statement instead, at Bind. Statements that pass through never
touch the ledger or the cache.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import struct
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from decimal import Decimal
from time import perf_counter
from types import MappingProxyType
from typing import TYPE_CHECKING, Awaitable, Callable, Mapping, NamedTuple, Protocol, Sequence

from pgshroud.proxy.session import budget_notes
from pgshroud.proxy.session import responses as r
from pgshroud.proxy.budget.answer_cache import AnswerCache, AnswerKey, CachedAnswer, Claim
from pgshroud.proxy.session.answers import UnsupportedFormat, check_formats, result_formats, row_description, simple_query_answer
from pgshroud.proxy.codec.messages import (
    Bind, Close, Describe, ErrorResponse, Execute, FunctionCall, ParameterStatus, Parse, Query,
)
from pgshroud.proxy.codec.binary_text import NoTextForm, text_form
from pgshroud.proxy.codec.errors import ProtocolViolation
from pgshroud.proxy.ops.config import ServerConfig
from pgshroud.proxy.session.cursors import HeldCursor, HeldCursors
from pgshroud.proxy.wire.leg import Leg
from pgshroud.proxy.wire.startup import Established
from pgshroud.proxy.wire.upstream import send_cancel
from pgshroud.policies.model import Access, Policy
from pgshroud.rewriter import PlanContext, Planner, plan_function_call
from pgshroud.rewriter.catalog import Catalog
from pgshroud.rewriter.names import upstream_name, with_client_names
from pgshroud.rewriter.settings import check_parameter_status
from pgshroud.rewriter.plans import (
    Column, Cost, Cursor, CursorStep, Local, LocalAnswer, Passthrough, Plan, PrivacySetting, RawResult, Refuse, Release, Rewrite,
    SessionRead,
)

if TYPE_CHECKING:
    from pgshroud.proxy.ops.audit import AuditLog
    from pgshroud.proxy.budget.ledger import Standing
    from pgshroud.proxy.ops.metrics import Metrics

log = logging.getLogger("pgshroud.session")

_LENGTH = struct.Struct("!I").unpack_from
_LENGTH_PACK = struct.Struct("!I").pack
# A statement that always fails during analysis, after the statements
# before it have run: PostgreSQL then aborts exactly as for a real error.
SENTINEL_SQL = "SELECT 'pgshroud: statement refused'::pg_catalog.int4"
# Stands in upstream for a Local statement, so its answer lands in order
# and PostgreSQL still decides whether it may run (e.g. not in a failed
# transaction).
PLACEHOLDER_SQL = "SELECT WHERE false"
# The prepared statement that stands in upstream for a private answer
# repeated from the answer cache; closed and parsed again at each use.
CACHED_STATEMENT = "pgshroud_cached_answer"
# Query and Parse frames longer than this are planned on a worker thread:
# short enough that a statement planned in place holds the loop for
# milliseconds even where planning is not linear in its length.
OFF_LOOP_LENGTH = 1024
# Long statements are planned, and large private answers built, here.
_WORKERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pgshroud-worker")
# Frames that may be relayed before they are complete, to avoid buffering
# large rows and COPY data.
_STREAMABLE = frozenset(b"Dd")

Q, P, B, D, E, S, H, C, X, F = (ord(c) for c in "QPBDESHCXF")
PARAMETER_STATUS = ord("S")
NOTIFICATION = ord("A")
_PLAIN_EXTENDED = {B: r.RELAY_BIND, E: r.RELAY_EXECUTE, S: r.SYNC}
COPY_MESSAGES = frozenset(b"dcf")
TERMINATE = b"X\x00\x00\x00\x04"
# Upstream messages that tell how a transaction ends.
_TRANSACTION_FRAMES = frozenset(b"CEZ")
IDLE = ord("I")
# PostgreSQL reports these when they change; each changes the text of some answers.
ANSWER_SETTINGS = frozenset({"TimeZone", "DateStyle", "IntervalStyle"})

NO_SETTINGS: Mapping[str, str] = MappingProxyType({})
# RESET ALL and DISCARD ALL: every pgshroud setting back to the policy's default.
RESET_ALL = PrivacySetting("*", None)
# They pass through to PostgreSQL; the session recognises them by their words.
_RESETS_ALL = re.compile(r"\s*+(?:reset|discard)\s++all\s*+(?:;\s*+)?\Z", re.IGNORECASE)
# CLOSE ALL and DISCARD ALL close every cursor, held ones too.
_CLOSES_ALL = re.compile(r"\s*+(?:close|discard)\s++all\s*+(?:;\s*+)?\Z", re.IGNORECASE)


class Ledger(Protocol):
    """What the session needs of a ledger. PostgresLedger also has
    `charge_standing(user, cost) -> Refuse | list[Standing]` (the charge,
    then where the user's budgets stand, in one transaction) and
    `standing(user) -> list[Standing]`; the session uses them when present,
    so a ledger with `charge` alone still works (its notices then say the
    cost but not what is left, and SHOW pgshroud.budget is refused)."""

    async def charge(self, user: str, cost: Cost) -> Refuse | None:
        """Commit the cost durably, or return the refusal if it is not affordable."""


POLICY_REFUSAL = "42501"
NO_LEDGER = Refuse("55000", "private answers need a privacy budget ledger, and none is configured")
LEDGER_DOWN = Refuse("58000", "the privacy budget ledger is unavailable, so nothing was released")


class _Statement:
    """A prepared statement or portal whose plan is not Passthrough, or is the
    Passthrough of a RESET ALL or DISCARD ALL that clears pgshroud settings.

    A statement keeps its text and the privacy settings it was planned
    under, to plan it again when they change (a Release also its parameter
    types, for the answer cache's key); a portal that has run keeps its
    answer, for later Executes; a portal of a Release keeps its answer
    cache key, under which its answer is kept once released. A Release's
    statement and portal live upstream under a name of their own
    (`upstream`), which no client name translates to: SQL cannot reach them,
    and a client's Parse or Close that PostgreSQL skips or refuses cannot
    leave one under a name the session no longer counts as private.
    """

    __slots__ = ("plan", "formats", "sql", "privacy", "answer", "param_types", "cache_key", "upstream", "inferred")

    def __init__(
        self,
        plan: Local | Release | Passthrough,
        formats: tuple[int, ...] = (),
        sql: str | None = None,
        privacy: Mapping[str, str] = NO_SETTINGS,
        param_types: tuple[int, ...] = (),
        cache_key: AnswerKey | None = None,
        upstream: str | None = None,
    ) -> None:
        self.plan = plan
        self.upstream = upstream
        self.formats = formats
        self.sql = sql
        self.privacy = privacy
        self.param_types = param_types
        self.cache_key = cache_key
        self.answer: r.PortalAnswer | None = None
        # A private statement's parameter types as PostgreSQL infers them (see _on_parse).
        self.inferred: asyncio.Future[tuple[int, ...]] | None = None


class SessionContext:
    """What every session shares: configuration, planner, ledger, policy
    (replaced as a whole on reload), the catalog snapshot, where decisions
    are reported (audit log, metrics; each optional), and the answer cache
    (None when config.answer_cache_seconds is 0)."""

    def __init__(
        self,
        config: ServerConfig,
        planner: Planner,
        ledger: Ledger | None = None,
        policy: object | None = None,
        catalog: Callable[[], Catalog | None] = lambda: None,
        audit: AuditLog | None = None,
        metrics: Metrics | None = None,
    ):
        self.config = config
        self.planner = planner
        self.ledger = ledger
        self.policy = policy
        self.catalog = catalog
        self.audit = audit
        self.metrics = metrics
        seconds = config.answer_cache_seconds
        self.answers: AnswerCache | None = AnswerCache(seconds) if seconds > 0 else None


class Session:
    def __init__(self, client: Leg, established: Established, shared: SessionContext) -> None:
        self.client = client
        self.upstream = established.upstream
        self.user = established.user
        self.shared = shared
        self.upstream_key = established.upstream_key
        self.role = established.role
        self._started_rewritten = self.role is not None and self.role.access != Access.RAW
        # Statement and portal names go upstream translated (rewriter/names.py).
        self._up: Callable[[str], str] = upstream_name if self._started_rewritten else _same_name
        # The session's pgshroud settings (SET pgshroud.epsilon ...), as of
        # the statements that succeeded; while a transaction that changed
        # them is open, their value before it, to undo them on rollback.
        self._privacy: Mapping[str, str] = NO_SETTINGS
        self._privacy_before: Mapping[str, str] | None = None
        self._privacy_undo = False  # the open transaction's last statement failed or rolled back
        # Changes sent upstream whose outcome is not known yet. Statements
        # are planned as if they succeed, as PostgreSQL would run them in turn.
        self._settling: list[r.Settle] = []
        self._planned_privacy: Mapping[str, str] = NO_SETTINGS
        # A statement's plans made on a worker thread: (sql, context, plans).
        # Plans made on a worker thread for the message being handled, by _plan_key.
        self._preplanned: dict[tuple, list[Plan]] = {}
        self._then: Awaitable[bytes] | None = None  # see _block
        self._settled_waiter: asyncio.Future[None] | None = None  # see _upstream_settled
        self._claim_wait: asyncio.Future | None = None  # see _claim
        self._finalizing = False  # a private answer is being built on a worker thread
        self._fresh = itertools.count(1)  # numbers the upstream names of private statements and portals
        self.plan_context = self._fresh_context()
        self._pending: deque[r.Unit] = deque()
        self._statements: dict[str, _Statement] = {}
        self._portals: dict[str, _Statement] = {}
        # Cursors declared for private queries, with their released answers.
        self._cursors = HeldCursors()
        # PostgreSQL's transaction status as of its last ReadyForQuery.
        self._transaction_status = IDLE
        # The settings that change what a private answer says (a date's text, now()'s
        # zone), as PostgreSQL last reported them: part of the answer cache's key.
        self._answer_settings = {name: value for name, value in established.statuses.items()
                                 if name in ANSWER_SETTINGS}
        # What the last private answer cost and its margins (SHOW pgshroud.last_answer).
        self._last_answer = "no private answer has been released in this session yet"
        # Non-raw sessions: what each named statement was planned under.
        self._prepared_under: dict[str, _Prepared] = {}
        self._client_rest = b""  # the start of an incomplete client frame
        self._client_parts: list[bytes] = []  # more of it, joined once it is whole
        self._client_needed = 0  # bytes of that frame still missing
        self._client_streaming = 0  # bytes of a partly relayed client frame still to come
        self._upstream_rest = b""
        self._upstream_streaming = 0
        self._client_skipping = False  # after a refusal: drop client messages until Sync
        self._upstream_skipping = False  # after an upstream error: it drops messages until Sync
        self._blocked = False  # a charge is in flight; client input waits
        self._draining = False
        self._terminating = False
        self.finished = asyncio.get_running_loop().create_future()
        self._max = shared.config.max_message_size
        # Where decisions are reported (proxy/ops/audit.py, proxy/ops/metrics.py).
        self._audit = shared.audit
        self._metrics = shared.metrics
        self._watched = self._audit is not None or self._metrics is not None

    # lifecycle

    def start(self) -> None:
        self.client.on_data = self._on_client_data
        self.upstream.on_data = self._on_upstream_data
        self.client.on_lost = self._on_client_lost
        self.upstream.on_lost = self._on_upstream_lost
        # Backpressure: a slow reader pauses the other side's reads.
        self.client.on_pause_writing = lambda: self.upstream.pause("client-slow")
        self.client.on_resume_writing = lambda: self.upstream.resume("client-slow")
        self.upstream.on_pause_writing = lambda: self.client.pause("upstream-slow")
        self.upstream.on_resume_writing = lambda: self.client.resume("upstream-slow")
        # Bytes that arrived while startup was still reading frames.
        leftover = self.client.frames.take_all()
        if leftover:
            self._on_client_data(leftover)
        leftover = self.upstream.frames.take_all()
        if leftover:
            self._on_upstream_data(leftover)

    @property
    def idle(self) -> bool:
        return not self._pending and not self._client_rest and not self._blocked

    def drain(self) -> None:
        """Close at the next moment nothing is running."""
        self._draining = True
        if self.idle:
            self._close_with_error("57P01", "terminating connection because pgshroud is shutting down")

    def cancel_upstream(self) -> asyncio.Future[None] | None:
        """Send a cancel upstream; the returned task ends once PostgreSQL
        has taken it (it closes the cancel connection after signalling)."""
        waiting = self._claim_wait
        if waiting is not None and not waiting.done():
            self._claim_wait = None  # tells _claim the wait was cancelled
            waiting.cancel()
        if self.upstream_key is None:
            return None
        key = self.upstream_key
        task = asyncio.ensure_future(send_cancel(self.shared.config.upstream, key.process_id, key.secret))
        task.add_done_callback(_log_cancel_failure)
        return task

    def _on_client_lost(self, exc: Exception | None) -> None:
        if not self.upstream.closed.done():
            if self._pending or self._blocked:
                self.cancel_upstream()
            else:
                self.upstream.write(TERMINATE)
            self.upstream.close()
        self._finish()

    def _on_upstream_lost(self, exc: Exception | None) -> None:
        if not self.client.closed.done():
            self._close_with_error("08006", "the upstream PostgreSQL closed the connection", severity="FATAL")
        self._finish()

    def _finish(self) -> None:
        if not self.finished.done():
            self.finished.set_result(None)

    def _close_with_error(self, sqlstate: str, message: str, severity: str = "FATAL") -> None:
        self.client.write(r.error_bytes(sqlstate, message, severity=severity))
        self.client.close()
        self.upstream.write(TERMINATE)
        self.upstream.close()

    # client → upstream

    def _on_client_data(self, data: bytes) -> None:
        if self._client_streaming:
            data = self._stream_client(data)
            if not data:
                return
        if self._client_rest:
            if len(data) < self._client_needed:
                # Join a large frame once, not at every chunk.
                self._client_parts.append(data)
                self._client_needed -= len(data)
                return
            data = b"".join((self._client_rest, *self._client_parts, data))
            self._client_rest, self._client_parts, self._client_needed = b"", [], 0
        out: list[bytes] = []
        n = len(data)
        pos = run = 0
        try:
            while n - pos >= 5 and not self._blocked and not self._terminating:
                kind = data[pos]
                length = _LENGTH(data, pos + 1)[0]
                if length < 4 or length > self._max:
                    raise _Violation(f"invalid length {length} for frontend message type {chr(kind)!r}")
                end = pos + 1 + length
                if end > n:
                    if kind == ord("d") and not self._client_skipping:
                        if run < pos:
                            out.append(data[run:pos])
                        out.append(data[pos:])
                        self._client_streaming = end - n
                        pos = run = n
                    break
                if kind in _PLAIN_EXTENDED and not (
                    self._client_skipping or self._statements or self._portals or self._prepared_under
                    or self._started_rewritten
                ):
                    # The pipelined Bind/Execute/Sync of prepared statements
                    # that need nothing from pgshroud: relay, expect the answer.
                    if kind == S:
                        self._upstream_skipping = False
                        self._pending.append(r.SYNC)
                    elif not self._upstream_skipping:
                        self._pending.append(_PLAIN_EXTENDED[kind])
                    pos = end
                    continue
                replacement = self._client_frame(kind, data, pos, end)
                if replacement is not None:
                    if run < pos:
                        out.append(data[run:pos])
                    if replacement:
                        out.append(replacement)
                    run = end
                pos = end
        except (_Violation, ProtocolViolation) as exc:
            self._protocol_violation(str(exc))
            return
        if run < pos:
            out.append(data if run == 0 and pos == n else data[run:pos])
        if pos < n:
            self._client_rest = data[pos:]
            if n - pos >= 5:
                self._client_needed = 1 + _LENGTH(data, pos + 1)[0] - (n - pos)
        if out:
            self.upstream.write(b"".join(out))
        if self._terminating:
            self.upstream.close()
            self.client.close()

    def _stream_client(self, data: bytes) -> bytes:
        k = self._client_streaming
        if len(data) <= k:
            self._client_streaming -= len(data)
            self.upstream.write(data)
            return b""
        self._client_streaming = 0
        self.upstream.write(data[:k])
        return data[k:]

    def _client_frame(self, kind: int, data: bytes, pos: int, end: int) -> bytes | None:
        """Handle one complete client frame: None relays it unchanged,
        bytes (possibly empty) are sent in its place."""
        out = self._handle_frame(kind, data, pos, end)
        if out is None and self._started_rewritten and kind in _NAMING_FRAMES:
            return _renamed_frame(kind, data, pos, end)
        return out

    def _handle_frame(self, kind: int, data: bytes, pos: int, end: int) -> bytes | None:
        if self._client_skipping:
            if kind != S:
                return b""
            self._client_skipping = False
        if kind in COPY_MESSAGES or kind == H:
            return None
        # Bind, Execute, Describe and Close only need decoding while some
        # statement or portal has a plan of its own (Local or Release).
        named = self._statements or self._portals or self._prepared_under or self._started_rewritten
        if kind == B:
            if named:
                replans = self._bind_replans(data[pos + 5 : end]) if self._started_rewritten else None
                if replans is not None:
                    self._block(self._planned_then(kind, data[pos:end], replans))
                    return b""
                return self._on_bind(data[pos + 5 : end])
            self._expect_relay(r.RELAY_BIND)
            return None
        if kind == E:
            if named:
                return self._on_execute(Execute.decode(data[pos + 5 : end]))
            self._expect_relay(r.RELAY_EXECUTE)
            return None
        if kind == S:
            self._upstream_skipping = False
            self._pending.append(r.SYNC)
            return None
        if kind in (Q, P) and self._plans_off_loop(end - pos):
            payload = data[pos + 5 : end]
            sql = Query.decode(payload).sql if kind == Q else Parse.decode(payload).sql
            self._block(self._planned_then(kind, data[pos:end], sql))
            return b""
        if kind == Q:
            return self._on_query(Query.decode(data[pos + 5 : end]).sql)
        if kind == P:
            return self._on_parse(Parse.decode(data[pos + 5 : end]))
        if kind == D:
            if named:
                return self._on_describe(Describe.decode(data[pos + 5 : end]))
            self._expect_relay(r.RELAY_DESCRIBE)
            return None
        if kind == C:
            upstream = self._forget(data[pos + 5 : end]) if named else None
            self._expect_relay(r.RELAY_CLOSE)
            return None if upstream is None else Close(data[pos + 5 : pos + 6], upstream).encode()
        if kind == F:
            return self._on_function_call(FunctionCall.decode(data[pos + 5 : end]))
        if kind == X:
            self._terminating = True
            return None
        raise _Violation(f"invalid frontend message type {chr(kind)!r}")

    def _expect(self, ends: frozenset[int], *, extended: bool = True, action: r.Action | None = None) -> None:
        # After an upstream error PostgreSQL ignores everything up to Sync.
        if not self._upstream_skipping:
            self._pending.append(r.Unit(ends, extended=extended, action=action))
        elif action is not None:
            action.abandon()

    def _expect_relay(self, unit: r.Unit) -> None:
        if not self._upstream_skipping:
            self._pending.append(unit)

    def _fresh_context(self) -> PlanContext:
        role = self.role
        if isinstance(self.shared.policy, Policy) and role is not None:
            # The reloaded policy decides again. A session that started raw
            # was not vetted at startup (settings, search_path), so it may
            # not turn into a rewritten one: it gets no role and is refused.
            role = self.shared.policy.role_for(self.user)
            if role is not None and (role.access == Access.DENY or (
                    not self._started_rewritten and role.access != Access.RAW)):
                role = None
            self.role = role
        return PlanContext(
            user=self.user,
            policy=self.shared.policy,
            role_sees_raw=role is not None and role.access == Access.RAW,
            role=role,
            catalog=self.shared.catalog(),
            privacy=self._planned_privacy,
        )

    def _context(self) -> PlanContext:
        """The plan context, renewed when the policy or catalog changed."""
        context = self.plan_context
        if context.policy is not self.shared.policy or (
            context.policy is not None and not context.role_sees_raw and context.catalog is not self.shared.catalog()
        ):
            context = self.plan_context = self._fresh_context()
        return context

    def _plan(self, sql: str, privacy: Mapping[str, str] | None = None) -> list[Plan]:
        context = self._context()
        if privacy is not None and privacy != context.privacy:
            context = replace(context, privacy=privacy)
        analysed = context.policy is not None and not context.role_sees_raw
        if analysed and len(sql) > self.shared.config.max_statement_length:
            return [Refuse("54000", f"the statement is too long for pgshroud to analyse ({len(sql)} characters; "
                           f"the limit is {self.shared.config.max_statement_length})",
                           hint="Shorten it, or ask the operator to raise pgshroud serve --max-statement-length.")]
        preplanned = self._preplanned.get(_plan_key(sql, context)) if self._preplanned else None
        if preplanned is not None:
            plans = preplanned
        else:
            # Only statements that the planner analyses are timed.
            metrics = self._metrics if analysed else None
            started = perf_counter() if metrics is not None else 0.0
            plans = self._run_planner(sql, context)
            if metrics is not None:
                metrics.planning.observe(perf_counter() - started)
        if not plans:
            return [Refuse("XX000", "pgshroud could not analyse this statement, so it was refused")]
        if self._cursors and any(type(p) is Passthrough and _CLOSES_ALL.match(p.sql) for p in plans):
            self._cursors.clear()
        return [self._reachable(p) if type(p) is Rewrite and p.reaches is not None else p for p in plans]

    def _run_planner(self, sql: str, context: PlanContext) -> list[Plan]:
        try:
            return list(self.shared.planner(sql, context))
        except Exception:
            log.exception("planner failed; refusing the statement")
            return []

    def _plans_off_loop(self, frame_length: int) -> bool:
        """Long statements of analysed sessions are planned on a worker
        thread, so that no one statement holds up every other session;
        short ones (and every raw session's) are planned in place."""
        return frame_length > OFF_LOOP_LENGTH and self._started_rewritten

    async def _planned_then(self, kind: int, frame: bytes, sql: str) -> bytes:
        """A Query, Parse or Bind whose statement is planned on a worker
        thread (for a Query also again under each privacy setting it
        changes, for a Bind under the settings or catalog that changed),
        then handled as if planned in place: the bytes to send upstream."""
        context = self._context()
        started = perf_counter()
        loop = asyncio.get_running_loop()
        plans = await loop.run_in_executor(_WORKERS, self._run_planner, sql, context)
        self._preplanned = {_plan_key(sql, context): plans}
        if kind == Q:
            privacy = context.privacy
            for plan in plans[:-1]:
                change = _setting_change(plan)
                changed = privacy if change is None else _applied(privacy, change)
                if changed != privacy:
                    privacy = changed
                    again = replace(context, privacy=privacy)
                    self._preplanned[_plan_key(sql, again)] = await loop.run_in_executor(
                        _WORKERS, self._run_planner, sql, again)
        if self._metrics is not None:
            self._metrics.planning.observe(perf_counter() - started)
        try:
            if kind == Q:
                out = self._on_query(sql)
            elif kind == P:
                out = self._on_parse(Parse.decode(frame[5:]))
            else:
                out = self._on_bind(frame[5:])
        finally:
            self._preplanned = {}
        then, self._then = self._then, None
        if then is not None:
            return await then
        if out is None:
            out = _renamed_frame(kind, frame, 0, len(frame)) if kind in (P, B) else None
        return frame if out is None else out

    def _bind_replans(self, payload: bytes) -> str | None:
        """The statement text a Bind will plan again (its privacy settings or
        the catalog changed since it was prepared), when long enough to be
        planned on a worker thread."""
        _, statement = _two_names(payload)
        prepared = self._prepared_under.get(statement)
        info = self._statements.get(statement) if self._statements else None
        sql = None
        if prepared is not None and prepared.catalog is not self.shared.catalog():
            sql = prepared.sql
        elif info is not None and info.sql is not None and info.privacy != self._planned_privacy:
            sql = info.sql
        return sql if sql is not None and len(sql) > OFF_LOOP_LENGTH else None

    def _reachable(self, plan: Rewrite) -> Plan:
        """An SQL EXECUTE, FETCH, MOVE, DEALLOCATE or CLOSE, planned against
        this session's own statements and portals. A private one lives under
        an upstream name SQL cannot reach; running it so is refused with a
        reason, and a DEALLOCATE or CLOSE of it is pointed at that name."""
        assert plan.reaches is not None
        kind, name = plan.reaches
        held = self._cursors.get(name) if kind == "P" else None
        if held is not None:
            return _held_cursor_plan(plan, held.name, held.answer.columns)
        # Compared as PostgreSQL sees them: names that share their first 63
        # bytes are one statement or portal.
        target = upstream_name(name)
        registry = self._statements if kind == "S" else self._portals
        upstream = next((info.upstream for held, info in registry.items()
                         if info.upstream is not None and upstream_name(held) == target), None)
        if upstream is None:
            return plan
        if plan.sql[:10].lower().startswith(("deallocate", "close")):
            return Rewrite(plan.sql.replace(f'"{target}"', f'"{upstream}"'))
        what = "prepared statement" if kind == "S" else "portal"
        return Refuse(POLICY_REFUSAL, f'{what} "{name}" holds a private query, which SQL cannot run',
                      hint="Run it through the protocol that prepared it (Bind and Execute).")

    def _decided(self, source: str, sql: str | None, plans: Sequence[Plan], charge_refusal: Refuse | None = None,
                 refused: Release | None = None) -> None:
        """Report the decisions about one message's statements (`charge_refusal`: the ledger's
        refusal standing in `plans` for the release `refused`). The audit log only queues them."""
        if self._metrics is not None:
            self._metrics.decided(source, plans, charge_refusal)
        if self._audit is not None:
            role = self.role
            self._audit.decided(self.user, role.name if role is not None else None, source, sql, plans,
                                charge_refusal, refused)

    # simple Query

    def _on_query(self, sql: str) -> bytes | None:
        plans = self._plan(sql)
        if (len(plans) == 1 and type(plans[0]) is Passthrough) or all(type(p) is Passthrough for p in plans):
            if not (self._planned_privacy or self._privacy) or not any(_resets_all(p) for p in plans):
                # Every statement passes as written: forward the client's bytes.
                self._expect_relay(r.RELAY_QUERY)
                if self._watched:
                    self._decided("query", sql, plans)
                return None
        if self._upstream_skipping:
            return None  # PostgreSQL ignores it until Sync: nothing to plan or charge
        if len(plans) > 1:
            plans = _read_declared_cursors(self._plan_after_settings(sql, plans))
        if any(isinstance(p, Release) or (isinstance(p, Local) and p.reads is not None) for p in plans):
            self._block(self._ledger_then_query(plans, sql, self._planned_privacy))
            return b""
        if self._watched:
            self._decided("query", sql, _until_refusal(plans))
        return self._query_from_plans(plans)

    def _plan_after_settings(self, sql: str, plans: list[Plan]) -> list[Plan]:
        """The statements of a Query after one that changes the privacy
        settings are planned again under the changed settings."""
        privacy = self._planned_privacy
        for i in range(len(plans) - 1):
            change = _setting_change(plans[i])
            if change is None:
                continue
            changed = _applied(privacy, change)
            if changed == privacy:
                continue
            privacy = changed
            again = self._plan(sql, privacy)
            if len(again) > i + 1:
                plans = plans[: i + 1] + again[i + 1 :]
        return plans

    def _query_from_plans(self, plans: list[Plan], charged: Mapping[int, _Charged] | None = None) -> bytes:
        """The Query sent upstream for these plans, and the unit of its answers
        (`charged`: per position, what a charged Release's answer needs)."""
        texts: list[str] = []
        actions: list[r.Action | None] = []
        for index, plan in enumerate(plans):
            if isinstance(plan, (Passthrough, Rewrite)):
                texts.append(plan.sql)
                resets = (self._planned_privacy or self._privacy) and _resets_all(plan)
                actions.append(self._settle(None, RESET_ALL) if resets else None)
            elif isinstance(plan, _CursorRead):
                texts.append(PLACEHOLDER_SQL)
                actions.append(self._cursor_action(plan))
            elif isinstance(plan, Local):
                texts.append(PLACEHOLDER_SQL)
                action: r.Action = r.local_statement_action(plan.answer)
                actions.append(action if plan.setting is None else self._settle(action, plan.setting))
            elif isinstance(plan, Release):
                texts.append(plan.sql)
                paid = charged.get(index) if charged else None
                actions.append(self._transform(plan, describe=plan.cursor is None, charged=paid))
            else:  # Refuse: nothing after it runs, as after a real error
                texts.append(SENTINEL_SQL)
                actions.append(r.RefuseAction(r.error_bytes(plan.sqlstate, plan.message, plan.hint)))
                break
        self._expect(r.ENDS_READY, extended=False, action=r.Statements(actions))
        return Query(";\n".join(texts)).encode()

    async def _ledger_then_query(self, plans: list[Plan], sql: str, privacy: Mapping[str, str]) -> bytes:
        """A Query with statements that need the ledger first, in order: each
        Release is charged (or repeated from the answer cache, becoming a
        Local answer), each Local that reads the ledger gets its rows. Nothing
        after a refusal runs."""
        decided: list[Plan] = []
        charged: dict[int, _Charged] = {}
        refusal = refused = None
        for index, plan in enumerate(plans):
            if isinstance(plan, Refuse):
                decided.append(plan)  # nothing after it runs, so nothing after it is charged
                break
            if isinstance(plan, Release):
                # As a prepared statement's key: no parameters, every column in text.
                statement = (sql, index, (), (), (), (0,) * len(plan.spec.columns))
                key = self._answer_key(statement, plan, privacy)
                cached = await self._claim(key)
                if isinstance(cached, Refuse):
                    decided.append(cached)
                    break
                if isinstance(cached, CachedAnswer):
                    if _outside_transaction(plan, self._transaction_status, alone=len(plans) == 1):
                        decided.append(CURSOR_OUTSIDE_TRANSACTION)
                        break
                    plan = await self._repeat(cached, plan.cursor)
                else:
                    unfit = await self._unfit_before_charge(plan, alone=len(plans) == 1)
                    if unfit is not None:
                        self._abandon(key)
                        decided.append(unfit)
                        break
                    refusal, standings = await self._charge(plan, key)
                    if refusal is not None:
                        self._abandon(key)
                        decided.append(refusal)
                        refused = plan
                        break
                    charged[index] = _Charged(key, standings, cached.overlapping if cached else None)
            elif isinstance(plan, Local) and plan.reads is not None:
                plan = await self._read_session(plan)
                if isinstance(plan, Refuse):
                    decided.append(plan)
                    break
            decided.append(plan)
        if self._watched:
            self._decided("query", sql, _until_refusal(decided), refusal, refused)
        return self._query_from_plans(decided, charged)

    async def _unfit_before_charge(self, plan: Release, *, alone: bool) -> Refuse | None:
        """Why a Release of a simple Query cannot run, found before it is
        charged: PostgreSQL refuses to parse or analyse the SQL pgshroud
        built (relayed, as nothing ran), or it declares a cursor without
        HOLD outside a transaction block (`alone`: the Query's only
        statement, so no implicit block holds it either)."""
        error = await self._upstream_check(plan.sql)
        if error is not None:
            upstream = ErrorResponse.decode(error[5:])
            return Refuse(upstream.sqlstate or "XX000",
                          f"PostgreSQL refused the query pgshroud built for this private answer: {upstream.message}",
                          hint="Nothing was charged and nothing ran. pgshroud should have refused this statement "
                          "itself: please report it, and meanwhile write the query more simply.")
        if _outside_transaction(plan, self._transaction_status, alone=alone):
            return CURSOR_OUTSIDE_TRANSACTION
        return None

    async def _upstream_check(self, sql: str) -> bytes | None:
        """PostgreSQL's Parse and Describe of `sql` as the unnamed statement
        (which a simple Query replaces anyway): its ErrorResponse frame, or
        None once it accepted it. Its Sync would end a client's unfinished
        extended-protocol batch, so then the check is left to the run."""
        in_batch = False
        for unit in self._pending:
            in_batch = unit.extended and not unit.is_sync
        if in_batch or self._upstream_skipping:
            return None
        outcome: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._pending.append(r.Unit(r.ENDS_READY, extended=False, action=r.UpstreamCheck(outcome)))
        self.upstream.write(Parse("", sql, ()).encode() + Describe(b"S", "").encode() + SYNC_FRAME)
        return await outcome

    async def _charge(self, plan: Release, key: AnswerKey | None = None
                      ) -> tuple[Refuse | None, Sequence[Standing] | None]:
        """Charge the release (`key`: its answer cache key, which tells a role's
        shared release): the ledger's refusal, or None and where the user's
        budgets stand after the charge (None when the ledger does not say)."""
        ledger = self.shared.ledger
        refusal: Refuse | None
        standings = None
        if ledger is None:
            refusal = NO_LEDGER
        else:
            try:
                charge_standing = getattr(ledger, "charge_standing", None)
                if charge_standing is not None:
                    answers = self.shared.answers
                    release = answers.release_of(key) if key is not None and answers is not None else None
                    outcome = await charge_standing(self.user, plan.spec.cost, release)
                    refusal, standings = (outcome, None) if isinstance(outcome, Refuse) else (None, outcome)
                else:
                    refusal = await ledger.charge(self.user, plan.spec.cost)
            except Exception:
                log.exception("ledger charge failed")
                refusal = LEDGER_DOWN
        if self._metrics is not None:
            self._metrics.charge(self.role.name if self.role is not None else None, plan.spec.cost, refusal)
        return refusal, standings

    # the ledger's standing and the answer cache

    async def _standing(self) -> Sequence[Standing] | Refuse:
        """Where the user's budgets stand now, or why that cannot be told."""
        standing = getattr(self.shared.ledger, "standing", None)
        if standing is None:
            return NO_LEDGER
        try:
            return await standing(self.user)
        except Exception:
            log.exception("reading the privacy budget ledger failed")
            return Refuse("58000", "the privacy budget ledger is unavailable, so pgshroud cannot show the budget")

    async def _read_session(self, plan: Local) -> Local | Refuse:
        """A Local plan whose answer reads the ledger or the session, answered."""
        if plan.reads is SessionRead.LAST_ANSWER:
            return Local(replace(plan.answer, rows=((self._last_answer,),)))
        assert plan.reads is SessionRead.BUDGET
        standings = await self._standing()
        if isinstance(standings, Refuse):
            if standings is NO_LEDGER:
                return Refuse("55000", "SHOW pgshroud.budget needs a privacy budget ledger, and none is configured")
            return standings
        policy = self.shared.policy
        period = policy.budgets.period if isinstance(policy, Policy) else None
        value = budget_notes.budget_value(self.user, standings, period)
        return Local(replace(plan.answer, rows=((value,),)), plan.setting)

    def _current(self, plan: Local | Release) -> Local | Release:
        """A prepared FETCH as of now: the cursor it reads may have been
        declared again, with other columns, since it was prepared (Tableau
        and psqlODBC repeat one FETCH text, which drivers then prepare)."""
        if not isinstance(plan, _CursorRead) or plan.step is None or plan.step.move:
            return plan
        held = self._cursors.get(plan.cursor)
        if held is None or held.answer.columns == plan.answer.columns:
            return plan
        return replace(plan, answer=replace(plan.answer, columns=held.answer.columns))

    def _read_cursor(self, plan: _CursorRead) -> LocalAnswer | None:
        """FETCH, MOVE or CLOSE of a held cursor, carried out when
        PostgreSQL's answer to its placeholder arrives, so in its turn
        among the statements around it (None: no such cursor now)."""
        cursor = self._cursors.get(plan.cursor)
        if cursor is None:  # closed, or its transaction ended
            return None
        if plan.step is None:
            self._cursors.close(cursor)
            return plan.answer
        return cursor.read(plan.step)

    def _cursor_action(self, plan: _CursorRead, portal: _Statement | None = None, max_rows: int = 0) -> r.Action:
        """The action that answers a held cursor's FETCH, MOVE or CLOSE in
        place of its placeholder: a simple Query's statement, or (`portal`)
        an Execute of the extended protocol."""

        def answer() -> bytes:
            read = self._read_cursor(plan)
            if read is None:
                return r.error_bytes("34000", f'cursor "{plan.cursor}" does not exist')
            if portal is None:
                return simple_query_answer(read)
            held = portal.answer = r.PortalAnswer()
            held.fill(read, portal.formats or (0,) * len(read.columns))
            return held.take(max_rows)

        return r.Deferred(answer, at=r.FETCH_AT)

    def _answer_key(self, statement: object, plan: Release, privacy: Mapping[str, str]) -> AnswerKey | None:
        """The answer cache's key of a release (None without a cache)."""
        if self.shared.answers is None:
            return None
        context = self.plan_context
        return AnswerCache.key(user=self.user, role=self.role.name if self.role is not None else None,
                               policy=context.policy, catalog=context.catalog, privacy=privacy,
                               cost=plan.spec.cost, statement=statement, settings=self._answer_settings)

    async def _claim(self, key: AnswerKey | None) -> CachedAnswer | Claim | Refuse | None:
        """The kept answer (after a release of the same key in flight, if any),
        or the claim to release it. Another session's release is waited for
        CLAIM_WAIT_SECONDS at most (None: release without a claim), so that no
        client stalls another; a cancel request ends the wait (Refuse)."""
        answers = self.shared.answers
        if key is None or answers is None:
            return None
        waiting = self._claim_wait = asyncio.ensure_future(answers.claim(key))
        try:
            return await asyncio.wait_for(waiting, CLAIM_WAIT_SECONDS)
        except TimeoutError:
            return None
        except asyncio.CancelledError:
            if self._claim_wait is None:  # cancel_upstream ended the wait
                return QUERY_CANCELED
            raise
        finally:
            self._claim_wait = None

    def _abandon(self, key: AnswerKey | None) -> None:
        if key is not None and self.shared.answers is not None:
            self.shared.answers.abandon(key)

    def _cached(self, key: AnswerKey | None) -> CachedAnswer | None:
        answers = self.shared.answers
        if key is None or answers is None:
            return None
        return answers.get(key)

    async def _repeat(self, cached: CachedAnswer, cursor: Cursor | None = None) -> Local:
        """A released answer again, with a notice that it cost nothing now and
        what is left; for a DECLARE, held by the cursor it declares."""
        standings = await self._standing()
        failed = isinstance(standings, Refuse) and standings is not NO_LEDGER
        notice = budget_notes.cached_notice(cached, None if isinstance(standings, Refuse) else standings, failed)
        answer = budget_notes.with_notice(cached.answer, notice)
        self._last_answer = "; ".join(answer.notices)
        if cursor is None:
            return Local(answer)
        self._cursors.declare(cursor.name, answer, cursor.hold)
        return Local(LocalAnswer("DECLARE CURSOR", notices=answer.notices))

    def _transform(
        self,
        plan: Release,
        *,
        describe: bool,
        formats: tuple[int, ...] | None = None,
        portal: r.PortalAnswer | None = None,
        max_rows: int = 0,
        charged: _Charged | None = None,
    ) -> r.Transform:
        columns = plan.spec.columns
        finalize = self._released(plan, charged or _Charged(None, None))
        if self._metrics is not None:
            finalize = self._metrics.timed_release(finalize)  # timed from here to CommandComplete
        return r.Transform(
            finalize,
            columns,
            formats if formats is not None else (0,) * len(columns),
            describe=describe,
            on_error=_withheld_error,
            portal=portal,
            max_rows=max_rows,
        )

    def _released(self, plan: Release, charged: _Charged) -> Callable[[RawResult], LocalAnswer]:
        """The release's finalize, whose answer is kept in the answer cache
        and gets the notice of its cost and what is left."""
        spec = plan.spec
        finalize, cost = spec.finalize, spec.cost
        notice = budget_notes.cost_notice(cost, charged.standings, charged.overlapping)
        answers, key = self.shared.answers, charged.key

        cursor = plan.cursor

        def released(raw: RawResult) -> LocalAnswer:
            answer = finalize(raw)
            if answers is not None and key is not None:
                answers.put(key, answer, cost)
            answer = budget_notes.with_notice(answer, notice)
            self._last_answer = "; ".join(answer.notices)
            if cursor is None:
                return answer
            # Held for FETCH; the DECLARE itself returns no row.
            self._cursors.declare(cursor.name, answer, cursor.hold)
            return LocalAnswer("DECLARE CURSOR", notices=answer.notices)

        return released

    # privacy settings

    def _settle(self, inner: r.Action | None, change: PrivacySetting) -> r.Settle:
        """The action of a statement that changes the privacy settings: later
        statements are planned with the change, which holds once it succeeds."""
        settle = r.Settle(inner, change, self._settled)
        self._settling.append(settle)
        self._privacy_changed()
        return settle

    def _settled(self, settle: r.Settle, succeeded: bool) -> None:
        try:
            self._settling.remove(settle)
        except ValueError:
            return
        if succeeded:
            if self._privacy_before is None:
                self._privacy_before, self._privacy_undo = self._privacy, False
            self._privacy = _applied(self._privacy, settle.change)
        self._privacy_changed()

    def _privacy_changed(self) -> None:
        planned = self._privacy
        for settle in self._settling:
            planned = _applied(planned, settle.change)
        if planned != self._planned_privacy:
            self._planned_privacy = planned
            self.plan_context = replace(self.plan_context, privacy=planned)

    def _watch_transaction(self, kind: int, data: bytes, pos: int) -> None:
        """While a transaction has changed the privacy settings: when it ends,
        keep them if it committed, undo them if it rolled back, as PostgreSQL
        does a SET. (A ROLLBACK TO SAVEPOINT does not undo them.)"""
        if kind == r.ERROR:
            self._privacy_undo = True
        elif kind == r.COMMAND_COMPLETE:
            self._privacy_undo = data.startswith(b"ROLLBACK\0", pos + 5)
        elif data[pos + 5] == IDLE:  # ReadyForQuery outside a transaction
            if self._privacy_undo and self._privacy_before is not None:
                self._privacy = self._privacy_before
            self._privacy_before, self._privacy_undo = None, False
            self._privacy_changed()

    # extended protocol

    def _on_parse(self, parse: Parse) -> bytes | None:
        plans = self._plan(parse.sql)
        plan = plans[0] if len(plans) == 1 else Refuse("42601", "cannot insert multiple commands into a prepared statement")
        context = self.plan_context
        if context.policy is not None and not context.role_sees_raw:
            self._prepared_under[parse.name] = _Prepared(context.policy, context.catalog, parse.sql, _sent(plan))
        if self._watched:
            self._decided("parse", parse.sql, (plan,))
        if type(plan) is Passthrough and plan.sql == parse.sql:
            if (self._planned_privacy or self._privacy) and _resets_all(plan):
                self._statements[parse.name] = _Statement(plan)
            elif self._statements:
                self._statements.pop(parse.name, None)
            self._expect_relay(r.RELAY_PARSE)
            return None
        if isinstance(plan, Refuse):
            self._statements.pop(parse.name, None)
            self._expect(r.ENDS_PARSE, action=r.RefuseAction(r.error_bytes(plan.sqlstate, plan.message, plan.hint)))
            self._client_skipping = True
            return Parse(self._up(parse.name), SENTINEL_SQL, ()).encode()
        self._expect(r.ENDS_PARSE)
        name = self._up(parse.name)
        if isinstance(plan, (Passthrough, Rewrite)):
            self._statements.pop(parse.name, None)
            return Parse(name, plan.sql, parse.param_types).encode()
        if isinstance(plan, Local):
            self._statements[parse.name] = _Statement(plan, sql=parse.sql, privacy=self._planned_privacy,
                                                      param_types=parse.param_types)
            return Parse(name, PLACEHOLDER_SQL, ()).encode()
        upstream = self._fresh_name("statement")
        info = self._statements[parse.name] = _Statement(plan, sql=parse.sql, privacy=self._planned_privacy,
                                                         param_types=parse.param_types, upstream=upstream)
        # A private statement's parameters go upstream untyped, so PostgreSQL
        # converts each value once, at Bind, to the type the query gives it: a
        # value declared text and cast in the query would be converted row by
        # row, and fail only where a row reaches the cast. The types it infers
        # are read back, to check binary values declared as another type.
        if not any(parse.param_types):
            return Parse(upstream, plan.sql, ()).encode()
        info.inferred = asyncio.get_running_loop().create_future()
        self._expect(r.ENDS_DESCRIBE, action=r.ParameterTypes(info.inferred))
        # Flush: PostgreSQL sends the types now, not at the client's Sync, which a Bind may wait for.
        return Parse(upstream, plan.sql, ()).encode() + Describe(b"S", upstream).encode() + FLUSH_FRAME

    def _on_bind(self, payload: bytes) -> bytes | None:
        portal, statement = _two_names(payload)
        prepared = self._prepared_under.get(statement)
        if prepared is not None and prepared.policy is not self.shared.policy:
            return self._refuse_extended(
                r.ENDS_BIND, "0A000", f'prepared statement "{statement}" was planned under a previous policy',
                hint="Prepare it again.",
            )
        if prepared is not None and prepared.catalog is not self.shared.catalog():
            stale = self._recheck(statement, prepared)
            if stale is not None:
                return self._refuse_extended(r.ENDS_BIND, stale.sqlstate, stale.message, stale.hint)
        info = self._statements.get(statement) if self._statements else None
        if info is None or type(info.plan) is Passthrough:
            if info is not None:
                self._portals[portal] = _Statement(info.plan)
            elif self._portals:
                self._portals.pop(portal, None)
            self._expect(r.ENDS_BIND)
            return None
        if info.sql is not None and info.privacy != self._planned_privacy:
            replanned = self._replan(statement, info)
            if isinstance(replanned, Refuse):
                return self._refuse_extended(r.ENDS_BIND, replanned.sqlstate, replanned.message, replanned.hint)
            info = replanned
        bind = Bind.decode(payload)
        if info.inferred is not None and _declared_binary(bind, info.param_types):
            if not info.inferred.done():
                self._block(self._bind_when_typed(payload, info.inferred))
                return b""
            try:
                bind = _as_inferred(bind, info.param_types, info.inferred)
            except NoTextForm as exc:
                return self._refuse_extended(
                    r.ENDS_BIND, "42804", f"pgshroud cannot read {exc}, which the private query reads as another "
                    "type", hint="Send the value in text format, or leave its type unspecified (PostgreSQL then "
                    "infers it from the query).")
        if isinstance(info.plan, Release):
            negative = _negative_bound(bind, info.plan, info.param_types)
            if negative is not None:
                return self._refuse_extended(r.ENDS_BIND, *negative)
        plan = self._current(info.plan)
        columns = _columns(plan)
        try:
            formats = result_formats(bind.result_formats, len(columns))
            check_formats(columns, formats, self._answer_settings.get("DateStyle", "ISO"))
        except UnsupportedFormat as exc:
            return self._refuse_extended(r.ENDS_BIND, "0A000", str(exc))
        key = None
        if isinstance(info.plan, Release) and not self._upstream_skipping:
            # Every value and format of the Bind is in the key, formats as they apply to each value and
            # column (a Query of the same text is the same key, as it means the same).
            param_formats = tuple(bind.param_format(i) for i in range(len(bind.params)))
            statement = (info.sql, 0, info.param_types, param_formats, bind.params, formats)
            key = self._answer_key(statement, info.plan, info.privacy)
            cached = self._cached(key)
            if cached is not None:
                self._block(self._bind_repeat(bind, cached, formats, info.sql, info.plan.cursor))
                return b""
        upstream = self._fresh_name("portal") if info.upstream is not None else None
        self._portals[portal] = _Statement(plan, formats, sql=info.sql, cache_key=key, upstream=upstream)
        self._expect(r.ENDS_BIND)
        # PostgreSQL's rows for pgshroud's own answers are read as text.
        return Bind(upstream or self._up(bind.portal), info.upstream or self._up(bind.statement),
                    bind.param_formats, bind.params, ()).encode()

    async def _bind_when_typed(self, payload: bytes, inferred: asyncio.Future[tuple[int, ...]]) -> bytes:
        """A Bind with binary values of declared types, once PostgreSQL has
        said which types the private statement reads them as."""
        try:
            await asyncio.shield(inferred)
        except asyncio.CancelledError:
            pass  # its Parse failed: PostgreSQL skips the Bind too
        out = self._on_bind(payload)
        then, self._then = self._then, None
        if then is not None:
            return await then
        return _renamed_frame(B, b"B" + _LENGTH_PACK(len(payload) + 4) + payload, 0, len(payload) + 5) \
            if out is None else out

    def _recheck(self, name: str, prepared: _Prepared) -> Refuse | None:
        """A statement prepared before the catalog snapshot changed (a schema
        change): planned again, it must send PostgreSQL the same text, or
        what it now calls may be something the policy refuses."""
        plans = self._plan(prepared.sql)
        plan = plans[0] if len(plans) == 1 else None
        if isinstance(plan, Refuse):
            return plan
        if plan is None or _sent(plan) != prepared.sent:
            return Refuse("0A000", f'prepared statement "{name}" was planned before a change of the database schema',
                          hint="Prepare it again.")
        self._prepared_under[name] = prepared._replace(catalog=self.plan_context.catalog)
        return None

    async def _bind_repeat(self, bind: Bind, cached: CachedAnswer, formats: tuple[int, ...], sql: str | None,
                           cursor: Cursor | None) -> bytes:
        """A Bind of a private statement whose answer the cache holds: the
        portal gets that answer, as a Local one, and is bound upstream to a
        placeholder statement, so that nothing runs the aggregate again while
        PostgreSQL still decides whether the Bind may run. Its CloseComplete
        and ParseComplete are not the client's to see; an error is, and then
        both sides skip to Sync."""
        local = await self._repeat(cached, cursor)
        if self._watched:
            self._decided("bind", sql, (local,))
        self._portals[bind.portal] = _Statement(local, formats, sql=sql)
        self._expect(r.ENDS_CLOSE, action=r.Replace(b"", at=r.ENDS_CLOSE))
        self._expect(r.ENDS_PARSE, action=r.Replace(b"", at=r.ENDS_PARSE))
        self._expect(r.ENDS_BIND)
        return b"".join((
            Close(b"S", CACHED_STATEMENT).encode(),
            Parse(CACHED_STATEMENT, PLACEHOLDER_SQL, ()).encode(),
            Bind(self._up(bind.portal), CACHED_STATEMENT, (), (), ()).encode(),
        ))

    def _replan(self, name: str, info: _Statement) -> _Statement | Refuse:
        """A prepared statement whose privacy settings changed since it was
        planned: its plan under the current ones, which must still fit the
        statement prepared upstream."""
        assert info.sql is not None
        plans = self._plan(info.sql)
        plan = plans[0] if len(plans) == 1 else None
        if isinstance(plan, Refuse):
            return plan
        old = info.plan
        if not ((isinstance(plan, Local) and isinstance(old, Local))
                or (isinstance(plan, Release) and isinstance(old, Release) and plan.sql == old.sql)):
            return Refuse("0A000", f'prepared statement "{name}" was planned under other pgshroud settings',
                          hint="Prepare it again.")
        info = self._statements[name] = _Statement(plan, sql=info.sql, privacy=self._planned_privacy,
                                                   param_types=info.param_types, upstream=info.upstream)
        return info

    def _on_describe(self, describe: Describe) -> bytes | None:
        if describe.kind == b"P" and self._cursors:
            held = self._cursors.get(describe.name)
            if held is not None and describe.name not in self._portals:
                return self._describe_held(held)
        table = self._statements if describe.kind == b"S" else self._portals
        info = table.get(describe.name) if table else None
        if info is None or type(info.plan) is Passthrough:
            self._expect(r.ENDS_DESCRIBE)
            return None
        columns = _columns(self._current(info.plan))
        formats = info.formats or (0,) * len(columns)
        self._expect(r.ENDS_DESCRIBE, action=r.describe_replacement(columns, formats))
        return None if info.upstream is None else Describe(describe.kind, info.upstream).encode()

    def _describe_held(self, cursor: HeldCursor) -> bytes:
        """A protocol Describe of a held cursor's portal (psycopg sends one
        after DECLARE): its columns, in the turn of a placeholder statement
        that PostgreSQL describes (and may refuse, in a failed transaction)."""
        self._expect(r.ENDS_CLOSE, action=r.Replace(b"", at=r.ENDS_CLOSE))
        self._expect(r.ENDS_PARSE, action=r.Replace(b"", at=r.ENDS_PARSE))
        columns = cursor.answer.columns
        self._expect(r.ENDS_DESCRIBE, action=r.Replace(row_description(columns, (0,) * len(columns)),
                                                       at=frozenset(b"Tn")))
        return b"".join((
            Close(b"S", CACHED_STATEMENT).encode(),
            Parse(CACHED_STATEMENT, PLACEHOLDER_SQL, ()).encode(),
            Describe(b"S", CACHED_STATEMENT).encode(),
        ))

    def _on_execute(self, execute: Execute) -> bytes | None:
        info = self._portals.get(execute.portal) if self._portals else None
        if info is None:
            self._expect(r.ENDS_EXECUTE)
            return None
        if self._upstream_skipping:
            return None  # PostgreSQL ignores it until Sync: nothing to run or charge
        if info.answer is not None:
            # It ran: the next rows of its answer, never a second run.
            self._expect(r.ENDS_EXECUTE, action=r.Fetch(info.answer, execute.max_rows))
            return None if info.upstream is None else Execute(info.upstream, execute.max_rows).encode()
        plan = info.plan
        if type(plan) is Passthrough:  # RESET ALL, DISCARD ALL
            self._expect(r.ENDS_EXECUTE, action=self._settle(None, RESET_ALL))
            return None
        if isinstance(plan, _CursorRead):
            self._expect(r.ENDS_EXECUTE, action=self._cursor_action(plan, info, execute.max_rows))
            return None
        if isinstance(plan, Local):
            if plan.reads is not None:
                self._block(self._ledger_then_execute(plan, execute, info))
                return b""
            answer = info.answer = r.PortalAnswer()
            answer.fill(plan.answer, info.formats)
            action: r.Action = r.Fetch(answer, execute.max_rows)
            self._expect(r.ENDS_EXECUTE, action=action if plan.setting is None else self._settle(action, plan.setting))
            return None
        self._block(self._charge_then_execute(plan, execute, info))
        return b""

    async def _ledger_then_execute(self, plan: Local, execute: Execute, info: _Statement) -> bytes:
        """An Execute of a Local statement whose answer reads the ledger."""
        filled = await self._read_session(plan)
        if isinstance(filled, Refuse):
            if self._watched:
                self._decided("execute", info.sql, (filled,))
            return self._refuse_extended(r.ENDS_EXECUTE, filled.sqlstate, filled.message, filled.hint)
        answer = info.answer = r.PortalAnswer()
        answer.fill(filled.answer, info.formats)
        self._expect(r.ENDS_EXECUTE, action=r.Fetch(answer, execute.max_rows))
        return Execute(self._up(execute.portal), execute.max_rows).encode()

    async def _charge_then_execute(self, plan: Release, execute: Execute, info: _Statement) -> bytes:
        await self._upstream_settled()
        if self._upstream_skipping:
            return b""  # its Bind (or a message before it) failed: PostgreSQL skips it, and nothing is charged
        if _outside_transaction(plan, self._transaction_status, alone=True):
            if self._watched:
                self._decided("execute", info.sql, (CURSOR_OUTSIDE_TRANSACTION,))
            refusal = CURSOR_OUTSIDE_TRANSACTION
            return self._refuse_extended(r.ENDS_EXECUTE, refusal.sqlstate, refusal.message, refusal.hint)
        found = await self._claim(info.cache_key) if plan.cursor is None else None
        if isinstance(found, Refuse):
            return self._refuse_extended(r.ENDS_EXECUTE, found.sqlstate, found.message, found.hint)
        if isinstance(found, CachedAnswer):
            # Released for another session while this one waited: that answer. The
            # Execute still goes upstream, to keep PostgreSQL's answers in order,
            # but nothing of what it returns reaches the client (Fetch).
            local = await self._repeat(found)
            if self._watched:
                self._decided("execute", info.sql, (local,))
            answer = info.answer = r.PortalAnswer()
            answer.fill(local.answer, info.formats)
            self._expect(r.ENDS_EXECUTE, action=r.Fetch(answer, execute.max_rows))
            return Execute(info.upstream or self._up(execute.portal), 0).encode()
        refusal, standings = await self._charge(plan, info.cache_key)
        if self._watched:
            self._decided("execute", info.sql, (plan if refusal is None else refusal,), refusal, plan)
        if refusal is not None:
            self._abandon(info.cache_key)
            return self._refuse_extended(r.ENDS_EXECUTE, refusal.sqlstate, refusal.message, refusal.hint)
        answer = info.answer = r.PortalAnswer()
        self._expect(r.ENDS_EXECUTE, action=self._transform(
            plan, describe=False, formats=info.formats, portal=answer, max_rows=execute.max_rows,
            charged=_Charged(info.cache_key, standings, found.overlapping if isinstance(found, Claim) else None)))
        # A release runs once, whole: fetching it from PostgreSQL in pieces
        # would run the aggregate, and its noise, more than once. Later
        # Executes of the portal take the next rows of its answer. Flush: the
        # answer is released (and its claim ended) without waiting for a Sync
        # the client may hold back while other sessions wait for the answer.
        return Execute(info.upstream or self._up(execute.portal), 0).encode() + FLUSH_FRAME

    async def _upstream_settled(self) -> None:
        """Wait until PostgreSQL has answered every message sent so far (a
        Flush makes it answer now): whether a private Execute's Bind failed,
        say on a value its type cannot read, is known before the charge."""
        if not self._pending:
            return
        self._settled_waiter = asyncio.get_running_loop().create_future()
        self.upstream.write(FLUSH_FRAME)
        await self._settled_waiter

    def _refuse_extended(self, ends: frozenset[int], sqlstate: str, message: str, hint: str | None = None) -> bytes:
        """Refuse inside the extended protocol: both sides skip to Sync."""
        if self._watched and ends is r.ENDS_BIND:
            self._decided("bind", None, (Refuse(sqlstate, message, hint),))
        self._expect(ends, action=r.RefuseAction(r.error_bytes(sqlstate, message, hint)))
        self._client_skipping = True
        return Parse("", SENTINEL_SQL, ()).encode()

    def _forget(self, close_payload: bytes) -> str | None:
        """A Close of a statement or portal that may have a plan of its own:
        the upstream name to close when it has one of its own."""
        kind, name = close_payload[:1], close_payload[1:].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        info = (self._statements if kind == b"S" else self._portals).pop(name, None)
        if kind == b"S":
            self._prepared_under.pop(name, None)
        return None if info is None else info.upstream

    def _fresh_name(self, what: str) -> str:
        """An upstream name for a private statement or portal: no client name
        translates to it (rewriter/names.py makes `pgshroud_u` + 40 hex digits)."""
        return f"pgshroud_{'r' if what == 'statement' else 'q'}{next(self._fresh)}"

    def _on_function_call(self, call: FunctionCall) -> bytes | None:
        plan = plan_function_call(call.function_oid, self._context())
        if self._watched:
            self._decided("function_call", None, (plan,))
        if isinstance(plan, Refuse):
            action = r.Statements([r.RefuseAction(r.error_bytes(plan.sqlstate, plan.message, plan.hint))])
            self._expect(r.ENDS_READY, extended=False, action=action)
            return Query(SENTINEL_SQL).encode()
        self._expect_relay(r.RELAY_QUERY)
        return None

    # waiting for a charge

    def _block(self, work: Awaitable[bytes]) -> None:
        if self._blocked:
            # Already waiting (a statement planned on a worker thread that
            # now needs the ledger): the waiting task runs this work next.
            self._then = work
            return
        self._blocked = True
        self.client.pause("charging")
        task = asyncio.ensure_future(work)
        task.add_done_callback(self._unblock)

    def _unblock(self, task: asyncio.Future[bytes]) -> None:
        self._blocked = False
        if task.cancelled() or self.client.closed.done():
            return
        exc = task.exception()
        if exc is not None:
            log.error("releasing a private answer failed: %s", type(exc).__name__)
            self._close_with_error("XX000", "pgshroud failed while releasing a private answer")
            return
        self.upstream.write(task.result())
        self.client.resume("charging")
        self._on_client_data(b"")

    def _protocol_violation(self, reason: str) -> None:
        log.warning("closing a client that broke the protocol: %s", reason)
        self._close_with_error("08P01", reason)

    # upstream → client

    def _on_upstream_data(self, data: bytes) -> None:
        if self._finalizing:
            self._upstream_rest += data
            return
        if self._upstream_streaming:
            k = self._upstream_streaming
            if len(data) <= k:
                self._upstream_streaming -= len(data)
                self.client.write(data)
                return
            self._upstream_streaming = 0
            self.client.write(data[:k])
            data = data[k:]
        if self._upstream_rest:
            data = self._upstream_rest + data
            self._upstream_rest = b""
        out: list[bytes] = []
        pending = self._pending
        n = len(data)
        pos = run = 0
        watching = self._privacy_before is not None
        while n - pos >= 5:
            kind = data[pos]
            end = pos + 1 + _LENGTH(data, pos + 1)[0]
            unit = pending[0] if pending else None
            action = unit.action if unit is not None else None
            if end > n:
                if action is None and kind in _STREAMABLE:
                    self._upstream_streaming = end - n
                    pos = n
                break
            if kind == PARAMETER_STATUS and self._started_rewritten and self._on_parameter_status(data[pos + 5 : end]):
                return
            if kind == NOTIFICATION and self._started_rewritten:
                # Its payload is a value no rewrite touched (LISTEN is refused
                # too; this is the second lock).
                if run < pos:
                    out.append(data[run:pos])
                pos = run = end
                continue
            frame = data[pos:end] if action is not None else None
            if kind == r.ERROR and self._started_rewritten and b"pgshroud_u" in data[pos:end]:
                frame = _error_with_client_names(data[pos:end])
                if action is None:
                    if run < pos:
                        out.append(data[run:pos])
                    out.append(frame)
                    run = end
            if action is not None:
                if run < pos:
                    out.append(data[run:pos])
                try:
                    out.append(action.frame(kind, frame))
                except r.NeedsWorker as deferred:
                    # This frame and all after it wait for the answer.
                    self._upstream_rest = data[pos:]
                    if out:
                        self.client.write(b"".join(out))
                    self._finalize_off_loop(deferred.transform)
                    return
                except Exception as exc:  # e.g. a release's finalize: nothing of it may reach the client
                    self._answer_failed(out, exc)
                    return
                run = end
                watching = self._privacy_before is not None
            if watching and kind in _TRANSACTION_FRAMES:
                self._watch_transaction(kind, data, pos)
                watching = self._privacy_before is not None
            if kind == r.READY:
                self._transaction_status = data[pos + 5]
                if self._cursors and data[pos + 5] == IDLE:
                    self._cursors.transaction_ended()
            if unit is not None and kind in unit.ends:
                if kind == r.ERROR and unit.extended:
                    self._end_with_error()
                else:
                    pending.popleft()
            pos = end
        if run < pos:
            out.append(data if run == 0 and pos == n else data[run:pos])
        if self._settled_waiter is not None and not pending:
            waiter, self._settled_waiter = self._settled_waiter, None
            waiter.set_result(None)
        if pos < n:
            self._upstream_rest = data[pos:]
        if out:
            self.client.write(b"".join(out))
        if self._draining and self.idle:
            self.drain()

    def _finalize_off_loop(self, transform: r.Transform) -> None:
        """Build a large private answer on a worker thread (its work grows
        with the groups PostgreSQL returns), reading nothing more from
        upstream meanwhile; then go on where the answer stopped."""
        self._finalizing = True
        self.upstream.pause("finalizing")
        future = asyncio.get_running_loop().run_in_executor(_WORKERS, transform.prepare)
        future.add_done_callback(self._finalized)

    def _finalized(self, future: asyncio.Future[None]) -> None:
        self._finalizing = False
        if self.client.closed.done():
            return
        self.upstream.resume("finalizing")
        self._on_upstream_data(b"")

    def _answer_failed(self, out: list[bytes], exc: Exception) -> None:
        """An answer pgshroud builds failed half-way: the client has seen
        part of the protocol exchange, so the connection ends. The log names
        the exception's type only: its text could quote row values."""
        log.error("building an answer failed: %s", type(exc).__name__)
        if out:
            self.client.write(b"".join(out))
        self._close_with_error("XX000", "pgshroud failed while building an answer, so it closed the connection")

    def _on_parameter_status(self, payload: bytes) -> bool:
        """Keep the settings that change what an answer says; True when the
        session was closed because its lexical settings changed: the
        rewriter's reading of its statements may no longer be PostgreSQL's."""
        status = ParameterStatus.decode(payload)
        if status.name in ANSWER_SETTINGS:
            self._answer_settings = {**self._answer_settings, status.name: status.value}
        problem = check_parameter_status(status.name, status.value)
        if problem is None:
            return False
        log.warning("closing a session whose settings became unsafe: %s", status.name)
        self._close_with_error("42501", f"pgshroud closed the session: {problem}")
        return True

    def _end_with_error(self) -> None:
        """An ErrorResponse ended an extended-protocol unit: PostgreSQL now
        discards messages until Sync, so the units they would have had go too."""
        pending = self._pending
        pending.popleft()
        while pending and not pending[0].is_sync:
            skipped = pending.popleft()
            if skipped.action is not None:
                skipped.action.abandon()
        if not pending:
            self._upstream_skipping = True


_NAMING_FRAMES = frozenset((P, B, D, E, C))


def _plan_key(sql: str, context: PlanContext) -> tuple:
    """What a plan depends on besides the planner: the text, the policy and
    catalog snapshot (by identity) and the privacy settings."""
    return (sql, id(context.policy), id(context.catalog), tuple(sorted(context.privacy.items())))


def _same_name(name: str) -> str:
    return name


def _renamed_frame(kind: int, data: bytes, pos: int, end: int) -> bytes | None:
    """A Parse, Bind, Describe, Execute or Close frame with its statement and
    portal names translated upstream (None when it names nothing)."""
    body = pos + 5
    if kind in (D, C):
        body += 1  # the b"S" or b"P" before the name
    names = 2 if kind == B else 1
    parts: list[bytes] = [data[pos + 5 : body]]
    changed = False
    for _ in range(names):
        stop = data.find(b"\0", body, end)
        if stop < 0:
            raise _Violation(f"unterminated name in frontend message type {chr(kind)!r}")
        name = data[body:stop].decode("utf-8", "surrogateescape")
        if name:
            changed = True
            parts.append(upstream_name(name).encode())
        parts.append(b"\0")
        body = stop + 1
    if not changed:
        return None
    payload = b"".join(parts) + data[body:end]
    return bytes((kind,)) + _LENGTH_PACK(len(payload) + 4) + payload


class _Prepared(NamedTuple):
    """What a non-raw session's named statement was planned under, and the
    text it sent upstream (None: a refusal's sentinel)."""

    policy: object
    catalog: Catalog | None
    sql: str
    sent: str | None


def _sent(plan: Plan) -> str | None:
    """The statement text a Parse of this plan sends upstream."""
    if isinstance(plan, (Passthrough, Rewrite, Release)):
        return plan.sql
    return PLACEHOLDER_SQL if isinstance(plan, Local) else None


class _Violation(Exception):
    """The client broke the protocol; its connection ends with 08P01."""


class _Charged(NamedTuple):
    """What a charged release's answer needs: its answer cache key (None: not
    kept) and where the user's budgets stood after the charge (None: unknown)."""

    key: AnswerKey | None
    standings: Sequence[Standing] | None
    overlapping: float | None = None  # answer_cache.Claim.overlapping


def _negative_bound(bind: Bind, plan: Release, declared: tuple[int, ...]) -> tuple[str, str, str | None] | None:
    """The error for a LIMIT or OFFSET bound as a parameter that the bounded
    SQL would fail on only after the charge, found at Bind: a negative one
    (PostgreSQL's own error), or a subquery's OFFSET that is not 0."""
    for number, clause in getattr(plan.spec, "bound_parameters", ()):
        index = number - 1
        if index >= len(bind.params) or bind.params[index] is None:
            continue
        value = bind.params[index]
        try:
            if bind.param_format(index) == 1:
                # Of the type declared, else the integer its length tells (the bounded SQL reads an integer).
                type_oid = (declared[index] if index < len(declared) and declared[index]
                            else _INTEGER_BY_LENGTH.get(len(value), 0))
                value = text_form(type_oid, value)
            negative = Decimal(value.decode()) < 0
        except (NoTextForm, ArithmeticError, ValueError):
            continue  # PostgreSQL refuses it at Bind, where it reads it
        if clause == "zero_offset":
            if not negative and Decimal(value.decode()) == 0:
                continue
            return ("42501", "the OFFSET of a subquery over protected rows must be 0: the rows it would skip "
                    "depend on other people's rows", "Bind 0, or leave the OFFSET out.")
        if negative:
            word = clause.upper()
            return ("2201W" if word == "LIMIT" else "2201X"), f"{word} must not be negative", None
    return None


def _declared_binary(bind: Bind, declared: tuple[int, ...]) -> bool:
    """Some value of the Bind is binary, of a type the client declared."""
    return any(bind.param_format(i) == 1 and i < len(declared) and declared[i] for i in range(len(bind.params)))


def _as_inferred(bind: Bind, declared: tuple[int, ...], inferred: asyncio.Future[tuple[int, ...]]) -> Bind:
    """The Bind with each binary value whose declared type is not the one
    PostgreSQL infers for the private statement sent as text instead, for
    PostgreSQL to convert at Bind (raises NoTextForm for one it cannot)."""
    types = inferred.result() if not inferred.cancelled() else ()
    formats = [bind.param_format(i) for i in range(len(bind.params))]
    params = list(bind.params)
    for i, value in enumerate(params):
        if formats[i] != 1 or i >= len(declared) or not declared[i] or i >= len(types) or declared[i] == types[i]:
            continue
        formats[i] = 0
        params[i] = None if value is None else text_form(declared[i], value)
    if params == list(bind.params):
        return bind
    return replace(bind, param_formats=tuple(formats), params=tuple(params))


def _two_names(payload: bytes) -> tuple[str, str]:
    first = payload.find(b"\0")
    second = payload.find(b"\0", first + 1) if first >= 0 else -1
    if second < 0:
        raise _Violation("a Bind message without its portal and statement names")
    return (
        payload[:first].decode("utf-8", "surrogateescape"),
        payload[first + 1 : second].decode("utf-8", "surrogateescape"),
    )


def _columns(plan: Local | Release):
    if isinstance(plan, Local):
        return plan.answer.columns
    return () if plan.cursor is not None else plan.spec.columns  # DECLARE returns no row


def _read_declared_cursors(plans: list[Plan]) -> list[Plan]:
    """A Query that declares a cursor for a private query and reads it
    (DECLARE ...; FETCH 100 IN ..., as psqlODBC sends): the reads were
    planned before the cursor existed, so they are pointed at it here."""
    declared: dict[str, tuple[Column, ...]] = {}
    for index, plan in enumerate(plans):
        if isinstance(plan, Release) and plan.cursor is not None:
            declared[upstream_name(plan.cursor.name)] = plan.spec.columns
        elif declared and type(plan) is Rewrite and plan.reaches is not None and plan.reaches[0] == "P":
            columns = declared.get(upstream_name(plan.reaches[1]))
            if columns is not None:
                plans[index] = _held_cursor_plan(plan, plan.reaches[1], columns)
    return plans


def _outside_transaction(plan: Release, status: int, *, alone: bool) -> bool:
    """A DECLARE without HOLD that PostgreSQL would refuse: no transaction
    block is open and (`alone`) no implicit one holds the statement."""
    return plan.cursor is not None and not plan.cursor.hold and alone and status == IDLE


def _held_cursor_plan(plan: Rewrite, name: str, columns: tuple[Column, ...]) -> Plan:
    """FETCH, MOVE or CLOSE of a cursor that holds (or, declared earlier in
    the same Query, will hold) a private answer with these columns."""
    step = plan.step
    if step is None:  # CLOSE
        return _CursorRead(LocalAnswer("CLOSE CURSOR"), cursor=name)
    if not step.forward:
        return Refuse("0A000", f'cursor "{name}" holds a private answer, which is read forward only',
                      hint="Use FETCH [FORWARD] n, FETCH NEXT or FETCH ALL; declare the cursor again to read "
                      "from the start (a repeat is answered from the answer cache while it keeps the answer).")
    tag = "MOVE" if step.move else "FETCH"
    return _CursorRead(LocalAnswer(tag, () if step.move else columns), cursor=name, step=step)


@dataclass(frozen=True, slots=True)
class _CursorRead(Local):
    """A Local plan whose answer is the next rows of a held cursor (or its
    CLOSE, without `step`), taken when PostgreSQL answers its placeholder.
    `answer` gives the command tag and columns only."""

    cursor: str = ""
    step: CursorStep | None = None


def _until_refusal(plans: list[Plan]) -> list[Plan]:
    """The statements of a Query that are sent: none after the first refusal."""
    for index, plan in enumerate(plans):
        if isinstance(plan, Refuse):
            return plans[: index + 1]
    return plans


def _resets_all(plan: Plan) -> bool:
    """A RESET ALL or DISCARD ALL, which the planner passes through."""
    return type(plan) is Passthrough and _RESETS_ALL.match(plan.sql) is not None


def _setting_change(plan: Plan) -> PrivacySetting | None:
    if isinstance(plan, Local):
        return plan.setting
    return RESET_ALL if _resets_all(plan) else None


def _applied(settings: Mapping[str, str], change: PrivacySetting) -> Mapping[str, str]:
    """The settings after a change (never changed in place: plan contexts hold them)."""
    if change is RESET_ALL:
        return NO_SETTINGS
    if change.value is None:
        if change.name not in settings:
            return settings
        return MappingProxyType({k: v for k, v in settings.items() if k != change.name})
    if settings.get(change.name) == change.value:
        return settings
    return MappingProxyType({**settings, change.name: change.value})


def _withheld_error(frame: bytes) -> bytes:
    """An upstream error inside a charged Release could depend on protected
    data, and so could which error it is: a timeout, a cancel, running out
    of memory or a failed cast all get the same answer. Only an aborted
    transaction's refusal, raised before anything runs, is relayed."""
    upstream = ErrorResponse.decode(frame[5:])
    if upstream.sqlstate[:2] == "25":
        return frame
    return WITHHELD_ERROR


QUERY_CANCELED = Refuse("57014", "canceling statement due to user request")
# How long a private statement waits for another session's release of the same answer.
CLAIM_WAIT_SECONDS = 2.0
CURSOR_OUTSIDE_TRANSACTION = Refuse("25P01", "DECLARE CURSOR can only be used in transaction blocks",
                                    hint="Run BEGIN first, or declare the cursor WITH HOLD.")
SYNC_FRAME = b"S\x00\x00\x00\x04"
FLUSH_FRAME = b"H\x00\x00\x00\x04"
_INTEGER_BY_LENGTH = {2: 21, 4: 23, 8: 20}  # int2, int4, int8 in binary

WITHHELD_ERROR = r.error_bytes(
    "22000", "the private aggregate failed upstream; its error is withheld because it could depend on protected data"
)


def _error_with_client_names(frame: bytes) -> bytes:
    """An upstream error that quotes a translated statement, portal or
    cursor name, with the name as the client gave it."""
    error = ErrorResponse.decode(frame[5:])
    return ErrorResponse(tuple((code, with_client_names(value)) for code, value in error.fields)).encode()


def _log_cancel_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("could not deliver a cancel request upstream: %s", task.exception())
