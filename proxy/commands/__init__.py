"""The `pgshroud` command and its subcommands, and the throwaway cluster they and the tests use."""
