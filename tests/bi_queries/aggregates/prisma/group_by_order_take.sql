-- Prisma: groupBy by diagnosis_code, orderBy _count desc, take 5
-- source: https://www.prisma.io/docs/orm/prisma-client/queries/aggregation-grouping-summarizing; prisma/prisma-engines query-compiler and sql-query-connector (fully qualified "public"."table"."column", WHERE 1=1, OFFSET $n)
-- expect: answered
-- ranked: yes
-- params: [5, 0]

SELECT "public"."visits"."diagnosis_code", COUNT("public"."visits"."diagnosis_code") AS "_count$diagnosis_code" FROM "public"."visits" WHERE 1=1 GROUP BY "public"."visits"."diagnosis_code" ORDER BY COUNT("public"."visits"."diagnosis_code") DESC LIMIT %s OFFSET %s
