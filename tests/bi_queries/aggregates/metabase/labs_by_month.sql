-- Metabase: Average of Value by Taken At: Month on a timestamptz column (no cast back to date)
-- source: metabase/metabase src/metabase/driver/postgres.clj (sql.qp/date [:postgres :month] -> DATE_TRUNC('month', x))
-- expect: answered
-- keys: taken_at

SELECT
  DATE_TRUNC('month', "public"."labs"."taken_at") AS "taken_at",
  AVG("public"."labs"."value") AS "avg"
FROM
  "public"."labs"
GROUP BY
  DATE_TRUNC('month', "public"."labs"."taken_at")
ORDER BY
  DATE_TRUNC('month', "public"."labs"."taken_at") ASC
