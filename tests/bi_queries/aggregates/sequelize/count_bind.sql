-- Sequelize: Visit.count({ where: { department: "Neurology" } }) with bind parameters ($1), as Sequelize 7 sends them
-- source: sequelize/sequelize packages/core/src/dialects/abstract/query-generator.js (selectQuery: table aliased by the model name, aggregates named by the function); https://sequelize.org/docs/v6/core-concepts/model-querying-finders/
-- expect: answered
-- params: ["Neurology"]

SELECT count(*) AS "count" FROM "visits" AS "Visit" WHERE "Visit"."department" = %s;
