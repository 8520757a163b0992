"""One client's session after startup, as a conversation without I/O: every
statement through the planner, responses relayed or replaced in order.

Fed the bytes each side sends (`receive_client`, `receive_upstream`) and the
results of what it asked for (`receive_result`), it returns effects
(proxy/session/effects.py) for its driver to carry out, in order.

Both directions are scanned frame by frame. Frames that pass unchanged are
sent in runs, as the slices of the received chunk they already are; only
Query, Parse, Bind, Describe, Execute, Close and FunctionCall are decoded,
and upstream result rows never are unless a Release needs them. Each client
message goes to the handler the table `_DISPATCH` names for the protocol
phase and the message type.

Some statements wait for the privacy budget ledger before they are sent
(the client's input is paused meanwhile, so answers stay in order): a
private answer's charge, `SHOW pgshroud.budget` (a Local plan whose row is
read from the ledger), and a repeat served from the answer cache, whose
notice says what is left (proxy/session/release.py). Such work is a
generator that yields what it waits for. A repeat of a released answer by
the same user within --answer-cache-seconds is sent again at no cost
(proxy/budget/answer_cache.py): a simple Query's release becomes a Local
answer; a prepared one's portal is bound upstream to a placeholder
statement instead, at Bind. Statements that pass through never touch the
ledger or the cache.
"""

from __future__ import annotations

import enum
import logging
import re
import struct
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from time import perf_counter
from typing import TYPE_CHECKING, Any

from pgshroud import sqlstate
from pgshroud.policies.model import Access, Policy, Role
from pgshroud.proxy.budget.answer_cache import CachedAnswer, Claim
from pgshroud.proxy.codec.binary_text import NoTextForm
from pgshroud.proxy.codec.errors import ProtocolViolation
from pgshroud.proxy.codec.messages import (
    Bind,
    Close,
    Describe,
    ErrorResponse,
    Execute,
    FunctionCall,
    ParameterStatus,
    Parse,
    Query,
)
from pgshroud.proxy.session import budget_notes
from pgshroud.proxy.session import responses as r
from pgshroud.proxy.session.answers import (
    UnsupportedFormat,
    check_formats,
    result_formats,
    row_description,
)
from pgshroud.proxy.session.bind_checks import as_inferred, declared_binary, negative_bound
from pgshroud.proxy.session.cursors import (
    CURSOR_OUTSIDE_TRANSACTION,
    CursorRead,
    HeldCursor,
    HeldCursors,
    cursor_action,
    held_cursor_plan,
    outside_transaction,
    read_declared_cursors,
)
from pgshroud.proxy.session.effects import (
    REQUESTS,
    CancelUpstream,
    Effect,
    FinalizeOffLoop,
    PauseReading,
    PlanOffLoop,
    Request,
    ResumeReading,
    SendClient,
    SendUpstream,
    Side,
    Work,
)
from pgshroud.proxy.session.effects import (
    Close as CloseSide,
)
from pgshroud.proxy.session.outcome import Outcome, OutcomeCancelled
from pgshroud.proxy.session.planning import OFF_LOOP_LENGTH, Planning, plan_key
from pgshroud.proxy.session.privacy import RESET_ALL, PrivacySettings, applied, resets_all, setting_change
from pgshroud.proxy.session.registry import (
    NAMING_FRAMES,
    PLACEHOLDER_SQL,
    Prepared,
    Registry,
    Statement,
    renamed_frame,
    sent_text,
    two_names,
)
from pgshroud.proxy.session.release import NO_LEDGER, Charged, Releases
from pgshroud.rewriter import plan_function_call
from pgshroud.rewriter.names import upstream_name, with_client_names
from pgshroud.rewriter.plans import (
    Column,
    Cursor,
    Local,
    Passthrough,
    Plan,
    Refuse,
    Release,
    Rewrite,
    SessionRead,
)
from pgshroud.rewriter.settings import check_parameter_status

if TYPE_CHECKING:
    from pgshroud.proxy.budget.answer_cache import AnswerKey
    from pgshroud.proxy.session.context import SessionContext

log = logging.getLogger("pgshroud.session")

_LENGTH = struct.Struct("!I").unpack_from
# A statement that always fails during analysis, after the statements
# before it have run: PostgreSQL then aborts exactly as for a real error.
SENTINEL_SQL = "SELECT 'pgshroud: statement refused'::pg_catalog.int4"
# The prepared statement that stands in upstream for a private answer
# repeated from the answer cache; closed and parsed again at each use.
CACHED_STATEMENT = "pgshroud_cached_answer"
# Frames that may be relayed before they are complete, to avoid buffering
# large rows and COPY data.
_STREAMABLE = frozenset(b"Dd")

Q, P, B, D, E, S, H, C, X, F = (ord(c) for c in "QPBDESHCXF")
PARAMETER_STATUS = ord("S")
NOTIFICATION = ord("A")
COPY_DATA = ord("d")
_PLAIN_EXTENDED = {B: r.RELAY_BIND, E: r.RELAY_EXECUTE, S: r.SYNC}
COPY_MESSAGES = frozenset(b"dcf")
TERMINATE = b"X\x00\x00\x00\x04"
SYNC_FRAME = b"S\x00\x00\x00\x04"
FLUSH_FRAME = b"H\x00\x00\x00\x04"
# Upstream messages that tell how a transaction ends.
_TRANSACTION_FRAMES = frozenset(b"CEZ")
IDLE = ord("I")
# PostgreSQL reports these when they change; each changes the text of some answers.
ANSWER_SETTINGS = frozenset({"TimeZone", "DateStyle", "IntervalStyle"})
# CLOSE ALL and DISCARD ALL close every cursor, held ones too.
_CLOSES_ALL = re.compile(r"\s*+(?:close|discard)\s++all\s*+(?:;\s*+)?\Z", re.IGNORECASE)


class Phase(enum.Enum):
    """Where the client's side of the protocol stands: what its next message means."""

    READY = "ready"  # each message is handled as it comes
    SKIPPING = "skipping"  # after a refusal in the extended protocol: messages are dropped until Sync
    TERMINATED = "terminated"  # the client sent Terminate
    CLOSED = "closed"  # pgshroud ended the session


# Module names for the phases, as the relay checks them for every frame.
_READY, _SKIPPING, _TERMINATED, _CLOSED = Phase.READY, Phase.SKIPPING, Phase.TERMINATED, Phase.CLOSED

Handler = Callable[["Conversation", int, bytes, int, int], "bytes | None"]


class Conversation:
    """A client's session: bytes and results in, effects out."""

    def __init__(self, user: str, role: Role | None, statuses: Mapping[str, str], shared: SessionContext) -> None:
        self.user = user
        self.shared = shared
        self._started_rewritten = role is not None and role.access != Access.RAW
        self._phase = Phase.READY
        self._reading = True  # the phase is READY or SKIPPING: client messages are read
        self._handlers = _DISPATCH[Phase.READY]
        self._unlisted = _UNLISTED[Phase.READY]
        self._out: list[Effect] = []
        # Statement and portal names go upstream translated (rewriter/names.py).
        self._registry = Registry(translated=self._started_rewritten)
        self._privacy = PrivacySettings()
        # Cursors declared for private queries, with their released answers.
        self._cursors = HeldCursors()
        self._releases = Releases(user, shared, self._cursors)
        # Waiting work (see _block): the generator, and what it waits for.
        self._work: Work[bytes] | None = None
        self._work_starts = False  # blocked, to start once the current input is handled
        self._then: Work[bytes] | None = None  # see _block
        self._asked: Request | None = None
        self._waiting: Outcome[Any] | None = None
        self._settled_waiter: Outcome[None] | None = None  # see _upstream_settled
        self._blocked = False  # work waits; client input waits for it
        self._finalizing = False  # a private answer is being built on a worker thread
        self._planning = Planning(user, role, shared, self._privacy)
        self._pending: deque[r.Unit] = deque()
        # PostgreSQL's transaction status as of its last ReadyForQuery.
        self._transaction_status = IDLE
        # The settings that change what a private answer says (a date's text, now()'s
        # zone), as PostgreSQL last reported them: part of the answer cache's key.
        self._answer_settings = {name: value for name, value in statuses.items() if name in ANSWER_SETTINGS}
        self._client_rest = b""  # the start of an incomplete client frame
        self._client_parts: list[bytes] = []  # more of it, joined once it is whole
        self._client_needed = 0  # bytes of that frame still missing
        self._client_streaming = 0  # bytes of a partly relayed client frame still to come
        self._upstream_rest = b""
        self._upstream_streaming = 0
        self._upstream_skipping = False  # after an upstream error: it drops messages until Sync
        self._draining = False
        self._max = shared.config.max_message_size
        # Where decisions are reported (proxy/ops/audit.py, proxy/ops/metrics.py).
        self._audit = shared.audit
        self._metrics = shared.metrics
        self._watched = self._audit is not None or self._metrics is not None

    # the driver's side

    def receive_client(self, data: bytes) -> list[Effect]:
        self._on_client_data(data)
        out, self._out = self._out, []
        return out

    def receive_upstream(self, data: bytes) -> list[Effect]:
        self._on_upstream_data(data)
        if self._waiting is not None:
            self._wake_work()
        out, self._out = self._out, []
        return out

    def receive_result(self, request: Request, value: object = None, error: BaseException | None = None
                       ) -> list[Effect]:
        """What became of a Request: its value, or the exception it raised."""
        if self._phase is _CLOSED:
            return []
        if isinstance(request, FinalizeOffLoop):
            self._finalized()
            self._wake_work()
        else:
            assert request is self._asked
            self._asked = None
            self._advance(value, error)
        return self._take()

    def client_lost(self) -> list[Effect]:
        """The client went away: end what runs upstream."""
        self._enter(Phase.CLOSED)
        if self._pending or self._blocked:
            self._emit(CancelUpstream())
        else:
            self._emit(SendUpstream(TERMINATE))
        self._emit(CloseSide(Side.UPSTREAM))
        return self._take()

    def upstream_lost(self) -> list[Effect]:
        self._close_with_error(sqlstate.CONNECTION_FAILURE, "the upstream PostgreSQL closed the connection")
        return self._take()

    @property
    def idle(self) -> bool:
        return not self._pending and not self._client_rest and not self._blocked

    def drain(self) -> list[Effect]:
        """Close at the next moment nothing is running."""
        self._draining = True
        self._drain_if_idle()
        return self._take()

    def _drain_if_idle(self) -> None:
        if self.idle:
            self._close_with_error(sqlstate.ADMIN_SHUTDOWN, "terminating connection because pgshroud is shutting down")

    def _enter(self, phase: Phase) -> None:
        self._phase = phase
        self._reading = phase is _READY or phase is _SKIPPING
        self._handlers = _DISPATCH[phase]
        self._unlisted = _UNLISTED[phase]

    def _emit(self, effect: Effect) -> None:
        self._out.append(effect)

    def _take(self) -> list[Effect]:
        out, self._out = self._out, []
        return out

    def _close_with_error(self, code: str, message: str, severity: str = "FATAL") -> None:
        if self._phase is _CLOSED:
            return
        self._enter(Phase.CLOSED)
        self._emit(SendClient(r.error_bytes(code, message, severity=severity)))
        self._emit(CloseSide(Side.CLIENT))
        self._emit(SendUpstream(TERMINATE))
        self._emit(CloseSide(Side.UPSTREAM))

    # client → upstream

    def _on_client_data(self, data: bytes) -> None:
        if self._phase is _CLOSED:
            return
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
            while n - pos >= 5 and not self._blocked and self._reading:
                kind = data[pos]
                length = _LENGTH(data, pos + 1)[0]
                if length < 4 or length > self._max:
                    raise ProtocolViolation(f"invalid length {length} for frontend message type {chr(kind)!r}")
                end = pos + 1 + length
                if end > n:
                    if kind == COPY_DATA and self._phase is not _SKIPPING:
                        if run < pos:
                            out.append(data[run:pos])
                        out.append(data[pos:])
                        self._client_streaming = end - n
                        pos = run = n
                    break
                registry = self._registry
                if kind in _PLAIN_EXTENDED and not (
                    self._phase is _SKIPPING or registry.statements or registry.portals
                    or registry.prepared_under or self._started_rewritten
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
        except ProtocolViolation as exc:
            self._protocol_violation(str(exc))
            return
        if run < pos:
            out.append(data if run == 0 and pos == n else data[run:pos])
        if pos < n:
            self._client_rest = data[pos:]
            if n - pos >= 5:
                self._client_needed = 1 + _LENGTH(data, pos + 1)[0] - (n - pos)
        if out:
            self._out.append(SendUpstream(b"".join(out)))
        if self._phase is _TERMINATED:
            self._emit(CloseSide(Side.UPSTREAM))
            self._emit(CloseSide(Side.CLIENT))
        if self._work_starts:
            self._work_starts = False
            self._advance(None)

    def _stream_client(self, data: bytes) -> bytes:
        k = self._client_streaming
        if len(data) <= k:
            self._client_streaming -= len(data)
            self._emit(SendUpstream(data))
            return b""
        self._client_streaming = 0
        self._emit(SendUpstream(data[:k]))
        return data[k:]

    def _client_frame(self, kind: int, data: bytes, pos: int, end: int) -> bytes | None:
        """Handle one complete client frame: None relays it unchanged,
        bytes (possibly empty) are sent in its place."""
        out = self._handlers.get(kind, self._unlisted)(self, kind, data, pos, end)
        if out is None and self._started_rewritten and kind in NAMING_FRAMES:
            return renamed_frame(kind, data, pos, end)
        return out

    # the handlers of _DISPATCH

    def _relay_frame(self, kind: int, data: bytes, pos: int, end: int) -> bytes | None:
        return None

    def _skip_frame(self, kind: int, data: bytes, pos: int, end: int) -> bytes | None:
        return b""

    def _unknown_frame(self, kind: int, data: bytes, pos: int, end: int) -> bytes | None:
        raise ProtocolViolation(f"invalid frontend message type {chr(kind)!r}")

    def _sync_after_skip(self, kind: int, data: bytes, pos: int, end: int) -> bytes | None:
        self._enter(Phase.READY)
        return self._sync_frame(kind, data, pos, end)

    def _sync_frame(self, kind: int, data: bytes, pos: int, end: int) -> bytes | None:
        self._upstream_skipping = False
        self._pending.append(r.SYNC)
        return None

    def _terminate_frame(self, kind: int, data: bytes, pos: int, end: int) -> bytes | None:
        self._enter(Phase.TERMINATED)
        return None

    @property
    def _named(self) -> bool:
        """Bind, Execute, Describe and Close only need decoding while some
        statement or portal has a plan of its own (Local or Release)."""
        return bool(self._registry) or self._started_rewritten

    def _bind_frame(self, kind: int, data: bytes, pos: int, end: int) -> bytes | None:
        if self._named:
            replans = self._bind_replans(data[pos + 5 : end]) if self._started_rewritten else None
            if replans is not None:
                self._block(self._planned_then(kind, data[pos:end], replans))
                return b""
            return self._on_bind(data[pos + 5 : end])
        self._expect_relay(r.RELAY_BIND)
        return None

    def _execute_frame(self, kind: int, data: bytes, pos: int, end: int) -> bytes | None:
        if self._named:
            return self._on_execute(Execute.decode(data[pos + 5 : end]))
        self._expect_relay(r.RELAY_EXECUTE)
        return None

    def _query_frame(self, kind: int, data: bytes, pos: int, end: int) -> bytes | None:
        sql = Query.decode(data[pos + 5 : end]).sql
        if self._planning.off_loop(end - pos):
            self._block(self._planned_then(kind, data[pos:end], sql))
            return b""
        return self._on_query(sql)

    def _parse_frame(self, kind: int, data: bytes, pos: int, end: int) -> bytes | None:
        parse = Parse.decode(data[pos + 5 : end])
        if self._planning.off_loop(end - pos):
            self._block(self._planned_then(kind, data[pos:end], parse.sql))
            return b""
        return self._on_parse(parse)

    def _describe_frame(self, kind: int, data: bytes, pos: int, end: int) -> bytes | None:
        if self._named:
            return self._on_describe(Describe.decode(data[pos + 5 : end]))
        self._expect_relay(r.RELAY_DESCRIBE)
        return None

    def _close_frame(self, kind: int, data: bytes, pos: int, end: int) -> bytes | None:
        upstream = self._registry.forget(data[pos + 5 : end]) if self._named else None
        self._expect_relay(r.RELAY_CLOSE)
        return None if upstream is None else Close(data[pos + 5 : pos + 6], upstream).encode()

    def _function_call_frame(self, kind: int, data: bytes, pos: int, end: int) -> bytes | None:
        return self._on_function_call(FunctionCall.decode(data[pos + 5 : end]))

    # what PostgreSQL will answer

    def _expect(self, ends: frozenset[int], *, extended: bool = True, action: r.Action | None = None) -> None:
        # After an upstream error PostgreSQL ignores everything up to Sync.
        if not self._upstream_skipping:
            self._pending.append(r.Unit(ends, extended=extended, action=action))
        elif action is not None:
            action.abandon()

    def _expect_relay(self, unit: r.Unit) -> None:
        if not self._upstream_skipping:
            self._pending.append(unit)

    # planning

    def _plan(self, sql: str, privacy: Mapping[str, str] | None = None) -> list[Plan]:
        plans = self._planning.plan(sql, privacy)
        if self._cursors and any(type(p) is Passthrough and _CLOSES_ALL.match(p.sql) for p in plans):
            self._cursors.clear()
        return [self._reachable(p) if type(p) is Rewrite and p.reaches is not None else p for p in plans]

    def _planned_then(self, kind: int, frame: bytes, sql: str) -> Work[bytes]:
        """A Query, Parse or Bind whose statement is planned on a worker
        thread (for a Query also again under each privacy setting it
        changes, for a Bind under the settings or catalog that changed),
        then handled as if planned in place: the bytes to send upstream."""
        planning = self._planning
        context = planning.current()
        started = perf_counter()
        plans: list[Plan] = yield PlanOffLoop(sql, context)
        planning.preplanned = {plan_key(sql, context): plans}
        if kind == Q:
            privacy = context.privacy
            for plan in plans[:-1]:
                change = setting_change(plan)
                changed = privacy if change is None else applied(privacy, change)
                if changed != privacy:
                    privacy = changed
                    again = replace(context, privacy=privacy)
                    planning.preplanned[plan_key(sql, again)] = yield PlanOffLoop(sql, again)
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
            planning.preplanned = {}
        then, self._then = self._then, None
        if then is not None:
            return (yield from then)
        if out is None:
            out = renamed_frame(kind, frame, 0, len(frame)) if kind in (P, B) else None
        return frame if out is None else out

    def _bind_replans(self, payload: bytes) -> str | None:
        """The statement text a Bind will plan again (its privacy settings or
        the catalog changed since it was prepared), when long enough to be
        planned on a worker thread."""
        _, statement = two_names(payload)
        prepared = self._registry.prepared_under.get(statement)
        statements = self._registry.statements
        info = statements.get(statement) if statements else None
        sql = None
        if prepared is not None and prepared.catalog is not self.shared.catalog():
            sql = prepared.sql
        elif info is not None and info.sql is not None and info.privacy != self._privacy.planned:
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
            return held_cursor_plan(plan, held.name, held.answer.columns)
        upstream = self._registry.private_upstream(kind, name)
        if upstream is None:
            return plan
        if plan.sql[:10].lower().startswith(("deallocate", "close")):
            return Rewrite(plan.sql.replace(f'"{upstream_name(name)}"', f'"{upstream}"'))
        what = "prepared statement" if kind == "S" else "portal"
        return Refuse(sqlstate.INSUFFICIENT_PRIVILEGE, f'{what} "{name}" holds a private query, which SQL cannot run',
                      hint="Run it through the protocol that prepared it (Bind and Execute).")

    def _decided(self, source: str, sql: str | None, plans: Sequence[Plan], charge_refusal: Refuse | None = None,
                 refused: Release | None = None) -> None:
        """Report the decisions about one message's statements (`charge_refusal`: the ledger's
        refusal standing in `plans` for the release `refused`). The audit log only queues them."""
        if self._metrics is not None:
            self._metrics.decided(source, plans, charge_refusal)
        if self._audit is not None:
            self._audit.decided(self.user, self._role_name, source, sql, plans, charge_refusal, refused)

    @property
    def _role_name(self) -> str | None:
        return self._planning.role_name

    # simple Query

    def _on_query(self, sql: str) -> bytes | None:
        plans = self._plan(sql)
        passes = (len(plans) == 1 and type(plans[0]) is Passthrough) or all(type(p) is Passthrough for p in plans)
        privacy = self._privacy
        if passes and (not (privacy.planned or privacy.current) or not any(resets_all(p) for p in plans)):
            # Every statement passes as written: forward the client's bytes.
            self._expect_relay(r.RELAY_QUERY)
            if self._watched:
                self._decided("query", sql, plans)
            return None
        if self._upstream_skipping:
            return None  # PostgreSQL ignores it until Sync: nothing to plan or charge
        if len(plans) > 1:
            plans = read_declared_cursors(self._plan_after_settings(sql, plans))
        if any(isinstance(p, Release) or (isinstance(p, Local) and p.reads is not None) for p in plans):
            self._block(self._ledger_then_query(plans, sql, self._privacy.planned))
            return b""
        if self._watched:
            self._decided("query", sql, _until_refusal(plans))
        return self._query_from_plans(plans)

    def _plan_after_settings(self, sql: str, plans: list[Plan]) -> list[Plan]:
        """The statements of a Query after one that changes the privacy
        settings are planned again under the changed settings."""
        privacy = self._privacy.planned
        for i in range(len(plans) - 1):
            change = setting_change(plans[i])
            if change is None:
                continue
            changed = applied(privacy, change)
            if changed == privacy:
                continue
            privacy = changed
            again = self._plan(sql, privacy)
            if len(again) > i + 1:
                plans = plans[: i + 1] + again[i + 1 :]
        return plans

    def _query_from_plans(self, plans: list[Plan], charged: Mapping[int, Charged] | None = None) -> bytes:
        """The Query sent upstream for these plans, and the unit of its answers
        (`charged`: per position, what a charged Release's answer needs)."""
        texts: list[str] = []
        actions: list[r.Action | None] = []
        for index, plan in enumerate(plans):
            if isinstance(plan, (Passthrough, Rewrite)):
                texts.append(plan.sql)
                resets = self._privacy.any and resets_all(plan)
                actions.append(self._privacy.settle(None, RESET_ALL) if resets else None)
            elif isinstance(plan, CursorRead):
                texts.append(PLACEHOLDER_SQL)
                actions.append(cursor_action(self._cursors, plan))
            elif isinstance(plan, Local):
                texts.append(PLACEHOLDER_SQL)
                action: r.Action = r.local_statement_action(plan.answer)
                actions.append(action if plan.setting is None else self._privacy.settle(action, plan.setting))
            elif isinstance(plan, Release):
                texts.append(plan.sql)
                paid = charged.get(index) if charged else None
                actions.append(self._releases.transform(plan, describe=plan.cursor is None, charged=paid))
            else:  # Refuse: nothing after it runs, as after a real error
                assert isinstance(plan, Refuse)
                texts.append(SENTINEL_SQL)
                actions.append(r.RefuseAction(r.error_bytes(plan.sqlstate, plan.message, plan.hint)))
                break
        self._expect(r.ENDS_READY, extended=False, action=r.Statements(actions))
        return Query(";\n".join(texts)).encode()

    def _ledger_then_query(self, plans: list[Plan], sql: str, privacy: Mapping[str, str]) -> Work[bytes]:
        """A Query with statements that need the ledger first, in order: each
        Release is charged (or repeated from the answer cache, becoming a
        Local answer), each Local that reads the ledger gets its rows. Nothing
        after a refusal runs."""
        decided: list[Plan] = []
        charged: dict[int, Charged] = {}
        refusal = refused = None
        releases = self._releases
        if self._in_extended_batch():
            # Whether the batch before this Query failed decides whether
            # PostgreSQL runs the Query at all: know it before any charge.
            yield from self._upstream_settled()
            if self._upstream_skipping:
                return b""  # PostgreSQL ignores the Query until Sync: nothing is sent, nothing charged
        for index, plan in enumerate(plans):
            if isinstance(plan, Refuse):
                decided.append(plan)  # nothing after it runs, so nothing after it is charged
                break
            if isinstance(plan, Release):
                # As a prepared statement's key: no parameters, every column in text.
                statement = (sql, index, (), (), (), (0,) * len(plan.spec.columns))
                key = self._answer_key(statement, plan, privacy)
                cached = yield from releases.claim(key)
                if isinstance(cached, Refuse):
                    decided.append(cached)
                    break
                if isinstance(cached, CachedAnswer):
                    if outside_transaction(plan, self._transaction_status, alone=len(plans) == 1):
                        decided.append(CURSOR_OUTSIDE_TRANSACTION)
                        break
                    decided.append((yield from releases.repeat(cached, plan.cursor)))
                    continue
                unfit = yield from self._unfit_before_charge(plan, alone=len(plans) == 1)
                if unfit is not None:
                    releases.abandon(key)
                    decided.append(unfit)
                    break
                refusal, standings = yield from releases.charge(plan, key, self._role_name)
                if refusal is not None:
                    releases.abandon(key)
                    decided.append(refusal)
                    refused = plan
                    break
                charged[index] = Charged(key, standings, cached.overlapping if cached else None)
            elif isinstance(plan, Local) and plan.reads is not None:
                read = yield from self._read_session(plan)
                if isinstance(read, Refuse):
                    decided.append(read)
                    break
                plan = read
            decided.append(plan)
        if self._watched:
            self._decided("query", sql, _until_refusal(decided), refusal, refused)
        return self._query_from_plans(decided, charged)

    def _unfit_before_charge(self, plan: Release, *, alone: bool) -> Work[Refuse | None]:
        """Why a Release of a simple Query cannot run, found before it is
        charged: PostgreSQL refuses to parse or analyse the SQL pgshroud
        built (relayed, as nothing ran), or it declares a cursor without
        HOLD outside a transaction block (`alone`: the Query's only
        statement, so no implicit block holds it either)."""
        error = yield from self._upstream_check(plan.sql)
        if error is not None:
            upstream = ErrorResponse.decode(error[5:])
            return Refuse(upstream.sqlstate or sqlstate.INTERNAL_ERROR,
                          f"PostgreSQL refused the query pgshroud built for this private answer: {upstream.message}",
                          hint="Nothing was charged and nothing ran. pgshroud should have refused this statement "
                          "itself: please report it, and meanwhile write the query more simply.")
        if outside_transaction(plan, self._transaction_status, alone=alone):
            return CURSOR_OUTSIDE_TRANSACTION
        return None

    def _upstream_check(self, sql: str) -> Work[bytes | None]:
        """PostgreSQL's Parse and Describe of `sql` as the unnamed statement
        (which a simple Query replaces anyway): its ErrorResponse frame, or
        None once it accepted it. Its Sync would end a client's unfinished
        extended-protocol batch, so then the check is left to the run."""
        if self._in_extended_batch() or self._upstream_skipping:
            return None
        outcome: Outcome[bytes | None] = Outcome()
        self._pending.append(r.Unit(r.ENDS_READY, extended=False, action=r.UpstreamCheck(outcome)))
        yield SendUpstream(Parse("", sql, ()).encode() + Describe(b"S", "").encode() + SYNC_FRAME)
        error: bytes | None = yield outcome
        return error

    def _in_extended_batch(self) -> bool:
        """Whether an extended-protocol message sent upstream still waits for
        its Sync: until then an error in it makes PostgreSQL ignore what
        follows, simple Queries included."""
        open_batch = False
        for unit in self._pending:
            if unit.is_sync:
                open_batch = False
            elif unit.extended:
                open_batch = True
        return open_batch

    # the ledger's standing and the session's own answers

    def _read_session(self, plan: Local) -> Work[Local | Refuse]:
        """A Local plan whose answer reads the ledger or the session, answered."""
        if plan.reads is SessionRead.LAST_ANSWER:
            return Local(replace(plan.answer, rows=((self._releases.last_answer,),)))
        assert plan.reads is SessionRead.BUDGET
        standings = yield from self._releases.standing()
        if isinstance(standings, Refuse):
            if standings is NO_LEDGER:
                return Refuse(sqlstate.OBJECT_NOT_IN_PREREQUISITE_STATE,
                              "SHOW pgshroud.budget needs a privacy budget ledger, and none is configured")
            return standings
        policy = self.shared.policy
        period = policy.budgets.period if isinstance(policy, Policy) else None
        value = budget_notes.budget_value(self.user, standings, period)
        return Local(replace(plan.answer, rows=((value,),)), plan.setting)

    def _answer_key(self, statement: object, plan: Release, privacy: Mapping[str, str]) -> AnswerKey | None:
        return self._releases.key(statement, plan, privacy, self._planning.context, self._role_name,
                                  self._answer_settings)

    # extended protocol

    def _on_parse(self, parse: Parse) -> bytes | None:
        plans = self._plan(parse.sql)
        plan = plans[0] if len(plans) == 1 else Refuse(sqlstate.SYNTAX_ERROR,
                                                         "cannot insert multiple commands into a prepared statement")
        registry = self._registry
        context = self._planning.context
        if context.policy is not None and not context.role_sees_raw:
            registry.prepared_under[parse.name] = Prepared(context.policy, context.catalog, parse.sql,
                                                           sent_text(plan))
        if self._watched:
            self._decided("parse", parse.sql, (plan,))
        if type(plan) is Passthrough and plan.sql == parse.sql:
            if self._privacy.any and resets_all(plan):
                registry.statements[parse.name] = Statement(plan)
            elif registry.statements:
                registry.statements.pop(parse.name, None)
            self._expect_relay(r.RELAY_PARSE)
            return None
        if isinstance(plan, Refuse):
            registry.statements.pop(parse.name, None)
            self._expect(r.ENDS_PARSE, action=r.RefuseAction(r.error_bytes(plan.sqlstate, plan.message, plan.hint)))
            self._enter(Phase.SKIPPING)
            return Parse(registry.up(parse.name), SENTINEL_SQL, ()).encode()
        self._expect(r.ENDS_PARSE)
        name = registry.up(parse.name)
        if isinstance(plan, (Passthrough, Rewrite)):
            registry.statements.pop(parse.name, None)
            return Parse(name, plan.sql, parse.param_types).encode()
        if isinstance(plan, Local):
            registry.statements[parse.name] = Statement(plan, sql=parse.sql, privacy=self._privacy.planned,
                                                        param_types=parse.param_types)
            return Parse(name, PLACEHOLDER_SQL, ()).encode()
        assert isinstance(plan, Release)
        upstream = registry.fresh_name("statement")
        info = registry.statements[parse.name] = Statement(plan, sql=parse.sql, privacy=self._privacy.planned,
                                                           param_types=parse.param_types, upstream=upstream)
        # A private statement's parameters go upstream untyped, so PostgreSQL
        # converts each value once, at Bind, to the type the query gives it: a
        # value declared text and cast in the query would be converted row by
        # row, and fail only where a row reaches the cast. The types it infers
        # are read back, to check binary values declared as another type.
        if not any(parse.param_types):
            return Parse(upstream, plan.sql, ()).encode()
        inferred = info.inferred = Outcome()
        self._expect(r.ENDS_DESCRIBE, action=r.ParameterTypes(inferred))
        # Flush: PostgreSQL sends the types now, not at the client's Sync, which a Bind may wait for.
        return Parse(upstream, plan.sql, ()).encode() + Describe(b"S", upstream).encode() + FLUSH_FRAME

    def _on_bind(self, payload: bytes) -> bytes | None:
        portal, statement = two_names(payload)
        registry = self._registry
        prepared = registry.prepared_under.get(statement)
        if prepared is not None and prepared.policy is not self.shared.policy:
            return self._refuse_extended(
                r.ENDS_BIND, sqlstate.FEATURE_NOT_SUPPORTED,
                f'prepared statement "{statement}" was planned under a previous policy', hint="Prepare it again.",
            )
        if prepared is not None and prepared.catalog is not self.shared.catalog():
            stale = self._recheck(statement, prepared)
            if stale is not None:
                return self._refuse_extended(r.ENDS_BIND, stale.sqlstate, stale.message, stale.hint)
        info = registry.statements.get(statement) if registry.statements else None
        if info is None or type(info.plan) is Passthrough:
            if info is not None:
                registry.portals[portal] = Statement(info.plan)
            elif registry.portals:
                registry.portals.pop(portal, None)
            self._expect(r.ENDS_BIND)
            return None
        if info.sql is not None and info.privacy != self._privacy.planned:
            replanned = self._replan(statement, info)
            if isinstance(replanned, Refuse):
                return self._refuse_extended(r.ENDS_BIND, replanned.sqlstate, replanned.message, replanned.hint)
            info = replanned
        bind = Bind.decode(payload)
        if info.inferred is not None and declared_binary(bind, info.param_types):
            if not info.inferred.done():
                self._block(self._bind_when_typed(payload, info.inferred))
                return b""
            try:
                bind = as_inferred(bind, info.param_types, info.inferred)
            except NoTextForm as exc:
                return self._refuse_extended(
                    r.ENDS_BIND, sqlstate.DATATYPE_MISMATCH, f"pgshroud cannot read {exc}, which the private query "
                    "reads as another type", hint="Send the value in text format, or leave its type unspecified "
                    "(PostgreSQL then infers it from the query).")
        if isinstance(info.plan, Release):
            negative = negative_bound(bind, info.plan, info.param_types)
            if negative is not None:
                return self._refuse_extended(r.ENDS_BIND, *negative)
        plan = self._cursors.as_of_now(info.plan)
        columns = _columns(plan)
        try:
            formats = result_formats(bind.result_formats, len(columns))
            check_formats(columns, formats, self._answer_settings.get("DateStyle", "ISO"))
        except UnsupportedFormat as exc:
            return self._refuse_extended(r.ENDS_BIND, sqlstate.FEATURE_NOT_SUPPORTED, str(exc))
        key = None
        if isinstance(info.plan, Release) and not self._upstream_skipping:
            # Every value and format of the Bind is in the key, formats as they apply to each value and
            # column (a Query of the same text is the same key, as it means the same).
            param_formats = tuple(bind.param_format(i) for i in range(len(bind.params)))
            statement_key = (info.sql, 0, info.param_types, param_formats, bind.params, formats)
            key = self._answer_key(statement_key, info.plan, info.privacy)
            cached = self._releases.cached(key)
            if cached is not None:
                self._block(self._bind_repeat(bind, cached, formats, info.sql, info.plan.cursor))
                return b""
        upstream = registry.fresh_name("portal") if info.upstream is not None else None
        registry.portals[portal] = Statement(plan, formats, sql=info.sql, cache_key=key, upstream=upstream)
        self._expect(r.ENDS_BIND)
        # PostgreSQL's rows for pgshroud's own answers are read as text.
        return Bind(upstream or registry.up(bind.portal), info.upstream or registry.up(bind.statement),
                    bind.param_formats, bind.params, ()).encode()

    def _bind_when_typed(self, payload: bytes, inferred: Outcome[tuple[int, ...]]) -> Work[bytes]:
        """A Bind with binary values of declared types, once PostgreSQL has
        said which types the private statement reads them as."""
        try:
            yield inferred
        except OutcomeCancelled:
            pass  # its Parse failed: PostgreSQL skips the Bind too
        out = self._on_bind(payload)
        then, self._then = self._then, None
        if then is not None:
            return (yield from then)
        if out is not None:
            return out
        frame = b"B" + struct.pack("!I", len(payload) + 4) + payload
        return renamed_frame(B, frame, 0, len(frame)) or frame

    def _recheck(self, name: str, prepared: Prepared) -> Refuse | None:
        """A statement prepared before the catalog snapshot changed (a schema
        change): planned again, it must send PostgreSQL the same text, or
        what it now calls may be something the policy refuses."""
        plans = self._plan(prepared.sql)
        plan = plans[0] if len(plans) == 1 else None
        if isinstance(plan, Refuse):
            return plan
        if plan is None or sent_text(plan) != prepared.sent:
            return Refuse(sqlstate.FEATURE_NOT_SUPPORTED,
                          f'prepared statement "{name}" was planned before a change of the database schema',
                          hint="Prepare it again.")
        self._registry.prepared_under[name] = prepared._replace(catalog=self._planning.context.catalog)
        return None

    def _bind_repeat(self, bind: Bind, cached: CachedAnswer, formats: tuple[int, ...], sql: str | None,
                     cursor: Cursor | None) -> Work[bytes]:
        """A Bind of a private statement whose answer the cache holds: the
        portal gets that answer, as a Local one, and is bound upstream to a
        placeholder statement, so that nothing runs the aggregate again while
        PostgreSQL still decides whether the Bind may run. Its CloseComplete
        and ParseComplete are not the client's to see; an error is, and then
        both sides skip to Sync."""
        local = yield from self._releases.repeat(cached, cursor)
        if self._watched:
            self._decided("bind", sql, (local,))
        self._registry.portals[bind.portal] = Statement(local, formats, sql=sql)
        self._expect(r.ENDS_CLOSE, action=r.Replace(b"", at=r.ENDS_CLOSE))
        self._expect(r.ENDS_PARSE, action=r.Replace(b"", at=r.ENDS_PARSE))
        self._expect(r.ENDS_BIND)
        return b"".join((
            Close(b"S", CACHED_STATEMENT).encode(),
            Parse(CACHED_STATEMENT, PLACEHOLDER_SQL, ()).encode(),
            Bind(self._registry.up(bind.portal), CACHED_STATEMENT, (), (), ()).encode(),
        ))

    def _replan(self, name: str, info: Statement) -> Statement | Refuse:
        """A prepared statement whose privacy settings changed since it was
        planned: its plan under the current ones, which must still fit the
        statement prepared upstream."""
        assert info.sql is not None
        plans = self._plan(info.sql)
        plan = plans[0] if len(plans) == 1 else None
        if isinstance(plan, Refuse):
            return plan
        old = info.plan
        if isinstance(plan, Local) and isinstance(old, Local):
            fitting: Local | Release = plan
        elif isinstance(plan, Release) and isinstance(old, Release) and plan.sql == old.sql:
            fitting = plan
        else:
            return Refuse(sqlstate.FEATURE_NOT_SUPPORTED,
                          f'prepared statement "{name}" was planned under other pgshroud settings',
                          hint="Prepare it again.")
        info = self._registry.statements[name] = Statement(fitting, sql=info.sql, privacy=self._privacy.planned,
                                                           param_types=info.param_types, upstream=info.upstream)
        return info

    def _on_describe(self, describe: Describe) -> bytes | None:
        registry = self._registry
        if describe.kind == b"P" and self._cursors:
            held = self._cursors.get(describe.name)
            if held is not None and describe.name not in registry.portals:
                return self._describe_held(held)
        table = registry.statements if describe.kind == b"S" else registry.portals
        info = table.get(describe.name) if table else None
        if info is None or type(info.plan) is Passthrough:
            self._expect(r.ENDS_DESCRIBE)
            return None
        columns = _columns(self._cursors.as_of_now(info.plan))
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
        portals = self._registry.portals
        info = portals.get(execute.portal) if portals else None
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
            self._expect(r.ENDS_EXECUTE, action=self._privacy.settle(None, RESET_ALL))
            return None
        if isinstance(plan, CursorRead):
            self._expect(r.ENDS_EXECUTE, action=cursor_action(self._cursors, plan, info, execute.max_rows))
            return None
        if isinstance(plan, Local):
            if plan.reads is not None:
                self._block(self._ledger_then_execute(plan, execute, info))
                return b""
            answer = info.answer = r.PortalAnswer()
            answer.fill(plan.answer, info.formats)
            action: r.Action = r.Fetch(answer, execute.max_rows)
            self._expect(r.ENDS_EXECUTE,
                         action=action if plan.setting is None else self._privacy.settle(action, plan.setting))
            return None
        assert isinstance(plan, Release)
        self._block(self._charge_then_execute(plan, execute, info))
        return b""

    def _ledger_then_execute(self, plan: Local, execute: Execute, info: Statement) -> Work[bytes]:
        """An Execute of a Local statement whose answer reads the ledger."""
        filled = yield from self._read_session(plan)
        if isinstance(filled, Refuse):
            if self._watched:
                self._decided("execute", info.sql, (filled,))
            return self._refuse_extended(r.ENDS_EXECUTE, filled.sqlstate, filled.message, filled.hint)
        answer = info.answer = r.PortalAnswer()
        answer.fill(filled.answer, info.formats)
        self._expect(r.ENDS_EXECUTE, action=r.Fetch(answer, execute.max_rows))
        return Execute(self._registry.up(execute.portal), execute.max_rows).encode()

    def _charge_then_execute(self, plan: Release, execute: Execute, info: Statement) -> Work[bytes]:
        yield from self._upstream_settled()
        if self._upstream_skipping:
            return b""  # its Bind (or a message before it) failed: PostgreSQL skips it, and nothing is charged
        if outside_transaction(plan, self._transaction_status, alone=True):
            if self._watched:
                self._decided("execute", info.sql, (CURSOR_OUTSIDE_TRANSACTION,))
            refusal = CURSOR_OUTSIDE_TRANSACTION
            return self._refuse_extended(r.ENDS_EXECUTE, refusal.sqlstate, refusal.message, refusal.hint)
        releases = self._releases
        found = (yield from releases.claim(info.cache_key)) if plan.cursor is None else None
        if isinstance(found, Refuse):
            return self._refuse_extended(r.ENDS_EXECUTE, found.sqlstate, found.message, found.hint)
        upstream = info.upstream or self._registry.up(execute.portal)
        if isinstance(found, CachedAnswer):
            # Released for another session while this one waited: that answer. The
            # Execute still goes upstream, to keep PostgreSQL's answers in order,
            # but nothing of what it returns reaches the client (Fetch).
            local = yield from releases.repeat(found)
            if self._watched:
                self._decided("execute", info.sql, (local,))
            answer = info.answer = r.PortalAnswer()
            answer.fill(local.answer, info.formats)
            self._expect(r.ENDS_EXECUTE, action=r.Fetch(answer, execute.max_rows))
            return Execute(upstream, 0).encode()
        charge_refusal, standings = yield from releases.charge(plan, info.cache_key, self._role_name)
        if self._watched:
            self._decided("execute", info.sql, (plan if charge_refusal is None else charge_refusal,),
                          charge_refusal, plan)
        if charge_refusal is not None:
            releases.abandon(info.cache_key)
            return self._refuse_extended(r.ENDS_EXECUTE, charge_refusal.sqlstate, charge_refusal.message,
                                         charge_refusal.hint)
        answer = info.answer = r.PortalAnswer()
        overlapping = found.overlapping if isinstance(found, Claim) else None
        self._expect(r.ENDS_EXECUTE, action=releases.transform(
            plan, describe=False, formats=info.formats, portal=answer, max_rows=execute.max_rows,
            charged=Charged(info.cache_key, standings, overlapping)))
        # A release runs once, whole: fetching it from PostgreSQL in pieces
        # would run the aggregate, and its noise, more than once. Later
        # Executes of the portal take the next rows of its answer. Flush: the
        # answer is released (and its claim ended) without waiting for a Sync
        # the client may hold back while other sessions wait for the answer.
        return Execute(upstream, 0).encode() + FLUSH_FRAME

    def _upstream_settled(self) -> Work[None]:
        """Wait until PostgreSQL has answered every message sent so far (a
        Flush makes it answer now): whether a private Execute's Bind failed,
        say on a value its type cannot read, is known before the charge."""
        if not self._pending:
            return
        waiter = self._settled_waiter = Outcome()
        yield SendUpstream(FLUSH_FRAME)
        yield waiter

    def _refuse_extended(self, ends: frozenset[int], code: str, message: str, hint: str | None = None) -> bytes:
        """Refuse inside the extended protocol: both sides skip to Sync."""
        if self._watched and ends is r.ENDS_BIND:
            self._decided("bind", None, (Refuse(code, message, hint),))
        self._expect(ends, action=r.RefuseAction(r.error_bytes(code, message, hint)))
        self._enter(Phase.SKIPPING)
        return Parse("", SENTINEL_SQL, ()).encode()

    def _on_function_call(self, call: FunctionCall) -> bytes | None:
        plan = plan_function_call(call.function_oid, self._planning.current())
        if self._watched:
            self._decided("function_call", None, (plan,))
        if isinstance(plan, Refuse):
            action = r.Statements([r.RefuseAction(r.error_bytes(plan.sqlstate, plan.message, plan.hint))])
            self._expect(r.ENDS_READY, extended=False, action=action)
            return Query(SENTINEL_SQL).encode()
        self._expect_relay(r.RELAY_QUERY)
        return None

    # waiting work

    def _block(self, work: Work[bytes]) -> None:
        """Hold client input until `work` has sent what it returns upstream;
        it starts once the frames before it have gone out."""
        if self._blocked:
            # Already waiting (a statement planned on a worker thread that
            # now needs the ledger): the waiting work runs this work next.
            self._then = work
            return
        self._blocked = True
        self._emit(PauseReading(Side.CLIENT, "charging"))
        self._work = work
        self._work_starts = True

    def _advance(self, value: object = None, error: BaseException | None = None) -> None:
        """Run the waiting work until it waits again or ends."""
        work = self._work
        assert work is not None
        while True:
            try:
                step = work.send(value) if error is None else work.throw(error)
            except StopIteration as done:
                self._unblock(done.value)
                return
            except OutcomeCancelled:
                # What it waited for will never come (PostgreSQL dropped it
                # with a failed batch); nothing of it is sent, and the
                # client's input is read again.
                self._unblock(b"")
                return
            except Exception as exc:  # noqa: BLE001 - whatever failed, nothing of the answer is released
                self._work, self._blocked = None, False
                log.error("releasing a private answer failed: %s", type(exc).__name__)
                self._close_with_error(sqlstate.INTERNAL_ERROR, "pgshroud failed while releasing a private answer")
                return
            value, error = None, None
            if isinstance(step, Outcome):
                if not step.done():
                    self._waiting = step
                    return
                try:
                    value = step.result()
                except OutcomeCancelled as exc:
                    error = exc
            elif isinstance(step, REQUESTS):
                self._asked = step
                self._emit(step)
                return
            else:
                self._emit(step)

    def _wake_work(self) -> None:
        """Resume work whose Outcome PostgreSQL's answers have just set."""
        waiting = self._waiting
        if waiting is not None and waiting.done() and self._phase is not _CLOSED:
            self._waiting = None
            try:
                value = waiting.result()
            except OutcomeCancelled as exc:
                self._advance(None, exc)
                return
            self._advance(value)

    def _unblock(self, sent: bytes) -> None:
        self._work, self._blocked = None, False
        if self._phase is _CLOSED:
            return
        if sent:
            self._emit(SendUpstream(sent))
        self._emit(ResumeReading(Side.CLIENT, "charging"))
        self._on_client_data(b"")

    def _protocol_violation(self, reason: str) -> None:
        log.warning("closing a client that broke the protocol: %s", reason)
        self._close_with_error(sqlstate.PROTOCOL_VIOLATION, reason)

    # upstream → client

    def _on_upstream_data(self, data: bytes) -> None:
        if self._phase is _CLOSED:
            return
        if self._finalizing:
            self._upstream_rest += data
            return
        if self._upstream_streaming:
            k = self._upstream_streaming
            if len(data) <= k:
                self._upstream_streaming -= len(data)
                self._emit(SendClient(data))
                return
            self._upstream_streaming = 0
            self._emit(SendClient(data[:k]))
            data = data[k:]
        if self._upstream_rest:
            data = self._upstream_rest + data
            self._upstream_rest = b""
        out: list[bytes] = []
        pending = self._pending
        n = len(data)
        pos = run = 0
        watching = self._privacy.watching
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
            frame = data[pos:end] if action is not None else b""
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
                        self._emit(SendClient(b"".join(out)))
                    self._finalize_off_loop(deferred.transform)
                    return
                except Exception as exc:  # noqa: BLE001 - e.g. a release's finalize: nothing of it may reach the client
                    self._answer_failed(out, exc)
                    return
                run = end
                watching = self._privacy.watching
            if watching and kind in _TRANSACTION_FRAMES:
                self._privacy.watch_transaction(kind, data, pos)
                watching = self._privacy.watching
            if kind == r.COMMAND_COMPLETE and data.startswith(b"CLOSE CURSOR ALL", pos + 5):
                self._registry.portals.clear()  # SQL CLOSE ALL closed every portal too
            if kind == r.READY:
                self._transaction_status = data[pos + 5]
                if data[pos + 5] == IDLE:
                    # PostgreSQL drops every portal when a transaction ends;
                    # an Execute of one then fails there, before any charge.
                    self._registry.portals.clear()
                    if self._cursors:
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
            self._out.append(SendClient(b"".join(out)))
        if self._draining:
            self._drain_if_idle()

    def _finalize_off_loop(self, transform: r.Transform) -> None:
        """Build a large private answer on a worker thread (its work grows
        with the groups PostgreSQL returns), reading nothing more from
        upstream meanwhile; then go on where the answer stopped."""
        self._finalizing = True
        self._emit(PauseReading(Side.UPSTREAM, "finalizing"))
        self._emit(FinalizeOffLoop(transform))

    def _finalized(self) -> None:
        self._finalizing = False
        self._emit(ResumeReading(Side.UPSTREAM, "finalizing"))
        self._on_upstream_data(b"")

    def _answer_failed(self, out: list[bytes], exc: Exception) -> None:
        """An answer pgshroud builds failed half-way: the client has seen
        part of the protocol exchange, so the connection ends. The log names
        the exception's type only: its text could quote row values."""
        log.error("building an answer failed: %s", type(exc).__name__)
        if out:
            self._emit(SendClient(b"".join(out)))
        self._close_with_error(sqlstate.INTERNAL_ERROR,
                               "pgshroud failed while building an answer, so it closed the connection")

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
        self._close_with_error(sqlstate.INSUFFICIENT_PRIVILEGE, f"pgshroud closed the session: {problem}")
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


# What each client message means in each phase of the protocol, and what a
# message type the phase does not list means there.
_DISPATCH: dict[Phase, dict[int, Handler]] = {
    Phase.READY: {
        Q: Conversation._query_frame,
        P: Conversation._parse_frame,
        B: Conversation._bind_frame,
        D: Conversation._describe_frame,
        E: Conversation._execute_frame,
        S: Conversation._sync_frame,
        H: Conversation._relay_frame,  # Flush
        C: Conversation._close_frame,
        F: Conversation._function_call_frame,
        X: Conversation._terminate_frame,
        **{kind: Conversation._relay_frame for kind in COPY_MESSAGES},
    },
    # After a refusal PostgreSQL would skip every message until Sync; the
    # messages that would have run are not sent upstream at all.
    Phase.SKIPPING: {S: Conversation._sync_after_skip},
    Phase.TERMINATED: {},
    Phase.CLOSED: {},
}
_UNLISTED: dict[Phase, Handler] = {
    Phase.READY: Conversation._unknown_frame,
    Phase.SKIPPING: Conversation._skip_frame,
    Phase.TERMINATED: Conversation._skip_frame,
    Phase.CLOSED: Conversation._skip_frame,
}


def _columns(plan: Local | Release | Passthrough) -> tuple[Column, ...]:
    if isinstance(plan, Local):
        return plan.answer.columns
    if isinstance(plan, Release):
        return () if plan.cursor is not None else plan.spec.columns  # DECLARE returns no row
    return ()


def _until_refusal(plans: list[Plan]) -> list[Plan]:
    """The statements of a Query that are sent: none after the first refusal."""
    for index, plan in enumerate(plans):
        if isinstance(plan, Refuse):
            return plans[: index + 1]
    return plans


def _error_with_client_names(frame: bytes) -> bytes:
    """An upstream error that quotes a translated statement, portal or
    cursor name, with the name as the client gave it."""
    error = ErrorResponse.decode(frame[5:])
    return ErrorResponse(tuple((code, with_client_names(value)) for code, value in error.fields)).encode()
