-- pandas: pd.read_sql(..., chunksize=1000) streams through SQLAlchemy's stream_results, a psycopg named (server-side) cursor
-- source: pandas-dev/pandas pandas/io/sql.py (chunksize -> execution_options(stream_results=True)); psycopg/psycopg psycopg/psycopg/server_cursor.py (DECLARE ... CURSOR FOR; FETCH FORWARD n FROM)
-- expect: answered
-- before: BEGIN
-- then: FETCH FORWARD 1000 FROM "_pg3_1"
-- then: CLOSE "_pg3_1"
-- then: COMMIT

DECLARE "_pg3_1" CURSOR FOR SELECT diagnosis_code, count(*) AS visits, sum(cost) AS total_cost FROM visits GROUP BY diagnosis_code
