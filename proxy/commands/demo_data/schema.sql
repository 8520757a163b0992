-- Synthetic healthcare dataset for the pgshroud demo. Keys and indexes are
-- added by keys.sql once the rows are loaded.
DROP TABLE IF EXISTS labs, visits, patients, diagnoses CASCADE;

-- Public reference data: ICD-10 codes and their descriptions.
CREATE TABLE diagnoses (
    code text NOT NULL,
    description text NOT NULL
);

CREATE TABLE patients (
    patient_id integer NOT NULL,
    name text NOT NULL,
    ssn text NOT NULL,
    email text NOT NULL,
    phone text NOT NULL,
    birth_date date NOT NULL,
    sex text NOT NULL CHECK (sex IN ('F', 'M')),
    zip text NOT NULL,
    city text NOT NULL,
    state text NOT NULL
);

CREATE TABLE visits (
    visit_id bigint NOT NULL,
    patient_id integer NOT NULL,
    visit_date date NOT NULL,
    diagnosis_code text NOT NULL,
    department text NOT NULL,
    cost numeric(10,2) NOT NULL,
    length_of_stay integer NOT NULL
);

CREATE TABLE labs (
    lab_id bigint NOT NULL,
    patient_id integer NOT NULL,
    test text NOT NULL,
    value numeric(10,2) NOT NULL,
    taken_at timestamptz NOT NULL,
    unit text NOT NULL
);
