"""A small in-process cache of authenticated tokens: most requests then authenticate without
touching the database. An entry lives at most `ttl` seconds of real time, so a revocation or
an org's deletion made by another process takes effect within that bound; made by this
process, it takes effect at once (the entry is dropped when the change commits)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

P = TypeVar("P")


class TokenCache(Generic[P]):
    def __init__(
        self,
        *,
        ttl: float = 30.0,
        max_entries: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.clock = clock
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, P, uuid.UUID, uuid.UUID | None]] = (
            OrderedDict()
        )

    def get(self, token_hash: str) -> P | None:
        if self.ttl <= 0:
            return None
        with self._lock:
            entry = self._entries.get(token_hash)
            if entry is None:
                return None
            if entry[0] <= self.clock():
                del self._entries[token_hash]
                return None
            return entry[1]

    def put(
        self, token_hash: str, principal: P, *, token_id: uuid.UUID, org_id: uuid.UUID | None
    ) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            self._entries[token_hash] = (self.clock() + self.ttl, principal, token_id, org_id)
            self._entries.move_to_end(token_hash)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def drop_token(self, token_id: uuid.UUID) -> None:
        with self._lock:
            for key in [k for k, e in self._entries.items() if e[2] == token_id]:
                del self._entries[key]

    def drop_org(self, org_id: uuid.UUID) -> None:
        with self._lock:
            for key in [k for k, e in self._entries.items() if e[3] == org_id]:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
