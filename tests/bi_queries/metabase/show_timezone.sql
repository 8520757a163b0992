-- Metabase: the database's default time zone (db-default-timezone in src/metabase/driver/postgres.clj)
-- min_rows: 1
show timezone;
