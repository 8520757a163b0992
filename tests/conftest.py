import gc

import pytest

pytest_plugins = ["tests.fix_pg", "tests.fix_proxy", "tests.fix_health"]


@pytest.fixture(autouse=True)
def _collect_garbage_between_tests():
    """Cyclic garbage (e.g. a finished asyncio task whose exception is logged
    when it is freed) is collected after the test, not while pytest formats
    a failure: CPython 3.11's ast.parse, which pytest and traceback both use,
    fails with "AST constructor recursion depth mismatch" when re-entered
    from a garbage-collection callback."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()
