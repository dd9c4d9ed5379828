"""A large reply's list encoded ahead in slices (``bridge.encoded``): the packet is the one
python-socketio would encode, byte for byte, and the event loop runs between slices; and
``get_indicators``' rows, built a range at a time, are the rows built at once."""
from __future__ import annotations

import asyncio

import pytest
from socketio import packet as sio_packet

from bridge.encoded import Encoded, SplicingJson, encode_in_slices
from bridge.transport import TextPacket

ROWS = [{"symbol": "EURUSD", "time": 60 * i, "closed": i < 6, "sma": None if i < 2 else 1.1 + i / 7,
         "note": "é\"\\</script>"} for i in range(7)]


@pytest.mark.parametrize("per_slice", [1, 3, 7, 100])
def test_a_spliced_packet_is_the_packet_python_socketio_encodes(per_slice):
    encoded = asyncio.run(encode_in_slices(ROWS, per_slice))
    for kind, data, packet_id in ((sio_packet.EVENT, ["indicators_history", {"values": encoded, "n": 7}], None),
                                  (sio_packet.ACK, [{"values": encoded, "n": 7}], 12)):
        plain = [{"values": ROWS, "n": 7} if isinstance(d, dict) else d for d in data]
        spliced = TextPacket(kind, data=data, id=packet_id).encode()
        assert spliced == sio_packet.Packet(kind, data=plain, id=packet_id).encode()
        assert TextPacket(encoded_packet=spliced).data == plain  # and decodes as it


def test_an_empty_list_and_several_encoded_values_splice_in_place():
    empty = asyncio.run(encode_in_slices([], 4))
    assert empty.text == "[]"
    both = SplicingJson.dumps({"a": Encoded("[1,2]"), "b": [Encoded("{}"), "x"]}, separators=(",", ":"))
    assert both == '{"a":[1,2],"b":[{},"x"]}'


def test_text_that_looks_like_a_marker_stays_text_and_other_objects_are_refused():
    # a client's text is encoded as a string, never taken for a splice point
    tricky = {"values": Encoded("[1]"), "echo": '"0123456789abcdef:1"'}
    assert SplicingJson.loads(SplicingJson.dumps(tricky)) == {"values": [1], "echo": '"0123456789abcdef:1"'}
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        SplicingJson.dumps({"bad": {1, 2}})


def test_the_event_loop_runs_between_slices():
    async def main() -> list[str]:
        order: list[str] = []

        async def other() -> None:
            for _ in range(3):
                order.append("other")
                await asyncio.sleep(0)

        task = asyncio.create_task(other())
        encoded = await encode_in_slices(list(range(3)), 1)
        order.append(encoded.text)
        await task
        return order

    # each slice's yield lets the other task in: three slices, three turns of it before the end
    assert asyncio.run(main()) == ["other", "other", "other", "[0,1,2]"]


@pytest.mark.parametrize("count", [1, 7, 300])
def test_indicator_rows_read_in_ranges_are_the_rows_built_at_once(count):
    from bridge.indicator_history import IndicatorRows, indicator_history
    from indicators.spec import parse_indicators
    from tests.test_bridge_indicators import sim_history
    bars = sim_history(count=300)
    instances = parse_indicators("ema:9,bb=bbands:20:2:2,stoch:14:3:3")
    whole = indicator_history("EURUSD", "M1", bars, count, instances)
    rows = IndicatorRows("EURUSD", "M1", bars, count, instances)
    assert len(rows) == len(whole) == count and whole[-1]["closed"] is False  # the forming bar last
    assert [r for start in range(0, count, 4) for r in rows[start:start + 4]] == whole
    assert rows[-1] == whole[-1] and rows[0] == whole[0] and rows[count:] == []
    with pytest.raises(IndexError):
        rows[count]
    with pytest.raises(ValueError, match="ranges"):
        rows[::2]
