-- Metabase: may the user select from this table? (simple-select-probe-query, sql-jdbc describe-database); a data table, so masked roles only
-- roles: clinician
SELECT TRUE AS "_" FROM "public"."patients" WHERE 1 <> 1 LIMIT 0
