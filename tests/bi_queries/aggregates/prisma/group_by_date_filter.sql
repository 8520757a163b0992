-- Prisma: groupBy by department where visit_date >= a DateTime (sent as a timestamp parameter)
-- source: https://www.prisma.io/docs/orm/prisma-client/queries/aggregation-grouping-summarizing; prisma/prisma-engines query-compiler and sql-query-connector (fully qualified "public"."table"."column", WHERE 1=1, OFFSET $n)
-- expect: answered
-- params: ["2024-01-01 00:00:00", 0]

SELECT "public"."visits"."department", COUNT("public"."visits"."visit_id") AS "_count$visit_id" FROM "public"."visits" WHERE "public"."visits"."visit_date" >= %s::timestamp GROUP BY "public"."visits"."department" OFFSET %s
