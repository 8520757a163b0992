-- DBeaver: the navigator's indexes of a schema's tables (PostgreSchema.IndexCache)
-- params_from: SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'public'
-- min_rows: 4
SELECT i.*,i.indkey as keys,c.relname,c.relnamespace,c.relam,tc.relname as tabrelname,dsc.description,pg_catalog.pg_get_expr(i.indexprs, i.indrelid, true) as expr
FROM pg_catalog.pg_index i
INNER JOIN pg_catalog.pg_class c ON c.oid=i.indexrelid
INNER JOIN pg_catalog.pg_class tc ON tc.oid=i.indrelid
LEFT OUTER JOIN pg_catalog.pg_description dsc ON i.indexrelid=dsc.objoid
WHERE  c.relnamespace=%s ORDER BY c.relname
