"""The engine process: source -> candle aggregation -> bus, plus the RPC server and health.

One thread owns every engine socket (ZeroMQ sockets are single-threaded); the loop waits on
the RPC socket until the source's next tick is due, so requests are answered between ticks.
"""
from __future__ import annotations

import bisect
import ctypes
import gc
import logging
import select
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import zmq

from engine.activity_feed import SET_PREFIXES, ActivityFeed
from engine.aggregation import CandleAggregator, CandleEvent, CandleRows, TickColumns
from engine.bus import BusPublisher, EmbeddedBus, publisher_socket, recv_waiting
from engine.config import EngineConfig
from engine.foreign_cache import ForeignCache
from engine.frame_layouts import FrameLayouts
from engine.models import Tick
from engine.protocol import (
    ACCOUNT_TOPIC,
    CandleEncoder,
    ENGINE_COMPONENT,
    HEALTH,
    INDICATOR,
    MAX_PUBLISHER_FRAME_BYTES,
    PUBLISHER_QUEUE_MESSAGES,
    SERVICE_COMPONENT,
    SUMMARY_TOPIC,
    ErrorCode,
    Packed,
    ProtocolError,
    RpcError,
    Stamper,
    TickEncoder,
    book_topic,
    candle_topic,
    decode,
    health_topic,
    pack_ticks,
    tick_frames,
    tick_topic,
)
from engine.publish_policy import ForeignPolicy, Refusals
from engine.rpc import RpcHandler, RpcServer
from engine.security import CurveClient, CurveServer
from engine.service_health import HealthReader
from engine.signals import StopFlag
from engine.sources.base import MarketSource, SourceError
from engine.sources.replay import PlaybackError, ReplaySource
from engine.tick_journal import TickJournal, TooOld, joined, tick_columns
from engine.timeframes import TIMEFRAMES

log = logging.getLogger("engine")

HOUSEKEEPING_MS = 50  # bar closing by clock, throttled flushes, periodic topics
MAX_WAIT_MS = 50  # longest the loop sleeps, so shutdown is prompt
# Idle time before the next tick or housekeeping that is worth giving to ``source.prefetch``
# (the sim draws a chunk of ticks in a few hundred µs).
PREFETCH_IDLE_NS = 500_000
# ... or this much once the work is needed within PREFETCH_URGENT_MS: a draw that runs a little
# into the next tick's time costs less than the same draw inside ``poll`` when it is due (at
# 50k ticks/s idle spans of 0.5 ms are rare; p99 0.98-1.31 ms with this, 1.35-1.58 without).
PREFETCH_URGENT_IDLE_NS = 250_000
PREFETCH_URGENT_MS = 20
# How long a batch of ticks takes to reach local subscribers after the last send: the ZeroMQ
# I/O threads of the engine and of each subscriber need a CPU for it. Work that can wait
# (candles, housekeeping, drawing ahead) waits this long after a send, or on 2 cores it competes
# with that delivery (measured for drawing ahead: 10k ticks/s p99 1.0-1.4 ms without the wait).
DELIVERY_NS = 250_000
# Topics other publishers put on the bus that the engine caches for `snapshot`.
INDICATOR_PREFIX = f"{INDICATOR}:".encode()
FOREIGN_PREFIXES = (INDICATOR_PREFIX, f"{HEALTH}:".encode())
# Other publishers' messages handled per wake-up: each is checked, decoded and cached in Python
# (measured 1.6-3.5 µs; less when checked by its layout), so a flood holds the next ticks back
# 1-2 ms at most.
FOREIGN_DRAIN = 500
TOO_MANY_COMPONENTS = "health component over the limit"
ADMISSIBLE_TOPICS = 4096  # admitted topics remembered (a symbol's indicators and health are a few)
UNDECODABLE = "undecodable payload"
# How often the RPC's and the bus subscribers' connections are checked for unread bytes over
# their bound (a multipart message libzmq holds until it is whole).
PEER_WATCH_MS = 10
# A lossless replay waiting for a slow subscriber: how long each wait for room lasts (the RPC,
# other publishers and subscription notices are served meanwhile; libzmq makes room in chunks
# of half a queue), and how often subscribers are checked for having stalled.
ROOM_WAIT_NS = 1_000_000
STALL_CHECK_S = 0.1


PR_SET_TIMERSLACK = 29  # <linux/prctl.h>
# Plain ints: pyzmq's enum flags cost a couple of µs per ``&`` on a path taken thousands of
# times a second.
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)


def _bar_time(payload: dict[str, Any]) -> int:
    return payload["time"]


def candle_frames(rows: CandleRows, out: Mapping[str, tuple[bytes, CandleEncoder]],
                  stamper: Stamper) -> tuple[list[bytes], list[bytes]]:
    """The topic and frame of each row, in order, stamped by ``stamper``: what encoding each
    event with its timeframe's ``out`` encoder gives, each timeframe's rows encoded at once."""
    topics: list[bytes] = [b""] * len(rows)
    frames: list[bytes] = [b""] * len(rows)
    for k in dict.fromkeys(rows.series.tolist()):
        topic, encoder = out[rows.timeframes[k]]
        at = np.flatnonzero(rows.series == k)
        encoded = encoder.encode_columns({name: v[at] for name, v in rows.values.items()}, rows.closed[at],
                                         stamper.next_seqs(topic, len(at)), stamper.epoch)
        for i, frame in zip(at.tolist(), encoded):
            topics[i], frames[i] = topic, frame
    return topics, frames


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def tighten_timer_slack() -> bool:
    """Let the calling thread's timed waits end on time, not up to 50 µs late (Linux only).

    Linux groups timer expiries by letting them fire up to the thread's "timer slack" late,
    50 µs by default. The engine sleeps until the ms a tick is stamped with, about a thousand
    times a second, so that slack is added to every tick's latency.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0) == 0


class SocketWaiter:
    """Waits until one of some ZeroMQ sockets is readable or a deadline passes, to the µs.

    ``zmq.Poller`` takes whole milliseconds, so a tick stamped for the next ms could go out up
    to 1 ms late; ``select`` on the sockets' notification FDs takes any timeout. Each FD only
    signals that the socket's events may have changed, so ``ZMQ_EVENTS`` is asked before
    every wait (the pattern pyzmq's own event-loop integrations use). On Windows the FD is a
    SOCKET, which ``select`` takes there (zmq.asyncio waits on it through a selector there too).
    """

    def __init__(self, sockets: list[zmq.Socket]) -> None:
        self._sockets = sockets
        self._fds = [sock.getsockopt(zmq.FD) for sock in sockets]

    def readable(self) -> set[zmq.Socket]:
        return {sock for sock in self._sockets if sock.getsockopt(_EVENTS) & _POLLIN}

    def wait(self, deadline_ns: int) -> set[zmq.Socket]:
        """The readable sockets, as soon as there are any, or an empty set at the deadline."""
        while not (ready := self.readable()):
            remaining = deadline_ns - time.time_ns()
            if remaining <= 0:
                break
            select.select(self._fds, [], [], remaining / 1e9)
        return ready


class EngineService:
    """Runs one source onto the bus; ``run()`` blocks until ``stop()`` (any thread)."""

    def __init__(self, config: EngineConfig, source: MarketSource, ctx: zmq.Context | None = None,
                 service_health: HealthReader | None = None) -> None:
        self.config = config
        self.source = source
        self.max_candles = config.max_candles
        self._ctx = ctx or zmq.Context.instance()
        self._stop = StopFlag()
        self._published_tfs = frozenset(config.timeframes)
        # D1 is always aggregated: the daily summary needs the day's open, high and low.
        self._tfs = tuple(TIMEFRAMES[n] for n in dict.fromkeys((*config.timeframes, "D1")))
        self._aggs: dict[str, CandleAggregator] = {}
        self._infos: dict[str, dict[str, Any]] = {}
        self._ticks: dict[str, Tick] = {}
        self._unaggregated: list[Tick] = []  # published, not yet folded into candles
        self._unaggregated_columns: list[tuple[str, TickColumns]] = []  # the same, as columns
        self._tick_out: dict[str, tuple[bytes, TickEncoder]] = {}
        self._candle_out: dict[tuple[str, str], tuple[bytes, CandleEncoder]] = {}
        self._booked: dict[str, int] = {}
        self._policy = ForeignPolicy(())  # the source's symbols, once it has started
        # Topics the policy admitted (as two-frame messages): not checked again, as the workers
        # publish the same few topics all the time.
        self._admissible: set[bytes] = set()
        self._foreign = ForeignCache()
        self._layouts = FrameLayouts()
        self._refusals = Refusals()
        self._service_health = service_health
        self._account: dict[str, Any] | None = None
        self._activity = ActivityFeed(lambda t, p: self._pub.publish(t, p), config.account_snapshot_ms)
        self._source_error = ""
        # Where ranges older than memory are read: the source's own store, then a recording.
        self._stores: list[Any] = [source]
        if config.record_dir:
            # Imported only here: pyarrow.compute costs every engine start a second, and more.
            from engine.recording_store import RecordingStore
            self._stores.append(RecordingStore(config.record_dir))
        self._started_ms = now_ms()
        self._ticks_in = 0
        self._rate_window = (self._started_ms, 0)
        self._ticks_per_s = 0.0
        self._bus: EmbeddedBus | None = None
        self._pub: BusPublisher | None = None
        self._rpc: RpcServer | None = None
        self._sub: zmq.Socket | None = None
        self._journal: TickJournal | None = None
        self._auth = None  # the ZAP handler thread, when CURVE is on
        # A replay is lossless: its playback is controlled over RPC and the bus waits for the
        # slowest subscriber (``_wait_for_room``) rather than drop.
        self._replay = source if isinstance(source, ReplaySource) else None
        self._waiting = False  # inside _wait_for_room
        self._waiters: dict[bool, SocketWaiter] = {}  # by whether the bus holds a relayed message
        self._next_stall_check = 0.0

    # Lifecycle
    def open(self) -> None:
        """Bind and connect everything, start the source and load history (may raise)."""
        cfg = self.config
        curve = CurveServer.load(cfg.curve_server_secret, cfg.curve_clients_dir)
        if curve is not None:
            self._auth = curve.start_authenticator(self._ctx)
        if cfg.bus_mode == "embedded":
            self._bus = EmbeddedBus(self._ctx, cfg.bus_endpoint, cfg.bus_pub_endpoint, cfg.hwm, curve,
                                    PUBLISHER_QUEUE_MESSAGES, MAX_PUBLISHER_FRAME_BYTES)
            if self._replay is not None:
                self._bus.lossless()
                self._pub = BusPublisher(self._bus.xpub, on_full=self._wait_for_room)
            else:
                self._pub = BusPublisher(self._bus.xpub)
        else:
            # Publish into a bus run elsewhere and read the other publishers' topics from it.
            client_curve = CurveClient.load(cfg.curve_client_secret, cfg.curve_server_key)
            self._pub = BusPublisher(publisher_socket(self._ctx, cfg.bus_pub_endpoint, cfg.hwm, client_curve))
            self._sub = self._ctx.socket(zmq.SUB)
            if client_curve is not None:
                client_curve.apply(self._sub)
            self._sub.linger = 0
            self._sub.rcvhwm = cfg.hwm
            for prefix in FOREIGN_PREFIXES:
                self._sub.subscribe(prefix)
            self._sub.connect(cfg.bus_endpoint)
        self._rpc = RpcServer(self._ctx, cfg.rpc_endpoint, RpcHandler(self), curve)
        self.source.start()
        self._load_history()
        self._publish_activity(now_ms())  # the open positions and orders, before any request
        # Ticks are handed to the journal as they are aggregated, and RPC requests are served
        # only once every published tick was (``run``), so a symbol's last seq is that of the
        # newest tick the journal was given.
        last_seq, tick_out = self._pub.stamper.last_seq, self._tick_out
        self._journal = TickJournal(cfg.tick_journal, self._pub.epoch,
                                    {name: info["point"] for name, info in self._infos.items()},
                                    lambda symbol: last_seq(tick_out[symbol][0]))
        # Everything loaded so far lives as long as the process: keep it out of the garbage
        # collector's full passes, which would otherwise stall publishing for milliseconds.
        gc.collect()
        gc.freeze()

    def _load_history(self) -> None:
        counts = {tf: self.max_candles if tf.name in self._published_tfs else 2 for tf in self._tfs}
        # A source that hands history over as arrays (the sim) spares a Candle object per bar.
        arrays = getattr(self.source, "history_arrays", None)
        for info in self.source.symbols():
            name = info.name
            self._infos[name] = info.to_dict()
            self._tick_out[name] = (tick_topic(name), TickEncoder(name))
            agg = CandleAggregator(name, info.point, self._tfs, self.max_candles,
                                   self.config.forming_throttle_ms, chart_mode=info.chart_mode)
            history = arrays(name, counts) if arrays else {
                tf.name: self.source.history(name, tf, count) for tf, count in counts.items()}
            for tf in self._tfs:
                # A live terminal's forming bar may already hold ticks the stream delivers.
                agg.seed(tf.name, history[tf.name], self.source.history_covers(name, tf))
                self._candle_out[(name, tf.name)] = (candle_topic(name, tf.name), CandleEncoder(name, tf.name))
            self._aggs[name] = agg
        self._policy = ForeignPolicy(self._aggs)
        self._admissible.clear()
        log.info("%d symbols, timeframes %s, history loaded", len(self._aggs),
                 ",".join(self.config.timeframes))

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Stop the source and close every socket; safe after a failed ``open()``."""
        try:
            self.source.stop()
        except Exception:
            log.exception("error while stopping the source")
        for closeable in (self._rpc, self._pub):
            if closeable is not None:
                closeable.close()
        if self._sub is not None:
            self._sub.close(0)
        if self._bus is not None:
            self._bus.close()
        if self._auth is not None:
            self._auth.stop()

    # The loop
    def run(self) -> None:
        """Publish until stopped. Call after ``open()``, from the thread that called it.

        Due ticks go out first. The work that can wait (folding them into candles, bar closing
        by the clock and periodic topics, drawing ticks ahead) runs once the last batch has had
        ``DELIVERY_NS`` to reach subscribers, or at once if the next ticks are already due.
        """
        assert self._rpc is not None and self._pub is not None
        tighten_timer_slack()
        bus, sub = self._bus, self._sub
        waiter = SocketWaiter([self._rpc.socket, *((bus.xsub, bus.xpub) if bus is not None else (sub,))])
        if bus is not None:
            self._waiters = {False: waiter, True: SocketWaiter([self._rpc.socket, bus.xpub])}
        source = self.source
        cfg = self.config
        periodic = [
            [0, cfg.health_interval_ms, self._publish_health],
            [0, cfg.book_interval_ms, self._publish_books],
            [0, cfg.account_interval_ms, self._publish_account],
            [0, cfg.account_interval_ms, self._publish_activity],
            [0, cfg.summary_interval_ms, self._publish_summary],
            [0, 1000, self._expire_foreign],
            [0, HOUSEKEEPING_MS, self._publish_service_health],
        ]
        next_housekeeping = next_peer_watch = sent_ns = 0
        while not self._stop.is_set():
            now_ns = time.time_ns()
            now = now_ns // 1_000_000
            tick_wait = source.next_due(now)
            # To the very ms the next tick is stamped with.
            deadline_ns = (now + min(tick_wait, MAX_WAIT_MS)) * 1_000_000
            if tick_wait and now_ns < sent_ns + DELIVERY_NS:
                deadline_ns = min(deadline_ns, sent_ns + DELIVERY_NS)
            else:
                self.aggregate_pending()
                if now >= next_housekeeping:
                    next_housekeeping = now + HOUSEKEEPING_MS
                    self._housekeeping(now, periodic)
                if now >= next_peer_watch:
                    next_peer_watch = now + PEER_WATCH_MS
                    self._rpc.watch_clients()
                    if bus is not None:
                        bus.watch_subscribers()
                        self._cut_stalled()
                deadline_ns = min(deadline_ns, next_housekeeping * 1_000_000)
                if tick_wait and self._prefetch_fits(deadline_ns, now):
                    source.prefetch()
                    continue  # look at the clock again
            holding = bus is not None and bool(bus.held)
            if holding:  # a relayed message waits for room: try it again soon, not on xsub's news
                ready = self._waiters[True].wait(min(deadline_ns, time.time_ns() + ROOM_WAIT_NS))
                bus.forward(FOREIGN_DRAIN, self._admit_foreign)
            else:
                ready = waiter.wait(deadline_ns)
            if ready:
                if self._rpc.socket in ready:
                    self.aggregate_pending()  # answer with every tick sent so far in the candles
                    self._rpc.serve_pending()
                if bus is not None:
                    if bus.xsub in ready and not holding:
                        bus.forward(FOREIGN_DRAIN, self._admit_foreign)
                    if bus.xpub in ready:
                        bus.drain_subscriptions()
                elif sub in ready:
                    # What the external bus relayed (the engine's own health among it).
                    now = now_ms()
                    for frames in recv_waiting(sub, FOREIGN_DRAIN):
                        self._cache_foreign(frames, now)
            if self._poll_source(now_ms()):
                sent_ns = time.time_ns()

    def _wait_for_room(self) -> bool:
        """A lossless replay's send found a subscriber's queue full: wait up to
        ``ROOM_WAIT_NS`` for room, answering RPC requests and relaying the other publishers
        (an indicator worker may be the one to wait for, and it must publish to read on)
        meanwhile; True to try the send again, False to drop it (the engine is stopping)."""
        if self._stop.is_set():
            return False
        bus = self._bus
        ready = self._waiters[bool(bus.held)].wait(time.time_ns() + ROOM_WAIT_NS)
        self._waiting = True
        try:
            if self._rpc.socket in ready:
                self._rpc.serve_pending()
            if bus.xsub in ready or bus.held:
                bus.forward(FOREIGN_DRAIN, self._admit_foreign)
            if bus.xpub in ready:
                bus.drain_subscriptions()
            self._cut_stalled(waiting=True)
        finally:
            self._waiting = False
        return True

    def _cut_stalled(self, waiting: bool = False) -> None:
        """While a replay plays, cut off the subscribers that read nothing for REPLAY_STALL_S."""
        if self._replay is None or not (waiting or self._replay.playing):
            return
        now = time.monotonic()
        if now >= self._next_stall_check:
            self._next_stall_check = now + STALL_CHECK_S
            self._bus.cut_stalled(self.config.replay_stall_s)

    def replay(self, action: str, time_s: float | None) -> dict[str, Any]:
        """The RPC op ``replay``: act on the replay's playback, then return its status."""
        replay = self._replay
        if replay is None:
            raise RpcError(ErrorCode.UNAVAILABLE, f"the source is {self.source.name}, not a replay: "
                                                  "there is no playback to control")
        try:
            if action == "start":
                replay.start_playing()
            elif action == "pause":
                replay.pause(now_ms())
            elif action == "resume":
                replay.resume()
            elif action == "seek":
                self._seek(round(time_s * 1000))
        except PlaybackError as exc:
            raise RpcError(ErrorCode.BAD_REQUEST, str(exc)) from None
        if action != "status":
            log.info("replay %s: %s", action, replay.status())
        return replay.status()

    def _seek(self, time_ms: int) -> None:
        """Move the replay to ``time_ms`` and start its candles afresh from there."""
        if self._waiting:
            raise RpcError(ErrorCode.UNAVAILABLE, "the bus is waiting for a slow subscriber to "
                                                  "take the ticks already read; seek again in a moment")
        self.aggregate_pending()
        try:
            self._replay.seek(time_ms)
        except SourceError as exc:
            raise RpcError(ErrorCode.UNAVAILABLE, f"cannot seek: {exc}") from None
        self._load_history()

    def _prefetch_fits(self, deadline_ns: int, now: int) -> bool:
        """Whether the source's work ahead fits before ``deadline_ns``: a long idle span, or a
        shorter one once that work is needed within ``PREFETCH_URGENT_MS``."""
        needed_ms = self.source.prefetch_due()
        if needed_ms is None:
            return False
        idle_ns = deadline_ns - time.time_ns()
        return idle_ns >= PREFETCH_IDLE_NS or (
            idle_ns >= PREFETCH_URGENT_IDLE_NS and needed_ms - now <= PREFETCH_URGENT_MS)

    def _housekeeping(self, now: int, periodic: list[list[Any]]) -> None:
        """Close bars by the market clock, flush throttled forming bars, publish periodic topics."""
        market_now = self.source.market_time(now)
        for agg in self._aggs.values():
            self._publish_candles(agg.on_time(market_now))
        for entry in periodic:
            if now >= entry[0]:
                entry[0] = now + entry[1]
                entry[2](now)

    def _poll_source(self, now: int) -> bool:
        """Publish the source's new ticks (True if there were any); a failing source is
        reported in health, never fatal."""
        bars = self._replay is not None and self._replay.plays_bars
        try:
            ticks = self._replay.poll_bars(now) if bars else self.source.poll(now)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if error != self._source_error:
                log.error("source %s failed: %s", self.source.name, error)
            self._source_error = error
            return False
        self._source_error = ""
        if not ticks:
            return False
        if bars:
            self.on_tick_columns(*ticks)
        else:
            self.on_ticks(ticks)
        return True

    def on_ticks(self, ticks: list[Tick]) -> None:
        """Publish a batch of due ticks; ``aggregate_pending`` folds them into candles later.

        Ticks are what bots wait for. Candles follow once the batch has been delivered (within
        ``DELIVERY_NS``): on a 2-core machine, aggregating at once competed with the ZeroMQ I/O
        threads delivering the ticks (measured: 10k ticks/s p99 0.64-0.88 ms against
        0.46-0.61 ms with candles deferred).
        """
        pub = self._pub
        publish, next_seq, epoch, tick_out = pub.publish_frame, pub.stamper.next_seq, pub.epoch, self._tick_out
        for symbol, time_msc, bid, ask, last, volume, flags, volume_real in ticks:
            topic, encoder = tick_out[symbol]
            publish(topic, encoder.encode(bid, ask, last, volume, time_msc, flags, volume_real,
                                          next_seq(topic), epoch))
        self._ticks_in += len(ticks)
        self._unaggregated += ticks

    def on_tick_columns(self, symbol: str, columns: TickColumns) -> None:
        """``on_ticks`` for one symbol's ticks given as columns (a bar replay at full speed),
        encoded all at once: ``tick_frames`` writes the frames ``TickEncoder`` would.

        When no subscription of the embedded bus matches the topic, only the last tick is
        encoded, for ``snapshot``: libzmq would send the others to nobody, and their ``seq``
        are taken all the same, so a subscriber that comes later sees no difference. A bar
        replay makes four ticks a bar, which cost a bot that wants bars a third of the engine.
        """
        pub = self._pub
        topic = self._tick_out[symbol][0]
        n = len(columns["time_msc"])
        first_seq = pub.stamper.next_seqs(topic, n)
        if self._bus is None or self._bus.subscriptions.wanted(topic):
            pub.publish_frames(topic, tick_frames(symbol, columns, first_seq, pub.epoch))
        else:
            last = {name: column[-1:] for name, column in columns.items()}
            pub.keep_last(topic, tick_frames(symbol, last, first_seq + n - 1, pub.epoch)[0])
        self._ticks_in += n
        self._unaggregated_columns.append((symbol, columns))

    def aggregate_pending(self) -> None:
        """Fold the ticks published since the last call into candles and publish their events."""
        if self._unaggregated_columns:
            self._aggregate_columns()
        if not self._unaggregated:
            return
        ticks, self._unaggregated = self._unaggregated, []
        self._journal.append(ticks)
        latest, aggs = self._ticks, self._aggs
        for tick in ticks:
            latest[tick.symbol] = tick
            events = aggs[tick.symbol].on_tick(tick)
            if events:
                self._publish_candles(events)

    def _aggregate_columns(self) -> None:
        """``aggregate_pending`` for ticks published as columns: each symbol's batches joined,
        so the journal numbers them from the topic's last ``seq``."""
        batches, self._unaggregated_columns = self._unaggregated_columns, []
        by_symbol: dict[str, list[TickColumns]] = {}
        for symbol, columns in batches:
            by_symbol.setdefault(symbol, []).append(columns)
        for symbol, parts in by_symbol.items():
            columns = parts[0] if len(parts) == 1 else joined(parts)
            self._journal.append_columns(symbol, columns)
            self._ticks[symbol] = Tick(symbol, *(columns[name][-1].item() for name in Tick._fields[1:]))
            agg = self._aggs[symbol]
            rows = agg.fold_columns(columns, self._published_tfs)
            if rows is None:
                self._publish_candles(agg.on_ticks_of(columns, self._published_tfs))
            else:
                self._publish_candle_rows(symbol, rows)

    def _publish_candle_rows(self, symbol: str, rows: CandleRows) -> None:
        """``_publish_candles`` for events given as rows: each timeframe's encoded at once."""
        pub = self._pub
        out = {tf: self._candle_out[(symbol, tf)] for tf in rows.timeframes}
        pub.publish_pairs(*candle_frames(rows, out, pub.stamper))

    def _publish_candles(self, events: list[CandleEvent]) -> None:
        """Publish the events of the published timeframes, encoded first and then sent one
        after the other (a send right after another wakes no ZeroMQ I/O thread)."""
        pub, published, out = self._pub, self._published_tfs, self._candle_out
        next_seq, epoch, frames = pub.stamper.next_seq, pub.epoch, []
        for c, closed in events:
            if c.timeframe in published:
                topic, encoder = out[(c.symbol, c.timeframe)]
                frames.append((topic, encoder.encode(c.time, c.open, c.high, c.low, c.close, c.tick_volume,
                                                     c.spread, c.real_volume, closed, next_seq(topic), epoch)))
        publish = pub.publish_frame
        for topic, frame in frames:
            publish(topic, frame)

    def _admit_foreign(self, messages: list[list[bytes]]) -> list[list[bytes]]:
        """Those of other publishers' messages the embedded bus relays (the last of each topic
        cached for ``snapshot``); one that is not theirs to publish is counted and dropped.

        A message of an admitted ``ind:`` topic laid out as one already decoded is valid
        unread (``FrameLayouts``), unless it is its topic's last in the batch, which is cached.
        """
        now, cache, refusals, admitted = now_ms(), self._cache_foreign, self._refusals, []
        checked = self._layouts.matching(messages, self._checked_by_layout) if len(messages) > 1 else ()
        last = {frames[0]: i for i, frames in enumerate(messages)} if checked else {}
        for i, frames in enumerate(messages):
            if i in checked and last[frames[0]] != i:
                admitted.append(frames)
                continue
            reason = cache(frames, now)
            if reason is None:
                admitted.append(frames)
            else:
                refusals.add(reason)
        return admitted

    def _checked_by_layout(self, topic: bytes) -> bool:
        """Whether a message of ``topic`` may be admitted by its layout alone: an admitted
        indicator topic (the cache refuses nothing of those; health components it may)."""
        return topic in self._admissible and topic.startswith(INDICATOR_PREFIX)

    def _cache_foreign(self, frames: list[bytes], now: int) -> str | None:
        """Cache another publisher's message if the policy and the cache's bounds allow it;
        returns None, or why not."""
        topic = frames[0]
        if len(frames) != 2 or topic not in self._admissible:
            reason = self._policy.refusal(topic, len(frames))
            if reason is not None:
                return reason
            if len(self._admissible) < ADMISSIBLE_TOPICS:
                self._admissible.add(topic)
        try:
            payload = decode(frames[1])
        except ProtocolError:
            return UNDECODABLE
        if topic.startswith(INDICATOR_PREFIX):
            self._layouts.learn(topic, frames[1])
        return None if self._foreign.put(topic, payload, now) else TOO_MANY_COMPONENTS

    def _expire_foreign(self, now: int) -> None:
        """Forget silent health components; log what was refused since the last line."""
        self._foreign.expire(now)
        line = self._refusals.report(now)
        if line:
            log.warning("bus: %s", line)

    # Periodic topics
    def _publish_books(self, now: int) -> None:
        for symbol, tick in self._ticks.items():
            if self._booked.get(symbol) == tick.time_msc:
                continue  # no new quote since the last book
            book = self.source.book(symbol, now)
            if book is not None:
                self._booked[symbol] = tick.time_msc
                self._pub.publish(book_topic(symbol), book.to_payload())

    def _publish_account(self, now: int) -> None:
        account = self.source.account(now)
        if account is not None and account != self._account:
            self._account = account
            self._pub.publish(ACCOUNT_TOPIC, dict(account))

    def _publish_activity(self, now: int) -> None:
        if not self.config.account_streams:
            return
        activity = self.source.activity(now)
        if activity is not None:
            self._activity.update(activity, now)

    def _publish_summary(self, now: int) -> None:
        symbols = {}
        for name, agg in self._aggs.items():
            day = agg.candles("D1", 2)
            if not day:
                continue
            today = day[-1]
            reference = day[-2].close if len(day) == 2 else today.open
            change = today.close - reference
            symbols[name] = {
                "last": today.close, "open": today.open, "high": today.high, "low": today.low,
                "prev_close": reference, "change": round(change, int(self._infos[name]["digits"])),
                "change_pct": round(100.0 * change / reference, 4) if reference else 0.0,
                "day": today.time,
            }
        self._pub.publish(SUMMARY_TOPIC, {"time_msc": self._market_stamp(now), "symbols": symbols})

    def _market_stamp(self, now: int) -> int:
        """``now`` (UTC ms) in the clock of everything the engine publishes: the market's."""
        return now + 1000 * self.source.server_utc_offset_s()

    def _publish_health(self, now: int) -> None:
        self._pub.publish(health_topic(ENGINE_COMPONENT), self.health(now))

    def _publish_service_health(self, now: int) -> None:
        """The launcher's newest health, if it sent one (``engine.service_health``)."""
        health = self._service_health.take() if self._service_health is not None else None
        if health is not None:
            self._pub.publish(health_topic(SERVICE_COMPONENT), health)

    # MarketState (read by the RPC handler)
    def health(self, now: int | None = None) -> dict[str, Any]:
        now = now_ms() if now is None else now
        since, count = self._rate_window
        if now - since >= 1000:
            self._ticks_per_s = round((self._ticks_in - count) * 1000.0 / (now - since), 1)
            self._rate_window = (now, self._ticks_in)
        source_health = self.source.health()
        status, detail = source_health.status, source_health.detail
        if self._source_error:
            status, detail = "degraded", self._source_error
        rpc = self._rpc.handler if self._rpc else None
        return {
            "component": "engine",
            "status": status,
            "time_msc": self._market_stamp(now),
            "source": self.source.name,
            "source_connected": source_health.connected,
            "source_detail": detail,
            "source_finished": self.source.finished,
            "server_utc_offset_s": self.source.server_utc_offset_s(),
            **self.source.report(),
            "epoch": self._pub.epoch if self._pub else 0,
            "uptime_s": round((now - self._started_ms) / 1000.0, 1),
            "symbols": len(self._aggs),
            "ticks_total": self._ticks_in,
            "ticks_per_s": self._ticks_per_s,
            "messages_total": self._pub.sent if self._pub else 0,
            "late_ticks": sum(a.late_ticks for a in self._aggs.values()),
            "rpc_requests": rpc.requests if rpc else 0,
            "rpc_errors": rpc.errors if rpc else 0,
            "forged_dropped": self._refusals.total,
            "foreign_topics": len(self._foreign),
            "tick_journal_bytes": self._journal.nbytes if self._journal else 0,
            # Whether positions, orders and deals flow (ACCOUNT_STREAMS and a source that has them).
            "account_activity": self._activity.live,
            "deals_published": self._activity.deals,
            **self._peer_health(),
        }

    def _peer_health(self) -> dict[str, int]:
        """What hostile or broken clients cost: requests refused, replies dropped, subscriptions
        refused, connections closed by the engine."""
        server, bus = self._rpc, self._bus
        return {
            "rpc_requests_refused": server.refused if server else 0,
            "rpc_replies_dropped": server.replies_dropped if server else 0,
            "rpc_connections_closed": server.clients.closed if server else 0,
            "bus_subscriptions_refused": bus.subscriptions_refused if bus else 0,
            "bus_subscription_bytes": bus.subscriptions.total if bus else 0,
            "bus_connections_closed": bus.subscribers.closed if bus else 0,
            "bus_stalled_closed": bus.stalled_closed if bus else 0,
            "bus_waits": (self._pub.waits if self._pub else 0) + (bus.relays_waited if bus else 0),
        }

    def symbol_infos(self) -> list[dict[str, Any]]:
        return list(self._infos.values())

    def has_symbol(self, symbol: str) -> bool:
        return symbol in self._aggs

    def has_timeframe(self, timeframe: str) -> bool:
        return timeframe in self._published_tfs

    def timeframe_names(self) -> tuple[str, ...]:
        return self.config.timeframes

    def last_tick(self, symbol: str) -> dict[str, Any] | None:
        return self._pub.last_payload(self._tick_out[symbol][0])

    def candles(self, symbol: str, timeframe: str, count: int) -> list[dict[str, Any]]:
        return self._aggs[symbol].payloads(timeframe, count)

    def candle_range(self, symbol: str, timeframe: str, from_s: int, to_s: int,
                     count: int) -> list[dict[str, Any]]:
        """Bars opening ``from_s..to_s`` (at most ``count``): those older than memory from the
        source's store, the rest (the forming bar included) from memory."""
        held = self._aggs[symbol].payloads(timeframe, self.max_candles + 1)
        oldest = held[0]["time"] if held else to_s + 1
        out: list[dict[str, Any]] = []
        if from_s < oldest:
            older = self._from_stores("bars", oldest, lambda store: store.candle_range(
                symbol, TIMEFRAMES[timeframe], from_s, min(to_s, oldest - 1), count))
            out = [c.to_payload(True) for c in older]
        first = bisect.bisect_left(held, from_s, key=_bar_time)
        last = bisect.bisect_right(held, to_s, key=_bar_time)
        return out + held[first:min(last, first + count - len(out))]

    def tick_range(self, symbol: str, from_msc: int, to_msc: int, count: int) -> Packed:
        """Ticks stamped ``from_msc..to_msc`` (at most ``count``): those older than the journal
        from the source's store (or the recording), the rest from the journal."""
        covers = self._journal.covers_from(symbol)
        split = to_msc + 1 if covers is None else covers
        parts = []
        if from_msc < split:
            older = self._from_stores("ticks", split, lambda store: store.tick_range(
                symbol, from_msc, min(to_msc, split - 1), count))
            parts.append(tick_columns(older))
        held = len(parts[0]["time_msc"]) if parts else 0
        if held < count and to_msc >= split:
            parts.append(self._journal.between(symbol, max(from_msc, split), to_msc, count - held))
        return pack_ticks(symbol, joined(parts))

    def ticks_since(self, symbol: str, epoch: int, after_seq: int, count: int) -> Packed:
        try:
            first_seq, columns = self._journal.since(symbol, epoch, after_seq, count)
        except TooOld as exc:
            raise RpcError(ErrorCode.TOO_OLD, str(exc)) from None
        return pack_ticks(symbol, columns, first_seq, epoch)

    def _from_stores(self, what: str, held_from: int, read: Callable[[Any], list[Any] | None]) -> list[Any]:
        """``read(store)`` from the source's store, else from the recording (``RECORD_DIR``):
        ``unavailable`` if neither keeps any or a read fails."""
        for store in self._stores:
            try:
                older = read(store)
            except Exception as exc:  # a terminal call or a file failing: that reply fails
                raise RpcError(ErrorCode.UNAVAILABLE, f"could not read {what} older than {held_from}: "
                                                      f"{type(exc).__name__}: {exc}") from None
            if older is not None:
                return older
        raise RpcError(ErrorCode.UNAVAILABLE, f"the engine holds {what} from {held_from} on and the "
                                              f"{self.source.name} source keeps none older"
                                              f"{'' if len(self._stores) == 1 else ', nor does the recording'}")

    def book(self, symbol: str) -> dict[str, Any] | None:
        book = self.source.book(symbol, now_ms())
        return book.to_payload() if book is not None else None

    def account(self) -> dict[str, Any] | None:
        return self.source.account(now_ms())

    def positions(self, symbol: str | None) -> list[dict[str, Any]] | None:
        return self._activity.open_items("position", symbol) if self._activity.live else None

    def orders(self, symbol: str | None) -> list[dict[str, Any]] | None:
        return self._activity.open_items("order", symbol) if self._activity.live else None

    def deals(self, from_s: int, to_s: int, symbol: str | None, count: int) -> list[dict[str, Any]] | None:
        """Deals with ``time`` in ``from_s..to_s`` (the market clock), ``count`` at most."""
        if not self._activity.live:
            return None
        try:
            return self.source.deal_range(from_s, to_s, symbol, count)
        except Exception as exc:  # a terminal call failing: that reply fails, clearly
            raise RpcError(ErrorCode.UNAVAILABLE, f"could not read the deals: {exc}") from None

    def snapshot(self, prefix: bytes) -> list[list[Any]]:
        # Positions and orders are sets: every open one, not the last message of each topic.
        out = [[t.decode(), decode(f)] for t, f in self._pub.last.items()
               if t.startswith(prefix) and not t.startswith(SET_PREFIXES)]
        out += self._activity.snapshot(prefix)
        out += [[t.decode(), p] for t, p in self._foreign.items(prefix)]
        out.sort(key=lambda m: m[0])
        return out
