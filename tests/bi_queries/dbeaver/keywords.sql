-- DBeaver: on connect, the server's keywords beyond SQL:2003's, for its SQL dialect (PostgreDialect)
-- min_rows: 1
select string_agg(word, ',') from pg_catalog.pg_get_keywords() where word <> ALL ('{a,abs,absolute,action,ada,add,admin,after,all,allocate,alter,always,and,any,are,array,as,asc}'::text[])
