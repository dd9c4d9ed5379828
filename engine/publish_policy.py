"""Which topics a publisher other than the engine may put on the bus, and the tally of refusals.

Only the engine speaks for the market: ticks, candles, books, the account, the summary and the
engine's and launcher's health come from it alone (it publishes them straight out of the bus'
XPUB side). Whatever arrives on the publishers' (XSUB) side is someone else's, and may only be
one of their own families (``ForeignPolicy``):

* ``ind:SYMBOL:TF:`` for a symbol the engine serves and an MT5 timeframe name, which bounds the
  family to symbols x timeframes;
* ``health:COMPONENT:`` for a component other than ``engine`` and ``service``.

``mt5-engine --bus-only`` cannot tell the engine's messages from the others' by the socket
they arrive on; with CURVE on it tells them by key (``PrefixGrant``, from each client
certificate's ``publish`` metadata, see ``engine.security``).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Protocol

from engine.protocol import (
    ENGINE_COMPONENTS,
    ENGINE_KINDS,
    HEALTH,
    INDICATOR,
    MAX_COMPONENT_LEN,
    ProtocolError,
    topic_parts,
    validate_symbol,
)
from engine.timeframes import TIMEFRAMES

NOT_TWO_FRAMES = "not a [topic, payload] message"
MALFORMED_TOPIC = "malformed topic"
UNKNOWN_KIND = "unknown topic kind"
UNSERVED = "ind: for a symbol or timeframe not served"
BAD_COMPONENT = "malformed health component"
NOT_GRANTED = "topic not granted to the key"
UNKNOWN_KEY = "no grant for the key"
_ENGINE_ONLY = {kind: f"{kind}: is the engine's" for kind in ENGINE_KINDS}
_ENGINE_HEALTH = {name: f"{HEALTH}:{name}: is the engine's" for name in ENGINE_COMPONENTS}

LOG_EVERY_MS = 10_000


class Grant(Protocol):
    """What one publisher may put on the bus."""

    everything: bool  # every topic, unchecked (the engine's own key)

    def refusal(self, topic: bytes, frames: int) -> str | None:
        """None when a message of ``frames`` frames on ``topic`` may go out, else why not."""


class ForeignPolicy:
    """The families any publisher other than the engine may publish.

    ``symbols`` are the engine's; None accepts any valid symbol (a bus run alone does not know
    them, and caches nothing).
    """

    everything = False

    def __init__(self, symbols: Iterable[str] | None = None) -> None:
        self._symbols = None if symbols is None else frozenset(symbols)

    def refusal(self, topic: bytes, frames: int) -> str | None:
        if frames != 2:
            return NOT_TWO_FRAMES
        try:
            kind, *parts = topic_parts(topic)
        except (ProtocolError, UnicodeDecodeError):
            return MALFORMED_TOPIC
        if kind == INDICATOR:
            return None if len(parts) == 2 and self._serves(*parts) else UNSERVED
        if kind == HEALTH:
            if parts and parts[0] in _ENGINE_HEALTH:
                return _ENGINE_HEALTH[parts[0]]
            return None if _valid_component(parts) else BAD_COMPONENT
        return _ENGINE_ONLY.get(kind, UNKNOWN_KIND)

    def _serves(self, symbol: str, timeframe: str) -> bool:
        if timeframe not in TIMEFRAMES:
            return False
        if self._symbols is not None:
            return symbol in self._symbols
        try:
            validate_symbol(symbol)
        except ProtocolError:
            return False
        return True


def _valid_component(parts: list[str]) -> bool:
    name = ":".join(parts)
    return bool(parts) and all(parts) and len(name) <= MAX_COMPONENT_LEN and name.isprintable()


class PrefixGrant:
    """Topics under any of ``prefixes`` (``b""`` grants every topic: the engine's own key)."""

    def __init__(self, prefixes: Iterable[bytes]) -> None:
        self.prefixes = tuple(prefixes)

    def refusal(self, topic: bytes, frames: int) -> str | None:
        if frames != 2:
            return NOT_TWO_FRAMES
        return None if topic.startswith(self.prefixes) else NOT_GRANTED

    @property
    def everything(self) -> bool:
        return b"" in self.prefixes


def parse_prefixes(text: str) -> PrefixGrant:
    """``"ind:,health:indicators:"`` -> a grant of those prefixes; ``"*"`` grants every topic,
    ``""`` none (a key that only subscribes)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    return PrefixGrant(b"" if item == "*" else item.encode() for item in items)


class Refusals:
    """Refused messages counted by reason, reported in one line at most every ``every_ms``
    (a flood of forged messages must not become a flood of log lines)."""

    def __init__(self, every_ms: int = LOG_EVERY_MS) -> None:
        self.total = 0
        self._every = every_ms
        self._pending: Counter[str] = Counter()
        self._next_report = 0

    def add(self, reason: str) -> None:
        self.total += 1
        self._pending[reason] += 1

    def report(self, now_ms: int) -> str | None:
        """The line to log now, if anything was refused and the last line is old enough."""
        if not self._pending or now_ms < self._next_report:
            return None
        self._next_report = now_ms + self._every
        counts = ", ".join(f"{n} {reason}" for reason, n in self._pending.most_common())
        self._pending.clear()
        return f"dropped {counts} from other publishers ({self.total} in all)"
