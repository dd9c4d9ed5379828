"""FrameLayouts: a payload is admitted unread only when it would decode to a map just as the
one learned did; everything else is left to the decoder."""
from __future__ import annotations

import msgpack
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.frame_layouts import MIN_BATCH, FrameLayouts, layout_of
from engine.protocol import decode, encode
from indicators.encoder import IndicatorEncoder

TOPIC = b"ind:EURUSD:M1:"
ENCODER = IndicatorEncoder("EURUSD", "M1", ("ema_20", "rsi_14", "macd", "macd_signal"))


def values(n: int, first_seq: int = 1000) -> list[bytes]:
    rng = np.random.default_rng(n)
    return [ENCODER.encode(1_704_153_600 + 60 * i, True, rng.normal(1.1, 0.01, 4).tolist(), first_seq + i,
                           1_796_000_000_000) for i in range(n)]


def learned(payload: bytes) -> FrameLayouts:
    layouts = FrameLayouts()
    decode(payload)  # the engine learns only from a payload that decoded
    layouts.learn(TOPIC, payload)
    return layouts


def test_a_workers_values_match_the_layout_of_the_first_and_decode_alike():
    payloads = values(50)
    layouts = learned(payloads[0])
    messages = [[TOPIC, p] for p in payloads]
    assert layouts.matching(messages, lambda topic: True) == set(range(50))
    assert [decode(p).keys() for p in payloads[1:]] == [decode(payloads[0]).keys()] * 49


def test_a_changed_key_type_byte_or_length_is_left_to_the_decoder():
    payloads = values(8)
    layouts = learned(payloads[0])
    broken = bytearray(payloads[3])
    broken[broken.index(b"rsi_14") + 1] ^= 0x01  # a key's byte
    retyped = bytearray(payloads[4])
    retyped[retyped.index(b"\xcb")] = 0xC1  # a float's type byte: never used in msgpack
    messages = [[TOPIC, p] for p in payloads]
    messages[3][1], messages[4][1] = bytes(broken), bytes(retyped)
    messages[5][1] = payloads[5] + b"\x00"  # another length: no layout learned for it
    messages[6] = [TOPIC, payloads[6], b"extra"]  # three frames
    assert layouts.matching(messages, lambda topic: True) == {0, 1, 2, 7}
    assert layouts.matching(messages, lambda topic: False) == set()  # the caller's topics only
    other = [[b"ind:GBPUSD:M1:", p] for p in payloads]  # learned for another topic
    assert layouts.matching(other, lambda topic: True) == set()


def test_a_few_messages_of_a_layout_are_decoded_rather_than_checked():
    payloads = values(MIN_BATCH)
    layouts = learned(payloads[0])
    assert layouts.matching([[TOPIC, p] for p in payloads[:-1]], lambda topic: True) == set()


def test_only_flat_maps_have_a_layout():
    assert layout_of(encode({"a": 1.5, "b": "text", "c": None, "d": True, "e": 7, "f": -3, "g": 2**40})) is not None
    assert layout_of(encode({"a": [1.5]})) is None  # nested
    assert layout_of(encode({"a": {"b": 1}})) is None
    assert layout_of(encode({"a": b"\x00"})) is None  # binary
    assert layout_of(msgpack.packb([1, 2])) is None  # not a map
    assert layout_of(encode({"a": 1.5}) + b"\x00") is None  # extra bytes
    assert layout_of(encode({"a": 1.5})[:-1]) is None  # cut short
    learned_none = FrameLayouts()
    learned_none.learn(TOPIC, encode({"a": [1.5]}))
    assert learned_none.matching([[TOPIC, encode({"a": [2.5]})]] * MIN_BATCH, lambda topic: True) == set()


def test_layouts_are_bounded_whatever_a_publisher_sends_and_a_topics_current_form_is_learned():
    layouts = FrameLayouts(max_layouts=40, per_topic=4)
    for n in range(100):  # new topics: 10 of them get places
        layouts.learn(f"ind:S{n}:M1:".encode(), encode({"pad": "x" * n}))
    assert len(layouts) == 10
    for n in range(100):  # one topic in ever new lengths keeps its last 4
        layouts.learn(b"ind:S0:M1:", encode({"pad": "y" * n}))
    assert len(layouts) == 13
    payloads = values(MIN_BATCH)
    layouts.learn(b"ind:S0:M1:", payloads[0])  # its current form, after all that
    assert layouts.matching([[b"ind:S0:M1:", p] for p in payloads], lambda topic: True) == set(range(MIN_BATCH))
    assert len(layouts) == 13


def test_a_workers_forms_as_its_seq_grows_are_all_kept():
    layouts = FrameLayouts()
    for first_seq in (1, 200, 60_000, 70_000):  # fixint, uint8, uint16, uint32 seq
        layouts.learn(TOPIC, values(1, first_seq)[0])
    for first_seq in (1, 200, 60_000, 70_000):
        later = values(MIN_BATCH, first_seq)
        # A fixint seq is a constant byte: only the payload with the learned seq matches.
        expected = set(range(MIN_BATCH)) if first_seq > 127 else {0}
        assert layouts.matching([[TOPIC, p] for p in later], lambda topic: True) == expected, first_seq


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6))
def test_whatever_bytes_change_a_matched_payload_decodes_to_the_same_keys(changes):
    """The claim itself: a payload the layout admits decodes, as a map with the learned keys."""
    base = values(1)[0]
    layouts = learned(base)
    mutated = bytearray(base)
    for at, byte in changes:
        mutated[at % len(mutated)] = byte
    mutated = bytes(mutated)
    if layouts.matching([[TOPIC, mutated]] * MIN_BATCH, lambda topic: True):
        assert decode(mutated).keys() == decode(base).keys()
