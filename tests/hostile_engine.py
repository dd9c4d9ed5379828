"""A hostile stand-in engine: every RPC answer and bus message has the right shape, with markup in it.

It binds a ROUTER (the RPC) and a PUB (the bus) on free loopback ports and runs on a thread of
the test process, so a real bridge can be pointed at it and serve its data to the real page.

On the bus, markup goes only where a string is legal (symbol names, account name, server,
currency and company, health status and detail strings, a worker's component name): numbers stay
finite numbers, as the bridge's payload checks require. The RPC replies also carry markup in
numeric fields (digits, point, candle volumes, book levels, account figures): the page must show
them safely whatever the bridge lets through. They stay on the page: the history's bars are all
closed (a forming update never replaces a closed bar), and the account, published on change as
the engine does, never changes, so the page's copy is the ``account`` reply.
"""
from __future__ import annotations

import threading
import time
from typing import Any

import zmq

from engine.protocol import (
    ACCOUNT_TOPIC, SUMMARY_TOPIC, Stamper, book_topic, candle_topic, decode, encode, health_topic,
    indicator_topic, ok_reply, tick_topic,
)
from tests.procs import free_port

# Each sets window.__pwned and document.title if it ever runs; none contains ':' (a topic separator).
MARKUP = (
    "<img src=x onerror=\"window.__pwned=1;document.title='pwned'\">",
    "<script>window.__pwned=2;document.title='pwned'</script>",
    "\"><svg onload=\"window.__pwned=3;document.title='pwned'\">",
    "<b>bold</b><iframe srcdoc='<script>parent.__pwned=4</script>'>",
)
SYMBOLS = (MARKUP[0], MARKUP[2], "EURUSD")  # the first one is the page's default selection
TIMEFRAME = "M1"
PUBLISH_EVERY_S = 0.2
ACCOUNT_STRINGS = {"name": MARKUP[1], "server": MARKUP[3], "currency": MARKUP[2], "company": MARKUP[0]}
WORKER = f"indicators:{MARKUP[3]}"  # a worker's health topic: health:indicators:<markup>:


def bar_time(now: float, back: int = 0) -> int:
    return (int(now) // 60 - back) * 60


def candle(symbol: str, time_s: int, closed: bool, tick_volume: Any = 12) -> dict[str, Any]:
    price = 1.1 + (time_s // 60 % 7) * 0.001
    return {"symbol": symbol, "timeframe": TIMEFRAME, "time": time_s, "open": price, "high": price + 0.002,
            "low": price - 0.002, "close": price + 0.001, "tick_volume": tick_volume, "spread": 3,
            "real_volume": 0, "closed": closed}


def symbol_infos() -> list[dict[str, Any]]:
    """The ``symbols`` reply: markup in names and descriptions, and in the first one's digits and point."""
    infos = [{"name": name, "digits": 5, "point": 0.00001, "description": MARKUP[(i + 1) % len(MARKUP)],
              "currency_base": MARKUP[1], "currency_profit": MARKUP[3], "trade_contract_size": 100000.0}
             for i, name in enumerate(SYMBOLS)]
    infos[0].update(digits=MARKUP[1], point=MARKUP[2])
    return infos


def rpc_data(request: dict[str, Any], now: float) -> Any:
    """The ``data`` of the reply to ``request``: the right shape, markup wherever a value goes."""
    op, symbol = request.get("op"), request.get("symbol") or SYMBOLS[0]
    if op == "symbols":
        return symbol_infos()
    if op == "candles":
        count = request.get("count", 100) if isinstance(request.get("count"), int) else 100
        return [candle(symbol, bar_time(now, back), True, tick_volume=MARKUP[back % len(MARKUP)])
                for back in range(min(count, 300) - 1, -1, -1)]
    if op == "book":
        return {"symbol": symbol, "time_msc": int(now * 1000),
                "bids": [[1.1, MARKUP[0]], [MARKUP[1], 2.0], [1.0998, 1.5]], "asks": [[1.1002, 1.0], [MARKUP[2], MARKUP[3]]]}
    if op == "account":
        return {"login": MARKUP[0], **ACCOUNT_STRINGS, "balance": MARKUP[1], "equity": MARKUP[2], "profit": MARKUP[3],
                "margin": MARKUP[0], "margin_free": MARKUP[1], "margin_level": MARKUP[2], "leverage": MARKUP[3]}
    if op == "tick":
        return {"symbol": symbol, "bid": MARKUP[0], "ask": MARKUP[1], "last": 0.0, "volume": 0,
                "time_msc": int(now * 1000), "flags": 0, "volume_real": 0.0}
    if op == "snapshot":  # the stream brings every other topic within PUBLISH_EVERY_S
        return [[ACCOUNT_TOPIC.decode(), {**bus_account(), "seq": 1, "epoch": 1}]]
    return engine_health(now)


def bus_account() -> dict[str, Any]:
    return {"login": 1, **ACCOUNT_STRINGS, "balance": 1000.0, "equity": 1000.0, "profit": 0.0, "margin": 0.0,
            "margin_free": 1000.0, "margin_level": 0.0, "leverage": 100}


def engine_health(now: float) -> dict[str, Any]:
    return {"component": "engine", "status": "ok", "time_msc": int(now * 1000), "source": MARKUP[0],
            "source_connected": True, "source_detail": MARKUP[1], "source_finished": False, "epoch": 1,
            "uptime_s": 1.0, "symbols": len(SYMBOLS), "ticks_total": 10, "ticks_per_s": 5.0,
            "messages_total": 10, "late_ticks": 0, "rpc_requests": 1, "rpc_errors": 0}


def bus_messages(now: float) -> list[tuple[bytes, dict[str, Any]]]:
    """One round of the stream: every topic the bridge relays but ``account:`` (never changes),
    markup only in string fields."""
    ms = int(now * 1000)
    messages: list[tuple[bytes, dict[str, Any]]] = []
    for symbol in SYMBOLS:
        messages += [
            (tick_topic(symbol), {"symbol": symbol, "bid": 1.1, "ask": 1.1002, "last": 0.0, "volume": 0,
                                  "time_msc": ms, "flags": 6, "volume_real": 0.0}),
            (candle_topic(symbol, TIMEFRAME), candle(symbol, bar_time(now), False)),
            (indicator_topic(symbol, TIMEFRAME), {"symbol": symbol, "timeframe": TIMEFRAME, "time": bar_time(now),
                                                  "closed": False, "sma": 1.1, "ema": 1.1, "rsi": 50.0, "macd": 0.0001,
                                                  "macd_signal": 0.0001, "macd_hist": 0.0}),
            (book_topic(symbol), {"symbol": symbol, "time_msc": ms, "bids": [[1.1, 1.0]], "asks": [[1.1002, 1.0]]}),
        ]
    summary = {s: {"last": 1.1, "open": 1.09, "high": 1.12, "low": 1.08, "prev_close": 1.09, "change": 0.01,
                   "change_pct": 0.9, "day": bar_time(now)} for s in SYMBOLS}
    return [*messages,
            (SUMMARY_TOPIC, {"time_msc": ms, "symbols": summary}),
            (health_topic("engine"), engine_health(now)),
            (health_topic(WORKER), {"component": WORKER, "status": MARKUP[2], "detail": MARKUP[0], "time_msc": ms})]


class HostileEngine:
    """The stand-in on its own thread; ``bus``/``rpc`` are its endpoints, as an ``EngineProcess``'s."""

    def __init__(self) -> None:
        self.bus = f"tcp://127.0.0.1:{free_port()}"
        self.rpc = f"tcp://127.0.0.1:{free_port()}"
        self.requests: dict[str, int] = {}  # op -> requests answered
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hostile-engine", daemon=True)

    def __enter__(self) -> HostileEngine:
        self._thread.start()
        if not self._bound.wait(5):
            raise RuntimeError("the hostile engine did not bind")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        ctx = zmq.Context()
        rpc, bus = ctx.socket(zmq.ROUTER), ctx.socket(zmq.PUB)
        try:
            for sock, endpoint in ((rpc, self.rpc), (bus, self.bus)):
                sock.linger = 0
                sock.bind(endpoint)
            self._bound.set()
            stamper = Stamper()
            next_round = 0.0
            while not self._stop.is_set():
                if rpc.poll(20):
                    self._answer(rpc)
                now = time.time()
                if now >= next_round:
                    next_round = now + PUBLISH_EVERY_S
                    for topic, payload in bus_messages(now):
                        bus.send_multipart([topic, encode(stamper.stamp(topic, payload))])
        finally:
            rpc.close(0)
            bus.close(0)
            ctx.term()

    def _answer(self, rpc: zmq.Socket) -> None:
        """Every request waiting: DEALER ``[identity, request]`` or REQ ``[identity, b"", request]``."""
        while True:
            try:
                frames = rpc.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            request = decode(frames[-1])
            op = str(request.get("op"))
            self.requests[op] = self.requests.get(op, 0) + 1
            reply = ok_reply(rpc_data(request, time.time()))
            if "id" in request:
                reply["id"] = request["id"]
            rpc.send_multipart([*frames[:-1], encode(reply)])
