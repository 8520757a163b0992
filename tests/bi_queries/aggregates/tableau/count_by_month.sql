-- Tableau: SUM(Number of Records) by MONTH(Visit Date) (continuous month: truncated timestamp cast to date)
-- source: https://help.tableau.com/current/pro/desktop/en-us/perf_record_create_desktop.htm (the queries a workbook sends, as a performance recording shows them)
-- expect: answered

SELECT CAST(DATE_TRUNC('MONTH', CAST("visits"."visit_date" AS TIMESTAMP WITHOUT TIME ZONE)) AS DATE) AS "tmn:visit_date:ok",
  SUM(1) AS "sum:Number of Records:ok"
FROM "public"."visits" "visits"
GROUP BY 1
