-- Superset: SQL Lab with the schema "public" selected: before each query Superset sets the search path to it and reads the backend pid (to cancel the query later)
-- source: apache/superset superset/db_engine_specs/postgres.py (get_prequeries: set search_path = "<schema>"; get_cancel_query_id: SELECT pg_backend_pid())
-- expect: answered
-- before: set search_path = "public"
-- before: SELECT pg_backend_pid()
-- protocol: simple

SELECT department, count(*) AS visits, avg(length_of_stay) AS avg_stay
FROM visits
GROUP BY department
ORDER BY visits DESC
LIMIT 1001
