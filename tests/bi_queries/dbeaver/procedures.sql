-- DBeaver: the navigator's functions of a schema (PostgreSchema.ProceduresCache)
-- params_from: SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'public'
SELECT p.oid,p.*,d.description
FROM pg_catalog.pg_proc p
LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=p.oid
WHERE p.pronamespace=%s
ORDER BY p.proname
