-- Power BI: a visual over visits related to patients (merge of the two tables folded to a left outer join)
-- source: https://learn.microsoft.com/en-us/power-query/query-folding-basics (Table.NestedJoin folds to a join of "$Outer" and "$Inner")
-- expect: answered

select "_"."sex",
    "_"."a0"
from 
(
    select "rows"."sex" as "sex",
        sum("rows"."cost") as "a0"
    from 
    (
        select "$Outer"."visit_id",
            "$Outer"."cost",
            "$Inner"."sex"
        from "public"."visits" "$Outer"
        left outer join "public"."patients" "$Inner" on ("$Outer"."patient_id" = "$Inner"."patient_id")
    ) "rows"
    group by "sex"
) "_"
where not "_"."a0" is null
limit 1000001
