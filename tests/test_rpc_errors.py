"""RPC error replies: the ``id`` echoed whenever it can be read, and messages in the request's
terms (msgpack's, never a Python exception's)."""
import re

import msgpack
import pytest
import zmq

from engine.protocol import MAX_REQUEST_BYTES, decode, encode
from engine.rpc import ID_SCAN_BYTES, RpcHandler, peek_request_id

PYTHON_WORDS = re.compile(r"ExtraData|unpack\(|StackError|FormatError|ValueError|Exception|Traceback|"
                          r"\b(list|dict|NoneType|tuple)\b|b'")


class NoMarket:
    """No state is read: every request here is refused before its op runs."""

    max_candles = 100

    def has_symbol(self, symbol):
        return symbol == "EURUSD"


def refused(raw: bytes) -> dict:
    reply = decode(RpcHandler(NoMarket()).handle(raw))
    assert reply["ok"] is False and reply["error"]["code"] == "bad_request", reply
    print(f"{raw[:24]!r}... -> {reply}")
    assert not PYTHON_WORDS.search(reply["error"]["message"]), reply["error"]["message"]
    return reply


def test_an_oversized_request_echoes_its_leading_id():
    raw = encode({"id": 41, "op": "candles", "pad": "x" * MAX_REQUEST_BYTES})
    reply = refused(raw)
    assert reply["id"] == 41
    assert reply["error"]["message"] == f"request of {len(raw)} bytes exceeds {MAX_REQUEST_BYTES}"


def test_an_id_after_more_than_the_scanned_bytes_is_not_looked_for():
    reply = refused(encode({"pad": "x" * MAX_REQUEST_BYTES, "id": 41}))
    assert "id" not in reply


@pytest.mark.parametrize("raw, message, request_id", [
    (encode({"op": "symbols", "id": "a1"}) + b"\x01\x02", "request is not valid msgpack: extra bytes (2) "
     "after the first value; send exactly one map per frame", "a1"),
    (encode({"id": 7, "op": "candles", "symbol": "EURUSD"})[:-3], "request is not valid msgpack: it ends inside "
     "a value (empty or cut short)", 7),
    (b"", "request is not valid msgpack: it ends inside a value (empty or cut short)", None),
    (b"\x82\xa2id\x05\xa2op\xc1", "request is not valid msgpack: it holds a byte that starts no msgpack value "
     "(such as 0xc1)", 5),
    (b"\x82\xa2id\x06\x01\x02", "request is not valid msgpack: a map key is not a string", 6),
    (b"\x91" * 3000 + b"\x01", "request is not valid msgpack: values are nested too deeply", None),
    (encode(["op", "symbols"]), "request must be a map, got an array", None),
    (encode("symbols"), "request must be a map, got a string", None),
])
def test_an_unparseable_request_says_what_is_wrong_and_echoes_a_readable_id(raw, message, request_id):
    reply = refused(raw)
    assert reply["error"]["message"] == message
    assert reply.get("id") == request_id


def test_bin_strings_are_refused_by_name_with_the_id():
    reply = refused(msgpack.packb({"op": "tick", "symbol": b"EURUSD", "id": 3}, use_bin_type=True))
    assert reply["id"] == 3
    assert reply["error"]["message"] == "'symbol' is msgpack bin; send strings as msgpack str"
    reply = refused(msgpack.packb({b"op": "tick", "id": 4}, use_bin_type=True))
    assert reply["id"] == 4 and reply["error"]["message"] == "a key is msgpack bin; send strings as msgpack str"


def test_a_bad_id_is_named_by_its_msgpack_type_and_not_echoed():
    reply = refused(encode({"op": "symbols", "id": [1]}))
    assert "id" not in reply and reply["error"]["message"] == "'id' must be an integer or a string, got an array"


def test_peek_request_id_reads_only_the_maps_leading_entries():
    assert peek_request_id(encode({"op": "x", "id": 2**64 - 1})) == 2**64 - 1
    assert peek_request_id(encode({"op": "x", "id": True})) is None
    assert peek_request_id(encode({"op": "x" * (ID_SCAN_BYTES - 8), "id": 9})) is None  # past the scan
    assert peek_request_id(encode({"op": "x" * (ID_SCAN_BYTES - 40), "id": 9})) == 9
    assert peek_request_id(encode([1, 2])) is None and peek_request_id(b"\xc1") is None


def test_a_refused_envelope_echoes_the_bodys_id_over_the_wire(engine, zmq_ctx):
    sock = zmq_ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(engine.rpc)
    sock.send_multipart([b"x" * 300, b"", encode({"op": "health", "id": 12})])  # an envelope frame over 255 bytes
    assert sock.poll(5000)
    frames = sock.recv_multipart()
    reply = decode(frames[-1])
    print(frames[:-1], reply)
    assert reply["id"] == 12 and reply["error"]["code"] == "bad_request"
    assert reply["error"]["message"] == "a request is at most 8 frames, envelope frames of 255 bytes"
    sock.send_multipart([b"", encode({"op": "health", "id": 13})])  # the same client, served
    assert sock.poll(5000)
    served = decode(sock.recv_multipart()[-1])
    assert served["ok"] is True and served["id"] == 13
