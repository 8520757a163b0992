-- knex: knex("visits").avg("cost as avg_cost").where("department", dept).first(): first() adds limit ? bound to 1
-- source: knex/knex lib/dialects/postgres/query/pg-querycompiler.js and lib/query/querycompiler.js (identifiers quoted, ? bindings become $n); https://knexjs.org/guide/query-builder.html (first(): limit 1 as a binding)
-- expect: answered
-- params: ["Emergency", 1]

select avg("cost") as "avg_cost" from "visits" where "department" = %s limit %s
