-- Prisma: prisma.visit.aggregate({ where: { department: "Cardiology" }, _sum: { cost: true }, _avg: { length_of_stay: true } })
-- source: https://www.prisma.io/docs/orm/prisma-client/queries/aggregation-grouping-summarizing; prisma/prisma-engines query-compiler and sql-query-connector (fully qualified "public"."table"."column", WHERE 1=1, OFFSET $n)
-- expect: answered
-- params: ["Cardiology", 0]

SELECT SUM("cost") AS "_sum$cost", AVG("length_of_stay") AS "_avg$length_of_stay" FROM (SELECT "public"."visits"."cost", "public"."visits"."length_of_stay" FROM "public"."visits" WHERE "public"."visits"."department" = %s OFFSET %s) AS "sub"
