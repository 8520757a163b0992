-- DataGrip: on connect, the database and the schemas on the search path (its PostgreSQL session start, as logged by the server)
-- min_rows: 1
-- contains: health
select current_database() as a, current_schemas(false) as b
