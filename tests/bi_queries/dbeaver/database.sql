-- DBeaver: the connected database (PostgreDataSource reads pg_database on connect)
-- params: ["health"]
-- min_rows: 1
SELECT db.oid,db.* FROM pg_catalog.pg_database db WHERE datname=%s
