-- DBeaver: the element type of an array type named by OID (PostgreDataTypeCache), for _aclitem (1034)
-- min_rows: 1
-- contains: aclitem
SELECT n.nspname = ANY(current_schemas(true)), n.nspname, t.typname FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON t.typnamespace = n.oid WHERE t.oid = 1034
