-- Power BI: a card visual, Sum of cost (no grouping)
-- source: https://learn.microsoft.com/en-us/power-bi/connect-data/desktop-directquery-about (DirectQuery: the visual's query folded to SQL, at most 1,000,000 rows, hence limit 1000001)
-- expect: answered

select sum("rows"."cost") as "a0"
from 
(
    select "_"."cost"
    from "public"."visits" "_"
) "rows"
