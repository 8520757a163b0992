-- Sequelize: Visit.count({ distinct: true, col: "patient_id" })
-- source: sequelize/sequelize packages/core/src/dialects/abstract/query-generator.js (selectQuery: table aliased by the model name, aggregates named by the function); https://sequelize.org/docs/v6/core-concepts/model-querying-finders/ (aggregate(): count(DISTINCT(col)) AS "count")
-- expect: answered
-- protocol: simple

SELECT count(DISTINCT("patient_id")) AS "count" FROM "visits" AS "Visit";
