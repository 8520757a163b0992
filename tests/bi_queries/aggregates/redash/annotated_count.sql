-- Redash: a saved query, sent with the comment Redash prepends to every query
-- source: getredash/redash redash/query_runner/__init__.py (BaseQueryRunner.annotate_query: a comment with user, query id, queue, job id, hash)
-- expect: answered
-- protocol: simple

/* Username: analyst@example.com, Query ID: 17, Queue: queries, Job ID: 7f9a4c1e-3b2d-4e5f-8a9b-0c1d2e3f4a5b, Query Hash: 8c3f1a2b4d5e6f708192a3b4c5d6e7f8, Scheduled: False */ SELECT department, count(*) AS visits
FROM visits
GROUP BY department
ORDER BY visits DESC
