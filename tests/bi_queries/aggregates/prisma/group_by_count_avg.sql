-- Prisma: prisma.visit.groupBy({ by: ["department"], _count: { visit_id: true }, _avg: { cost: true } })
-- source: https://www.prisma.io/docs/orm/prisma-client/queries/aggregation-grouping-summarizing; prisma/prisma-engines query-compiler and sql-query-connector (fully qualified "public"."table"."column", WHERE 1=1, OFFSET $n)
-- expect: answered
-- params: [0]

SELECT "public"."visits"."department", COUNT("public"."visits"."visit_id") AS "_count$visit_id", AVG("public"."visits"."cost") AS "_avg$cost" FROM "public"."visits" WHERE 1=1 GROUP BY "public"."visits"."department" OFFSET %s
