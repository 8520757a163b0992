-- DBeaver: a view's source, shown for a system view here (PostgreViewBase reads pg_get_viewdef)
-- min_rows: 1
select pg_catalog.pg_get_viewdef('pg_catalog.pg_tables'::regclass, true)
