-- knex: ... .orderBy("n", "desc").limit(10): the limit is a binding ($1)
-- source: knex/knex lib/dialects/postgres/query/pg-querycompiler.js and lib/query/querycompiler.js (identifiers quoted, ? bindings become $n); https://knexjs.org/guide/query-builder.html
-- expect: answered
-- ranked: yes
-- params: [10]

select "diagnosis_code", count(*) as "n" from "visits" group by "diagnosis_code" order by "n" desc limit %s
