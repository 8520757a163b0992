-- pgcli: the search path for completion (pgcli/pgexecute.py PGExecute.search_path_query)
-- min_rows: 1
-- contains: pg_catalog

        SELECT * FROM unnest(current_schemas(true))
