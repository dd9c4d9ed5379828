"""The ``INDICATORS`` setting: a comma-separated list of ``[name=]kind:param:param...`` (pure).

``parse_indicators("ema:21,fast=ema:9,bbands:20:2:2")`` gives the instances ``ema_21``, ``fast``
and ``bbands_20_2_2``; an unnamed instance is named by its kind and parameters joined with ``_``.
A single-output instance publishes the key ``<name>``, a multi-output one ``<name><suffix>`` per
output (``catalog.KINDS``). Anything wrong raises ``SpecError`` naming the entry. The workers read
this setting, and the bridge validates a client's spec with the same function (``max_instances``).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from engine.protocol import MAX_INDICATOR_VALUES
from indicators._core import Indicator
from indicators.catalog import KINDS, Kind, Param

# Today's four indicators under today's payload keys.
DEFAULT_INDICATORS = "sma=sma:20,ema=ema:20,rsi=rsi:14,macd=macd:12:26:9"
# The keys every ind: payload carries besides the indicator values.
PAYLOAD_KEYS = ("symbol", "timeframe", "time", "closed", "seq", "epoch")
NAME = re.compile(r"[a-z][a-z0-9_]{0,39}\Z")
MAX_SPEC_CHARS = 4096


class SpecError(ValueError):
    """An indicator spec that cannot be used; the message points at the bad entry."""


@dataclass(frozen=True, slots=True)
class Instance:
    """One configured indicator: its name, kind and constructor arguments."""

    name: str
    kind: Kind
    params: tuple[int | float, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        """The payload keys of its outputs, in the order ``update`` returns them."""
        return tuple(self.name + suffix for suffix in self.kind.outputs)

    @property
    def spec(self) -> str:
        """The entry that names it, as ``parse_indicators`` reads it."""
        return f"{self.name}={':'.join([self.kind.name, *map(_text, self.params)])}"

    def make(self) -> Indicator:
        """A fresh indicator for it."""
        return self.kind.cls(*self.params)


def _text(value: int | float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _param(text: str, param: Param) -> int | float:
    """A parameter from its text, checked against TA-Lib's limits."""
    try:
        value: int | float = param.type(text)
    except ValueError:
        what = "an integer" if param.type is int else "a number"
        raise SpecError(f"{param.name} must be {what}, got {text!r}") from None
    if not (math.isfinite(value) and param.low <= value <= param.high):
        raise SpecError(f"{param.name} must be in [{_text(param.type(param.low))}, {_text(param.type(param.high))}]"
                        f" (TA-Lib's range), got {text}")
    return value


def parse_entry(entry: str, max_period: int | None = None) -> Instance:
    """One ``[name=]kind:param:param...`` entry; ``SpecError`` says what is wrong with it (an
    integer parameter above ``max_period`` too, checked before the indicator is built)."""
    name, sep, call = entry.rpartition("=")
    name, call = name.strip(), call.strip()
    kind_text, *texts = (part.strip() for part in call.split(":"))
    kind = KINDS.get(kind_text.lower())
    if kind is None:
        raise SpecError(f"unknown kind {kind_text[:40]!r} (known: {', '.join(KINDS)})")
    if len(texts) != len(kind.params):
        names = ":".join(p.name for p in kind.params)
        raise SpecError(f"{kind.name} takes {len(kind.params)} parameter(s) ({kind.name}{':' if names else ''}"
                        f"{names}), got {len(texts)}")
    params = tuple(_param(text, param) for text, param in zip(texts, kind.params))
    for value, param in zip(params, kind.params):
        if max_period is not None and param.type is int and value > max_period:
            raise SpecError(f"{param.name} must be at most {max_period} here (the bars of history), got {value}")
    if not sep:
        name = "_".join([kind.name, *map(_text, params)])
    if not NAME.match(name):
        raise SpecError(f"name {name[:60]!r} must be lower-case letters, digits and _ (a letter first, "
                        "at most 40)")
    instance = Instance(name, kind, params)
    try:
        instance.make()  # the class checks its arguments too: refuse here what it would refuse
    except (TypeError, ValueError) as exc:
        raise SpecError(str(exc)) from None
    return instance


def parse_indicators(text: str, max_instances: int | None = None,
                     max_period: int | None = None) -> tuple[Instance, ...]:
    """The instances of a spec, in its order; ``SpecError`` names the first bad entry (an unknown
    kind, a wrong parameter count, a parameter TA-Lib refuses, a duplicate name or key) or says
    the spec has more than ``max_instances`` entries; ``max_period`` bounds every period."""
    if not isinstance(text, str):
        raise SpecError(f"must be a string like {DEFAULT_INDICATORS!r}, got {type(text).__name__}")
    if len(text) > MAX_SPEC_CHARS:
        raise SpecError(f"is {len(text)} characters long, at most {MAX_SPEC_CHARS}")
    entries = text.split(",")
    if not text.strip():
        raise SpecError(f"names no indicator (e.g. {DEFAULT_INDICATORS!r})")
    if max_instances is not None and len(entries) > max_instances:
        raise SpecError(f"names {len(entries)} indicators, at most {max_instances}")
    instances: list[Instance] = []
    owner = {key: "the payload" for key in PAYLOAD_KEYS}  # key -> the entry that publishes it
    for number, entry in enumerate(entries, 1):
        where = f"entry {number} {entry.strip()[:60]!r}"
        if not entry.strip():
            raise SpecError(f"entry {number} is empty")
        try:
            instance = parse_entry(entry, max_period)
        except SpecError as exc:
            raise SpecError(f"{where}: {exc}") from None
        for key in instance.keys:
            if key in owner:
                what = "duplicate name" if key == instance.name else "duplicate key"
                raise SpecError(f"{where}: {what} {key!r} (already published by {owner[key]})")
            owner[key] = f"entry {instance.spec!r}"
        instances.append(instance)
    keys = len(owner) - len(PAYLOAD_KEYS)
    if keys > MAX_INDICATOR_VALUES:
        raise SpecError(f"has {keys} output keys, at most {MAX_INDICATOR_VALUES} (what an ind: payload carries)")
    return tuple(instances)


DEFAULT_SET = parse_indicators(DEFAULT_INDICATORS)
