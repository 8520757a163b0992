-- Power BI: a Top N visual-level filter (top 5 diagnosis codes by count)
-- source: https://learn.microsoft.com/en-us/power-bi/connect-data/desktop-directquery-about (DirectQuery: the visual's query folded to SQL, at most 1,000,000 rows, hence limit 1000001); https://learn.microsoft.com/en-us/power-bi/create-reports/power-bi-report-add-filter (Top N filters)
-- expect: answered
-- ranked: yes

select "_"."diagnosis_code",
    "_"."a0"
from 
(
    select "rows"."diagnosis_code" as "diagnosis_code",
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
    group by "diagnosis_code"
) "_"
where not "_"."a0" is null
order by "_"."a0" desc
limit 5
