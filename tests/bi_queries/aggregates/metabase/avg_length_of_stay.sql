-- Metabase: Average of Length Of Stay (a single number)
-- source: metabase/metabase src/metabase/driver/sql/query_processor.clj (:avg aggregation, named "avg")
-- expect: answered

SELECT
  AVG("public"."visits"."length_of_stay") AS "avg"
FROM
  "public"."visits"
