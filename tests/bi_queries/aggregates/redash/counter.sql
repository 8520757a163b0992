-- Redash: the Counter visualization's query (one value)
-- source: https://redash.io/help/user-guide/visualizations/visualization-types (Counter)
-- expect: answered
-- protocol: simple

/* Username: analyst@example.com, Query ID: 30, Queue: queries, Job ID: 3d4e5f6a-7b8c-4d9e-0f1a-2b3c4d5e6f7a, Query Hash: 0a1b2c3d4e5f60718293a4b5c6d7e8f9, Scheduled: False */ SELECT count(*) AS value FROM visits WHERE department = 'Emergency'
