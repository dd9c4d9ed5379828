import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import protocol
from engine.models import Tick
from engine.protocol import ProtocolError, Stamper, TickEncoder, decode, encode, topic_parts, validate_symbol


def test_topics_are_colon_terminated_so_prefixes_are_exact():
    assert protocol.tick_topic("EURUSD") == b"tick:EURUSD:"
    assert protocol.candle_topic("EURUSD", "M5") == b"candle:EURUSD:M5:"
    assert protocol.indicator_topic("EURUSD", "M5") == b"ind:EURUSD:M5:"
    assert protocol.book_topic("EURUSD") == b"book:EURUSD:"
    assert protocol.health_topic("indicators:0") == b"health:indicators:0:"
    sub = protocol.tick_topic("EURUSD")
    for other in ("EURUSDm", "EURUSD.m"):
        assert not protocol.tick_topic(other).startswith(sub)
    assert protocol.candle_topic("EURUSD", "H1").startswith(b"candle:EURUSD:")


def test_topic_parts_round_trip_and_reject_unterminated():
    assert topic_parts(b"candle:EURUSD.m:M15:") == ["candle", "EURUSD.m", "M15"]
    with pytest.raises(ProtocolError):
        topic_parts(b"tick:EURUSD")


@pytest.mark.parametrize("bad", ["EUR:USD", "", " EURUSD", "EUR\nUSD", "X" * 65, None, 5])
def test_invalid_symbols_are_refused_with_the_reason(bad):
    with pytest.raises(ProtocolError) as err:
        validate_symbol(bad)
    if isinstance(bad, str) and ":" in bad:
        assert "':'" in str(err.value)


def test_valid_broker_symbols_pass():
    for name in ("EURUSD", "EURUSDm", "EURUSD.m", "US30.cash", "BTCUSD#"):
        assert validate_symbol(name) == name


def test_encode_decode_round_trip_keeps_types():
    payload = {"symbol": "EURUSD", "bid": 1.08501, "time_msc": 1_790_000_000_123, "closed": True,
               "bids": [[1.085, 2.5]], "none": None}
    assert decode(encode(payload)) == payload


@pytest.mark.parametrize("raw", [b"\xc1", b"\x93\x01\x02\x03", msgpack.packb("text"), b"", b"\x81"])
def test_decode_rejects_non_maps_and_garbage(raw):
    with pytest.raises(ProtocolError):
        decode(raw)


def test_decode_rejects_oversized_payloads():
    with pytest.raises(ProtocolError, match="exceeds"):
        decode(b"\x00" * (protocol.MAX_PAYLOAD_BYTES + 1))


def test_stamper_counts_per_topic_from_one_with_a_fixed_epoch():
    stamper = Stamper(epoch=77)
    a1 = stamper.stamp(b"tick:A:", {})
    a2 = stamper.stamp(b"tick:A:", {})
    b1 = stamper.stamp(b"tick:B:", {})
    assert (a1["seq"], a2["seq"], b1["seq"]) == (1, 2, 1)
    assert {a1["epoch"], a2["epoch"], b1["epoch"]} == {77}
    assert stamper.last_seq(b"tick:A:") == 2


def test_a_new_publisher_gets_a_later_epoch():
    first = Stamper().epoch
    import time
    time.sleep(0.002)
    assert Stamper().epoch > first


_uint64 = st.integers(0, 2**64 - 1)


_floats = st.floats(allow_nan=False)


@settings(max_examples=500, deadline=None)
@given(symbol=st.text(min_size=1, max_size=64), bid=_floats, ask=_floats, last=_floats,
       volume_real=_floats, ints=st.lists(_uint64, min_size=5, max_size=5))
def test_tick_encoder_gives_the_map_encode_gives(symbol, bid, ask, last, volume_real, ints):
    volume, time_msc, flags, seq, epoch = ints
    fields = dict(bid=bid, ask=ask, last=last, volume=volume, time_msc=time_msc, flags=flags,
                  volume_real=volume_real)
    frame = TickEncoder(symbol).encode(**fields, seq=seq, epoch=epoch)
    expected = {"symbol": symbol, **{k: fields[k] for k in protocol.TICK_FIELDS[1:]},
                "seq": seq, "epoch": epoch}
    decoded = msgpack.unpackb(frame, raw=False)
    assert decoded == expected and list(decoded) == list(expected)
    assert list(decoded) == [*protocol.TICK_FIELDS, "seq", "epoch"]
    assert type(decoded["volume_real"]) is float
    assert decode(encode(expected)) == decoded


def test_tick_encoder_frame_is_a_ticks_payload_as_encode_packs_it():
    tick = Tick("BTCUSD", 1_700_000_000_123, 42000.5, 42001.0, 42000.8, 2, 24, 2.75)
    frame = TickEncoder(tick.symbol).encode(
        tick.bid, tick.ask, tick.last, tick.volume, tick.time_msc, tick.flags, tick.volume_real, 7, 99)
    payload = {**tick.to_payload(), "seq": 7, "epoch": 99}
    assert list(tick.to_payload()) == list(protocol.TICK_FIELDS)
    decoded = decode(frame)
    assert decoded == payload and list(decoded) == list(payload)
    assert list(decode(encode(payload))) == list(decoded)
    assert decoded["volume_real"] == 2.75 and decoded["volume"] == 2


def test_tick_encoder_takes_the_general_path_for_values_uint64_cannot_hold():
    encoder = TickEncoder("EURUSD")
    assert decode(encoder.encode(1.1, 1.2, 0.0, -5, 1, 6, 0.5, 1, 2)) == {
        "symbol": "EURUSD", "bid": 1.1, "ask": 1.2, "last": 0.0, "volume": -5, "time_msc": 1, "flags": 6,
        "volume_real": 0.5, "seq": 1, "epoch": 2}
    with pytest.raises(OverflowError):  # as encode does: msgpack has no wider integer
        encoder.encode(1.1, 1.2, 0.0, 0, 1, 6, 0.0, 2**64, 2)
