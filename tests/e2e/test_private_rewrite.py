"""Private query plans as titled SQL fixtures: tests/data/private_queries.sql
states what the plan of each query must be (output names and types, public
keys or partition selection, the noisy measurements with their L1
sensitivities over all groups, epsilon shares and grids, the cost, the
contribution bounds, notices and post-processing, fragments the bounded SQL
must and must not contain, and the Local answers of SET/SHOW/RESET/EXPLAIN), and
tests/data/private_refusals.sql what must be refused and why. Each file
documents its format in its header. Plans are made for the analyst of the
healthcare policy below against the catalog of the demo database.

The policy is the demo's (policies/examples/healthcare.yaml) written out
here, so that tuning the demo's bounds or budgets does not change what
these fixtures state.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from pgshroud.policies.loader import load_policy
from pgshroud.proxy.ops.catalog import read_catalog
from pgshroud.rewriter import PlanContext, plan
from pgshroud.rewriter.plans import Local, Refuse, Release
from pgshroud.rewriter.private.release import GRID_STEPS

DATA = Path(__file__).resolve().parents[1] / "data"
DEFAULT_SESSION = {"epsilon": "1", "delta": "1e-6"}

# PostgreSQL's type OIDs (pg_type), written out here rather than taken from
# the rewriter, so the test states them independently.
TYPE_OIDS = {
    "boolean": 16, "bigint": 20, "smallint": 21, "integer": 23, "text": 25, "real": 700,
    "double precision": 701, "date": 1082, "timestamp without time zone": 1114,
    "timestamp with time zone": 1184, "interval": 1186, "numeric": 1700,
}


@dataclass
class Entry:
    title: str
    sql: str
    fields: list[tuple[str, str]] = field(default_factory=list)

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.fields if key == name]

    def one(self, name: str) -> str | None:
        values = self.all(name)
        assert len(values) <= 1, f"{self.title}: more than one `{name}` line"
        return values[0] if values else None

    def session(self) -> dict[str, str]:
        text = self.one("session")
        if text is None:
            return dict(DEFAULT_SESSION)
        if text == "none":
            return {}
        return dict(part.strip().split("=", 1) for part in text.split(","))


def read_entries(path: Path, known: set[str]) -> list[Entry]:
    entries: list[Entry] = []
    current: Entry | None = None
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("-- title:"):
            current = Entry(stripped.removeprefix("-- title:").strip(), "")
            entries.append(current)
            continue
        if current is None or not stripped:
            continue
        match = re.fullmatch(r"-- ([a-z]+): ?(.*)", stripped)
        if match:
            name, value = match.groups()
            assert name in known, f"{path.name}:{number}: unknown field `{name}`"
            current.fields.append((name, value.strip()))
        elif stripped.startswith("--"):
            raise AssertionError(f"{path.name}:{number}: a comment inside an entry: {stripped}")
        else:
            assert not current.fields, f"{path.name}:{number}: SQL after the expectations of {current.title!r}"
            current.sql = f"{current.sql} {stripped}".strip()
    titles = [e.title for e in entries]
    assert len(titles) == len(set(titles)), "titles must be unique"
    assert all(e.sql for e in entries), "every entry has a statement"
    return entries


QUERY_FIELDS = {"session", "columns", "keys", "noise", "cost", "contribution", "notice", "post", "sql", "nosql",
                "local", "setting", "value", "row"}
REFUSAL_FIELDS = {"session", "refused", "hint"}
QUERIES = read_entries(DATA / "private_queries.sql", QUERY_FIELDS)
REFUSALS = read_entries(DATA / "private_refusals.sql", REFUSAL_FIELDS)


POLICY = """
version: 1
default_role: deny
roles:
  admin: {access: raw, users: [admin]}
  clinician: {access: masked, users: [clinician]}
  analyst: {access: aggregate, users: [analyst]}
public_tables: [diagnoses]
protected_tables:
  patients:
    privacy_unit: patient_id
    contribution: {max_groups_per_unit: 1, max_rows_per_group: 1}
    columns:
      patient_id: pseudonym
      name: fake_name
      ssn: ssn
      email: email
      phone: phone
      birth_date: {mask: {generalize_date: {to: year}}, roles: {analyst: none}}
      sex: {mask: none, public_domain: [F, M]}
      zip: zip3
      city: fake_city
      state: none
  visits:
    privacy_unit: {column: patient_id, references: patients.patient_id}
    contribution: {max_groups_per_unit: 5, max_rows_per_group: 10}
    row_filters:
      clinician: "department <> 'Psychiatry'"
    columns:
      visit_id: pseudonym
      patient_id: pseudonym
      visit_date: {mask: {generalize_date: {to: month}}, roles: {analyst: none}}
      diagnosis_code: {mask: none, public_domain: {table: diagnoses, column: code}}
      department:
        mask: none
        public_domain: [Primary Care, Endocrinology, Orthopedics, Emergency, Neurology,
                        Pulmonology, Infectious Disease, Gastroenterology, Surgery, Nephrology,
                        Cardiology, Psychiatry, Dermatology, Ophthalmology, Oncology, Obstetrics]
      cost: {mask: {noise_number: {relative: 0.1}}, roles: {analyst: none}, bounds: [0, 5000]}
      length_of_stay: {mask: none, bounds: [0, 30]}
  labs:
    privacy_unit: {column: patient_id, references: patients.patient_id}
    contribution: {max_groups_per_unit: 5, max_rows_per_group: 10}
    columns:
      lab_id: pseudonym
      patient_id: pseudonym
      test:
        mask: none
        public_domain: [HbA1c, Glucose, LDL Cholesterol, HDL Cholesterol, Triglycerides,
                        Creatinine, Hemoglobin, White Blood Cells, Platelets, Sodium,
                        Potassium, TSH, ALT, Vitamin D]
      value: {mask: {noise_number: {relative: 0.05}}, roles: {analyst: none}, bounds: [0, 500]}
      unit: none
      taken_at: {mask: {generalize_date: {to: month}}, roles: {analyst: none}}
privacy:
  per_query:
    epsilon: {default: 0.5, max: 2.0}
    delta: {default: 1.0e-7, max: 1.0e-5}
budgets:
  period: never
  per_user: {epsilon: 50, delta: 2.0e-5}
"""


def policy_from(text: str, directory: Path):
    path = directory / "policy.yaml"
    path.write_text(text)
    return load_policy(path)


@pytest.fixture(scope="module")
def health_policy(tmp_path_factory):
    """The pinned healthcare policy (shadows tests.fix_health's, which reads the demo's file)."""
    return policy_from(POLICY, tmp_path_factory.mktemp("policy"))


@pytest.fixture(scope="module")
def health_catalog(health_db):
    return asyncio.run(read_catalog(health_db))


def planned(entry: Entry, policy, catalog):
    context = PlanContext(user="analyst", policy=policy, role=policy.role_for("analyst"), catalog=catalog,
                          privacy=entry.session())
    plans = plan(entry.sql, context)
    assert len(plans) == 1, plans
    return plans[0]


# expectation parsers

def parse_columns(text: str) -> list[tuple[str, int]]:
    columns = []
    for item in text.split(","):
        item = item.strip()
        for type_name, oid in sorted(TYPE_OIDS.items(), key=lambda kv: -len(kv[0])):
            if item.endswith(" " + type_name):
                columns.append((item[: -len(type_name) - 1].strip(), oid))
                break
        else:
            raise AssertionError(f"no known type at the end of column {item!r}")
    return columns


NOISE = re.compile(r"(?P<kind>[a-z_]+)(?: \[(?P<low>[-\d./e]+), (?P<high>[-\d./e]+)\])?"
                   r" sensitivity (?P<sens>[-\d./e]+) epsilon (?P<eps>[\d./e-]+)(?: grid (?P<grid>\d+))?")


def parse_noise(text: str) -> tuple:
    """(kind, bounds, L1 sensitivity, epsilon, grid index sensitivity or None)."""
    match = NOISE.fullmatch(text)
    assert match, f"cannot read noise line {text!r}"
    bounds = None if match["low"] is None else (Fraction(match["low"]), Fraction(match["high"]))
    grid = None if match["grid"] is None else int(match["grid"])
    return (match["kind"], bounds, Fraction(match["sens"]), Fraction(match["eps"]), grid)


# How one person moves each kind of measurement, in L1 over all groups, for an
# allowance of T rows per person (stated here, not taken from the rewriter);
# units: once in each of at most max_groups groups.
def l1_sensitivity(kind: str, bounds, max_groups: int, allowance: int) -> Fraction:
    if kind == "units":
        return Fraction(max_groups)
    if kind in ("rows", "count", "histogram", "distinct"):
        return Fraction(allowance)
    low, high = bounds
    largest = max(abs(low), abs(high))
    if kind == "centred_sum":
        return allowance * (high - low) / 2
    if kind == "sum_of_squares":
        return allowance * largest * largest
    assert kind in ("sum", "clamped_sum"), kind
    return allowance * largest


def parse_keys(text: str) -> list[tuple[str, int | str | None]]:
    """`public N` (a declared domain of N values), `public table` (the values
    of a public table's column, read when the query runs) or `selection`."""
    if text == "none":
        return []
    keys: list[tuple[str, int | str | None]] = []
    for item in text.split(","):
        words = item.split()
        assert words[0] in ("public", "selection"), item
        if words[0] == "selection":
            keys.append(("selection", None))
        else:
            keys.append(("public", "table" if words[1] == "table" else int(words[1])))
    return keys


def key_kind(key) -> tuple[str, int | str | None]:
    if key.domain is not None:
        return ("public", len(key.domain))
    if key.domain_sql is not None:
        return ("public", "table")
    return ("selection", None)


def parse_post(text: str | None) -> dict:
    post = {"having": False, "order": [], "limit": None, "offset": 0}
    for part in (text or "").split(";"):
        words = part.replace(",", " ").split()
        if not words:
            continue
        if words[0] == "having":
            post["having"] = True
        elif words[0] == "order":
            post["order"] = [w == "desc" for w in words[1:]]
        elif words[0] in ("limit", "offset"):
            post[words[0]] = int(words[1])
        else:
            raise AssertionError(f"unknown post-processing {part!r}")
    return post


# the tests

@pytest.mark.parametrize("entry", QUERIES, ids=[e.title for e in QUERIES])
def test_private_query_plan(entry: Entry, health_policy, health_catalog):
    result = planned(entry, health_policy, health_catalog)
    if entry.one("local") is not None:
        check_local(entry, result)
    else:
        check_release(entry, result)


def check_local(entry: Entry, result) -> None:
    assert isinstance(result, Local), result
    answer = result.answer
    assert answer.command_tag == entry.one("local")
    setting = entry.one("setting")
    if setting is None:
        assert result.setting is None
    else:
        name, value = setting.split()
        assert result.setting is not None, result
        assert (result.setting.name, result.setting.value) == (name, None if value == "reset" else value)
    columns = entry.one("columns")
    if columns is not None:
        assert [(c.name, c.type_oid) for c in answer.columns] == parse_columns(columns)
    value = entry.one("value")
    if value is not None:
        assert answer.rows == ((value,),)
    texts = [row[0] for row in answer.rows]
    for fragment in entry.all("row"):
        assert any(fragment in text for text in texts), (fragment, texts)


def check_release(entry: Entry, result) -> None:
    assert isinstance(result, Release), result
    spec = result.spec
    query = spec.query
    assert result.sql == spec.sql

    columns = parse_columns(entry.one("columns") or "")
    assert [(c.name, c.type_oid) for c in spec.columns] == columns

    keys = parse_keys(entry.one("keys") or "none")
    assert [key_kind(k) for k in query.keys] == keys

    expected_noise = sorted(parse_noise(line) for line in entry.all("noise"))

    def grid_of(noise) -> Fraction | None:
        """The index sensitivity the grid's discrete Laplace is scaled for."""
        return None if noise.granularity is None else noise.mechanism.scale * noise.epsilon

    actual_noise = sorted((m.kind, m.bounds, n.sensitivity, n.epsilon, grid_of(n)) for m, n in spec.noises.items())
    assert actual_noise == expected_noise
    allowance = query.max_groups * query.max_rows
    # A person's rows are allocated over all their groups, whether or not
    # people are counted per group: their allowance may touch one group per
    # row (people counts are capped at max_groups groups, row values are not).
    touched = 1 if not query.keys else allowance
    for measurement, noise in spec.noises.items():
        assert noise.sensitivity == l1_sensitivity(measurement.kind, measurement.bounds, query.max_groups, allowance)
        if measurement.kind in ("sum", "centred_sum", "clamped_sum", "sum_of_squares"):
            # Real values on a grid of L1/GRID_STEPS, each group rounded on its
            # own: one person moves the indices by GRID_STEPS plus one per group
            # they touch, which is what the discrete Laplace is scaled for.
            assert noise.granularity == noise.sensitivity / GRID_STEPS, measurement
            assert noise.mechanism.scale == (GRID_STEPS + touched) / noise.epsilon, measurement
            assert noise.scale == noise.sensitivity / noise.epsilon * (GRID_STEPS + touched) / GRID_STEPS
        else:
            # Integers: the scale, in the measurement's units, is its L1 sensitivity over its epsilon.
            assert noise.granularity is None, measurement
            assert noise.scale == noise.sensitivity / noise.epsilon, measurement
    assert sum(n.epsilon for n in spec.noises.values()) == spec.epsilon

    cost = re.fullmatch(r"epsilon ([\d.e-]+), delta ([\d.e-]+)", entry.one("cost") or "")
    assert cost, entry.one("cost")
    # Costs are the exact decimals the session set.
    assert (spec.cost.epsilon, spec.cost.delta) == (Decimal(cost[1]), Decimal(cost[2]))
    assert (spec.selection is not None) == any(kind == "selection" for kind, _ in keys)

    contribution = re.fullmatch(r"(\d+) groups x (\d+) rows", entry.one("contribution") or "")
    assert contribution, entry.one("contribution")
    assert (query.max_groups, query.max_rows) == (int(contribution[1]), int(contribution[2]))

    notices = entry.all("notice")
    assert len(query.notices) == len(notices), query.notices
    for fragment, notice in zip(notices, query.notices):
        assert fragment.lower() in notice.lower(), (fragment, notice)

    post = parse_post(entry.one("post"))
    assert (query.having is not None) == post["having"]
    assert [item.descending for item in query.order] == post["order"]
    assert (query.limit, query.offset) == (post["limit"], post["offset"])

    for fragment in entry.all("sql"):
        assert fragment in spec.sql, fragment
    for fragment in entry.all("nosql"):
        assert fragment not in spec.sql, fragment


@pytest.mark.parametrize("entry", REFUSALS, ids=[e.title for e in REFUSALS])
def test_private_refusal(entry: Entry, health_policy, health_catalog):
    result = planned(entry, health_policy, health_catalog)
    assert isinstance(result, Refuse), result
    sqlstate, fragment = (entry.one("refused") or "").split(" ", 1)
    assert result.sqlstate == sqlstate, result
    assert fragment.lower() in result.message.lower(), result
    hint = entry.one("hint")
    if hint is not None:
        assert result.hint is not None and hint.lower() in result.hint.lower(), result


def test_fixture_files_cover_the_query_shapes():
    """The fixture files keep covering what the private rewrite must answer and refuse."""
    queries = " ".join(e.sql.lower() for e in QUERIES)
    for shape in ("count(*)", "count(cost)", "count(distinct patient_id)", "sum(", "avg(", "variance(",
                  "stddev(", "var_pop(", "median(", "percentile_cont(", "percentile_disc(", "min(", "max(",
                  "filter (where", "least(greatest(", "case when", "date_trunc(", "using (patient_id)",
                  " on p.patient_id = v.patient_id", "diagnoses", "where", "having", "order by", "limit",
                  "round(avg(", "set pgshroud.epsilon", "show pgshroud", "reset pgshroud", "explain", "with "):
        assert shape in queries, shape
    refusals = " ".join(e.sql.lower() for e in REFUSALS)
    for shape in ("select *", " over (", "::int", "like 'card\\'", "right join", "full join", "union",
                  "in (select", "distinct", "set local", "group by patient_id"):
        assert shape in refusals, shape


@pytest.fixture(scope="module")
def decimal_policy(tmp_path_factory):
    """The same policy with per-query epsilon limits that binary floats do not hold exactly."""
    text = POLICY.replace("epsilon: {default: 0.5, max: 2.0}", "epsilon: {default: 0.1, max: 0.3}")
    assert text != POLICY
    return policy_from(text, tmp_path_factory.mktemp("decimal"))


def test_the_policy_maximum_epsilon_itself_may_be_set(decimal_policy, health_catalog):
    """The policy's maximum is 0.3, so SET pgshroud.epsilon = 0.3 is allowed
    (0.3 as a binary float is a little below 3/10)."""
    for statement in ("SET pgshroud.epsilon = 0.3", "SELECT count(*) FROM visits"):
        entry = Entry("maximum", statement, [("session", "epsilon=0.3")])
        result = planned(entry, decimal_policy, health_catalog)
        assert not isinstance(result, Refuse), (statement, result)


def test_the_policy_default_epsilon_is_the_decimal_the_policy_states(decimal_policy, health_catalog):
    """The noise is calibrated for exactly the default epsilon 0.1 that is
    charged, not for the nearest binary float (which is a little above 1/10)."""
    result = planned(Entry("default", "SELECT count(*) FROM visits", [("session", "none")]), decimal_policy,
                     health_catalog)
    assert isinstance(result, Release)
    assert result.spec.epsilon == Fraction(1, 10)
    assert sum(n.epsilon for n in result.spec.noises.values()) == Fraction(1, 10)


@pytest.mark.parametrize(("sql", "capped"), [
    ("SELECT department, count(*), sum(cost) FROM visits GROUP BY department", False),
    ("SELECT department, count(DISTINCT patient_id) FROM visits GROUP BY department", True),
    ("SELECT date_trunc('month', visit_date) AS month, count(*) FROM visits GROUP BY month", True),
])
def test_explain_states_the_contribution_bounds_the_bounded_sql_applies(sql, capped, health_policy,
                                                                         health_catalog):
    """EXPLAIN's contribution line says what the bounded SQL does: an
    allowance of 5 x 10 = 50 rows per patient over all groups, and, only
    where people are counted per group (the SQL's `"pick"`), each patient
    counted in at most 5 groups, chosen at random (`ORDER BY random()`), not
    the patient's largest; their rows are still allocated over all groups."""
    release = planned(Entry("plan", sql), health_policy, health_catalog)
    assert isinstance(release, Release), release
    assert ('"pick" <= 5' in release.sql) == capped
    if capped:
        assert 'row_number() OVER (PARTITION BY "unit" ORDER BY random())' in release.sql
    explain = planned(Entry("explain", f"EXPLAIN {sql}"), health_policy, health_catalog)
    assert isinstance(explain, Local), explain
    (line,) = [row[0] for row in explain.answer.rows if row[0].startswith("contribution bounds")]
    assert "largest" not in line, line
    assert line == ("contribution bounds: 50 row(s) per person in all"
                    + ("; each person counted in at most 5 group(s), chosen at random" if capped else "")), line
