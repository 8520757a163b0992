-- DBeaver: on connect of its metadata context, the database row (PostgreDataSource)
-- min_rows: 1
-- contains: health
SELECT db.oid,db.* FROM pg_catalog.pg_database db WHERE datname='health'
