-- Any tool that serialises a catalog row: pg_class as JSON carries reltuples without naming it
-- min_rows: 1
-- contains: patients
-- analyst_hides: reltuples relpages relallvisible
SELECT row_to_json(c) FROM pg_catalog.pg_class c WHERE c.relname = 'patients'
