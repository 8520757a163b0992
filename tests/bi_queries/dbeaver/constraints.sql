-- DBeaver: the navigator's constraints of a schema's tables (PostgreSchema.ConstraintCache)
-- params_from: SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'public'
-- min_rows: 4
SELECT c.oid,c.*,t.relname as tabrelname,rt.relnamespace as refnamespace
FROM pg_catalog.pg_constraint c
INNER JOIN pg_catalog.pg_class t ON t.oid=c.conrelid
LEFT OUTER JOIN pg_catalog.pg_class rt ON rt.oid=c.confrelid
WHERE t.relnamespace=%s
ORDER BY c.oid
