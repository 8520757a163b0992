-- psql's \d+ on older servers and monitoring tools: the statistics functions behind pg_stat_user_tables
-- min_rows: 1
-- analyst: 42501 reveals row counts
SELECT pg_catalog.pg_stat_get_live_tuples('public.patients'::regclass)
