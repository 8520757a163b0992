#!/usr/bin/env bash
# The checks that keep the code as it is meant to be: mypy --strict on the
# three packages and ruff (its default rules and import sorting) on the whole
# repository, both configured in pyproject.toml. Fails on any error of either;
# both run, so one report lists everything. tests/run.sh calls it.
set -uo pipefail
cd "$(dirname "$0")/.."

python=.venv/bin/python
[ -x "$python" ] || python=${PYTHON:-python3}

status=0
"$python" -m mypy || status=1
"$python" -m ruff check . || status=1
exit $status
