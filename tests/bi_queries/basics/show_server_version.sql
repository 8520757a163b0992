-- psql, DBeaver, Superset: the server version setting
-- min_rows: 1
SHOW server_version
