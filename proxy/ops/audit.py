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
text and its decisions (kind, cost, charge, refusal), and a feeder thread
sends them, in pickled batches every `flush_interval` seconds, through a
pipe to a writer process (`python -m proxy.audit PATH INTERVAL`, started
with the log). The writer lexes, fingerprints (memoised by the plan cache's
literal-free key, so a repeated shape costs one regular expression and a
dict lookup), formats and appends, flushing at least every `flush_interval`
seconds, and fsyncs when pgshroud closes the pipe at shutdown (it ignores
SIGINT and SIGTERM, which reach the whole process group, and finishes what
it was sent). So the proxy's own thread never lexes or formats, and the
writer's work never holds its GIL. The raw text exists only in memory and
in the pipe between the two. If more than `max_pending` records wait,
further records are dropped and counted, and a line
`{"time": ..., "event": "dropped", "count": N}` says so; if the writer dies,
records are dropped and counted from then on, and pgshroud logs it once.
"""

from __future__ import annotations

import atexit
import hashlib
import itertools
import json
import logging
import os
import pickle
import re
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

from sqlglot import TokenType

import pgshroud
from pgshroud.proxy.ops.errors import ConfigError
from pgshroud.rewriter.cache import normalise
from pgshroud.rewriter.plans import Local, Passthrough, Plan, Refuse, Release, Rewrite
from pgshroud.rewriter.statements import LexError, split_statements

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
            # The type of the token just before, when nothing lies between them.
            adjacent = previous.token_type if previous is not None and token.start == previous.end + 1 else None
            if kind in _LITERALS:
                if kind == TokenType.NUMBER and adjacent == TokenType.PARAMETER:
                    parts.append(token.text)  # $1: a parameter's number is not a literal
                else:
                    parts.append("?")
            elif adjacent == TokenType.NUMBER and token.text[:1] == "_":
                # 1_000: the rest of the number, lexed as a word.
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
    """Fingerprints of a text, memoised by its plan cache key (rewriter/cache.py: the text with its
    plain literals taken out), or by the text itself when it has none.

    `of(sql)` gives the fingerprint of the whole text (all its statements, as
    one: what a raw role's Query is) and of each statement, or None when the
    text cannot be lexed.
    """

    def __init__(self, size: int = _MEMO_SIZE) -> None:
        self.size = size
        self._memo: OrderedDict[str, tuple[str, tuple[str, ...]] | None] = OrderedDict()

    def of(self, sql: str) -> tuple[str, tuple[str, ...]] | None:
        # The plan cache's key: texts with one key differ only inside plain literals, so they lex alike.
        keyed = normalise(sql)
        memo_key = "k" + keyed[0] if keyed is not None else "t" + sql
        memo = self._memo
        try:
            found = memo[memo_key]
        except KeyError:
            pass
        else:
            memo.move_to_end(memo_key)
            return found
        statements = normalised_statements(sql)
        result = None
        if statements is not None:
            result = (fingerprint(" ; ".join(statements)), tuple(fingerprint(s) for s in statements))
        memo[memo_key] = result
        if len(memo) > self.size:
            memo.popitem(last=False)
        return result


# What the writer is sent per plan: (kind, epsilon, delta, charged, sqlstate, reason, scrub).
Outcome = tuple[str, float | None, float | None, bool | None, str | None, str | None, bool]
_ONE_PASSTHROUGH: tuple[Outcome, ...] = (("passthrough", None, None, None, None, None, False),)
# What the feeder sends the writer: a record of decisions (at, user, role, source, sql, outcomes), or a
# control item, ("flush", token) or ("dropped", count).
_Record = tuple[float, str, str | None, str, str | None, tuple[Outcome, ...]]
_Control = tuple[str, int]


def outcomes(source: str, plans: Sequence[Plan], charge_refusal: Refuse | None,
             refused: Release | None) -> tuple[Outcome, ...]:
    """The plans as the writer needs them (no plan object crosses to the writer process)."""
    if len(plans) == 1 and type(plans[0]) is Passthrough:
        return _ONE_PASSTHROUGH
    out = []
    for plan in plans:
        epsilon = delta = charged = sqlstate = reason = None
        scrub = False
        if plan is charge_refusal and charge_refusal is not None:
            kind, charged, sqlstate, reason = "release", False, plan.sqlstate, plan.message
            release = refused
        else:
            kind = _KIND.get(type(plan), "refuse")
            release = plan if isinstance(plan, Release) else None
            if release is not None and source != "parse":
                charged = True
            if isinstance(plan, Refuse):
                sqlstate, reason, scrub = plan.sqlstate, plan.message, True
        if release is not None:
            cost = release.spec.cost
            epsilon, delta = float(cost.epsilon), float(cost.delta)
        out.append((kind, epsilon, delta, charged, sqlstate, reason, scrub))
    return tuple(out)


class AuditLog:
    """The audit log of a pgshroud process: `decided` queues a record (all the session's event loop
    does); a feeder thread sends batches to a writer process (`python -m proxy.audit`), which
    fingerprints, formats and appends them to the file, so none of that work holds this process's GIL."""

    def __init__(self, path: str, *, flush_interval: float = 0.5, max_pending: int = 200_000,
                 batch: int = 1000) -> None:
        self.path = path
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.batch = batch
        self.sent = 0
        self.dropped = 0
        self._reported_dropped = 0
        self._pending: deque[_Record | _Control] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._closed = False
        self._flushing = threading.Lock()
        self._tokens = itertools.count(1)
        self._acks = b""
        self._broken = False
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640))
        except OSError as exc:
            raise ConfigError(f"--audit-log {path}: {exc.strerror or exc}") from None
        here = str(Path(pgshroud.__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])])}
        self._writer = subprocess.Popen(
            [sys.executable, "-m", "pgshroud.proxy.ops.audit", path, str(flush_interval)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
        )
        self._feeder = threading.Thread(target=self._feed, name="pgshroud-audit", daemon=True)
        self._feeder.start()
        atexit.register(self.close)

    # -- the session's side (event loop) ----------------------------------------

    def decided(self, user: str, role: str | None, source: str, sql: str | None, plans: Sequence[Plan],
                charge_refusal: Refuse | None = None, refused: Release | None = None) -> None:
        """Queue the decisions about the statements of `sql` (`charge_refusal`: the ledger's refusal that
        stands in `plans` for the release `refused`)."""
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            return
        if len(plans) == 1 and type(plans[0]) is Passthrough:
            decided = _ONE_PASSTHROUGH
        else:
            decided = outcomes(source, plans, charge_refusal, refused)
        self._pending.append((time.time(), user, role, source, sql, decided))

    def counts(self) -> tuple[int, int]:
        """Records handed to the writer, and records dropped because it fell behind."""
        return self.sent, self.dropped

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until what was queued before the call is in the file (flushed, not fsynced)."""
        with self._flushing:
            token = next(self._tokens)
            self._pending.append(("flush", token))
            self._wake.set()
            deadline = time.monotonic() + timeout
            assert self._writer.stdout is not None
            fd = self._writer.stdout.fileno()
            while True:
                if b"\n" in self._acks:
                    line, self._acks = self._acks.split(b"\n", 1)
                    if int(line) >= token:
                        return True
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                    return False
                part = os.read(fd, 4096)
                if not part:
                    return False
                self._acks += part

    def close(self, timeout: float = 30.0) -> None:
        """Send everything queued, let the writer write, flush, fsync and exit."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        self._wake.set()
        self._feeder.join(timeout)
        try:
            self._writer.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("the audit log writer did not finish within %gs; stopping it", timeout)
            self._writer.kill()
            self._writer.wait()
        if self._writer.stdout is not None:
            self._writer.stdout.close()
        if self._writer.returncode:
            log.error("the audit log writer exited with status %s", self._writer.returncode)

    # -- the feeder thread -------------------------------------------------------------

    def _feed(self) -> None:
        stdin = self._writer.stdin
        assert stdin is not None
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            stopping = self._stopping
            self._send_pending(stdin)
            if stopping:
                break
        try:
            stdin.close()
        except OSError:
            pass

    def _send_pending(self, stdin: IO[bytes]) -> None:
        pending = self._pending
        while pending or self.dropped != self._reported_dropped:
            chunk: list[_Record | _Control] = []
            dropped = self.dropped
            if dropped != self._reported_dropped:
                chunk.append(("dropped", dropped - self._reported_dropped))
                self._reported_dropped = dropped
            while pending and len(chunk) < self.batch:
                chunk.append(pending.popleft())
            records = sum(1 for item in chunk if type(item[0]) is float)
            if self._broken:
                self.dropped += records
                self._reported_dropped += records  # no writer to report them to
                continue
            # Pickled in batches, each a short hold of the GIL; the pipe write releases it.
            data = pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL)
            try:
                stdin.write(_FRAME.pack(len(data)) + data)
                stdin.flush()
            except (OSError, ValueError) as exc:
                self._broken = True
                self.dropped += records
                self._reported_dropped += records
                log.error("the audit log writer is gone (%s); audit records are dropped from now on",
                          type(exc).__name__)
                continue
            self.sent += records


_FRAME = struct.Struct("!I")


class _Writer:
    """The writer process's side: fingerprints, JSON lines, the file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.file = open(path, "a", encoding="utf-8", buffering=1 << 16)  # noqa: SIM115 - closed by close()
        self.fingerprints = Fingerprints()
        self._names: dict[str | None, str] = {}
        self._second = -1
        self._second_text = ""
        self._failing = False

    def write(self, record: _Record) -> None:
        self._write(list(self.lines(*record)))

    def dropped(self, count: int) -> None:
        self._write([json.dumps({"time": self.time(time.time()), "event": "dropped", "count": count})])

    def _write(self, lines: list[str]) -> None:
        if not lines:
            return
        try:
            self.file.write("\n".join(lines) + "\n")
        except OSError as exc:
            self._failed(exc)
            return
        if self._failing:
            self._failing = False
            print(f"pgshroud audit: {self.path} is being written again", file=sys.stderr, flush=True)

    def flush(self) -> None:
        try:
            self.file.flush()
        except OSError as exc:
            self._failed(exc)

    def close(self) -> None:
        self.flush()
        try:
            os.fsync(self.file.fileno())
        except OSError as exc:
            self._failed(exc)
        self.file.close()

    def _failed(self, exc: OSError) -> None:
        if not self._failing:
            print(f"pgshroud audit: cannot write {self.path}: {exc.strerror or exc}", file=sys.stderr, flush=True)
            self._failing = True

    def lines(self, at: float, user: str, role: str | None, source: str, sql: str | None,
              decided: tuple[Outcome, ...]) -> Iterable[str]:
        head = f'{{"time":"{self.time(at)}","user":{self.name(user)},"role":{self.name(role)},"source":"{source}"'
        prints = self.fingerprints.of(sql) if sql is not None else None
        several = len(decided) > 1
        for index, (kind, epsilon, delta, charged, sqlstate, reason, scrub) in enumerate(decided):
            if prints is None:
                print_ = "null"
            elif len(decided) == 1 and len(prints[1]) != 1:
                print_ = f'"{prints[0]}"'  # a raw role's Query, or an empty one
            else:
                print_ = f'"{prints[1][index]}"' if index < len(prints[1]) else "null"
            line = f'{head},"kind":"{kind}","fingerprint":{print_}'
            if several:
                line += f',"statement":{index + 1}'
            if epsilon is not None:
                line += f',"cost":{{"epsilon":{json.dumps(epsilon)},"delta":{json.dumps(delta)}}}'
            if charged is not None:
                line += ',"charged":true' if charged else ',"charged":false'
            if sqlstate is not None:
                line += f',"sqlstate":{json.dumps(sqlstate)},"reason":' + json.dumps(
                    scrub_reason(reason or "") if scrub else reason, ensure_ascii=False)
            yield line + "}"

    def name(self, name: str | None) -> str:
        encoded = self._names.get(name)
        if encoded is None:
            encoded = json.dumps(name, ensure_ascii=False)
            if len(self._names) < 10_000:
                self._names[name] = encoded
        return encoded

    def time(self, at: float) -> str:
        second = int(at)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((at - second) * 1000):03d}Z"


def _read_exactly(fd: int, n: int) -> bytes | None:
    """n bytes from the pipe, or None at its end (unbuffered, so that select() tells the truth)."""
    parts, needed = [], n
    while needed:
        part = os.read(fd, min(needed, 1 << 20))
        if not part:
            return None
        parts.append(part)
        needed -= len(part)
    return b"".join(parts)


def writer_main(path: str, flush_interval: float) -> int:
    """The writer process: frames of pickled batches on stdin until EOF; flush acknowledgements on stdout."""
    # Ctrl-C and a service manager's SIGTERM reach the whole process group: the writer ends when pgshroud
    # closes its stdin (or dies), after writing everything it was sent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    writer = _Writer(path)
    stdin, stdout = sys.stdin.fileno(), sys.stdout.buffer
    last_flush = time.monotonic()
    try:
        while True:
            if not select.select([stdin], [], [], flush_interval)[0]:
                writer.flush()
                last_flush = time.monotonic()
                continue
            head = _read_exactly(stdin, _FRAME.size)
            if head is None:
                break
            data = _read_exactly(stdin, _FRAME.unpack(head)[0])
            if data is None:
                break
            for item in pickle.loads(data):
                marker = item[0]
                if type(marker) is not str:
                    try:
                        writer.write(item)
                    except Exception as exc:  # noqa: BLE001 - one bad record must not end the log
                        print(f"pgshroud audit: a record could not be written: {type(exc).__name__}",
                              file=sys.stderr, flush=True)
                elif marker == "flush":
                    writer.flush()
                    stdout.write(b"%d\n" % item[1])
                    stdout.flush()
                elif marker == "dropped":
                    writer.dropped(item[1])
            if time.monotonic() - last_flush >= flush_interval:
                writer.flush()
                last_flush = time.monotonic()
    finally:
        writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(writer_main(sys.argv[1], float(sys.argv[2])))
