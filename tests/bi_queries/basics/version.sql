-- Every tool: the server banner (Metabase, DBeaver, Tableau on connect)
-- min_rows: 1
-- contains: PostgreSQL
SELECT version()
