-- SQLAlchemy: PGDialect.get_isolation_level
-- min_rows: 1
show transaction isolation level
