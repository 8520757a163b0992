"""One client's conversation after startup: statements through the planner, answers relayed or replaced."""
