-- pgcli: the schema names for completion (pgcli/pgexecute.py PGExecute.schemata_query)
-- min_rows: 2
-- contains: public

        SELECT  nspname
        FROM    pg_catalog.pg_namespace
        ORDER BY 1 
