-- pandas: pd.read_sql(..., chunksize=1000) streams through SQLAlchemy's stream_results, a psycopg named (server-side) cursor
-- source: pandas-dev/pandas pandas/io/sql.py (chunksize -> execution_options(stream_results=True)); sqlalchemy/sqlalchemy lib/sqlalchemy/dialects/postgresql/psycopg.py (server-side cursors named c_<hex>_<hex>); psycopg/psycopg psycopg/psycopg/_server_cursor_base.py (DECLARE ... CURSOR FOR; FETCH FORWARD n FROM)
-- expect: answered
-- before: BEGIN
-- then: FETCH FORWARD 1000 FROM "c_7f3a2c0041e0_9b2d"
-- then: CLOSE "c_7f3a2c0041e0_9b2d"
-- then: COMMIT
-- protocol: simple

DECLARE "c_7f3a2c0041e0_9b2d" CURSOR FOR SELECT diagnosis_code, count(*) AS visits, sum(cost) AS total_cost FROM visits GROUP BY diagnosis_code
