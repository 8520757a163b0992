-- Metabase: every query starts with Metabase's remark comment naming the user and the query hash
-- source: metabase/metabase src/metabase/query_processor/util.clj (query->remark: "Metabase:: userID: ... queryType: ... queryHash: ...")
-- expect: answered

-- Metabase:: userID: 2 queryType: MBQL queryHash: 5bd1f0a7c5f4a4e0b1a3c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7
SELECT
  "public"."visits"."department" AS "department",
  COUNT(*) AS "count"
FROM
  "public"."visits"
GROUP BY
  "public"."visits"."department"
ORDER BY
  "public"."visits"."department" ASC
