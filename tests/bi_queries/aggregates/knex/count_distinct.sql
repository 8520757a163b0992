-- knex: knex("visits").countDistinct("patient_id as patients")
-- source: knex/knex lib/dialects/postgres/query/pg-querycompiler.js and lib/query/querycompiler.js (identifiers quoted, ? bindings become $n); https://knexjs.org/guide/query-builder.html
-- expect: answered
-- protocol: simple

select count(distinct "patient_id") as "patients" from "visits"
