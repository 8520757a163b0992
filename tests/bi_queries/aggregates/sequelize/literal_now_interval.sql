-- Sequelize: Visit.count({ where: { visit_date: { [Op.gte]: sequelize.literal("NOW() - INTERVAL '5 years'") } } })
-- source: sequelize/sequelize packages/core/src/dialects/abstract/query-generator.js (literal values in where)
-- expect: answered
-- protocol: simple

SELECT count(*) AS "count" FROM "visits" AS "Visit" WHERE "Visit"."visit_date" >= NOW() - INTERVAL '5 years';
