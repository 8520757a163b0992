"""From an aggregate query over protected tables to a PrivateQuery.

The analyst's SELECT is read as: sources (protected tables joined on the
privacy unit, public tables), a WHERE over rows, GROUP BY keys, aggregates,
and what happens after aggregation (select-list arithmetic, HAVING, ORDER
BY, LIMIT), which pgshroud evaluates on the noisy values. Outer queries
around the aggregate (as Power BI, Superset and Tableau write them) are more
of the same: stages of WHERE, ORDER BY and LIMIT over the released rows.
Values that read no row (now(), literals, LIMIT $1) are computed by
PostgreSQL once beside the aggregates, and so are the ranks and order
comparisons of text keys, which follow the keys' collation, and a public
key's domain narrowed by the WHERE's conditions on that key alone. Running
totals (SUM(SUM(x)) OVER (ORDER BY keys)) are computed on released groups; a
GROUP BY without aggregates releases keys through partition selection only;
a row-level subquery's OFFSET is accepted only when it is 0. Anything
outside that shape is refused with the reason and what to write instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

from sqlglot import exp
from sqlglot.tokenizer_core import Token, TokenType

from pgshroud.policies.model import Policy, ProtectedTable, Role
from pgshroud.rewriter import access
from pgshroud.rewriter.catalog import Catalog, Relation
from pgshroud.rewriter.private import query as q
from pgshroud.rewriter.private import types as t
from pgshroud.rewriter.private.expressions import (
    ColumnInfo,
    ExpressionRefused,
    RowExpressions,
    bounded_facts,
    column_facts,
    literal_number,
)
from pgshroud.rewriter.private.fan_out import FanOutRefused, check_fan_out, column_equalities, using_equalities
from pgshroud.rewriter.relations import fold
from pgshroud.rewriter.views import quote_ident, relation_view


class PrivateRefusal(ValueError):
    """The query cannot be answered privately; the message says why, the hint what to do."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass
class Source:
    """One FROM item of a private query."""

    alias: str
    columns: dict[str, ColumnInfo]
    sql: str  # the FROM item PostgreSQL reads
    label: str  # for messages: the table's name, or the subquery's alias
    unit_column: str | None = None  # None: a public relation
    max_groups: int = 1
    max_rows: int = 1
    is_table: bool = True
    one_row_per_unit: bool = False  # a protected source with at most one row per person
    unique_keys: tuple[frozenset[str], ...] = ()  # a public table's (rewriter/private/fan_out.py)
    schema: str | None = None  # a table read under its own name: columns may be written schema.table.column

    @property
    def protected(self) -> bool:
        return self.unit_column is not None


AGGREGATE_CLASSES = (exp.Count, exp.Sum, exp.Avg, exp.Variance, exp.VariancePop, exp.Stddev, exp.StddevPop,
                     exp.StddevSamp, exp.Min, exp.Max, exp.Median, exp.WithinGroup, exp.Filter, exp.AggFunc)
KINDS: dict[type[exp.Expr], str] = {exp.Sum: q.SUM, exp.Avg: q.AVG, exp.Variance: q.VAR_SAMP, exp.VariancePop: q.VAR_POP,
         exp.Stddev: q.STDDEV_SAMP, exp.StddevSamp: q.STDDEV_SAMP, exp.StddevPop: q.STDDEV_POP,
         exp.Min: q.MIN, exp.Max: q.MAX}


def aggregate_view(table: ProtectedTable, relation: Relation, role: str) -> str:
    """A protected relation as an aggregate role reads it inside the bounded
    query: columns the role may aggregate raw (mask `none`) and the privacy
    unit unmasked, every other column masked, unnamed columns NULL; values
    clamped (rewriter/views.py). The row filter needs no fence: the bounded
    query evaluates only expressions pgshroud has checked."""
    return relation_view(table, relation, role, table.row_filters.get(role), raw_unit=True, clamped=True,
                         fenced=False)


def _column_info(table: ProtectedTable | None, relation: Relation, role: str) -> dict[str, ColumnInfo]:
    infos = {}
    for name, format_type in relation.columns:
        kind = t.base_type(format_type)
        if table is None:
            infos[name] = ColumnInfo(kind, not_null=name in relation.not_null,
                                     domain_sql=_distinct_values(relation.schema, relation.name, name),
                                     facts=column_facts(format_type, tamed=False))
            continue
        policy = table.columns.get(name)
        unit = name == table.privacy_unit.column
        raw = unit or (policy is not None and policy.mask_for(role).kind == "none")
        if policy is not None and policy.mask_for(role).kind == "age_band":
            kind = "text"
        bounds = None
        if raw and policy is not None and policy.bounds is not None:
            bounds = (Fraction(policy.bounds[0]), Fraction(policy.bounds[1]))
        domain = policy.public_domain if raw and policy is not None else None
        domain_sql = None
        if domain is not None:
            # PostgreSQL spells the values as the data does (t for true, 1.0 for 1 in numeric(3,1)).
            values = ", ".join(f"({_string_literal(v)})" for v in domain)
            domain_sql = f'SELECT CAST("v" AS {format_type}) FROM (VALUES {values}) AS "d"("v")'
        if raw and policy is not None and policy.public_domain_table is not None:
            schema, other, column = policy.public_domain_table.split(".")
            domain_sql = _distinct_values(schema, other, column)
        # Read through aggregate_view: tamed, but for the unit, which is read as stored.
        facts = column_facts("text" if kind == "text" else format_type, tamed=not unit)
        day_bounds = None
        if raw and policy is not None and policy.date_bounds is not None and kind == "date":
            day_bounds = (Fraction((policy.date_bounds[0] - q.DAY_ZERO).days),
                          Fraction((policy.date_bounds[1] - q.DAY_ZERO).days))
        infos[name] = ColumnInfo(kind, bounds, domain, domain_sql, protected=True, unit=unit,
                                 not_null=name in relation.not_null, facts=facts, day_bounds=day_bounds)
    return infos


def _string_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _distinct_values(schema: str, table: str, column: str) -> str:
    return f"SELECT DISTINCT {quote_ident(column)} FROM {quote_ident(schema)}.{quote_ident(table)}"


class PrivateAnalyser:
    """Analyses one SELECT of an aggregate role."""

    def __init__(self, policy: Policy, role: Role, catalog: Catalog, user: str) -> None:
        self.policy = policy
        self.role = role
        self.catalog = catalog
        self.user = user
        self.sources: dict[str, Source] = {}
        self.rows = RowExpressions(self._resolve)
        self.aggregates: list[q.Aggregate] = []
        self.keys: list[q.Key] = []
        self.key_nodes: list[exp.Expr] = []
        self.notices: list[str] = []
        self.ctes: dict[str, exp.Select] = {}
        self.deriving = False  # reading a subquery in FROM, which may group by the unit
        self.nullable: set[str] = set()  # sources on the nullable side of a LEFT JOIN
        self.constants: list[q.Constant] = []
        self.key_tests: list[q.KeyTest] = []
        self.merged: dict[str, set[str]] = {}  # column name -> aliases joined USING it
        self.running: list[q.Running] = []

    # entry

    def analyse(self, tree: exp.Expr, written: list[str | None] | None = None) -> q.PrivateQuery:
        """`written`: the function name each select item starts with as the
        analyst wrote it (sqlglot folds var_samp into variance), for column names."""
        self.written = written or []
        if not isinstance(tree, exp.Select):
            raise PrivateRefusal("a private query must be a single SELECT (no UNION, INTERSECT or EXCEPT)",
                                 hint="Run each part as its own query.")
        self._read_ctes(tree)
        inner = self._aggregate_inside(tree)
        if inner is not None:
            return self._wrap(tree, *inner)
        self._check_shape(tree, "a private query")
        keys_only = not any(isinstance(n, AGGREGATE_CLASSES) for item in tree.expressions for n in item.walk())
        if keys_only and tree.args.get("group") is None:
            raise PrivateRefusal(
                f'role "{self.role.name}" reads protected tables only through differentially private '
                "aggregates: row-level results are not released",
                hint="Use count(*), sum, avg, ... with GROUP BY; pgshroud adds noise to the result.",
            )
        unit_sql = self._read_relations(tree)
        self._read_keys(tree)
        if keys_only:
            self._keys_by_selection()
        self._narrow_domains(tree)
        outputs = self._read_outputs(tree)
        having = tree.args.get("having")
        having_expression = self._collated(self._post(having.this, "HAVING")) if having is not None else None
        order = self._read_order(tree, outputs)
        limit, offset = self._limit(tree)
        protected = [s for s in self.sources.values() if s.protected]
        max_groups = max(s.max_groups for s in protected)
        max_rows = max(s.max_rows for s in protected)
        return q.PrivateQuery(
            source_sql=self._source_sql(tree),
            unit_sql=unit_sql,
            keys=tuple(self.keys),
            aggregates=tuple(self.aggregates),
            outputs=tuple(outputs),
            having=having_expression,
            order=tuple(order),
            limit=limit,
            offset=offset,
            # Without GROUP BY there is one group: a person's whole allowance
            # (max_groups x max_rows rows) goes to it, at the same sensitivity.
            max_groups=max_groups if self.keys else 1,
            max_rows=max_rows if self.keys else max_groups * max_rows,
            notices=tuple(self.notices),
            constants=tuple(self.constants),
            key_tests=tuple(self.key_tests),
            running=tuple(self.running),
        )

    # outer queries over a private aggregate

    def _aggregate_inside(self, tree: exp.Select) -> tuple[exp.Select, str] | None:
        """The aggregate query and its alias, when `tree` only post-processes
        its rows: one subquery (or CTE) in FROM that aggregates, and no
        aggregate outside it."""
        from_ = tree.args.get("from_") or tree.args.get("from")
        if from_ is None or tree.args.get("joins"):
            return None
        if any(isinstance(n, AGGREGATE_CLASSES) for item in tree.expressions for n in item.walk()):
            return None
        item = from_.this
        if isinstance(item, exp.Subquery) and isinstance(item.this, exp.Select) and item.alias:
            select, alias = item.this, fold(item.args["alias"].this)
        elif isinstance(item, exp.Table) and item.args.get("db") is None and isinstance(item.this, exp.Identifier) \
                and fold(item.this) in self.ctes:
            alias_node = item.args.get("alias")
            alias = fold(alias_node.this) if alias_node is not None and isinstance(alias_node.this, exp.Identifier) \
                else fold(item.this)
            select = self.ctes[fold(item.this)].copy()
        else:
            return None
        return (select, alias) if self._aggregates(select) else None

    def _aggregates(self, select: exp.Select) -> bool:
        """Whether a query aggregates, itself or in the query it wraps (with its own CTEs)."""
        if select.args.get("group") is not None or any(
                isinstance(n, AGGREGATE_CLASSES) for each in select.expressions for n in each.walk()):
            return True
        probe = PrivateAnalyser(self.policy, self.role, self.catalog, self.user)
        probe.ctes = dict(self.ctes)
        copy = select.copy()
        probe._read_ctes(copy)
        return probe._aggregate_inside(copy) is not None

    def _renamed(self, tree: exp.Select, outputs: tuple[q.Output, ...]) -> tuple[q.Output, ...]:
        """The aggregate's columns under the names its alias gives them: AS t(a, b)."""
        alias = _from_item(tree).args.get("alias")
        names = [fold(c) for c in alias.columns] if isinstance(alias, exp.TableAlias) else []
        if isinstance(alias, exp.TableAlias) and len(names) > len(outputs):
            raise PrivateRefusal(f"{alias.sql('postgres')[:60]} names {len(names)} columns, but the aggregate has "
                                 f"{len(outputs)}")
        return tuple(replace(o, name=n) for o, n in zip(outputs, names)) + outputs[len(names):]

    def _wrap(self, tree: exp.Select, select: exp.Select, alias: str) -> q.PrivateQuery:
        """An outer query over a private aggregate: post-processing of its
        released rows, evaluated on them by pgshroud."""
        inner_analyser = PrivateAnalyser(self.policy, self.role, self.catalog, self.user)
        inner_analyser.ctes = dict(self.ctes)
        inner = inner_analyser.analyse(select)
        what = "a query over a private aggregate"
        self._check_shape(tree, what)
        for clause, name in (("group", "GROUP BY"), ("having", "HAVING")):
            if tree.args.get(clause) is not None:
                raise PrivateRefusal(f"{name} is not supported in {what}",
                                     hint="Group and aggregate in the inner query; the outer one may filter, "
                                          "compute, order and limit its rows.")
        self.keys, self.aggregates = list(inner.keys), list(inner.aggregates)
        self.constants, self.key_tests = list(inner.constants), list(inner.key_tests)
        named = self._renamed(tree, inner.outputs)
        columns: dict[str, q.Output | None] = {}
        for output in named:
            columns[output.name] = None if output.name in columns else output  # None: ambiguous
        outputs = self._outer_outputs(tree, alias, named, columns)
        where = tree.args.get("where")
        condition = self._collated(self._outer(where.this, alias, columns, "WHERE")) if where is not None else None
        order = self._read_order(tree, outputs, lambda node: self._outer(node, alias, columns, "ORDER BY"))
        limit, offset = self._limit(tree)
        stage = q.Stage(condition, tuple(order), limit, offset)
        return replace(inner, outputs=tuple(outputs), outer=inner.outer + (stage,), constants=tuple(self.constants),
                       key_tests=tuple(self.key_tests))

    def _collated(self, expression: exp.Expr) -> exp.Expr:
        """Order comparisons of a text key with a string literal, as tests
        PostgreSQL evaluates under the key's collation (Python's order of
        strings is the C collation's, which the database's need not be)."""
        def test(node: exp.Expr) -> exp.Expr:
            if type(node) not in ORDER_OPERATORS:
                return node
            left, right, operator = node.this, node.expression, ORDER_OPERATORS[type(node)]
            if self._text_key(right) is not None:
                left, right, operator = right, left, FLIPPED[operator]
            key = self._text_key(left)
            if key is None or not isinstance(right, exp.Literal) or not right.is_string:
                return node
            found = q.KeyTest(key, operator, _string_literal(right.this))
            if found not in self.key_tests:
                self.key_tests.append(found)
            return exp.var(f"test{self.key_tests.index(found)}")

        return expression.transform(test)

    def _text_key(self, node: exp.Expr) -> int | None:
        while isinstance(node, exp.Paren):
            node = node.this
        if isinstance(node, exp.Var) and node.name.startswith("key"):
            index = int(node.name[3:])
            return index if self.keys[index].type_name in q.TEXT_TYPES else None
        return None

    def _outer_outputs(self, tree: exp.Select, alias: str, inner: tuple[q.Output, ...],
                       columns: dict[str, q.Output | None]) -> list[q.Output]:
        outputs: list[q.Output] = []
        for position, item in enumerate(tree.expressions):
            node = item.unalias()
            star = isinstance(node, exp.Star) or (isinstance(node, exp.Column) and isinstance(node.this, exp.Star))
            if star:
                qualifier = node.args.get("table") if isinstance(node, exp.Column) else None
                if qualifier is not None and fold(qualifier) != alias:
                    raise PrivateRefusal(f'missing FROM-clause entry for table "{fold(qualifier)}"')
                outputs += inner
                continue
            expression = self._collated(self._outer(node, alias, columns, "the select list"))
            written = self.written[position] if position < len(self.written) else None
            name = _output_name(item, written)
            if isinstance(node, exp.Column):
                output = columns[self._outer_name(node, alias)]
                assert output is not None
                outputs.append(q.Output(name, expression, output.type_name))
                continue
            if not isinstance(expression, exp.Var) and not any(isinstance(n, exp.Var) for n in expression.walk()):
                expression = self._constant(node)
            outputs.append(q.Output(name, expression, self._post_type(expression)))
        return outputs

    def _outer_name(self, column: exp.Column, alias: str) -> str:
        qualifier = column.args.get("table")
        if column.args.get("db") is not None or (qualifier is not None and fold(qualifier) != alias):
            raise PrivateRefusal(f"the column reference {column.sql('postgres')[:80]} names no table of the FROM clause",
                                 hint=f'Qualify the columns of the aggregate by "{alias}".')
        return fold(column.this) if isinstance(column.this, exp.Identifier) else column.name

    def _outer(self, node: exp.Expr, alias: str, columns: dict[str, q.Output | None],
               where: str) -> exp.Expr:
        """An outer query's expression over the aggregate's columns, as an
        expression over its keys, aggregates and constants."""
        def substitute(each: exp.Expr) -> exp.Expr:
            if isinstance(each, exp.Column) and not isinstance(each.this, exp.Star):
                name = self._outer_name(each, alias)
                if name not in columns:
                    raise PrivateRefusal(f'column "{name}" does not exist in {where}')
                output = columns[name]
                if output is None:
                    raise PrivateRefusal(f'column reference "{name}" is ambiguous in {where}')
                expression = output.expression.copy()
                return expression if isinstance(expression, exp.Var) else exp.Paren(this=expression)
            return each

        if not list(node.find_all(exp.Column)):
            return self._constant(node) if _needs_upstream(node) else node.copy()
        rewritten = node.copy().transform(substitute)
        for each in rewritten.walk():
            if not isinstance(each, POST_NODES):
                raise PrivateRefusal(f"{_quoted(each)} cannot be applied to the columns of a private aggregate "
                                     f"in {where}",
                                     hint="Use arithmetic, round, casts, comparisons or coalesce on aggregates.")
        return rewritten

    # values that depend on no row

    def _constant(self, node: exp.Expr) -> exp.Var:
        """A value that reads no row, computed upstream once: its variable."""
        sql, type_name = self._constant_sql(node)
        if type_name not in t.OIDS or type_name == "unknown":
            raise PrivateRefusal(f"{node.sql('postgres')[:60]} has a type pgshroud does not release "
                                 f"({type_name}) in a private query", hint="Cast it to text.")
        constant = q.Constant(sql, type_name)
        if constant not in self.constants:
            self.constants.append(constant)
        return exp.var(f"const{self.constants.index(constant)}")

    def _constant_sql(self, node: exp.Expr) -> tuple[str, str]:
        if not any(isinstance(n, TIME_NODES) for n in node.walk()):
            type_name = self._row_check(node, "the select list")
            return self.rows.safe_sql(node), "text" if type_name == "unknown" else type_name
        return self._time_constant(node)

    def _time_constant(self, node: exp.Expr) -> tuple[str, str]:
        """now(), current_date, localtimestamp, interval literals, their sums,
        differences and casts to dates, timestamps and text: the SQL and
        PostgreSQL's type."""
        if isinstance(node, exp.Paren):
            sql, type_name = self._time_constant(node.this)
            return f"({sql})", type_name
        if type(node) in TIME_VALUES:
            if node.args.get("this") is not None or node.args.get("zone") is not None:
                raise PrivateRefusal(f"{node.sql('postgres')} with a precision or zone is not supported in a "
                                     "private query", hint="Write now(), current_date or localtimestamp.")
            return TIME_VALUES[type(node)]
        if isinstance(node, exp.Interval):
            value, unit = node.this, node.args.get("unit")
            if not isinstance(value, exp.Literal) or not value.is_string:
                raise PrivateRefusal("an interval in a private query is a literal: interval '1 day'")
            text = value.this + (f" {unit.name}" if unit is not None else "")
            return f"CAST({_string_literal(text)} AS interval)", "interval"
        if isinstance(node, exp.Cast):
            target = t.cast_target(node.to)
            if target is None or target.name not in t.TIMES + t.TEXTS or target.modifier:
                raise PrivateRefusal(f"a cast of now() or current_date to {node.to.sql('postgres')} is not supported "
                                     "in a private query", hint="Cast it to date, timestamp, timestamptz or text.")
            sql, _ = self._time_constant(node.this)
            return f"CAST({sql} AS {target.name})", target.name
        if isinstance(node, (exp.Add, exp.Sub)):
            (left, left_type), (right, right_type) = (self._time_constant(node.this),
                                                       self._time_constant(node.expression))
            result = _time_arithmetic(isinstance(node, exp.Add), left_type, right_type)
            if result is None:
                raise PrivateRefusal(f"{node.sql('postgres')[:80]}: {left_type} "
                                     f"{'+' if isinstance(node, exp.Add) else '-'} {right_type} is not supported in "
                                     "a private query", hint="Add or subtract an interval: now() - interval '1 day'.")
            return f"{left} {'+' if isinstance(node, exp.Add) else '-'} {right}", result
        if any(isinstance(n, TIME_NODES) for n in node.walk()):
            raise PrivateRefusal(f"{node.sql('postgres')[:80]} is not supported in a private query",
                                 hint="Use now(), current_date, localtimestamp, plus or minus interval literals, "
                                      "and casts to date or timestamp.")
        type_name = self._row_check(node, "a date computation")
        return self.rows.safe_sql(node), type_name

    def _limit(self, tree: exp.Select) -> tuple[q.Bound, q.Bound]:
        """LIMIT/FETCH and OFFSET: literals, NULL or ALL (no limit), or bind
        parameters, which PostgreSQL reads beside the aggregates."""
        limit, offset = tree.args.get("limit"), tree.args.get("offset")
        if isinstance(limit, exp.Fetch):
            options = limit.args.get("limit_options")
            if options is not None and (options.args.get("percent") or options.args.get("with_ties")):
                raise PrivateRefusal("FETCH ... PERCENT and WITH TIES are not supported in a private query",
                                     hint="Write FETCH FIRST n ROWS ONLY.")
            count = limit.args.get("count")
            limit_value = self._bound(count, "limit") if count is not None else 1
        else:
            limit_value = self._bound(limit.expression, "limit") if limit is not None else None
        offset_value = self._bound(offset.expression, "offset") if offset is not None else 0
        return limit_value, (0 if offset_value is None else offset_value)

    def _bound(self, node: exp.Expr, clause: str) -> q.Bound:
        if isinstance(node, exp.Null) or (isinstance(node, exp.Var) and node.name.upper() == "ALL"):
            return None
        source = node
        while isinstance(source, (exp.Paren, exp.Cast)):
            if isinstance(source, exp.Cast):
                target = t.cast_target(source.to)
                if target is None or target.name not in t.NUMBERS:
                    raise PrivateRefusal(f"the argument of {clause.upper()} must be a number",
                                         hint="Cast the bind parameter to bigint, or leave it uncast.")
            source = source.this
        if isinstance(source, exp.Parameter):
            # Its value comes with the Bind: PostgreSQL reads it as bigint
            # (rounding a numeric, as LIMIT does) and fails a negative one.
            number = literal_number(source.this) if isinstance(source.this, exp.Literal) else None
            constant = q.Constant(f"CAST(({node.sql('postgres')}) AS bigint)", "bigint", clause,
                                  int(number) if number is not None else None)
            if constant not in self.constants:
                self.constants.append(constant)
            return f"const{self.constants.index(constant)}"
        number = literal_number(node)
        if number is None or number.denominator != 1 or number < 0:
            raise PrivateRefusal(f"{clause.upper()} takes a non-negative integer or a bind parameter in a private query")
        return int(number)

    def _read_ctes(self, tree: exp.Select) -> None:
        with_ = tree.args.get("with_") or tree.args.get("with")
        if with_ is None:
            return
        if with_.args.get("recursive"):
            raise PrivateRefusal("WITH RECURSIVE is not supported in a private query")
        for cte in with_.expressions:
            name = fold(cte.args["alias"].this)
            if not isinstance(cte.this, exp.Select):
                raise PrivateRefusal(f'the CTE "{name}" must be a SELECT in a private query')
            self.ctes[name] = cte.this
        tree.set("with_", None)
        tree.set("with", None)

    def _check_shape(self, tree: exp.Select, what: str) -> None:
        for unsupported, clause in (("distinct", "SELECT DISTINCT"), ("windows", "WINDOW"),
                                    ("locks", "FOR UPDATE/SHARE"), ("qualify", "QUALIFY")):
            if tree.args.get(unsupported):
                raise PrivateRefusal(f"{clause} is not supported in {what}")
        for node in tree.walk():
            if isinstance(node, exp.Window) and not (_select_item(node, tree) and _running_shape(node)):
                raise PrivateRefusal("window functions cannot be used over protected rows",
                                     hint="Aggregate first; pgshroud answers aggregates with noise.")
            nested = isinstance(node, (exp.Exists, exp.Subquery)) or (isinstance(node, exp.Select) and node is not tree)
            if nested and not _inside_from_subquery(node, tree):
                raise PrivateRefusal("subqueries are allowed only in FROM in a private query",
                                     hint="Join on the privacy unit, or aggregate per person in a subquery in FROM.")

    def _read_relations(self, tree: exp.Select) -> str:
        """Sources, the join on units and WHERE; returns the row's unit SQL."""
        self._read_sources(tree)
        unit_sql = self._join_on_units(tree)
        where = tree.args.get("where")
        if where is not None:
            self._row_check(where.this, "WHERE")
        return unit_sql

    # sources

    def _read_sources(self, tree: exp.Select) -> None:
        from_ = tree.args.get("from_") or tree.args.get("from")
        if from_ is None:
            raise PrivateRefusal("a private query reads a protected table")
        items = [from_.this] + [join.this for join in tree.args.get("joins") or []]
        for join in tree.args.get("joins") or []:
            for using in join.args.get("using") or []:
                name = fold(using) if isinstance(using, exp.Identifier) else using.name
                self.merged.setdefault(name, set()).add(_alias_of(join.this))
        for item in items:
            source = self._source(item)
            if source.alias in self.sources:
                raise PrivateRefusal(f'the name "{source.alias}" is used for two relations; give them different aliases')
            self.sources[source.alias] = source
            item.set("alias", exp.TableAlias(this=exp.to_identifier(source.alias)))
        if not any(s.protected for s in self.sources.values()):
            raise PrivateRefusal("internal: a private query without protected tables")
        self._unqualify_columns(tree)

    def _unqualify_columns(self, tree: exp.Select) -> None:
        """Columns written schema.table.column (as Metabase and Prisma write
        them) read as table.column: the table became a subquery of that
        alias, which PostgreSQL lets no schema qualify. PostgreSQL accepts
        the schema only for a table read under its own name, from that schema."""
        for column in list(tree.find_all(exp.Column)):
            schema = column.args.get("db")
            if schema is None or _inside_from_subquery(column, tree):
                continue
            written = column.sql("postgres")
            if column.args.get("catalog") is not None:
                raise PrivateRefusal(f"the column reference {written[:80]} names a database",
                                     hint="Write table.column or schema.table.column.")
            qualifier = column.args.get("table")
            alias = fold(qualifier) if isinstance(qualifier, exp.Identifier) else None
            source = self.sources.get(alias or "")
            if source is None or source.schema is None or not isinstance(schema, exp.Identifier) \
                    or fold(schema) != source.schema:
                raise PrivateRefusal(f"the column reference {written[:80]} names no table of the FROM clause",
                                     hint="Qualify a column by the alias of its table, or by schema.table "
                                          "when the table has no alias.")
            column.set("db", None)

    def _source(self, item: exp.Expr) -> Source:
        alias_node = item.args.get("alias")
        if isinstance(alias_node, exp.TableAlias) and alias_node.columns:
            raise PrivateRefusal(f"column aliases in FROM ({alias_node.sql('postgres')[:60]}) are not supported in a "
                                 "private query", hint="Rename columns with AS in the select list instead.")
        if isinstance(item, exp.Subquery) and isinstance(item.this, exp.Select):
            if not item.alias or alias_node is None or not isinstance(alias_node.this, exp.Identifier):
                raise PrivateRefusal("a subquery in FROM needs an alias")
            return self._derived(item.this, fold(alias_node.this))
        if not isinstance(item, exp.Table) or not isinstance(item.this, exp.Identifier):
            raise PrivateRefusal(f"{item.sql('postgres')[:60]} cannot be a source of a private query",
                                 hint="Read protected and public tables, joined on the privacy unit.")
        schema = item.args.get("db")
        name = fold(item.this)
        alias_node = item.args.get("alias")
        aliased = alias_node is not None and isinstance(alias_node.this, exp.Identifier)
        alias = fold(alias_node.this) if alias_node is not None and aliased else name
        if schema is None and name in self.ctes:
            return self._derived(self.ctes[name].copy(), alias)
        relation = self.catalog.resolve(fold(schema) if isinstance(schema, exp.Identifier) else None, name, self.user)
        if relation is None:
            raise PrivateRefusal(f'relation "{item.name}" is not known')
        try:
            decision = access.decide(self.policy, self.role, relation)
        except access.AccessRefused as exc:
            raise PrivateRefusal(str(exc), exc.hint) from None
        if decision.reading in (access.Reading.CATALOG, access.Reading.CATALOG_WITHOUT_ROW_COUNTS):
            raise PrivateRefusal(f'the system catalog relation "{relation.qualified}" cannot be a source of a '
                                 "private query", hint="Read protected and public tables, joined on the privacy unit.")
        if decision.reading in (access.Reading.RAW, access.Reading.MASKED):
            raise PrivateRefusal(f'role "{self.role.name}" reads "{relation.qualified}" row by row, '
                                 "so it cannot be mixed into a private aggregate")
        table = decision.table
        columns = _column_info(table, relation, self.role.name)
        if table is None:
            sql = f"{quote_ident(relation.schema)}.{quote_ident(relation.name)}"
            return Source(alias, columns, f"{sql} AS {quote_ident(alias)}", relation.qualified,
                          unique_keys=relation.unique_keys, schema=None if aliased else relation.schema)
        sql = aggregate_view(table, relation, self.role.name)
        unit = table.privacy_unit
        # The table that identifies people has one row each (the policy says
        # so by naming its own column the unit), as has one keyed on it.
        one_row = unit.references is None or frozenset({unit.column}) in relation.unique_keys
        return Source(alias, columns, f"{sql} AS {quote_ident(alias)}", relation.name, unit.column,
                      table.contribution.max_groups_per_unit, table.contribution.max_rows_per_group,
                      one_row_per_unit=one_row, schema=None if aliased else relation.schema)

    def _derived(self, select: exp.Select, alias: str) -> Source:
        inner = PrivateAnalyser(self.policy, self.role, self.catalog, self.user)
        inner.ctes = dict(self.ctes)
        source = inner.derive(select, alias)
        for constant in inner.constants:  # checks of its OFFSET $n, made with the query's own constants
            if constant not in self.constants:
                self.constants.append(constant)
        return source

    def _zero_offset(self, select: exp.Select, what: str) -> bool:
        """A row-level subquery's OFFSET that skips no row (Prisma writes
        OFFSET $1 and binds 0), dropped from the bounded SQL: any other
        OFFSET skips rows that depend on other people's rows. A literal must
        be 0 or NULL; a bind parameter is checked at Bind (a constant with
        the check "zero_offset"), and its value checked upstream again."""
        if select.args.get("order") or select.args.get("limit") or select.args.get("group"):
            return False
        node = select.args["offset"].expression
        source = node
        while isinstance(source, (exp.Paren, exp.Cast)):
            if isinstance(source, exp.Cast):
                target = t.cast_target(source.to)
                if target is None or target.name not in t.NUMBERS:
                    return False
            source = source.this
        if isinstance(source, exp.Parameter) and isinstance(source.this, exp.Literal):
            number = literal_number(source.this)
            constant = q.Constant(f"CAST(({node.sql('postgres')}) AS bigint)", "bigint", "zero_offset",
                                  int(number) if number is not None else None)
            if constant not in self.constants:
                self.constants.append(constant)
            return True
        if isinstance(node, exp.Null) or literal_number(node) == 0:
            return True
        raise PrivateRefusal(f"OFFSET {node.sql('postgres')[:40]} in {what} skips rows, which depends on other "
                             "people's rows, so a private query takes only OFFSET 0 there",
                             hint="Remove the OFFSET, or write OFFSET 0.")

    # subqueries and CTEs in FROM

    def derive(self, select: exp.Select, alias: str) -> Source:
        """A subquery in FROM as a source whose rows each belong to one
        person: either row-level (columns and safe expressions of its
        sources) or grouped by the privacy unit, with each aggregate a
        per-person value clamped to bounds that follow from the policy."""
        self.deriving = True
        self._read_ctes(select)
        what = f'the subquery "{alias}"'
        self._check_shape(select, what)
        for clause in ("order", "limit", "offset", "having"):
            if select.args.get(clause) and not (clause == "offset" and self._zero_offset(select, what)):
                raise PrivateRefusal(
                    f"{clause.upper()} is not supported in {what} of a private query",
                    hint="A top-N filter (a join with a subquery that orders and limits an aggregate) takes two "
                    "queries: first the top keys (ORDER BY ... LIMIT n), then the aggregate with WHERE key IN "
                    "(...)." if clause in ("order", "limit") else None)
        unit_sql = self._read_relations(select)
        protected = [s for s in self.sources.values() if s.protected]
        max_groups = max(s.max_groups for s in protected)
        max_rows = max(s.max_rows for s in protected)
        allowance = max_groups * max_rows  # rows of one person, over all groups
        parts = [f'{unit_sql} AS "pgshroud_unit"']
        columns = {"pgshroud_unit": ColumnInfo("unknown", protected=True, unit=True)}
        group = select.args.get("group")
        if group is not None:
            self._read_keys(select)
            if not any(isinstance(k, exp.Column) and self._resolve(k).unit for k in self.key_nodes):
                raise PrivateRefusal(f"{what} aggregates, so it must GROUP BY the privacy unit",
                                     hint="Aggregate per person in FROM, then aggregate the per-person values outside.")
        elif any(isinstance(n, AGGREGATE_CLASSES) for item in select.expressions for n in item.walk()):
            raise PrivateRefusal(f"{what} aggregates, so it must GROUP BY the privacy unit",
                                 hint="Aggregate per person in FROM, then aggregate the per-person values outside.")

        def add(name: str, sql: str, info: ColumnInfo) -> None:
            if name in columns:
                raise PrivateRefusal(f'{what} has two columns named "{name}"; give them different aliases')
            parts.append(f"{sql} AS {quote_ident(name)}")
            columns[name] = info

        for item in select.expressions:
            node = item.unalias()
            if isinstance(node, exp.Star) or (isinstance(node, exp.Column) and isinstance(node.this, exp.Star)):
                if group is not None:
                    raise PrivateRefusal(f"{what} cannot select * with GROUP BY")
                qualifier = node.table if isinstance(node, exp.Column) else None
                for source in self.sources.values():
                    if qualifier and source.alias != qualifier:
                        continue
                    for name, info in source.columns.items():
                        if name != "pgshroud_unit":
                            add(name, f"{quote_ident(source.alias)}.{quote_ident(name)}", info)
                continue
            name = _output_name(item)
            if any(isinstance(n, AGGREGATE_CLASSES) for n in node.walk()):
                sql, info = self._per_person(node, allowance)
                add(name, sql, info)
                continue
            if group is not None and self._canonical(node) not in {self._canonical(k) for k in self.key_nodes}:
                raise PrivateRefusal(f"{node.sql('postgres')[:60]} in {what} must appear in GROUP BY")
            type_name = self._row_check(node, what)
            bounds = self.rows.bounds_of(node) if t.is_number(type_name) else (None, None)
            unit = isinstance(node, exp.Column) and self._resolve(node).unit
            domain_sql = self._resolve(node).domain_sql if isinstance(node, exp.Column) else None
            add(name, self.rows.safe_sql(node), ColumnInfo(
                type_name, None if None in bounds else bounds, self._domain(node), domain_sql,  # type: ignore[arg-type]
                protected=True, unit=unit, facts=self.rows.facts_of(node)))
        sql = f"SELECT {', '.join(parts)} {self._source_sql(select)}"
        per_person = False
        if group is not None:
            sql += " GROUP BY " + ", ".join([unit_sql] + [key.sql for key in self.keys])
            per_person = all(isinstance(k, exp.Column) and self._resolve(k).unit for k in self.key_nodes)
        return Source(alias, columns, f"({sql}) AS {quote_ident(alias)}", alias, "pgshroud_unit",
                      # Grouped by the unit alone, each person has one row.
                      1 if per_person else max_groups, 1 if per_person else max_rows, is_table=False,
                      one_row_per_unit=per_person)

    def _per_person(self, node: exp.Expr, allowance: int) -> tuple[str, ColumnInfo]:
        """An aggregate of one person's rows, clamped to bounds from the policy."""
        label = node.sql("postgres")
        if isinstance(node, exp.Filter):
            raise PrivateRefusal(f"FILTER is not supported in a per-person subquery: {label}")
        if isinstance(node, exp.Count):
            argument = node.this
            if isinstance(argument, exp.Star) or argument is None:
                inner = "count(*)"
            elif isinstance(argument, exp.Distinct) and len(argument.expressions) == 1:
                self._row_check(argument.expressions[0], label)
                inner = f"count(DISTINCT {self.rows.safe_sql(argument.expressions[0])})"
            else:
                self._row_check(argument, label)
                inner = f"count({self.rows.safe_sql(argument)})"
            domain = tuple(str(i) for i in range(allowance + 1))
            bounds = (Fraction(0), Fraction(allowance))
            return f"LEAST({inner}, {allowance})", ColumnInfo(
                "bigint", bounds, domain, protected=True, facts=bounded_facts("bigint", *bounds, integer=True))
        if type(node) not in (exp.Sum, exp.Avg, exp.Min, exp.Max):
            raise PrivateRefusal(f"{label} is not supported per person in a subquery",
                                 hint="Per person, use count, sum, avg, min or max.")
        argument = node.this
        argument_type = self._row_check(argument, label)
        if argument_type in t.TIMES and isinstance(node, (exp.Min, exp.Max)):
            # One person's first or last date, a value of their own rows (Tableau's FIXED level of
            # detail): a row value of that person's, which only noisy aggregates outside release.
            function = "min" if isinstance(node, exp.Min) else "max"
            return f"{function}({self.rows.safe_sql(argument)})", ColumnInfo(
                argument_type, None, None, protected=True, facts=self.rows.facts_of(argument))
        _require_number(label, argument_type)
        low, high = self.rows.bounds_of(argument)
        if low is None or high is None:
            raise PrivateRefusal(f"{label} needs bounds on its argument, and pgshroud cannot derive them",
                                 hint=_bounds_hint(argument, self))
        value = f"NULLIF(({self.rows.safe_sql(argument)})::numeric, 'NaN'::numeric)"
        functions: dict[type[exp.Expr], str] = {exp.Sum: "sum", exp.Avg: "avg", exp.Min: "min", exp.Max: "max"}
        function = functions[type(node)]
        if isinstance(node, exp.Sum):
            low, high = allowance * min(low, Fraction(0)), allowance * max(high, Fraction(0))
            type_name = t.sum_type(argument_type)
        else:
            type_name = t.average_type(argument_type) if isinstance(node, exp.Avg) else argument_type
        clamped = f"LEAST(GREATEST({function}({value}), {_sql_number(low)}), {_sql_number(high)})"
        sql = f"CASE WHEN {function}({value}) IS NULL THEN NULL ELSE {clamped} END"
        return sql, ColumnInfo(type_name, (low, high), None, protected=True,
                               facts=bounded_facts(type_name, low, high))

    def _join_on_units(self, tree: exp.Select) -> str:
        """The unit of the joined row: every protected source must be joined
        to the first on equal privacy units, so a joined row belongs to one person."""
        protected = [s for s in self.sources.values() if s.protected]
        first = protected[0]
        linked = {first.alias}
        equalities: list[tuple[str, str]] = []
        for join in tree.args.get("joins") or []:
            side, kind = (join.args.get("side") or "").upper(), (join.args.get("kind") or "").upper()
            if side in ("RIGHT", "FULL") or kind in ("NATURAL",):
                raise PrivateRefusal(f"{side or kind} JOIN is not supported in a private query",
                                     hint="Use an inner or LEFT JOIN with the protected table first.")
            alias = join.this.alias_or_name
            if side == "LEFT":
                self.nullable.add(alias)
            if side == "LEFT" and alias == first.alias:
                raise PrivateRefusal("the first protected table cannot be on the nullable side of a LEFT JOIN")
            if join.args.get("on") is not None:
                self._row_check(join.args["on"], "JOIN ... ON")
                equalities += self._unit_equalities(join.args["on"])
            for using in join.args.get("using") or []:
                name = fold(using)
                owners = [s for s in self.sources.values() if name in s.columns and s.columns[name].unit]
                if len(owners) >= 2:
                    equalities += [(owners[0].alias, o.alias) for o in owners[1:]]
        where = tree.args.get("where")
        if where is not None:
            equalities += self._unit_equalities(where.this)
        changed = True
        while changed:
            changed = False
            for a, b in equalities:
                if (a in linked) != (b in linked):
                    linked |= {a, b}
                    changed = True
        unlinked = [s.alias for s in protected if s.alias not in linked]
        if unlinked:
            raise PrivateRefusal(
                f"protected relations {', '.join(unlinked)} are not joined to {first.alias} on the privacy unit",
                hint=f"Join them with {first.alias}.{first.unit_column} = <alias>.<privacy unit column>.",
            )
        self._check_fan_out(tree)
        return f"{quote_ident(first.alias)}.{quote_ident(first.unit_column or '')}"

    def _check_fan_out(self, tree: exp.Select) -> None:
        """No join multiplies one person's rows (rewriter/private/fan_out.py)."""
        joins = tree.args.get("joins") or []
        conditions = [join.args["on"] for join in joins if join.args.get("on") is not None]
        where = tree.args.get("where")
        if where is not None:
            conditions.append(where.this)

        def find(column: exp.Column) -> tuple[str, str] | None:
            owner = self._owner(column)
            return None if owner is None else (owner[0], fold(column.this) if isinstance(column.this, exp.Identifier)
                                               else column.name)

        equalities = column_equalities(conditions, find)
        earlier = [self.sources[_from_item(tree).alias_or_name]]
        for join in joins:
            alias = join.this.alias_or_name
            equalities += using_equalities(alias, [fold(u) for u in join.args.get("using") or []], earlier)
            earlier.append(self.sources[alias])
        try:
            check_fan_out(
                self.sources,
                [s.alias for s in self.sources.values() if s.protected and not s.one_row_per_unit],
                {s.alias: s.unique_keys for s in self.sources.values() if not s.protected},
                equalities,
            )
        except FanOutRefused as exc:
            raise PrivateRefusal(str(exc), hint=exc.hint) from None

    def _unit_equalities(self, condition: exp.Expr) -> list[tuple[str, str]]:
        pairs = []
        for conjunct in _conjuncts(condition):
            # IS NOT DISTINCT FROM (Tableau's joins) equals = on units: rows whose unit is NULL are left out.
            if isinstance(conjunct, (exp.EQ, exp.NullSafeEQ)) \
                    and all(isinstance(s, exp.Column) for s in (conjunct.this, conjunct.expression)):
                left, right = self._owner(conjunct.this), self._owner(conjunct.expression)
                if left and right and left[1].unit and right[1].unit and left[0] != right[0]:
                    pairs.append((left[0], right[0]))
        return pairs

    def _owner(self, column: exp.Column) -> tuple[str, ColumnInfo] | None:
        try:
            return self._find(column)
        except ExpressionRefused:
            return None

    def _find(self, column: exp.Column) -> tuple[str, ColumnInfo]:
        name = fold(column.this) if isinstance(column.this, exp.Identifier) else column.name
        qualifier = column.args.get("table")
        if qualifier is not None:
            alias = fold(qualifier) if isinstance(qualifier, exp.Identifier) else qualifier.name
            source = self.sources.get(alias)
            if source is None or name not in source.columns:
                raise ExpressionRefused(f'column "{alias}.{name}" does not exist')
            return alias, source.columns[name]
        owners = [s for s in self.sources.values() if name in s.columns]
        if not owners:
            raise ExpressionRefused(f'column "{name}" does not exist')
        if len(owners) > 1 and all(o.alias in self.merged.get(name, ()) for o in owners[1:]):
            # Joined USING (name): the one merged column, the left one's (RIGHT and FULL joins are refused).
            return owners[0].alias, owners[0].columns[name]
        if len(owners) > 1:
            raise ExpressionRefused(f'column reference "{name}" is ambiguous')
        return owners[0].alias, owners[0].columns[name]

    def _resolve(self, column: exp.Column) -> ColumnInfo:
        return self._find(column)[1]

    def _source_sql(self, tree: exp.Select) -> str:
        parts = [f"FROM {self.sources[_from_item(tree).alias_or_name].sql}"]
        for join in tree.args.get("joins") or []:
            source = self.sources[join.this.alias_or_name]
            side = (join.args.get("side") or "").upper()
            on, using = join.args.get("on"), join.args.get("using")
            if on is None and not using:
                parts.append(f", {source.sql}" if not join.args.get("kind") else f"CROSS JOIN {source.sql}")
                continue
            condition = (f"ON {self.rows.safe_sql(on)}" if on is not None
                         else f"USING ({', '.join(quote_ident(fold(u)) for u in using)})")
            parts.append(f"{side + ' ' if side else ''}JOIN {source.sql} {condition}")
        where = tree.args.get("where")
        if where is not None:
            parts.append(f"WHERE {self.rows.safe_sql(where.this)}")
        return " ".join(parts)

    # row-level checks

    def _row_check(self, node: exp.Expr, where: str) -> str:
        if any(isinstance(n, AGGREGATE_CLASSES) for n in node.walk()):
            raise PrivateRefusal(f"aggregates are not allowed in {where}")
        try:
            return self.rows.type_of(node)
        except ExpressionRefused as exc:
            raise PrivateRefusal(f"in {where}: {exc}") from None

    # keys

    def _read_keys(self, tree: exp.Select) -> None:
        group = tree.args.get("group")
        if group is None:
            return
        if any(group.args.get(k) for k in ("grouping_sets", "cube", "rollup")):
            raise PrivateRefusal("GROUPING SETS, CUBE and ROLLUP are not supported in a private query",
                                 hint="Run one query per grouping.")
        selected = tree.expressions
        for item in group.expressions:
            while isinstance(item, exp.Paren):  # GROUP BY (date_trunc(...)), as Looker writes it, groups by the same
                item = item.this
            node = item
            number = literal_number(item)
            if number is not None:
                if number.denominator != 1 or not 1 <= number <= len(selected):
                    raise PrivateRefusal(f"GROUP BY position {item.sql()} is not in the select list")
                node = selected[int(number) - 1].unalias()
            elif isinstance(item, exp.Column) and not item.args.get("table") and self._owner(item) is None:
                aliased = [s.unalias() for s in selected if s.alias_or_name == item.name and isinstance(s, exp.Alias)]
                if aliased:
                    node = aliased[0]
            if any(isinstance(n, AGGREGATE_CLASSES) for n in node.walk()):
                raise PrivateRefusal("GROUP BY cannot name an aggregate")
            self._add_key(node)
        for index, node in enumerate(self.key_nodes):
            others = [k for k in self.key_nodes if k is not node]
            if others and list(node.find_all(exp.Column)) and self._of_keys(node, others):
                # GROUP BY department, CASE WHEN department = ... END: the CASE
                # follows department, so its domain must not multiply department's.
                self.keys[index] = replace(self.keys[index], domain=None, domain_sql=None)

    def _add_key(self, node: exp.Expr, derived: bool = False) -> int:
        """`derived`: a function of other keys, whose domain is never public:
        public domains combine as a product, which would pair each value of
        the keys with every value of their function."""
        canonical = self._canonical(node)
        for index, existing in enumerate(self.key_nodes):
            if self._canonical(existing) == canonical:
                return index
        type_name = self._row_check(node, "GROUP BY")
        if isinstance(node, exp.Column) and self._resolve(node).unit and not self.deriving:
            raise PrivateRefusal("grouping by the privacy unit would release one group per person, and none "
                                 "would pass partition selection", hint="Group by something people share.")
        self.key_nodes.append(node)
        domain_sql = None
        if isinstance(node, exp.Column):
            domain_sql = self._resolve(node).domain_sql
        domain = None if derived else self._domain(node)
        self.keys.append(q.Key(self.rows.safe_sql(node), type_name, domain, node.sql("postgres"),
                               None if derived else domain_sql))
        return len(self.keys) - 1

    def _keys_by_selection(self) -> None:
        """A GROUP BY without aggregates (Metabase's field values scan) asks
        which keys have rows: a key is released only when it passes partition
        selection (a noisy count of people over the threshold, charged like
        a count), never because a public domain lists it, as that would
        release every listed value whether or not any row has it."""
        self.keys = [replace(key, domain=None, domain_sql=None) for key in self.keys]

    def _narrow_domains(self, tree: exp.Select) -> None:
        """A public key's domain filtered by the WHERE's conditions on that
        key alone against row-independent values (department IN ($1, 'b'),
        <>, NOT IN, IS [NOT] NULL): PostgreSQL forms no group whose key fails
        them, so neither may the release. The condition runs upstream on each
        public value (bind values are known only there), never on a row."""
        where = tree.args.get("where")
        if where is None:
            return
        for condition in _conjuncts(where.this):
            index = self._key_condition(condition)
            if index is None:
                continue
            key = self.keys[index]
            domain_sql = key.domain_sql
            if domain_sql is None:
                continue
            test = self.rows.safe_node(condition)
            for column in list(test.find_all(exp.Column)):
                column.replace(exp.column("v", table="d", quoted=True))
            narrowed = f'SELECT "d"."v" FROM ({domain_sql}) AS "d"("v") WHERE {test.sql("postgres")}'
            self.keys[index] = replace(key, domain_sql=narrowed)

    def _key_condition(self, condition: exp.Expr) -> int | None:
        """The public column key a condition tests against row-independent
        values only, or None. An OR of such tests of one key is one too
        (Metabase writes (department = 'a' OR department = 'b'))."""
        while isinstance(condition, exp.Paren):
            condition = condition.this
        if isinstance(condition, exp.Or):
            keys = {self._key_condition(condition.this), self._key_condition(condition.expression)}
            return keys.pop() if len(keys) == 1 else None
        node = condition.this if isinstance(condition, exp.Not) else condition
        if isinstance(node, exp.Paren):
            node = node.this
        if isinstance(node, (exp.EQ, exp.NEQ)):
            sides = [node.this, node.expression]
            columns = [s for s in sides if isinstance(s, exp.Column)]
            others = [s for s in sides if not isinstance(s, exp.Column)]
        elif isinstance(node, exp.In) and not node.args.get("query") and not node.args.get("unnest"):
            columns, others = [node.this], list(node.expressions)
        elif isinstance(node, exp.Is) and isinstance(node.expression, exp.Null):
            columns, others = [node.this], []
        else:
            return None
        if len(columns) != 1 or not isinstance(columns[0], exp.Column) or not all(map(_row_independent, others)):
            return None
        if isinstance(condition, exp.Not) and not isinstance(node, (exp.In, exp.Is)):
            return None
        canonical = self._canonical(columns[0])
        for index, existing in enumerate(self.key_nodes):
            if isinstance(existing, exp.Column) and self._canonical(existing) == canonical:
                return index
        return None

    def _domain(self, node: exp.Expr) -> tuple[str | None, ...] | None:
        """The values a key can take, when they are public: a column's
        declared public domain, or the literal results of a CASE."""
        if isinstance(node, exp.Paren):
            return self._domain(node.this)
        if isinstance(node, exp.Column):
            return self._resolve(node).domain
        if isinstance(node, exp.Case):
            results = [b.args["true"] for b in node.args.get("ifs") or []]
            default = node.args.get("default")
            values: list[str | None] = []
            for result in results + ([default] if default is not None else []):
                if isinstance(result, exp.Null):
                    values.append(None)
                elif isinstance(result, exp.Literal):
                    values.append(result.this)
                else:
                    return None
            if default is None:
                values.append(None)
            return tuple(dict.fromkeys(values))
        return None

    def _canonical(self, node: exp.Expr) -> str:
        """SQL with every column qualified by its source, to compare expressions."""
        def qualify(n: exp.Expr) -> exp.Expr:
            if isinstance(n, exp.Column) and not isinstance(n.this, exp.Star):
                owner = self._owner(n)
                if owner is not None:
                    return exp.column(n.name, table=owner[0])
            return n
        return node.copy().transform(qualify).sql("postgres")

    # outputs and post-processing

    def _read_outputs(self, tree: exp.Select) -> list[q.Output]:
        outputs = []
        for position, item in enumerate(tree.expressions):
            node = item.unalias()
            if isinstance(node, exp.Star) or (isinstance(node, exp.Column) and isinstance(node.this, exp.Star)):
                raise PrivateRefusal("SELECT * is row-level output, which is not released",
                                     hint="Select group keys and aggregates.")
            expression = self._post(node, "the select list")
            if not any(isinstance(n, exp.Var) for n in expression.walk()):
                expression = self._constant(node)
            written = self.written[position] if position < len(self.written) else None
            outputs.append(q.Output(_output_name(item, written), expression, self._post_type(expression)))
        return outputs

    def _post(self, node: exp.Expr, where: str, holders: set[int] | None = None,
              sizes: dict[int, int] | None = None) -> exp.Expr:
        """An expression evaluated after aggregation, with aggregates and keys
        replaced by variables `agg{i}` and `key{i}`. `holders`: the ids of
        the nodes that contain an aggregate, and `sizes` their node counts,
        found once for the whole tree (asked again at every level, nested
        arithmetic planned in quadratic time)."""
        if isinstance(node, exp.Window):
            return self._running_total(node)
        if holders is None or sizes is None:
            holders, sizes = _aggregate_holders(node), _sizes(node)
        if id(node) not in holders:
            largest = max((_sizes(k)[id(k)] for k in self.key_nodes), default=0)
            if sizes[id(node)] <= largest:  # only a subtree no larger than a key can be one
                canonical = self._canonical(node)
                for index, key_node in enumerate(self.key_nodes):
                    if self._canonical(key_node) == canonical:
                        return exp.var(f"key{index}")
            if not list(node.find_all(exp.Column)):
                # A constant: literals are evaluated here, anything else upstream.
                return self._constant(node) if _needs_upstream(node) else node.copy()
            if not isinstance(node, (exp.Column, *KEY_CONDITIONS)) and self._of_keys(node):
                # A function of group keys (CAST(date_trunc('month', d) AS date) grouped by
                # date_trunc('month', d)): one more key, which groups no differently.
                return exp.var(f"key{self._add_key(node, derived=True)}")
            if isinstance(node, exp.Column) or not isinstance(node, KEY_CONDITIONS):
                raise PrivateRefusal(
                    f"{node.sql('postgres')[:80]} in {where} must appear in GROUP BY or be used in an aggregate"
                )
            # A condition on keys (department <> 'X'): evaluated on the released keys.
        if isinstance(node, AGGREGATE_CLASSES):
            return exp.var(f"agg{self._add_aggregate(node)}")
        # A new node over the rewritten children: copying the subtree first
        # at every level was quadratic too.
        arguments: dict[str, object] = {}
        for key, value in node.args.items():
            if isinstance(value, exp.Expr):
                arguments[key] = self._post(value, where, holders, sizes)
            elif isinstance(value, list):
                arguments[key] = [self._post(v, where, holders, sizes) if isinstance(v, exp.Expr) else v
                                  for v in value]
            else:
                arguments[key] = value
        copy = node.__class__(**arguments)
        if not isinstance(copy, POST_NODES):
            raise PrivateRefusal(f"{_quoted(node)} cannot be applied to a private aggregate in {where}",
                                 hint="Use arithmetic, round, casts, comparisons or coalesce on aggregates.")
        return copy

    def _running_total(self, node: exp.Window) -> exp.Var:
        """SUM(<aggregates>) OVER (ORDER BY <group keys>) with the default
        frame or [ROWS | RANGE] [BETWEEN] UNBOUNDED PRECEDING [AND CURRENT
        ROW]: a running total of released values in key order, computed on
        the released groups (after HAVING, before ORDER BY and LIMIT, as
        PostgreSQL evaluates windows)."""
        label = node.sql("postgres")[:80]
        function, order = node.this, node.args.get("order")
        hint = "Write SUM(SUM(x)) OVER (ORDER BY <group key>) or SUM(COUNT(*)) OVER (ORDER BY <group key>)."
        if not _running_shape(node):
            raise PrivateRefusal("window functions cannot be used over protected rows, but for running totals of "
                                 f"aggregates: {label}", hint=hint)
        spec, peers = node.args.get("spec"), True
        if spec is not None:
            kind = str(spec.args.get("kind") or "").upper()
            start, start_side = str(spec.args.get("start") or "").upper(), str(spec.args.get("start_side") or "").upper()
            end, end_side = spec.args.get("end"), spec.args.get("end_side")
            if kind not in ("ROWS", "RANGE") or (start, start_side) != ("UNBOUNDED", "PRECEDING") \
                    or (end is not None and (str(end).upper() != "CURRENT ROW" or end_side)) \
                    or spec.args.get("exclude"):
                raise PrivateRefusal(f"{label}: a running total's frame is UNBOUNDED PRECEDING to CURRENT ROW "
                                     "in a private query", hint=hint)
            peers = kind == "RANGE"
        if order is None:
            raise PrivateRefusal(f"{label}: a running total is ordered by group keys in a private query", hint=hint)
        items = []
        for ordered in order.expressions:
            expression = self._post(ordered.this, "a window's ORDER BY")
            if not (isinstance(expression, exp.Var) and expression.name.startswith("key")):
                raise PrivateRefusal(f"{label}: a running total is ordered by group keys in a private query",
                                     hint=hint)
            items.append(q.OrderItem(expression, bool(ordered.args.get("desc")),
                                     bool(ordered.args.get("nulls_first"))))
        argument = self._post(function.this, "a window function")
        argument_type = self._post_type(argument)
        if not t.is_number(argument_type):
            raise PrivateRefusal(f"{label}: a running total needs a number, got {argument_type}", hint=hint)
        running = q.Running(argument, tuple(items), peers, t.sum_type(argument_type))
        self.running.append(running)
        return exp.var(f"run{len(self.running) - 1}")

    def _of_keys(self, node: exp.Expr, among: list[exp.Expr] | None = None) -> bool:
        """Whether every column `node` reads lies inside one of its subtrees
        that is a group key (of `among`, by default all of them)."""
        keys = {self._canonical(k) for k in (self.key_nodes if among is None else among)}
        for column in node.find_all(exp.Column):
            each: exp.Expr | None = column
            while each is not None and each is not node and self._canonical(each) not in keys:
                each = each.parent
            if each is None or each is node:
                return False
        return True

    def _post_type(self, node: exp.Expr) -> str:
        if isinstance(node, exp.Var):
            if node.name.startswith("const"):
                return self.constants[int(node.name[5:])].type_name
            if node.name.startswith("test"):
                return "boolean"
            if node.name.startswith("run"):
                return self.running[int(node.name[3:])].type_name
            index = int(node.name[3:])
            return self.aggregates[index].output_type if node.name.startswith("agg") else self.keys[index].type_name
        if isinstance(node, exp.Literal):
            return "text" if node.is_string else ("integer" if node.this.isdigit() else "numeric")
        if isinstance(node, exp.Paren):
            return self._post_type(node.this)
        if isinstance(node, exp.Neg):
            return self._post_type(node.this)
        if isinstance(node, (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod)):
            return t.arithmetic(self._post_type(node.this), self._post_type(node.expression))
        if isinstance(node, exp.Cast):
            return t.CAST_NAMES.get(node.to.sql("postgres").lower().split("(")[0].strip(), "text")
        if isinstance(node, exp.Round):
            inner = self._post_type(node.this)
            return "numeric" if node.args.get("decimals") is not None or inner not in t.FLOATS else inner
        if isinstance(node, (exp.Abs, exp.Floor, exp.Ceil)):
            return self._post_type(node.this)
        if isinstance(node, exp.Coalesce):
            return self._post_type(node.this)
        if isinstance(node, exp.Nullif):
            return t.nullif_type(self._post_type(node.this), self._post_type(node.expression))
        return "boolean"

    def _read_order(self, tree: exp.Select, outputs: list[q.Output],
                    post: Callable[[exp.Expr], exp.Expr] | None = None) -> list[q.OrderItem]:
        order = tree.args.get("order")
        if order is None:
            return []
        items = []
        for ordered in order.expressions:
            node = ordered.this
            number = literal_number(node)
            descending = bool(ordered.args.get("desc"))
            nulls_first = bool(ordered.args.get("nulls_first"))
            if number is not None:
                if number.denominator != 1 or not 1 <= number <= len(outputs):
                    raise PrivateRefusal(f"ORDER BY position {node.sql()} is not in the select list")
                expression = outputs[int(number) - 1].expression
            elif isinstance(node, exp.Column) and not node.args.get("table") and any(o.name == node.name for o in outputs):
                expression = next(o.expression for o in outputs if o.name == node.name)
            else:
                expression = post(node) if post is not None else self._post(node, "ORDER BY")
            items.append(q.OrderItem(expression, descending, nulls_first))
        return items

    # aggregates

    def _add_aggregate(self, node: exp.Expr) -> int:
        aggregate = self._aggregate(node)
        for index, existing in enumerate(self.aggregates):
            if existing == aggregate:
                return index
        self.aggregates.append(aggregate)
        return len(self.aggregates) - 1

    def _aggregate(self, node: exp.Expr) -> q.Aggregate:
        label = node.sql("postgres")
        condition = None
        if isinstance(node, exp.Filter):
            condition = node.expression.this
            self._row_check(condition, "FILTER")
            node = node.this
        quantile = None
        if isinstance(node, exp.WithinGroup):
            function, order = node.this, node.expression
            if not isinstance(function, (exp.PercentileCont, exp.PercentileDisc)) or len(order.expressions) != 1:
                raise PrivateRefusal(f"{label} is not supported in a private query")
            quantile = literal_number(function.this)
            if quantile is None or not 0 <= quantile <= 1:
                raise PrivateRefusal(
                    "percentile_cont/percentile_disc take one literal fraction between 0 and 1",
                    hint="Write the fraction as a literal, one percentile per column (percentile_cont(0.25) ..., "
                    "percentile_cont(0.75) ...); pgshroud plans the noise before the Bind, so it cannot be a "
                    "bound parameter (SQLAlchemy: literal_column('0.5')).")
            kind = q.QUANTILE_CONT if isinstance(function, exp.PercentileCont) else q.QUANTILE_DISC
            argument = order.expressions[0].this
        elif isinstance(node, exp.Median):
            kind, quantile, argument = q.QUANTILE_CONT, Fraction(1, 2), node.this
        elif isinstance(node, exp.Count):
            return self._count(node, condition, label)
        elif type(node) in KINDS:
            kind, argument = KINDS[type(node)], node.this
            if isinstance(argument, exp.Distinct):
                raise PrivateRefusal(
                    f"{node.key.upper()}(DISTINCT ...) is not supported in a private query",
                    hint="A distinct value counts once however many people hold it, so no bound per person "
                    "holds; aggregate per person first (a subquery grouped by the privacy unit), or drop "
                    "DISTINCT (Looker's symmetric aggregates over a join: model the measure on its own table).")
        else:
            raise PrivateRefusal(
                f"the aggregate {label[:60]} is not answered privately",
                hint="pgshroud answers count, sum, avg, variance, stddev, percentile_cont/disc, median, min and max.",
            )
        if kind in (q.MIN, q.MAX):
            quantile = q.EXTREME_QUANTILES[kind]
            self.notices.append(
                f"{label} is answered as a private estimate of the {'1st' if kind == q.MIN else '99th'} percentile: "
                "the true extreme value of a column cannot be released with differential privacy"
            )
        if any(isinstance(n, AGGREGATE_CLASSES) for n in argument.walk()):
            raise PrivateRefusal("aggregates cannot be nested")
        argument_type = self._row_check(argument, label)
        if argument_type == "date" and kind in (q.MIN, q.MAX, q.QUANTILE_DISC):
            return self._date_quantile(kind, quantile, argument, condition, label)
        _require_number(label, argument_type)
        low, high = self.rows.bounds_of(argument)
        if low is None or high is None:
            raise PrivateRefusal(
                f"{label} needs bounds on its argument, and pgshroud cannot derive them",
                hint=_bounds_hint(argument, self),
            )
        argument_sql = self.rows.safe_sql(argument)
        if condition is not None:
            argument_sql = f"CASE WHEN {self.rows.safe_sql(condition)} THEN {argument_sql} END"
        output = _output_type(kind, argument_type)
        never_null = condition is None and isinstance(argument, exp.Column) and self._never_null(argument)
        return q.Aggregate(kind, argument_sql, (low, high), output, quantile, label, never_null)

    def _date_quantile(self, kind: str, quantile: Fraction | None, argument: exp.Expr,
                       condition: exp.Expr | None, label: str) -> q.Aggregate:
        """min, max or percentile_disc of a date column with bounds in the
        policy: a private quantile of its day number (days since 2000-01-01,
        which the tamed date always has), released as a date."""
        column = argument
        while isinstance(column, exp.Paren):
            column = column.this
        day_bounds = self._resolve(column).day_bounds if isinstance(column, exp.Column) else None
        if day_bounds is None:
            owner = self._owner(column) if isinstance(column, exp.Column) else None
            name = f"{self.sources[owner[0]].label}.{column.name}" if owner is not None else "the date column"
            raise PrivateRefusal(
                f"{label} needs bounds on its date, and the policy declares none",
                hint=f"Add bounds: [<first date>, <last date>] (YYYY-MM-DD) for {name} to the policy, or count "
                     "by date_trunc('month', ...) to see where the dates lie.")
        days = f"({self.rows.safe_sql(argument)} - DATE '{q.DAY_ZERO.isoformat()}')"
        if condition is not None:
            days = f"CASE WHEN {self.rows.safe_sql(condition)} THEN {days} END"
        never_null = condition is None and isinstance(column, exp.Column) and self._never_null(column)
        return q.Aggregate(kind, days, day_bounds, "date", quantile, label, never_null)

    def _count(self, node: exp.Count, condition: exp.Expr | None, label: str) -> q.Aggregate:
        argument = node.this
        when = None if condition is None else self.rows.safe_sql(condition)
        if isinstance(argument, exp.Star) or argument is None:
            sql = None if when is None else f"CASE WHEN {when} THEN 1 END"
            return q.Aggregate(q.COUNT_ROWS if sql is None else q.COUNT, sql, None, "bigint", label=label)
        if isinstance(argument, exp.Distinct):
            (inner,) = argument.expressions if len(argument.expressions) == 1 else (None,)
            if inner is None:
                raise PrivateRefusal("COUNT(DISTINCT ...) of several expressions is not supported privately")
            if isinstance(inner, exp.Column) and self._resolve(inner).unit and when is None:
                return q.Aggregate(q.COUNT_UNITS, None, None, "bigint", label=label)
            self._row_check(inner, label)
            sql = self.rows.safe_sql(inner)
            if when is not None:
                sql = f"CASE WHEN {when} THEN {sql} END"
            return q.Aggregate(q.COUNT_DISTINCT, sql, None, "bigint", label=label)
        self._row_check(argument, label)
        if isinstance(argument, exp.Column) and self._never_null(argument) and when is None:
            return q.Aggregate(q.COUNT_ROWS, None, None, "bigint", label=label)  # the same as count(*)
        sql = self.rows.safe_sql(argument)
        if when is not None:
            sql = f"CASE WHEN {when} THEN {sql} END"
        return q.Aggregate(q.COUNT, sql, None, "bigint", label=label)

    def _never_null(self, column: exp.Column) -> bool:
        """NOT NULL in its table and not on the nullable side of a LEFT JOIN."""
        owner = self._owner(column)
        return owner is not None and owner[1].not_null and owner[0] not in self.nullable


POST_NODES = (exp.Var, exp.Literal, exp.Paren, exp.Neg, exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.Cast,
              exp.Round, exp.Abs, exp.Floor, exp.Ceil, exp.Coalesce, exp.Nullif, exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT,
              exp.LTE, exp.And, exp.Or, exp.Not, exp.Is, exp.Null, exp.Boolean, exp.DataType)


TIME_VALUES: dict[type[exp.Expr], tuple[str, str]] = {exp.CurrentTimestamp: ("CURRENT_TIMESTAMP", "timestamp with time zone"),
               exp.CurrentDate: ("CURRENT_DATE", "date"),
               exp.Localtimestamp: ("LOCALTIMESTAMP", "timestamp without time zone")}
TIME_NODES = (exp.CurrentTimestamp, exp.CurrentDate, exp.Localtimestamp, exp.CurrentTime, exp.Localtime, exp.Interval)


ORDER_OPERATORS: dict[type[exp.Expr], str] = {exp.GT: ">", exp.GTE: ">=", exp.LT: "<", exp.LTE: "<="}
FLIPPED = {">": "<", ">=": "<=", "<": ">", "<=": ">="}
# PostgreSQL names a cast of a constant by its type's internal name.
INTERNAL_TYPE_NAMES = {"integer": "int4", "bigint": "int8", "smallint": "int2", "double precision": "float8",
                       "real": "float4", "boolean": "bool", "character varying": "varchar", "character": "bpchar",
                       "timestamp without time zone": "timestamp", "timestamp with time zone": "timestamptz"}


def _needs_upstream(node: exp.Expr) -> bool:
    """A constant inside post-processing that pgshroud cannot evaluate itself."""
    return not all(isinstance(n, POST_NODES) for n in node.walk())


def _time_arithmetic(add: bool, left: str, right: str) -> str | None:
    """PostgreSQL's result type of date/time plus or minus, for the operands
    a private query's constants may have."""
    stamps = ("timestamp with time zone", "timestamp without time zone")
    if right == "interval" and left in stamps:
        return left
    if right == "interval" and left == "date":
        return "timestamp without time zone"
    if add and left == "interval" and right in stamps + ("date",):
        return _time_arithmetic(True, right, left)
    if left == right == "interval":
        return "interval"
    if left == "date" and right == "integer":
        return "date"
    if add and left == "integer" and right == "date":
        return "date"
    if not add and left == right and left in stamps + ("date",):
        return "integer" if left == "date" else "interval"
    return None


def _output_type(kind: str, argument: str) -> str:
    if kind == q.SUM:
        return t.sum_type(argument)
    if kind in (q.AVG,) + q.VARIANCES:
        return t.average_type(argument)
    if kind == q.QUANTILE_CONT:
        return "double precision"
    return argument  # percentile_disc, min, max keep the argument's type


# Conditions over group keys that post-processing evaluates on released keys.
KEY_CONDITIONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.And, exp.Or, exp.Not, exp.Is, exp.Paren)


def _sizes(node: exp.Expr) -> dict[int, int]:
    """The node count of every subtree of `node`, in one pass; names do not
    count, so that department and visits.department weigh the same."""
    sizes: dict[int, int] = {}
    for each in reversed(list(node.dfs())):  # every node after its descendants
        own = 0 if isinstance(each, exp.Identifier) else 1
        sizes[id(each)] = own + sum(sizes[id(child)] for child in each.iter_expressions())
    return sizes


def _aggregate_holders(node: exp.Expr) -> set[int]:
    """The ids of the nodes of `node` that are or contain an aggregate, in one pass."""
    holders: set[int] = set()
    for each in reversed(list(node.dfs())):  # every node after its descendants
        if isinstance(each, AGGREGATE_CLASSES) or any(id(child) in holders for child in each.iter_expressions()):
            holders.add(id(each))
    return holders


def _output_name(item: exp.Expr, written: str | None = None) -> str:
    """The column name PostgreSQL would give: the alias, a column's name,
    a function's name (as written), `case`, or ?column?."""
    if isinstance(item, exp.Alias):
        return item.alias
    node = item
    while isinstance(node, exp.Paren):
        node = node.this
    named = (exp.Func, exp.Case, exp.Filter, exp.WithinGroup)
    if written is not None and written != "cast" and isinstance(node, named):
        inner = node
        while isinstance(inner, (exp.Cast, exp.Paren)):  # a cast is named after what it casts
            inner = inner.this
        if isinstance(inner, named):
            return written
    if isinstance(node, exp.Column):
        return node.name
    if isinstance(node, exp.Cast):
        name = _output_name(node.this)
        if name != "?column?":
            return name
        target = t.cast_target(node.to)
        written = node.to.sql("postgres").lower().split("(")[0]
        return INTERNAL_TYPE_NAMES.get(target.name, target.name) if target is not None else written
    if isinstance(node, exp.Filter):
        node = node.this
    if isinstance(node, exp.WithinGroup):
        node = node.this
    names = {exp.Count: "count", exp.Sum: "sum", exp.Avg: "avg", exp.Min: "min", exp.Max: "max",
             exp.Variance: "variance", exp.VariancePop: "var_pop", exp.Stddev: "stddev",
             exp.StddevPop: "stddev_pop", exp.StddevSamp: "stddev_samp", exp.PercentileCont: "percentile_cont",
             exp.PercentileDisc: "percentile_disc", exp.Median: "median", exp.Round: "round", exp.Abs: "abs",
             exp.Coalesce: "coalesce", exp.Floor: "floor", exp.Ceil: "ceil",
             exp.CurrentTimestamp: "current_timestamp", exp.CurrentDate: "current_date",
             exp.Localtimestamp: "localtimestamp"}
    for cls, name in names.items():
        if type(node) is cls:
            return name
    if isinstance(node, exp.Anonymous):
        return node.name.lower()
    return "?column?"


def _require_number(label: str, argument_type: str) -> None:
    """Refuse an aggregate of a value that is not a number (min, max and
    percentile_disc of a date are answered apart, _date_quantile)."""
    if t.is_number(argument_type):
        return
    hint = None
    if argument_type in t.TIMES:
        hint = ("A timestamp's earliest or latest value is one person's, which pgshroud does not release: count by "
                "date_trunc('month', ...) to see where they lie (min and max of a date with bounds in the policy "
                "are answered).")
    raise PrivateRefusal(f"{label} needs a numeric argument in a private query, got {argument_type}", hint=hint)


def _quoted(node: exp.Expr) -> str:
    """A refused function or construct by its SQL name (generate_series;
    power for c ^ 2; window, subquery), never the parser's class name."""
    if not isinstance(node, exp.Func):
        return node.key
    # The name the SQL is written with (sqlglot's own names, like
    # exploding_generate_series, are not PostgreSQL's).
    return node.sql("postgres").split("(", 1)[0].strip().lower() or node.key


def written_function_names(tokens: Sequence[Token]) -> list[str | None]:
    """For each item of the top-level select list: the function name it
    starts with, as written (lower case unless quoted), `case`, or None."""
    depth, start = 0, None
    for i, token in enumerate(tokens):
        if token.token_type == TokenType.L_PAREN:
            depth += 1
        elif token.token_type == TokenType.R_PAREN:
            depth -= 1
        elif depth == 0 and token.token_type == TokenType.SELECT:
            start = i + 1
            break
    if start is None:
        return []
    items: list[list[Token]] = [[]]
    depth = 0
    for token in tokens[start:]:
        if depth == 0 and token.token_type in (TokenType.FROM, TokenType.INTO, TokenType.WHERE, TokenType.GROUP_BY,
                                               TokenType.ORDER_BY, TokenType.LIMIT, TokenType.SEMICOLON):
            break
        if token.token_type == TokenType.L_PAREN:
            depth += 1
        elif token.token_type == TokenType.R_PAREN:
            depth -= 1
        if depth == 0 and token.token_type == TokenType.COMMA:
            items.append([])
            continue
        items[-1].append(token)
    names: list[str | None] = []
    for item in items:
        while item and item[0].token_type in (TokenType.L_PAREN, TokenType.DISTINCT, TokenType.ALL):
            item = item[1:]
        item = _cast_argument(item)
        if item and item[0].token_type == TokenType.CASE:
            names.append("case")
        elif len(item) > 1 and item[1].token_type == TokenType.L_PAREN:
            quoted = item[0].token_type == TokenType.IDENTIFIER
            names.append(item[0].text if quoted else item[0].text.lower())
        else:
            names.append(None)
    return names


def _cast_argument(item: list[Token]) -> list[Token]:
    """CAST(f(...) AS type) is named f, as PostgreSQL names a cast after what
    it casts: the tokens from f on when the argument is one call, else as given."""
    cast = item and item[0].token_type == TokenType.VAR and item[0].text.upper() == "CAST"
    if len(item) < 4 or not cast or item[1].token_type != TokenType.L_PAREN:
        return item
    rest = item[2:]
    if len(rest) < 2 or rest[1].token_type != TokenType.L_PAREN:
        return item
    depth = 0
    for position, token in enumerate(rest[1:], start=1):
        depth += {TokenType.L_PAREN: 1, TokenType.R_PAREN: -1}.get(token.token_type, 0)
        if depth == 0:
            following = rest[position + 1] if position + 1 < len(rest) else None
            return rest if following is not None and following.token_type == TokenType.ALIAS else item
    return item


def _from_item(tree: exp.Select) -> exp.Expr:
    """The first item of a SELECT's FROM, which a private query has (_read_sources)."""
    from_ = tree.args.get("from_") or tree.args.get("from")
    if not isinstance(from_, exp.From):
        raise PrivateRefusal("a private query reads a protected table")
    item: exp.Expr = from_.this
    return item


def _alias_of(item: exp.Expr) -> str:
    """The name a FROM item goes by, folded as PostgreSQL folds it."""
    alias = item.args.get("alias")
    if isinstance(alias, exp.TableAlias) and isinstance(alias.this, exp.Identifier):
        return fold(alias.this)
    return fold(item.this) if isinstance(item, exp.Table) and isinstance(item.this, exp.Identifier) else item.alias_or_name


def _sql_number(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"({x.numerator}::numeric / {x.denominator})"


def _inside_from_subquery(node: exp.Expr, tree: exp.Select) -> bool:
    """Whether a node lies in a subquery that is a FROM item of `tree` (checked when that subquery is read)."""
    from_items = []
    from_ = tree.args.get("from_")
    if from_ is not None:
        from_items.append(from_.this)
    from_items += [join.this for join in tree.args.get("joins") or []]
    parent: exp.Expr | None = node
    while parent is not None and parent is not tree:
        if any(parent is item for item in from_items if isinstance(item, exp.Subquery)):
            return True
        parent = parent.parent
    return False


_ROW_INDEPENDENT = (exp.Literal, exp.Parameter, exp.Null, exp.Boolean, exp.Cast, exp.Paren, exp.Neg,
                    exp.DataType, exp.DataTypeParam, exp.Identifier)


def _row_independent(node: exp.Expr) -> bool:
    """A literal or bind value, cast or not: the same for every row."""
    return all(isinstance(n, _ROW_INDEPENDENT) for n in node.walk())


def _running_shape(node: exp.Window) -> bool:
    """SUM(<expression of aggregates>) OVER (ORDER BY ...), without PARTITION BY:
    the window a running total is (its ORDER BY and frame checked after)."""
    function, order = node.this, node.args.get("order")
    return (isinstance(function, exp.Sum) and not isinstance(function.this, exp.Distinct)
            and not node.args.get("partition_by") and order is not None and bool(order.expressions)
            and any(isinstance(n, AGGREGATE_CLASSES) for n in function.this.walk()))


def _select_item(node: exp.Expr, tree: exp.Select) -> bool:
    """The node is a select-list item of `tree`, aliased or not."""
    item = node.parent if isinstance(node.parent, exp.Alias) else node
    return item.parent is tree and item.arg_key == "expressions"


def _conjuncts(node: exp.Expr) -> list[exp.Expr]:
    if isinstance(node, exp.And):
        return _conjuncts(node.this) + _conjuncts(node.expression)
    if isinstance(node, exp.Paren):
        return _conjuncts(node.this)
    return [node]


def _bounds_hint(argument: exp.Expr, analyser: PrivateAnalyser) -> str:
    columns = [c for c in argument.find_all(exp.Column)]
    for column in columns:
        owner = analyser._owner(column)
        if owner is not None and owner[1].bounds is None:
            source = analyser.sources[owner[0]]
            if source.protected and source.is_table:
                return (f"Add bounds for {source.label}.{column.name} to the policy, or clamp "
                        f"it in the query: least(greatest({argument.sql('postgres')}, <low>), <high>).")
    return f"Clamp it in the query: least(greatest({argument.sql('postgres')}, <low>), <high>)."
