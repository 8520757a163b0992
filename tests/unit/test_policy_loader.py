"""Loading and validating policy files: the example, and one failing snippet
per rule, each checked for its line, key and what it expected.

In the snippets, the line an error must name is marked with `#<`.
"""

from __future__ import annotations

import importlib.resources
import pickle
import re
import textwrap
from pathlib import Path

import pytest

from pgshroud.policies.errors import PolicyError, PolicyErrors
from pgshroud.policies.loader import load_policy, loads_policy
from pgshroud.policies.masks import MASKS
from pgshroud.policies.model import Access, EpsilonDelta, MaskSpec, PrivacyUnit

EXAMPLE = importlib.resources.files("pgshroud.policies") / "examples" / "healthcare.yaml"

BASE = """\
version: 1
roles:
  admin: {access: raw, users: [admin]}
  clinician: {access: masked, users: [clinician]}
  analyst: {access: aggregate, users: [analyst]}
public_tables: [diagnoses]
protected_tables:
  patients:
    privacy_unit: patient_id
    columns:
      patient_id: pseudonym
      ssn: ssn
"""


def errors_of(text: str) -> list[PolicyError]:
    with pytest.raises(PolicyErrors) as info:
        loads_policy(textwrap.dedent(text), "t.yaml")
    return info.value.errors


def marked_line(text: str) -> int:
    lines = [i for i, line in enumerate(textwrap.dedent(text).splitlines(), 1) if "#<" in line]
    assert len(lines) == 1, "mark exactly one line with #<"
    return lines[0]


def assert_one_error(text: str, key: str, expected: str) -> PolicyError:
    errors = errors_of(text)
    assert len(errors) == 1, "\n".join(map(str, errors))
    (error,) = errors
    assert (error.line, error.key) == (marked_line(text), key), str(error)
    assert expected in error.expected, str(error)
    where = f"t.yaml:{error.line}: {key}: " if key else f"t.yaml:{error.line}: "
    assert str(error).startswith(where + "expected "), str(error)
    return error


# -- the example -------------------------------------------------------------


def test_example_is_package_data():
    assert EXAMPLE.is_file()
    policy = loads_policy(EXAMPLE.read_text(encoding="utf-8"), "healthcare.yaml")
    assert policy.source == "healthcare.yaml"


def test_example_roles_and_tables():
    policy = load_policy(str(EXAMPLE))
    assert {name: role.access for name, role in policy.roles.items()} == {
        "admin": Access.RAW,
        "clinician": Access.MASKED,
        "analyst": Access.AGGREGATE,
    }
    assert policy.default_role is None
    assert policy.public_tables == {"public.diagnoses"}
    assert set(policy.protected_tables) == {"public.patients", "public.visits", "public.labs"}
    assert policy.admin_dsn is None and policy.secrets == {}  # no environment needed
    patients = policy.protected_tables["public.patients"]
    assert patients.privacy_unit == PrivacyUnit("patient_id")
    assert set(patients.columns) == {
        "patient_id", "name", "ssn", "email", "phone", "birth_date", "sex", "zip", "city", "state"
    }
    for name in ("visits", "labs"):
        unit = policy.protected_tables[f"public.{name}"].privacy_unit
        assert unit == PrivacyUnit("patient_id", "public.patients.patient_id")


def test_example_masks():
    tables = load_policy(EXAMPLE).protected_tables
    patients, visits, labs = (tables[f"public.{name}"] for name in ("patients", "visits", "labs"))
    kinds = {name: column.mask.kind for name, column in patients.columns.items()}
    assert kinds == {
        "patient_id": "pseudonym",
        "name": "fake_name",
        "ssn": "ssn",
        "email": "email",
        "phone": "phone",
        "birth_date": "generalize_date",
        "sex": "none",
        "zip": "zip3",
        "city": "fake_city",
        "state": "none",
    }
    assert patients.columns["birth_date"].mask == MaskSpec("generalize_date", {"to": "year"})
    assert patients.columns["birth_date"].mask_for("analyst").kind == "none"
    assert patients.columns["birth_date"].mask_for("clinician").kind == "generalize_date"
    # Pseudonymised ids everywhere, so joins still match.
    assert visits.columns["patient_id"].mask.kind == labs.columns["patient_id"].mask.kind == "pseudonym"
    assert visits.columns["visit_date"].mask == MaskSpec("generalize_date", {"to": "month"})
    assert visits.columns["diagnosis_code"].mask.kind == "none"
    assert visits.columns["cost"].mask.kind == "noise_number"
    assert visits.columns["cost"].bounds == (0, 5000)
    assert "Cardiology" in visits.columns["department"].public_domain
    assert labs.columns["value"].mask.kind == "noise_number"


def test_example_budget_lasts_a_hundred_default_queries():
    policy = load_policy(EXAMPLE)
    per_user, default = policy.budgets.per_user, policy.privacy.default
    assert per_user.epsilon / default.epsilon >= 100
    assert default.delta == 0 or per_user.delta / default.delta >= 100
    assert policy.budgets.per_role["analyst"].epsilon / default.epsilon >= 100


def test_role_for():
    policy = load_policy(EXAMPLE)
    assert policy.role_for("clinician").name == "clinician"
    assert policy.role_for("analyst").access is Access.AGGREGATE
    assert policy.role_for("mallory") is None
    assert policy.role_for("Analyst") is None  # user names are exact, as the client sends them


def test_role_for_with_a_default_role():
    policy = loads_policy(BASE + "default_role: analyst\n")
    assert policy.default_role == "analyst"
    assert policy.role_for("mallory").name == "analyst"
    assert policy.role_for("admin").name == "admin"
    assert loads_policy(BASE + "default_role: deny\n").default_role is None


# -- the whole document --------------------------------------------------------


def test_yaml_syntax_error_names_the_line():
    error = assert_one_error(
        """\
        version: 1
        roles:
          admin: {access: raw, users: [admin}   #<
        """,
        "",
        "valid YAML",
    )
    assert str(error).startswith("t.yaml:3: expected valid YAML")


def test_tab_indentation_names_the_line():
    errors = errors_of("version: 1\nroles:\n\tadmin: {access: raw}\n")
    assert [e.line for e in errors] == [3]


def test_empty_document():
    error = assert_one_error("#<\n", "", "a policy")
    assert error.got == "an empty document"


def test_document_not_a_mapping():
    assert_one_error("- version: 1   #<\n", "", "a mapping")


def test_more_than_one_document():
    (error,) = errors_of("version: 1\nroles: {}\n---\nversion: 1\n")
    assert error.line == 3 and "single document" in error.expected


def test_version_must_be_1():
    assert_one_error(BASE.replace("version: 1", "version: 2   #<"), "version", "1")
    assert_one_error(BASE.replace("version: 1", "version: '1'   #<"), "version", "1")
    assert_one_error(BASE.replace("version: 1", "version: true   #<"), "version", "1")


def test_version_and_roles_are_required():
    errors = errors_of("public_tables: []\n")
    assert [(e.line, e.key) for e in errors] == [(1, "version"), (1, "roles")]


def test_unknown_key_suggests_the_near_one():
    error = assert_one_error(BASE + "budget: {}   #<\n", "budget", "one of the keys version, ")
    assert error.hint == "budgets"
    assert str(error).endswith("(got 'budget'); did you mean 'budgets'?")


def test_unknown_key_deep_down():
    text = BASE + "      email: {mask: email, rolse: {}}   #<\n"
    error = assert_one_error(text, "protected_tables.patients.columns.email.rolse", "one of the keys mask, roles")
    assert error.hint == "roles"


def test_duplicate_key():
    text = BASE.replace("  analyst: {", "  admin: {access: raw}   #<\n  analyst: {")
    error = assert_one_error(text, "roles.admin", "each key once")
    assert "line 3" in error.expected


def test_merge_keys_are_refused():
    old = "{access: aggregate, users: [analyst]}"
    text = BASE.replace(old, "{<<: {users: [analyst]}, access: aggregate}   #<")
    assert_one_error(text, "roles.analyst", "merge keys")


def test_anchors_and_aliases_work():
    text = BASE.replace("version: 1", "version: 1\nx-common: &masked masked").replace(
        "{access: masked,", "{access: *masked,"
    )
    errors = errors_of(text)  # x-common is unknown, the alias itself is fine
    assert [e.key for e in errors] == ["x-common"]


# -- roles ---------------------------------------------------------------------


def test_access_must_be_known():
    text = BASE.replace("{access: masked, users: [clinician]}", "{access: maskd, users: [clinician]}   #<")
    error = assert_one_error(text, "roles.clinician.access", "one of raw, masked, aggregate, deny")
    assert error.got == "'maskd'" and error.hint == "masked"


def test_access_is_required():
    text = BASE.replace("  analyst: {access: aggregate, users: [analyst]}", "  analyst: {users: [analyst]}   #<")
    assert_one_error(text, "roles.analyst.access", "'access'")


def test_user_in_two_roles():
    text = BASE.replace("users: [analyst]}", "users: [analyst, admin]}   #<")
    error = assert_one_error(text, "roles.analyst.users[1]", "each user in one role only")
    assert "'admin'" in error.expected and "line 3" in error.expected


def test_user_twice_in_one_role():
    text = BASE.replace("users: [analyst]}", "users: [analyst, analyst]}   #<")
    assert_one_error(text, "roles.analyst.users[1]", "each user in one role only (this role")


def test_role_named_deny_is_reserved():
    text = BASE.replace("roles:\n", "roles:\n  deny: {access: deny}   #<\n")
    assert_one_error(text, "roles.deny", "other than 'deny'")


def test_table_override_names_a_known_table():
    text = BASE.replace("users: [clinician]}", "users: [clinician], tables: {patient: deny}}   #<")
    error = assert_one_error(text, "roles.clinician.tables.patient", "a table in public_tables or protected_tables")
    assert error.hint == "patients"


def test_table_override_access():
    text = BASE.replace("users: [clinician]}", "users: [clinician], tables: {diagnoses: none}}   #<")
    assert_one_error(text, "roles.clinician.tables.diagnoses", "one of raw, masked, aggregate, deny")


def test_table_override_is_normalised():
    text = BASE.replace("users: [clinician]}", "users: [clinician], tables: {Public.Diagnoses: deny}}")
    role = loads_policy(text).roles["clinician"]
    assert role.access_to("public.diagnoses") is Access.DENY
    assert role.access_to("public.patients") is Access.MASKED


def test_allow_statements_is_not_supported():
    # A role that is not raw only reads; a policy that still names statement
    # kinds to allow fails to load rather than promise what is not enforced.
    for kinds in ("[insert]", "[]"):
        text = BASE.replace("users: [clinician]}", f"users: [clinician], allow_statements: {kinds}}}   #<")
        error = assert_one_error(text, "roles.clinician.allow_statements", "no allow_statements: it is not supported")
        assert "access raw" in error.expected
        assert error.got == "'allow_statements'"


def test_allow_functions_are_qualified():
    text = BASE.replace("users: [clinician]}", 'users: [clinician], allow_functions: [Upper, myschema."F"]}')
    text += "allow_functions: [pg_catalog.now]\n"
    policy = loads_policy(text)
    assert policy.roles["clinician"].allow_functions == {"pg_catalog.upper", "myschema.F"}
    assert policy.allow_functions == {"pg_catalog.now"}
    bad = BASE + "allow_functions: [a.b.c]   #<\n"
    assert_one_error(bad, "allow_functions[0]", "a function name")


def test_default_role_names_a_role():
    error = assert_one_error(BASE + "default_role: analist   #<\n", "default_role", "deny or a role")
    assert error.hint == "analyst"


# -- tables ----------------------------------------------------------------------


def test_identifiers_fold_like_postgresql():
    # In YAML, a quoted identifier needs its double quotes inside single ones.
    text = BASE.replace("[diagnoses]", '[Diagnoses, ref."Codes"]')
    text = text.replace("      ssn: ssn", "      SSN: ssn\n      '\"Email\"': email")
    policy = loads_policy(text)
    assert policy.public_tables == {"public.diagnoses", "ref.Codes"}
    assert set(policy.protected_tables["public.patients"].columns) == {"patient_id", "ssn", "Email"}


def test_same_table_under_two_spellings():
    text = BASE + "  public.PATIENTS:   #<\n    privacy_unit: patient_id\n"
    assert_one_error(text, "protected_tables.public.PATIENTS", "each table once")


def test_same_column_under_two_spellings():
    assert_one_error(BASE + "      Ssn: none   #<\n", "protected_tables.patients.columns.Ssn", "each column once")


def test_bad_table_name():
    assert_one_error(BASE.replace("[diagnoses]", "[a.b.c]   #<"), "public_tables[0]", "a table name")


def test_table_both_public_and_protected():
    text = BASE.replace("[diagnoses]", "[diagnoses, patients]").replace("  patients:", "  patients:   #<")
    error = assert_one_error(text, "protected_tables.patients", "not also public")
    assert "line 6" in error.expected


def test_privacy_unit_is_required():
    text = BASE + "  labs:   #<\n    columns: {value: none}\n"
    assert_one_error(text, "protected_tables.labs.privacy_unit", "'privacy_unit'")


def test_privacy_unit_references_a_protected_table():
    text = BASE + "  visits:\n    privacy_unit: {column: patient_id, references: diagnoses.code}   #<\n"
    error = assert_one_error(text, "protected_tables.visits.privacy_unit.references", "a column of a protected table")
    assert "public.patients" in error.expected


def test_privacy_unit_references_the_unit_column():
    text = BASE + "  visits:\n    privacy_unit: {column: patient_id, references: patients.ssn}   #<\n"
    assert_one_error(text, "protected_tables.visits.privacy_unit.references", "the privacy unit of public.patients")


def test_privacy_unit_reference_cycle():
    text = BASE + "  a:\n    privacy_unit: {column: id, references: b.id}\n"
    text += "  b:\n    privacy_unit: {column: id, references: a.id}\n"
    errors = errors_of(text)
    assert [e.key for e in errors] == [f"protected_tables.{t}.privacy_unit.references" for t in "ab"]
    assert all("cycle" in e.expected for e in errors)


def test_privacy_unit_reference_is_qualified():
    text = BASE + "  visits:\n    privacy_unit: {column: Patient_ID, references: Patients.patient_id}\n"
    unit = loads_policy(text).protected_tables["public.visits"].privacy_unit
    assert unit == PrivacyUnit("patient_id", "public.patients.patient_id")


def test_contribution_bounds():
    text = BASE.replace("    columns:", "    contribution: {max_groups_per_unit: 0}   #<\n    columns:")
    assert_one_error(text, "protected_tables.patients.contribution.max_groups_per_unit", "a whole number of at least 1")
    text = BASE.replace("    columns:", "    contribution: {max_rows_per_group: 3}\n    columns:")
    bounds = loads_policy(text).protected_tables["public.patients"].contribution
    assert (bounds.max_groups_per_unit, bounds.max_rows_per_group) == (1, 3)


def test_row_filter_names_a_role():
    text = BASE.replace("    columns:", "    row_filters: {clinican: \"sex = 'F'\"}   #<\n    columns:")
    error = assert_one_error(text, "protected_tables.patients.row_filters.clinican", "a role defined under roles")
    assert error.hint == "clinician"


@pytest.mark.parametrize("sql", ["sex = 'F'; DROP TABLE x", "true -- and more", "true /* x */"])
def test_row_filter_is_one_expression(sql):
    text = BASE.replace("    columns:", f'    row_filters: {{clinician: "{sql}"}}   #<\n    columns:')
    assert_one_error(text, "protected_tables.patients.row_filters.clinician", "without ';', '--' or '/*'")


def test_row_filter_is_not_empty():
    text = BASE.replace("    columns:", "    row_filters: {clinician: ''}   #<\n    columns:")
    assert_one_error(text, "protected_tables.patients.row_filters.clinician", "an SQL boolean expression")


def test_row_filter_for_a_raw_role_would_never_apply():
    text = BASE.replace("    columns:", "    row_filters: {admin: 'true'}   #<\n    columns:")
    assert_one_error(text, "protected_tables.patients.row_filters.admin", "a role that is not raw")


def test_row_filters_are_kept():
    text = BASE.replace("    columns:", "    row_filters: {clinician: \"sex IN ('F','M')\"}\n    columns:")
    assert loads_policy(text).protected_tables["public.patients"].row_filters == {"clinician": "sex IN ('F','M')"}


# -- columns ---------------------------------------------------------------------


def test_unknown_mask_kind():
    text = BASE + "      email: {mask: blurr}   #<\n"
    error = assert_one_error(text, "protected_tables.patients.columns.email.mask", "one of ")
    assert {"redact", "null", "partial", "fake_city"} <= set(error.expected.removeprefix("one of ").split(", "))
    assert "(got 'blurr')" in str(error)


def test_unknown_mask_kind_as_a_string():
    text = BASE + "      email: emial   #<\n"
    error = assert_one_error(text, "protected_tables.patients.columns.email", "one of ")
    assert error.hint == "email"


def test_mask_words_that_yaml_would_read_otherwise():
    policy = loads_policy(BASE + "      email: null\n      phone: none\n")
    columns = policy.protected_tables["public.patients"].columns
    assert columns["email"].mask.kind == "null" and columns["phone"].mask.kind == "none"


def test_mask_with_params_is_one_kind():
    text = BASE + "      email: {mask: {redact: {}, null: {}}}   #<\n"
    assert_one_error(text, "protected_tables.patients.columns.email.mask", "one kind with its parameters")


def test_mask_params_are_a_mapping():
    text = BASE + "      email: {mask: {redact: [1]}}   #<\n"
    assert_one_error(text, "protected_tables.patients.columns.email.mask.redact", "parameters as a mapping")


def test_column_mapping_needs_a_mask():
    text = BASE + "      email: {bounds: [0, 1]}   #<\n"
    assert_one_error(text, "protected_tables.patients.columns.email.mask", "'mask'")


def test_role_masks_name_roles():
    text = BASE + "      email: {mask: email, roles: {analyts: none}}   #<\n"
    error = assert_one_error(text, "protected_tables.patients.columns.email.roles.analyts", "a role defined")
    assert error.hint == "analyst"


def test_role_mask_for_a_raw_role_would_never_apply():
    text = BASE + "      email: {mask: email, roles: {admin: none}}   #<\n"
    assert_one_error(text, "protected_tables.patients.columns.email.roles.admin", "a role that is not raw")


def test_role_mask_kind():
    text = BASE + "      email: {mask: email, roles: {analyst: nothing}}   #<\n"
    assert_one_error(text, "protected_tables.patients.columns.email.roles.analyst", "one of ")


@pytest.mark.parametrize(
    "bounds, key, expected",
    [
        ("[10, 1]", "bounds", "low below high"),
        ("[1, 1]", "bounds", "low below high"),
        ("[1]", "bounds", "two numbers"),
        ("5", "bounds", "two numbers"),
        ("[a, 1]", "bounds[0]", "a number"),
        ("[0, .inf]", "bounds[1]", "a number"),
        ("[0, true]", "bounds[1]", "a number"),
    ],
)
def test_bounds(bounds, key, expected):
    text = BASE + f"      cost: {{mask: none, bounds: {bounds}}}   #<\n"
    assert_one_error(text, f"protected_tables.patients.columns.cost.{key}", expected)


def test_bounds_and_public_domain_are_kept():
    text = BASE + "      cost: {mask: none, bounds: [-1.5, 1e3]}\n      dept: {mask: none, public_domain: [a, 01, a]}\n"
    columns = loads_policy(text).protected_tables["public.patients"].columns
    assert columns["cost"].bounds == (-1.5, 1000.0)
    assert columns["dept"].public_domain == ("a", "01")
    assert columns["ssn"].bounds is None and columns["ssn"].public_domain is None


def test_public_domain_is_a_list_of_values():
    text = BASE + "      dept: {mask: none, public_domain: cardiology}   #<\n"
    assert_one_error(text, "protected_tables.patients.columns.dept.public_domain", "a list of values")


def test_mask_parameters_are_checked_by_the_masks_module():
    text = BASE.replace("      patient_id: pseudonym\n      ssn: ssn\n", "")
    text += "      birth_date: {mask: {generalize_date: {to: decade}}}   #<\n"
    text += "      visit: {mask: {generalize_date: {to: year}}}\n"
    error = assert_one_error(text, "protected_tables.patients.columns.birth_date.mask.generalize_date",
                             "to must be year | month | day, not 'decade'")
    assert error.got == "{'to': 'decade'}"
    # The kinds come from the masks module too.
    text = BASE.replace("      ssn: ssn\n", "      ssn: ssm   #<\n").replace("      patient_id: pseudonym\n", "")
    error = assert_one_error(text, "protected_tables.patients.columns.ssn", "one of " + ", ".join(MASKS))
    assert error.hint == "ssn"


# -- privacy and budgets -----------------------------------------------------------


def test_privacy_defaults():
    policy = loads_policy(BASE)
    assert policy.privacy.default == EpsilonDelta(0.1, 1e-7)
    assert policy.privacy.maximum == EpsilonDelta(1.0, 1e-5)
    assert policy.budgets.per_user is None and policy.budgets.period == "never"


def test_privacy_per_query():
    text = BASE + "privacy:\n  per_query: {epsilon: {default: 0.5, max: 2}, delta: {default: 0, max: 1e-6}}\n"
    privacy = loads_policy(text).privacy
    assert privacy.default == EpsilonDelta(0.5, 0.0) and privacy.maximum == EpsilonDelta(2.0, 1e-6)


@pytest.mark.parametrize(
    "per_query, key, expected",
    [
        ("{epsilon: {default: 0}}", "epsilon.default", "a number above 0"),
        ("{epsilon: {max: -1}}", "epsilon.max", "a number above 0"),
        ("{epsilon: {default: '0.1'}}", "epsilon.default", "a number above 0"),
        ("{delta: {default: 1}}", "delta.default", "from 0 up to (not including) 1"),
        ("{delta: {max: -0.1}}", "delta.max", "from 0 up to (not including) 1"),
        ("{epsilon: {default: 2, max: 1}}", "epsilon.default", "no larger than max"),
        ("{delta: {default: 1.0e-3}}", "delta.default", "no larger than max"),
        ("{epsilon: 0.1}", "epsilon", "a mapping (keys: default, max)"),
    ],
)
def test_privacy_rules(per_query, key, expected):
    text = BASE + f"privacy:\n  per_query: {per_query}   #<\n"
    assert_one_error(text, f"privacy.per_query.{key}", expected)


def test_budgets():
    text = BASE + textwrap.dedent(
        """\
        budgets:
          period: 30d
          per_user: {epsilon: 20, delta: 1.0e-5}
          per_role: {analyst: {epsilon: 50}}
          per_dataset: {epsilon: 500, delta: 1.0e-3}
        """
    )
    budgets = loads_policy(text).budgets
    assert budgets.period == "30d"
    assert budgets.per_user == EpsilonDelta(20, 1e-5)
    assert budgets.per_role == {"analyst": EpsilonDelta(50, 0.0)}
    assert budgets.per_dataset == EpsilonDelta(500, 1e-3)


@pytest.mark.parametrize(
    "line, key, expected",
    [
        ("period: 1w", "period", "never, or a period such as 1d"),
        ("period: 0d", "period", "never, or a period such as 1d"),
        ("per_user: {epsilon: 0}", "per_user.epsilon", "a number above 0"),
        ("per_user: {delta: 1.0e-5}", "per_user.epsilon", "'epsilon'"),
        ("per_dataset: {epsilon: 1, delta: 1}", "per_dataset.delta", "from 0 up to"),
        ("per_role: {analysts: {epsilon: 1}}", "per_role.analysts", "a role defined under roles"),
        ("per_user: {epsilon: 1, epsilom: 2}", "per_user.epsilom", "one of the keys epsilon, delta"),
    ],
)
def test_budget_rules(line, key, expected):
    text = BASE + f"budgets:\n  {line}   #<\n"
    assert_one_error(text, f"budgets.{key}", expected)


# -- answers: reuse and sharing -------------------------------------------------------


def test_answers_reuse_for_and_share_answers():
    text = BASE.replace("analyst: {access: aggregate, users: [analyst]}",
                        "analyst: {access: aggregate, users: [analyst], share_answers: true}") + textwrap.dedent(
        """\
        budgets:
          period: 7d
          per_role: {analyst: {epsilon: 50}}
        answers: {reuse_for: 12h}
        """
    )
    policy = loads_policy(text)
    assert policy.roles["analyst"].share_answers and not policy.roles["clinician"].share_answers
    assert (policy.answers.reuse_for, policy.answers.seconds) == ("12h", 43200.0)
    for written, seconds in (("300s", 300), ("30m", 1800), ("1d", 86400), ("budget_period", 7 * 86400)):
        assert loads_policy(text.replace("12h", written)).answers.seconds == seconds
    assert loads_policy(BASE).answers.seconds is None  # --answer-cache-seconds decides
    assert not loads_policy(BASE).roles["analyst"].share_answers


@pytest.mark.parametrize(
    "text, key, expected",
    [
        ("answers: {reuse_for: 1w}   #<\n", "answers.reuse_for", "a duration such as 300s, 30m, 12h or 1d"),
        ("answers: {reuse_for: 0s}   #<\n", "answers.reuse_for", "a duration such as 300s"),
        ("answers: {reuse_for: 12345678d}   #<\n", "answers.reuse_for", "at most 9999999 of a unit"),
        ("answers: {reuse_for: 30}   #<\n", "answers.reuse_for", "a duration such as 300s"),
        ("answers: {reuse_for: budget_period}   #<\n", "answers.reuse_for",
         "a duration such as 1d (budget_period needs a budgets.period other than never)"),
        ("answers: {keep_for: 1d}   #<\n", "answers.keep_for", "one of the keys reuse_for"),
    ],
)
def test_answers_rules(text, key, expected):
    assert_one_error(BASE + text, key, expected)


@pytest.mark.parametrize(
    "role, budgets, key, expected",
    [
        ("analyst: {access: aggregate, users: [analyst], share_answers: true}   #<", "",
         "roles.analyst.share_answers", ("a budget for the role under budgets.per_role.analyst (shared answers are "
         "charged to the role's budget, which bounds what all its users learn together)")),
        ("analyst: {access: aggregate, users: [analyst], share_answers: true}   #<",
         "budgets: {per_user: {epsilon: 1}, per_role: {clinician: {epsilon: 1}}}\n",
         "roles.analyst.share_answers", "a budget for the role under budgets.per_role.analyst"),
        ("analyst: {access: masked, users: [analyst], share_answers: true}   #<", "",
         "roles.analyst.share_answers", "share_answers only in a role that gets private answers"),
        ("analyst: {access: aggregate, users: [analyst], share_answers: 1}   #<",
         "budgets: {per_role: {analyst: {epsilon: 1}}}\n", "roles.analyst.share_answers", "true or false"),
    ],
)
def test_share_answers_rules(role, budgets, key, expected):
    text = BASE.replace("analyst: {access: aggregate, users: [analyst]}", role) + budgets
    assert_one_error(text, key, expected)


def test_a_role_with_aggregate_tables_may_share_answers():
    text = BASE.replace("clinician: {access: masked, users: [clinician]}",
                        "clinician: {access: masked, users: [clinician], tables: {patients: aggregate}, "
                        "share_answers: true}") + "budgets: {per_role: {clinician: {epsilon: 3}}}\n"
    assert loads_policy(text).roles["clinician"].share_answers


# -- secrets -------------------------------------------------------------------------


def test_secret_refs():
    text = BASE + "admin_dsn: {env: PGSHROUD_ADMIN_DSN}\nsecrets:\n  pseudonym_key: {file: /run/secrets/key}\n"
    policy = loads_policy(text)
    assert policy.admin_dsn.env == "PGSHROUD_ADMIN_DSN" and policy.admin_dsn.file is None
    assert policy.secrets["pseudonym_key"].file == "/run/secrets/key"


@pytest.mark.parametrize(
    "ref, key, expected",
    [
        ("{env: A, file: /b}", "", "exactly one of env or file"),
        ("{}", "", "exactly one of env or file"),
        ("{value: hunter2}", ".value", "secrets are never written in the policy"),
        ("hunter2", "", "secrets are never written in the policy"),
        ("{env: 'not a name'}", ".env", "an environment variable name"),
        ("{env: A, path: /b}", ".path", "one of the keys env, file"),
    ],
)
def test_secret_ref_rules(ref, key, expected):
    error = assert_one_error(BASE + f"admin_dsn: {ref}   #<\n", f"admin_dsn{key}", expected)
    assert "hunter2" not in str(error)


def test_secrets_are_known_names():
    text = BASE + "secrets:\n  pseudonym_kye: {env: K}   #<\n"
    error = assert_one_error(text, "secrets.pseudonym_kye", "one of the keys pseudonym_key")
    assert error.hint == "pseudonym_key"


def test_inline_secret_is_not_repeated():
    text = BASE + "secrets:\n  pseudonym_key: {value: hunter2}   #<\n"
    error = assert_one_error(text, "secrets.pseudonym_key.value", "never")
    assert "hunter2" not in str(error) and error.got is None


# -- all the errors at once ------------------------------------------------------------


def test_every_error_is_reported_in_file_order():
    text = textwrap.dedent(
        """\
        version: 3
        roles:
          admin: {access: root, users: [admin]}
          clinician: {access: masked, users: [admin]}
        protected_tables:
          patients:
            privacy_unit: patient_id
            columns:
              ssn: {mask: blurr}
        budgets:
          period: weekly
        """
    )
    with pytest.raises(PolicyError) as info:  # PolicyErrors is a PolicyError
        loads_policy(text, "policy.yaml")
    errors = info.value.errors
    assert [(e.line, e.key) for e in errors] == [
        (1, "version"),
        (3, "roles.admin.access"),
        (4, "roles.clinician.users[0]"),
        (9, "protected_tables.patients.columns.ssn.mask"),
        (11, "budgets.period"),
    ]
    lines = str(info.value).splitlines()
    assert len(lines) == 5 and all(line.startswith("policy.yaml:") for line in lines)
    assert lines[3].startswith("policy.yaml:9: protected_tables.patients.columns.ssn.mask: expected one of ")
    assert lines[3].endswith("(got 'blurr')")
    assert isinstance(info.value, ValueError)
    assert (info.value.line, info.value.key) == (1, "version")  # the first error's


def test_errors_pickle():
    errors = errors_of("version: 2\nroles: {}\n")
    again = pickle.loads(pickle.dumps(PolicyErrors(errors)))
    assert str(again) == str(PolicyErrors(errors)) and again.errors[0].key == "version"


# -- files -----------------------------------------------------------------------------------


def test_load_policy_names_the_file(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(BASE.replace("version: 1", "version: 2"), encoding="utf-8")
    with pytest.raises(PolicyErrors) as info:
        load_policy(path)
    assert str(info.value) == f"{path}:1: version: expected 1, the only policy format so far (got 2)"


def test_load_policy_rejects_bytes_that_are_not_utf8(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_bytes(b"version: 1\nroles:\n  caf\xe9: {access: raw}\n")
    with pytest.raises(PolicyErrors) as info:
        load_policy(path)
    assert (info.value.line, info.value.expected) == (3, "UTF-8 text")


def test_load_policy_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_policy(tmp_path / "nope.yaml")


def test_the_documented_example_loads():
    readme = (Path(__file__).resolve().parents[2] / "policies" / "README.md").read_text(encoding="utf-8")
    example = re.search(r"```yaml\n(.*?)```", readme, re.DOTALL).group(1)
    policy = loads_policy(example, "README.md")
    assert policy.roles["clinician"].access_to("public.visits") is Access.DENY
    assert policy.secrets["pseudonym_key"].env == "PGSHROUD_PSEUDONYM_KEY"
    assert policy.budgets.per_role["analyst"] == EpsilonDelta(50, 1e-4)
