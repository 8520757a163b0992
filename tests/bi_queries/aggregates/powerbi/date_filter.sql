-- Power BI: a relative or range date slicer folded into the rows subquery
-- source: https://learn.microsoft.com/en-us/power-query/query-folding-basics
-- expect: answered

select "_"."department",
    "_"."a0"
from 
(
    select "rows"."department" as "department",
        count(1) as "a0"
    from 
    (
        select "_"."visit_id",
            "_"."department"
        from "public"."visits" "_"
        where "_"."visit_date" >= date '2023-01-01' and "_"."visit_date" < date '2025-01-01'
    ) "rows"
    group by "department"
) "_"
where not "_"."a0" is null
limit 1000001
