-- Power BI: DirectQuery, Department with Sum of cost and Average of length_of_stay
-- source: https://learn.microsoft.com/en-us/power-bi/connect-data/desktop-directquery-about (DirectQuery: the visual's query folded to SQL, at most 1,000,000 rows, hence limit 1000001)
-- expect: answered

select "_"."department",
    "_"."a0",
    "_"."a1"
from 
(
    select "rows"."department" as "department",
        sum("rows"."cost") as "a0",
        avg("rows"."length_of_stay") as "a1"
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
where not "_"."a0" is null or not "_"."a1" is null
limit 1000001
