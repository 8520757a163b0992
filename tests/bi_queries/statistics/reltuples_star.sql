-- Any tool that reads a catalog row with *: SELECT * FROM pg_class carries reltuples without naming it
-- min_rows: 1
-- contains: patients
-- analyst_hides: reltuples relpages relallvisible
SELECT * FROM pg_catalog.pg_class WHERE relname = 'patients'
