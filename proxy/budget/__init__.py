"""The durable privacy budget ledger and the cache of released answers."""
