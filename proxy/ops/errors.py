"""The error of a configuration value pgshroud cannot use.

Apart from the configuration itself, so that whatever reads a value (the
auth file, the ledger, the audit log, the policy's admin_dsn) can raise it
without importing the rest.
"""


class ConfigError(ValueError):
    """A configuration value is unusable; the message says which and why."""
