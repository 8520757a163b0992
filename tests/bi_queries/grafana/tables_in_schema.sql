-- Grafana: the query builder's table list for a chosen schema (showTables(schema) in postgresMetaQuery.ts)
-- min_rows: 4
-- contains: patients
SELECT quote_ident(table_name) AS "table"
      FROM information_schema.tables
      WHERE quote_ident(table_schema) = 'public'
      ORDER BY 1
