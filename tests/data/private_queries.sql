-- Private query plans: the healthcare policy (a copy of policies/examples/healthcare.yaml
-- in tests/test_private_rewrite.py) over the demo schema, planned for its analyst
-- (an aggregate role).
-- Read by tests/test_private_rewrite.py; one test per entry.
--
-- An entry is `-- title: ...`, the statement, then what its plan must be:
--   session:      the session's pgshroud settings (default `epsilon=1, delta=1e-6`;
--                 `none` for the policy's defaults, epsilon 0.5 and delta 1e-7)
--   columns:      `name type, ...`, names and PostgreSQL types of the answer
--   keys:         `none`, or per GROUP BY key `public <domain size>` or `selection`
--   noise:        one line per noisy measurement: `kind [low, high] sensitivity S
--                 epsilon E [grid I]` (bounds only for value measurements; grid only,
--                 and always, for real-valued sums); the list is complete
--   cost:         `epsilon E, delta D`
--   contribution: `G groups x R rows` per person (ungrouped: 1 x max_groups*max_rows)
--   notice:       a fragment of one notice; no notice line: no notices
--   post:         `having`, `order asc|desc, ...`, `limit N`, `offset N`, separated by `;`;
--                 no post line: none of them
--   sql:          a fragment the bounded SQL contains
--   nosql:        a fragment the bounded SQL does not contain
--   local:        the command tag of a Local plan (SET/SHOW/RESET/EXPLAIN) instead of a Release
--   setting:      `name value` or `name reset` that a Local plan applies; absent: none
--   value:        the single value a Local answer holds
--   row:          a fragment of one row of a Local answer
--
-- Sensitivities: visits and labs allow 5 groups x 10 rows per patient, patients
-- 1 x 1; a join takes the largest of each. A patient contributes an allowance of
-- T = 5 x 10 = 50 rows over all groups (L1), so every sensitivity is in L1 over all
-- groups: counts T, sums T x the largest bound, centred sums T x (high - low)/2,
-- sums of squares T x largest^2, people (units) max_groups = 5. At most max_groups
-- groups per patient (L0, the `"pick"` in the SQL) only when people are counted per
-- group: a key through partition selection or count(DISTINCT patient_id).
-- Bounds: visits.cost [0, 5000], visits.length_of_stay [0, 30], labs.value [0, 500].
-- Real-valued sums are released on a grid of sensitivity/1024; `grid I` is the index
-- sensitivity the noise is scaled for, 1024 plus the groups a patient can touch:
-- 1 ungrouped, 5 when people are counted, else one per row of the allowance (50).
-- Epsilon is split equally among the noised measurements. Delta is spent only when
-- a key needs partition selection.

-- title: grouped count over a public key shares the allowance over all groups
SELECT department, count(*) FROM visits GROUP BY department
-- columns: department text, count bigint
-- keys: public 16
-- noise: rows sensitivity 50 epsilon 1
-- cost: epsilon 1, delta 0
-- contribution: 5 groups x 10 rows
-- sql: CASE WHEN "total" <= 50 THEN "n" ELSE div("k" * "total" + "upto" * 50 * 2147483648
-- sql: PARTITION BY "unit" ORDER BY "k0" ROWS UNBOUNDED PRECEDING
-- sql: WHERE "c" > 0
-- nosql: "pick"

-- title: ungrouped count(*) gives one group the whole allowance
SELECT count(*) FROM visits
-- columns: count bigint
-- keys: none
-- noise: rows sensitivity 50 epsilon 1
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 50 rows
-- sql: LEAST("n", 50) AS "c"
-- nosql: hashtext
-- nosql: "pick"

-- title: count of a NOT NULL column is the row count
SELECT count(cost) FROM visits
-- columns: count bigint
-- keys: none
-- noise: rows sensitivity 50 epsilon 1
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 50 rows

-- title: count of a column on the nullable side of a LEFT JOIN counts its values
SELECT count(l.value) FROM patients p LEFT JOIN labs l ON l.patient_id = p.patient_id
-- columns: count bigint
-- keys: none
-- noise: count sensitivity 50 epsilon 1
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 50 rows

-- title: count(DISTINCT patient_id) counts people once
SELECT count(DISTINCT patient_id) FROM visits
-- columns: count bigint
-- keys: none
-- noise: units sensitivity 1 epsilon 1
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 50 rows

-- title: count(DISTINCT patient_id) per group counts each person in at most max_groups groups
SELECT department, count(DISTINCT patient_id) AS patients FROM visits GROUP BY department
-- columns: department text, patients bigint
-- keys: public 16
-- noise: units sensitivity 5 epsilon 1
-- cost: epsilon 1, delta 0
-- contribution: 5 groups x 10 rows
-- sql: count(*) FILTER (WHERE "pick" <= 5)::numeric AS "units"

-- title: people counted beside a sum over public keys: at most max_groups groups, the sum's grid over all a person's groups
SELECT department, count(DISTINCT patient_id), sum(cost) FROM visits GROUP BY department
-- columns: department text, count bigint, sum numeric
-- keys: public 16
-- noise: units sensitivity 5 epsilon 1/2
-- noise: sum [0, 5000] sensitivity 250000 epsilon 1/2 grid 1074
-- cost: epsilon 1, delta 0
-- contribution: 5 groups x 10 rows
-- sql: count(*) FILTER (WHERE "pick" <= 5)::numeric AS "units"
-- sql: LEAST(GREATEST(("t1" * "c" / "n"), LEAST("v0", "c") * 0), LEAST("v0", "c") * 5000)

-- title: sum of a numeric column
SELECT sum(cost) FROM visits
-- columns: sum numeric
-- keys: none
-- noise: sum [0, 5000] sensitivity 250000 epsilon 1 grid 1025
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 50 rows
-- sql: LEAST(GREATEST("a0", 0), 250000)
-- sql: LEAST(GREATEST(("t1" * "c" / "n"), LEAST("v0", "c") * 0), LEAST("v0", "c") * 5000)

-- title: a sum per public group scales each person's total to the rows kept
SELECT sex, sum(cost) FROM patients JOIN visits USING (patient_id) GROUP BY sex
-- columns: sex text, sum numeric
-- keys: public 2
-- noise: sum [0, 5000] sensitivity 250000 epsilon 1 grid 1074
-- cost: epsilon 1, delta 0
-- contribution: 5 groups x 10 rows
-- sql: LEAST(GREATEST("a0", 0), 250000)
-- sql: ("t1" * "c" / "n")
-- nosql: "pick"

-- title: sum of an integer column is bigint
SELECT sum(length_of_stay) FROM visits
-- columns: sum bigint
-- keys: none
-- noise: sum [0, 30] sensitivity 1500 epsilon 1 grid 1025
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 50 rows

-- title: avg from a centred sum and the row count of a NOT NULL column
SELECT avg(cost) FROM visits
-- columns: avg numeric
-- keys: none
-- noise: centred_sum [0, 5000] sensitivity 125000 epsilon 1/2 grid 1025
-- noise: rows sensitivity 50 epsilon 1/2
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 50 rows

-- title: count, sum and avg of one column share their measurements
SELECT count(cost), sum(cost), avg(cost) FROM visits
-- columns: count bigint, sum numeric, avg numeric
-- keys: none
-- noise: rows sensitivity 50 epsilon 1/3
-- noise: sum [0, 5000] sensitivity 250000 epsilon 1/3 grid 1025
-- noise: centred_sum [0, 5000] sensitivity 125000 epsilon 1/3 grid 1025
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 50 rows

-- title: variance and stddev kinds share a sum, a sum of squares and a count
SELECT variance(length_of_stay), var_pop(length_of_stay), stddev(length_of_stay), stddev_pop(length_of_stay), stddev_samp(length_of_stay) FROM visits
-- columns: variance numeric, var_pop numeric, stddev numeric, stddev_pop numeric, stddev_samp numeric
-- keys: none
-- noise: clamped_sum [0, 30] sensitivity 1500 epsilon 1/3 grid 1025
-- noise: sum_of_squares [0, 30] sensitivity 45000 epsilon 1/3 grid 1025
-- noise: rows sensitivity 50 epsilon 1/3
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 50 rows

-- title: var_samp keeps its name
SELECT var_samp(cost) FROM visits
-- columns: var_samp numeric
-- keys: none
-- noise: clamped_sum [0, 5000] sensitivity 250000 epsilon 1/3 grid 1025
-- noise: sum_of_squares [0, 5000] sensitivity 1250000000 epsilon 1/3 grid 1025
-- noise: rows sensitivity 50 epsilon 1/3
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 50 rows

-- title: median from a histogram over the declared bounds
SELECT median(length_of_stay) FROM visits
-- columns: median double precision
-- keys: none
-- noise: histogram [0, 30] sensitivity 50 epsilon 1
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 50 rows
-- sql: ORDER BY random()) FILTER (WHERE "a0" IS NOT NULL))[1:50]
-- sql: "t1"[1:LEAST("v0", "c")]

-- title: percentile_cont per public group
SELECT department, percentile_cont(0.9) WITHIN GROUP (ORDER BY cost) AS p90 FROM visits GROUP BY department
-- columns: department text, p90 double precision
-- keys: public 16
-- noise: histogram [0, 5000] sensitivity 50 epsilon 1
-- cost: epsilon 1, delta 0
-- contribution: 5 groups x 10 rows

-- title: percentile_disc keeps the argument's type
SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY length_of_stay) FROM visits
-- columns: percentile_disc integer
-- keys: none
-- noise: histogram [0, 30] sensitivity 50 epsilon 1
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 50 rows

-- title: min and max are extreme quantiles of one histogram, with notices
SELECT min(cost), max(cost) FROM visits
-- columns: min numeric, max numeric
-- keys: none
-- noise: histogram [0, 5000] sensitivity 50 epsilon 1
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 50 rows
-- notice: MIN(cost) is answered as a private estimate
-- notice: MAX(cost) is answered as a private estimate

-- title: min and max of an integer column per group
SELECT department, min(length_of_stay), max(length_of_stay) FROM visits GROUP BY department
-- columns: department text, min integer, max integer
-- keys: public 16
-- noise: histogram [0, 30] sensitivity 50 epsilon 1
-- cost: epsilon 1, delta 0
-- contribution: 5 groups x 10 rows
-- notice: MIN(length_of_stay)
-- notice: MAX(length_of_stay)

-- title: sum with FILTER
SELECT sum(cost) FILTER (WHERE department = 'Cardiology') AS cardiology FROM visits
-- columns: cardiology numeric
-- keys: none
-- noise: sum [0, 5000] sensitivity 250000 epsilon 1 grid 1025
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 50 rows
-- sql: CASE WHEN

-- title: count(*) with FILTER is a count of its own, beside count(*)
SELECT count(*) FILTER (WHERE length_of_stay > 2) AS long_stays, count(*) FROM visits
-- columns: long_stays bigint, count bigint
-- keys: none
-- noise: count sensitivity 50 epsilon 1/2
-- noise: rows sensitivity 50 epsilon 1/2
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 50 rows

-- title: bounds of an expression by interval arithmetic
SELECT avg(length_of_stay * 24) FROM visits
-- columns: avg numeric
-- keys: none
-- noise: centred_sum [0, 720] sensitivity 18000 epsilon 1/2 grid 1025
-- noise: count sensitivity 50 epsilon 1/2
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 50 rows

-- title: bounds of a subtraction go negative
SELECT sum(15 - length_of_stay) FROM visits
-- columns: sum bigint
-- keys: none
-- noise: sum [-15, 15] sensitivity 750 epsilon 1 grid 1025
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 50 rows

-- title: bounds of a division by a literal
SELECT avg(cost / 100) FROM visits
-- columns: avg numeric
-- keys: none
-- noise: centred_sum [0, 50] sensitivity 1250 epsilon 1/2 grid 1025
-- noise: count sensitivity 50 epsilon 1/2
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 50 rows

-- title: an explicit clamp narrows the bounds
SELECT avg(least(greatest(cost, 0), 100)) FROM visits
-- columns: avg numeric
-- keys: none
-- noise: centred_sum [0, 100] sensitivity 2500 epsilon 1/2 grid 1025
-- noise: count sensitivity 50 epsilon 1/2
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 50 rows

-- title: an explicit clamp bounds a value without policy bounds
SELECT avg(least(greatest(visit_date - birth_date, 0), 36500)) AS age_days FROM visits JOIN patients USING (patient_id)
-- columns: age_days numeric
-- keys: none
-- noise: centred_sum [0, 36500] sensitivity 912500 epsilon 1/2 grid 1025
-- noise: count sensitivity 50 epsilon 1/2
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 50 rows

-- title: CASE buckets with literal results are public keys
SELECT CASE WHEN length_of_stay < 3 THEN 'short' ELSE 'long' END AS stay, count(*) FROM visits GROUP BY 1
-- columns: stay text, count bigint
-- keys: public 2
-- noise: rows sensitivity 50 epsilon 1
-- cost: epsilon 1, delta 0
-- contribution: 5 groups x 10 rows

-- title: CASE without ELSE has NULL in its public domain
SELECT CASE WHEN cost >= 1000 THEN 'high' WHEN cost >= 100 THEN 'mid' END AS band, avg(length_of_stay) FROM visits GROUP BY band
-- columns: band text, avg numeric
-- keys: public 3
-- noise: centred_sum [0, 30] sensitivity 750 epsilon 1/2 grid 1074
-- noise: rows sensitivity 50 epsilon 1/2
-- cost: epsilon 1, delta 0
-- contribution: 5 groups x 10 rows

-- title: an unaliased CASE key is named case, as PostgreSQL names it
SELECT CASE WHEN sex = 'F' THEN 1 ELSE 2 END, count(*) FROM patients GROUP BY 1
-- columns: case integer, count bigint
-- keys: public 2
-- noise: rows sensitivity 1 epsilon 1
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 1 rows

-- title: a date_trunc key goes through partition selection
SELECT date_trunc('month', visit_date) AS month, count(*) FROM visits GROUP BY month
-- columns: month timestamp with time zone, count bigint
-- keys: selection
-- noise: units sensitivity 5 epsilon 1/2
-- noise: rows sensitivity 50 epsilon 1/2
-- cost: epsilon 1, delta 1e-6
-- contribution: 5 groups x 10 rows
-- sql: count(*) FILTER (WHERE "pick" <= 5)::numeric AS "units"

-- title: a sum per key through partition selection touches up to the allowance's groups on the grid
SELECT date_trunc('month', visit_date) AS month, sum(cost), avg(length_of_stay) FROM visits GROUP BY month
-- columns: month timestamp with time zone, sum numeric, avg numeric
-- keys: selection
-- noise: units sensitivity 5 epsilon 1/4
-- noise: sum [0, 5000] sensitivity 250000 epsilon 1/4 grid 1074
-- noise: centred_sum [0, 30] sensitivity 750 epsilon 1/4 grid 1074
-- noise: rows sensitivity 50 epsilon 1/4
-- cost: epsilon 1, delta 1e-6
-- contribution: 5 groups x 10 rows
-- sql: count(*) FILTER (WHERE "pick" <= 5)::numeric AS "units"

-- title: an unaliased date_trunc key is named date_trunc, as PostgreSQL names it
SELECT date_trunc('year', visit_date), count(*) FROM visits GROUP BY 1
-- columns: date_trunc timestamp with time zone, count bigint
-- keys: selection
-- noise: units sensitivity 5 epsilon 1/2
-- noise: rows sensitivity 50 epsilon 1/2
-- cost: epsilon 1, delta 1e-6
-- contribution: 5 groups x 10 rows

-- title: an extract key is numeric and goes through partition selection
SELECT extract(year FROM visit_date) AS year, count(*) FROM visits GROUP BY 1
-- columns: year numeric, count bigint
-- keys: selection
-- noise: units sensitivity 5 epsilon 1/2
-- noise: rows sensitivity 50 epsilon 1/2
-- cost: epsilon 1, delta 1e-6
-- contribution: 5 groups x 10 rows

-- title: a column key without a public domain goes through partition selection
SELECT visit_date, count(*) FROM visits GROUP BY visit_date
-- columns: visit_date date, count bigint
-- keys: selection
-- noise: units sensitivity 5 epsilon 1/2
-- noise: rows sensitivity 50 epsilon 1/2
-- cost: epsilon 1, delta 1e-6
-- contribution: 5 groups x 10 rows

-- title: a group key that is not selected still groups
SELECT count(*) FROM visits GROUP BY department
-- columns: count bigint
-- keys: public 16
-- noise: rows sensitivity 50 epsilon 1
-- cost: epsilon 1, delta 0
-- contribution: 5 groups x 10 rows

-- title: patients joined to visits with USING take the larger contribution bounds
SELECT sex, count(*) FROM patients JOIN visits USING (patient_id) GROUP BY sex
-- columns: sex text, count bigint
-- keys: public 2
-- noise: rows sensitivity 50 epsilon 1
-- cost: epsilon 1, delta 0
-- contribution: 5 groups x 10 rows

-- title: patients joined to visits with ON and aliases
SELECT p.sex, avg(v.cost) FROM patients p JOIN visits v ON p.patient_id = v.patient_id GROUP BY p.sex
-- columns: sex text, avg numeric
-- keys: public 2
-- noise: centred_sum [0, 5000] sensitivity 125000 epsilon 1/2 grid 1074
-- noise: rows sensitivity 50 epsilon 1/2
-- cost: epsilon 1, delta 0
-- contribution: 5 groups x 10 rows

-- title: a comma join on the privacy unit in WHERE
SELECT count(*) FROM patients p, visits v WHERE p.patient_id = v.patient_id AND p.sex = 'F'
-- columns: count bigint
-- keys: none
-- noise: rows sensitivity 50 epsilon 1
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 50 rows

-- title: a LEFT JOIN on the privacy unit
SELECT count(*) FROM patients p LEFT JOIN labs l ON l.patient_id = p.patient_id
-- columns: count bigint
-- keys: none
-- noise: rows sensitivity 50 epsilon 1
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 50 rows

-- title: patients alone allow one row per person
SELECT sex, count(*) FROM patients GROUP BY sex
-- columns: sex text, count bigint
-- keys: public 2
-- noise: rows sensitivity 1 epsilon 1
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 1 rows

-- title: a public table joined to visits, grouped by its column, releases the table's values
SELECT d.description, count(*) FROM visits v JOIN diagnoses d ON d.code = v.diagnosis_code GROUP BY d.description
-- columns: description text, count bigint
-- keys: public table
-- noise: rows sensitivity 50 epsilon 1
-- cost: epsilon 1, delta 0
-- contribution: 5 groups x 10 rows
-- sql: SELECT DISTINCT "description" FROM "public"."diagnoses"

-- title: a protected column whose public domain is a public table's column
SELECT diagnosis_code, count(*) FROM visits GROUP BY diagnosis_code
-- columns: diagnosis_code text, count bigint
-- keys: public table
-- noise: rows sensitivity 50 epsilon 1
-- cost: epsilon 1, delta 0
-- contribution: 5 groups x 10 rows
-- sql: SELECT DISTINCT "code" FROM "public"."diagnoses"

-- title: count(DISTINCT x) counts at most the allowance of values per person
SELECT count(DISTINCT diagnosis_code) FROM visits
-- columns: count bigint
-- keys: none
-- noise: distinct sensitivity 50 epsilon 1
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 50 rows
-- sql: [1:50]
-- sql: "t1"[1:"c"]

-- title: count(DISTINCT x) per group
SELECT department, count(DISTINCT diagnosis_code) AS codes FROM visits GROUP BY department
-- columns: department text, codes bigint
-- keys: public 16
-- noise: distinct sensitivity 50 epsilon 1
-- cost: epsilon 1, delta 0
-- contribution: 5 groups x 10 rows

-- title: WHERE filters rows before bounding
SELECT count(*) FROM visits WHERE visit_date >= '2024-01-01' AND department IN ('Cardiology', 'Oncology')
-- columns: count bigint
-- keys: none
-- noise: rows sensitivity 50 epsilon 1
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 50 rows
-- sql: WHERE

-- title: LIKE, ILIKE and lower() in WHERE
SELECT count(*) FROM visits WHERE lower(department) LIKE 'card%' OR department ILIKE 'onc%'
-- columns: count bigint
-- keys: none
-- noise: rows sensitivity 50 epsilon 1
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 50 rows

-- title: HAVING, ORDER BY and LIMIT apply to noisy values
SELECT department, count(*) AS n FROM visits GROUP BY department HAVING count(*) > 10 ORDER BY n DESC LIMIT 3
-- columns: department text, n bigint
-- keys: public 16
-- noise: rows sensitivity 50 epsilon 1
-- cost: epsilon 1, delta 0
-- contribution: 5 groups x 10 rows
-- post: having; order desc; limit 3

-- title: ORDER BY positions with LIMIT and OFFSET
SELECT test, avg(value) FROM labs GROUP BY test ORDER BY 2, 1 DESC LIMIT 5 OFFSET 2
-- columns: test text, avg numeric
-- keys: public 14
-- noise: centred_sum [0, 500] sensitivity 12500 epsilon 1/2 grid 1074
-- noise: rows sensitivity 50 epsilon 1/2
-- cost: epsilon 1, delta 0
-- contribution: 5 groups x 10 rows
-- post: order asc, desc; limit 5; offset 2

-- title: round(avg(x), 2) is post-processing
SELECT department, round(avg(cost), 2) AS avg_cost FROM visits GROUP BY department
-- columns: department text, avg_cost numeric
-- keys: public 16
-- noise: centred_sum [0, 5000] sensitivity 125000 epsilon 1/2 grid 1074
-- noise: rows sensitivity 50 epsilon 1/2
-- cost: epsilon 1, delta 0
-- contribution: 5 groups x 10 rows

-- title: casts of aggregates keep the aggregate's name, and count(*) is avg's denominator
SELECT count(*)::int AS n, avg(length_of_stay)::int FROM visits
-- columns: n integer, avg integer
-- keys: none
-- noise: rows sensitivity 50 epsilon 1/2
-- noise: centred_sum [0, 30] sensitivity 750 epsilon 1/2 grid 1025
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 50 rows

-- title: arithmetic on aggregates
SELECT sum(cost) / count(*) AS mean_cost, count(*) + 1 FROM visits
-- columns: mean_cost numeric, ?column? bigint
-- keys: none
-- noise: sum [0, 5000] sensitivity 250000 epsilon 1/2 grid 1025
-- noise: rows sensitivity 50 epsilon 1/2
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 50 rows

-- title: two-level pattern, the average number of visits per patient
SELECT avg(n) FROM (SELECT patient_id, count(*) AS n FROM visits GROUP BY patient_id) AS per_patient
-- columns: avg numeric
-- keys: none
-- noise: centred_sum [0, 50] sensitivity 25 epsilon 1/2 grid 1025
-- noise: count sensitivity 1 epsilon 1/2
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 1 rows

-- title: two-level pattern, a histogram of visits per patient over a public domain
SELECT n, count(*) FROM (SELECT patient_id, count(*) AS n FROM visits GROUP BY patient_id) AS t GROUP BY n
-- columns: n bigint, count bigint
-- keys: public 51
-- noise: rows sensitivity 1 epsilon 1
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 1 rows

-- title: two-level pattern in a CTE, per-person totals bounded by the allowance
WITH per AS (SELECT patient_id, sum(cost) AS total FROM visits GROUP BY patient_id) SELECT avg(total) FROM per
-- columns: avg numeric
-- keys: none
-- noise: centred_sum [0, 250000] sensitivity 125000 epsilon 1/2 grid 1025
-- noise: count sensitivity 1 epsilon 1/2
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 1 rows

-- title: a subquery grouped by the unit and a key keeps the table's contribution bounds
SELECT department, avg(n) FROM (SELECT patient_id, department, count(*) AS n FROM visits GROUP BY patient_id, department) AS t GROUP BY department
-- columns: department text, avg numeric
-- keys: public 16
-- noise: centred_sum [0, 50] sensitivity 1250 epsilon 1/2 grid 1074
-- noise: count sensitivity 50 epsilon 1/2
-- cost: epsilon 1, delta 0
-- contribution: 5 groups x 10 rows

-- title: a row-level subquery in FROM
SELECT count(*) FROM (SELECT * FROM visits WHERE cost > 100) AS v
-- columns: count bigint
-- keys: none
-- noise: rows sensitivity 50 epsilon 1
-- cost: epsilon 1, delta 0
-- contribution: 1 groups x 50 rows

-- title: a public key and a selected key together need partition selection
SELECT sex, date_trunc('year', visit_date) AS year, count(*) FROM patients JOIN visits USING (patient_id) GROUP BY sex, year
-- columns: sex text, year timestamp with time zone, count bigint
-- keys: public 2, selection
-- noise: units sensitivity 5 epsilon 1/2
-- noise: rows sensitivity 50 epsilon 1/2
-- cost: epsilon 1, delta 1e-6
-- contribution: 5 groups x 10 rows

-- title: the session's epsilon and delta are the query's cost
SELECT date_trunc('month', visit_date) AS month, count(*) FROM visits GROUP BY month
-- session: epsilon=0.2, delta=1e-7
-- columns: month timestamp with time zone, count bigint
-- keys: selection
-- noise: units sensitivity 5 epsilon 1/10
-- noise: rows sensitivity 50 epsilon 1/10
-- cost: epsilon 0.2, delta 1e-7
-- contribution: 5 groups x 10 rows

-- title: without session settings the policy's default epsilon applies
SELECT count(*) FROM visits
-- session: none
-- columns: count bigint
-- keys: none
-- noise: rows sensitivity 50 epsilon 1/2
-- cost: epsilon 0.5, delta 0
-- contribution: 1 groups x 50 rows

-- title: SET pgshroud.epsilon
SET pgshroud.epsilon = 0.5
-- local: SET
-- setting: epsilon 0.5

-- title: SET SESSION pgshroud.epsilon TO a quoted value
SET SESSION pgshroud.epsilon TO '0.25'
-- local: SET
-- setting: epsilon 0.25

-- title: SET pgshroud.delta
SET pgshroud.delta = 1e-7
-- local: SET
-- setting: delta 1e-7

-- title: SHOW pgshroud.epsilon shows the session's value
SHOW pgshroud.epsilon
-- session: epsilon=0.3
-- local: SHOW
-- columns: pgshroud.epsilon text
-- value: 0.3

-- title: SHOW pgshroud.delta shows the policy's default
SHOW pgshroud.delta
-- session: none
-- local: SHOW
-- columns: pgshroud.delta text
-- value: 1e-07

-- title: RESET pgshroud.epsilon
RESET pgshroud.epsilon
-- local: RESET
-- setting: epsilon reset

-- title: SET pgshroud.delta TO DEFAULT resets it
SET pgshroud.delta TO DEFAULT
-- local: RESET
-- setting: delta reset

-- title: EXPLAIN of a private query with public keys
EXPLAIN SELECT department, count(*) FROM visits GROUP BY department
-- local: EXPLAIN
-- columns: QUERY PLAN text
-- row: privacy cost: epsilon 1, delta 0
-- row: 50 row(s) per person in all
-- row: rows: L1 sensitivity 50
-- row: group key department: public domain
-- row: bounded SQL: WITH

-- title: EXPLAIN of a private query with partition selection
EXPLAIN SELECT date_trunc('month', visit_date) AS month, avg(cost) FROM visits GROUP BY month
-- local: EXPLAIN
-- columns: QUERY PLAN text
-- row: privacy cost: epsilon 1, delta 1e-06
-- row: centred_sum(cost): L1 sensitivity 125000, bounds [0, 5000]
-- row: units: L1 sensitivity 5
-- row: partition selection: keep a group when its noisy unit count is at least

-- title: public tables joined on their key, also through each other, keep one row per visit
SELECT d1.description, count(*) FROM visits v JOIN diagnoses d1 ON d1.code = v.diagnosis_code JOIN diagnoses d2 ON d2.code = d1.code GROUP BY d1.description
-- columns: description text, count bigint
-- keys: public table
-- noise: rows sensitivity 50 epsilon 1
-- cost: epsilon 1, delta 0
-- contribution: 5 groups x 10 rows
