-- Sequelize: attributes [[fn("date_trunc", "month", col("visit_date")), "month"], [fn("COUNT", col("Visit.visit_id")), "visits"]], group "month", order "month"
-- source: sequelize/sequelize packages/core/src/dialects/abstract/query-generator.js (selectQuery: table aliased by the model name, aggregates named by the function); https://sequelize.org/docs/v6/core-concepts/model-querying-finders/
-- expect: answered
-- protocol: simple

SELECT date_trunc('month', "visit_date") AS "month", COUNT("Visit"."visit_id") AS "visits" FROM "visits" AS "Visit" GROUP BY "month" ORDER BY "month" ASC;
