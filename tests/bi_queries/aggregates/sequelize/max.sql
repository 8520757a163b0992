-- Sequelize: Visit.max("length_of_stay")
-- source: sequelize/sequelize packages/core/src/dialects/abstract/query-generator.js (selectQuery: table aliased by the model name, aggregates named by the function); https://sequelize.org/docs/v6/core-concepts/model-querying-finders/ (aggregate(): max(col) AS "max")
-- expect: answered
-- protocol: simple

SELECT max("length_of_stay") AS "max" FROM "visits" AS "Visit";
