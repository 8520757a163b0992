-- pgcli: database names for completion (pgcli/pgexecute.py PGExecute.databases_query)
-- min_rows: 1
-- contains: health

        SELECT d.datname
        FROM pg_catalog.pg_database d
        ORDER BY 1
