"""A token bucket (pure: the caller passes the time)."""
from __future__ import annotations


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; each request takes one."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float, tokens: float = 1.0) -> bool:
        """Take ``tokens`` at time ``now`` (seconds); ``False`` (none taken) when the bucket has fewer."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= tokens:
            self.tokens -= tokens
            return True
        return False
