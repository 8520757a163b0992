-- pgAdmin, DBeaver, Metabase (older): a table's estimated row count from pg_class
-- min_rows: 4
-- contains: patients
-- analyst: 42501 row-count statistics
SELECT c.relname, c.reltuples, c.relpages FROM pg_catalog.pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
