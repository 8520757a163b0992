"""Answers shared by a role, and kept as long as the policy says (issue 10: dashboards that refresh).

At the level of the answer cache and the ledger, against a real PostgreSQL
ledger set up by `pgshroud setup`, with real concurrency:

- a role with `share_answers: true` is charged on its own account: the
  charge row names no user (SHARED_ACCOUNT) and says who asked, counts in
  the role's and the dataset's budgets and in no user's; the role's budget
  bounds what all its users are released together; `standing` (SHOW
  pgshroud.budget) and `pgshroud budget show` show the role's account;
- eight users of the role racing on the same new statement, from threads
  with event loops of their own and ledgers of their own, are charged once
  and all get the one release; users of a role that does not share are each
  charged; a claim whose release is refused or dropped passes to a waiter;
  a claim presumed lost is released again, and says so;
- answers live as long as the policy's answers.reuse_for says;
- processes that share the ledger but not a cache each pay for what they
  release, and never overspend the role's budget together; a release's
  fingerprint is the same in every process, and the second charge of it
  says when the role paid for it already;
- through the wire, with the session as it is: two users of a sharing role
  are given one release, charged once to the role, kept for the policy's day.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import io
import os
import subprocess
import sys
import textwrap
import threading
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pgshroud.policies.loader import loads_policy
from pgshroud.policies.model import AnswerReuse, Budgets, EpsilonDelta, Policy
from pgshroud.proxy.budget.answer_cache import AnswerCache, CachedAnswer, Claim
from pgshroud.proxy.budget.ledger import SHARED_ACCOUNT, PostgresLedger
from pgshroud.proxy.budget.protocol import Activity
from pgshroud.proxy.commands.budget import _print_show, _show, run_budget
from pgshroud.proxy.ops.catalog import read_catalog
from pgshroud.proxy.ops.config import ConfigError
from pgshroud.proxy.session import budget_notes
from pgshroud.proxy.session.driver import SessionContext
from pgshroud.rewriter import plan
from pgshroud.rewriter.plans import Column, Cost, LocalAnswer, Refuse
from tests.fix_proxy import RunningProxy, proxy_config

REPO = Path(__file__).resolve().parents[2]
STATEMENT = ("SELECT department, count(*) FROM visits GROUP BY 1", 0, (), (), (), (0, 0))

POLICY = """\
version: 1
roles:
  admin: {access: raw, users: [root]}
  team:
    access: aggregate
    users: [ann, ben, cat, dan, eve, fay, gus, hal]
    share_answers: true
  solo: {access: aggregate, users: [sam, sue]}
budgets:
  per_user: {epsilon: 1}
  per_role: {team: {epsilon: 2}, solo: {epsilon: 10}}
  per_dataset: {epsilon: 100}
answers: {reuse_for: 1d}
"""
TEAM = ["ann", "ben", "cat", "dan", "eve", "fay", "gus", "hal"]


@pytest.fixture
def db(databases) -> str:
    return databases()


@pytest.fixture
def policy() -> Policy:
    return loads_policy(POLICY, "sharing.yaml")


def charges(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT user_name, role_name, epsilon, note FROM pgshroud.budget_ledger "
                            "WHERE kind = 'charge' ORDER BY id").fetchall()


def lock_totals(dsn: str) -> dict[tuple[str, str], Decimal]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {(scope, name): spent for scope, name, spent in
                conn.execute("SELECT scope, name, spent_epsilon FROM pgshroud.budget_lock")}


def answer(value: str) -> LocalAnswer:
    return LocalAnswer("SELECT 1", (Column("count", 20),), ((value,),), ("95% margins of error: count ±3",))


# ------------------------------------------------------------------ the ledger


def test_a_sharing_role_is_charged_on_its_own_account(db, policy) -> None:
    async def scenario():
        ledger = PostgresLedger(db, policy)
        try:
            first = await ledger.charge_standing("ann", Cost(0.5))
            second = await ledger.charge_standing("sam", Cost(0.25))
            return first, second, await ledger.standing("ben"), await ledger.scope_standing("role", "team")
        finally:
            await ledger.close()

    first, second, ben, team = asyncio.run(scenario())
    # ann's charge is the role's, with the dataset's; no user budget of hers is in it.
    assert [(s.budget.scope, s.budget.name, s.budget.shared, s.spent_epsilon) for s in first] == [
        ("role", "team", True, Decimal("0.5")), ("dataset", "", False, Decimal("0.5"))]
    assert [(s.budget.scope, s.budget.shared) for s in second] == [("user", False), ("role", False),
                                                                   ("dataset", False)]
    assert charges(db) == [
        (SHARED_ACCOUNT, "team", Decimal("0.5"), 'shared answer of role "team", asked by user "ann"'),
        ("sam", "solo", Decimal("0.25"), None)]
    # Any user of the role sees the role's account; no user lock row is made for the shared charge.
    assert [(s.budget.scope, s.spent_epsilon) for s in ben] == [("role", Decimal("0.5")),
                                                                ("dataset", Decimal("0.75"))]
    assert team.budget.shared and team.spent_epsilon == Decimal("0.5")
    assert lock_totals(db) == {("role", "team"): Decimal("0.5"), ("dataset", ""): Decimal("0.75"),
                               ("user", "sam"): Decimal("0.25"), ("role", "solo"): Decimal("0.25")}
    value = budget_notes.budget_value("ben", ben, "never")
    assert value.startswith('1.5 epsilon left now (delta 0), the least over your budgets; your answers are shared '
                            'by role "team" and charged to its budget, which all its users share, not to a budget '
                            'of your own; role "team" (its users share its answers and this budget): epsilon '
                            'spent 0.5 of 2'), value
    assert budget_notes.cost_notice(Cost(0.5), first) == (
        'privacy cost: epsilon 0.5, delta 0, charged to role "team"\'s shared budget; left now: epsilon 1.5, '
        'delta 0')


def test_the_role_budget_bounds_what_its_users_learn_together(db, policy) -> None:
    """per_user is 1, but a sharing role's users are not charged on it: the role's 2 is what they all get."""
    async def scenario() -> list[Refuse | None]:
        ledger = PostgresLedger(db, policy)
        try:
            return [await ledger.charge(user, Cost(0.5)) for user in ("ann", "ann", "ann", "ben", "cat")]
        finally:
            await ledger.close()

    results = asyncio.run(scenario())
    assert results[:4] == [None] * 4
    refusal = results[4]
    assert refusal is not None and refusal.sqlstate == "53400"
    assert refusal.message.startswith('privacy budget exhausted: role "team", whose users share its answers and '
                                      'this budget, has epsilon 0 of 2 left'), refusal.message
    assert [row[:3] for row in charges(db)] == [(SHARED_ACCOUNT, "team", Decimal("0.5"))] * 4


def test_a_sharing_role_without_a_budget_of_its_own_gets_no_private_answer(db, policy) -> None:
    """The loader requires budgets.per_role for a sharing role; a policy built otherwise is refused, not
    charged to its users' own budgets."""
    from dataclasses import replace
    bare = replace(policy, budgets=replace(policy.budgets, per_role={"solo": policy.budgets.per_role["solo"]}))

    async def scenario():
        ledger = PostgresLedger(db, bare)
        try:
            return await ledger.charge("ann", Cost(0.1)), await ledger.standing("ann")
        finally:
            await ledger.close()

    refusal, standing = asyncio.run(scenario())
    assert refusal == Refuse("55000", 'no privacy budget applies to role "team", whose users share its answers, so '
                             "no private answer can be charged",
                             "The policy needs budgets.per_role.team: shared answers are charged to the role's "
                             "budget.")
    assert standing == [] and charges(db) == []


def test_budget_show_reports_the_role_account_and_grants_go_to_the_role(db, policy, tmp_path) -> None:
    async def scenario() -> None:
        ledger = PostgresLedger(db, policy)
        try:
            for user in ("ann", "ben", "sam"):
                assert await ledger.charge(user, Cost(0.25)) is None
        finally:
            await ledger.close()

    asyncio.run(scenario())
    out = io.StringIO()
    assert asyncio.run(_show(db, policy, "sharing.yaml", None, out)) == 0
    text = out.getvalue()
    assert 'role "team" shares answers (roles.team.share_answers): each release to one of its users is charged ' \
           'once, to its budget above, and repeated to any of them at no cost; 2 shared releases count now, the ' \
           'last at 20' in text
    assert [line.split()[:5] for line in text.splitlines() if line.startswith("role ")][:2] == [
        ["role", "solo", "0.25", "0", "9.75"], ["role", "team", "0.5", "0", "1.5"]]
    quiet = io.StringIO()
    _print_show(policy, "sharing.yaml", [], [], quiet, {"team": Activity(0, Decimal(0), Decimal(0), None)})
    assert quiet.getvalue().rstrip().endswith("at no cost; no shared release counts now")
    out = io.StringIO()
    assert asyncio.run(_show(db, policy, "sharing.yaml", "ann", out)) == 0
    [row] = [line for line in out.getvalue().splitlines() if line.startswith("ann ")]
    assert "role's (shared)" in row and " 1.5 " in row
    path = tmp_path / "sharing.yaml"
    path.write_text(POLICY)

    class Args:
        policy, upstream, budget_command, user, role, dataset = str(path), db, "grant", "ann", None, False
        epsilon, delta, note, audit_log = "1", "0", None, None

    with pytest.raises(ConfigError, match=r"user 'ann' is in role 'team', whose users share its answers and its "
                                          r"budget \(roles.team.share_answers\), so a grant of the user would "
                                          r"change nothing: grant the role \(--role team\)"):
        run_budget(Args, io.StringIO())


# ---------------------------------------------------- the cache: keys and lifetimes


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def key_of(cache: AnswerCache, policy: object, user: str, statement=STATEMENT, catalog: object = None):
    role = policy.role_for(user).name if isinstance(policy, Policy) else "team"
    return cache.key(user=user, role=role, policy=policy, catalog=catalog, privacy={"epsilon": "0.5"},
                     cost=Cost(0.5), statement=statement)


def test_a_sharing_role_keys_answers_by_role_and_the_policy_sets_their_lifetime(policy) -> None:
    clock = Clock()
    cache = AnswerCache(300, clock=clock)
    catalog = object()
    cache.put(key_of(cache, policy, "ann", catalog=catalog), answer("7"), Cost(0.5))
    # Any user of the role, not a user of another role, nor the same user under another catalog.
    assert cache.get(key_of(cache, policy, "hal", catalog=catalog)).answer == answer("7")
    assert cache.get(key_of(cache, policy, "sam", catalog=catalog)) is None
    assert cache.get(key_of(cache, policy, "ann", catalog=object())) is None
    # A role that does not share keeps answers per user.
    cache.put(key_of(cache, policy, "sam", catalog=catalog), answer("8"), Cost(0.5))
    assert cache.get(key_of(cache, policy, "sue", catalog=catalog)) is None
    # A statement that depends on who asks is never shared.
    mine = ("SELECT count(*) FROM visits WHERE doctor = current_user", 0, (), (), (), (0,))
    cache.put(key_of(cache, policy, "ann", mine, catalog), answer("1"), Cost(0.5))
    assert cache.get(key_of(cache, policy, "ben", mine, catalog)) is None
    assert cache.get(key_of(cache, policy, "ann", mine, catalog)) is not None
    # answers.reuse_for: 1d, not the cache's 300 s; a policy without it keeps the cache's own.
    kept = cache.get(key_of(cache, policy, "ben", catalog=catalog))
    assert (kept.seconds, kept.shared_by) == (86400, "team")
    clock.now += 86399
    assert cache.get(key_of(cache, policy, "cat", catalog=catalog)) is not None
    clock.now += 1
    assert cache.get(key_of(cache, policy, "cat", catalog=catalog)) is None
    plain = loads_policy(POLICY.replace("answers: {reuse_for: 1d}\n", ""))
    assert cache.lifetime(plain) == 300 and cache.lifetime(object()) == 300
    periodic = loads_policy(POLICY.replace("per_dataset: {epsilon: 100}", "per_dataset: {epsilon: 100}\n  period: 7d")
                            .replace("1d}", "budget_period}"))
    assert cache.lifetime(periodic) == 7 * 86400
    notice = budget_notes.cached_notice(kept, None)
    assert ' for role "team", whose users share its answers, for epsilon 0.5, delta 0, repeated from pgshroud\'s ' \
           "answer cache (kept 1 d)" in notice, notice


# ------------------------------------------------- the cache: one release per key


def race(cache: AnswerCache, ledger_dsn: str, policy: Policy, users: list[str], release_seconds: float = 0.3,
         refuse_first: bool = False) -> tuple[list[LocalAnswer], list[Refuse | None]]:
    """Each user on a thread of its own, with its own event loop and ledger (as sessions that do not share
    a connection), asks the same statement at once: claim, charge, release, put; or the kept answer."""
    start = threading.Barrier(len(users))
    answers: list[LocalAnswer | None] = [None] * len(users)
    outcomes: list[Refuse | None] = [None] * len(users)
    errors: list[BaseException] = []
    counter = iter(range(1000))
    lock = threading.Lock()

    async def session(index: int, user: str) -> None:
        ledger = PostgresLedger(ledger_dsn, policy)
        try:
            key = key_of(cache, policy, user)
            start.wait()
            while True:
                found = await cache.claim(key)
                if isinstance(found, CachedAnswer):
                    answers[index] = found.answer
                    return
                refusal = await ledger.charge(user, Cost(0.5))
                with lock:
                    serial = next(counter)
                if refusal is not None or (refuse_first and serial == 0):
                    outcomes[index] = refusal or Refuse("53400", "refused for the test")
                    cache.abandon(key)
                    return
                await asyncio.sleep(release_seconds)  # the aggregate runs upstream
                released = answer(f"{user}-{serial}")
                cache.put(key, released, Cost(0.5))
                answers[index] = released
                return
        finally:
            await ledger.close()

    def thread(index: int, user: str) -> None:
        try:
            asyncio.run(session(index, user))
        except BaseException as exc:  # noqa: BLE001 - the thread's failure, whatever it is, is the test's to report
            errors.append(exc)

    threads = [threading.Thread(target=thread, args=(i, u)) for i, u in enumerate(users)]
    for each in threads:
        each.start()
    for each in threads:
        each.join(60)
    assert not errors, errors
    return answers, outcomes


def test_users_of_a_sharing_role_racing_on_a_new_statement_are_charged_once(db, policy) -> None:
    cache = AnswerCache(300)
    answers, outcomes = race(cache, db, policy, TEAM)
    assert outcomes == [None] * 8
    assert len({id(a) for a in answers}) == 1 and answers[0] is not None  # the one release, for all
    assert [row[:3] for row in charges(db)] == [(SHARED_ACCOUNT, "team", Decimal("0.5"))]
    assert cache.overlaps == 0
    # Users of a role that does not share each release, and pay, their own.
    answers, outcomes = race(cache, db, policy, ["sam", "sue"])
    assert answers[0] is not answers[1] and outcomes == [None, None]
    assert sorted(row[0] for row in charges(db)[1:]) == ["sam", "sue"]


def test_a_refused_release_passes_the_claim_to_a_waiter(db, policy) -> None:
    """The first claimant's release is refused (abandon): one waiter claims in turn and pays; the rest get it."""
    cache = AnswerCache(300)
    answers, outcomes = race(cache, db, policy, TEAM[:4], refuse_first=True)
    assert sum(outcome is not None for outcome in outcomes) == 1
    served = [a for a in answers if a is not None]
    assert len(served) == 3 and len({id(a) for a in served}) == 1
    # Two charges: the refused one (refused by the test after the ledger committed it) and the one released.
    assert [row[:2] for row in charges(db)] == [(SHARED_ACCOUNT, "team")] * 2


def test_a_claim_ends_when_its_key_is_dropped_or_presumed_lost(policy) -> None:
    clock = Clock()
    cache = AnswerCache(300, clock=clock, claim_seconds=60)
    holder = key_of(cache, policy, "ann")
    assert cache.claim_blocking(holder) == Claim()
    waiter = key_of(cache, policy, "ben")
    got: list[object] = []
    thread = threading.Thread(target=lambda: got.append(cache.claim_blocking(waiter)))
    thread.start()
    thread.join(0.3)
    assert thread.is_alive()  # waiting for ann's release
    del holder  # ann's release failed on a path that did not abandon: its key goes, and the claim with it
    gc.collect()
    thread.join(10)
    assert got == [Claim()]  # ben releases it
    # A claim that outlives claim_seconds is presumed lost: the next caller releases again, and is told.
    clock.now += 61
    assert cache.claim_blocking(key_of(cache, policy, "cat")) == Claim(61.0)
    assert cache.overlaps == 1
    assert budget_notes.cost_notice(Cost(0.5), None, 61.0) == (
        "privacy cost: epsilon 0.5, delta 0 (charged again: a release of the same statement for you was still "
        "running after 61 s and is presumed lost)")


def test_an_answer_too_large_to_keep_still_ends_its_claim(policy) -> None:
    async def scenario() -> tuple[object, object]:
        cache = AnswerCache(300, max_bytes=8000)
        first, second = key_of(cache, policy, "ann"), key_of(cache, policy, "ben")
        assert await cache.claim(first) == Claim()
        waiting = asyncio.create_task(cache.claim(second))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        big = LocalAnswer("SELECT 100", (Column("n"),), tuple((str(n) * 10,) for n in range(100)))
        cache.put(first, big, Cost(0.5))
        return await asyncio.wait_for(waiting, 5), len(cache)

    assert asyncio.run(scenario()) == (Claim(), 0)  # not kept, so ben releases his own


def test_a_release_paid_in_another_process_is_charged_again_and_says_so(db, policy) -> None:
    """Two processes (two caches, two ledgers) do not share answers: the second release of the same
    statement is charged, and its notice says when the role paid for it already. Fingerprints are the same
    in every process, and differ with the statement or its settings."""
    first, second = AnswerCache(300), AnswerCache(300)
    ann, ben = key_of(first, policy, "ann"), key_of(second, policy, "ben")
    assert ann.fingerprint == ben.fingerprint and len(ann.fingerprint) == 32
    elsewhere = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(f"""
            from pgshroud.policies.loader import loads_policy
            from pgshroud.proxy.budget.answer_cache import AnswerCache
            from pgshroud.rewriter.plans import Cost
            policy = loads_policy({POLICY!r})
            print(AnswerCache(5).key(user="cat", role="team", policy=policy, catalog=object(),
                                     privacy={{"epsilon": "0.5"}}, cost=Cost(0.5), statement={STATEMENT!r}).fingerprint)
        """)], capture_output=True, text=True, cwd=REPO, check=True).stdout.strip()
    assert elsewhere == ann.fingerprint
    other = key_of(first, policy, "ann", statement=("SELECT 2",))
    assert other.fingerprint != ann.fingerprint
    assert first.release_of(key_of(first, policy, "sam")) is None  # a user's own answers are not the role's
    assert first.release_of(ann).reuse_seconds == 86400

    async def scenario():
        ledgers = [PostgresLedger(db, policy), PostgresLedger(db, policy)]
        try:
            return [await ledgers[0].charge_standing("ann", Cost(0.5), first.release_of(ann)),
                    await ledgers[1].charge_standing("ben", Cost(0.5), second.release_of(ben)),
                    await ledgers[1].charge_standing("ben", Cost(0.5), second.release_of(other)),
                    await ledgers[0].charge_standing("sam", Cost(0.5), None)]
        finally:
            for ledger in ledgers:
                await ledger.close()

    outcomes = asyncio.run(scenario())
    assert [outcome.paid_before is None for outcome in outcomes[:3]] == [True, False, True]
    notes = [row[3] for row in charges(db)]
    assert notes[:2] == [f'shared answer of role "team", asked by user "{user}"; release {ann.fingerprint}'
                         for user in ("ann", "ben")]
    assert notes[3] is None
    notice = budget_notes.cost_notice(Cost(0.5), outcomes[1])
    assert notice.startswith('privacy cost: epsilon 0.5, delta 0, charged to role "team"\'s shared budget (charged '
                             "again: the role paid for the same statement at 20"), notice
    assert notice.endswith(", but this pgshroud process does not hold that answer: another process released it, "
                           "or it was let go early); left now: epsilon 1, delta 0"), notice


# ----------------------------------------------------------------- processes


_WORKER = textwrap.dedent("""
    import asyncio, sys
    from pgshroud.policies.loader import loads_policy
    from pgshroud.proxy.budget.answer_cache import AnswerCache, CachedAnswer
    from pgshroud.proxy.budget.ledger import PostgresLedger
    from pgshroud.rewriter.plans import Column, Cost, LocalAnswer

    policy = loads_policy(sys.stdin.read())

    async def main():
        ledger = PostgresLedger(sys.argv[1], policy, max_connections=4)
        cache = AnswerCache(300)
        async def one(user, n):
            statement = (f"SELECT count(*) FROM visits WHERE cost > {n}", 0, (), (), (), (0,))
            key = cache.key(user=user, role="team", policy=policy, catalog=None, privacy={}, cost=Cost(0.25),
                            statement=statement)
            found = await cache.claim(key)
            if isinstance(found, CachedAnswer):
                print("repeated", flush=True)
                return True
            refusal = await ledger.charge(user, Cost(0.25))
            if refusal is not None:
                cache.abandon(key)
                print("refused", flush=True)
                return False
            await asyncio.sleep(0.01)
            cache.put(key, LocalAnswer("SELECT 1", (Column("count", 20),), (("1",),)), Cost(0.25))
            print("released", flush=True)
            return True
        n = 0
        while True:
            outcomes = await asyncio.gather(*(one(user, n) for user in ("ann", "ben", "cat", "dan")))
            n += 1
            if not all(outcomes):
                break
        await ledger.close()

    asyncio.run(main())
""")


def test_processes_sharing_a_ledger_but_not_answers_never_overspend_the_role(db) -> None:
    """Two processes, four users of the sharing role each, asking the same statements: each process releases
    (and pays for) each statement once, the other process's users pay again for theirs, and the role's cap
    of 2 is spent exactly, never more."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    workers = [subprocess.Popen([sys.executable, "-c", _WORKER, db], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, env=env, cwd=REPO) for _ in range(2)]
    outputs = [worker.communicate(POLICY, timeout=120)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0]
    released = sum(out.count("released\n") for out in outputs)
    assert released == 8  # 2 / 0.25, between both processes
    # Within a process, a statement is released once for its four users.
    for out in outputs:
        assert out.count("repeated\n") == 3 * out.count("released\n"), out
    rows = charges(db)
    assert len(rows) == 8 and {row[:2] for row in rows} == {(SHARED_ACCOUNT, "team")}
    assert sum(row[2] for row in rows) == Decimal(2)
    assert lock_totals(db)[("role", "team")] == Decimal(2)


# ------------------------------------------------- through the wire, as wired today


SHARERS = ("sharer1", "sharer2")


@pytest.fixture(scope="module")
def sharing_proxy(pg, health_db, health_policy):
    """pgshroud before the healthcare database, its analyst role sharing answers for a day, the cache on."""
    for user in SHARERS:
        pg.execute(f"DROP ROLE IF EXISTS {user}")
        pg.execute(f"CREATE ROLE {user} LOGIN PASSWORD '{user}' IN ROLE analyst")
    analyst = health_policy.roles["analyst"]
    policy = dataclasses.replace(
        health_policy,
        roles={**health_policy.roles, "analyst": dataclasses.replace(analyst, users=(*analyst.users, *SHARERS),
                                                                     share_answers=True)},
        budgets=Budgets(per_user=EpsilonDelta(1), per_role={"analyst": EpsilonDelta(1000, 1.0)},
                        per_dataset=EpsilonDelta(100_000, 1.0)),
        answers=AnswerReuse("1d", 86400.0))
    catalog = asyncio.run(read_catalog(health_db))
    shared = SessionContext(proxy_config(make_conninfo(pg.dsn(), sslmode="disable"), answer_cache_seconds=300),
                            plan, ledger=PostgresLedger(health_db, policy), policy=policy, catalog=lambda: catalog)
    proxy = RunningProxy(shared)
    yield proxy, shared
    proxy.stop()


def test_two_users_of_a_sharing_role_get_one_release_through_the_wire(sharing_proxy, health_db) -> None:
    """With the session as it is, the key and the charge already share: the second user's simple Query and
    the first user's prepared statement of the same text are given the first release, charged once to the
    role's account (alone, sharer1's own budget of 1 would not cover 2 x 0.75)."""
    proxy, shared = sharing_proxy
    sql = "SELECT department, count(*) FROM visits GROUP BY 1"
    with psycopg.connect(health_db, autocommit=True) as conn:
        before = conn.execute("SELECT count(*) FROM pgshroud.budget_ledger WHERE kind = 'charge' AND user_name = ''"
                              ).fetchone()[0]
    seen = []
    for user in (*SHARERS, "sharer1"):
        with psycopg.connect(proxy.dsn(user, "health", password=user), autocommit=True) as conn:
            conn.execute("SET pgshroud.epsilon = 0.75")
            seen.append(conn.execute(sql, prepare=user == "sharer1").fetchall())
    assert seen[0] == seen[1] == seen[2] and seen[0]
    with psycopg.connect(health_db, autocommit=True) as conn:
        rows = conn.execute("SELECT user_name, role_name, epsilon, note FROM pgshroud.budget_ledger "
                            "WHERE kind = 'charge' AND user_name = '' ORDER BY id").fetchall()[before:]
    [(account, role, epsilon, note)] = rows
    assert (account, role, epsilon) == (SHARED_ACCOUNT, "analyst", Decimal("0.75"))
    # The session passes the release's fingerprint, which the ledger records.
    assert note.startswith('shared answer of role "analyst", asked by user "sharer1"; release ')
    [entry] = [e for e in shared.answers._entries.values() if e.shared_by == "analyst"]
    assert entry.seconds == 86400  # answers.reuse_for, not --answer-cache-seconds
