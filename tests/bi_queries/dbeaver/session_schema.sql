-- DBeaver: on connect, the session's schema and user (PostgreExecutionContext)
-- min_rows: 1
-- contains: public
SELECT current_schema(),session_user
