"""One client's conversation after startup: statements through the planner, answers relayed or replaced.

Who owns what:

- conversation.py: the session without I/O, bytes and results in, effects out; the
  table of protocol phase and client message type that dispatches each message.
- effects.py: what the conversation asks its driver to do (send, pause, close,
  cancel, charge, read the ledger, claim a kept answer, plan or finalize off the loop).
- driver.py: the asyncio driver (Session) that carries the effects out.
- responses.py: what PostgreSQL's answers are expected to be, and what replaces them.
- registry.py: prepared statements and portals, and the names they go upstream under.
- privacy.py: the session's pgshroud settings and their undo.
- planning.py: the plan context and planning (in place or off the loop).
- release.py: a private answer's charge, the answer cache, its notices.
- cursors.py: cursors that hold private answers; bind_checks.py: a private Bind's checks.
- answers.py, budget_notes.py: the wire form and the notices of pgshroud's own answers.
"""
