-- Redash: a date-range parameter {{ range.start }} / {{ range.end }} substituted as quoted dates
-- source: getredash/redash redash/models/parameterized_query.py (date-range parameters)
-- expect: answered
-- protocol: simple

/* Username: analyst@example.com, Query ID: 22, Queue: queries, Job ID: 2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f, Query Hash: 9f8e7d6c5b4a39281706f5e4d3c2b1a0, Scheduled: True */ SELECT diagnosis_code, count(*) AS visits, sum(cost) AS total_cost
FROM visits
WHERE visit_date >= '2024-01-01' AND visit_date <= '2025-12-31'
GROUP BY diagnosis_code
ORDER BY visits DESC
