-- Metabase (before 0.46): Count of visits by Visit Date: Month, the date column cast to timestamp inside date_trunc
-- source: metabase/metabase src/metabase/driver/postgres.clj (older versions: (defn- date-trunc [unit expr] (hsql/call :date_trunc (hx/literal unit) (hx/->timestamp expr))))
-- expect: answered

SELECT date_trunc('month', CAST("public"."visits"."visit_date" AS timestamp)) AS "visit_date", count(*) AS "count"
FROM "public"."visits"
GROUP BY date_trunc('month', CAST("public"."visits"."visit_date" AS timestamp))
ORDER BY date_trunc('month', CAST("public"."visits"."visit_date" AS timestamp)) ASC
