-- Metabase: custom expression CountIf([Department] = "Emergency") and SumIf([Cost], [Length Of Stay] > 0), by Sex of the patient
-- source: metabase/metabase src/metabase/driver/sql/query_processor.clj (:count-where is :sum-where of 1; :sum-where -> SUM(CASE WHEN pred THEN x ELSE 0.0 END))
-- expect: answered

SELECT
  "Patients"."sex" AS "Patients__sex",
  SUM(
    CASE
      WHEN "public"."visits"."department" = 'Emergency' THEN 1
      ELSE 0.0
    END
  ) AS "count_where",
  SUM(
    CASE
      WHEN "public"."visits"."length_of_stay" > 0 THEN "public"."visits"."cost"
      ELSE 0.0
    END
  ) AS "sum_where"
FROM
  "public"."visits"
  LEFT JOIN "public"."patients" AS "Patients" ON "public"."visits"."patient_id" = "Patients"."patient_id"
GROUP BY
  "Patients"."sex"
ORDER BY
  "Patients"."sex" ASC
