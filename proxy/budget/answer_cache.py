"""Released private answers, kept for a while so that a repeat costs nothing.

A private answer, once released and paid for, may be sent again at no
privacy cost: anything computed from a release alone is post-processing.
Repeating the query while the answer is kept therefore returns the very
answer released before (same noise, same rows), so averaging repeats learns
nothing, and charges nothing. How long: the policy's `answers.reuse_for`
(a duration, or `budget_period`: as long as the answer's charge counts in
its budget), or else `--answer-cache-seconds`; each entry keeps the
lifetime of the policy it was released under.

What must match for a repeat to be served (the key):
- who may have it: the user, unless the user's role shares answers
  (`share_answers: true`), when it is the role. A role that does not share
  has users with budgets of their own, and serving one user's paid answer to
  another would let that other user learn it without paying from their
  budget. A role that shares is charged once, on the role's own budget, for
  a release that all its users may then be given (proxy/budget/ledger.py): the
  same released answer given to more people costs no more privacy, and the
  role's budget bounds what its users learn together. A statement whose
  meaning depends on who asks (current_user and kin, current_setting) is
  still kept per user;
- the role's name and the policy object (a reload makes a new one) and the
  catalog snapshot the statement was planned under, compared by identity;
- the session's pgshroud settings (epsilon, delta), the release's cost and
  the session settings the caller passes as changing what an answer says
  (TimeZone, say);
- the statement exactly as the client sent it: every literal (a normaliser
  that stripped them would let `patient_id = 5` and `= 6` share an answer);
  for a prepared statement also its parameter types, every Bind value and
  the format code that applies to it, and the format code of each result
  column; for a simple Query, the whole text and the statement's position
  in it. A simple Query of one statement is keyed as the same text prepared
  without parameters with text results (psycopg, for one, switches a
  repeated query to a prepared statement), which means the same.

One release per key at a time: `claim` either returns the kept answer or
makes its caller the one who releases it, until `put` (or `abandon`, or the
claim's holder dropping its key, or `CLAIM_SECONDS`) ends the claim; a
second caller of the same key meanwhile waits for that answer instead of
charging for a second release. Only when a claim outlives CLAIM_SECONDS
does a waiter release (and pay) again, and its `Claim` says so. Answers
are kept per pgshroud process: processes that share a ledger do not share
answers, but a key's `fingerprint` is the same in all of them, and the
ledger records it with a shared charge (`release_of`), so that a second
process's charge for the same release says that the role paid already.

The data may change while an answer is kept: a repeat returns the answer as
released, not a fresh one (that is the point). The cache is an LRU bounded
by entries and by the size of the answers it holds, so memory stays bounded
whatever is asked. Sessions run on one event loop; large answers are put
from worker threads, hence the lock.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field

from pgshroud.policies.model import Policy
from pgshroud.proxy.budget.protocol import SharedRelease
from pgshroud.rewriter.plans import Cost, LocalAnswer

MAX_ENTRIES = 4096
MAX_BYTES = 64 * 1024 * 1024  # the text of the rows and notices held, roughly
_CELL_OVERHEAD = 16  # per value, for the tuples and None
# How long one release may hold its key's claim: a release still running
# after this is presumed lost, and a waiter releases (and pays) anew.
CLAIM_SECONDS = 300.0
# Words that make a statement's answer depend on who asks or on the session:
# such a statement is never shared, even in a role that shares answers.
_PERSONAL = re.compile(
    r"\b(current_user|session_user|current_role|user|current_setting|current_schemas?|current_catalog|"
    r"current_database|pg_backend_pid|inet_client_addr|inet_client_port|pg_my_temp_schema|has_\w+_privilege|"
    r"pg_has_role|pg_is_other_temp_schema)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True, weakref_slot=True, eq=False)
class AnswerKey:
    """A release's key, and the policy and catalog objects it names by identity (held, so that an id is
    never taken for another object's). `shared_by` is the role whose users share it, or None."""

    value: Hashable
    policy: object
    catalog: object
    shared_by: str | None = None
    # The same statement under the same settings, by the same role, in any pgshroud process: what the
    # ledger records of a shared release (SharedRelease), not compared in the cache.
    fingerprint: str = ""


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    answer: LocalAnswer  # as the release finalized it, before pgshroud's cost notice
    cost: Cost  # what it was charged when released
    released_at: float  # time.time() of its release
    expires: float  # on the cache's clock
    size: int
    owners: tuple[object, object]  # the policy and catalog it was planned under, held to compare by identity
    seconds: float = 0.0  # how long it is kept after its release
    shared_by: str | None = None  # the role whose users share it


@dataclass(frozen=True, slots=True)
class Claim:
    """`claim`'s answer when the caller is to release the answer itself (and charge for it).
    `overlapping` is how long another release of the same key had been running when it was presumed
    lost (CLAIM_SECONDS): then two releases of it are charged, and the caller should say so."""

    overlapping: float | None = None


@dataclass(slots=True)
class _Claim:
    """A release in flight: who waits for it (event loops and their futures; threads on `done`)."""

    started: float
    token: object
    done: threading.Event = field(default_factory=threading.Event)
    waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = field(default_factory=list)


class AnswerCache:
    def __init__(
        self,
        seconds: float,
        *,
        max_entries: int = MAX_ENTRIES,
        max_bytes: int = MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        claim_seconds: float = CLAIM_SECONDS,
    ) -> None:
        if seconds <= 0:
            raise ValueError("an answer cache keeps answers for a positive number of seconds")
        self.seconds = seconds
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.claim_seconds = claim_seconds
        self._clock = clock
        self._wall_clock = wall_clock
        self._entries: OrderedDict[Hashable, CachedAnswer] = OrderedDict()
        self._claims: dict[Hashable, _Claim] = {}
        # Large answers are built, and put here, on a worker thread; a key
        # dropped inside a locked section ends its claim there (hence an RLock).
        self._lock = threading.RLock()
        self._bytes = 0
        self.hits = 0
        self.misses = 0
        self.overlaps = 0  # claims presumed lost, whose key was then released twice

    @staticmethod
    def key(
        *,
        user: str,
        role: str | None,
        policy: object,
        catalog: object,
        privacy: Mapping[str, str],
        cost: Cost,
        statement: Hashable,
        settings: Mapping[str, str] | None = None,
    ) -> AnswerKey:
        """The key of one release: see the module's docstring for what it keeps. `settings`: the session
        settings that change what an answer says (TimeZone, ...), when the caller has them."""
        shared_by = _shared_by(user, policy, statement)
        who = ("role", shared_by) if shared_by is not None else ("user", user)
        stable = (who, role, tuple(sorted(privacy.items())), cost, statement, tuple(sorted((settings or {}).items())))
        value = (*stable, id(policy), id(catalog))
        fingerprint = hashlib.sha256(repr(stable).encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return AnswerKey(value, policy, catalog, shared_by, fingerprint)

    def release_of(self, key: AnswerKey) -> SharedRelease | None:
        """What the ledger records of a release shared by a role (None for a user's own): its fingerprint
        and how long its answer is kept, so that a charge can say when the role already paid for it."""
        if key.shared_by is None:
            return None
        return SharedRelease(key.fingerprint, self.lifetime(key.policy))

    def lifetime(self, policy: object) -> float:
        """How long an answer released under `policy` is kept: answers.reuse_for, else the cache's own."""
        if isinstance(policy, Policy) and policy.answers.seconds is not None:
            return policy.answers.seconds
        return self.seconds

    def get(self, key: AnswerKey) -> CachedAnswer | None:
        with self._lock:
            return self._get(key)

    def _get(self, key: AnswerKey) -> CachedAnswer | None:
        entry = self._entries.get(key.value)
        if entry is None:
            self.misses += 1
            return None
        if entry.expires <= self._clock() or entry.owners[0] is not key.policy or entry.owners[1] is not key.catalog:
            self._drop(key.value)
            self.misses += 1
            return None
        self._entries.move_to_end(key.value)
        self.hits += 1
        return entry

    # -- one release per key ------------------------------------------------

    def lookup(self, key: AnswerKey) -> CachedAnswer | Claim | asyncio.Future[None]:
        """Without waiting: the kept answer; or a Claim, and the caller is to release the answer (ending
        with put or abandon); or, while another caller releases it, a future of the running event loop
        that is done when that release ends (then look up again)."""
        with self._lock:
            found = self._lookup(key)
            if not isinstance(found, _Claim):
                return found
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            found.waiters.append((loop, future))
            return future

    async def claim(self, key: AnswerKey) -> CachedAnswer | Claim:
        """The kept answer, after waiting for a release of the same key in flight if need be; or a Claim:
        the caller releases the answer, and ends the claim with put (or abandon, when it releases none)."""
        while True:
            found = self.lookup(key)
            if not isinstance(found, asyncio.Future):
                return found
            try:
                await asyncio.wait_for(found, self._claim_left(key))
            except TimeoutError:
                pass

    def claim_blocking(self, key: AnswerKey) -> CachedAnswer | Claim:
        """`claim` for a caller on a thread of its own rather than an event loop."""
        while True:
            with self._lock:
                found = self._lookup(key)
            if not isinstance(found, _Claim):
                return found
            found.done.wait(self._claim_left(key))

    def _lookup(self, key: AnswerKey) -> CachedAnswer | Claim | _Claim:
        """The kept answer, a new claim for the caller, or another caller's claim in flight."""
        entry = self._get(key)
        if entry is not None:
            return entry
        pending = self._claims.get(key.value)
        now = self._clock()
        if pending is not None and now - pending.started < self.claim_seconds:
            return pending
        overlapping = None
        if pending is not None:
            self.overlaps += 1
            overlapping = now - pending.started
            self._end_claim(key.value, pending)
        self._claim(key, now)
        return Claim(overlapping)

    def _claim_left(self, key: AnswerKey) -> float:
        """How long the claim in flight on `key` may still hold it (a little, when none is)."""
        with self._lock:
            pending = self._claims.get(key.value)
            left = self.claim_seconds - (self._clock() - pending.started) if pending is not None else 0.0
        return max(left, 0.001)

    def abandon(self, key: AnswerKey) -> None:
        """End the caller's claim on `key` without an answer (its charge was refused, its release failed):
        a waiter then claims it in turn."""
        with self._lock:
            pending = self._claims.get(key.value)
            if pending is not None and pending.token is _token_of(key):
                self._end_claim(key.value, pending)

    def _claim(self, key: AnswerKey, now: float) -> None:
        token = object()
        self._claims[key.value] = _Claim(now, token)
        # The claim holds the caller's key object; if the caller drops it without put or abandon (a
        # release that failed on a path that forgot to abandon), the claim ends with it.
        _TOKENS[key] = token
        weakref.finalize(key, self._dropped, key.value, token)

    def _dropped(self, value: Hashable, token: object) -> None:
        with self._lock:
            pending = self._claims.get(value)
            if pending is not None and pending.token is token:
                self._end_claim(value, pending)

    def _end_claim(self, value: Hashable, pending: _Claim) -> None:
        if self._claims.get(value) is pending:
            del self._claims[value]
        pending.done.set()
        for loop, future in pending.waiters:
            try:
                loop.call_soon_threadsafe(_wake, future)
            except RuntimeError:
                pass  # that event loop is closed: no one waits there any more
        pending.waiters.clear()

    # -- keeping answers ------------------------------------------------------

    def put(self, key: AnswerKey, answer: LocalAnswer, cost: Cost) -> None:
        """Keep a released answer (unless it is too large), and end the claim on its key."""
        size = _size(answer)
        with self._lock:
            if size <= self.max_bytes // 8:  # one answer may not push out most of the others
                self._put(key, answer, cost, size)
            pending = self._claims.get(key.value)
            if pending is not None:
                self._end_claim(key.value, pending)

    def _put(self, key: AnswerKey, answer: LocalAnswer, cost: Cost, size: int) -> None:
        if key.value in self._entries:
            self._drop(key.value)
        seconds = self.lifetime(key.policy)
        self._entries[key.value] = CachedAnswer(answer, cost, self._wall_clock(), self._clock() + seconds,
                                                size, (key.policy, key.catalog), seconds, key.shared_by)
        self._bytes += size
        # Entries expired by the least recently used end's time, then the least recently used while over
        # a bound (an expired entry elsewhere goes when it is asked for, or ages to this end).
        now = self._clock()
        while self._entries:
            oldest = next(iter(self._entries))
            if self._entries[oldest].expires > now and len(self._entries) <= self.max_entries \
                    and self._bytes <= self.max_bytes:
                break
            self._drop(oldest)

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: Hashable) -> None:
        entry = self._entries.pop(key)
        self._bytes -= entry.size


# The claim token of each key object that holds a claim (by the key's identity, while it lives).
_TOKENS: weakref.WeakKeyDictionary[AnswerKey, object] = weakref.WeakKeyDictionary()


def _token_of(key: AnswerKey) -> object | None:
    return _TOKENS.get(key)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _shared_by(user: str, policy: object, statement: Hashable) -> str | None:
    """The role whose users share this statement's answer, or None: kept for the user alone."""
    if not isinstance(policy, Policy):
        return None
    role = policy.role_for(user)
    if role is None or not role.share_answers:
        return None
    if any(_PERSONAL.search(text) for text in _texts(statement)):
        return None
    return role.name


def _texts(statement: Hashable) -> list[str]:
    """The SQL text in a statement's key (Bind values, bytes, are data: they cannot name current_user)."""
    if isinstance(statement, str):
        return [statement]
    if isinstance(statement, tuple):
        return [text for part in statement for text in _texts(part)]
    return []


def _size(answer: LocalAnswer) -> int:
    cells = sum(len(row) for row in answer.rows)
    text = sum(len(value) for row in answer.rows for value in row if value is not None)
    return text + cells * _CELL_OVERHEAD + sum(len(n) for n in answer.notices) + 256
