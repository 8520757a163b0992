-- Drivers that map type names to OIDs (pgjdbc TypeInfoCache, Npgsql, R's RPostgres)
-- min_rows: 100
-- contains: int4
SELECT typname, oid FROM pg_type
