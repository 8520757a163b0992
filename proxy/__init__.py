"""Everything that touches the network, the clock or a disk: the wire, the session, the budget, operations and commands."""

if __name__ != "pgshroud.proxy":
    raise ImportError(f"pgshroud's proxy package is imported as pgshroud.proxy, not as {__name__}")
