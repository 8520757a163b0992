"""The audit log (proxy/ops/audit.py) and the Prometheus endpoint (proxy/ops/metrics.py).

The fingerprint strips every kind of literal before hashing; a masked SSN
written as a literal never reaches the log, in the simple or the extended
protocol, for raw, masked and aggregate roles; two statements that differ
only in their literals share a fingerprint; releases carry their cost and
whether they were charged; refusals their SQLSTATE and a reason with
nothing quoted from the statement. /metrics, scraped with urllib while
statements run, counts sessions, statements by kind, refusals by class,
planning and upstream latency, charges and the budget spent. `pgshroud
serve --audit-log --metrics` writes and serves them, and flushes on SIGTERM.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import urllib.error
import urllib.request

import asyncpg
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pgshroud.policies.model import Budgets, EpsilonDelta
from pgshroud.proxy.budget.ledger import PostgresLedger
from pgshroud.proxy.budget.protocol import Charged, SharedRelease
from pgshroud.proxy.ops.audit import AuditLog, Fingerprints, normalised_statements, scrub_reason
from pgshroud.proxy.ops.catalog import read_catalog
from pgshroud.proxy.ops.metrics import Histogram, Metrics, MetricsServer
from pgshroud.proxy.session.driver import SessionContext
from pgshroud.rewriter import plan
from pgshroud.rewriter.plans import Cost, Refuse
from tests.e2e.test_cli_serve import Serve, free_port
from tests.fix_proxy import RunningProxy, proxy_config

SSN = "123-45-6789"
OTHER_SSN = "987-65-4321"
GROUPED = "SELECT department, count(*) FROM visits GROUP BY department"


# ------------------------------------------------------------- fingerprints


@pytest.mark.parametrize("sql", [
    f"SELECT * FROM patients WHERE ssn = '{SSN}'",
    f"SELECT * FROM patients WHERE ssn = E'{SSN}\\''",
    f"SELECT * FROM patients WHERE ssn = $${SSN}$$",
    f"SELECT * FROM patients WHERE ssn = $tag${SSN}$tag$",
    f"SELECT * FROM patients WHERE ssn = U&'{SSN}'",
    f"SELECT * FROM patients WHERE ssn = N'{SSN}'",
    "SELECT * FROM patients WHERE ssn = '123-' '45-6789'",
    "SELECT * FROM patients WHERE ssn_number = 123456789",
    "SELECT * FROM patients WHERE ssn_number = 123_456_789",
    "SELECT * FROM patients WHERE ssn_number = 1.23456789e8",
    "SELECT * FROM patients WHERE ssn_number = 0x75BCD15",
    f"SELECT * FROM patients -- {SSN}\nWHERE true /* {SSN} /* nested */ */",
    f"SELECT * FROM patients WHERE ssn = '{SSN}'::text AND birth_date = DATE '1970-01-01'",
])
def test_normalised_text_holds_no_literal(sql):
    normalised = " ".join(normalised_statements(sql))
    for fragment in ("123", "456", "789", "45", "6789", "1970", "75bcd15"):
        assert fragment not in normalised.lower(), (sql, normalised)


def test_statements_differing_only_in_literals_share_a_fingerprint():
    prints = Fingerprints()
    same = [
        f"SELECT name FROM patients WHERE ssn = '{SSN}' AND age > 40",
        f"SELECT name FROM patients WHERE ssn = '{OTHER_SSN}' AND age > 7",
        f"select name from PATIENTS where SSN = E'{SSN}' and age > 1.5  -- a comment",
    ]
    assert len({prints.of(sql) for sql in same}) == 1
    # Parameters keep their numbers; other shapes differ.
    assert prints.of("SELECT $1, $2")[0] != prints.of("SELECT $2, $1")[0]
    assert prints.of("SELECT name FROM patients")[0] != prints.of("SELECT ssn FROM patients")[0]
    assert prints.of('SELECT "Name" FROM t')[0] != prints.of("SELECT name FROM t")[0]
    # A text of several statements: one fingerprint per statement, and one of the whole.
    whole, each = prints.of("SELECT 1; SELECT 'a;b'")
    assert each == (prints.of("SELECT 7")[0], prints.of("SELECT 'x'")[0]) and whole not in each
    assert prints.of("SELECT 'unterminated") is None


def test_refusal_reasons_lose_what_they_quote():
    assert scrub_reason(f"cannot tokenize the statement: Error tokenizing 'select '{SSN}'") == \
        "cannot tokenize the statement: Error tokenizing '?'"
    assert scrub_reason(f"ssn = '{SSN}' cannot be a source of \"t1\"") == "ssn = '?' cannot be a source of \"t1\""
    assert scrub_reason(f"ssn = '{SSN[:5]}") == "ssn = '?'"
    assert scrub_reason("x = 123456789 in v2") == "x = ? in v2"


def test_histogram_buckets_are_cumulative():
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 2.0):
        histogram.observe(value)
    assert histogram.lines("h") == ['h_bucket{le="0.1"} 2', 'h_bucket{le="1"} 3', 'h_bucket{le="+Inf"} 4',
                                    "h_sum 2.65", "h_count 4"]


# ------------------------------------------------------------ through a proxy


class SwitchableLedger(PostgresLedger):
    """The real ledger, or a refusal as an exhausted budget gives, at the flip of `exhausted`."""

    exhausted = False

    async def charge_standing(self, user: str, cost: Cost,
                              release: SharedRelease | None = None) -> Refuse | Charged:
        if self.exhausted:
            return Refuse("53400", "privacy budget exhausted: user \"analyst\" has epsilon 0.25 of 10000 left")
        return await super().charge_standing(user, cost, release)


@pytest.fixture(scope="module")
def watched(pg, health_db, health_policy, tmp_path_factory):
    """pgshroud with the healthcare policy, a ledger, an audit log and a metrics endpoint."""
    policy = dataclasses.replace(health_policy, budgets=Budgets(per_user=EpsilonDelta(10_000, 1.0)))
    catalog = asyncio.run(read_catalog(health_db))
    path = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    audit = AuditLog(str(path), flush_interval=0.05)
    metrics = Metrics()
    metrics.audit_counts = audit.counts
    ledger = SwitchableLedger(health_db, policy)
    shared = SessionContext(proxy_config(make_conninfo(pg.dsn(), sslmode="disable")), plan, ledger=ledger,
                            policy=policy, catalog=lambda: catalog, audit=audit, metrics=metrics)
    proxy = RunningProxy(shared)
    endpoint = MetricsServer(metrics, "127.0.0.1", 0)
    proxy.call(endpoint.start())
    proxy.audit, proxy.audit_path, proxy.metrics_url, proxy.ledger = audit, path, \
        f"http://127.0.0.1:{endpoint.port}/metrics", ledger
    yield proxy
    proxy.call(endpoint.close())
    proxy.stop()
    audit.close()


def records(proxy) -> list[dict]:
    proxy.audit.flush()
    return [json.loads(line) for line in proxy.audit_path.read_text().splitlines()]


def new_records(proxy, before: int) -> list[dict]:
    return records(proxy)[before:]


def scrape(url: str) -> dict[str, float]:
    """The samples of a scrape, checked line by line against the text format."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode("utf-8")
    samples, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            assert kind in ("counter", "gauge", "histogram"), line
            typed.add(name)
            continue
        if line.startswith("# HELP "):
            continue
        match = re.fullmatch(r'([a-z_]+)(\{[a-z_]+="[^"]*"(?:,[a-z_]+="[^"]*")*\})? (\S+)', line)
        assert match, line
        assert re.sub(r"_(bucket|sum|count)$", "", match.group(1)) in typed or match.group(1) in typed, line
        samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return samples


def test_ssn_literal_never_reaches_the_log_and_shapes_share_fingerprints(watched):
    before = len(records(watched))
    for user in ("admin", "clinician"):
        with psycopg.connect(watched.dsn(user, "health"), autocommit=True) as conn:
            for ssn in (SSN, OTHER_SSN):
                conn.execute(f"SELECT name, birth_date FROM patients WHERE ssn = '{ssn}'").fetchall()
            # The extended protocol: the SSN as a bind value, and inlined in a prepared statement.
            conn.execute("SELECT name FROM patients WHERE ssn = %s", (SSN,), prepare=True).fetchall()
            conn.execute(f"SELECT name FROM patients WHERE ssn = '{SSN}' AND true", prepare=True).fetchall()
    with psycopg.connect(watched.dsn("analyst", "health"), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"SELECT name FROM patients WHERE ssn = '{SSN}'")
        with pytest.raises(psycopg.Error):
            conn.execute(f"SELECT count(*) FROM patients WHERE ssn = '{SSN}")  # unterminated
    text = watched.audit_path.read_text()
    for fragment in (SSN, OTHER_SSN, "6789", "4321", "123-45"):
        assert fragment not in text
    lines = new_records(watched, before)
    assert all(set(line) >= {"time", "user", "role", "source", "kind", "fingerprint"} for line in lines)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"]) for line in lines)
    by_user = {user: [line for line in lines if line["user"] == user] for user in ("admin", "clinician", "analyst")}
    admin = by_user["admin"]
    assert [(line["source"], line["kind"]) for line in admin] == [
        ("query", "passthrough"), ("query", "passthrough"), ("parse", "passthrough"), ("parse", "passthrough")]
    assert admin[0]["role"] == "admin" and admin[0]["fingerprint"] == admin[1]["fingerprint"]
    clinician = by_user["clinician"]
    assert [(line["source"], line["kind"]) for line in clinician] == [
        ("query", "rewrite"), ("query", "rewrite"), ("parse", "rewrite"), ("parse", "rewrite")]
    assert clinician[0]["fingerprint"] == clinician[1]["fingerprint"] == admin[0]["fingerprint"]
    assert clinician[2]["fingerprint"] != clinician[3]["fingerprint"]
    refused, unlexable = by_user["analyst"]
    assert refused["kind"] == "refuse" and refused["sqlstate"] == "42501" and refused["reason"]
    assert unlexable["kind"] == "refuse" and unlexable["fingerprint"] is None and unlexable["sqlstate"] == "42601"


def test_releases_carry_their_cost_and_charge(watched, raw_health):
    before = len(records(watched))
    with psycopg.connect(watched.dsn("analyst", "health"), autocommit=True) as conn:
        conn.execute("SET pgshroud.epsilon = 0.25")
        conn.execute(GROUPED).fetchall()
        conn.execute(GROUPED.replace("count(*)", "count(*) AS n"), prepare=True).fetchall()
        watched.ledger.exhausted = True
        try:
            with pytest.raises(psycopg.errors.ConfigurationLimitExceeded):
                conn.execute(GROUPED)
            with pytest.raises(psycopg.errors.ConfigurationLimitExceeded):
                conn.execute(GROUPED.replace("count(*)", "count(*) AS n"), prepare=True)
        finally:
            watched.ledger.exhausted = False
    lines = new_records(watched, before)
    assert [(line["source"], line["kind"], line.get("charged")) for line in lines] == [
        ("query", "local", None),
        ("query", "release", True),
        ("parse", "release", None), ("execute", "release", True),
        ("query", "release", False),
        ("execute", "release", False),  # psycopg prepared it once: no second Parse
    ]
    costs = [line["cost"] for line in lines if line["kind"] == "release"]
    assert costs == [{"epsilon": 0.25, "delta": 0.0}] * 5
    assert lines[2]["fingerprint"] == lines[3]["fingerprint"] == lines[5]["fingerprint"]
    assert lines[1]["fingerprint"] == lines[4]["fingerprint"] != lines[2]["fingerprint"]
    assert lines[4]["sqlstate"] == lines[5]["sqlstate"] == "53400"
    assert lines[4]["reason"].startswith("privacy budget exhausted: user \"analyst\" has epsilon 0.25")
    assert "sqlstate" not in lines[1] and "reason" not in lines[1]


def test_metrics_count_what_ran(watched):
    first = scrape(watched.metrics_url)

    async def statements() -> None:
        conn = await asyncpg.connect(host=watched.host, port=watched.port, user="analyst", password="analyst",
                                     database="health", ssl=False)
        try:
            assert await conn.fetchval("SHOW pgshroud.epsilon") is not None
            during = await asyncio.to_thread(scrape, watched.metrics_url)
            assert during["pgshroud_sessions"] >= 1
            await conn.fetch(GROUPED)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("SELECT ssn FROM patients")
        finally:
            await conn.close()

    asyncio.run(statements())
    with psycopg.connect(watched.dsn("admin", "health"), autocommit=True) as conn:
        conn.execute("SELECT 1").fetchall()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(watched.dsn("admin", "health", password="wrong"))
    after = scrape(watched.metrics_url)

    def grew(sample: str) -> float:
        return after.get(sample, 0) - first.get(sample, 0)

    assert after["pgshroud_sessions"] == 0
    assert grew("pgshroud_sessions_total") == 2
    assert grew("pgshroud_startup_refusals_total") == 1
    assert grew('pgshroud_statements_total{kind="passthrough"}') == 1
    assert grew('pgshroud_statements_total{kind="local"}') == 1
    assert grew('pgshroud_statements_total{kind="release"}') == 1
    assert grew('pgshroud_statements_total{kind="refuse"}') >= 1
    assert grew('pgshroud_refusals_total{class="42"}') >= 1
    assert grew("pgshroud_planning_seconds_count") >= 3  # the analyst's; raw ones are not planned
    assert after['pgshroud_planning_seconds_bucket{le="+Inf"}'] == after["pgshroud_planning_seconds_count"]
    assert grew("pgshroud_release_upstream_seconds_count") == 1
    assert grew('pgshroud_charges_total{role="analyst",outcome="charged"}') == 1
    assert grew('pgshroud_budget_spent_epsilon_total{role="analyst"}') == pytest.approx(0.5)  # the policy default
    assert after['pgshroud_budget_spent_delta_total{role="analyst"}'] >= 0
    assert after["pgshroud_audit_records_total"] > 0 and after["pgshroud_audit_dropped_total"] == 0
    # Anything but /metrics is not found.
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(watched.metrics_url.replace("/metrics", "/other"), timeout=10)
    assert missing.value.code == 404


def test_audit_log_drops_and_says_so_when_the_writer_falls_behind(tmp_path):
    audit = AuditLog(str(tmp_path / "audit.jsonl"), flush_interval=60, max_pending=3)
    try:
        for number in range(5):
            audit.decided("u", None, "query", f"SELECT {number}", [])
        audit.flush()
    finally:
        audit.close()
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert lines[-1]["event"] == "dropped" and lines[-1]["count"] == 2
    assert audit.counts() == (3, 2)  # three records handed to the writer (with no plans: no lines), two dropped


def test_unwritable_audit_log_is_a_config_error(tmp_path):
    from pgshroud.proxy.ops.config import ConfigError

    with pytest.raises(ConfigError, match="--audit-log"):
        AuditLog(str(tmp_path / "missing" / "audit.jsonl"))


# ----------------------------------------------------------------------- serve


def test_serve_writes_the_audit_log_and_serves_metrics(pg, tmp_path):
    path = tmp_path / "audit.jsonl"
    metrics_port = free_port()
    upstream = make_conninfo(pg.dsn(), sslmode="disable")
    process = Serve("--upstream", upstream, "--audit-log", str(path), "--metrics", f"127.0.0.1:{metrics_port}")
    try:
        with psycopg.connect(process.dsn(), autocommit=True) as conn:
            conn.execute(f"SELECT '{SSN}'::text").fetchall()
            conn.execute(f"SELECT '{OTHER_SSN}'::text").fetchall()
        samples = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        assert samples['pgshroud_statements_total{kind="passthrough"}'] == 2
        assert samples["pgshroud_sessions_total"] == 1
        assert process.terminate() == 0
    finally:
        process.stop()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(line["user"], line["role"], line["kind"]) for line in lines] == [("u_scram", None, "passthrough")] * 2
    assert lines[0]["fingerprint"] == lines[1]["fingerprint"]
    assert SSN not in path.read_text() and SSN not in process.stderr


@pytest.mark.parametrize("flags, expected", [
    (["--metrics", "nowhere"], "--metrics 'nowhere' must be HOST:PORT"),
    (["--audit-log", "/nonexistent/dir/audit.jsonl"], "--audit-log /nonexistent/dir/audit.jsonl"),
])
def test_bad_audit_and_metrics_flags_exit_2(pg, flags, expected):
    from tests.e2e.test_cli_serve import run_cli

    result = run_cli("serve", "--upstream", make_conninfo(pg.dsn(), sslmode="disable"), *flags)
    assert result.returncode == 2
    assert expected in result.stderr
