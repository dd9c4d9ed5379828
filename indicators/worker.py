"""``mt5-indicators``: subscribe to candles on the bus, publish ``ind:SYMBOL:TF:`` values.

A worker serves one shard of the symbols (``--shard i/n`` by a stable hash, so n workers split
them with no overlap). Each (symbol, timeframe) warms up from the engine's ``candles`` history
before its first value, so that value already equals TA-Lib over that history; a gap in the
candle stream, an engine restart (``seq``/``epoch``) or bars going back in time (a replay that
seeks back) warms the series again rather than publish a value computed without a bar it never
saw.

Nothing is dropped on the way out: the worker's PUB waits when the bus' queue for it is full
(a lossless replay's engine waits for its slowest subscriber, this worker among them), so every
closed candle the worker receives gets its value.

Cost per candle: a candle laid out as one its topic already sent and the worker checked is read
with one ``struct`` unpack (``indicators.layouts``), a run of them as numpy columns committed with
``update_many``, and values go out packed by ``indicators.encoder``: the same bytes as the checked
path (decode, ``read_candle``, ``IndicatorSeries.on_candle``, ``encode``), which anything else takes.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import zmq

from engine.bus import BusPublisher, publisher_socket, recv_waiting
from engine.client import RpcClient, UnknownSymbol, UnknownTimeframe
from engine.config import (
    CANDLE_COUNT,
    HWM,
    ConfigError,
    endpoint,
    log_level,
    setting,
    writable_file,
)
from engine.logs import RateLimitedLog, setup_logging
from engine.protocol import (
    CANDLE,
    ProtocolError,
    RpcError,
    decode,
    health_topic,
    indicator_topic,
    topic,
    topic_parts,
    validate_symbol,
)
from engine.security import CurveClient, SecurityError, apply_client
from engine.signals import StopFlag, stop_on_signals
from engine.timeframes import TIMEFRAMES
from indicators.encoder import IndicatorEncoder
from indicators.layouts import CandleLayouts, fields_of
from indicators.series import IndicatorSeries, IndicatorSettings
from indicators.spec import DEFAULT_INDICATORS

log = logging.getLogger("indicators")

HEALTH_INTERVAL_S = 1.0
RPC_TIMEOUT_MS = 3000
RPC_RETRY_S = 1.0  # after a failed history request, series wait this long before asking again
# A warm-up costs the engine a candles(MAX_CANDLES) request: each series asks at most this often,
# so candles that keep breaking the stream (forged epochs, a flood of gaps) cannot make it loop.
REWARM_EVERY_S = 2.0
PUBLISH_RETRY_S = 0.0005  # between tries to publish into a full bus queue
READ_BATCH = 1000  # messages read before the worker looks at the clock (and its health) again
MIN_RUN = 16  # a topic's messages in a row computed at once rather than one by one
_INT64_MAX = 2**63 - 1


def shard_of(symbol: str, shards: int) -> int:
    """The shard serving ``symbol``: stable across processes and runs (not Python's hash)."""
    return zlib.crc32(symbol.encode()) % shards


def read_candle_topic(candle_topic: bytes) -> tuple[str, str]:
    """The symbol and timeframe of a ``candle:SYMBOL:TF:`` topic; ``ProtocolError`` otherwise."""
    try:
        parts = topic_parts(candle_topic)
    except UnicodeDecodeError:
        raise ProtocolError(f"topic is not UTF-8: {candle_topic[:80]!r}") from None
    if len(parts) != 3 or parts[0] != CANDLE:
        raise ProtocolError(f"not a candle topic: {candle_topic[:80]!r}")
    _, symbol, timeframe = parts
    validate_symbol(symbol)
    if timeframe not in TIMEFRAMES:
        raise ProtocolError(f"unknown timeframe {timeframe[:16]!r}")
    return symbol, timeframe


def read_candle(candle_topic: bytes, payload: bytes,
                symbol_timeframe: tuple[str, str] | None = None) -> dict[str, Any]:
    """The payload of a ``candle:SYMBOL:TF:`` message, checked for what the worker uses: its
    symbol and timeframe those of the topic, ``time``/``seq``/``epoch`` non-negative integers,
    OHLC and ``tick_volume`` finite numbers and ``closed`` a bool; ``ProtocolError`` otherwise.
    ``symbol_timeframe``: what ``read_candle_topic`` gave for this topic before."""
    symbol, timeframe = symbol_timeframe or read_candle_topic(candle_topic)
    candle = decode(payload)
    if _well_formed(candle, symbol, timeframe):
        return candle
    # Something is off: find what, to say it.
    if candle.get("symbol") != symbol or candle.get("timeframe") != timeframe:
        raise ProtocolError("symbol and timeframe differ from the topic's")
    for key in ("time", "seq", "epoch"):
        if type(candle.get(key)) is not int or candle[key] < 0:
            raise ProtocolError(f"{key} must be a non-negative integer, got {candle.get(key)!r:.40}")
    for key in ("open", "high", "low", "close", "tick_volume"):
        if type(candle.get(key)) not in (float, int) or not math.isfinite(candle[key]):
            raise ProtocolError(f"{key} must be a finite number, got {candle.get(key)!r:.40}")
    if type(candle.get("closed")) is not bool:
        raise ProtocolError(f"closed must be a bool, got {candle.get('closed')!r:.40}")
    return candle


_NUMBER = (float, int)


def _well_formed(candle: dict[str, Any], symbol: str, timeframe: str) -> bool:
    """``read_candle``'s checks at once, for the candles that pass them (nearly all)."""
    try:
        t, seq, epoch, closed = candle["time"], candle["seq"], candle["epoch"], candle["closed"]
        o, h, low, c, v = candle["open"], candle["high"], candle["low"], candle["close"], candle["tick_volume"]
        same = candle["symbol"] == symbol and candle["timeframe"] == timeframe
    except KeyError:
        return False
    # One isfinite of the sum: a NaN or an infinity makes it not finite (a sum that overflows
    # only sends the candle to read_candle's slower checks, which pass it).
    return (same and type(t) is int and type(seq) is int and type(epoch) is int
            and t >= 0 and seq >= 0 and epoch >= 0 and type(closed) is bool
            and type(o) in _NUMBER and type(h) in _NUMBER and type(low) in _NUMBER and type(c) in _NUMBER
            and type(v) in _NUMBER and math.isfinite(o + h + low + c + v))


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` as ``(i, n)``; ``ValueError`` unless ``0 <= i < n``."""
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise ValueError(f"must look like 0/2, got {text!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"{text!r}: need 0 <= i < n")
    return i, n


@dataclass(frozen=True)
class WorkerConfig(IndicatorSettings):
    """Every worker setting; each field's metadata names its variable and the rules it follows."""

    bus_endpoint: str = field(default="tcp://127.0.0.1:5555", metadata=setting("BUS_ENDPOINT", endpoint))
    bus_pub_endpoint: str = field(default="tcp://127.0.0.1:5557",
                                  metadata=setting("BUS_PUB_ENDPOINT", endpoint))
    rpc_endpoint: str = field(default="tcp://127.0.0.1:5556", metadata=setting("RPC_ENDPOINT", endpoint))
    # i/n: this worker serves the symbols whose stable hash mod n is i.
    ind_shard: str = field(default="0/1", metadata=setting("IND_SHARD", parse_shard))
    # History bars asked for at each warm-up.
    max_candles: int = field(default=1000, metadata=setting("MAX_CANDLES", CANDLE_COUNT))
    hwm: int = field(default=100_000, metadata=setting("BUS_HWM", HWM))
    curve_client_secret: str = field(default="", metadata=setting("CURVE_CLIENT_SECRET"))
    curve_server_key: str = field(default="", metadata=setting("CURVE_SERVER_KEY"))
    log_level: str = field(default="INFO", metadata=setting("LOG_LEVEL", log_level))
    log_file: str = field(default="", metadata=setting("LOG_FILE", writable_file))

    @property
    def shard(self) -> int:
        return parse_shard(self.ind_shard)[0]

    @property
    def shards(self) -> int:
        return parse_shard(self.ind_shard)[1]

    @cached_property
    def curve(self) -> CurveClient | None:
        """CURVE client keys (``SecurityError`` when the files are unusable), or None."""
        return CurveClient.load(self.curve_client_secret, self.curve_server_key)

    @property
    def name(self) -> str:
        return f"indicators:{self.shard}"


# Flags (dest = the field they set); every setting also has its variable (WorkerConfig).
_FLAGS = (
    ("--shard", "ind_shard", "i/n: serve the symbols whose hash mod n is i (env IND_SHARD, default 0/1)"),
    ("--indicators", "indicators", "the indicator set, [name=]kind:param:param... comma separated "
                                   f"(env INDICATORS, default {DEFAULT_INDICATORS})"),
    ("--sma", "ind_sma", "SMA period of the default set (env IND_SMA, default 20)"),
    ("--ema", "ind_ema", "EMA period of the default set (env IND_EMA, default 20)"),
    ("--rsi", "ind_rsi", "RSI period of the default set (env IND_RSI, default 14)"),
    ("--macd", "ind_macd", "MACD fast,slow,signal of the default set (env IND_MACD, default 12,26,9)"),
    ("--bus-endpoint", "bus_endpoint", "env BUS_ENDPOINT"),
    ("--bus-pub-endpoint", "bus_pub_endpoint", "env BUS_PUB_ENDPOINT"),
    ("--rpc-endpoint", "rpc_endpoint", "env RPC_ENDPOINT"),
    ("--max-candles", "max_candles", "history bars for warm-up (env MAX_CANDLES)"),
)


def load_config(argv: list[str] | None = None) -> WorkerConfig:
    """CLI flags > environment > .env > defaults; ``ConfigError``/``SecurityError`` name the setting."""
    parser = argparse.ArgumentParser(prog="mt5-indicators", description=__doc__.split("\n")[0])
    for flag, dest, text in _FLAGS:
        parser.add_argument(flag, dest=dest, help=text)
    parser.add_argument("--env-file", default=".env")
    args = parser.parse_args(argv)
    overrides = {dest: getattr(args, dest) for _, dest, _ in _FLAGS}
    config = WorkerConfig.load(overrides, dotenv=args.env_file)
    _ = config.curve  # unusable key files stop the worker here, not at its first connect
    return config


class IndicatorWorker:
    """The process shell: candles in from the bus, indicator values out to it."""

    def __init__(self, config: WorkerConfig, ctx: zmq.Context | None = None) -> None:
        self.config = config
        self._ctx = ctx or zmq.Context.instance()
        self._stop = StopFlag()
        self._series: dict[bytes, IndicatorSeries] = {}
        # Candle topics of this shard's symbols, read once: (symbol, timeframe), and the topic
        # their values go out on. Bounded: valid timeframes of the served symbols only.
        self._topics: dict[bytes, tuple[str, str]] = {}
        self._out_topics: dict[bytes, bytes] = {}
        self._layouts: dict[bytes, CandleLayouts] = {}  # candle topic -> its payloads' layouts
        self._encoders: dict[bytes, IndicatorEncoder] = {}  # candle topic -> its values' encoder
        self._streams: dict[bytes, tuple[int, int]] = {}  # candle topic -> (epoch, seq) of a warm series
        self._warmed_at: dict[bytes, float] = {}  # candle topic -> its last warm-up (monotonic s)
        self._symbols: frozenset[str] = frozenset()
        self._started = time.monotonic()
        self.updates = 0
        self.malformed = 0
        self.rewarms = 0
        self.rewarms_limited = 0
        self.forming_skipped = 0
        self._log = RateLimitedLog(log, interval_s=5.0)
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
        self._pub = BusPublisher(publisher_socket(self._ctx, cfg.bus_pub_endpoint, cfg.hwm, cfg.curve, nodrop=True),
                                 on_full=self._wait_room)
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
        served = [s for s in symbols if shard_of(s, cfg.shards) == cfg.shard]
        self._symbols = frozenset(served)
        for symbol in served:
            self._sub.subscribe(topic(CANDLE, symbol))
        log.info("shard %d/%d serves %d of %d symbols: %s", cfg.shard, cfg.shards,
                 len(served), len(symbols), ",".join(served))
        return True

    def _wait_room(self) -> bool:
        """The bus has not taken what this worker sent yet: wait a little (True: try again),
        or give the value up when stopping."""
        return not self._stop.wait(PUBLISH_RETRY_S)

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
                # What is queued, then a look at the clock again.
                self.handle_batch(recv_waiting(self._sub, READ_BATCH))
            now = time.monotonic()
            if now >= next_health:
                next_health = now + HEALTH_INTERVAL_S
                self._pub.publish(health_topic(self.config.name), self.health())

    def handle_batch(self, batch: list[list[bytes]]) -> None:
        """Messages read together, in order. A forming candle followed in the batch by another
        message of its topic is checked (its ``seq`` keeps the stream whole) but not computed:
        its value would be stale when it arrived (counted as ``forming_skipped``). So a worker
        that falls behind, as in a full-speed replay, catches up on what matters: every closed
        bar's value, and the newest forming one. A run of ``MIN_RUN`` or more messages of one
        topic is read as columns and its closed bars committed and encoded at once, when it
        continues its warm series as one-by-one handling would find (``_run_values``)."""
        latest = {frames[0]: i for i, frames in enumerate(batch)}
        received = time.perf_counter()
        topics, frames_out = [], []
        i = 0
        while i < len(batch) and not self._stop.is_set():
            # A run of one topic's messages of one length, but its latest: closed bars computed
            # at once (``_run_values``) when they allow it, else one by one.
            run_topic, size, end = batch[i][0], len(batch[i][-1]), i + 1
            while (end < len(batch) and end < latest[run_topic] and batch[end][0] == run_topic
                   and len(batch[end][-1]) == size):
                end += 1
            out_run = self._run_values(run_topic, batch[i:end]) if end - i >= MIN_RUN else None
            if out_run is not None:
                topics += [out_run[0]] * len(out_run[1])
                frames_out += out_run[1]
                i = end
                continue
            for j in range(i, end):  # a refused run is handled one by one, not tried again from j
                out = self._value(batch[j], latest[run_topic] == j)
                if out is not None:
                    topics.append(out[0])
                    frames_out.append(out[1])
            i = end
        self._publish(topics, frames_out, received)

    def _run_values(self, candle_topic: bytes, run: list[list[bytes]]) -> tuple[bytes, list[bytes]] | None:
        """``_value`` of each message of ``run`` (all of ``candle_topic``, none its latest in
        the batch), computed at once: the out topic and the payloads, or None (nothing done)
        unless they read as columns of one learned layout and continue the warm series
        (``seq`` consecutive, one ``epoch``, no bar back in time)."""
        series = self._series.get(candle_topic)
        if series is None or set(map(len, run)) != {2}:
            return None
        columns = self._layouts[candle_topic].columns([frames[1] for frames in run])
        if columns is None:
            return None
        t, seq, epochs, closed, bar = columns
        epoch, last_seq = self._streams[candle_topic]
        if max(epoch, last_seq + len(run), series.last_closed) > _INT64_MAX:
            return None  # integers numpy's int64 cannot hold: one by one
        # Each bar after the last one closed before it (went_back in _series_for).
        closed_before = np.maximum.accumulate(np.where(closed, t, series.last_closed))
        after = np.concatenate(([series.last_closed], closed_before[:-1]))
        if not (np.array_equal(seq, np.arange(last_seq + 1, last_seq + 1 + len(run)))
                and (epochs == epoch).all() and (t > after).all()
                and np.isfinite(bar[0] + bar[1] + bar[2] + bar[3] + bar[4]).all()):
            return None
        self._streams[candle_topic] = (epoch, int(seq[-1]))
        self.forming_skipped += len(run) - int(closed.sum())
        if not closed.any():
            return self._out_topics[candle_topic], []
        times = t[closed]
        values = series.commit_many(times, [column[closed] for column in bar])
        out_topic = self._out_topics[candle_topic]
        first_seq = self._pub.stamper.next_seqs(out_topic, len(times))
        return out_topic, self._encoders[candle_topic].encode_closed(times, values, first_seq, epoch)

    def handle(self, frames: list[bytes], latest: bool = True) -> None:
        """One bus message; never raises: a bad one is counted and logged at a bounded rate.
        ``latest``: no later message of its topic is waiting (else a forming candle is only
        checked)."""
        received = time.perf_counter()
        out = self._value(frames, latest)
        self._publish(*(([out[0]], [out[1]]) if out is not None else ([], [])), received)

    def _publish(self, topics: list[bytes], frames: list[bytes], received: float) -> None:
        """Send the values of messages received at ``received``, one after the other: a send
        that follows another wakes no ZeroMQ I/O thread (one per send costs more than the rest)."""
        if not frames:
            return
        self._pub.publish_pairs(topics, frames)
        self.updates += len(frames)
        self._max_lag_us = max(self._max_lag_us, (time.perf_counter() - received) * 1e6)

    def _value(self, frames: list[bytes], latest: bool) -> tuple[bytes, bytes] | None:
        """``handle``'s work but the sending: the topic and the stamped payload to publish, if
        any. A candle laid out as one of its topic's already checked is read with one unpack
        (``CandleLayouts``), then only its numbers' finiteness is left to check; any other goes
        through ``read_candle``."""
        try:
            if len(frames) != 2:
                raise ProtocolError(f"expected 2 frames, got {len(frames)}")
            candle_topic, payload = frames
            layouts = self._layouts.get(candle_topic)
            fields = None if layouts is None else layouts.read(payload)
            # sum(bar) adds as read_candle's check does: a NaN or an infinity makes it not finite
            if fields is None or not math.isfinite(sum(fields[4])):
                fields = self._checked(candle_topic, payload)
            bar_time, seq, epoch, closed, bar = fields
            series = self._series_for(candle_topic, bar_time, seq, epoch)
            if series is None:
                return None
            if not (latest or closed):
                self.forming_skipped += 1
                return None
            values = series.values(bar_time, closed, bar)
        except (ProtocolError, KeyError, TypeError, ValueError) as exc:
            self.malformed += 1
            self._log.warning("malformed", "skipped a malformed message (%d so far): %s topic=%r",
                              self.malformed, exc, frames[0][:80])
            return None
        if values is None:
            return None
        out_topic = self._out_topics[candle_topic]
        return out_topic, self._encoders[candle_topic].encode(
            bar_time, closed, values, self._pub.stamper.next_seq(out_topic), self._pub.epoch)

    def _checked(self, candle_topic: bytes, payload: bytes) -> tuple[int, int, int, bool, tuple[float, ...]]:
        """What ``CandleLayouts.read`` gives, of a candle decoded and checked by ``read_candle``
        (``ProtocolError`` if it is not one this worker serves); its layout is learned."""
        known = self._topics.get(candle_topic)
        candle = read_candle(candle_topic, payload, known)
        if known is None:
            symbol, timeframe = candle["symbol"], candle["timeframe"]
            if symbol not in self._symbols:
                raise ProtocolError(f"symbol {symbol!r} is not one of this shard's")
            self._topics[candle_topic] = (symbol, timeframe)
            self._out_topics[candle_topic] = indicator_topic(symbol, timeframe)
            self._layouts[candle_topic] = CandleLayouts()
            keys = tuple(key for inst in self.config.indicator_set for key in inst.keys)
            self._encoders[candle_topic] = IndicatorEncoder(symbol, timeframe, keys)
        self._layouts[candle_topic].learn(payload, candle)
        return fields_of(candle)

    def _series_for(self, candle_topic: bytes, bar_time: int, seq: int, epoch: int) -> IndicatorSeries | None:
        """The warm series of this topic; (re)warmed from history when new or after a gap or an
        engine restart. A series asks for history at most once per ``REWARM_EVERY_S``: the
        messages that would ask again sooner are dropped (counted as ``rewarms_limited``)."""
        series = self._series.get(candle_topic)
        if series is not None:
            went_back = bar_time <= series.last_closed  # a replay seeking back
            if self._streams[candle_topic] == (epoch, seq - 1) and not went_back:
                self._streams[candle_topic] = (epoch, seq)
                return series
            why = ("engine restarted" if self._streams[candle_topic][0] != epoch
                   else "bars went back in time" if went_back else "gap in candles")
            log.info("%s; warming up again symbol=%s timeframe=%s", why, series.symbol, series.timeframe)
            self.rewarms += 1
            del self._series[candle_topic], self._streams[candle_topic]  # never used stale again
        now = time.monotonic()
        warmed_at = self._warmed_at.get(candle_topic)
        if warmed_at is not None and now - warmed_at < REWARM_EVERY_S:
            self.rewarms_limited += 1
            self._log.warning("rewarm_limited", "dropped a candle: its series warmed up %.1f s ago "
                              "(%d dropped so far) topic=%r", now - warmed_at, self.rewarms_limited,
                              candle_topic[:80])
            return None
        if now < self._rpc_retry_at:
            return None  # the engine just failed to answer: don't queue up more timeouts
        self._warmed_at[candle_topic] = now
        series = IndicatorSeries(*self._topics[candle_topic], self.config.indicator_set)
        try:
            history = self._rpc.candles(series.symbol, series.timeframe, self.config.max_candles)
            # Only the bars before this candle's: the stream brings this one and those after it
            # (the engine may be ahead), and each gets its value when it comes.
            series.warm([c for c in history if c["time"] < bar_time])
        except (UnknownSymbol, UnknownTimeframe) as exc:
            raise ProtocolError(f"the engine does not serve it: {exc.message}") from None
        except RpcError as exc:
            self._rpc_ok = False
            self._rpc_retry_at = time.monotonic() + RPC_RETRY_S
            log.warning("no history: %s symbol=%s timeframe=%s", exc.message, series.symbol, series.timeframe)
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
            "rewarms_limited": self.rewarms_limited,
            "forming_skipped": self.forming_skipped,
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
