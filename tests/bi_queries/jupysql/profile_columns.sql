-- jupysql: %sqlcmd profile reads a table's columns from a query that returns no row (src/sql/inspect.py TableDescription); for the analyst a zero-row probe of a protected table
SELECT * FROM visits WHERE 1=0
