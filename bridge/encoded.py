"""JSON encoded ahead of a packet, in slices that let the event loop through, and spliced into it.

python-socketio encodes a packet's whole payload in one ``json.dumps`` call, in the event loop:
a reply of a thousand rows of fifty numbers takes some 100 ms, and the acknowledgement carrying
the same payload as much again, while no flush can run. ``encode_in_slices`` encodes such a list
a slice at a time with ``await asyncio.sleep(0)`` between (a flush that fell due then runs after
at most the next slice), once; ``SplicingJson`` is the packet's ``json``, which writes an
``Encoded`` value's text verbatim, so the reply event and the acknowledgement both reuse it.
"""
from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from typing import Any

from engineio import json as engineio_json

SEPARATORS = (",", ":")  # python-socketio's, so a spliced packet is the packet it would encode


class Encoded:
    """A JSON text encoded already; ``SplicingJson.dumps`` writes it as it is."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


async def encode_in_slices(items: Sequence[Any], per_slice: int) -> Encoded:
    """``items`` as one JSON array, read and encoded ``per_slice`` (>= 1) items at a time (a
    sequence may build its items as they are read), the event loop let through after each slice."""
    parts: list[str] = []
    for start in range(0, len(items), per_slice):
        parts.append(engineio_json.dumps(items[start:start + per_slice], separators=SEPARATORS)[1:-1])
        await asyncio.sleep(0)
    return Encoded("[" + ",".join(parts) + "]")


class SplicingJson:
    """python-engineio's ``json`` module for python-socketio's packets, but ``dumps`` writes each
    ``Encoded`` value's text in its place (through a per-call random marker: no client text can
    name it)."""

    loads = staticmethod(engineio_json.loads)

    @staticmethod
    def dumps(obj: Any, **kwargs: Any) -> str:
        texts: list[str] = []
        markers: list[str] = []

        def splice(value: Any) -> str:
            if not isinstance(value, Encoded):
                raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
            texts.append(value.text)
            markers.append(f"{secrets.token_hex(8)}:{len(texts)}")
            return markers[-1]

        out = engineio_json.dumps(obj, default=splice, **kwargs)
        for marker, text in zip(markers, texts):
            out = out.replace(f'"{marker}"', text, 1)
        return out
