-- pgAdmin, DBeaver, Metabase: live and dead row counts from the statistics collector
-- min_rows: 4
-- analyst: 42501 reveals row counts
SELECT schemaname, relname, n_live_tup, n_dead_tup, last_analyze FROM pg_stat_user_tables ORDER BY relname
