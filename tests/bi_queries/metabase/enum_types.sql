-- Metabase: enum types, before describing fields (enum-types in src/metabase/driver/postgres.clj)
SELECT nspname, typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.oid IN (SELECT DISTINCT enumtypid FROM pg_enum e)
