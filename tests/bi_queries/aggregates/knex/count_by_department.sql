-- knex: knex("visits").select("department").count("visit_id as n").groupBy("department")
-- source: knex/knex lib/dialects/postgres/query/pg-querycompiler.js and lib/query/querycompiler.js (identifiers quoted, ? bindings become $n); https://knexjs.org/guide/query-builder.html
-- expect: answered
-- protocol: simple

select "department", count("visit_id") as "n" from "visits" group by "department"
