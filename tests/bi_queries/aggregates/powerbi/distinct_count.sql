-- Power BI: a card visual, Count (Distinct) of patient_id
-- source: https://learn.microsoft.com/en-us/power-bi/connect-data/desktop-directquery-about (DirectQuery: the visual's query folded to SQL, at most 1,000,000 rows, hence limit 1000001)
-- expect: answered

select count(distinct("rows"."patient_id")) as "a0"
from 
(
    select "_"."patient_id"
    from "public"."visits" "_"
) "rows"
