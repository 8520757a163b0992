-- Prisma: prisma.visit.count(): a count over the sub-select "sub" with OFFSET $1
-- source: https://www.prisma.io/docs/orm/prisma-client/queries/aggregation-grouping-summarizing; prisma/prisma-engines query-compiler and sql-query-connector (fully qualified "public"."table"."column", WHERE 1=1, OFFSET $n)
-- expect: answered
-- params: [0]

SELECT COUNT(*) AS "_count._all" FROM (SELECT "public"."visits"."visit_id" FROM "public"."visits" WHERE 1=1 OFFSET %s) AS "sub"
