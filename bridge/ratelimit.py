"""A token bucket (pure: the caller passes the time)."""
from __future__ import annotations

import math


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; each request takes one (or what it costs)."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float, tokens: float = 1.0) -> bool:
        """Take ``tokens`` at time ``now`` (seconds); ``False`` (none taken) when the bucket has fewer."""
        self._refill(now)
        if self.tokens >= tokens:
            self.tokens -= tokens
            return True
        return False

    def ready_in(self, now: float, tokens: float = 1.0) -> float:
        """Seconds from ``now`` until the bucket holds ``tokens`` if nothing is taken meanwhile
        (0 when it does now; infinite for more than ``burst``)."""
        if tokens > self.burst:
            return math.inf
        self._refill(now)
        return max(0.0, (tokens - self.tokens) / self.rate)

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
