-- DBeaver on connect: the schemas unqualified names resolve in
-- min_rows: 1
SHOW search_path
