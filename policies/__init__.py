"""What is allowed and at what cost: the policy model, its loader, the masks and the accounting rules."""

if __name__ != "pgshroud.policies":
    raise ImportError(f"pgshroud's policies package is imported as pgshroud.policies, not as {__name__}")
