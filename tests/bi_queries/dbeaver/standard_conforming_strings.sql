-- DBeaver: on connect, how strings are lexed (PostgreDataSource reads pg_settings)
-- min_rows: 1
-- contains: on
SELECT * FROM pg_catalog.pg_settings where name='standard_conforming_strings'
