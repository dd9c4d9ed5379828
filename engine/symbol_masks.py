"""Which broker symbols a ``SYMBOLS`` list names: plain names and MT5 group masks. Pure.

Brokers name the same instrument differently (``EURUSD``, ``EURUSDm``, ``EURUSD.m``,
``XAUUSD.pro``), so an entry may be an MT5 group mask: ``*`` matches any characters and a
leading ``!`` excludes. Masks are resolved by the terminal (``symbols_get(group=...)``) as one
group, in the order written, so ``EURUSD*,GBPUSD*,!*.pro`` is every EURUSD and GBPUSD variant
but the ``.pro`` ones. Plain names are taken as they are; those the broker lacks are reported,
not fatal.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from engine.protocol import validate_symbol

MASK_CHARS = "*!"


def is_group_mask(entry: str) -> bool:
    return any(c in entry for c in MASK_CHARS)


def validate_entry(entry: str) -> None:
    """A plain symbol name, or a mask: ``*`` anywhere, ``!`` only in front (raises ValueError)."""
    if not is_group_mask(entry):
        validate_symbol(entry)
        return
    body = entry.removeprefix("!")
    if not body or "!" in body:
        raise ValueError(f"group mask {entry!r}: '!' comes once, in front of a mask or name")
    if body.strip("*"):
        validate_symbol(body.replace("*", ""))


@dataclass(frozen=True, slots=True)
class SymbolRequest:
    """A ``SYMBOLS`` list split into the names asked for and the one MT5 group its masks make."""

    names: tuple[str, ...]
    group: str  # "" when there is no mask

    @classmethod
    def parse(cls, entries: Sequence[str]) -> SymbolRequest:
        masks = [e for e in entries if is_group_mask(e)]
        return cls(tuple(e for e in entries if not is_group_mask(e)), ",".join(masks))

    @property
    def includes_masks(self) -> bool:
        """Whether the group selects anything (a group of exclusions alone selects nothing)."""
        return any(not m.startswith("!") for m in self.group.split(",") if m)


def served_symbols(request: SymbolRequest, existing: Iterable[str],
                   matched: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the symbols to serve, the plain names the broker lacks): names first in the order given,
    then the group's matches in the terminal's order, each once."""
    present = set(existing)
    served = [n for n in request.names if n in present]
    missing = [n for n in request.names if n not in present]
    seen = set(served)
    for name in matched:
        if name not in seen:
            seen.add(name)
            served.append(name)
    return served, missing
