-- psycopg 3: TypeInfo.fetch(conn, name), the query in psycopg/_typeinfo.py (test_bi_catalog also calls the library)
-- params: ["public.patients"]
-- min_rows: 1
SELECT
    typname AS name, oid, typarray AS array_oid,
    oid::regtype::text AS regtype, typdelim AS delimiter
FROM pg_type t
WHERE t.oid = to_regtype(%s)
ORDER BY t.oid
