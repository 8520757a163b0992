"""A small policy and catalog for the rewriter's pure tests."""

from __future__ import annotations

from pgshroud.policies.model import (
    Access,
    ColumnPolicy,
    MaskSpec,
    Policy,
    PrivacyUnit,
    ProtectedTable,
    Role,
)
from pgshroud.rewriter import PlanContext
from pgshroud.rewriter.catalog import Catalog, Relation

PATIENT_COLUMNS = (
    ("patient_id", "integer"), ("name", "text"), ("ssn", "text"), ("birth_date", "date"), ("zip", "text"),
    ("secret_note", "text"),
)
VISIT_COLUMNS = (("visit_id", "bigint"), ("patient_id", "integer"), ("cost", "numeric(10,2)"))


def _relations() -> dict[tuple[str, str], Relation]:
    rels = [
        Relation("public", "patients", "r", PATIENT_COLUMNS),
        Relation("public", "visits", "r", VISIT_COLUMNS),
        Relation("public", "diagnoses", "r", (("code", "text"), ("description", "text"))),
        Relation("public", "unlisted", "r", (("x", "integer"),)),
        Relation("pgshroud", "keys", "r", (("key", "bytea"),)),
    ]
    rels += [Relation("pg_catalog", n, "r") for n in ("pg_class", "pg_namespace", "pg_attribute", "pg_type")]
    rels += [Relation("pg_catalog", n, "v") for n in ("pg_stats", "pg_stat_activity", "pg_stat_user_tables")]
    rels += [Relation("pg_catalog", "pg_statistic", "r")]
    rels += [Relation("information_schema", "columns", "v")]
    return {(r.schema, r.name): r for r in rels}


CATALOG = Catalog(
    relations=_relations(),
    catalog_functions={
        name: frozenset(vol)
        for name, vol in {
            "lower": "i", "upper": "i", "count": "i", "sum": "i", "avg": "i", "now": "s", "row_to_json": "s",
            "to_char": "s", "pg_sleep": "v", "random": "v", "nextval": "v", "set_config": "v",
            "query_to_xml": "s", "pg_read_file": "v", "current_setting": "s", "generate_series": "i",
            "date_trunc": "is", "format_type": "s", "pg_relation_size": "v", "pg_stat_get_live_tuples": "s",
            "length": "i", "coalesce": "i", "pg_get_userbyid": "s", "array_agg": "i", "string_agg": "i",
        }.items()
    },
    user_function_names=frozenset({"leak_everything"}),
)

POLICY = Policy(
    source="<test>",
    roles={
        "admin": Role("admin", Access.RAW, ("admin",)),
        "clinician": Role("clinician", Access.MASKED, ("clinician",)),
        "analyst": Role("analyst", Access.AGGREGATE, ("analyst",)),
        "filtered": Role("filtered", Access.MASKED, ("filtered",), table_access={"public.visits": Access.DENY}),
    },
    default_role=None,
    protected_tables={
        "public.patients": ProtectedTable(
            "public.patients",
            PrivacyUnit("patient_id"),
            {
                "patient_id": ColumnPolicy("patient_id", MaskSpec("pseudonym")),
                "name": ColumnPolicy("name", MaskSpec("redact")),
                "ssn": ColumnPolicy("ssn", MaskSpec("ssn")),
                "birth_date": ColumnPolicy("birth_date", MaskSpec("generalize_date", {"to": "year"})),
                "zip": ColumnPolicy("zip", MaskSpec("zip3")),
            },
            row_filters={"filtered": "zip <> '00000'"},
        ),
        "public.visits": ProtectedTable(
            "public.visits",
            PrivacyUnit("patient_id", "public.patients.patient_id"),
            {
                "visit_id": ColumnPolicy("visit_id", MaskSpec("none")),
                "patient_id": ColumnPolicy("patient_id", MaskSpec("pseudonym")),
                "cost": ColumnPolicy("cost", MaskSpec("noise_number", {"relative": 0.1})),
            },
        ),
    },
    public_tables=frozenset({"public.diagnoses"}),
)


def context(user: str) -> PlanContext:
    role = POLICY.role_for(user)
    return PlanContext(
        user=user, policy=POLICY, role_sees_raw=role is not None and role.access == Access.RAW, role=role,
        catalog=CATALOG,
    )
