"""A histogram for one thread (pure): cumulative buckets for ``/metrics``, and the most recent
values for the percentiles ``/health`` shows.

``observe`` is a bisect, two additions and an append: no lock (the bridge is one asyncio thread),
unlike ``prometheus_client.Histogram`` (a lock and a linear bucket scan per observation), since
some histograms observe every tick on the bus.
"""
from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Sequence

Percentiles = dict[str, "int | float | None"]


class LiteHistogram:
    """Counts per bucket (``le`` each bound, the last one +Inf), their sum, and the last ``recent`` values."""

    __slots__ = ("bounds", "counts", "total", "recent")

    def __init__(self, bounds: Sequence[float], recent: int = 0) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0
        self.recent: deque[float] = deque(maxlen=recent)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.recent.append(value)

    @property
    def count(self) -> int:
        """Observations since the start."""
        return sum(self.counts)

    def buckets(self) -> list[tuple[str, int]]:
        """``[(le, cumulative count), ...]`` ending with ``+Inf``, as Prometheus lays them out."""
        out, running = [], 0
        for bound, count in zip((*(repr(float(b)) for b in self.bounds), "+Inf"), self.counts):
            running += count
            out.append((bound, running))
        return out

    def percentiles(self, scale: float = 1.0) -> Percentiles:
        """p50/p99/max of the recent values times ``scale``, rounded (``None`` before any); ``n``
        of them, and ``count`` since the start."""
        ordered = sorted(self.recent)
        n = len(ordered)
        if not n:
            return {"p50": None, "p99": None, "max": None, "n": 0, "count": self.count}
        return {"p50": round(ordered[n // 2] * scale), "p99": round(ordered[min(n - 1, int(0.99 * n))] * scale),
                "max": round(ordered[-1] * scale), "n": n, "count": self.count}
