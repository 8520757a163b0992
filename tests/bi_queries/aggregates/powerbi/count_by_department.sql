-- Power BI: DirectQuery table visual, Department and Count of visit_id: the aggregate wrapped in an outer query that drops null measures
-- source: https://learn.microsoft.com/en-us/power-bi/connect-data/desktop-directquery-about (DirectQuery: the visual's query folded to SQL, at most 1,000,000 rows, hence limit 1000001)
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
            "_"."patient_id",
            "_"."visit_date",
            "_"."diagnosis_code",
            "_"."department",
            "_"."cost",
            "_"."length_of_stay"
        from "public"."visits" "_"
    ) "rows"
    group by "department"
) "_"
where not "_"."a0" is null
limit 1000001
