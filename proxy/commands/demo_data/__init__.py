"""A deterministic synthetic healthcare dataset for the demo and benchmarks.

Four tables: `patients` (direct identifiers and quasi-identifiers),
`visits` (heavy-tailed: most patients have a few, some have hundreds; about
ten on average), `labs`, and the public reference table `diagnoses`. The
rows depend only on the seed and the patient count: every column is drawn
with numpy from `default_rng(seed)` and streamed to the server with text
COPY in chunks, and keys and indexes are built after the load.

Measured load time: 100,000 patients (1,031,308 visits, 307,930 labs with
the default seed) load in about 6 s, including keys, indexes and ANALYZE
(six runs: 5.7 to 7.1 s, a first run on a cold machine 10.4 s; about 2.7 s
is spent generating the COPY text, 2-2.5 s building keys, indexes and ANALYZE).
Measured on a 2-core Linux machine with PostgreSQL 15, into a fresh
`ThrowawayCluster` over its unix socket, timing the call alone:

    with ThrowawayCluster() as cluster:
        started = time.perf_counter()
        load_demo_dataset(cluster.admin_dsn(), patients=100_000)
        print(time.perf_counter() - started)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import TextIO

import numpy as np
import psycopg

Progress = Callable[[str, int, int], None]

# code, description, department, relative frequency, sex it applies to
DIAGNOSES: tuple[tuple[str, str, str, float, str | None], ...] = (
    ("I10", "Essential (primary) hypertension", "Primary Care", 9.0, None),
    ("E11.9", "Type 2 diabetes mellitus without complications", "Endocrinology", 6.0, None),
    ("E78.5", "Hyperlipidemia, unspecified", "Primary Care", 5.0, None),
    ("J06.9", "Acute upper respiratory infection, unspecified", "Primary Care", 7.0, None),
    ("Z00.00", "Encounter for general adult medical examination without abnormal findings",
     "Primary Care", 8.0, None),
    ("Z23", "Encounter for immunization", "Primary Care", 4.0, None),
    ("M54.5", "Low back pain", "Orthopedics", 4.0, None),
    ("M17.11", "Unilateral primary osteoarthritis, right knee", "Orthopedics", 1.5, None),
    ("M81.0", "Age-related osteoporosis without current pathological fracture", "Orthopedics", 1.0, None),
    ("S93.401A", "Sprain of unspecified ligament of right ankle, initial encounter", "Emergency", 1.5, None),
    ("S06.0X0A", "Concussion without loss of consciousness, initial encounter", "Emergency", 0.8, None),
    ("R07.9", "Chest pain, unspecified", "Emergency", 2.0, None),
    ("R10.9", "Unspecified abdominal pain", "Emergency", 2.0, None),
    ("R51.9", "Headache, unspecified", "Neurology", 1.5, None),
    ("G43.909", "Migraine, unspecified, not intractable, without status migrainosus", "Neurology", 1.2, None),
    ("G40.909", "Epilepsy, unspecified, not intractable, without status epilepticus", "Neurology", 0.5, None),
    ("J45.909", "Unspecified asthma, uncomplicated", "Pulmonology", 2.5, None),
    ("J44.9", "Chronic obstructive pulmonary disease, unspecified", "Pulmonology", 1.5, None),
    ("J18.9", "Pneumonia, unspecified organism", "Pulmonology", 1.0, None),
    ("U07.1", "COVID-19", "Infectious Disease", 1.5, None),
    ("A09", "Infectious gastroenteritis and colitis, unspecified", "Gastroenterology", 1.0, None),
    ("B20", "Human immunodeficiency virus [HIV] disease", "Infectious Disease", 0.3, None),
    ("K21.9", "Gastro-esophageal reflux disease without esophagitis", "Gastroenterology", 2.5, None),
    ("K35.80", "Unspecified acute appendicitis", "Surgery", 0.4, None),
    ("K80.20", "Calculus of gallbladder without cholecystitis without obstruction", "Surgery", 0.5, None),
    ("N39.0", "Urinary tract infection, site not specified", "Primary Care", 2.0, None),
    ("N18.30", "Chronic kidney disease, stage 3 unspecified", "Nephrology", 0.8, None),
    ("I25.10", "Atherosclerotic heart disease of native coronary artery without angina pectoris",
     "Cardiology", 1.5, None),
    ("I48.91", "Unspecified atrial fibrillation", "Cardiology", 1.2, None),
    ("I50.9", "Heart failure, unspecified", "Cardiology", 0.8, None),
    ("E66.9", "Obesity, unspecified", "Endocrinology", 2.0, None),
    ("E03.9", "Hypothyroidism, unspecified", "Endocrinology", 1.5, None),
    ("D64.9", "Anemia, unspecified", "Primary Care", 1.0, None),
    ("F32.9", "Major depressive disorder, single episode, unspecified", "Psychiatry", 2.5, None),
    ("F41.1", "Generalized anxiety disorder", "Psychiatry", 2.5, None),
    ("F10.20", "Alcohol dependence, uncomplicated", "Psychiatry", 0.6, None),
    ("F17.210", "Nicotine dependence, cigarettes, uncomplicated", "Primary Care", 1.5, None),
    ("L40.0", "Psoriasis vulgaris", "Dermatology", 0.6, None),
    ("H25.9", "Unspecified age-related cataract", "Ophthalmology", 0.8, None),
    ("H52.4", "Presbyopia", "Ophthalmology", 1.0, None),
    ("C34.90", "Malignant neoplasm of unspecified part of unspecified bronchus or lung", "Oncology", 0.3, None),
    ("C50.919", "Malignant neoplasm of unspecified site of unspecified female breast", "Oncology", 0.4, "F"),
    ("C61", "Malignant neoplasm of prostate", "Oncology", 0.4, "M"),
    ("Z34.90", "Encounter for supervision of normal pregnancy, unspecified, unspecified trimester",
     "Obstetrics", 1.5, "F"),
    ("O80", "Encounter for full-term uncomplicated delivery", "Obstetrics", 0.4, "F"),
)

# department: median cost of a visit in dollars, share of visits with a stay
DEPARTMENTS: dict[str, tuple[float, float]] = {
    "Primary Care": (160.0, 0.0),
    "Endocrinology": (240.0, 0.01),
    "Orthopedics": (420.0, 0.05),
    "Emergency": (1400.0, 0.2),
    "Neurology": (380.0, 0.05),
    "Pulmonology": (350.0, 0.12),
    "Infectious Disease": (300.0, 0.1),
    "Gastroenterology": (330.0, 0.05),
    "Surgery": (9000.0, 0.8),
    "Nephrology": (400.0, 0.08),
    "Cardiology": (900.0, 0.15),
    "Psychiatry": (220.0, 0.03),
    "Dermatology": (190.0, 0.0),
    "Ophthalmology": (260.0, 0.0),
    "Oncology": (4500.0, 0.3),
    "Obstetrics": (600.0, 0.25),
}
COST_PER_NIGHT = 2600.0

# test, unit, mean, standard deviation (rounded to two decimals, floored at 5% of the mean)
LAB_TESTS: tuple[tuple[str, str, float, float], ...] = (
    ("HbA1c", "%", 5.9, 1.1),
    ("Glucose", "mg/dL", 104.0, 28.0),
    ("LDL Cholesterol", "mg/dL", 112.0, 34.0),
    ("HDL Cholesterol", "mg/dL", 52.0, 14.0),
    ("Triglycerides", "mg/dL", 140.0, 60.0),
    ("Creatinine", "mg/dL", 0.95, 0.28),
    ("Hemoglobin", "g/dL", 13.8, 1.6),
    ("White Blood Cells", "10^3/uL", 7.2, 2.0),
    ("Platelets", "10^3/uL", 250.0, 60.0),
    ("Sodium", "mmol/L", 139.5, 2.8),
    ("Potassium", "mmol/L", 4.2, 0.4),
    ("TSH", "mIU/L", 2.1, 1.2),
    ("ALT", "U/L", 26.0, 13.0),
    ("Vitamin D", "ng/mL", 29.0, 10.0),
)

# city, state, zip prefix, area code; listed roughly from most to least populous
CITIES: tuple[tuple[str, str, str, str], ...] = (
    ("Boston", "MA", "021", "617"), ("Seattle", "WA", "981", "206"), ("Denver", "CO", "802", "303"),
    ("Nashville", "TN", "372", "615"), ("Austin", "TX", "787", "512"), ("Portland", "OR", "972", "503"),
    ("Columbus", "OH", "432", "614"), ("Louisville", "KY", "402", "502"), ("Pittsburgh", "PA", "152", "412"),
    ("Sacramento", "CA", "958", "916"), ("Albuquerque", "NM", "871", "505"), ("Tucson", "AZ", "857", "520"),
    ("Fresno", "CA", "937", "559"), ("Raleigh", "NC", "276", "919"), ("Omaha", "NE", "681", "402"),
    ("Tulsa", "OK", "741", "918"), ("Honolulu", "HI", "968", "808"), ("Richmond", "VA", "232", "804"),
    ("Salt Lake City", "UT", "841", "801"), ("Boise", "ID", "837", "208"), ("Spokane", "WA", "992", "509"),
    ("Des Moines", "IA", "503", "515"), ("Madison", "WI", "537", "608"), ("Anchorage", "AK", "995", "907"),
    ("Providence", "RI", "029", "401"), ("Savannah", "GA", "314", "912"), ("Charleston", "SC", "294", "843"),
    ("Lansing", "MI", "489", "517"), ("Springfield", "IL", "627", "217"), ("Burlington", "VT", "054", "802"),
)

FEMALE_NAMES = (
    "Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica", "Sarah", "Karen",
    "Lisa", "Nancy", "Betty", "Sandra", "Margaret", "Ashley", "Kimberly", "Emily", "Donna", "Michelle",
    "Carol", "Amanda", "Melissa", "Deborah", "Stephanie", "Rebecca", "Laura", "Helen", "Sharon", "Cynthia",
    "Amy", "Angela", "Anna", "Maria", "Olivia", "Emma", "Sofia", "Grace", "Chloe", "Zoe",
)
MALE_NAMES = (
    "James", "Robert", "John", "Michael", "David", "William", "Richard", "Joseph", "Thomas", "Charles",
    "Christopher", "Daniel", "Matthew", "Anthony", "Mark", "Donald", "Steven", "Paul", "Andrew", "Joshua",
    "Kenneth", "Kevin", "Brian", "George", "Timothy", "Ronald", "Jason", "Edward", "Jeffrey", "Ryan",
    "Jacob", "Gary", "Nicholas", "Eric", "Jonathan", "Luis", "Carlos", "Wei", "Omar", "Liam",
)
LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
    "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson",
    "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores",
    "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts",
    "Chen", "Kim", "Patel", "Murphy", "O'Brien", "Cook", "Rogers", "Morgan", "Cooper", "Peterson",
)
EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com")

# Visits per patient: 1 + a Lomax (Pareto II) draw, capped; this shape and
# scale give a median of 4, a mean of about 10 and a few patients at the cap.
VISITS_SHAPE, VISITS_SCALE, VISITS_CAP = 1.5, 5.4, 500
# Labs per patient are Poisson around a base plus a share of the visits.
LABS_BASE, LABS_PER_VISIT = 0.5, 0.25

FIRST_DAY = np.datetime64("2016-01-01")
LAST_DAY = np.datetime64("2025-12-31")
OLDEST_BIRTH = np.datetime64("1920-01-01")

# Patients per generated chunk: about 100k visits, a few MB of COPY text.
CHUNK_PATIENTS = 10_000


@dataclass(frozen=True, slots=True)
class _Patients:
    """Per-patient draws the other tables depend on."""

    female: np.ndarray  # bool
    birth_day: np.ndarray  # days since OLDEST_BIRTH
    visits: np.ndarray  # visit count
    labs: np.ndarray  # lab count

    def first_event_day(self) -> np.ndarray:
        """Nobody is seen before the dataset starts or before being born."""
        first: np.ndarray = np.maximum(self.birth_day, (FIRST_DAY - OLDEST_BIRTH).astype(int))
        return first


def _sql(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def _day_strings() -> list[str]:
    """ISO text of every day from OLDEST_BIRTH to LAST_DAY, indexed by day number."""
    return np.arange(OLDEST_BIRTH, LAST_DAY + 1, dtype="datetime64[D]").astype(str).tolist()


def _draw_patients(rng: np.random.Generator, count: int) -> tuple[_Patients, list[str]]:
    female = rng.random(count) < 0.51
    age_years = np.clip(rng.normal(46.0, 21.0, count), 0.0, 99.0)
    last_day = (LAST_DAY - OLDEST_BIRTH).astype(int)
    birth_day = (last_day - age_years * 365.25).astype(np.int64)
    visits = np.minimum(1 + np.floor(rng.pareto(VISITS_SHAPE, count) * VISITS_SCALE), VISITS_CAP).astype(np.int64)
    labs = rng.poisson(LABS_BASE + LABS_PER_VISIT * visits)

    first = np.where(female, rng.integers(0, len(FEMALE_NAMES), count), rng.integers(0, len(MALE_NAMES), count))
    last = rng.integers(0, len(LAST_NAMES), count)
    city_weights = 1.0 / np.arange(1, len(CITIES) + 1) ** 0.6
    city = rng.choice(len(CITIES), size=count, p=city_weights / city_weights.sum())
    zip_suffix = rng.integers(0, 100, count)
    # Distinct SSNs: areas 001-899 without 666, groups 01-99, serials 0001-9999.
    ssn_index = rng.choice(898 * 99 * 9999, size=count, replace=False)
    area = ssn_index // (99 * 9999) + 1
    area += area >= 666
    group = ssn_index // 9999 % 99 + 1
    serial = ssn_index % 9999 + 1
    exchange = rng.integers(200, 1000, count)
    line = rng.integers(0, 10_000, count)
    email_number = rng.permutation(count) + 1
    domain = rng.integers(0, len(EMAIL_DOMAINS), count)

    days = _day_strings()
    rows = []
    columns = (female, first, last, city, area, group, serial, exchange, line, email_number, domain,
               birth_day, zip_suffix)
    for i, (is_female, first_i, last_i, city_i, area_i, group_i, serial_i, exchange_i, line_i, number,
            domain_i, birth_i, zip_i) in enumerate(zip(*(column.tolist() for column in columns)), start=1):
        given = (FEMALE_NAMES if is_female else MALE_NAMES)[first_i]
        family = LAST_NAMES[last_i]
        city_name, state, zip_prefix, area_code = CITIES[city_i]
        handle = f"{given}.{family}".lower().replace("'", "")
        rows.append(
            f"{i}\t{given} {family}\t{area_i:03d}-{group_i:02d}-{serial_i:04d}\t"
            f"{handle}{number}@{EMAIL_DOMAINS[domain_i]}\t({area_code}) {exchange_i}-{line_i:04d}\t"
            f"{days[birth_i]}\t{'F' if is_female else 'M'}\t{zip_prefix}{zip_i:02d}\t{city_name}\t{state}\n"
        )
    return _Patients(female, birth_day, visits, labs), rows


def _event_chunks(
    rng: np.random.Generator, people: _Patients, per_patient: np.ndarray
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Per chunk of patients: the first row id, then each row's patient id and day."""
    end_day = (LAST_DAY - OLDEST_BIRTH).astype(int)
    first_day = people.first_event_day()
    next_id = 1
    for start in range(0, len(per_patient), CHUNK_PATIENTS):
        block = slice(start, start + CHUNK_PATIENTS)
        counts = per_patient[block]
        patient = np.repeat(np.arange(start + 1, start + 1 + len(counts)), counts)
        earliest = np.repeat(first_day[block], counts)
        day = earliest + np.floor(rng.random(len(patient)) * (end_day - earliest + 1)).astype(np.int64)
        yield next_id, patient, day
        next_id += len(patient)


def _visit_chunks(rng: np.random.Generator, people: _Patients) -> Iterator[tuple[int, str]]:
    codes = [d[0] for d in DIAGNOSES]
    departments = list(DEPARTMENTS)
    code_department = np.array([departments.index(d[2]) for d in DIAGNOSES])
    weights = np.array([d[3] for d in DIAGNOSES])
    male_only = np.array([d[4] == "M" for d in DIAGNOSES])
    female_only = np.array([d[4] == "F" for d in DIAGNOSES])
    median_cost = np.array([DEPARTMENTS[d][0] for d in departments])
    stay_share = np.array([DEPARTMENTS[d][1] for d in departments])
    days = _day_strings()

    for first_id, patient, day in _event_chunks(rng, people, people.visits):
        n = len(patient)
        code = rng.choice(len(codes), size=n, p=weights / weights.sum())
        female = people.female[patient - 1]
        # Sex-specific codes given to the other sex become the most common code.
        code[(female & male_only[code]) | (~female & female_only[code])] = 0
        department = code_department[code]
        stay = np.where(rng.random(n) < stay_share[department], rng.geometric(0.35, n), 0)
        cost = median_cost[department] * rng.lognormal(0.0, 0.6, n) + stay * COST_PER_NIGHT
        columns = (patient, day, code, department, cost, stay)
        yield n, "".join(
            f"{first_id + k}\t{p}\t{days[d]}\t{codes[c]}\t{departments[dep]}\t{v:.2f}\t{s}\n"
            for k, (p, d, c, dep, v, s) in enumerate(zip(*(column.tolist() for column in columns)))
        )


def _lab_chunks(rng: np.random.Generator, people: _Patients) -> Iterator[tuple[int, str]]:
    tests = [t[0] for t in LAB_TESTS]
    units = [t[1] for t in LAB_TESTS]
    mean = np.array([t[2] for t in LAB_TESTS])
    spread = np.array([t[3] for t in LAB_TESTS])
    days = _day_strings()

    for first_id, patient, day in _event_chunks(rng, people, people.labs):
        n = len(patient)
        second = rng.integers(7 * 3600, 19 * 3600, n)  # during opening hours, UTC
        test = rng.integers(0, len(tests), n)
        value = np.maximum(rng.normal(mean[test], spread[test]), 0.05 * mean[test])
        columns = (patient, day, second, test, value)
        yield n, "".join(
            f"{first_id + k}\t{p}\t{tests[t]}\t{v:.2f}\t"
            f"{days[d]} {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}+00\t{units[t]}\n"
            for k, (p, d, s, t, v) in enumerate(zip(*(column.tolist() for column in columns)))
        )


def _copy(
    cursor: psycopg.Cursor,
    table: str,
    chunks: Iterator[tuple[int, str]],
    total: int,
    progress: Progress | None,
) -> int:
    done = 0
    if progress:
        progress(table, done, total)
    # FREEZE: the table was created in this transaction, so the rows can be
    # written frozen and need no hint-bit rewrite or vacuum afterwards.
    with cursor.copy(f"COPY {table} FROM STDIN WITH (FREEZE)") as copy:
        for rows, text in chunks:
            copy.write(text)
            done += rows
            if progress:
                progress(table, done, total)
    return done


def load_demo_dataset(
    conninfo: str,
    *,
    patients: int = 20_000,
    seed: int = 7,
    progress: Progress | None = None,
) -> dict[str, int]:
    """(Re)create the demo tables in the database at `conninfo` and fill them.

    Returns the row count of each table. `progress(table, done, total)` is
    called as rows are sent.
    """
    if patients < 1:
        raise ValueError("the demo dataset needs at least one patient")
    patient_rng, visit_rng, lab_rng = np.random.default_rng(seed).spawn(3)
    people, patient_rows = _draw_patients(patient_rng, patients)
    diagnosis_rows = "".join(f"{code}\t{description}\n" for code, description, *_ in DIAGNOSES)
    patient_chunks = (
        (min(CHUNK_PATIENTS, patients - i), "".join(patient_rows[i:i + CHUNK_PATIENTS]))
        for i in range(0, patients, CHUNK_PATIENTS)
    )

    counts: dict[str, int] = {}
    with psycopg.connect(conninfo) as conn:
        with conn.transaction(), conn.cursor() as cursor:
            cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
            cursor.execute(_sql("schema.sql"))
            counts["diagnoses"] = _copy(cursor, "diagnoses", iter([(len(DIAGNOSES), diagnosis_rows)]),
                                        len(DIAGNOSES), progress)
            counts["patients"] = _copy(cursor, "patients", patient_chunks, patients, progress)
            counts["visits"] = _copy(cursor, "visits", _visit_chunks(visit_rng, people),
                                     int(people.visits.sum()), progress)
            counts["labs"] = _copy(cursor, "labs", _lab_chunks(lab_rng, people), int(people.labs.sum()), progress)
            cursor.execute(_sql("keys.sql"))
        conn.execute("ANALYZE diagnoses, patients, visits, labs")
    return counts


class TerminalProgress:
    """A progress bar per table on stderr; a plain line per table when not a TTY."""

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.interactive = self.stream.isatty()
        self._finished: set[str] = set()

    def __call__(self, table: str, done: int, total: int) -> None:
        if table in self._finished:
            return
        finished = done >= total
        if self.interactive:
            filled = self.width * done // total if total else self.width
            bar = "#" * filled + "." * (self.width - filled)
            self.stream.write(f"\r  {table:<10} [{bar}] {done:>10,} / {total:,} rows")
            if finished:
                self.stream.write("\n")
        elif finished:
            self.stream.write(f"  {table}: {total:,} rows\n")
        if finished:
            self._finished.add(table)
        self.stream.flush()
