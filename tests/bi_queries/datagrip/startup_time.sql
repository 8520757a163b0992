-- DataGrip: the server's start time, which tells its introspector whether cached metadata is stale
-- min_rows: 1
SELECT round(EXTRACT(EPOCH FROM pg_postmaster_start_time() AT TIME ZONE 'UTC')) AS startup_time
