"""The last payload of each topic other publishers put on the bus, kept for ``snapshot``.

Bounded whatever they send: ``ind:`` topics by the publish policy (symbols x timeframes, and
kept while silent, as a quiet market's indicator values are still its latest), ``health:``
components to ``MAX_HEALTH_COMPONENTS``, each forgotten after ``HEALTH_SILENCE_MS`` without a
message (a worker that stopped, or a forger that went away).
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from engine.protocol import HEALTH, HEALTH_SILENCE_MS, MAX_HEALTH_COMPONENTS

_HEALTH_PREFIX = f"{HEALTH}:".encode()


class ForeignCache:
    """Topic -> last decoded payload; ``put`` refuses a new health component when full."""

    def __init__(self, max_health: int = MAX_HEALTH_COMPONENTS, health_silence_ms: int = HEALTH_SILENCE_MS) -> None:
        self._max_health = max_health
        self._silence_ms = health_silence_ms
        self._payloads: dict[bytes, dict[str, Any]] = {}
        self._heard: dict[bytes, int] = {}  # health topic -> when it was last heard (ms)
        # While full: before this time no known component can have fallen silent, so a flood
        # of new ones is refused without looking for room each time.
        self._full_until = 0

    def put(self, topic: bytes, payload: dict[str, Any], now_ms: int) -> bool:
        """Keep ``payload`` as ``topic``'s latest; False (nothing kept) for a health component
        beyond the limit while every known one is still speaking."""
        if topic.startswith(_HEALTH_PREFIX):
            if topic not in self._heard and len(self._heard) >= self._max_health:
                if now_ms < self._full_until:
                    return False
                if not self.expire(now_ms):
                    self._full_until = min(self._heard.values()) + self._silence_ms
                    return False
            self._heard[topic] = now_ms
        self._payloads[topic] = payload
        return True

    def expire(self, now_ms: int) -> int:
        """Forget the health components silent for too long; returns how many."""
        silent = [t for t, heard in self._heard.items() if now_ms - heard >= self._silence_ms]
        for topic in silent:
            del self._heard[topic]
            del self._payloads[topic]
        return len(silent)

    def items(self, prefix: bytes = b"") -> Iterator[tuple[bytes, dict[str, Any]]]:
        return ((t, p) for t, p in self._payloads.items() if t.startswith(prefix))

    def __len__(self) -> int:
        return len(self._payloads)
