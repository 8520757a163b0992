-- SQLAlchemy: PGDialect._get_server_version_info
-- min_rows: 1
-- contains: PostgreSQL
select pg_catalog.version()
