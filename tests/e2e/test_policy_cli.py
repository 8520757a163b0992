"""The policy, for humans, through the `pgshroud` command itself.

- `pgshroud check FILE` validates a policy: 0 when valid, 2 with one
  `file:line: key: expected ...` line per problem when not;
- `pgshroud check FILE --upstream DSN` compares it with the live catalog
  (relations and columns the policy does not name, names it has that do not
  exist) and warns where a non-raw user could bypass pgshroud (SELECT grants
  on protected tables, pg_hba.conf lines that admit them);
- `pgshroud explain` prints the plan of a statement for a role;
- `pgshroud serve` reloads its policy on SIGHUP, keeps the current one when
  the new file is invalid (and says why on stderr), and exits 0 on SIGTERM.

Every command runs as a subprocess, `python -m pgshroud`, as an operator
would run it.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

REPO = Path(__file__).resolve().parents[2]
HEALTHCARE = REPO / "policies" / "examples" / "healthcare.yaml"
PROTECTED = ("public.patients", "public.visits", "public.labs")
SSN_LINE = "      ssn: ssn                       # keeps the last four digits\n"


def pgshroud(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgshroud.proxy.commands.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def upstream(pg, raw_health) -> str:
    """The superuser's DSN to `health`, over TCP without TLS, as an operator passes --upstream."""
    return make_conninfo(pg.dsn(dbname="health"), sslmode="disable")


def healthcare_text() -> str:
    text = HEALTHCARE.read_text()
    assert SSN_LINE in text, "the example policy's ssn line changed; update SSN_LINE"
    return text


# ---------------------------------------------------------------------- check


def test_check_accepts_the_example_policy():
    result = pgshroud("check", str(HEALTHCARE))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"{HEALTHCARE}: valid: 3 roles, 3 protected tables, 1 public tables")
    assert result.stderr == ""


def line_of(text: str, fragment: str) -> int:
    return text[: text.index(fragment)].count("\n") + 1


ZIP_LINE = "      zip: zip3\n"


@pytest.mark.parametrize(
    ("old", "new", "key", "expected"),
    [
        ("    access: masked\n", "    access: maskd\n", "roles.clinician.access",
         "one of raw, masked, aggregate, deny (got 'maskd'); did you mean 'masked'?"),
        (SSN_LINE, "      ssn: blurr\n", "protected_tables.patients.columns.ssn", "one of none, null, redact"),
        (ZIP_LINE, "      zip: {mask: zip3, bogus: 1}\n", "protected_tables.patients.columns.zip.bogus",
         "one of the keys mask, roles, bounds, public_domain"),
        ("default_role: deny\n", "authentication: {allow_upstream_trust: [nurse]}\ndefault_role: deny\n",
         "authentication.allow_upstream_trust[0]", "a role defined under roles (admin, clinician, analyst)"),
    ],
    ids=["misspelt-access", "unknown-mask", "unknown-key", "unknown-trusted-role"],
)
def test_check_rejects_an_invalid_policy(tmp_path, old, new, key, expected):
    text = healthcare_text()
    line = line_of(text, old)
    path = tmp_path / "policy.yaml"
    path.write_text(text.replace(old, new))
    result = pgshroud("check", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert re.search(rf"^{re.escape(str(path))}:{line}: {re.escape(key)}: expected {re.escape(expected)}",
                     result.stderr, re.MULTILINE), result.stderr
    assert "Traceback" not in result.stderr


def test_check_lists_every_problem_in_file_order(tmp_path):
    path = tmp_path / "policy.yaml"
    text = healthcare_text()
    path.write_text(text.replace(SSN_LINE, "      ssn: blurr\n").replace(ZIP_LINE, "      zip: {mask: zip3, bogus: 1}\n"))
    result = pgshroud("check", str(path))
    assert result.returncode == 2
    problems = [line for line in result.stderr.splitlines() if line.startswith(f"{path}:")]
    expected = [str(line_of(text, SSN_LINE)), str(line_of(text, ZIP_LINE))]
    assert [p[len(str(path)) + 1:].split(":")[0] for p in problems] == expected, result.stderr


def test_check_rejects_broken_yaml(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\nroles:\n  a: [\n")
    result = pgshroud("check", str(path))
    assert result.returncode == 2
    assert re.search(rf"^{re.escape(str(path))}:\d+: expected valid YAML", result.stderr, re.MULTILINE), result.stderr


def test_check_of_a_missing_file_says_so(tmp_path):
    """An operator's typo in the path: one line naming the file, exit 2, no traceback."""
    path = tmp_path / "no-such-policy.yaml"
    result = pgshroud("check", str(path))
    assert "Traceback" not in result.stderr, f"pgshroud check crashed on a missing file:\n{result.stderr}"
    assert result.returncode == 2
    assert str(path) in result.stderr


@pytest.fixture
def extra_table(pg, raw_health) -> Iterator[None]:
    pg.execute("CREATE TABLE public.extra (x int)", dbname="health")
    try:
        yield
    finally:
        pg.execute("DROP TABLE IF EXISTS public.extra", dbname="health")


def test_check_against_the_live_catalog(upstream, extra_table, tmp_path):
    # A copy of the example that leaves out a column and names a table that is not there.
    policy = tmp_path / "policy.yaml"
    text = healthcare_text()
    assert "      state: none\n" in text and "public_tables: [diagnoses]\n" in text
    policy.write_text(text.replace("      state: none\n", "")
                      .replace("public_tables: [diagnoses]\n", "public_tables: [diagnoses, ghost]\n"))
    result = pgshroud("check", str(policy), "--upstream", upstream)
    out = result.stdout
    assert result.returncode == 1, f"warnings exit 1\n{out}\n{result.stderr}"
    assert out.startswith(f"{policy}: valid: 3 roles, 3 protected tables, 2 public tables\n"), out
    warnings = [line[len("warning: "):] for line in out.splitlines() if line.startswith("warning: ")]
    # Uncovered relations and columns, and policy names that do not exist.
    assert "relation public.extra is not in the policy: non-raw roles are refused it" in warnings
    assert "column public.patients.state is not in the policy: it reads as NULL" in warnings
    assert "the policy names public.ghost, which does not exist upstream" in warnings
    assert not any("public.diagnoses" in w or "public.visits." in w or "public.labs." in w for w in warnings), (
        "only the left-out column is uncovered:\n" + "\n".join(warnings))
    # The fixture grants SELECT on the protected tables to both non-raw users.
    for table in PROTECTED:
        for user in ("clinician", "analyst"):
            assert (f"user {user} (role {user}) holds SELECT on {table}: a direct connection bypasses pgshroud"
                    in warnings), "\n".join(warnings)
    assert not any("holds SELECT on public.diagnoses" in w for w in warnings), "diagnoses is public"
    assert not any(w.startswith("user admin ") for w in warnings), "admin is raw"
    # The test cluster's pg_hba.conf trusts every user on the socket, and asks
    # for scram-sha-256 from localhost.
    hba = [w for w in warnings if w.startswith("pg_hba.conf line ")]
    trusted = [w for w in hba if "without a password" in w]
    assert trusted == [(f"pg_hba.conf line {trust_line(upstream)} lets every user (admin, analyst, clinician among "
                       "them) in through the local socket without a password (trust): whoever reaches PostgreSQL "
                       "there can claim these users, raw ones too (admin); pgshroud refuses such logins when it "
                       "relays authentication")], hba
    admitted = [w for w in hba if w not in trusted]
    assert admitted, "\n".join(warnings)
    for line in admitted:
        assert re.fullmatch(r"pg_hba\.conf line \d+ admits analyst, clinician from \S.*: make sure only pgshroud "
                            r"can reach PostgreSQL for these users", line), line
    assert any("from 127.0.0.1" in line for line in admitted), hba
    assert out.rstrip().endswith(f"{len(warnings)} warning(s) against the live catalog at "
                                 f"{upstream_address(upstream)}"), out


def trust_line(conninfo: str) -> int:
    with psycopg.connect(conninfo) as conn:
        return conn.execute("select line_number from pg_hba_file_rules where type = 'local' "
                            "and auth_method = 'trust'").fetchone()[0]


@pytest.fixture
def readers_group(pg, raw_health) -> Iterator[None]:
    """A user `viewer` who reads patients only as a member of `readers`, and a superuser `boss`."""
    pg.execute("CREATE ROLE readers NOLOGIN; CREATE ROLE viewer LOGIN PASSWORD 'viewer' IN ROLE readers;"
               "CREATE ROLE boss LOGIN SUPERUSER PASSWORD 'boss'")
    pg.execute("GRANT SELECT (name) ON patients TO readers", dbname="health")
    try:
        yield
    finally:
        pg.execute("REVOKE ALL ON patients FROM readers", dbname="health")
        pg.execute("DROP ROLE viewer; DROP ROLE readers; DROP ROLE boss")


def test_check_warns_about_every_way_around_pgshroud(upstream, readers_group, tmp_path):
    """Privileges through a group (a column grant is enough), superusers, and
    trust rules for a role the policy lets through on trust."""
    policy = tmp_path / "policy.yaml"
    text = healthcare_text()
    assert "    users: [clinician]\n" in text
    policy.write_text(text.replace("    users: [clinician]\n", "    users: [clinician, viewer, boss]\n")
                      + "authentication:\n  allow_upstream_trust: [analyst]\n")
    result = pgshroud("check", str(policy), "--upstream", upstream)
    assert result.returncode == 1, result.stderr
    warnings = [line[len("warning: "):] for line in result.stdout.splitlines() if line.startswith("warning: ")]
    assert ("user viewer (role clinician) may SELECT public.patients as a member of readers: a direct connection "
            "bypasses pgshroud") in warnings, "\n".join(warnings)
    assert not any(w.startswith("user viewer ") and "public.visits" in w for w in warnings)
    assert ("user boss (role clinician) is a superuser: a direct connection bypasses pgshroud and every privilege"
            in warnings), "\n".join(warnings)
    assert not any(w.startswith("user boss ") and "SELECT" in w for w in warnings)
    (trusted,) = [w for w in warnings if "without a password" in w]
    assert trusted.startswith(f"pg_hba.conf line {trust_line(upstream)} lets every user (admin, analyst, boss, "
                              "clinician, viewer among them) in through the local socket"), trusted
    assert trusted.endswith("; the policy lets such logins through pgshroud for role(s) analyst "
                            "(authentication.allow_upstream_trust)"), trusted


def test_check_without_the_right_to_read_pg_hba_says_so(pg, raw_health, tmp_path):
    """pg_hba_file_rules is for superusers: the other checks still run."""
    dsn = make_conninfo(pg.dsn(user="admin", password="admin", dbname="health"), sslmode="disable")
    result = pgshroud("check", str(HEALTHCARE), "--upstream", dsn)
    assert result.returncode == 1, result.stderr
    warnings = [line[len("warning: "):] for line in result.stdout.splitlines() if line.startswith("warning: ")]
    assert any(w.startswith("user clinician (role clinician) holds SELECT on public.patients") for w in warnings)
    assert ("cannot read pg_hba_file_rules (it needs superuser, or SELECT on pg_hba_file_rules and EXECUTE on "
            "pg_hba_file_rules() granted to pgshroud's user): pg_hba.conf was not checked for trust rules or "
            "direct access") in warnings, "\n".join(warnings)
    assert not any(w.startswith("pg_hba.conf line") for w in warnings)


def upstream_address(conninfo: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(conninfo)
    return f"{params['host']}:{params['port']}"


def test_check_of_an_unreachable_upstream_says_so(tmp_path):
    """A wrong --upstream: a one-line error naming the server, exit 2, no traceback."""
    dsn = "host=127.0.0.1 port=1 user=nobody dbname=health sslmode=disable connect_timeout=5"
    result = pgshroud("check", str(HEALTHCARE), "--upstream", dsn)
    assert "Traceback" not in result.stderr, f"pgshroud check crashed on an unreachable upstream:\n{result.stderr}"
    assert result.returncode == 2
    assert "127.0.0.1" in result.stderr


# -------------------------------------------------------------------- explain


def test_explain_shows_the_masked_rewrite(upstream):
    result = pgshroud("explain", "--policy", str(HEALTHCARE), "--upstream", upstream, "--role", "clinician",
                      "select ssn from patients")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "statement 1: Rewrite", result.stdout
    assert lines[1].startswith("  sql: select ssn from (SELECT "), result.stdout
    sql = lines[1][len("  sql: "):]
    # The protected relation became a masked subquery under the table's own name...
    assert sql.endswith(' FROM "public"."patients" AS "pgshroud_raw") AS "patients"'), sql
    # ...whose ssn is the mask's expression of the raw column, not the column itself.
    assert re.search(r'\(CASE WHEN "pgshroud_raw"\."ssn" IS NULL THEN NULL .* END\) AS "ssn"', sql), sql
    assert "pgshroud.pseudonym" in sql and ' AS "patient_id"' in sql
    assert '"pgshroud_raw"."state" AS "state"' in sql  # state: none


def test_explain_shows_a_refusal_and_its_reason(upstream):
    result = pgshroud("explain", "--policy", str(HEALTHCARE), "--upstream", upstream, "--role", "clinician",
                      "select pg_sleep(1)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "statement 1: Refuse",
        "  sqlstate: 42501",
        '  message: function "pg_sleep" is volatile (it can change state or time a query) and is not allowed',
        ("  hint: Write the query without it, or ask the privacy officer to name it in the policy's "
        "allow_functions."),
    ]


def test_explain_of_several_statements_and_roles(upstream):
    result = pgshroud("explain", "--policy", str(HEALTHCARE), "--upstream", upstream, "--role", "admin",
                      "select ssn from patients; select pg_sleep(1)")
    assert result.returncode == 0, result.stderr
    # A raw role's text passes through as one unit, unlexed.
    assert result.stdout.splitlines() == ["statement 1: Passthrough",
                                          "  sql: select ssn from patients; select pg_sleep(1)"]
    result = pgshroud("explain", "--policy", str(HEALTHCARE), "--upstream", upstream, "--role", "nurse",
                      "select 1")
    assert result.returncode == 2
    assert "--role nurse: the policy has no such role (it has admin, clinician, analyst)" in result.stderr


# ---------------------------------------------------------------------- serve


class Served:
    """`pgshroud serve` as a subprocess, its stderr read line by line."""

    def __init__(self, policy: Path, upstream: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pgshroud.proxy.commands.cli", "serve", "--policy", str(policy), "--upstream", upstream,
             "--listen", "127.0.0.1:0", "--drain-timeout", "5"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        match = self.wait_for(r"listening on 127\.0\.0\.1:(\d+)")
        self.port = int(match.group(1))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                if (match := re.search(pattern, line)) is not None:
                    self.lines.remove(line)
                    return match
            remaining = deadline - time.monotonic()
            try:
                line = self._queue.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                line = ""
            if line is None or remaining <= 0:
                pytest.fail(f"pgshroud serve never logged {pattern!r}; exit status {self.proc.poll()}; "
                            f"stderr so far:\n" + "\n".join(self.lines))
            if line:
                self.lines.append(line)

    def dsn(self, user: str) -> str:
        return make_conninfo(host="127.0.0.1", port=self.port, user=user, dbname="health", sslmode="disable")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def psql_ssns(dsn: str, password: str) -> list[str]:
    psql = shutil.which("psql")
    if psql is None:
        pytest.fail("psql is not on PATH; install postgresql-client", pytrace=False)
    proc = subprocess.run([psql, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c",
                           "select ssn from patients"],
                          env={**os.environ, "PGPASSWORD": password}, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return proc.stdout.splitlines()


def test_serve_reloads_the_policy_on_sighup(upstream, raw_health, tmp_path):
    with psycopg.connect(raw_health) as conn:
        real = [r[0] for r in conn.execute("select ssn from patients")]
    policy = tmp_path / "policy.yaml"
    text = healthcare_text()
    policy.write_text(text)
    served = Served(policy, upstream)
    try:
        # The first policy: ssn keeps the last four digits.
        first = psql_ssns(served.dsn("clinician"), "clinician")
        assert len(first) == len(real) >= 100 and set(first).isdisjoint(real)
        assert all(re.fullmatch(r"XXX-XX-\d{4}", s) for s in first), first[:10]
        assert sorted(s[-4:] for s in first) == sorted(s[-4:] for s in real)
        session = psycopg.connect(served.dsn("clinician"), password="clinician", autocommit=True)

        # A second version: ssn is redacted. New statements, on new and on open sessions, see it.
        policy.write_text(text.replace(SSN_LINE, '      ssn: {mask: {redact: {text: "SSN-REDACTED"}}}\n'))
        served.proc.send_signal(signal.SIGHUP)
        served.wait_for(rf"policy reloaded from {re.escape(str(policy))}")
        assert psql_ssns(served.dsn("clinician"), "clinician") == ["SSN-REDACTED"] * len(real)
        assert session.execute("select ssn from patients limit 3").fetchall() == [("SSN-REDACTED",)] * 3

        # An invalid version: the second policy stays in force, and stderr says why.
        policy.write_text(text.replace(SSN_LINE, "      ssn: blurr\n"))
        served.proc.send_signal(signal.SIGHUP)
        why = served.wait_for(r"policy reload failed, keeping the current policy: (.*)")
        assert why.group(1).startswith(f"{policy}:{line_of(text, SSN_LINE)}: protected_tables.patients.columns.ssn: "
                                       "expected one of "), why.group(0)
        assert psql_ssns(served.dsn("clinician"), "clinician") == ["SSN-REDACTED"] * len(real)
        assert session.execute("select ssn from patients limit 3").fetchall() == [("SSN-REDACTED",)] * 3
        # The admin is raw throughout.
        with psycopg.connect(served.dsn("admin"), password="admin") as admin:
            assert sorted(r[0] for r in admin.execute("select ssn from patients")) == sorted(real)
        session.close()

        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(20) == 0, "\n".join(served.lines)
    finally:
        served.stop()
    assert "Traceback" not in "\n".join(served.lines)


def test_serve_refuses_to_start_with_an_invalid_policy(upstream, tmp_path):
    policy = tmp_path / "policy.yaml"
    text = healthcare_text()
    policy.write_text(text.replace(SSN_LINE, "      ssn: blurr\n"))
    result = pgshroud("serve", "--policy", str(policy), "--upstream", upstream, "--listen", "127.0.0.1:0",
                      timeout=30)
    assert result.returncode == 2, result.stderr
    assert f"{policy}:{line_of(text, SSN_LINE)}: protected_tables.patients.columns.ssn: expected" in result.stderr
    assert "listening on" not in result.stderr
