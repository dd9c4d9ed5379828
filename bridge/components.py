"""The latest health of the bus' other components (indicator workers, the launcher), bounded (pure).

Any process on the bus may publish ``health:COMPONENT:``, so the table that ``/health`` and
``/metrics`` list holds at most ``limit`` components: a component silent for ``expire_s`` is
forgotten, and a new one is refused (counted) while the table is full of live ones, so those
heard first, the real workers in practice, keep their place during a flood of forged names.
"""
from __future__ import annotations

from typing import Any

MAX_COMPONENTS = 64
EXPIRE_S = 30.0


class ComponentTable:
    """``{component: (last heard, payload)}`` of at most ``limit`` components, none silent for
    longer than ``expire_s`` (the caller passes the time)."""

    def __init__(self, limit: int = MAX_COMPONENTS, expire_s: float = EXPIRE_S) -> None:
        self.limit = limit
        self.expire_s = expire_s
        self._heard: dict[str, tuple[float, dict[str, Any]]] = {}
        self.refused = 0
        self.expired = 0

    def put(self, component: str, health: dict[str, Any], now: float) -> bool:
        """Record ``component``'s health; ``False`` (and counted) when the table is full."""
        heard = self._heard
        if heard.pop(component, None) is None and len(heard) >= self.limit:
            self.expire(now)
            if len(heard) >= self.limit:
                self.refused += 1
                return False
        heard[component] = (now, health)  # last in the dict: the dict is in the order last heard
        return True

    def expire(self, now: float) -> None:
        """Forget the components silent for more than ``expire_s`` (the first ones in the dict)."""
        heard = self._heard
        while heard:
            name, (seen, _) = next(iter(heard.items()))
            if now - seen <= self.expire_s:
                return
            del heard[name]
            self.expired += 1

    def items(self, now: float) -> list[tuple[str, tuple[float, dict[str, Any]]]]:
        """The components heard within ``expire_s``, by name: ``(name, (last heard, payload))``."""
        self.expire(now)
        return sorted(self._heard.items())

    def __len__(self) -> int:
        return len(self._heard)
