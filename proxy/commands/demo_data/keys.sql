-- Keys and indexes of the demo dataset, built after the bulk load because
-- that is much faster than maintaining them row by row.
ALTER TABLE diagnoses ADD PRIMARY KEY (code);
ALTER TABLE patients ADD PRIMARY KEY (patient_id);
ALTER TABLE visits
    ADD PRIMARY KEY (visit_id),
    ADD FOREIGN KEY (patient_id) REFERENCES patients,
    ADD FOREIGN KEY (diagnosis_code) REFERENCES diagnoses;
ALTER TABLE labs
    ADD PRIMARY KEY (lab_id),
    ADD FOREIGN KEY (patient_id) REFERENCES patients;
CREATE INDEX visits_patient_id_idx ON visits (patient_id);
CREATE INDEX visits_visit_date_idx ON visits (visit_date);
CREATE INDEX labs_patient_id_idx ON labs (patient_id);
