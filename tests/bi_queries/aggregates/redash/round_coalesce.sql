-- Redash: a hand-written report query with the spellings analysts use: WHERE 1=1 for optional filters, ROUND(AVG(x)::numeric, 2), COALESCE(SUM(x), 0), COUNT(1), ordinals
-- source: https://redash.io/help/user-guide/querying/query-parameters (optional filters written after WHERE 1=1)
-- expect: answered
-- protocol: simple

/* Username: analyst@example.com, Query ID: 52, Queue: queries, Job ID: 6a7b8c9d-0e1f-4a2b-3c4d-5e6f7a8b9c0d, Query Hash: d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8, Scheduled: False */ SELECT department,
       COUNT(1) AS visits,
       ROUND(AVG(cost)::numeric, 2) AS avg_cost,
       COALESCE(SUM(cost), 0) AS total_cost
FROM visits
WHERE 1=1
GROUP BY 1
ORDER BY 1
