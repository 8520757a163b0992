"""A session's prepared statements and portals, and the names they go upstream under.

A non-raw session's statement and portal names go upstream translated
(rewriter/names.py), so that no SQL a client writes can reach one that
carries pgshroud's own SQL. A private statement or portal lives upstream
under a name of its own (`pgshroud_r1`, `pgshroud_q2`, ...), which no client
name translates to. Only statements and portals whose plan is not
Passthrough are kept here (and a RESET ALL or DISCARD ALL, which clears
pgshroud settings); the rest are PostgreSQL's business alone.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable, Mapping
from typing import NamedTuple

from pgshroud.proxy.budget.answer_cache import AnswerKey
from pgshroud.proxy.codec.errors import ProtocolViolation
from pgshroud.proxy.session import responses as r
from pgshroud.proxy.session.outcome import Outcome
from pgshroud.proxy.session.privacy import NO_SETTINGS
from pgshroud.rewriter.catalog import Catalog
from pgshroud.rewriter.names import upstream_name
from pgshroud.rewriter.plans import Local, Passthrough, Plan, Release, Rewrite

_LENGTH_PACK = struct.Struct("!I").pack
P, B, D, E, C = (ord(c) for c in "PBDEC")
# Frames that name a statement or portal.
NAMING_FRAMES = frozenset((P, B, D, E, C))
# Stands in upstream for a Local statement, so its answer lands in order
# and PostgreSQL still decides whether it may run (e.g. not in a failed
# transaction).
PLACEHOLDER_SQL = "SELECT WHERE false"


class Statement:
    """A prepared statement or portal whose plan is not Passthrough, or is the
    Passthrough of a RESET ALL or DISCARD ALL that clears pgshroud settings.

    A statement keeps its text and the privacy settings it was planned
    under, to plan it again when they change (a Release also its parameter
    types, for the answer cache's key); a portal that has run keeps its
    answer, for later Executes; a portal of a Release keeps its answer
    cache key, under which its answer is kept once released. A Release's
    statement and portal live upstream under a name of their own
    (`upstream`): SQL cannot reach them, and a client's Parse or Close that
    PostgreSQL skips or refuses cannot leave one under a name the session no
    longer counts as private.
    """

    __slots__ = ("answer", "cache_key", "formats", "inferred", "param_types", "plan", "privacy", "sql", "upstream")

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
        # A private statement's parameter types as PostgreSQL infers them (see Conversation._on_parse).
        self.inferred: Outcome[tuple[int, ...]] | None = None


class Prepared(NamedTuple):
    """What a non-raw session's named statement was planned under, and the
    text it sent upstream (None: a refusal's sentinel)."""

    policy: object
    catalog: Catalog | None
    sql: str
    sent: str | None


class Registry:
    """The statements and portals with plans of their own, by client name."""

    __slots__ = ("_fresh", "portals", "prepared_under", "statements", "up")

    def __init__(self, *, translated: bool) -> None:
        self.statements: dict[str, Statement] = {}
        self.portals: dict[str, Statement] = {}
        # Non-raw sessions: what each named statement was planned under.
        self.prepared_under: dict[str, Prepared] = {}
        # A client's statement or portal name as it goes upstream.
        self.up: Callable[[str], str] = upstream_name if translated else _same_name
        self._fresh = itertools.count(1)  # numbers the upstream names of private statements and portals

    def __bool__(self) -> bool:
        """Some statement or portal needs pgshroud at Bind, Describe, Execute or Close."""
        return bool(self.statements or self.portals or self.prepared_under)

    def fresh_name(self, what: str) -> str:
        """An upstream name for a private statement or portal: no client name
        translates to it (rewriter/names.py makes `pgshroud_u` + 40 hex digits)."""
        return f"pgshroud_{'r' if what == 'statement' else 'q'}{next(self._fresh)}"

    def forget(self, close_payload: bytes) -> str | None:
        """A Close of a statement or portal that may have a plan of its own:
        the upstream name to close when it has one of its own."""
        kind = close_payload[:1]
        name = close_payload[1:].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        info = (self.statements if kind == b"S" else self.portals).pop(name, None)
        if kind == b"S":
            self.prepared_under.pop(name, None)
        return None if info is None else info.upstream

    def private_upstream(self, kind: str, name: str) -> str | None:
        """The upstream name of the private statement (`kind` "S") or portal
        ("P") that SQL naming `name` would reach, compared as PostgreSQL
        compares names: names that share their first 63 bytes are one."""
        target = upstream_name(name)
        registry = self.statements if kind == "S" else self.portals
        return next((info.upstream for held, info in registry.items()
                     if info.upstream is not None and upstream_name(held) == target), None)


def _same_name(name: str) -> str:
    return name


def renamed_frame(kind: int, data: bytes, pos: int, end: int) -> bytes | None:
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
            raise ProtocolViolation(f"unterminated name in frontend message type {chr(kind)!r}")
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


def two_names(payload: bytes) -> tuple[str, str]:
    """A Bind's portal and statement names."""
    first = payload.find(b"\0")
    second = payload.find(b"\0", first + 1) if first >= 0 else -1
    if second < 0:
        raise ProtocolViolation("a Bind message without its portal and statement names")
    return (
        payload[:first].decode("utf-8", "surrogateescape"),
        payload[first + 1 : second].decode("utf-8", "surrogateescape"),
    )


def sent_text(plan: Plan) -> str | None:
    """The statement text a Parse of this plan sends upstream."""
    if isinstance(plan, (Passthrough, Rewrite, Release)):
        return plan.sql
    return PLACEHOLDER_SQL if isinstance(plan, Local) else None
