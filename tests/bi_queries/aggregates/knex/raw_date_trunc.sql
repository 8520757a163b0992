-- knex: .select(knex.raw("date_trunc('month', ??) as month", ["visit_date"])).count("* as n").groupByRaw("1").orderByRaw("1")
-- source: knex/knex lib/dialects/postgres/query/pg-querycompiler.js and lib/query/querycompiler.js (identifiers quoted, ? bindings become $n); https://knexjs.org/guide/query-builder.html (knex.raw: ?? is an identifier binding, quoted)
-- expect: answered
-- protocol: simple

select date_trunc('month', "visit_date") as month, count(*) as "n" from "visits" group by 1 order by 1
