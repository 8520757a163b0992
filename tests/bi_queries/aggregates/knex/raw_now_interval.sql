-- knex: .where("visit_date", ">=", knex.raw("now() - interval '3 years'")).sum("cost as total").groupBy("department")
-- source: knex/knex lib/query/querycompiler.js (raw values in where)
-- expect: answered
-- protocol: simple

select "department", sum("cost") as "total" from "visits" where "visit_date" >= now() - interval '3 years' group by "department"
