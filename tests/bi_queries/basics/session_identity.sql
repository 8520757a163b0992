-- DBeaver and Superset on connect: where am I and as whom
-- min_rows: 1
-- contains: health
SELECT current_database(), current_schema(), session_user, current_user,
       current_setting('server_version_num')::int AS server_version_num
