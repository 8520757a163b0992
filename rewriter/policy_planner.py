"""Plans for sessions whose role does not see raw data.

A Query text is lexed once; each statement is classified by its leading
words (sqlglot parses several utility statements as unrelated expressions,
so its tree does not decide what kind of statement this is). Each query
(alone, or inside DECLARE, EXPLAIN, COPY or PREPARE) is analysed once
(rewriter/query_analysis.py), and that analysis decides it: a private answer
(rewriter/private/), a zero-row probe (rewriter/probes.py), or the query
with every protected relation replaced by the view the access decision
(rewriter/access.py) names (rewriter/views.py). Anything that cannot be
analysed is refused.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from sqlglot import exp
from sqlglot.tokenizer_core import Token, TokenType

from pgshroud import sqlstate
from pgshroud.policies.model import Access, Policy, Role
from pgshroud.rewriter import access
from pgshroud.rewriter.cache import PlanCache
from pgshroud.rewriter.catalog import Catalog, Relation
from pgshroud.rewriter.masking import masked_subquery, replacement_for, splice
from pgshroud.rewriter.named_commands import (
    NamedCommandError,
    close_or_deallocate,
    declared_cursor,
    execute_arguments,
    fetch_or_move,
    fetch_step,
    renamed,
)
from pgshroud.rewriter.plans import Column, Cursor, Local, LocalAnswer, Passthrough, Plan, Refuse, Release, Rewrite
from pgshroud.rewriter.private import plan_private
from pgshroud.rewriter.private.settings import SettingError, set_plan, show_plan
from pgshroud.rewriter.probes import PROBE_ALIAS, PROBE_HINT, check_probe_wrapper, returns_no_row, row_level
from pgshroud.rewriter.query_analysis import QueryAnalysis, analyse_query
from pgshroud.rewriter.refusal import Refusal
from pgshroud.rewriter.relations import fold
from pgshroud.rewriter.settings import (
    TIMING_SETTINGS,
    TIMING_SHAPERS,
    SettingRefused,
    check_reset,
    check_set,
    check_set_config,
    set_config_arguments,
)
from pgshroud.rewriter.statements import LexError, Statement, parse_statement, split_statements
from pgshroud.rewriter.views import INNER_ALIAS, pg_class_without_row_counts

POLICY = sqlstate.INSUFFICIENT_PRIVILEGE

TRANSACTION_WORDS = frozenset({"begin", "start", "commit", "end", "rollback", "abort", "savepoint", "release"})
# They only remove a cursor or prepared statement, whose name is translated
# (rewriter/named_commands.py).
CURSOR_WORDS = frozenset({"close", "deallocate"})
QUERY_WORDS = frozenset({"select", "with", "values", "("})
PLAN_CACHE = PlanCache()


# A replacement: the span [start, end) of the whole Query text and its new text.
Replacement = tuple[int, int, str]


class QueryAnalyser:
    """Analyses and rewrites the queries of one role."""

    def __init__(self, policy: Policy, role: Role, catalog: Catalog, user: str,
                 privacy: Mapping[str, str] | None = None) -> None:
        self.policy = policy
        self.role = role
        self.catalog = catalog
        self.user = user
        self.privacy = privacy or {}
        self.aggregates_privately = role.aggregates_privately

    def plan_text(self, sql: str) -> list[Plan]:
        owners = (self.policy, self.catalog)
        cached = PLAN_CACHE.get(self.role.name, owners, sql)
        if cached is not None:
            return cached
        try:
            statements = split_statements(sql)
        except LexError as exc:
            return [Refuse(sqlstate.SYNTAX_ERROR, str(exc),
                           hint="Check the statement's quotes, dollar quotes and comments.")]
        plans: list[Plan] = []
        layouts: list[tuple[int, int, list[Replacement]]] = []
        cacheable = True
        for statement in statements:
            plan, replacements = self._planned(statement)
            plans.append(plan)
            if replacements is None:
                cacheable = False
            else:
                layouts.append((statement.start, statement.start + len(statement.text), replacements))
        if not plans:
            return [Passthrough(sql)]
        if cacheable:
            PLAN_CACHE.put(self.role.name, owners, sql, plans, layouts)
        return plans

    def _planned(self, statement: Statement) -> tuple[Plan, list[Replacement] | None]:
        """One statement's plan and, when the plan is a function of the text
        with its literals taken out (rewriter/cache.py), the replacements that
        made it; None otherwise. Only plain queries can be: other statements'
        plans, set_config's and private answers' depend on their literals."""
        setting = set_config_arguments(statement) if statement.first_word == "select" else None
        template = statement.first_word in QUERY_WORDS and setting is None
        try:
            if setting is not None:
                return self._set_config(statement, *setting), None
            if template:
                return self._query(statement)
            return self.plan_statement(statement), None
        except Refusal as refusal:
            return refusal.refuse, [] if template else None
        except RecursionError:
            return (Refuse(sqlstate.STATEMENT_TOO_COMPLEX, "the statement is nested too deeply for pgshroud to analyse"),
                    [] if template else None)

    def _query(self, statement: Statement) -> tuple[Plan, list[Replacement] | None]:
        """A query's plan: a private answer, or the query with its protected relations masked."""
        analysis = None
        if self.aggregates_privately:
            analysis = self._analysed(statement)
            private = self._private_plan(analysis, probes=True)
            if private is not None:
                return private, None  # the noise and the cost are not a function of the normalised text
        replacements = self._masking(statement, analysis)
        if not replacements:
            return Passthrough(statement.text), []
        return Rewrite(splice(statement.text, statement.start, replacements)), replacements

    def plan_statement(self, statement: Statement) -> Plan:
        """The plan of a statement that is not a plain query."""
        word = statement.first_word
        if statement.words(2) in (["prepare", "transaction"], ["commit", "prepared"], ["rollback", "prepared"]):
            raise Refusal(POLICY, "two-phase commit is not allowed through pgshroud")
        if word == "table":
            return self._rewritten(statement)
        if word in TRANSACTION_WORDS:
            return Passthrough(statement.text)
        if word in ("fetch", "move"):
            return self._fetch(statement)
        if word in CURSOR_WORDS:
            return self._closed(statement)
        if word == "execute":
            return self._execute(statement)
        if word == "unlisten":
            return Passthrough(statement.text)
        if word == "listen":
            raise Refusal(POLICY, "LISTEN is not allowed through pgshroud: notifications carry values no policy "
                          "masks", hint="Listen on a direct connection of a role that sees raw data.")
        if word in ("set", "reset", "show") and (name := _pgshroud_setting(statement)) is not None:
            return self._privacy_setting(statement, name)
        if word == "show":
            return Passthrough(statement.text)
        if word == "set":
            return self._checked(statement, functools.partial(check_set, pinned=self._pinned_settings))
        if word == "reset":
            return self._checked(statement, check_reset)
        if word == "discard":
            return Passthrough(statement.text)
        if word == "declare":
            return self._declare(statement)
        if word == "prepare":
            return self._prepare(statement)
        if word == "copy":
            return self._copy(statement)
        if word == "explain":
            return self._explain(statement)
        raise Refusal(
            POLICY,
            f"{word.upper()} statements are not allowed for role \"{self.role.name}\"",
            hint=f"Role {self.role.name} may run SELECT queries; statements that write or change the database "
            "need a role with access: raw.",
        )

    # queries

    def _analysed(self, statement: Statement) -> QueryAnalysis:
        return analyse_query(statement, self.policy, self.role, self.catalog, self.user)

    def _rewritten(self, statement: Statement) -> Plan:
        """A query of a statement, masked: Passthrough when nothing needed masking."""
        replacements = self._masking(statement)
        return Rewrite(splice(statement.text, statement.start, replacements)) if replacements \
            else Passthrough(statement.text)

    def _masked_text(self, query: Statement) -> str:
        """The text of a query (part of a statement) with its protected relations masked."""
        return splice(query.text, query.start, self._masking(query))

    def _masked_new_text(self, text: str) -> str:
        """A query pgshroud wrote itself, with its protected relations masked."""
        return self._masked_text(_new_query(text))

    def _masking(self, query: Statement, analysis: QueryAnalysis | None = None,
                 probe: bool = False) -> list[Replacement]:
        """The replacements that mask a query's protected relations, as spans
        of the whole Query text; `analysis`: the query's, when the caller has
        it already. `probe`: the query is a zero-row probe that never runs
        (_probe_plan), so relations the role may only aggregate are read as
        they are."""
        expanded = _table_commands_expanded(query)
        if expanded is not None:
            # TABLE x means SELECT * FROM x; the masked subquery needs the
            # latter, a new text analysed on its own.
            return [(query.start, query.start + len(query.text), self._masked_new_text(expanded))]
        if analysis is None:
            analysis = self._analysed(query)
        replacements = []
        renamed: set[tuple[str, str]] = set()
        for ref in analysis.refs:
            subquery = self._relation_subquery(ref.relation, analysis.tree, probe)
            if subquery is not None:
                replacements.append(replacement_for(ref, subquery))
                if not ref.has_alias:
                    renamed.add((ref.relation.schema, ref.relation.name))
        if not replacements:
            return []
        # `public.patients.ssn` must now name the subquery, which has no schema.
        replacements += [(start, end, "") for start, end in _schema_qualifiers(analysis.tree, renamed)]
        self._verify_masked(splice(query.text, query.start, replacements), probe)
        return replacements

    def _verify_masked(self, rewritten: str, probe: bool = False) -> None:
        """A second look at the rewritten text: every protected relation it
        reads must be the inner relation of a masked subquery. Catches any
        splice that went wrong before PostgreSQL sees it. A check of the
        text pgshroud wrote, parsed on purpose apart from the query's
        analysis: nothing of this parse is used but its verdict."""
        try:
            (statement,) = split_statements(rewritten)
            tree = parse_statement(statement)
        except Exception:  # noqa: BLE001 - whatever fails to parse fails the check
            raise Refusal(sqlstate.INTERNAL_ERROR,
                          "pgshroud could not verify its own rewrite, so it refused the statement") from None
        for table in tree.find_all(exp.Table):
            if not isinstance(table.this, exp.Identifier):
                continue
            schema = table.args.get("db")
            relation = self.catalog.resolve(fold(schema) if isinstance(schema, exp.Identifier) else None,
                                            fold(table.this), self.user)
            if relation is None or relation.qualified not in self.policy.protected_tables:
                continue
            if self.role.access_to(relation.qualified) == Access.RAW:
                continue
            if probe and self.role.access_to(relation.qualified) == Access.AGGREGATE:
                continue
            if table.alias != INNER_ALIAS.strip('"'):
                raise Refusal(sqlstate.INTERNAL_ERROR,
                              "pgshroud's rewrite left a protected relation unmasked, so it refused")

    def _relation_subquery(self, relation: Relation, tree: exp.Expr, probe: bool = False) -> str | None:
        """None when the relation is read as it is; the masked subquery otherwise.
        `tree`: the query that reads it. `probe`: for a statement that never runs (_probe_plan)."""
        try:
            decision = access.decide(self.policy, self.role, relation)
        except access.AccessRefused as exc:
            raise Refusal(POLICY, str(exc), hint=exc.hint) from None
        reading = decision.reading
        if reading == access.Reading.CATALOG_WITHOUT_ROW_COUNTS:
            try:
                return pg_class_without_row_counts(relation, _system_columns_named(tree))
            except ValueError as exc:
                raise Refusal(POLICY, str(exc)) from None
        if reading == access.Reading.PRIVATE and not probe:
            raise Refusal(
                POLICY,
                f'role "{self.role.name}" may read "{relation.qualified}" only through differentially private '
                "aggregates", hint=access.PRIVATE_HINT)
        if reading != access.Reading.MASKED or decision.table is None:
            # As stored; a probe of a private table reads nothing of it, only
            # its columns' names and types.
            return None
        table = decision.table
        try:
            return masked_subquery(table, relation, self.role.name, table.row_filters.get(self.role.name))
        except ValueError as exc:
            raise Refusal(sqlstate.INTERNAL_ERROR,
                          f"the policy's mask for {relation.qualified} cannot be applied: {exc}") from None

    # statements that wrap a query

    def _declare(self, statement: Statement) -> Plan:
        found = _query_after(statement, "for")
        if found is None:
            raise Refusal(sqlstate.SYNTAX_ERROR, "DECLARE without FOR query")
        position, query = found
        head = self._renamed_head(statement, position)
        private = None
        if self.aggregates_privately:
            private = self._private_plan(self._analysed(query), probes=True)
        if private is None:
            return Rewrite(head + statement.text[position:query.start - statement.start] + self._masked_text(query))
        if isinstance(private, Rewrite):  # a zero-row probe: PostgreSQL's own cursor over no row
            return Rewrite(f"{head} {private.sql}")
        if not isinstance(private, Release):
            return private
        try:
            name, hold, binary = declared_cursor(statement)
        except NamedCommandError as exc:
            raise Refusal(sqlstate.SYNTAX_ERROR, str(exc)) from None
        if binary:
            raise Refusal(sqlstate.FEATURE_NOT_SUPPORTED, "pgshroud holds private answers in text: a BINARY cursor "
                          "of a private query is not supported", hint="Declare the cursor without BINARY.")
        # Charged once; its answer is held by the session and read by FETCH.
        return replace(private, cursor=Cursor(name, hold))

    def _prepare(self, statement: Statement) -> Plan:
        found = _query_after(statement, "as")
        if found is None:
            raise Refusal(sqlstate.SYNTAX_ERROR, "PREPARE without AS statement")
        position, query = found
        if query.first_word not in ("select", "with", "values", "table"):
            raise Refusal(POLICY, "only queries may be prepared")
        head = self._renamed_head(statement, position)
        return Rewrite(head + statement.text[position:query.start - statement.start] + self._masked_text(query))

    def _renamed_head(self, statement: Statement, position: int) -> str:
        """`PREPARE name ... AS` or `DECLARE name ... FOR` with the name translated."""
        if len(statement.tokens) < 2 or statement.tokens[1].start - statement.start >= position:
            raise Refusal(sqlstate.SYNTAX_ERROR, f"{statement.first_word.upper()} needs a name")
        try:
            text = renamed(statement, 1)
        except NamedCommandError as exc:
            raise Refusal(sqlstate.SYNTAX_ERROR, str(exc)) from None
        return text[: position + len(text) - len(statement.text)]

    def _closed(self, statement: Statement) -> Plan:
        try:
            text, name = close_or_deallocate(statement)
        except NamedCommandError as exc:
            raise Refusal(sqlstate.SYNTAX_ERROR, str(exc)) from None
        if name is None:
            return Passthrough(text)  # ALL
        return Rewrite(text, reaches=("S" if statement.first_word == "deallocate" else "P", name))

    def _fetch(self, statement: Statement) -> Plan:
        try:
            text, name = fetch_or_move(statement)
        except NamedCommandError as exc:
            raise Refusal(sqlstate.SYNTAX_ERROR, str(exc)) from None
        return Rewrite(text, reaches=("P", name), step=fetch_step(statement))

    def _execute(self, statement: Statement) -> Plan:
        """EXECUTE of a statement the client prepared; its arguments are
        expressions PostgreSQL evaluates, analysed like a query's select list."""
        try:
            text, name, arguments = execute_arguments(statement)
        except NamedCommandError as exc:
            raise Refusal(sqlstate.SYNTAX_ERROR, str(exc)) from None
        if arguments is not None:
            query = f"SELECT {arguments}"
            if self._masked_new_text(query) != query:
                raise Refusal(POLICY, "EXECUTE arguments may not read protected relations")
        return Rewrite(text, reaches=("S", name))

    def _copy(self, statement: Statement) -> Plan:
        """COPY (query) TO STDOUT and COPY table [(columns)] TO STDOUT, read by
        tokens (a comment or string cannot fake the TO STDOUT)."""
        text, tokens, base = statement.text, statement.tokens, statement.start
        refused = Refusal(POLICY, "only COPY ... TO STDOUT is allowed", hint="Use \\copy in psql to write a file.")
        if len(tokens) > 1 and tokens[1].token_type == TokenType.L_PAREN:
            close = _matching_paren(tokens, 1)
            if [t.text.lower() for t in tokens[close + 1 : close + 3]] != ["to", "stdout"]:
                raise refused
            replacements = self._masking(statement.part(2, close))
            return Rewrite(splice(text, base, replacements)) if replacements else Passthrough(text)
        to = next((i for i, t in enumerate(tokens) if i > 1 and t.text.lower() == "to"), None)
        if to is None or to + 1 >= len(tokens) or tokens[to + 1].text.lower() != "stdout":
            raise refused
        target = text[tokens[1].start - base : tokens[to].start - base].strip()
        options = text[tokens[to + 1].end + 1 - base :]
        columns = "*"
        if tokens[to - 1].token_type == TokenType.R_PAREN:
            opening = next(i for i in range(to - 1, 0, -1) if tokens[i].token_type == TokenType.L_PAREN)
            columns = text[tokens[opening].end + 1 - base : tokens[to - 1].start - base]
            target = text[tokens[1].start - base : tokens[opening].start - base].strip()
        # Copy the masked rows instead of the table.
        query = f"SELECT {columns} FROM {target}"
        return Rewrite(f"COPY ({self._masked_new_text(query)}) TO STDOUT{options}")

    def _explain(self, statement: Statement) -> Plan:
        """EXPLAIN [ANALYZE] [VERBOSE] or EXPLAIN (options) of a query, read by
        tokens: whatever follows the options must be a query, and only a query."""
        query, analyze = _explained_query(statement)
        expanded = _table_commands_expanded(query)
        analysis = self._analysed(query if expanded is None else _new_query(expanded))
        private = self._private_plan(analysis) if self.aggregates_privately else None
        if isinstance(private, Refuse):
            return private
        if isinstance(private, Release):
            if analyze:
                raise Refusal(POLICY, "EXPLAIN ANALYZE of a private aggregate is not allowed: it would run the "
                              "query without noise", hint="Write EXPLAIN without ANALYZE to see the privacy plan.")
            # The privacy plan, computed without reading anything.
            rows = tuple((line,) for line in private.spec.explain())
            return Local(LocalAnswer("EXPLAIN", (Column("QUERY PLAN"),), rows))
        for ref in analysis.refs:
            if ref.relation.qualified in self.policy.protected_tables:
                raise Refusal(
                    POLICY, "EXPLAIN is not allowed on protected relations: its row estimates come from the data"
                )
            self._relation_subquery(ref.relation, analysis.tree)  # refuses what the role may not read at all
        return Passthrough(statement.text)

    # differential privacy

    def _private_plan(self, analysis: QueryAnalysis, probes: bool = False) -> Plan | None:
        """The private plan of a query that reads a table this role may only
        aggregate; None for any other query. `probes`: a zero-row probe of
        such a query is answered with its columns (_probe_plan)."""
        if not any(
            ref.relation.qualified in self.policy.protected_tables
            and self.role.access_to(ref.relation.qualified) == Access.AGGREGATE
            for ref in analysis.refs
        ):
            return None
        tree = analysis.tree
        row_level_query = row_level(tree)
        if probes and returns_no_row(tree, row_level_query):
            return self._probe_plan(analysis)
        private = plan_private(tree, self.policy, self.role, self.catalog, self.user, self.privacy,
                               analysis.statement.tokens)
        if isinstance(private, Refuse) and row_level_query:
            hint = (private.hint + " " if private.hint else "") + PROBE_HINT
            private = Refuse(private.sqlstate, private.message, hint)
        return private

    def _probe_plan(self, analysis: QueryAnalysis) -> Rewrite:
        """A row-level query of protected tables that returns no row by its
        literals alone (LIMIT 0, WHERE false), as BI tools send to learn a
        query's columns: answered with PostgreSQL's columns and types and no
        row. It runs under a WHERE false that PostgreSQL folds into a Result
        with a false one-time filter, so nothing below it is executed and no
        row is read; it costs no budget. Every check of a query still applies
        to what is inside, and relations the role may not read are refused."""
        query = analysis.statement
        rewritten = splice(query.text, query.start, self._masking(query, analysis, probe=True))
        wrapped = f"SELECT * FROM (\n{rewritten}\n) AS {PROBE_ALIAS} WHERE false"
        check_probe_wrapper(wrapped)
        return Rewrite(wrapped)

    def _privacy_setting(self, statement: Statement, name: str) -> Plan:
        """SET, RESET or SHOW of pgshroud.`name`."""
        word = statement.first_word
        try:
            if word == "show":
                return show_plan(name, self.privacy, self.policy)
            if word == "reset":
                return set_plan(name, None, self.policy)
            words = [t.text for t in statement.tokens]
            if words[1].lower() == "local":
                raise SettingError("SET LOCAL is not supported for pgshroud settings; use SET")
            separator = next((i for i, w in enumerate(words) if w.lower() in ("to", "=")), None)
            if separator is None or separator + 1 >= len(words):
                raise SettingError(f"SET pgshroud.{name} needs a value")
            value = "".join(words[separator + 1 :])
            if value.lower() == "default":
                return set_plan(name, None, self.policy)
            return set_plan(name, value, self.policy)
        except SettingError as exc:
            raise Refusal(exc.sqlstate, str(exc)) from None

    @property
    def _pinned_settings(self) -> frozenset[str]:
        """Settings this session may not change: pgshroud fixes them for roles that get private answers."""
        return TIMING_SETTINGS | TIMING_SHAPERS if self.aggregates_privately else frozenset()

    def _set_config(self, statement: Statement, qualified: bool, name: str, value: str | None) -> Plan:
        """`SELECT set_config('name', 'value', is_local)`, which drivers send
        at connect (Django's time zone), is allowed exactly where the SET it
        equals is."""
        if not qualified and "set_config" in self.catalog.user_function_names:
            raise Refusal(POLICY, 'function "set_config" is defined outside pg_catalog and is not allowed by '
                          "the policy", hint="Call pg_catalog.set_config, or use SET.")
        try:
            check_set_config(name, value, pinned=self._pinned_settings)
        except SettingRefused as exc:
            hint = (f"Write SET pgshroud.{name.lower()[len('pgshroud.'):]} = <value>."
                    if name.lower().startswith("pgshroud.") else
                    "set_config may change the settings SET may change (TimeZone, application_name, DateStyle, "
                    "...), with literal arguments.")
            raise Refusal(POLICY, str(exc), hint=hint) from None
        return Passthrough(statement.text)

    def _checked(self, statement: Statement, check: Callable[[Statement], None]) -> Plan:
        try:
            check(statement)
        except SettingRefused as exc:
            raise Refusal(POLICY, str(exc)) from None
        return Passthrough(statement.text)


_TABLE_FOLLOWS = frozenset({"(", "union", "intersect", "except", "all", "distinct", "for", "as"})


def _table_commands_expanded(query: Statement) -> str | None:
    """The query's text with each `TABLE name` command (not the keyword in
    other roles) as `SELECT * FROM name`; None when it has none."""
    tokens = query.tokens
    spans = [
        (token.start, token.end + 1, "SELECT * FROM")
        for i, token in enumerate(tokens)
        if token.token_type == TokenType.TABLE
        and (i == 0 or tokens[i - 1].text.lower() in _TABLE_FOLLOWS)
        # `... AS table,` is a column alias: a TABLE command names a relation next.
        and i + 1 < len(tokens) and tokens[i + 1].token_type in (TokenType.VAR, TokenType.IDENTIFIER, TokenType.ONLY)
    ]
    return splice(query.text, query.start, spans) if spans else None


def _new_query(text: str) -> Statement:
    """A query pgshroud wrote itself (from COPY's table and columns, EXECUTE's
    arguments, a TABLE command spelled out): a text of its own, lexed here."""
    try:
        statements = split_statements(text)
    except LexError as exc:
        raise Refusal(sqlstate.SYNTAX_ERROR, str(exc)) from None
    if len(statements) > 1:
        raise Refusal(sqlstate.SYNTAX_ERROR, "pgshroud cannot analyse this statement: a query here must be one "
                      "statement", hint="Remove the semicolon inside it.")
    return statements[0] if statements else Statement("", 0, ())


_EXPLAIN_WORDS = frozenset({"analyze", "analyse", "verbose"})


def _explained_query(statement: Statement) -> tuple[Statement, bool]:
    """The query an EXPLAIN explains, and whether it asks for ANALYZE (any
    mention of the option counts, whatever value it is given)."""
    tokens = statement.tokens
    i, analyze = 1, False
    if len(tokens) > 1 and tokens[1].token_type == TokenType.L_PAREN:
        close = _matching_paren(tokens, 1)
        analyze = any(t.text.lower() in ("analyze", "analyse") for t in tokens[2:close])
        i = close + 1
    else:
        while i < len(tokens) and tokens[i].token_type != TokenType.IDENTIFIER and tokens[i].text.lower() in _EXPLAIN_WORDS:
            analyze = analyze or tokens[i].text.lower() != "verbose"
            i += 1
    if i >= len(tokens) or tokens[i].token_type in (TokenType.IDENTIFIER, TokenType.STRING) or (
        tokens[i].text.lower() not in ("select", "with", "values", "table")
    ):
        raise Refusal(POLICY, "only EXPLAIN of a query is allowed")
    return statement.part(i), analyze


# Columns every table has but `*` leaves out; DataGrip reads xmin as a
# row's version.
SYSTEM_COLUMNS = ("tableoid", "xmin", "cmin", "xmax", "cmax", "ctid")


def _system_columns_named(tree: exp.Expr) -> tuple[str, ...]:
    named = {fold(c.this) for c in tree.find_all(exp.Column) if isinstance(c.this, exp.Identifier)}
    return tuple(name for name in SYSTEM_COLUMNS if name in named)


def _schema_qualifiers(tree: exp.Expr, renamed: set[tuple[str, str]]) -> list[tuple[int, int]]:
    """Spans of `schema.` in column references to relations now replaced by subqueries."""
    spans = []
    for column in tree.find_all(exp.Column):
        db, table = column.args.get("db"), column.args.get("table")
        if not (isinstance(db, exp.Identifier) and isinstance(table, exp.Identifier)):
            continue
        if (fold(db), fold(table)) in renamed and "start" in db.meta and "start" in table.meta:
            spans.append((db.meta["start"], table.meta["start"]))
    return spans


def _pgshroud_setting(statement: Statement) -> str | None:
    """The X of SET/RESET/SHOW [SESSION] pgshroud.X, else None."""
    words = [t.text.lower() for t in statement.tokens[1:]]
    if words[:1] in (["session"], ["local"]):
        words = words[1:]
    if len(words) >= 3 and words[0] == "pgshroud" and words[1] == ".":
        return words[2]
    return None


def _query_after(statement: Statement, word: str) -> tuple[int, Statement] | None:
    """The offset in the statement's text just after its first `word` (not
    inside a string), and the tokens after it as a query of their own."""
    for i, token in enumerate(statement.tokens):
        if token.text.lower() == word and token.token_type != TokenType.STRING:
            return token.end + 1 - statement.start, statement.part(i + 1)
    return None


def _matching_paren(tokens: Sequence[Token], open_index: int) -> int:
    depth = 0
    for i in range(open_index, len(tokens)):
        if tokens[i].token_type == TokenType.L_PAREN:
            depth += 1
        elif tokens[i].token_type == TokenType.R_PAREN:
            depth -= 1
            if depth == 0:
                return i
    raise Refusal(sqlstate.SYNTAX_ERROR, "unbalanced parentheses")
