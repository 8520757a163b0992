"""Loading a policy from YAML, with errors that name the file, line and key.

The YAML is composed into nodes (not constructed into Python objects) so
that every value keeps its position; the builder walks the nodes, builds the
model of `policies.model`, and collects every error it meets. If there was
any, `PolicyErrors` lists them all in file order. The format is described in
`policies/README.md`.
"""

from __future__ import annotations

import datetime
import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pgshroud.policies.errors import PolicyError, PolicyErrors
from pgshroud.policies.masks import MASKS, check_mask
from pgshroud.policies.model import (
    COMPOSITIONS,
    DEFAULT_LIFETIME,
    Access,
    AnswerReuse,
    AuthenticationPolicy,
    Budgets,
    ColumnPolicy,
    ContributionBounds,
    EpsilonDelta,
    MaskSpec,
    Policy,
    PrivacyDefaults,
    PrivacyUnit,
    ProtectedTable,
    Role,
    SecretRef,
)

__all__ = ["SECRET_NAMES", "load_policy", "loads_policy"]

SECRET_NAMES: tuple[str, ...] = ("pseudonym_key",)
DENY = "deny"  # default_role's word for "refuse users the policy does not name"

_TOP_KEYS = (
    "version",
    "default_role",
    "admin_dsn",
    "secrets",
    "roles",
    "public_tables",
    "allow_functions",
    "protected_tables",
    "privacy",
    "budgets",
    "authentication",
    "answers",
)
_ROLE_KEYS = ("access", "users", "tables", "allow_functions", "share_answers")
# Keys the format no longer has, with what to write instead: a policy that
# still uses one fails to load rather than promise what is not enforced.
_RETIRED_ROLE_KEYS = {
    "allow_statements": "no allow_statements: it is not supported, a role that is not raw only reads "
    "(a role that must write needs access raw)",
}
_TABLE_KEYS = ("privacy_unit", "contribution", "row_filters", "columns")
_COLUMN_KEYS = ("mask", "roles", "bounds", "public_domain")
_ACCESS = tuple(access.value for access in Access)

_TAG = "tag:yaml.org,2002:"
_NULL, _BOOL, _INT, _FLOAT, _STR = (_TAG + t for t in ("null", "bool", "int", "float", "str"))
_MERGE = _TAG + "merge"
# YAML 1.1 reads `1e-7` (no dot) as a string; the policy means a number.
_BARE_EXPONENT = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+")
_UNQUOTED_IDENT = re.compile(r"[^\W\d][\w$]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PERIOD = re.compile(r"never|[1-9][0-9]*[dh]")
_REUSE = re.compile(r"([1-9][0-9]{0,6})([smhd])")
_REUSE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
BUDGET_PERIOD = "budget_period"  # answers.reuse_for: as long as the answer's charge counts
_SQL_FORBIDDEN = (";", "--", "/*")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def load_policy(path: str | Path) -> Policy:
    """Read, parse and validate the policy file at `path`.

    Raises `PolicyErrors` (a `PolicyError`, a `ValueError`) listing every
    problem found, and OSError when the file cannot be read.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        got = f"byte 0x{data[exc.start]:02x}"
        raise PolicyErrors([PolicyError(str(path), line, "", "UTF-8 text", got)]) from None
    return loads_policy(text, str(path))


def loads_policy(text: str, source: str = "<string>") -> Policy:
    """Parse and validate a policy given as YAML text; `source` names it in errors."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        what = f"valid YAML: {exc.problem}" if exc.problem else "valid YAML"
        if exc.context:
            what += f" ({exc.context})"
        raise PolicyErrors([PolicyError(source, line, "", what)]) from None
    except yaml.YAMLError as exc:
        position = getattr(exc, "position", None)
        line = text.count("\n", 0, position) + 1 if isinstance(position, int) else 1
        reason = getattr(exc, "reason", None) or str(exc).splitlines()[0]
        raise PolicyErrors([PolicyError(source, line, "", f"valid YAML: {reason}")]) from None
    builder = _Builder(source)
    policy = builder.policy(root)
    if builder.errors:
        raise PolicyErrors(sorted(builder.errors, key=lambda error: error.line))
    assert policy is not None
    return policy


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _join(key: str, sub: str) -> str:
    return f"{key}.{sub}" if key else sub


def _is_null(node: Node | None) -> bool:
    return node is None or (isinstance(node, ScalarNode) and node.tag == _NULL and node.value in ("", "~"))


def _show(node: Node) -> str:
    """What was found, as the message repeats it."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if _is_null(node):
        return "nothing"
    text = node.value if len(node.value) <= 60 else node.value[:57] + "..."
    return repr(text) if node.tag == _STR else text


def _one_of(choices: Iterable[str]) -> str:
    return "one of " + ", ".join(choices)


def _near(word: str, choices: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _split_identifier(text: str) -> list[str] | None:
    """The parts of a dotted SQL name, folded as PostgreSQL folds them, or
    None when it is not one."""
    parts: list[str] = []
    i, n = 0, len(text)
    while True:
        if text.startswith('"', i):
            chunks, j = [], i + 1
            while True:
                k = text.find('"', j)
                if k < 0:
                    return None
                chunks.append(text[j:k])
                if text.startswith('""', k):
                    chunks.append('"')
                    j = k + 2
                    continue
                i = k + 1
                break
            part = "".join(chunks)
            if not part or "." in part:  # stored names are dotted, so no dots inside
                return None
            parts.append(part)
        else:
            match = _UNQUOTED_IDENT.match(text, i)
            if match is None:
                return None
            parts.append(match.group().translate(_ASCII_LOWER))
            i = match.end()
        if i == n:
            return parts
        if text[i] != ".":
            return None
        i += 1


def _qualified(text: str, default_schema: str, parts_allowed: int = 2) -> str | None:
    parts = _split_identifier(text)
    if parts is None or len(parts) > parts_allowed:
        return None
    if len(parts) == parts_allowed - 1:
        parts.insert(0, default_schema)
    return ".".join(parts) if len(parts) == parts_allowed else None


class _Builder:
    """Walks the composed YAML, builds the model and collects errors."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[PolicyError] = []
        self.constructor = yaml.constructor.SafeConstructor()
        # Filled before roles and tables are built, so that references in
        # either can be checked wherever they appear.
        self.role_names: dict[str, Node] = {}
        self.table_names: dict[str, str] = {}  # schema.table -> name as written
        self.protected_names: set[str] = set()
        self.roles: dict[str, Role] = {}
        self.share_nodes: dict[str, Node] = {}  # role -> its share_answers: true, to check against budgets

    # -- reporting ---------------------------------------------------------

    def error(self, at: Node | int, key: str, expected: str, got: str | None = None, hint: str | None = None) -> None:
        line = at if isinstance(at, int) else _line(at)
        self.errors.append(PolicyError(self.source, line, key, expected, got, hint))

    # -- YAML shapes -------------------------------------------------------

    def mapping(
        self,
        node: Node,
        key: str,
        keys: Sequence[str] | None = None,
        required: Sequence[str] = (),
        owner: Node | None = None,
        retired: Mapping[str, str] | None = None,
    ) -> dict[str, tuple[ScalarNode, Node]] | None:
        """The entries of a mapping by key text, checking that keys are plain,
        unique and (when `keys` is given) known; None if it is no mapping.
        A missing required key is reported on the line of `owner`, the key
        the mapping belongs to, when there is one; a key in `retired` is
        reported with what that mapping says instead of it."""
        if not isinstance(node, MappingNode):
            self.error(node, key, "a mapping" + (f" (keys: {', '.join(keys)})" if keys else ""), _show(node))
            return None
        entries: dict[str, tuple[ScalarNode, Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.error(key_node, key, "a plain key", _show(key_node))
                continue
            if key_node.tag == _MERGE:
                self.error(key_node, key, "keys written out (YAML merge keys '<<' are not supported)")
                continue
            name = key_node.value
            sub = _join(key, name)
            if name in entries:
                first = _line(entries[name][0])
                self.error(key_node, sub, f"each key once in a mapping (this one is also on line {first})")
                continue
            if retired is not None and name in retired:
                self.error(key_node, sub, retired[name], repr(name))
                continue
            if keys is not None and name not in keys:
                self.error(key_node, sub, "one of the keys " + ", ".join(keys), repr(name), _near(name, keys))
                continue
            entries[name] = (key_node, value_node)
        for name in required:
            if name not in entries:
                self.error(owner or node, _join(key, name), f"{name!r}, which is required", "nothing")
        return entries

    def sequence(self, node: Node, key: str, what: str) -> list[Node] | None:
        if _is_null(node):
            return []
        if not isinstance(node, SequenceNode):
            self.error(node, key, f"a list of {what}", _show(node))
            return None
        return list(node.value)

    def text(self, node: Node, key: str, what: str) -> str | None:
        """The text of a scalar as written (so `null`, `no` or `1` stay words)."""
        if not isinstance(node, ScalarNode) or _is_null(node) or not node.value.strip():
            self.error(node, key, what, _show(node))
            return None
        return str(node.value)

    def choice(self, node: Node, key: str, choices: Sequence[str]) -> str | None:
        word = self.text(node, key, _one_of(choices))
        if word is None:
            return None
        if word not in choices:
            self.error(node, key, _one_of(choices), _show(node), _near(word, choices))
            return None
        return word

    def number(self, node: Node, key: str, what: str = "a number") -> float | None:
        value: float | None = None
        if isinstance(node, ScalarNode):
            try:
                if node.tag in (_INT, _FLOAT):
                    value = float(self.constructor.construct_object(node))
                elif node.tag == _STR and node.style is None and _BARE_EXPONENT.fullmatch(node.value):
                    value = float(node.value)
            except OverflowError:
                value = None
        if value is None or not math.isfinite(value):
            self.error(node, key, what, _show(node))
            return None
        return value

    def integer(self, node: Node, key: str, minimum: int) -> int | None:
        if isinstance(node, ScalarNode) and node.tag == _INT:
            value = self.constructor.construct_object(node)
            if value >= minimum:
                return int(value)
        self.error(node, key, f"a whole number of at least {minimum}", _show(node))
        return None

    def plain_value(self, node: Node, key: str) -> Any:
        """A mask's parameters as plain Python values (mapping keys are text)."""
        if isinstance(node, MappingNode):
            entries = self.mapping(node, key) or {}
            return {name: self.plain_value(value, _join(key, name)) for name, (_, value) in entries.items()}
        if isinstance(node, SequenceNode):
            return [self.plain_value(item, f"{key}[{i}]") for i, item in enumerate(node.value)]
        if (isinstance(node, ScalarNode) and node.tag == _STR and node.style is None
                and _BARE_EXPONENT.fullmatch(node.value)):
            return float(node.value)
        try:
            return self.constructor.construct_object(node)
        except yaml.YAMLError:
            self.error(node, key, "a plain YAML value (no tags)", f"tag {node.tag}")
            return None

    # -- names -------------------------------------------------------------

    def table_name(self, node: Node, key: str) -> str | None:
        text = self.text(node, key, "a table name")
        if text is None:
            return None
        name = _qualified(text, "public")
        if name is None:
            self.error(node, key, "a table name: table or schema.table, quoted with \"...\" to keep case", _show(node))
        return name

    def column_name(self, node: Node, key: str) -> str | None:
        text = self.text(node, key, "a column name")
        if text is None:
            return None
        parts = _split_identifier(text)
        if parts is None or len(parts) != 1:
            self.error(node, key, "a column name, quoted with \"...\" to keep case", _show(node))
            return None
        return parts[0]

    def function_name(self, node: Node, key: str) -> str | None:
        text = self.text(node, key, "a function name")
        if text is None:
            return None
        name = _qualified(text, "pg_catalog")
        if name is None:
            self.error(node, key, "a function name: function (in pg_catalog) or schema.function", _show(node))
        return name

    def known_table(self, node: Node, key: str) -> str | None:
        name = self.table_name(node, key)
        if name is None:
            return None
        if name not in self.table_names:
            written = list(self.table_names.values()) + list(self.table_names)
            listed = ", ".join(self.table_names.values()) or "none are listed"
            expected = f"a table in public_tables or protected_tables ({listed})"
            self.error(node, key, expected, _show(node), _near(node.value, written))
            return None
        return name

    def known_role(self, node: Node, key: str) -> str | None:
        name = self.text(node, key, "a role name")
        if name is None:
            return None
        if name not in self.role_names:
            listed = ", ".join(self.role_names) or "none are defined"
            self.error(node, key, f"a role defined under roles ({listed})", _show(node), _near(name, self.role_names))
            return None
        return name

    # -- the document ------------------------------------------------------

    def policy(self, root: Node | None) -> Policy | None:
        if root is None:
            self.error(1, "", "a policy: a mapping with at least version and roles", "an empty document")
            return None
        top = self.mapping(root, "", _TOP_KEYS, required=("version", "roles"))
        if top is None:
            return None

        def get(name: str) -> Node | None:
            entry = top.get(name)
            return None if entry is None or _is_null(entry[1]) else entry[1]

        if "version" in top:
            node = top["version"][1]
            if not (isinstance(node, ScalarNode) and node.tag == _INT and self.constructor.construct_object(node) == 1):
                self.error(node, "version", "1, the only policy format so far", _show(node))

        self.collect_names(get("roles"), get("public_tables"), get("protected_tables"))
        roles = self.build_roles(get("roles"))
        public = self.build_public_tables(get("public_tables"))
        protected = self.build_protected_tables(get("protected_tables"), public)
        budgets = self.budgets(get("budgets"))
        self.check_shared_answers(budgets)
        admin_dsn = get("admin_dsn")
        return Policy(
            source=self.source,
            roles=roles,
            default_role=self.default_role(get("default_role")),
            protected_tables=protected,
            public_tables=frozenset(public),
            allow_functions=self.functions(get("allow_functions"), "allow_functions"),
            secrets=self.secrets(get("secrets")),
            privacy=self.privacy(get("privacy")),
            budgets=budgets,
            admin_dsn=None if admin_dsn is None else self.secret_ref(admin_dsn, "admin_dsn"),
            authentication=self.authentication(get("authentication")),
            answers=self.answers(get("answers"), budgets),
        )

    def collect_names(self, roles: Node | None, public: Node | None, protected: Node | None) -> None:
        # Names only, quietly: the builders below report what is wrong.
        if isinstance(roles, MappingNode):
            for key_node, _ in roles.value:
                if isinstance(key_node, ScalarNode) and key_node.value != DENY:
                    self.role_names.setdefault(key_node.value, key_node)
        if isinstance(public, SequenceNode):
            for item in public.value:
                if isinstance(item, ScalarNode) and (name := _qualified(item.value, "public")):
                    self.table_names.setdefault(name, item.value)
        if isinstance(protected, MappingNode):
            for key_node, _ in protected.value:
                if isinstance(key_node, ScalarNode) and (name := _qualified(key_node.value, "public")):
                    self.table_names.setdefault(name, key_node.value)
                    self.protected_names.add(name)

    def default_role(self, node: Node | None) -> str | None:
        if node is None:
            return None
        name = self.text(node, "default_role", f"a role name or {DENY}")
        if name is None or name == DENY:
            return None
        if name not in self.role_names:
            choices = [*self.role_names, DENY]
            self.error(node, "default_role", f"{DENY} or a role defined under roles", _show(node), _near(name, choices))
            return None
        return name

    # -- roles -------------------------------------------------------------

    def build_roles(self, node: Node | None) -> dict[str, Role]:
        if node is None:
            return {}
        entries = self.mapping(node, "roles")
        if entries is None:
            return {}
        user_roles: dict[str, tuple[str, int]] = {}
        for name, (key_node, value) in entries.items():
            key = f"roles.{name}"
            if name == DENY:
                self.error(key_node, key, f"a role name other than {DENY!r}, which default_role uses to refuse users")
                continue
            role = self.role(name, key_node, value, key, user_roles)
            if role is not None:
                self.roles[name] = role
        return self.roles

    def role(
        self, name: str, key_node: Node, node: Node, key: str, user_roles: dict[str, tuple[str, int]]
    ) -> Role | None:
        fields = self.mapping(node, key, _ROLE_KEYS, required=("access",), owner=key_node, retired=_RETIRED_ROLE_KEYS)
        if fields is None:
            return None
        access = None
        if "access" in fields:
            word = self.choice(fields["access"][1], f"{key}.access", _ACCESS)
            access = Access(word) if word is not None else None
        users: list[str] = []
        if "users" in fields:
            for i, item in enumerate(self.sequence(fields["users"][1], f"{key}.users", "user names") or ()):
                user = self.text(item, f"{key}.users[{i}]", "a user name")
                if user is None:
                    continue
                if user in user_roles:
                    other, line = user_roles[user]
                    where = "this role" if other == name else f"role {other!r}"
                    expected = f"each user in one role only ({where} lists it on line {line})"
                    self.error(item, f"{key}.users[{i}]", expected, repr(user))
                    continue
                user_roles[user] = (name, _line(item))
                users.append(user)
        table_access: dict[str, Access] = {}
        if "tables" in fields and not _is_null(fields["tables"][1]):
            for table, (table_key, value) in (self.mapping(fields["tables"][1], f"{key}.tables") or {}).items():
                sub = f"{key}.tables.{table}"
                qualified = self.known_table(table_key, sub)
                word = self.choice(value, sub, _ACCESS)
                if qualified is None or word is None:
                    continue
                if qualified in table_access:
                    self.error(table_key, sub, "each table once (this one is listed twice under another spelling)")
                    continue
                table_access[qualified] = Access(word)
        functions: frozenset[str] = frozenset()
        if "allow_functions" in fields:
            functions = self.functions(fields["allow_functions"][1], f"{key}.allow_functions")
        share = False
        if "share_answers" in fields and not _is_null(fields["share_answers"][1]):
            value = fields["share_answers"][1]
            share = bool(self.boolean(value, f"{key}.share_answers"))
            if share:
                self.share_nodes[name] = value
        if access is None:
            return None
        role = Role(name, access, tuple(users), table_access, functions, share)
        if share and not role.aggregates_privately:
            self.error(self.share_nodes.pop(name), f"{key}.share_answers",
                       "share_answers only in a role that gets private answers (access aggregate, or a table "
                       "with aggregate access); remove it here", "true")
        return role

    def boolean(self, node: Node, key: str) -> bool | None:
        if isinstance(node, ScalarNode) and node.tag == _BOOL:
            return bool(self.constructor.construct_object(node))
        self.error(node, key, "true or false", _show(node))
        return None

    def check_shared_answers(self, budgets: Budgets) -> None:
        """A role whose answers are shared is charged on the role's budget, which must be declared."""
        for name, node in self.share_nodes.items():
            if name not in budgets.per_role:
                self.error(node, f"roles.{name}.share_answers",
                           f"a budget for the role under budgets.per_role.{name} (shared answers are charged to "
                           f"the role's budget, which bounds what all its users learn together)",
                           f"no budgets.per_role.{name}")

    # -- answers -----------------------------------------------------------

    def answers(self, node: Node | None, budgets: Budgets) -> AnswerReuse:
        if node is None:
            return AnswerReuse()
        fields = self.mapping(node, "answers", ("reuse_for",)) or {}
        if "reuse_for" not in fields or _is_null(fields["reuse_for"][1]):
            return AnswerReuse()
        value = fields["reuse_for"][1]
        what = (f"a duration such as 300s, 30m, 12h or 1d (at most 9999999 of a unit), or {BUDGET_PERIOD} (as "
                f"long as budgets.period counts the answer's charge)")
        text = self.text(value, "answers.reuse_for", what)
        if text is None:
            return AnswerReuse()
        if text == BUDGET_PERIOD:
            if budgets.period == "never":
                self.error(value, "answers.reuse_for", f"a duration such as 1d ({BUDGET_PERIOD} needs a "
                           f"budgets.period other than never)", repr(text))
                return AnswerReuse()
            match = re.fullmatch(r"([0-9]+)([dh])", budgets.period)
        else:
            match = _REUSE.fullmatch(text)
            if match is None:
                self.error(value, "answers.reuse_for", what, _show(value), _near(text, [BUDGET_PERIOD]))
                return AnswerReuse()
        assert match is not None
        return AnswerReuse(text, float(int(match.group(1)) * _REUSE_UNITS[match.group(2)]))

    def functions(self, node: Node | None, key: str) -> frozenset[str]:
        if node is None:
            return frozenset()
        names = set()
        for i, item in enumerate(self.sequence(node, key, "function names") or ()):
            name = self.function_name(item, f"{key}[{i}]")
            if name is not None:
                names.add(name)
        return frozenset(names)

    # -- tables ------------------------------------------------------------

    def build_public_tables(self, node: Node | None) -> dict[str, int]:
        """schema.table -> the line that lists it."""
        tables: dict[str, int] = {}
        if node is None:
            return tables
        for i, item in enumerate(self.sequence(node, "public_tables", "table names") or ()):
            key = f"public_tables[{i}]"
            name = self.table_name(item, key)
            if name is None:
                continue
            if name in tables:
                self.error(item, key, f"each table once (also on line {tables[name]})", _show(item))
                continue
            tables[name] = _line(item)
        return tables

    def build_protected_tables(self, node: Node | None, public: dict[str, int]) -> dict[str, ProtectedTable]:
        self.public_names = public
        if node is None:
            return {}
        entries = self.mapping(node, "protected_tables")
        if entries is None:
            return {}
        tables: dict[str, ProtectedTable] = {}
        lines: dict[str, int] = {}
        references: list[tuple[str, Node, str]] = []  # table, node of its unit, key
        for written, (key_node, value) in entries.items():
            key = f"protected_tables.{written}"
            name = self.table_name(key_node, key)
            if name is None:
                continue
            if name in lines:
                self.error(key_node, key, f"each table once (also on line {lines[name]} under another spelling)")
                continue
            lines[name] = _line(key_node)
            if name in public:
                expected = f"a table that is not also public (public_tables lists it on line {public[name]})"
                self.error(key_node, key, expected)
            table = self.protected_table(name, key_node, value, key)
            if table is not None:
                tables[name] = table
                if table.privacy_unit.references is not None:
                    references.append((name, self.mapping_value(value, "privacy_unit"), f"{key}.privacy_unit"))
        self.check_references(tables, references)
        return tables

    @staticmethod
    def mapping_value(node: Node, name: str) -> Node:
        key_node: Node
        value: Node
        for key_node, value in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value == name:
                return value
        return node

    def protected_table(self, name: str, key_node: Node, node: Node, key: str) -> ProtectedTable | None:
        fields = self.mapping(node, key, _TABLE_KEYS, required=("privacy_unit",), owner=key_node)
        if fields is None:
            return None
        unit = self.privacy_unit(fields["privacy_unit"][1], f"{key}.privacy_unit") if "privacy_unit" in fields else None
        contribution = ContributionBounds()
        if "contribution" in fields and not _is_null(fields["contribution"][1]):
            contribution = self.contribution(fields["contribution"][1], f"{key}.contribution")
        row_filters: dict[str, str] = {}
        if "row_filters" in fields and not _is_null(fields["row_filters"][1]):
            row_filters = self.row_filters(name, fields["row_filters"][1], f"{key}.row_filters")
        columns: dict[str, ColumnPolicy] = {}
        if "columns" in fields and not _is_null(fields["columns"][1]):
            columns = self.columns(name, fields["columns"][1], f"{key}.columns")
        if unit is None:
            return None
        return ProtectedTable(name, unit, columns, row_filters, contribution)

    def privacy_unit(self, node: Node, key: str) -> PrivacyUnit | None:
        if isinstance(node, ScalarNode):
            column = self.column_name(node, key)
            return PrivacyUnit(column) if column is not None else None
        fields = self.mapping(node, key, ("column", "references"), required=("column",))
        if fields is None or "column" not in fields:
            return None
        column = self.column_name(fields["column"][1], f"{key}.column")
        references = None
        if "references" in fields:
            ref_node = fields["references"][1]
            text = self.text(ref_node, f"{key}.references", "table.column")
            if text is not None:
                references = _qualified(text, "public", parts_allowed=3)
                if references is None:
                    self.error(ref_node, f"{key}.references", "table.column or schema.table.column", _show(ref_node))
            if references is None:
                return None
        return PrivacyUnit(column, references) if column is not None else None

    def check_references(self, tables: dict[str, ProtectedTable], references: list[tuple[str, Node, str]]) -> None:
        """A reference names the privacy unit of another protected table, and
        following references always ends at a table that owns its unit."""
        for name, unit_node, key in references:
            at = self.mapping_value(unit_node, "references") if isinstance(unit_node, MappingNode) else unit_node
            target = tables[name].privacy_unit.references
            assert target is not None
            target_table, _, target_column = target.rpartition(".")
            if target_table not in self.protected_names:
                listed = ", ".join(sorted(self.protected_names))
                self.error(at, f"{key}.references", f"a column of a protected table ({listed})", _show(at))
                continue
            if target_table not in tables:
                continue  # that table has errors of its own
            if target_table == name:
                self.error(at, f"{key}.references", "a column of another protected table", _show(at))
                continue
            unit_column = tables[target_table].privacy_unit.column
            if target_column != unit_column:
                expected = f"the privacy unit of {target_table} ({target_table}.{unit_column})"
                self.error(at, f"{key}.references", expected, _show(at))
                continue
            seen, current = [name], target_table
            while (ref := tables[current].privacy_unit.references) is not None:
                if current in seen:
                    cycle = " -> ".join([*seen, current])
                    expected = f"references that end at a table owning its unit (cycle {cycle})"
                    self.error(at, f"{key}.references", expected, _show(at))
                    break
                seen.append(current)
                current = ref.rpartition(".")[0]
                if current not in tables:
                    break

    def contribution(self, node: Node, key: str) -> ContributionBounds:
        fields = self.mapping(node, key, ("max_groups_per_unit", "max_rows_per_group")) or {}
        values: dict[str, int] = {}
        for name, (_, value) in fields.items():
            number = self.integer(value, f"{key}.{name}", 1)
            if number is not None:
                values[name] = number
        return ContributionBounds(**values)

    def row_filters(self, table: str, node: Node, key: str) -> dict[str, str]:
        filters: dict[str, str] = {}
        for role, (key_node, value) in (self.mapping(node, key) or {}).items():
            sub = f"{key}.{role}"
            known = self.known_role(key_node, sub)
            self.raw_role_check(known, table, key_node, sub, "a row filter")
            sql = self.text(value, sub, "an SQL boolean expression over the table's columns")
            if sql is None:
                continue
            if bad := [marker for marker in _SQL_FORBIDDEN if marker in sql]:
                expected = "one SQL boolean expression, without ';', '--' or '/*'"
                self.error(value, sub, expected, f"{', '.join(map(repr, bad))} in {_show(value)}")
                continue
            if known is not None:
                filters[known] = sql
        return filters

    def raw_role_check(self, role: str | None, table: str, node: Node, key: str, what: str) -> None:
        # A raw role's statements pass through untouched: a row filter or a
        # mask for it would be a promise the proxy does not keep.
        if role is not None and role in self.roles and self.roles[role].access_to(table) is Access.RAW:
            self.error(node, key, f"a role that is not raw on {table} ({what} never applies to raw access)", repr(role))

    def columns(self, table: str, node: Node, key: str) -> dict[str, ColumnPolicy]:
        columns: dict[str, ColumnPolicy] = {}
        lines: dict[str, int] = {}
        for written, (key_node, value) in (self.mapping(node, key) or {}).items():
            sub = f"{key}.{written}"
            name = self.column_name(key_node, sub)
            if name is None:
                continue
            if name in lines:
                self.error(key_node, sub, f"each column once (also on line {lines[name]} under another spelling)")
                continue
            lines[name] = _line(key_node)
            column = self.column(table, name, key_node, value, sub)
            if column is not None:
                columns[name] = column
        return columns

    def column(self, table: str, name: str, key_node: Node, node: Node, key: str) -> ColumnPolicy | None:
        if not isinstance(node, MappingNode):
            mask = self.mask(node, key)
            return ColumnPolicy(name, mask) if mask is not None else None
        fields = self.mapping(node, key, _COLUMN_KEYS, required=("mask",), owner=key_node)
        if fields is None:
            return None
        mask = self.mask(fields["mask"][1], f"{key}.mask") if "mask" in fields else None
        role_masks: dict[str, MaskSpec] = {}
        if "roles" in fields and not _is_null(fields["roles"][1]):
            for role, (role_key, value) in (self.mapping(fields["roles"][1], f"{key}.roles") or {}).items():
                sub = f"{key}.roles.{role}"
                known = self.known_role(role_key, sub)
                self.raw_role_check(known, table, role_key, sub, "a mask")
                role_mask = self.mask(value, sub)
                if known is not None and role_mask is not None:
                    role_masks[known] = role_mask
        bounds = date_bounds = None
        if "bounds" in fields and _date_pair(fields["bounds"][1]):
            date_bounds = self.date_bounds(fields["bounds"][1], f"{key}.bounds")
        elif "bounds" in fields:
            bounds = self.bounds(fields["bounds"][1], f"{key}.bounds")
        public_domain = public_domain_table = None
        if "public_domain" in fields:
            domain_node = fields["public_domain"][1]
            if isinstance(domain_node, MappingNode):
                public_domain_table = self.public_domain_table(domain_node, f"{key}.public_domain")
            else:
                public_domain = self.public_domain(domain_node, f"{key}.public_domain")
        if mask is None:
            return None
        return ColumnPolicy(name, mask, role_masks, bounds, public_domain, public_domain_table, date_bounds)

    def mask(self, node: Node, key: str) -> MaskSpec | None:
        """`kind`, or `{kind: {params}}`."""
        kind_node: Node
        params_node: Node | None = None
        if isinstance(node, MappingNode):
            entries = self.mapping(node, key)
            if entries is None:
                return None
            if len(entries) != 1:
                expected = "a mask kind, or one kind with its parameters: {kind: {param: value}}"
                self.error(node, key, expected, _show(node))
                return None
            ((_, (kind_node, params_node)),) = entries.items()
        else:
            kind_node = node
        kind = self.text(kind_node, key, "a mask kind: " + _one_of(MASKS))
        if kind is None:
            return None
        if kind not in MASKS:
            self.error(kind_node, key, _one_of(MASKS), _show(kind_node), _near(kind, MASKS))
            return None
        params: dict[str, Any] = {}
        if params_node is not None and not _is_null(params_node):
            if not isinstance(params_node, MappingNode):
                self.error(params_node, f"{key}.{kind}", "the mask's parameters as a mapping", _show(params_node))
                return None
            params = self.plain_value(params_node, f"{key}.{kind}")
        spec = MaskSpec(kind, params)
        if (problem := check_mask(spec)) is not None:
            at = params_node if params_node is not None and not _is_null(params_node) else kind_node
            self.error(at, key if at is kind_node else f"{key}.{kind}", problem, repr(params) if params else None)
            return None
        return spec

    def bounds(self, node: Node, key: str) -> tuple[float, float] | None:
        what = "[low, high]: two numbers, low below high"
        if not isinstance(node, SequenceNode) or len(node.value) != 2:
            self.error(node, key, what, _show(node))
            return None
        low = self.number(node.value[0], f"{key}[0]")
        high = self.number(node.value[1], f"{key}[1]")
        if low is None or high is None:
            return None
        if not low < high:
            self.error(node, key, what, f"[{low:g}, {high:g}]")
            return None
        return (low, high)

    def date_bounds(self, node: SequenceNode, key: str) -> tuple[datetime.date, datetime.date] | None:
        """[low, high] of a date column: two dates written YYYY-MM-DD, low before high."""
        what = "[low, high]: two dates written YYYY-MM-DD (years 1 to 9999), low before high"
        dates = []
        for i, item in enumerate(node.value):
            try:
                dates.append(datetime.date.fromisoformat(item.value))
            except ValueError:
                self.error(item, f"{key}[{i}]", what, _show(item))
                return None
        if not dates[0] < dates[1]:
            self.error(node, key, what, f"[{dates[0]}, {dates[1]}]")
            return None
        return dates[0], dates[1]

    def public_domain(self, node: Node, key: str) -> tuple[str, ...] | None:
        items = self.sequence(node, key, "values")
        if items is None:
            return None
        values: list[str] = []
        for i, item in enumerate(items):
            if not isinstance(item, ScalarNode) or _is_null(item):
                self.error(item, f"{key}[{i}]", "a value (text)", _show(item))
            elif item.value not in values:
                values.append(item.value)
        return tuple(values)

    def public_domain_table(self, node: MappingNode, key: str) -> str | None:
        """{table: T, column: C}: the values of a public table's column."""
        fields = self.mapping(node, key, ("table", "column"), required=("table", "column"))
        if fields is None:
            return None
        table = self.table_name(fields["table"][1], f"{key}.table")
        column = self.column_name(fields["column"][1], f"{key}.column")
        if table is not None and table not in getattr(self, "public_names", {}):
            self.error(fields["table"][1], f"{key}.table", "a table listed in public_tables", _show(fields["table"][1]))
            return None
        return None if table is None or column is None else f"{table}.{column}"

    # -- secrets -----------------------------------------------------------

    def secrets(self, node: Node | None) -> dict[str, SecretRef]:
        refs: dict[str, SecretRef] = {}
        if node is None:
            return refs
        for name, (_, value) in (self.mapping(node, "secrets", SECRET_NAMES) or {}).items():
            ref = self.secret_ref(value, f"secrets.{name}")
            if ref is not None:
                refs[name] = ref
        return refs

    def secret_ref(self, node: Node, key: str) -> SecretRef | None:
        # Never repeat what was found: it may be the secret itself.
        what = "a reference {env: NAME} or {file: PATH}; secrets are never written in the policy"
        if not isinstance(node, MappingNode):
            self.error(node, key, what)
            return None
        if any(isinstance(k, ScalarNode) and k.value == "value" for k, _ in node.value):
            value_key = next(k for k, _ in node.value if isinstance(k, ScalarNode) and k.value == "value")
            self.error(value_key, f"{key}.value", what)
            return None
        fields = self.mapping(node, key, ("env", "file"))
        if fields is None:
            return None
        if len(fields) != 1:
            self.error(node, key, "exactly one of env or file", f"{len(fields)} of them")
            return None
        ((kind, (_, value)),) = fields.items()
        text = self.text(value, f"{key}.{kind}", "an environment variable name" if kind == "env" else "a file path")
        if text is None:
            return None
        if kind == "env":
            if not _ENV_NAME.fullmatch(text):
                self.error(value, f"{key}.env", "an environment variable name (letters, digits, _)", _show(value))
                return None
            return SecretRef(env=text)
        return SecretRef(file=text)

    # -- differential privacy ------------------------------------------------

    def epsilon(self, node: Node, key: str) -> float | None:
        value = self.number(node, key, "a number above 0")
        if value is not None and value <= 0:
            self.error(node, key, "a number above 0", _show(node))
            return None
        return value

    def delta(self, node: Node, key: str) -> float | None:
        value = self.number(node, key, "a number from 0 up to (not including) 1")
        if value is not None and not 0 <= value < 1:
            self.error(node, key, "a number from 0 up to (not including) 1", _show(node))
            return None
        return value

    def privacy(self, node: Node | None) -> PrivacyDefaults:
        defaults = PrivacyDefaults()
        if node is None:
            return defaults
        fields = self.mapping(node, "privacy", ("per_query", "floor")) or {}
        floor = self.floor(fields["floor"][1]) if "floor" in fields and not _is_null(fields["floor"][1]) else None
        per_query: dict[str, tuple[ScalarNode, Node]] = {}
        if "per_query" in fields and not _is_null(fields["per_query"][1]):
            per_query = self.mapping(fields["per_query"][1], "privacy.per_query", ("epsilon", "delta")) or {}
        chosen: dict[str, dict[str, float]] = {
            "epsilon": {"default": defaults.default.epsilon, "max": defaults.maximum.epsilon},
            "delta": {"default": defaults.default.delta, "max": defaults.maximum.delta},
        }
        for name, parse in (("epsilon", self.epsilon), ("delta", self.delta)):
            if name not in per_query or _is_null(per_query[name][1]):
                continue
            key = f"privacy.per_query.{name}"
            limits = self.mapping(per_query[name][1], key, ("default", "max")) or {}
            for which, (_, value) in limits.items():
                number = parse(value, f"{key}.{which}")
                if number is not None:
                    chosen[name][which] = number
            if chosen[name]["default"] > chosen[name]["max"]:
                at = limits.get("default", limits.get("max", (None, per_query[name][1])))[1]
                got = f"default {chosen[name]['default']:g} above max {chosen[name]['max']:g}"
                self.error(at, f"{key}.default", "a default no larger than max", got)
        # The defaults themselves must be allowed (a delta of 0 always is).
        given = floor is not None
        floor = floor or defaults.floor
        for name, low in (("epsilon", floor.epsilon), ("delta", floor.delta)):
            default = chosen[name]["default"]
            if default < low and (name == "epsilon" or default > 0):
                if given:
                    at, key = self.mapping_value(fields["floor"][1], name), f"privacy.floor.{name}"
                    what = f"a floor no larger than privacy.per_query.{name}.default"
                else:  # only a default the policy states can be below the built-in floor
                    at = self.mapping_value(per_query[name][1], "default")
                    key = f"privacy.per_query.{name}.default"
                    what = f"a default no smaller than the floor {low:g} (privacy.floor.{name} sets another)"
                self.error(at, key, what, f"default {default:g}, floor {low:g}")
        return PrivacyDefaults(
            EpsilonDelta(chosen["epsilon"]["default"], chosen["delta"]["default"]),
            EpsilonDelta(chosen["epsilon"]["max"], chosen["delta"]["max"]),
            floor,
        )

    def floor(self, node: Node) -> EpsilonDelta:
        """privacy.floor: the least epsilon and the least delta above 0 a query may be answered at."""
        defaults = PrivacyDefaults().floor
        fields = self.mapping(node, "privacy.floor", ("epsilon", "delta")) or {}
        epsilon, delta = defaults.epsilon, defaults.delta
        if "epsilon" in fields:
            epsilon = self.epsilon(fields["epsilon"][1], "privacy.floor.epsilon") or epsilon
        if "delta" in fields:
            value = fields["delta"][1]
            what = "a number above 0 and below 1 (a delta of 0 is always allowed)"
            number = self.number(value, "privacy.floor.delta", what)
            if number is not None and not 0 < number < 1:
                self.error(value, "privacy.floor.delta", what, _show(value))
            elif number is not None:
                delta = number
        return EpsilonDelta(epsilon, delta)

    def epsilon_delta(self, node: Node, key: str) -> EpsilonDelta | None:
        fields = self.mapping(node, key, ("epsilon", "delta"), required=("epsilon",))
        if fields is None or "epsilon" not in fields:
            return None
        epsilon = self.epsilon(fields["epsilon"][1], f"{key}.epsilon")
        delta = self.delta(fields["delta"][1], f"{key}.delta") if "delta" in fields else 0.0
        if epsilon is None or delta is None:
            return None
        return EpsilonDelta(epsilon, delta)

    def budgets(self, node: Node | None) -> Budgets:
        if node is None:
            return Budgets()
        fields = self.mapping(
            node, "budgets", ("period", "composition", "lifetime", "per_user", "per_role", "per_dataset")
        ) or {}
        period = "never"
        if "period" in fields:
            value = fields["period"][1]
            text = self.text(value, "budgets.period", "never, or a period such as 1d, 7d, 30d or 12h")
            if text is not None and not _PERIOD.fullmatch(text):
                self.error(value, "budgets.period", "never, or a period such as 1d, 7d, 30d or 12h", _show(value))
            elif text is not None:
                period = text
        per_user = per_dataset = None
        if "per_user" in fields and not _is_null(fields["per_user"][1]):
            per_user = self.epsilon_delta(fields["per_user"][1], "budgets.per_user")
        if "per_dataset" in fields and not _is_null(fields["per_dataset"][1]):
            per_dataset = self.epsilon_delta(fields["per_dataset"][1], "budgets.per_dataset")
        per_role: dict[str, EpsilonDelta] = {}
        if "per_role" in fields and not _is_null(fields["per_role"][1]):
            for role, (role_key, value) in (self.mapping(fields["per_role"][1], "budgets.per_role") or {}).items():
                key = f"budgets.per_role.{role}"
                known = self.known_role(role_key, key)
                budget = self.epsilon_delta(value, key)
                if known is not None and budget is not None:
                    per_role[known] = budget
        composition = "basic"
        if "composition" in fields and not _is_null(fields["composition"][1]):
            composition = self.choice(fields["composition"][1], "budgets.composition", COMPOSITIONS) or "basic"
        lifetime = None if period == "never" else DEFAULT_LIFETIME
        if "lifetime" in fields and not _is_null(fields["lifetime"][1]):
            value = fields["lifetime"][1]
            what = "a number of periods from 1 up (each budget's lifetime cap is that multiple of it)"
            number = self.number(value, "budgets.lifetime", what)
            if number is not None and number < 1:
                self.error(value, "budgets.lifetime", what, _show(value))
            elif number is not None and period == "never" and (
                "period" not in fields or fields["period"][1].value == "never"
            ):
                self.error(value, "budgets.lifetime", "no lifetime when budgets.period is never (the budgets are "
                           "lifetime caps already)", _show(value), "set budgets.period, or remove budgets.lifetime")
            elif number is not None:
                lifetime = number
        return Budgets(per_user, per_role, per_dataset, period, composition, lifetime)

    # -- authentication ----------------------------------------------------

    def authentication(self, node: Node | None) -> AuthenticationPolicy:
        if node is None:
            return AuthenticationPolicy()
        fields = self.mapping(node, "authentication", ("allow_upstream_trust",)) or {}
        if "allow_upstream_trust" not in fields or _is_null(fields["allow_upstream_trust"][1]):
            return AuthenticationPolicy()
        key = "authentication.allow_upstream_trust"
        value = fields["allow_upstream_trust"][1]
        what = "true, false, or a list of roles whose users PostgreSQL may let in without a password"
        if isinstance(value, ScalarNode) and value.tag == _BOOL:
            everyone = self.constructor.construct_object(value)
            return AuthenticationPolicy(frozenset(self.roles) if everyone else frozenset())
        if not isinstance(value, SequenceNode):
            self.error(value, key, what, _show(value))
            return AuthenticationPolicy()
        roles = set()
        for i, item in enumerate(value.value):
            known = self.known_role(item, f"{key}[{i}]")
            if known is not None:
                roles.add(known)
        return AuthenticationPolicy(frozenset(roles))


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _date_pair(node: Node) -> TypeGuard[SequenceNode]:
    """bounds written as two dates, or as one date beside anything: read as dates, so that the error names them."""
    return (isinstance(node, SequenceNode) and len(node.value) == 2
            and any(isinstance(n, ScalarNode) and _DATE.fullmatch(n.value) for n in node.value)
            and all(isinstance(n, ScalarNode) for n in node.value))
