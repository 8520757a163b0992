-- DataGrip: on connect, where the session stands (its PostgreSQL session start, as logged by the server)
-- min_rows: 1
-- contains: health
select current_database(), current_schema(), current_user
