-- DBeaver: the navigator's collations of a schema (PostgreSchema.CollationCache)
-- params_from: SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'pg_catalog'
-- min_rows: 1
SELECT c.oid,c.* FROM pg_catalog.pg_collation c 
WHERE c.collnamespace=%s
ORDER BY c.oid
