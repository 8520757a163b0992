"""Empirical privacy audit of pgshroud's private answers, end to end.

Whole queries go through a real pgshroud (in this process, with the real
planner, the audit policy of tests/dp_audit.py and an unlimited in-memory
ledger) to a real PostgreSQL holding two neighbouring databases: D (100
people, 350 claims) and D' = D plus one adversarial person with 1,000
claims of amounts far above the bounds or infinite, in exactly as many
wards as bounding keeps (so that all of them count). The session sets
`SET pgshroud.epsilon = 1` (the policy's default is 0.25; every charge the
ledger receives is checked to be 1). Each query is prepared once and
executed thousands of times in psycopg pipelines; every execution is a
release of its own, charged and noised on its own. tests/dp_audit.py
explains how the lower bound eps_lb on the achieved epsilon is computed
(events chosen on one half of the answers, Clopper-Pearson bounds on the
other half).

False alarms (a correct pgshroud failing). Each audit tests exactly one
event, chosen on the selection half, on the test half, with two one-sided
Clopper-Pearson bounds at ALPHA/2 each; the delta audit tests one
Clopper-Pearson bound at ALPHA. If pgshroud's answers are (epsilon,
delta)-DP, each of the six tests of the real mechanism fails with
probability at most ALPHA = 2.5e-4, and one of the six at most 1.5e-3
(union bound). The noise comes from the operating system's CSPRNG, so runs
differ; these rates are over runs.

Misses (a broken mechanism passing). Noise calibrated to half of every
sensitivity spends epsilon 2 where 1 is claimed; its audits must show
eps_lb > 1. bench/audit/run.py --dataset small --simulate 100 repeats
these audits offline on answers drawn by the same release code (seeded),
to estimate how often they would miss; see bench/README.md for the
figures. A release whose rows keep PostgreSQL's order must show eps_lb > 1
too, in the rows' positions (one of the audit's statistics).

The exact check of bounding (no noise involved, so no false alarms) runs
each query's bounded SQL directly on D, D' and a wilder D'' (one person
writing to every ward and to wards outside the public domain, with NaN,
infinities, huge negatives and NULLs) and compares the raw per-group totals.

Time: about 4 minutes for the module on the project's 2-core development
machine, most of it the average's 64,000 queries (bench/README.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from fractions import Fraction

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pgshroud.proxy.ops.catalog import read_catalog
from pgshroud.rewriter.private import bounding
from pgshroud.rewriter.private.bounding import LISTS
from tests import dp_audit as A

EPSILON = "1"
ALPHA = 2.5e-4  # per audit: the probability that a correct mechanism fails it
SAMPLES = A.CI_SAMPLES  # answers per database
DATABASES = {"d": "dp_audit_d", "d_prime": "dp_audit_d_prime", "wild": "dp_audit_wild"}
REPEATS = 20  # runs of each bounded query (bounding chooses groups at random)

# The exact bounding check: the audited queries and more shapes.
BOUNDED_SHAPES = tuple(q.sql for q in A.QUERIES) + (
    "SELECT count(amount) FROM claims",
    "SELECT count(DISTINCT person_id) FROM claims",
    "SELECT ward, count(DISTINCT person_id) FROM claims GROUP BY ward",
    "SELECT count(DISTINCT amount) FROM claims",
    "SELECT stddev(amount) FROM claims",
    "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY amount) FROM claims",
    "SELECT ward, count(*), sum(amount), avg(amount) FROM claims GROUP BY ward",
    "SELECT ward, max(amount) FROM claims GROUP BY ward",
    # A key without a public domain (partition selection); with two values,
    # so that D's people keep all their groups and D's totals are fixed.
    "SELECT CASE WHEN amount > 2 THEN 'high' ELSE 'low' END AS level, count(*), sum(amount) FROM claims GROUP BY 1",
    "SELECT upper(ward), count(*) FROM claims GROUP BY upper(ward)",
    "SELECT sum(amount) FILTER (WHERE ward = 'north') FROM claims",
    "SELECT avg(amount * 2 + 1) FROM claims",
    "SELECT avg(n) FROM (SELECT person_id, count(*) AS n FROM claims GROUP BY person_id) AS per_person",
)


@pytest.fixture(scope="module")
def audit_databases(pg) -> dict[str, str]:
    A.create_audit_databases(lambda sql, dbname: pg.execute(sql, dbname=dbname), DATABASES)
    return DATABASES


@pytest.fixture(scope="module")
def policy():
    return A.audit_policy()


@pytest.fixture(scope="module")
def ledger() -> A.CountingLedger:
    return A.CountingLedger()


@pytest.fixture(scope="module")
def audit_proxy(pg, audit_databases, policy, ledger) -> Iterator[object]:
    proxy = A.start_audit_proxy(make_conninfo(pg.dsn(), sslmode="disable"), policy,
                                pg.admin_dsn(audit_databases["d"]), ledger)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def catalog(pg, audit_databases):
    return asyncio.run(read_catalog(pg.admin_dsn(audit_databases["d"])))


def run_audit(proxy, ledger: A.CountingLedger, query: A.AuditQuery) -> A.AuditResult:
    n = SAMPLES[query.name]
    before = len(ledger.charges)
    timer = A.Timer()
    d = A.sample(A.proxy_dsn(proxy, A.ROLE, DATABASES["d"]), query, n, EPSILON)
    d_prime = A.sample(A.proxy_dsn(proxy, A.ROLE, DATABASES["d_prime"]), query, n, EPSILON)
    charged = ledger.charges[before:]
    assert len(charged) == 2 * n
    assert {cost.epsilon for _, cost in charged} == {float(EPSILON)}, "SET pgshroud.epsilon was not applied"
    result = A.audit(d, d_prime, query.focus or (), alpha=ALPHA)
    print(f"\n{query.name}: eps_lb {result.epsilon_lb:.3f} (claimed {EPSILON}) on {result.event.describe()}; "
          f"P[S|D] {result.p_d:.4f}, P[S|D'] {result.p_d_prime:.4f}, {result.n_test} test answers per database; "
          f"{2 * n} queries in {timer.seconds:.1f} s")
    return result


QUERY_IDS = [q.name.replace(" ", "_") for q in A.QUERIES]


@pytest.mark.parametrize("query", A.QUERIES, ids=QUERY_IDS)
def test_real_mechanism_passes_the_audit(audit_proxy, ledger, query):
    """pgshroud's mechanism shows no privacy loss above the claimed epsilon.
    False alarm: at most ALPHA = 2.5e-4 per query, 1e-3 for the four."""
    result = run_audit(audit_proxy, ledger, query)
    assert result.epsilon_lb <= float(EPSILON), (
        f"PRIVACY VIOLATION? {query.sql}: eps_lb {result.epsilon_lb:.3f} > claimed {EPSILON} "
        f"on {result.event.describe()} (P[S|D] {result.p_d:.4f}, P[S|D'] {result.p_d_prime:.4f})")


@pytest.mark.parametrize("query", A.QUERIES, ids=QUERY_IDS)
def test_broken_mechanism_is_caught(audit_proxy, ledger, query, monkeypatch, policy, catalog):
    """Noise calibrated to half of every sensitivity (so epsilon 2 is spent
    where 1 is claimed) shows an eps_lb above the claimed epsilon. A correct
    mechanism would show it with probability at most ALPHA = 2.5e-4."""
    real = A.private_release(query.sql, policy, catalog, EPSILON).spec
    sensitivity = bounding.Measurement.sensitivity
    monkeypatch.setattr(bounding.Measurement, "sensitivity", lambda self, max_rows: sensitivity(self, max_rows) / 2)
    broken = A.private_release(query.sql, policy, catalog, EPSILON).spec
    for measurement, noise in broken.noises.items():
        assert noise.scale == real.noises[measurement].scale / 2
    result = run_audit(audit_proxy, ledger, query)
    assert result.epsilon_lb > float(EPSILON), (
        f"the audit missed a mechanism with half the noise: {query.sql}: eps_lb {result.epsilon_lb:.3f} "
        f"on {result.event.describe()}")


# --- row order ----------------------------------------------------------------


def test_row_order_shows_nothing(audit_proxy, ledger):
    """The adversary's only rows, grouped by ward: the answer's values and
    the rows' positions show no loss above epsilon. False alarm: at most
    ALPHA = 2.5e-4."""
    result = run_audit(audit_proxy, ledger, A.ORDER_QUERY)
    assert result.epsilon_lb <= float(EPSILON), (
        f"PRIVACY VIOLATION? {A.ORDER_QUERY.sql}: eps_lb {result.epsilon_lb:.3f} on {result.event.describe()}")


def test_postgresql_row_order_is_caught(audit_proxy, ledger, monkeypatch):
    """A build whose rows leave in PostgreSQL's order (the groups with data
    first) is caught by the rows' positions: north is first on D' and
    second on D every time, so the bound is far above epsilon."""
    from pgshroud.rewriter.private import release
    monkeypatch.setattr(release, "key_order", lambda key_text, types: 0)
    result = run_audit(audit_proxy, ledger, A.ORDER_QUERY)
    assert result.event.statistic.endswith(A.ROW), result.event.describe()
    assert result.epsilon_lb > float(EPSILON), (
        f"the audit missed PostgreSQL's row order: eps_lb {result.epsilon_lb:.3f} on {result.event.describe()}")


# --- partition selection: delta --------------------------------------------

DELTA_SAMPLES = 8000


@pytest.fixture(scope="module")
def delta(policy, catalog) -> str:
    """About 0.04: large, so that it shows in a few thousand answers, and
    where the noisy threshold leaves little slack (A.tight_delta)."""
    return A.tight_delta(A.private_release(A.PARTITION_QUERY.sql, policy, catalog, EPSILON))


@pytest.fixture(scope="module")
def groups_of_d(pg, audit_databases) -> set[str]:
    with psycopg.connect(pg.admin_dsn(audit_databases["d"])) as conn:
        return A.groups_in(conn, "amount FROM claims")


def run_delta_audit(proxy, ledger: A.CountingLedger, delta: str, groups_of_d: set[str]) -> A.DeltaResult:
    query = A.PARTITION_QUERY
    before = len(ledger.charges)
    timer = A.Timer()
    on_d = A.sample(A.proxy_dsn(proxy, A.ROLE, DATABASES["d"]), query, 500, EPSILON, delta=delta)
    assert A.delta_audit(on_d, groups_of_d, ALPHA).shown == 0
    answers = A.sample(A.proxy_dsn(proxy, A.ROLE, DATABASES["d_prime"]), query, DELTA_SAMPLES, EPSILON, delta=delta)
    assert {cost for _, cost in ledger.charges[before:]} == {A.Cost(float(EPSILON), float(delta))}
    result = A.delta_audit(answers, groups_of_d, ALPHA)
    print(f"\n{query.name}: the adversary's own groups shown in {result.shown} of {result.n} answers on D' "
          f"({result.rate:.4f}; Clopper-Pearson [{result.lower:.4f}, {result.upper:.4f}]), delta {delta}; "
          f"{DELTA_SAMPLES + 500} queries in {timer.seconds:.1f} s")
    return result


def test_partition_selection_shows_a_one_person_group_at_most_delta(audit_proxy, ledger, delta, groups_of_d):
    """Groups that only the adversary creates (as many as bounding keeps)
    are never on D, so together they may show on D' with probability at
    most delta. False alarm: the lower bound exceeds delta with probability
    at most ALPHA = 2.5e-4."""
    result = run_delta_audit(audit_proxy, ledger, delta, groups_of_d)
    assert result.lower <= float(delta), f"PRIVACY VIOLATION? shown with probability >= {result.lower:.4f}"


def test_partition_selection_that_forgets_max_groups_is_caught(audit_proxy, ledger, delta, groups_of_d, monkeypatch):
    """A threshold that allows delta to each of the adversary's two groups
    instead of delta / 2 shows one of them with probability about 2 delta;
    the audit sees it (the expected lower bound is 1.7 delta, 9 standard
    deviations above delta)."""
    from pgshroud.rewriter import partition_selection
    threshold_for = partition_selection.threshold_for
    monkeypatch.setattr(partition_selection, "threshold_for", lambda mechanism, d, k: threshold_for(mechanism, d, 1))
    result = run_delta_audit(audit_proxy, ledger, delta, groups_of_d)
    assert result.lower > float(delta)


# --- bounding, exactly ----------------------------------------------------


def bounding_violations(release, before: dict, after: dict) -> list[str]:
    """How the raw totals with one more person (`after`) exceed what the
    release's noise is calibrated for, relative to `before`: each
    measurement's move in L1 over all groups (and buckets), and for the
    count of people per group, a move of 0 or 1, in at most max_groups
    groups when it is released."""
    spec = release.spec
    query, found = spec.query, spec.found
    problems: list[str] = []
    moved = [Fraction(0)] * len(found)
    people_moved: set[tuple] = set()
    for name in set(before) | set(after):
        kind, key = name[0], name[2:]
        if kind < 0:
            continue  # the values of a public domain
        old = before.get(name, (Fraction(0),) * len(found))
        new = after.get(name, (Fraction(0),) * len(found))
        delta = [b - a for a, b in zip(old, new)]
        if kind > 0:  # a histogram bucket's or a distinct count's row: its count is the first column
            moved[kind] += abs(delta[0])
            continue
        if not 0 <= delta[0] <= 1:
            problems.append(f"group {key}: the count of people moved by {delta[0]}")
        if delta[0]:
            people_moved.add(key)
        for i, measurement in enumerate(found[1:], start=1):
            if measurement.kind not in LISTS:
                moved[i] += abs(delta[i])
    if found[0] in spec.noises and len(people_moved) > query.max_groups:
        problems.append(f"the count of people moved in {len(people_moved)} groups, at most {query.max_groups} may")
    for i, measurement in enumerate(found[1:], start=1):
        calibrated = spec.noises[measurement].sensitivity
        if moved[i] > calibrated:
            problems.append(f"{measurement.kind}: moved by {moved[i]} over all groups, "
                            f"noise calibrated for {calibrated}")
    return problems


def test_bounding_holds_on_adversarial_data(pg, audit_databases, policy, catalog):
    """One person with a thousand (D') or five thousand (D'') claims, extreme
    amounts and groups outside the public domain moves each raw total, in
    L1 over all groups, by at most what its noise is calibrated for, and the
    count of people by at most one in each of at most max_groups groups;
    D's own totals are the same on every run. Exact: no noise, no false
    alarms."""
    connections = {which: psycopg.connect(pg.admin_dsn(name), autocommit=True)
                   for which, name in audit_databases.items()}
    try:
        for sql in BOUNDED_SHAPES:
            release = A.private_release(sql, policy, catalog, EPSILON)
            base = A.bounded_totals(connections["d"], release)
            for _ in range(REPEATS):
                assert A.bounded_totals(connections["d"], release) == base, sql
                for which in ("d_prime", "wild"):
                    other = A.bounded_totals(connections[which], release)
                    problems = bounding_violations(release, base, other)
                    assert not problems, f"{sql} on {which}: {problems}"
    finally:
        for conn in connections.values():
            conn.close()


def test_the_adversary_reaches_the_bounds(pg, audit_databases, policy, catalog, delta):
    """The audit's adversary is a worst case: it moves each audited total by
    exactly its sensitivity, so the audit looks at the largest shift; and
    grouped by amount it is counted in max_groups groups of its own."""
    with psycopg.connect(pg.admin_dsn(audit_databases["d"])) as d, \
            psycopg.connect(pg.admin_dsn(audit_databases["d_prime"])) as d_prime:
        for query in A.QUERIES:
            release = A.private_release(query.sql, policy, catalog, EPSILON)
            spec = release.spec
            before, after = A.bounded_totals(d, release), A.bounded_totals(d_prime, release)
            for i, measurement in enumerate(spec.found[1:], start=1):
                moved = sum(abs(after[k][i] - before[k][i]) for k in after if k[0] == 0)
                assert moved == spec.noises[measurement].sensitivity, (query.sql, measurement)
        release = A.private_release(A.PARTITION_QUERY.sql, policy, catalog, EPSILON, delta=delta)
        for _ in range(REPEATS):
            before, after = A.bounded_totals(d, release), A.bounded_totals(d_prime, release)
            own = [after[k][0] for k in set(after) - set(before) if k[0] == 0]
            assert own == [1] * release.spec.query.max_groups


def test_the_bounding_check_catches_a_broken_bound(pg, audit_databases, policy, catalog, monkeypatch):
    """The check above is not vacuous: with every sensitivity halved, the
    adversary of D' moves the totals by more than the noise is calibrated for."""
    sensitivity = bounding.Measurement.sensitivity
    monkeypatch.setattr(bounding.Measurement, "sensitivity", lambda self, max_rows: sensitivity(self, max_rows) / 2)
    with psycopg.connect(pg.admin_dsn(audit_databases["d"])) as d, \
            psycopg.connect(pg.admin_dsn(audit_databases["d_prime"])) as d_prime:
        for query in A.QUERIES:
            release = A.private_release(query.sql, policy, catalog, EPSILON)
            assert bounding_violations(release, A.bounded_totals(d, release), A.bounded_totals(d_prime, release))
