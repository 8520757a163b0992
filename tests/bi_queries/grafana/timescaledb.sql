-- Grafana: is TimescaleDB installed? (getTimescaleDBVersion in postgresMetaQuery.ts)
SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'
