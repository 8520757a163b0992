-- SQLAlchemy: PGDialect._get_default_schema_name
-- min_rows: 1
-- contains: public
select current_schema()
