-- DBeaver: an index column's definition (PostgreSchema.IndexCache.fetchObjectRow)
-- params_from: SELECT indexrelid, 1 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indrelid WHERE c.relname = 'visits' LIMIT 1
-- min_rows: 1
select pg_catalog.pg_get_indexdef(%s, %s, true)
