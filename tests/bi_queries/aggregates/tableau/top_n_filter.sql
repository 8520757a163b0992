-- Tableau: a Top 10 filter on Diagnosis Code by Number of Records: an inner aggregate joined back
-- source: https://help.tableau.com/current/pro/desktop/en-us/perf_record_create_desktop.htm (the queries a workbook sends, as a performance recording shows them); https://help.tableau.com/current/pro/desktop/en-us/filtering.htm (Top N filters)
-- expect: refused 42501 ORDER
-- note: refused by design: a top-N join is two releases in one statement; the hint says to ask for the top keys first, then filter with IN

SELECT "visits"."diagnosis_code" AS "diagnosis_code",
  SUM("visits"."length_of_stay") AS "sum:length_of_stay:ok"
FROM "public"."visits" "visits"
  INNER JOIN (
  SELECT "visits"."diagnosis_code" AS "diagnosis_code",
    SUM(1) AS "$__alias__0"
  FROM "public"."visits" "visits"
  GROUP BY 1
  ORDER BY 2 DESC,
    1 ASC
  LIMIT 10
) "t0" ON ("visits"."diagnosis_code" = "t0"."diagnosis_code")
GROUP BY 1
