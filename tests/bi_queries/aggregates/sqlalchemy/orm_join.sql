-- SQLAlchemy ORM: session.execute(select(Patient.sex, func.avg(Visit.cost)).join(Visit.patient).group_by(Patient.sex))
-- source: sqlalchemy/sqlalchemy lib/sqlalchemy/sql/compiler.py (anonymous labels count_1, LIMIT %(param_1)s); sqlalchemy/sqlalchemy lib/sqlalchemy/orm/relationships.py (join along the relationship's foreign key)
-- expect: answered

SELECT patients.sex, avg(visits.cost) AS avg_1 
FROM visits JOIN patients ON patients.patient_id = visits.patient_id GROUP BY patients.sex
