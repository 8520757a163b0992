-- Grafana: the PostgreSQL data source's version detection (getVersion in postgresMetaQuery.ts)
-- min_rows: 1
SELECT current_setting('server_version_num')::int/100 as version
