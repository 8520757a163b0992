#!/usr/bin/env bash
# Install what the test suite needs and run it. Used by README.md and CI.
# As root it installs missing system packages with apt-get; otherwise it
# names them and the tests that need them fail with the same message.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v postgres >/dev/null || missing+=(postgresql)
command -v psql >/dev/null || missing+=(postgresql-client)
command -v javac >/dev/null || missing+=(default-jdk-headless)
[ -f /usr/share/java/postgresql.jar ] || missing+=(libpostgresql-jdbc-java)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    else
        echo "tests/run.sh: please install: ${missing[*]} (e.g. sudo apt-get install ${missing[*]})" >&2
    fi
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
# mypy (strict) and ruff first: the code's checks are part of the suite.
bash tests/lint.sh
# One worker per core, each with a PostgreSQL cluster of its own
# (tests/fix_pg.py); pyproject.toml sets how tests are shared out.
exec .venv/bin/python -m pytest -q -n auto "$@"
