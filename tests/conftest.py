"""The suite's shared hooks: fixture plugins, PostgreSQL's presence, garbage collection.

Tests under tests/e2e need PostgreSQL's server binaries. Without them a
developer's run skips those tests with the reason and what to install; a CI
run (CI=true) fails them instead, so that a broken image never passes green.
Tests under tests/unit must not ask for the cluster at all.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from pgshroud.proxy.commands.pgcluster import PgBinariesNotFound, find_pg_bindir

pytest_plugins = ["tests.fix_pg", "tests.fix_proxy", "tests.fix_health", "tests.compare"]

E2E_DIR = Path(__file__).parent / "e2e"
UNIT_DIR = Path(__file__).parent / "unit"


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@cache
def missing_postgres() -> str | None:
    """Why the end-to-end tests cannot run here, or None when they can."""
    try:
        find_pg_bindir()
    except PgBinariesNotFound as missing:
        return f"end-to-end test needs PostgreSQL: {missing}"
    return None


# The longest modules, run first so that no worker is left alone with one at
# the end; their tests are independent and each takes long, so they are
# shared out one by one (each worker builds their module fixtures once).
LONG_MODULES = (
    "test_dp_audit.py",
    "test_private_expressions_fuzz.py",
    "test_bi_differential.py",
    "test_planner_time.py",
    "test_security_crosscheck.py",
)
SPLIT_MODULES = frozenset({"test_dp_audit.py", "test_private_expressions_fuzz.py", "test_planner_time.py"})


def _run_order(item: pytest.Item) -> tuple[int, int]:
    name = item.path.name
    if name in LONG_MODULES:
        return 0, LONG_MODULES.index(name)
    return (1 if item.path.is_relative_to(E2E_DIR) else 2), 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        # Every cluster-backed fixture depends on `pg`, so it is in the closure.
        if item.path.is_relative_to(UNIT_DIR) and "pg" in getattr(item, "fixturenames", ()):
            raise pytest.UsageError(f"{item.nodeid}: a unit test must not use PostgreSQL; move it to tests/e2e")
        # Under `--dist loadgroup` (pyproject.toml) the tests of one e2e module
        # run on one worker, which builds the module's databases, proxies and
        # servers once; unit tests and the split modules go one by one.
        if item.path.is_relative_to(E2E_DIR) and item.path.name not in SPLIT_MODULES:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
    items.sort(key=_run_order)  # stable: each module keeps its own order


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if not item.path.is_relative_to(E2E_DIR):
        return
    reason = missing_postgres()
    if reason is None:
        return
    if running_in_ci():
        pytest.fail(f"{reason} (CI=true: PostgreSQL must be installed)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(autouse=True, scope="module")
def _collect_module_garbage() -> Iterator[None]:
    """A full collection once per module, for cycles that outlived a test
    (module fixtures) and were frozen with the survivors."""
    yield
    gc.unfreeze()
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _collect_garbage_between_tests() -> Iterator[None]:
    """Cyclic garbage (e.g. a finished asyncio task whose exception is logged
    when it is freed) is collected after the test, not while pytest formats
    a failure: CPython 3.11's ast.parse, which pytest and traceback both use,
    fails with "AST constructor recursion depth mismatch" when re-entered
    from a garbage-collection callback.

    The survivors are then frozen (moved out of the collector's sight): a
    full collection over the imported modules and session fixtures costs
    about 0.1 s, and there are thousands of tests; the next collection
    looks only at what the next test allocates."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()
        gc.freeze()
