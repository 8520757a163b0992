-- Metabase: custom expression Percentile([Cost], 0.9)
-- source: metabase/metabase src/metabase/driver/postgres.clj (:percentile -> PERCENTILE_CONT(p) WITHIN GROUP (ORDER BY x))
-- expect: answered

SELECT
  PERCENTILE_CONT(0.9) WITHIN GROUP (
    ORDER BY
      "public"."visits"."cost"
  ) AS "percentile"
FROM
  "public"."visits"
