"""The fixed query set of bench/accuracy.

Every query is sent as written to all three targets: PostgreSQL directly as
`admin` (the exact answer), pgshroud as the demo's `analyst`, and
smartnoise-sql on the raw database. Each aggregate has an alias, so the
three answers have the same column names; `keys` are the output columns
that identify a group (rows are matched on them), everything else is an
aggregate whose relative error is measured. `key_columns` names the table
columns behind the keys, to tell public domains (policies/examples/
healthcare.yaml: department, sex) from keys that need partition selection.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Query:
    name: str
    title: str
    sql: str
    keys: tuple[str, ...] = ()
    key_columns: tuple[str, ...] = ()  # "table.column" behind each key


QUERIES: tuple[Query, ...] = (
    Query("count", "total count of visits",
          "SELECT count(*) AS visits FROM visits"),
    Query("dept_count_avg", "count and avg(cost) by department",
          "SELECT department, count(*) AS visits, avg(cost) AS avg_cost FROM visits GROUP BY department",
          ("department",), ("visits.department",)),
    Query("diagnosis_count", "count by diagnosis_code (public: diagnoses.code)",
          "SELECT diagnosis_code, count(*) AS visits FROM visits GROUP BY diagnosis_code",
          ("diagnosis_code",), ("visits.diagnosis_code",)),
    Query("visits_by_month", "count by month of visit_date (partition selection)",
          "SELECT EXTRACT(YEAR FROM visit_date) AS visit_year, EXTRACT(MONTH FROM visit_date) AS visit_month, "
          "count(*) AS visits FROM visits "
          "GROUP BY EXTRACT(YEAR FROM visit_date), EXTRACT(MONTH FROM visit_date)",
          ("visit_year", "visit_month"), ("visits.visit_date", "visits.visit_date")),
    Query("patients_by_state", "count of patients by state (partition selection)",
          "SELECT state, count(*) AS patients FROM patients GROUP BY state",
          ("state",), ("patients.state",)),
    Query("dept_sum_since", "sum(cost) by department since 2024-01-01",
          "SELECT department, sum(cost) AS total_cost FROM visits WHERE visit_date >= '2024-01-01' "
          "GROUP BY department",
          ("department",), ("visits.department",)),
    Query("dept_avg_stay", "avg(length_of_stay) of stays > 0 by department",
          "SELECT department, avg(length_of_stay) AS avg_stay FROM visits WHERE length_of_stay > 0 "
          "GROUP BY department",
          ("department",), ("visits.department",)),
    Query("distinct_patients", "count(DISTINCT patient_id) of visits",
          "SELECT count(DISTINCT patient_id) AS patients FROM visits"),
    Query("stddev_cost", "stddev(cost) of visits",
          "SELECT stddev(cost) AS sd_cost FROM visits"),
    Query("stddev_stay", "stddev(length_of_stay) of visits",
          "SELECT stddev(length_of_stay) AS sd_stay FROM visits"),
    Query("patients_by_sex", "count of patients by sex",
          "SELECT sex, count(*) AS patients FROM patients GROUP BY sex",
          ("sex",), ("patients.sex",)),
    Query("join_by_sex", "join patients-visits: count, avg(cost) by sex",
          "SELECT p.sex, count(*) AS visits, avg(v.cost) AS avg_cost FROM patients AS p "
          "JOIN visits AS v ON v.patient_id = p.patient_id GROUP BY p.sex",
          ("sex",), ("patients.sex",)),
    Query("median_cost", "median(cost) by department (percentile_cont)",
          "SELECT department, percentile_cont(0.5) WITHIN GROUP (ORDER BY cost) AS median_cost FROM visits "
          "GROUP BY department",
          ("department",), ("visits.department",)),
    Query("visits_per_patient", "avg visits per patient (two-level subquery)",
          "SELECT avg(n) AS visits_per_patient FROM "
          "(SELECT patient_id, count(*) AS n FROM visits GROUP BY patient_id) AS per_patient"),
)
