-- Sequelize: Visit.findAll({ attributes: ["department", [fn("COUNT", col("visit_id")), "count"]], group: ["department"], raw: true })
-- source: sequelize/sequelize packages/core/src/dialects/abstract/query-generator.js (selectQuery: table aliased by the model name, aggregates named by the function); https://sequelize.org/docs/v6/core-concepts/model-querying-finders/
-- expect: answered
-- protocol: simple

SELECT "department", COUNT("visit_id") AS "count" FROM "visits" AS "Visit" GROUP BY "department";
