"""The audit log: one JSON line per statement decision, and never a value.

`pgshroud serve --audit-log PATH` appends to PATH a line for every decision
the session makes about a statement:

    {"time": "2026-11-28T01:02:03.456Z", "user": "alice", "role": "analyst",
     "source": "query", "kind": "release", "fingerprint": "5d0c1c0e9f8a4b21",
     "cost": {"epsilon": 0.5, "delta": 0.0}, "charged": true}

- `time`: when the session decided, UTC, to the millisecond.
- `user`, `role`: the session's user and its policy role (null without one).
- `source`: the protocol message that carried the statement: `query` (one
  line per statement of a simple Query), `parse` (a prepared statement's
  plan), `execute` (the charge of a prepared private query, at each
  Execute), `bind` (a prepared statement refused at Bind) or
  `function_call` (the fast-path FunctionCall, which has no SQL text).
- `kind`: the planner's decision: passthrough, rewrite, release, local or
  refuse. A Query of a role that sees raw data (or of a session without a
  policy) is planned as one Passthrough of its whole text: one line.
- `fingerprint`: the first 16 hex digits of the SHA-256 of the statement
  with every literal replaced by `?`, comments dropped and unquoted words in
  lower case (`normalised_statements`). Two statements that differ only in
  their constants share it, and it cannot be used to test guesses of a
  literal (an SSN, say), since no literal is in what is hashed. Null when
  the text cannot be lexed; `statement` gives the position of the statement
  in a Query of several.
- `cost` (`release` only): the epsilon and delta the answer costs; `charged`:
  true once the ledger took it, false when it refused (absent at Parse,
  which charges nothing: each Execute is charged, and logged, on its own).
- `sqlstate`, `reason`: for a refusal, by the planner (`kind` refuse), by the
  ledger (`kind` release, `charged` false) or by the session. A refusal's
  message may quote the statement, so, except for the ledger's, everything
  between its first and last single quote is replaced by `'?'` and every
  number standing alone by `?`.

What is never written: the statement's text, literals, bind values, result
rows, hints.

The session's side costs one deque append: the session hands over the raw
text and the plans, and a writer thread lexes, fingerprints (memoised by the
plan cache's literal-free key, so a repeated shape is one regex and a dict
lookup), formats and writes, flushing every `flush_interval` seconds and on
close. The raw text is held in memory only until then. If the writer falls
more than `max_pending` records behind, further records are dropped and
counted, and a line `{"time": ..., "event": "dropped", "count": N}` says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from typing import Any

from sqlglot.tokens import TokenType

from proxy.config import ConfigError
from rewriter.cache import normalise
from rewriter.plans import Local, Passthrough, Plan, Refuse, Release, Rewrite
from rewriter.statements import LexError, split_statements

log = logging.getLogger("pgshroud.audit")

_LITERALS = frozenset(t for t in TokenType if t.name.endswith("STRING") or t.name == "NUMBER")
_KIND = {Passthrough: "passthrough", Rewrite: "rewrite", Release: "release", Local: "local", Refuse: "refuse"}
_FINGERPRINT_DIGITS = 16
_MEMO_SIZE = 4096

# In a planner's refusal: from the first single quote to the last (or to the
# end), and numbers standing alone.
_QUOTED = re.compile(r"'.*'|'.*\Z", re.DOTALL)
_NUMBER = re.compile(r"(?<![\w.$])\d[\d_]*(?:\.\d*)?(?:[eE][-+]?\d+)?(?![\w])")


def normalised_statements(sql: str) -> list[str] | None:
    """Each statement of `sql` with its literals as `?`, comments dropped, words in lower case (quoted
    identifiers as written); None when the text cannot be lexed."""
    try:
        statements = split_statements(sql)
    except LexError:
        return None
    out = []
    for statement in statements:
        parts: list[str] = []
        previous = None
        for token in statement.tokens:
            kind = token.token_type
            adjacent = previous is not None and token.start == previous.end + 1
            if kind in _LITERALS:
                if adjacent and kind == TokenType.NUMBER and previous.token_type == TokenType.PARAMETER:
                    parts.append(token.text)  # $1: a parameter's number is not a literal
                else:
                    parts.append("?")
            elif adjacent and previous.token_type in _LITERALS and (token.text[:1].isalnum() or token.text[:1] == "_"):
                # 1_000 and the like: the rest of a number, lexed as a word.
                pass
            elif kind == TokenType.IDENTIFIER:
                parts.append('"' + token.text.replace('"', '""') + '"')
            else:
                parts.append(token.text.lower())
            previous = token
        out.append(" ".join(parts))
    return out


def fingerprint(normalised: str) -> str:
    return hashlib.sha256(normalised.encode("utf-8", "surrogatepass")).hexdigest()[:_FINGERPRINT_DIGITS]


def scrub_reason(message: str) -> str:
    """A planner's refusal message without anything it may have quoted from the statement."""
    return _NUMBER.sub("?", _QUOTED.sub("'?'", message, count=1))


class Fingerprints:
    """Fingerprints of a text, memoised by the text and by its literal-free plan cache key.

    `of(sql)` gives the fingerprint of the whole text (all its statements, as
    one: what a raw role's Query is) and of each statement, or None when the
    text cannot be lexed.
    """

    def __init__(self, size: int = _MEMO_SIZE) -> None:
        self.size = size
        self._memo: OrderedDict[str, tuple[str, tuple[str, ...]] | None] = OrderedDict()

    def of(self, sql: str) -> tuple[str, tuple[str, ...]] | None:
        memo = self._memo
        found = memo.get(sql, False)
        if found is not False:
            return found  # type: ignore[return-value]
        normal = normalise(sql)
        # Texts with one plan cache key differ only inside plain literals, so they lex alike.
        key = "\x00" + normal[0] if normal is not None else None
        if key is not None:
            found = memo.get(key, False)
            if found is not False:
                self._remember(sql, found)  # type: ignore[arg-type]
                return found  # type: ignore[return-value]
        statements = normalised_statements(sql)
        result = None
        if statements is not None:
            result = (fingerprint(" ; ".join(statements)), tuple(fingerprint(s) for s in statements))
        if key is not None:
            self._remember(key, result)
        self._remember(sql, result)
        return result

    def _remember(self, key: str, value: tuple[str, tuple[str, ...]] | None) -> None:
        memo = self._memo
        memo[key] = value
        if len(memo) > self.size:
            memo.popitem(last=False)


class AuditLog:
    """Appends decisions to a JSON lines file from a writer thread; `decided` is all the session calls."""

    def __init__(self, path: str, *, flush_interval: float = 0.5, max_pending: int = 200_000) -> None:
        self.path = path
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.written = 0
        self.dropped = 0
        self._reported_dropped = 0
        self._pending: deque[tuple] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._fingerprints = Fingerprints()
        self._names: dict[str | None, str] = {}
        self._second = -1
        self._second_text = ""
        self._failing = False
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise ConfigError(f"--audit-log {path}: {exc.strerror or exc}") from None
        self._file = os.fdopen(fd, "a", encoding="utf-8", buffering=1 << 16)
        self._thread = threading.Thread(target=self._run, name="pgshroud-audit", daemon=True)
        self._thread.start()

    # -- the session's side (event loop) ----------------------------------------

    def decided(self, user: str, role: str | None, source: str, sql: str | None, plans: Sequence[Plan],
                charge_refusal: Refuse | None = None, refused: Release | None = None) -> None:
        """Record the decisions about the statements of `sql` (`charge_refusal`: the ledger's refusal that
        stands in `plans` for the release `refused`)."""
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            return
        self._pending.append((time.time(), user, role, source, sql, plans, charge_refusal, refused))

    def counts(self) -> tuple[int, int]:
        return self.written, self.dropped

    def close(self) -> None:
        """Write everything pending, flush, fsync and close."""
        if self._file.closed:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join()
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            log.error("audit log %s: %s", self.path, exc.strerror or exc)
        finally:
            self._file.close()

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until what was recorded before the call is written and flushed (for tests and shutdown)."""
        done = threading.Event()
        self._pending.append(done)  # type: ignore[arg-type]
        self._wake.set()
        done.wait(timeout)

    # -- the writer thread -----------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            stopping = self._stopping
            self._write_pending()
            if stopping:
                return

    def _write_pending(self) -> None:
        pending = self._pending
        lines: list[str] = []
        waiters: list[threading.Event] = []
        while pending:
            record = pending.popleft()
            if isinstance(record, threading.Event):
                waiters.append(record)
                continue
            try:
                lines.extend(self._lines(*record))
            except Exception:  # a record that cannot be formatted must not stop the log
                log.exception("audit record could not be formatted")
            if len(lines) >= 512:
                self._write(lines)
                lines = []
                time.sleep(0)  # let the event loop have the GIL
        dropped = self.dropped
        if dropped != self._reported_dropped:
            lines.append(json.dumps({"time": self._time(time.time()), "event": "dropped",
                                     "count": dropped - self._reported_dropped}))
            self._reported_dropped = dropped
        self._write(lines)
        try:
            self._file.flush()
        except OSError as exc:
            self._failed(exc)
        for waiter in waiters:
            waiter.set()

    def _write(self, lines: list[str]) -> None:
        if not lines:
            return
        try:
            self._file.write("\n".join(lines) + "\n")
        except OSError as exc:
            self._failed(exc)
            return
        self.written += len(lines)
        if self._failing:
            self._failing = False
            log.warning("audit log %s is being written again", self.path)

    def _failed(self, exc: OSError) -> None:
        if not self._failing:
            log.error("cannot write the audit log %s: %s", self.path, exc.strerror or exc)
            self._failing = True

    def _lines(self, at: float, user: str, role: str | None, source: str, sql: str | None, plans: Sequence[Plan],
               charge_refusal: Refuse | None, refused: Release | None) -> Iterable[str]:
        head = f'{{"time":"{self._time(at)}","user":{self._name(user)},"role":{self._name(role)},' \
               f'"source":"{source}"'
        prints = self._fingerprints.of(sql) if sql is not None else None
        several = len(plans) > 1
        for index, plan in enumerate(plans):
            if prints is None:
                print_ = None
            elif len(plans) == 1 and len(prints[1]) != 1:
                print_ = prints[0]  # a raw role's Query, or an empty one
            else:
                print_ = prints[1][index] if index < len(prints[1]) else None
            fields: dict[str, Any] = {}
            if plan is charge_refusal:
                fields["kind"] = "release"
            else:
                fields["kind"] = _KIND.get(type(plan), "refuse")
            fields["fingerprint"] = print_
            if several:
                fields["statement"] = index + 1
            release = refused if plan is charge_refusal else plan
            if isinstance(release, Release):
                cost = release.spec.cost
                fields["cost"] = {"epsilon": float(cost.epsilon), "delta": float(cost.delta)}
            if isinstance(plan, Release):
                if source != "parse":
                    fields["charged"] = True
            elif plan is charge_refusal:
                fields["charged"] = False
                fields["sqlstate"] = plan.sqlstate
                fields["reason"] = plan.message
            elif isinstance(plan, Refuse):
                fields["sqlstate"] = plan.sqlstate
                fields["reason"] = scrub_reason(plan.message)
            yield head + "," + json.dumps(fields, separators=(",", ":"), ensure_ascii=False)[1:]

    def _name(self, name: str | None) -> str:
        encoded = self._names.get(name)
        if encoded is None:
            encoded = json.dumps(name, ensure_ascii=False)
            if len(self._names) < 10_000:
                self._names[name] = encoded
        return encoded

    def _time(self, at: float) -> str:
        second = int(at)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((at - second) * 1000):03d}Z"
