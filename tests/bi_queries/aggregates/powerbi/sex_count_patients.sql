-- Power BI: a donut of patients by sex (the patients table itself)
-- source: https://learn.microsoft.com/en-us/power-bi/connect-data/desktop-directquery-about
-- expect: answered

select "_"."sex",
    "_"."a0"
from 
(
    select "rows"."sex" as "sex",
        count(1) as "a0"
    from 
    (
        select "_"."patient_id",
            "_"."sex"
        from "public"."patients" "_"
    ) "rows"
    group by "sex"
) "_"
where not "_"."a0" is null
limit 1000001
