-- Statements the healthcare policy's analyst (an aggregate role) must be
-- refused, with the SQLSTATE and what the message says. The policy is the copy
-- in tests/test_private_rewrite.py: per-query epsilon at most 2, delta at most 1e-5.
-- Read by tests/test_private_rewrite.py; one test per entry.
--
-- An entry is `-- title: ...`, the statement, then:
--   session:  the session's pgshroud settings (default `epsilon=1, delta=1e-6`)
--   refused:  `SQLSTATE fragment`: the fragment is in the message (case-insensitive)
--   hint:     a fragment of the hint (optional)

-- title: row-level output
SELECT ssn FROM patients
-- refused: 42501 row-level results are not released

-- title: SELECT * of a protected table
SELECT * FROM visits
-- refused: 42501 row-level results are not released

-- title: SELECT * beside an aggregate
SELECT *, count(*) FROM visits
-- refused: 42501 SELECT * is row-level output

-- title: a group key with its rows' values
SELECT department, cost, count(*) FROM visits GROUP BY department
-- refused: 42501 must appear in GROUP BY

-- title: a window function over aggregates
SELECT department, count(*), rank() OVER (ORDER BY count(*)) FROM visits GROUP BY department
-- refused: 42501 window functions cannot be used over protected rows

-- title: a window aggregate
SELECT count(*) OVER () FROM visits
-- refused: 42501 window functions

-- title: sum over a column without bounds names the policy bounds to add
SELECT sum(visit_id) FROM visits
-- refused: 42501 needs bounds on its argument
-- hint: add bounds for visits.visit_id to the policy

-- title: avg of a date difference without bounds
SELECT avg(visit_date - birth_date) FROM visits JOIN patients USING (patient_id)
-- refused: 42501 needs bounds
-- hint: least(greatest(

-- title: division by a column
SELECT sum(cost / length_of_stay) FROM visits
-- refused: 42501 divide only by a nonzero literal

-- title: division by zero
SELECT count(*) FROM visits WHERE cost / 0 > 1
-- refused: 42501 divide only by a nonzero literal

-- title: modulo by a column
SELECT count(*) FROM visits WHERE length_of_stay % length_of_stay = 0
-- refused: 42501 divide only by a nonzero literal

-- title: a cast from text to integer can fail
SELECT count(*) FROM visits WHERE diagnosis_code::int > 3
-- refused: 42501 cast from text to integer

-- title: a cast from numeric to integer can fail
SELECT sum(cost::int) FROM visits
-- refused: 42501 cast from numeric to integer

-- title: a cast from integer to smallint can fail
SELECT count(*) FROM visits WHERE length_of_stay::smallint = 1
-- refused: 42501 cast from integer to smallint

-- title: a cast of a masked text column to a number
SELECT avg(least(greatest(zip::numeric, 0), 99999)) FROM patients
-- refused: 42501 cast from text to numeric

-- title: date plus integer can leave the date range
SELECT count(*) FROM visits WHERE visit_date + 30 > '2024-01-01'
-- refused: 42501 date arithmetic

-- title: LIKE with a pattern ending in an escape
SELECT count(*) FROM visits WHERE department LIKE 'Card\'
-- refused: 42501 escape character

-- title: LIKE with a pattern from a column
SELECT count(*) FROM visits WHERE department LIKE diagnosis_code
-- refused: 42501 literal pattern

-- title: a regular expression can fail
SELECT count(*) FROM visits WHERE department ~ 'Card'
-- refused: 42501 not allowed over rows of a private query

-- title: text concatenation
SELECT count(*) FROM visits WHERE department || 'x' = 'Cardiologyx'
-- refused: 42501 not allowed over rows of a private query

-- title: GROUP BY the privacy unit
SELECT patient_id, count(*) FROM visits GROUP BY patient_id
-- refused: 42501 grouping by the privacy unit

-- title: a join of protected tables not on the privacy unit
SELECT count(*) FROM visits v JOIN patients p ON v.visit_id = p.patient_id
-- refused: 42501 not joined to v on the privacy unit

-- title: a join on the privacy unit OR something else
SELECT count(*) FROM patients p JOIN visits v ON p.patient_id = v.patient_id OR p.sex = 'F'
-- refused: 42501 not joined to p on the privacy unit

-- title: a cross join of protected tables
SELECT count(*) FROM patients p CROSS JOIN visits v
-- refused: 42501 not joined to p on the privacy unit

-- title: RIGHT JOIN
SELECT count(*) FROM visits v RIGHT JOIN patients p ON v.patient_id = p.patient_id
-- refused: 42501 RIGHT JOIN is not supported

-- title: FULL JOIN
SELECT count(*) FROM visits v FULL JOIN patients p ON v.patient_id = p.patient_id
-- refused: 42501 FULL JOIN is not supported

-- title: the protected table on the nullable side of a LEFT JOIN
SELECT d.code, count(*) FROM diagnoses d LEFT JOIN visits v ON v.diagnosis_code = d.code GROUP BY d.code
-- refused: 42501 nullable side of a LEFT JOIN

-- title: UNION
SELECT count(*) FROM visits UNION SELECT count(*) FROM patients
-- refused: 42501 no UNION

-- title: a subquery in WHERE
SELECT count(*) FROM visits WHERE patient_id IN (SELECT patient_id FROM patients WHERE sex = 'F')
-- refused: 42501 subqueries are allowed only in FROM

-- title: a scalar subquery in the select list
SELECT count(*), (SELECT count(*) FROM patients) FROM visits
-- refused: 42501 subqueries are allowed only in FROM

-- title: EXISTS
SELECT count(*) FROM visits v WHERE EXISTS (SELECT 1 FROM labs l WHERE l.patient_id = v.patient_id)
-- refused: 42501 subqueries are allowed only in FROM

-- title: an aggregating subquery in FROM not grouped by the privacy unit
SELECT avg(n) FROM (SELECT department, count(*) AS n FROM visits GROUP BY department) AS t
-- refused: 42501 must GROUP BY the privacy unit

-- title: WITH RECURSIVE
WITH RECURSIVE r AS (SELECT patient_id FROM visits) SELECT count(*) FROM r
-- refused: 42501 WITH RECURSIVE

-- title: SELECT DISTINCT
SELECT DISTINCT department, count(*) FROM visits GROUP BY department
-- refused: 42501 SELECT DISTINCT

-- title: COUNT(DISTINCT) of several expressions
SELECT count(DISTINCT diagnosis_code, department) FROM visits
-- refused: 42501 COUNT(DISTINCT ...) of several expressions

-- title: SUM(DISTINCT)
SELECT sum(DISTINCT cost) FROM visits
-- refused: 42501 SUM(DISTINCT ...) is not supported

-- title: an aggregate pgshroud does not answer
SELECT string_agg(department, ',') FROM visits
-- refused: 42501 is not answered privately

-- title: min of a text column
SELECT min(department) FROM visits
-- refused: 42501 needs a numeric argument

-- title: a percentile with a fraction from a column
SELECT percentile_cont(cost) WITHIN GROUP (ORDER BY cost) FROM visits
-- refused: 42501 literal fraction

-- title: a quantile whose bounds are equal
SELECT median(least(greatest(length_of_stay, 5), 5)) FROM visits
-- refused: 42501 low < high

-- title: nested aggregates
SELECT sum(count(*)) FROM visits
-- refused: 42501 nested

-- title: an aggregate in WHERE
SELECT count(*) FROM visits WHERE count(*) > 1
-- refused: 42501 aggregates are not allowed in WHERE

-- title: GROUPING SETS
SELECT department, sum(cost) FROM visits GROUP BY GROUPING SETS ((department), ())
-- refused: 42501 GROUPING

-- title: a query whose session epsilon is above the policy maximum
SELECT count(*) FROM visits
-- session: epsilon=3, delta=1e-6
-- refused: 22023 per-query maximum 2

-- title: SET pgshroud.epsilon above the policy maximum
SET pgshroud.epsilon = 2.5
-- refused: 22023 per-query maximum 2

-- title: SET pgshroud.epsilon to zero
SET pgshroud.epsilon = 0
-- refused: 22023 must be > 0

-- title: SET pgshroud.epsilon to text
SET pgshroud.epsilon = 'lots'
-- refused: 22023 invalid value for pgshroud.epsilon

-- title: SET pgshroud.delta above the policy maximum
SET pgshroud.delta = 0.001
-- refused: 22023 per-query maximum 1e-05

-- title: SET LOCAL pgshroud.epsilon
SET LOCAL pgshroud.epsilon = 0.5
-- refused: 22023 SET LOCAL is not supported

-- title: SET of an unknown pgshroud setting
SET pgshroud.sensitivity = 0
-- refused: 42704 unrecognized configuration parameter "pgshroud.sensitivity"

-- title: SHOW of an unknown pgshroud setting
SHOW pgshroud.budgets
-- refused: 42704 unrecognized configuration parameter "pgshroud.budgets"

-- title: SET of the read-only pgshroud.budget
SET pgshroud.budget = 100
-- refused: 55P02 parameter "pgshroud.budget" cannot be changed

-- title: RESET of the read-only pgshroud.budget
RESET pgshroud.budget
-- refused: 55P02 parameter "pgshroud.budget" cannot be changed

-- title: EXPLAIN of row-level output
EXPLAIN SELECT ssn FROM patients
-- refused: 42501 row-level results are not released

-- title: partition selection with delta 0
SELECT date_trunc('month', visit_date) AS month, count(*) FROM visits GROUP BY month
-- session: epsilon=1, delta=0
-- refused: 42501 delta

-- title: a cross join with public tables multiplies one person's rows (a timing oracle)
SELECT count(*) FROM visits v, diagnoses a, diagnoses b, diagnoses c WHERE v.patient_id = 5 AND v.department = 'Psychiatry'
-- refused: 42501 must be joined on (code)

-- title: a public table joined on a column that is not its key
SELECT count(*) FROM visits v JOIN diagnoses d ON d.description = v.department
-- refused: 42501 must be joined on (code)

-- title: a public table joined by inequality
SELECT count(*) FROM visits v JOIN diagnoses d ON d.code <> v.diagnosis_code
-- refused: 42501 multiplies each person's rows

-- title: two public tables joined on their keys to each other but not to the protected rows
SELECT count(*) FROM visits v, diagnoses a JOIN diagnoses b ON a.code = b.code
-- refused: 42501 must be joined on (code)

-- title: two tables of many rows per person joined on the privacy unit
SELECT count(*) FROM visits v JOIN labs l ON l.patient_id = v.patient_id
-- refused: 42501 many rows per person
