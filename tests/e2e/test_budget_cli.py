"""`pgshroud budget show | grant | reset` against a real ledger.

A fresh database per test, set up by `pgshroud setup`; charges are made
with the ledger as the session makes them, and the commands are run as an
operator runs them (`python -m pgshroud`, a separate process). Grants and
resets are new ledger rows with who ran them; `show` agrees with what the
next charge sees; bad input exits 2 with one clear line.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from pgshroud.policies.loader import load_policy
from pgshroud.proxy.budget.ledger import PostgresLedger
from pgshroud.proxy.commands.budget import bar
from pgshroud.proxy.commands.setup import run_setup
from pgshroud.rewriter.plans import Cost
from tests.e2e.test_cli_serve import run_cli

POLICY = """\
version: 1
default_role: deny
roles:
  admin: {access: raw, users: [root]}
  analyst: {access: aggregate, users: [alice, bob]}
  auditor: {access: aggregate, users: [carol]}
budgets:
  period: never
  per_user: {epsilon: 2, delta: 1.0e-5}
  per_role:
    analyst: {epsilon: 3, delta: 1.0e-4}
  per_dataset: {epsilon: 10, delta: 1.0e-3}
"""


@pytest.fixture
def db(pg, request) -> str:
    name = "pgshroud_budget_" + re.sub(r"\W", "_", request.node.name)[:40].lower()
    pg.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    pg.execute(f"CREATE DATABASE {name}")
    assert run_setup(pg.admin_dsn(name), key_env=None, key_file=None, rotate_key=False, grant_to=[],
                     out=io.StringIO()) == 0
    yield pg.admin_dsn(name)
    pg.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def policy_file(tmp_path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def charge(dsn: str, policy_file: Path, user: str, *costs: Cost) -> list:
    ledger = PostgresLedger(dsn, load_policy(policy_file))

    async def go():
        try:
            return [await ledger.charge(user, cost) for cost in costs]
        finally:
            await ledger.close()

    return asyncio.run(go())


def budget(db: str, policy_file: Path, *args: str):
    return run_cli("budget", *args, "--upstream", db, "--policy", str(policy_file), timeout=60)


def ledger_rows(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT kind, user_name, role_name, epsilon, delta, note FROM pgshroud.budget_ledger "
                            "ORDER BY id").fetchall()


def row_of(output: str, first: str) -> list[str]:
    for line in output.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{output}")


def test_show_lists_each_users_spend_with_a_bar(db, policy_file):
    assert charge(db, policy_file, "alice", Cost(0.5, 1e-7), Cost(0.25)) == [None, None]
    assert charge(db, policy_file, "carol", Cost(1.0)) == [None]
    result = budget(db, policy_file, "show")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    header = row_of(out, "user")
    assert header == ["user", "role", "eps spent", "eps granted", "eps left", "delta spent", "delta granted",
                      "delta left", "can spend now", "charges", "last charge (UTC)"]
    alice = row_of(out, "alice")
    assert alice[:10] == ["alice", "analyst", "0.75", "0", "1.25 of 2", "1e-7", "0", "9.9e-6 of 1e-5", "1.25", "2"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", alice[10])
    carol = row_of(out, "carol")
    assert carol[:10] == ["carol", "auditor", "1", "0", "1 of 2", "0", "0", "1e-5 of 1e-5", "1", "1"]
    # The bars: a share of each user's own budget.
    assert re.search(r"alice\s+\[#{8}\.{12}\]\s+38%\s+0\.75 of 2", out), out
    assert re.search(r"carol\s+\[#{10}\.{10}\]\s+50%\s+1 of 2", out), out
    # The shared budgets: the analyst role (alice's charges), the dataset (everyone's).
    assert row_of(out, "role")[:5] == ["role", "analyst", "0.75", "0", "2.25 of 3"]
    assert row_of(out, "dataset")[:5] == ["dataset", "-", "1.75", "0", "8.25 of 10"]
    only = budget(db, policy_file, "show", "--user", "carol")
    assert only.returncode == 0 and "alice" not in only.stdout and row_of(only.stdout, "carol")[2] == "1"


def test_show_of_an_unknown_user_and_of_an_empty_ledger(db, policy_file):
    empty = budget(db, policy_file, "show")
    assert empty.returncode == 0, empty.stderr
    assert "no user has been charged, granted or reset yet" in empty.stdout
    nobody = budget(db, policy_file, "show", "--user", "dave")
    assert nobody.returncode == 0
    # dave has no role (default_role: deny): the ledger knows nothing of him, and he gets no private answers.
    assert row_of(nobody.stdout, "dave")[:10] == ["dave", "(none)", "0", "0", "2 of 2", "0", "0", "1e-5 of 1e-5",
                                                  "no role", "0"]
    assert row_of(nobody.stdout, "dave")[10] == "-"


def test_grant_adds_budget_by_appending_a_row(db, policy_file, tmp_path):
    assert charge(db, policy_file, "alice", Cost(2.0)) == [None]
    assert charge(db, policy_file, "alice", Cost(0.5))[0].sqlstate == "53400"
    audit = tmp_path / "audit.jsonl"
    result = budget(db, policy_file, "grant", "alice", "--epsilon", "1.5", "--delta", "1e-6",
                    "--note", "ticket 42", "--audit-log", str(audit))
    assert result.returncode == 0, result.stderr
    assert "granted epsilon 1.5 and delta 1e-6 to user alice" in result.stdout
    assert "before: epsilon spent 2 of 2 (2 + 0 granted), 0 left" in result.stdout
    assert "after: epsilon spent 2 of 3.5 (2 + 1.5 granted), 1.5 left" in result.stdout
    rows = ledger_rows(db)
    assert [r[:5] for r in rows] == [("charge", "alice", "analyst", Decimal("2.0"), Decimal(0)),
                                     ("grant", "alice", None, Decimal("1.5"), Decimal("0.000001"))]
    assert re.fullmatch(r"pgshroud budget grant by \S+@\S+: ticket 42", rows[1][5])
    # The grant counts for the next charge, up to the role's cap (3: 2 spent).
    assert charge(db, policy_file, "alice", Cost(1.0)) == [None]
    assert charge(db, policy_file, "alice", Cost(0.25))[0].sqlstate == "53400"
    record = json.loads(audit.read_text())
    assert record["event"] == "budget_grant" and record["scope"] == "user" and record["name"] == "alice"
    assert record["epsilon"] == 1.5 and record["delta"] == 1e-6 and record["ledger_entry"] > 0
    # Roles and the dataset.
    assert budget(db, policy_file, "grant", "--role", "analyst", "--epsilon", "2").returncode == 0
    assert budget(db, policy_file, "grant", "--dataset", "--epsilon", "5").returncode == 0
    assert [r[:4] for r in ledger_rows(db)[-2:]] == [("grant", None, "analyst", Decimal(2)),
                                                      ("grant", None, None, Decimal(5))]
    shown = budget(db, policy_file, "show").stdout
    assert row_of(shown, "role")[:5] == ["role", "analyst", "3", "2", "2 of 5"]
    assert row_of(shown, "dataset")[:5] == ["dataset", "-", "3", "5", "12 of 15"]
    assert row_of(shown, "alice")[2:5] == ["3", "1.5", "0.5 of 3.5"]


def test_reset_voids_the_users_charges_of_the_period(db, policy_file):
    assert charge(db, policy_file, "bob", Cost(1.5), Cost(0.5)) == [None, None]
    result = budget(db, policy_file, "reset", "bob", "--note", "new project")
    assert result.returncode == 0, result.stderr
    assert "reset user bob" in result.stdout and "after: epsilon spent 0 of 2" in result.stdout
    rows = ledger_rows(db)
    assert [r[:3] for r in rows] == [("charge", "bob", "analyst"), ("charge", "bob", "analyst"),
                                     ("reset", "bob", None)]
    assert len(rows) == 3  # the charges are still there, unchanged
    bob = row_of(budget(db, policy_file, "show").stdout, "bob")
    assert bob[2] == "0" and bob[4] == "2 of 2" and bob[9] == "0"
    # The role still counts bob's charges: 2 of its 3 are spent.
    assert bob[8] == "1"
    assert charge(db, policy_file, "bob", Cost(1.0)) == [None]
    assert charge(db, policy_file, "bob", Cost(0.25))[0].sqlstate == "53400"
    # Reset the role too; then bob's own budget is what limits.
    assert budget(db, policy_file, "reset", "--role", "analyst").returncode == 0
    assert charge(db, policy_file, "bob", Cost(1.0)) == [None]


@pytest.mark.parametrize("args, message", [
    (["grant", "alice", "--epsilon", "-1"], "--epsilon must be a finite number >= 0, not -1"),
    (["grant", "alice", "--epsilon", "x"], "--epsilon must be a number, not 'x'"),
    (["grant", "alice", "--epsilon", "1", "--delta", "1"], "--delta must be below 1, not 1"),
    (["grant", "alice", "--epsilon", "0"], "a grant of epsilon 0 and delta 0 changes nothing"),
    (["grant", "--epsilon", "1"], "budget grant needs exactly one of a USER, --role ROLE or --dataset"),
    (["grant", "alice", "--role", "analyst", "--epsilon", "1"], "needs exactly one of"),
    (["grant", "--role", "auditor", "--epsilon", "1"], "the policy has no budgets.per_role.auditor"),
    (["grant", "--role", "nosuch", "--epsilon", "1"], "--role nosuch: the policy has no such role"),
    (["grant", "dave", "--epsilon", "1"], "user 'dave' has no role in the policy"),
    (["reset"], "budget reset needs exactly one of"),
])
def test_bad_input_exits_2_with_one_clear_line(db, policy_file, args, message):
    result = budget(db, policy_file, *args)
    assert result.returncode == 2, result
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert ledger_rows(db) == []


def test_missing_ledger_and_unreachable_upstream_exit_2(pg, policy_file, tmp_path):
    pg.execute("DROP DATABASE IF EXISTS pgshroud_budget_bare WITH (FORCE)")
    pg.execute("CREATE DATABASE pgshroud_budget_bare")
    try:
        result = run_cli("budget", "show", "--upstream", pg.admin_dsn("pgshroud_budget_bare"),
                         "--policy", str(policy_file), timeout=60)
        assert result.returncode == 2
        assert "the privacy budget ledger is not set up" in result.stderr
    finally:
        pg.execute("DROP DATABASE IF EXISTS pgshroud_budget_bare WITH (FORCE)")
    unreachable = run_cli("budget", "show", "--upstream", "host=127.0.0.1 port=1 user=x dbname=x",
                          "--policy", str(policy_file), timeout=60)
    assert unreachable.returncode == 2 and unreachable.stderr.startswith("pgshroud: ")
    missing = run_cli("budget", "show", "--upstream", "host=127.0.0.1", "--policy", str(tmp_path / "none.yaml"))
    assert missing.returncode == 2 and "none.yaml" in missing.stderr


def test_bar():
    assert bar(0) == "[" + "." * 20 + "]"
    assert bar(0.001) == "[#" + "." * 19 + "]"  # any spend shows
    assert bar(0.5) == "[" + "#" * 10 + "." * 10 + "]"
    assert bar(1.7) == "[" + "#" * 20 + "]"
