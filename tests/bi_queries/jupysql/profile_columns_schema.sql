-- jupysql: %sqlcmd profile --schema qualifies the table (src/sql/inspect.py TableDescription)
SELECT * FROM public.patients WHERE 1=0
