-- Prisma: prisma.visit.aggregate({ _min: { cost: true }, _max: { cost: true } })
-- source: https://www.prisma.io/docs/orm/prisma-client/queries/aggregation-grouping-summarizing (aggregate over the sub-select "sub")
-- expect: answered
-- params: [0]

SELECT MIN("cost") AS "_min$cost", MAX("cost") AS "_max$cost" FROM (SELECT "public"."visits"."cost" FROM "public"."visits" WHERE 1=1 OFFSET %s) AS "sub"
