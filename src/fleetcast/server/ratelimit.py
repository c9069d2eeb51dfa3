"""Token buckets that bound device authentication attempts, per key, in one process.

Each key (a client address, an identity hash) has a bucket of ``burst``
attempts that refills at ``per_minute``. An attempt takes one; an empty
bucket refuses it and says when the next one will be there. The buckets live
in memory: every server process counts on its own, so with ``N`` processes a
client gets up to ``N`` times the limit, and a restart forgets them. At most
``max_keys`` buckets are kept; the least recently used goes first, so a flood
of new keys cannot exhaust memory.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from fleetcast.server.errors import RateLimitedError


class TokenBuckets:
    """One token bucket per key.

    Args:
        burst: attempts a fresh key may make at once; 0 turns the limit off.
        per_minute: attempts added back per minute.
        max_keys: buckets kept in memory (least recently used dropped first).
        clock: monotonic seconds (tests pass a fake).
    """

    def __init__(
        self,
        burst: int,
        per_minute: float,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.rate = per_minute / 60.0
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """Take one attempt for ``key``; return 0 if allowed, else seconds until the next one."""
        if self.burst <= 0:
            return 0.0
        now = self._clock()
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate if self.rate > 0 else math.inf
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait

    def wait(self, key: str) -> float:
        """Seconds until ``key`` has an attempt left (0: now), without taking one."""
        if self.burst <= 0 or key not in self._buckets:
            return 0.0
        tokens, last = self._buckets[key]
        tokens = min(float(self.burst), tokens + (self._clock() - last) * self.rate)
        if tokens >= 1.0:
            return 0.0
        return (1.0 - tokens) / self.rate if self.rate > 0 else math.inf


@dataclass
class AuthRateLimits:
    """The limits on ``POST /auth``: per client address and per device identity."""

    per_client: TokenBuckets = field(default_factory=lambda: TokenBuckets(0, 0))
    per_identity: TokenBuckets = field(default_factory=lambda: TokenBuckets(0, 0))

    def check_client(self, client: str | None) -> None:
        """Raises: RateLimitedError: this address made too many attempts."""
        if client is not None:
            _refuse_if(self.per_client.take(client), "from this address")

    def check_identity(self, identity_hash: str) -> None:
        """Raises: RateLimitedError: this identity made too many attempts."""
        _refuse_if(self.per_identity.take(identity_hash), "for this device identity")

    def check_failed_tokens(self, client: str | None) -> None:
        """Refuse a client whose wrong tokens used up its address's budget (DDI).

        hawkBit DDI devices send their token with every request, so only the
        *failed* ones count (:meth:`count_failed_token`), against the same
        per-address bucket as ``POST /auth``: a device polling correctly is
        never slowed down, a token guesser is.

        Raises: RateLimitedError: no attempt left for this address.
        """
        if client is not None:
            _refuse_if(self.per_client.wait(client), "from this address")

    def count_failed_token(self, client: str | None) -> None:
        """Charge one failed token to the client's address."""
        if client is not None:
            self.per_client.take(client)


def _refuse_if(wait: float, what: str) -> None:
    if wait > 0:
        retry_after = max(1, math.ceil(min(wait, 86400.0)))
        raise RateLimitedError(
            f"too many authentication attempts {what}; retry in {retry_after}s",
            retry_after=retry_after,
        )
