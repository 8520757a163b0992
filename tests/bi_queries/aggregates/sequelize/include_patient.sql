-- Sequelize: Visit.findAll({ include: [{ model: Patient, attributes: [] }], attributes: [[col("Patient.sex"), "sex"], [fn("count", col("Visit.visit_id")), "count"]], group: ["Patient.sex"], raw: true })
-- source: sequelize/sequelize packages/core/src/dialects/abstract/query-generator.js (selectQuery: table aliased by the model name, aggregates named by the function); https://sequelize.org/docs/v6/core-concepts/model-querying-finders/ (include: LEFT OUTER JOIN aliased by the association name)
-- expect: answered
-- protocol: simple

SELECT "Patient"."sex" AS "sex", count("Visit"."visit_id") AS "count" FROM "visits" AS "Visit" LEFT OUTER JOIN "patients" AS "Patient" ON "Visit"."patient_id" = "Patient"."patient_id" GROUP BY "Patient"."sex";
