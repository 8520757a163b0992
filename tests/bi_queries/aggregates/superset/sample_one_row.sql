-- Superset: a one-row sample of a virtual dataset (column types read from a row): row-level, refused by design, with a hint
-- source: apache/superset superset/connectors/sqla/utils.py (get_virtual_table_metadata; a sample row)
-- expect: refused 42501 row-level
-- protocol: simple

SELECT * FROM (SELECT v.department, v.cost, v.visit_date FROM visits v) AS virtual_table LIMIT 1
