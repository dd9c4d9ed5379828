"""The ``ind:`` payload of one (symbol, timeframe) written with one ``struct`` pack: the bytes
``encode`` writes for the map the slow path builds (``IndicatorSeries.on_candle`` and the
bus' stamp), key order and integer forms included."""
from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import msgpack

from engine.protocol import encode

_header = msgpack.Packer(use_bin_type=True).pack_map_header


class IndicatorEncoder:
    """Encodes ``{symbol, timeframe, time, closed, *keys, seq, epoch}``; a NaN value (still
    warming up) travels as nil, which the map is encoded as it is for (``encode``)."""

    __slots__ = ("symbol", "timeframe", "keys", "_head", "_closed", "_keys", "_pack", "_seq", "_epoch")

    def __init__(self, symbol: str, timeframe: str, keys: Sequence[str]) -> None:
        self.symbol, self.timeframe, self.keys = symbol, timeframe, tuple(keys)
        self._head = (_header(len(self.keys) + 6) + encode("symbol") + encode(symbol)
                      + encode("timeframe") + encode(timeframe) + encode("time"))
        self._closed = {True: encode("closed") + b"\xc3", False: encode("closed") + b"\xc2"}
        self._keys = [encode(key) + b"\xcb" for key in self.keys]  # each key and a float64's type byte
        self._pack = struct.Struct(">" + "".join(f"{len(k)}sd" for k in self._keys)).pack
        self._seq, self._epoch = encode("seq"), encode("epoch")

    def encode(self, time: int, closed: bool, values: list[float], seq: int, epoch: int) -> bytes:
        """The payload of ``values`` (``keys`` order, floats) for the bar opened at ``time``."""
        if math.isnan(sum(values)):  # a NaN among them (or infinities of both signs)
            payload = {"symbol": self.symbol, "timeframe": self.timeframe, "time": time, "closed": closed}
            payload.update(zip(self.keys, (None if math.isnan(v) else v for v in values)))
            payload["seq"], payload["epoch"] = seq, epoch
            return encode(payload)
        fields: list[object] = [None] * (2 * len(values))
        fields[0::2], fields[1::2] = self._keys, values
        return b"".join((self._head, encode(time), self._closed[closed], self._pack(*fields),
                         self._seq, encode(seq), self._epoch, encode(epoch)))
