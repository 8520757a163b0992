-- pgAdmin: table I/O statistics
-- min_rows: 4
-- analyst: 42501 reveals row counts
SELECT relname, heap_blks_read, heap_blks_hit FROM pg_catalog.pg_statio_user_tables ORDER BY relname
