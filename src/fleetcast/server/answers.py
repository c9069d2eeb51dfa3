"""The per-process memory of idle devices, so that an idle ``/next`` reads no database.

Most check-ins of a large fleet ask "anything for me?" and get "nothing"
again. Answering that from the database costs a device lookup and a
membership query per poll; answering it from memory costs an HMAC check.

An entry says "device X was accepted and had nothing to do", as of the last
database read for X. It is dropped when

* a notification names X (a deployment or phase started for it, a pause,
  resume or abort, its own status report, an operator changed its status:
  everything that can change its answer or its admission goes through the
  :class:`~fleetcast.server.notify.Notifier`, which every process receives),
* every notification may have been missed (the PostgreSQL listener
  reconnected: the whole cache is dropped),
* it is older than ``ttl`` seconds (a safety net), or
* it is the least recently used one and the cache is full (``size``).

Only "nothing to do" is remembered: an offer depends on delta generation and
time (``delta_wait``), and is always computed from the database.

A database read and a notification can race: a request reads "nothing",
the deployment commits and notifies, and only then the request stores its
stale "nothing". :attr:`AnswerCache.generation` closes that window: a
request takes the generation before it reads, and :meth:`AnswerCache.put`
ignores the entry if any notification arrived in between.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass
class IdleEntry:
    """One idle device: when the entry expires, and its last-seen time as last recorded."""

    expires: float
    last_seen: dt.datetime | None


class AnswerCache:
    """Devices known to be accepted and idle (see the module docstring).

    Args:
        size: most devices remembered (least recently used ones go first);
            0 disables the cache.
        ttl: seconds an entry is trusted without a database read.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self, *, size: int, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.size = size
        self.ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[str, IdleEntry] = OrderedDict()
        #: Incremented by every invalidation; see :meth:`put`.
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, device_id: str) -> IdleEntry | None:
        """The device's entry if it is still valid, else None."""
        entry = self._entries.get(device_id)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            del self._entries[device_id]
            return None
        self._entries.move_to_end(device_id)
        return entry

    def put(self, device_id: str, last_seen: dt.datetime | None, generation: int) -> None:
        """Remember an idle device, read from the database at ``generation``.

        Nothing is stored when an invalidation happened since that read
        began: the read may predate the change the invalidation announced.
        """
        if self.size <= 0 or generation != self.generation:
            return
        self._entries[device_id] = IdleEntry(self._clock() + self.ttl, last_seen)
        self._entries.move_to_end(device_id)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def invalidate(self, device_ids: Iterable[str] | None) -> None:
        """Forget these devices (None: every device)."""
        self.generation += 1
        if device_ids is None:
            self._entries.clear()
            return
        for device_id in device_ids:
            self._entries.pop(device_id, None)
