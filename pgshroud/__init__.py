"""pgshroud: a privacy proxy for PostgreSQL.

Its three packages are `pgshroud.proxy`, `pgshroud.rewriter` and
`pgshroud.policies`. The repository keeps them in top-level folders
(proxy/, rewriter/, policies/) that this folder links to, so a run from the
repository root imports the same modules as an installed copy; each
package's `__init__` refuses to be imported under any other name, so there
is one copy of each. `pgshroud.sqlstate` names the error codes all three
use.
"""
