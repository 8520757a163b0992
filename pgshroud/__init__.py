"""pgshroud: a privacy proxy for PostgreSQL.

Installed, the three packages live under this one: `pgshroud.proxy`,
`pgshroud.rewriter` and `pgshroud.policies`. In the repository they keep
their top-level folders (proxy/, rewriter/, policies/); run from there
without installing, this package finds them beside itself. Either way each
is imported under its `pgshroud.` name only (their `__init__` refuses any
other), so there is one copy of each.
"""

from pathlib import Path

_HERE = Path(__file__).resolve().parent
if not (_HERE / "proxy").is_dir() and (_HERE.parent / "proxy" / "__init__.py").is_file():
    __path__.append(str(_HERE.parent))
