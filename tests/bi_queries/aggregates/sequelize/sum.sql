-- Sequelize: Visit.sum("cost", { where: { department: "Surgery" } }) (values escaped into the text in v6)
-- source: sequelize/sequelize packages/core/src/dialects/abstract/query-generator.js (selectQuery: table aliased by the model name, aggregates named by the function); https://sequelize.org/docs/v6/core-concepts/model-querying-finders/ (aggregate(): sum(col) AS "sum")
-- expect: answered
-- protocol: simple

SELECT sum("cost") AS "sum" FROM "visits" AS "Visit" WHERE "Visit"."department" = 'Surgery';
