"""``mt5-indicators``: subscribe to candles on the bus, publish ``ind:SYMBOL:TF:`` values.

A worker serves one shard of the symbols (``--shard i/n`` by a stable hash, so n workers split
them with no overlap). Each (symbol, timeframe) warms up from the engine's ``candles`` history
before its first value, so that value already equals TA-Lib over that history; a gap in the
candle stream or an engine restart (``seq``/``epoch``) warms the series again rather than
publish a value computed without a bar it never saw.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import zmq

from engine.bus import BusPublisher, publisher_socket
from engine.client import RpcClient
from engine.config import ConfigError, layered_env
from engine.logs import setup_logging
from engine.protocol import (
    CANDLE,
    ProtocolError,
    RpcError,
    decode,
    health_topic,
    indicator_topic,
    topic,
)
from engine.security import CurveClient, SecurityError, apply_client
from engine.signals import StopFlag, stop_on_signals
from indicators.series import IndicatorSeries, Periods

log = logging.getLogger("indicators")

HEALTH_INTERVAL_S = 1.0
RPC_TIMEOUT_MS = 3000
RPC_RETRY_S = 1.0  # after a failed history request, series wait this long before asking again


def shard_of(symbol: str, shards: int) -> int:
    """The shard serving ``symbol``: stable across processes and runs (not Python's hash)."""
    return zlib.crc32(symbol.encode()) % shards


@dataclass(frozen=True)
class WorkerConfig:
    bus_endpoint: str = "tcp://127.0.0.1:5555"
    bus_pub_endpoint: str = "tcp://127.0.0.1:5557"
    rpc_endpoint: str = "tcp://127.0.0.1:5556"
    shard: int = 0
    shards: int = 1
    periods: Periods = field(default_factory=Periods)
    max_candles: int = 1000
    hwm: int = 100_000
    log_level: str = "INFO"
    log_file: str = ""
    curve: CurveClient | None = None

    @property
    def name(self) -> str:
        return f"indicators:{self.shard}"


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise ConfigError(f"shard must look like 0/2, got {text!r}") from None
    if not 0 <= i < n:
        raise ConfigError(f"shard {text!r}: need 0 <= i < n")
    return i, n


def load_config(argv: list[str] | None = None) -> WorkerConfig:
    """CLI flags > environment > .env > defaults."""
    parser = argparse.ArgumentParser(prog="mt5-indicators", description=__doc__.split("\n")[0])
    parser.add_argument("--shard", help="i/n: serve the symbols whose hash mod n is i (env IND_SHARD, default 0/1)")
    parser.add_argument("--sma", type=int, help="SMA period (env IND_SMA, default 20)")
    parser.add_argument("--ema", type=int, help="EMA period (env IND_EMA, default 20)")
    parser.add_argument("--rsi", type=int, help="RSI period (env IND_RSI, default 14)")
    parser.add_argument("--macd", help="fast,slow,signal (env IND_MACD, default 12,26,9)")
    parser.add_argument("--bus-endpoint", help="env BUS_ENDPOINT")
    parser.add_argument("--bus-pub-endpoint", help="env BUS_PUB_ENDPOINT")
    parser.add_argument("--rpc-endpoint", help="env RPC_ENDPOINT")
    parser.add_argument("--max-candles", type=int, help="history bars for warm-up (env MAX_CANDLES)")
    parser.add_argument("--env-file", default=".env")
    args = parser.parse_args(argv)
    env = layered_env(dotenv=args.env_file)

    def pick(flag: Any, name: str, default: Any) -> Any:
        return flag if flag is not None else env.get(name) or default

    defaults = WorkerConfig()
    shard, shards = parse_shard(pick(args.shard, "IND_SHARD", "0/1"))
    p = defaults.periods
    try:
        periods = Periods.parse(pick(args.sma, "IND_SMA", p.sma), pick(args.ema, "IND_EMA", p.ema),
                                pick(args.rsi, "IND_RSI", p.rsi), pick(args.macd, "IND_MACD", p.macd_text))
        max_candles = int(pick(args.max_candles, "MAX_CANDLES", defaults.max_candles))
    except ValueError as exc:
        raise ConfigError(f"IND_SMA/IND_EMA/IND_RSI/IND_MACD and MAX_CANDLES: {exc}") from None
    return WorkerConfig(
        bus_endpoint=pick(args.bus_endpoint, "BUS_ENDPOINT", defaults.bus_endpoint),
        bus_pub_endpoint=pick(args.bus_pub_endpoint, "BUS_PUB_ENDPOINT", defaults.bus_pub_endpoint),
        rpc_endpoint=pick(args.rpc_endpoint, "RPC_ENDPOINT", defaults.rpc_endpoint),
        shard=shard, shards=shards, periods=periods, max_candles=max_candles,
        log_level=env.get("LOG_LEVEL") or "INFO", log_file=env.get("LOG_FILE") or "",
        curve=CurveClient.from_env(env),
    )


class IndicatorWorker:
    """The process shell: candles in from the bus, indicator values out to it."""

    def __init__(self, config: WorkerConfig, ctx: zmq.Context | None = None) -> None:
        self.config = config
        self._ctx = ctx or zmq.Context.instance()
        self._stop = StopFlag()
        self._series: dict[bytes, IndicatorSeries] = {}
        self._streams: dict[bytes, tuple[int, int]] = {}  # candle topic -> (epoch, seq)
        self._symbols: list[str] = []
        self._started = time.monotonic()
        self.updates = 0
        self.malformed = 0
        self.rewarms = 0
        self._window = (time.monotonic(), 0)
        self._max_lag_us = 0.0
        self._rpc_ok = True
        self._rpc_retry_at = 0.0

    def stop(self) -> None:
        self._stop.set()

    def open(self) -> bool:
        """Connect, learn the symbols of this shard (waits for the engine); False if stopped."""
        cfg = self.config
        self._rpc = RpcClient(cfg.rpc_endpoint, timeout_ms=RPC_TIMEOUT_MS, ctx=self._ctx, curve=cfg.curve)
        self._pub = BusPublisher(publisher_socket(self._ctx, cfg.bus_pub_endpoint, cfg.hwm, cfg.curve))
        self._sub = apply_client(self._ctx.socket(zmq.SUB), cfg.curve)
        self._sub.linger = 0
        self._sub.rcvhwm = cfg.hwm
        self._sub.connect(cfg.bus_endpoint)
        delay = 0.1
        while not self._stop.is_set():
            try:
                symbols = [s["name"] for s in self._rpc.symbols()]
                break
            except RpcError as exc:
                log.warning("engine not answering (%s); retrying", exc.message)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
        else:
            return False
        self._symbols = [s for s in symbols if shard_of(s, cfg.shards) == cfg.shard]
        for symbol in self._symbols:
            self._sub.subscribe(topic(CANDLE, symbol))
        log.info("shard %d/%d serves %d of %d symbols: %s", cfg.shard, cfg.shards,
                 len(self._symbols), len(symbols), ",".join(self._symbols))
        return True

    def close(self) -> None:
        for closeable in (getattr(self, "_rpc", None), getattr(self, "_pub", None)):
            if closeable is not None:
                closeable.close()
        if getattr(self, "_sub", None) is not None:
            self._sub.close(0)

    def run(self) -> None:
        next_health = 0.0
        while not self._stop.is_set():
            if self._sub.poll(100):
                for _ in range(1000):  # drain what is queued, then look at the clock again
                    if self._stop.is_set():
                        break
                    try:
                        frames = self._sub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.handle(frames)
            now = time.monotonic()
            if now >= next_health:
                next_health = now + HEALTH_INTERVAL_S
                self._pub.publish(health_topic(self.config.name), self.health())

    def handle(self, frames: list[bytes]) -> None:
        """One bus message; never raises: a bad one is logged and counted."""
        received = time.perf_counter()
        try:
            if len(frames) != 2:
                raise ProtocolError(f"expected 2 frames, got {len(frames)}")
            candle_topic, payload = frames
            candle = decode(payload)
            series = self._series_for(candle_topic, candle)
            if series is None:
                return
            values = series.on_candle(candle)
        except (ProtocolError, KeyError, TypeError, ValueError) as exc:
            self.malformed += 1
            if self.malformed <= 10 or self.malformed % 1000 == 0:
                log.warning("skipped a malformed message (%d so far): %s topic=%r", self.malformed, exc, frames[0][:80])
            return
        if values is not None:
            self._pub.publish(indicator_topic(series.symbol, series.timeframe), values)
            self.updates += 1
            self._max_lag_us = max(self._max_lag_us, (time.perf_counter() - received) * 1e6)

    def _series_for(self, candle_topic: bytes, candle: dict[str, Any]) -> IndicatorSeries | None:
        """The warm series of this topic; (re)warmed from history when new or after a gap."""
        epoch, seq = candle["epoch"], candle["seq"]
        if not isinstance(epoch, int) or not isinstance(seq, int):
            raise TypeError("seq and epoch must be integers")
        previous = self._streams.get(candle_topic)
        self._streams[candle_topic] = (epoch, seq)
        series = self._series.get(candle_topic)
        if series is not None and previous is not None and previous != (epoch, seq - 1):
            log.info("%s; warming up again symbol=%s timeframe=%s",
                     "engine restarted" if previous[0] != epoch else "gap in candles",
                     candle.get("symbol"), candle.get("timeframe"))
            self.rewarms += 1
            series = None
        if series is None:
            symbol, timeframe = candle["symbol"], candle["timeframe"]
            if not isinstance(symbol, str) or not isinstance(timeframe, str):
                raise TypeError("symbol and timeframe must be strings")
            self._series.pop(candle_topic, None)
            self._streams.pop(candle_topic, None)  # until warm, the next message tries again
            if time.monotonic() < self._rpc_retry_at:
                return None  # the engine just failed to answer: don't queue up more timeouts
            series = IndicatorSeries(symbol, timeframe, self.config.periods)
            try:
                series.warm(self._rpc.candles(symbol, timeframe, self.config.max_candles))
            except RpcError as exc:
                self._rpc_ok = False
                self._rpc_retry_at = time.monotonic() + RPC_RETRY_S
                log.warning("no history: %s symbol=%s timeframe=%s", exc.message, symbol, timeframe)
                return None
            self._rpc_ok = True
            self._streams[candle_topic] = (epoch, seq)
            self._series[candle_topic] = series
        return series

    def health(self) -> dict[str, Any]:
        now = time.monotonic()
        since, count = self._window
        rate = (self.updates - count) / (now - since) if now > since else 0.0
        self._window = (now, self.updates)
        lag, self._max_lag_us = self._max_lag_us, 0.0
        return {
            "component": self.config.name,
            "status": "ok" if self._rpc_ok else "degraded",
            "time_msc": time.time_ns() // 1_000_000,
            "shard": f"{self.config.shard}/{self.config.shards}",
            "symbols": len(self._symbols),
            "series": len(self._series),
            "updates_total": self.updates,
            "updates_per_s": round(rate, 1),
            "lag_us_max": round(lag, 1),
            "malformed": self.malformed,
            "rewarms": self.rewarms,
            "uptime_s": round(now - self._started, 1),
        }


def main(argv: list[str] | None = None) -> int:
    try:
        config = load_config(argv)
    except (ConfigError, SecurityError) as exc:
        print(f"mt5-indicators: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, config.log_file)
    ctx = zmq.Context.instance()
    worker = IndicatorWorker(config, ctx)
    stop_on_signals(worker.stop)
    try:
        if worker.open():
            print(f"mt5-indicators: shard {config.shard}/{config.shards}, reading {config.bus_endpoint}, "
                  f"publishing to {config.bus_pub_endpoint}", flush=True)
            worker.run()
    finally:
        worker.close()
        ctx.term()
    log.info("stopped (pid %d)", os.getpid())
    return 0


if __name__ == "__main__":
    sys.exit(main())
