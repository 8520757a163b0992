-- knex: knex("visits").sum("cost as total").whereBetween("visit_date", [from, to])
-- source: knex/knex lib/dialects/postgres/query/pg-querycompiler.js and lib/query/querycompiler.js (identifiers quoted, ? bindings become $n); https://knexjs.org/guide/query-builder.html
-- expect: answered
-- params: ["2024-01-01", "2024-12-31"]

select sum("cost") as "total" from "visits" where "visit_date" between %s and %s
