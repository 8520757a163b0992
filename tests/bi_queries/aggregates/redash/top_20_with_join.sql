-- Redash: top 20 diagnoses with their description (a join with the public reference table)
-- source: https://redash.io/help/user-guide/querying/writing-queries
-- expect: answered
-- ranked: yes
-- protocol: simple

/* Username: analyst@example.com, Query ID: 31, Queue: queries, Job ID: 4e5f6a7b-8c9d-4e0f-1a2b-3c4d5e6f7a8b, Query Hash: b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6, Scheduled: False */ SELECT d.description, count(*) AS visits
FROM visits v
JOIN diagnoses d ON d.code = v.diagnosis_code
GROUP BY 1
ORDER BY 2 DESC
LIMIT 20
