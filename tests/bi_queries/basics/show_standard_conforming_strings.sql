-- SQLAlchemy and psycopg2-era tools on connect
-- min_rows: 1
-- contains: on
show standard_conforming_strings
