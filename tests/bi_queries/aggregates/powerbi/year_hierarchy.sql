-- Power BI: a column chart on the date hierarchy's Year (Date.Year folds to date_part)
-- source: https://learn.microsoft.com/en-us/power-query/query-folding-basics; https://learn.microsoft.com/en-us/powerquery-m/date-year
-- expect: answered
-- keys: c1

select "_"."c1",
    "_"."a0"
from 
(
    select "rows"."c1" as "c1",
        count(1) as "a0"
    from 
    (
        select "_"."visit_id",
            date_part('year', "_"."visit_date") as "c1"
        from "public"."visits" "_"
    ) "rows"
    group by "c1"
) "_"
where not "_"."a0" is null
limit 1000001
