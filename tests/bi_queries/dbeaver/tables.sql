-- DBeaver: the navigator's tables of a schema (PostgreSchema.TableCache.prepareLookupStatement); c.* includes reltuples and relpages
-- params_from: SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'public'
-- min_rows: 4
-- contains: patients
-- analyst_hides: reltuples relpages relallvisible
SELECT c.oid,c.*,d.description FROM pg_catalog.pg_class c
LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=c.oid AND d.objsubid=0
WHERE c.relnamespace=%s AND c.relkind not in ('i','c')
