"""A plan cache keyed by the statement text with its literals taken out.

Analysts and BI tools send the same statements with different constants;
parsing each text costs far more than relaying it. The key is the text
with every plain literal (a quoted string with no quote or backslash
inside, or an unsigned number) replaced by a slot; the cached value is the
plan as a template over those slots.

The key is a security boundary: two texts with one key must lex alike in
PostgreSQL. So the normaliser only recognises constructs whose lexing
cannot depend on a literal's content, and refuses to key anything else
(comments, dollar quotes, escape strings, quoted identifiers, backslashes,
unbalanced quotes): such texts take the full parse every time.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

from pgshroud.rewriter.plans import Passthrough, Plan, Refuse, Rewrite

# A replacement the planner made: the span [start, end) of the Query text and its new text.
Replacement = tuple[int, int, str]
# A statement's span in the Query text and its replacements.
Layout = tuple[int, int, list[Replacement]]

# Everything that is not a plain literal, a word or punctuation makes the
# text uncacheable: - and / (comments), $ (dollar quotes, parameters),
# " (quoted identifiers), backslashes, E'', U&'', B'', X'' prefixes.
_LITERAL = re.compile(r"'[^'\\]*'(?!')|(?<![\w.])\d+(?:\.\d+)?(?![\w.])")
_UNSAFE = re.compile(r"--|/\*|\$|\"|\\|[eEuUbBxXnN]'|&'|''")
_SLOT = "\x00"


@dataclass(frozen=True)
class _Template:
    kind: type[Passthrough | Rewrite | Refuse]
    parts: tuple[str | int, ...]  # text, or the index of a literal slot
    refusal: Refuse | None = None

    def fill(self, literals: list[str]) -> Plan:
        if self.refusal is not None:
            return self.refusal
        text = "".join(p if isinstance(p, str) else literals[p] for p in self.parts)
        return Rewrite(text) if self.kind is Rewrite else Passthrough(text)


def normalise(sql: str) -> tuple[str, list[tuple[int, int]]] | None:
    """The key and the literal spans, or None when the text is not safely keyable."""
    if _SLOT in sql or _UNSAFE.search(sql):
        return None
    spans = [m.span() for m in _LITERAL.finditer(sql)]
    key_parts, position = [], 0
    for start, end in spans:
        key_parts.append(sql[position:start])
        key_parts.append(_SLOT)
        position = end
    key_parts.append(sql[position:])
    key = "".join(key_parts)
    if "'" in key:
        return None  # a quote the literal pattern did not consume
    return key, spans


class PlanCache:
    """Least-recently-used templates per role, valid for one policy and one
    catalog snapshot (compared by identity, so a reload or a refreshed
    catalog never serves an old plan). Long statements are planned on
    worker threads (proxy/session/driver.py), so the entries are locked."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], tuple[tuple[object, object], tuple[_Template, ...]]] = (
            OrderedDict())
        self.hits = 0
        self.misses = 0

    def get(self, role: str, owners: tuple[object, object], sql: str) -> list[Plan] | None:
        normal = normalise(sql)
        if normal is None:
            return None
        key, spans = normal
        with self._lock:
            entry = self._entries.get((role, key))
            if entry is None or entry[0][0] is not owners[0] or entry[0][1] is not owners[1]:
                self.misses += 1
                return None
            self._entries.move_to_end((role, key))
            self.hits += 1
        literals = [sql[s:e] for s, e in spans]
        return [t.fill(literals) for t in entry[1]]

    def put(
        self, role: str, owners: tuple[object, object], sql: str, plans: list[Plan], layouts: list[Layout]
    ) -> None:
        """Remember the plans of a text of queries. `layouts` gives, per
        plan, the statement's span in `sql` and its replacements
        [(start, end, text)], offsets into `sql`."""
        normal = normalise(sql)
        if normal is None or len(plans) != len(layouts):
            return
        key, spans = normal
        templates = []
        for plan, (start, end, replacements) in zip(plans, layouts):
            if isinstance(plan, Refuse):
                templates.append(_Template(Refuse, (), plan))
                continue
            if not isinstance(plan, (Passthrough, Rewrite)):
                return
            template = _template(sql, start, end, plan, replacements, spans)
            if template is None:
                return
            templates.append(template)
        with self._lock:
            self._entries[(role, key)] = (owners, tuple(templates))
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)


def _template(
    sql: str, start: int, end: int, plan: Passthrough | Rewrite, replacements: list[Replacement],
    literals: list[tuple[int, int]],
) -> _Template | None:
    """The statement's plan text as fixed parts and literal slots."""
    # A replacement's text, or the index of a literal slot, at each span.
    events: list[tuple[int, int, str | int]] = sorted(
        [(s, e, text) for s, e, text in replacements]
        + [(s, e, i) for i, (s, e) in enumerate(literals) if start <= s and e <= end],
        key=lambda event: (event[0], event[1]),
    )
    parts: list[str | int] = []
    position = start
    for s, e, value in events:
        if s < position:
            return None  # overlapping spans: do not cache
        parts.append(sql[position:s])
        parts.append(value)
        position = e
    parts.append(sql[position:end])
    template = _Template(type(plan), tuple(p for p in parts if p != ""))
    # The template must give back exactly the plan it was made from.
    if template.fill([sql[s:e] for s, e in literals]) != plan:
        return None
    return template

