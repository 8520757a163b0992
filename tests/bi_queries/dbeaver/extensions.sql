-- DBeaver: the navigator's extensions of a schema (PostgreSchema.ExtensionCache)
-- params_from: SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'pg_catalog'
-- min_rows: 1
-- contains: plpgsql
SELECT e.oid,e.* FROM pg_catalog.pg_extension e 
WHERE e.extnamespace=%s
ORDER BY e.oid
