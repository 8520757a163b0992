-- DBeaver: the server's key words, for its SQL editor
-- min_rows: 1
-- contains: select
select string_agg(word, ',') from pg_catalog.pg_get_keywords()
