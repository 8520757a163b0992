-- knex: knex("visits").join("patients", "visits.patient_id", "patients.patient_id").select("patients.sex").avg("visits.length_of_stay as stay").groupBy("patients.sex")
-- source: knex/knex lib/dialects/postgres/query/pg-querycompiler.js and lib/query/querycompiler.js (identifiers quoted, ? bindings become $n); https://knexjs.org/guide/query-builder.html
-- expect: answered
-- protocol: simple

select "patients"."sex", avg("visits"."length_of_stay") as "stay" from "visits" inner join "patients" on "visits"."patient_id" = "patients"."patient_id" group by "patients"."sex"
