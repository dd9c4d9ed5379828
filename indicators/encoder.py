"""The ``ind:`` payload of one (symbol, timeframe) written with one ``struct`` pack: the bytes
``encode`` writes for the map the slow path builds (``IndicatorSeries.on_candle`` and the
bus' stamp), key order and integer forms included."""
from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import msgpack
import numpy as np

from engine.protocol import encode

_header = msgpack.Packer(use_bin_type=True).pack_map_header


class IndicatorEncoder:
    """Encodes ``{symbol, timeframe, time, closed, *keys, seq, epoch}``; a NaN value (still
    warming up) travels as nil, which the map is encoded as it is for (``encode``)."""

    __slots__ = ("symbol", "timeframe", "keys", "_head", "_closed", "_keys", "_pack", "_seq", "_epoch", "_records")

    def __init__(self, symbol: str, timeframe: str, keys: Sequence[str]) -> None:
        self.symbol, self.timeframe, self.keys = symbol, timeframe, tuple(keys)
        self._head = (_header(len(self.keys) + 6) + encode("symbol") + encode(symbol)
                      + encode("timeframe") + encode(timeframe) + encode("time"))
        self._closed = {True: encode("closed") + b"\xc3", False: encode("closed") + b"\xc2"}
        self._keys = [encode(key) + b"\xcb" for key in self.keys]  # each key and a float64's type byte
        self._pack = struct.Struct(">" + "".join(f"{len(k)}sd" for k in self._keys)).pack
        self._seq, self._epoch = encode("seq"), encode("epoch")
        self._records: dict[tuple[int, int, int], np.ndarray] = {}  # closed rows' template, by int forms

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

    def encode_closed(self, times: np.ndarray, values: np.ndarray, first_seq: int, epoch: int) -> list[bytes]:
        """``encode`` of closed bars at once (``times``: increasing open times; ``values``: a
        row per bar; ``seq`` from ``first_seq``): one array of numpy records when no value is
        NaN, else bar by bar."""
        n = len(times)
        if not n:
            return []
        last_seq = first_seq + n - 1
        forms = (_form(int(times[0])), _form(first_seq), _form(epoch))
        if (np.isnan(values).any() or forms[0] != _form(int(times[-1])) or forms[1] != _form(last_seq)
                or None in forms):
            return [self.encode(t, True, row, seq, epoch)
                    for seq, (t, row) in enumerate(zip(times.tolist(), values.tolist()), first_seq)]
        template = self._records.get(forms)
        if template is None:
            template = self._records[forms] = self._template(*forms)
        records = np.repeat(template, n)
        records["time"] = times
        for i, key in enumerate(self.keys):
            records[f"v{i}"] = values[:, i]
        records["seq"] = np.arange(first_seq, last_seq + 1)
        records["epoch"] = epoch
        data, size = records.tobytes(), template.dtype.itemsize
        return [data[k:k + size] for k in range(0, len(data), size)]

    def _template(self, time_form: int, seq_form: int, epoch_form: int) -> np.ndarray:
        """A closed bar's record with its constant bytes (the integers of these forms)."""
        parts: list[tuple[str, bytes, str | None]] = [("head", self._head + _FORMS[time_form][0], None),
                                                      ("time", b"", _FORMS[time_form][1]),
                                                      ("closed", self._closed[True], None)]
        for i, key in enumerate(self._keys):
            parts += [(f"k{i}", key, None), (f"v{i}", b"", ">f8")]
        parts += [("kseq", self._seq + _FORMS[seq_form][0], None), ("seq", b"", _FORMS[seq_form][1]),
                  ("kepoch", self._epoch + _FORMS[epoch_form][0], None), ("epoch", b"", _FORMS[epoch_form][1])]
        dtype = np.dtype([(name, f"V{len(raw)}" if fmt is None else fmt) for name, raw, fmt in parts])
        template = np.zeros(1, dtype)
        for name, raw, fmt in parts:
            if fmt is None:
                template[name] = np.void(raw)
        return template


# A non-negative integer's smallest msgpack form: its type byte (none for a fixint) and dtype.
_FORMS = ((b"", "u1"), (b"\xcc", "u1"), (b"\xcd", ">u2"), (b"\xce", ">u4"), (b"\xcf", ">u8"))
_FORM_ENDS = (128, 256, 65536, 2**32, 2**64)


def _form(value: int) -> int | None:
    """The index in ``_FORMS`` of ``value``'s form; None for a negative or a too wide one."""
    if value < 0:
        return None
    return next((i for i, end in enumerate(_FORM_ENDS) if value < end), None)
