"""Users of a role that shares answers, racing through the wire on one new
statement (simple and extended protocol): one release, charged once to the
role's account, the same answer for all."""

from __future__ import annotations

import threading
from decimal import Decimal

import psycopg
import pytest

from tests.e2e.test_answer_sharing import SHARED_ACCOUNT, sharing_proxy  # noqa: F401  (the fixture)

RACERS = 2  # sharing_proxy makes sharer1 and sharer2


@pytest.mark.parametrize("simple", [False, True])
def test_racing_users_of_a_sharing_role_are_charged_once(sharing_proxy, health_db, simple) -> None:  # noqa: F811 - the fixture imported above
    proxy, _shared = sharing_proxy
    sql = f"SELECT department, count(*), avg(cost) FROM visits WHERE cost > {100 + simple} GROUP BY 1"
    users = ["sharer1", "sharer2"] * 3
    start = threading.Barrier(len(users))
    seen: list[object] = [None] * len(users)
    notices: list[list[str]] = [[] for _ in users]
    errors: list[BaseException] = []

    def run(index: int, user: str) -> None:
        try:
            with psycopg.connect(proxy.dsn(user, "health", password=user), autocommit=True,
                                 cursor_factory=psycopg.ClientCursor if simple else psycopg.Cursor) as conn:
                conn.add_notice_handler(lambda d: notices[index].append(d.message_primary))
                conn.execute("SET pgshroud.epsilon = 0.5")
                start.wait()
                seen[index] = sorted(conn.execute(sql).fetchall())
        except BaseException as exc:  # noqa: BLE001 - the thread's failure, whatever it is, is the test's to report
            errors.append(exc)

    with psycopg.connect(health_db, autocommit=True) as conn:
        before = conn.execute("SELECT count(*) FROM pgshroud.budget_ledger WHERE kind = 'charge'").fetchone()[0]
    threads = [threading.Thread(target=run, args=(i, u)) for i, u in enumerate(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert all(s == seen[0] for s in seen) and seen[0]
    with psycopg.connect(health_db, autocommit=True) as conn:
        rows = conn.execute("SELECT user_name, role_name, epsilon FROM pgshroud.budget_ledger WHERE kind = 'charge' "
                            "ORDER BY id").fetchall()[before:]
    assert rows == [(SHARED_ACCOUNT, "analyst", Decimal("0.5"))]
    texts = [n for each in notices for n in each if n.startswith("privacy cost")]
    assert sum("charged to role \"analyst\"'s shared budget" in t for t in texts) == 1, texts
    assert sum("privacy cost: none" in t and 'for role "analyst"' in t and "kept 1 d" in t for t in texts) == 5, texts
