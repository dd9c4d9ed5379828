"""Checking other publishers' payloads by a learned layout instead of decoding each one.

The engine relays an indicator worker's values only if each payload is a msgpack map it could
decode (a hostile publisher must not poison subscribers), and at full speed decoding each one
cost a tenth of the engine. A publisher writes the same flat map over and over: the same keys,
each value in the same msgpack form; only the numbers change. ``layout_of`` takes a payload that
decoded and returns where its fixed-width numbers' value bytes are. A later payload of the same
topic and length holding every other byte unchanged (the map header, every key, every type byte,
every string, nil, bool and fixint) parses the same way byte for byte, so it decodes to a map
with the same keys and value types: it is valid without being decoded. Anything else (nested
values, binaries, another length or a changed byte) is decoded as before.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

# The value width of each fixed-width msgpack number's type byte: float 32/64, uint 8..64, int 8..64.
_NUMBER_WIDTH = {0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}
_NIL_AND_BOOLS = (0xC0, 0xC2, 0xC3)
MAX_LAYOUTS = 1024  # (topic, length) pairs remembered: a publisher's few forms, however many it sends
# A topic's layouts: a worker's value changes length as its seq's msgpack form grows (fixint,
# uint8, 16, 32) and while its indicators warm up (nil); past this, its oldest is forgotten.
LAYOUTS_PER_TOPIC = 8
MIN_BATCH = 4  # fewer messages of one layout in a batch are decoded: checking them costs more


class Layout(NamedTuple):
    """The constant bytes of a payload form: their offsets and their values."""

    at: np.ndarray
    constant: np.ndarray


def layout_of(payload: bytes) -> Layout | None:
    """The layout of ``payload``, a msgpack map that decoded, when it is flat (its values
    numbers, strings, nil or bools); None otherwise."""
    try:
        head = payload[0]
        if 0x80 <= head <= 0x8F:
            entries, pos = head & 0x0F, 1
        elif head == 0xDE:
            entries, pos = int.from_bytes(payload[1:3], "big"), 3
        else:
            return None
        variable = np.zeros(len(payload), bool)
        for _ in range(2 * entries):
            kind = payload[pos]
            if kind <= 0x7F or kind >= 0xE0 or kind in _NIL_AND_BOOLS:
                pos += 1
            elif 0xA0 <= kind <= 0xBF:  # fixstr
                pos += 1 + (kind & 0x1F)
            elif kind == 0xD9:  # str 8
                pos += 2 + payload[pos + 1]
            elif kind in _NUMBER_WIDTH:
                width = _NUMBER_WIDTH[kind]
                variable[pos + 1:pos + 1 + width] = True
                pos += 1 + width
            else:
                return None
    except IndexError:
        return None
    if pos != len(payload):
        return None
    at = np.flatnonzero(~variable)
    return Layout(at, np.frombuffer(payload, np.uint8)[at].copy())


class FrameLayouts:
    """Learned layouts by (topic, payload length); ``matching`` checks a batch against them."""

    def __init__(self, max_layouts: int = MAX_LAYOUTS, per_topic: int = LAYOUTS_PER_TOPIC) -> None:
        self.max_layouts, self.per_topic = max_layouts, per_topic
        self._layouts: dict[tuple[bytes, int], Layout | None] = {}
        self._lengths: dict[bytes, list[int]] = {}  # topic -> its layouts' lengths, oldest first

    def learn(self, topic: bytes, payload: bytes) -> None:
        """Remember the layout of ``payload``, which decoded as a map (None: it has none); a
        topic's oldest is forgotten past ``per_topic``, so its current form is always learned."""
        key = (topic, len(payload))
        if key in self._layouts:
            return
        lengths = self._lengths.get(topic)
        if lengths is None:
            if len(self._lengths) * self.per_topic >= self.max_layouts:
                return
            lengths = self._lengths[topic] = []
        if len(lengths) == self.per_topic:
            del self._layouts[(topic, lengths.pop(0))]
        lengths.append(len(payload))
        self._layouts[key] = layout_of(payload)

    def matching(self, messages: list[list[bytes]], eligible: Callable[[bytes], bool]) -> set[int]:
        """The indexes of the two-frame messages of ``eligible`` topics whose payload holds a
        learned layout's constant bytes, checked at once per layout."""
        groups: dict[tuple[bytes, int], list[int]] = {}
        for i, frames in enumerate(messages):
            if len(frames) == 2:
                key = (frames[0], len(frames[1]))
                if self._layouts.get(key) is not None:
                    groups.setdefault(key, []).append(i)
        matched: set[int] = set()
        for (topic, size), indexes in groups.items():
            if len(indexes) < MIN_BATCH or not eligible(topic):
                continue
            layout = self._layouts[(topic, size)]
            rows = np.frombuffer(b"".join(messages[i][1] for i in indexes), np.uint8).reshape(-1, size)
            same = (rows[:, layout.at] == layout.constant).all(axis=1)
            matched.update(i for i, ok in zip(indexes, same.tolist()) if ok)
        return matched

    def __len__(self) -> int:
        return len(self._layouts)
