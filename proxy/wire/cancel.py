"""pgshroud's own cancel keys, mapped to upstream backends.

Clients never see an upstream cancel secret: they get a secret of
pgshroud's, drawn from the `secrets` module, and a CancelRequest that
matches it is sent on to the upstream backend that serves that client. The
process id is the upstream backend's own where it is free, because clients
compare it with the process id of NOTIFY messages (libpq's PQbackendPID)
and with pg_backend_pid().
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# PostgreSQL 18 uses 32-byte keys under protocol 3.2; 3.0 clients expect 4.
SECRET_LENGTH_V30 = 4
SECRET_LENGTH_V32 = 32


@dataclass(frozen=True, slots=True)
class CancelKey:
    process_id: int
    secret: bytes


class CancelRegistry:
    def __init__(self) -> None:
        self._sessions: dict[int, tuple[bytes, Callable[[], Any]]] = {}

    def issue(self, protocol_minor: int, on_cancel: Callable[[], Any], process_id: int | None = None) -> CancelKey:
        """A fresh key for one client; `on_cancel` runs when a matching request arrives."""
        length = SECRET_LENGTH_V32 if protocol_minor >= 2 else SECRET_LENGTH_V30
        while process_id is None or process_id in self._sessions:
            process_id = secrets.randbelow(2**31 - 1) + 1
        secret = secrets.token_bytes(length)
        self._sessions[process_id] = (secret, on_cancel)
        return CancelKey(process_id, secret)

    def revoke(self, key: CancelKey) -> None:
        entry = self._sessions.get(key.process_id)
        if entry is not None and entry[0] == key.secret:
            del self._sessions[key.process_id]

    def lookup(self, process_id: int, secret: bytes) -> Callable[[], Any] | None:
        entry = self._sessions.get(process_id)
        if entry is None or not hmac.compare_digest(entry[0], secret):
            return None
        return entry[1]

    def __len__(self) -> int:
        return len(self._sessions)
