-- Redash: average lab value by test for one year of results (taken_at is a timestamptz)
-- source: https://redash.io/help/user-guide/querying/writing-queries
-- expect: answered
-- protocol: simple

/* Username: analyst@example.com, Query ID: 40, Queue: queries, Job ID: 5f6a7b8c-9d0e-4f1a-2b3c-4d5e6f7a8b9c, Query Hash: c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7, Scheduled: False */ SELECT test, count(*) AS results, avg(value) AS avg_value
FROM labs
WHERE taken_at >= '2024-01-01 00:00:00+00' AND taken_at < '2025-01-01 00:00:00+00'
GROUP BY test
ORDER BY test
