-- Redash: a query parameter {{ department }} of type text, substituted into the text before it is sent
-- source: getredash/redash redash/models/parameterized_query.py (mustache substitution; text parameters quoted)
-- expect: answered
-- protocol: simple

/* Username: analyst@example.com, Query ID: 21, Queue: queries, Job ID: 0b8d7c6e-5f4a-4b3c-9d2e-1f0a9b8c7d6e, Query Hash: 1a2b3c4d5e6f708192a3b4c5d6e7f809, Scheduled: False */ SELECT date_trunc('year', visit_date) AS year, avg(cost) AS avg_cost
FROM visits
WHERE department = 'Cardiology'
GROUP BY 1
ORDER BY 1
