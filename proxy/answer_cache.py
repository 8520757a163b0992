"""Released private answers, kept for a while so that a repeat costs nothing.

A private answer, once released and paid for, may be sent again at no
privacy cost: anything computed from a release alone is post-processing.
Repeating the query within `--answer-cache-seconds` therefore returns the
very answer released before (same noise, same rows), so averaging repeats
learns nothing, and charges nothing.

What must match for a repeat to be served (the key):
- the user: answers are kept per user, not per role. A role's users each
  have a budget of their own, and serving one user's paid answer to another
  would let that other user learn it without paying from their budget.
- the role's name and the policy object (a reload makes a new one) and the
  catalog snapshot the statement was planned under, compared by identity;
- the session's pgshroud settings (epsilon, delta) and the release's cost;
- the statement exactly as the client sent it: every literal (a normaliser
  that stripped them would let `patient_id = 5` and `= 6` share an answer);
  for a prepared statement also its parameter types, every Bind value and
  the format code that applies to it, and the format code of each result
  column; for a simple Query, the whole text and the statement's position
  in it. A simple Query of one statement is keyed as the same text prepared
  without parameters with text results (psycopg, for one, switches a
  repeated query to a prepared statement), which means the same.

The data may change while an answer is kept: a repeat returns the answer as
released, not a fresh one (that is the point). Entries expire `seconds`
after their release; the cache is an LRU bounded by entries and by the
size of the answers it holds, so memory stays bounded whatever is asked.
Sessions run on one event loop, so there is no locking.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from rewriter.plans import Cost, LocalAnswer

MAX_ENTRIES = 4096
MAX_BYTES = 64 * 1024 * 1024  # the text of the rows and notices held, roughly
_CELL_OVERHEAD = 16  # per value, for the tuples and None


class AnswerKey(NamedTuple):
    """A release's key, and the policy and catalog objects it names by identity (held, so that an id is
    never taken for another object's)."""

    value: Hashable
    policy: object
    catalog: object


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    answer: LocalAnswer  # as the release finalized it, before pgshroud's cost notice
    cost: Cost  # what it was charged when released
    released_at: float  # time.time() of its release
    expires: float  # on the cache's clock
    size: int
    owners: tuple[object, object]  # the policy and catalog it was planned under, held to compare by identity


class AnswerCache:
    def __init__(
        self,
        seconds: float,
        *,
        max_entries: int = MAX_ENTRIES,
        max_bytes: int = MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if seconds <= 0:
            raise ValueError("an answer cache keeps answers for a positive number of seconds")
        self.seconds = seconds
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._wall_clock = wall_clock
        self._entries: OrderedDict[Hashable, CachedAnswer] = OrderedDict()
        # Large answers are built, and put here, on a worker thread.
        self._lock = threading.Lock()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

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
    ) -> AnswerKey:
        """The key of one release: see the module's docstring for what it keeps."""
        value = (user, role, id(policy), id(catalog), tuple(sorted(privacy.items())), cost, statement)
        return AnswerKey(value, policy, catalog)

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

    def put(self, key: AnswerKey, answer: LocalAnswer, cost: Cost) -> None:
        size = _size(answer)
        if size > self.max_bytes // 8:
            return  # one answer may not push out most of the others
        with self._lock:
            self._put(key, answer, cost, size)

    def _put(self, key: AnswerKey, answer: LocalAnswer, cost: Cost, size: int) -> None:
        if key.value in self._entries:
            self._drop(key.value)
        self._entries[key.value] = CachedAnswer(answer, cost, self._wall_clock(), self._clock() + self.seconds,
                                                size, (key.policy, key.catalog))
        self._bytes += size
        # Expired entries at the least recently used end, then the least recently used while over a bound
        # (an expired entry elsewhere goes when it is asked for, or ages to this end).
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


def _size(answer: LocalAnswer) -> int:
    cells = sum(len(row) for row in answer.rows)
    text = sum(len(value) for row in answer.rows for value in row if value is not None)
    return text + cells * _CELL_OVERHEAD + sum(len(n) for n in answer.notices) + 256
