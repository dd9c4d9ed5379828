"""``mt5-recorder``: record the bus' ticks, closed candles, indicator values and books to Parquet.

The layout of a recording is ``engine.recording``'s. The recorder is one more subscriber: a SUB
with a high-water mark, so it never holds the bus back; if it falls behind, the bus drops what
it cannot queue and the recorder sees the ``seq`` gaps, which it counts. Every gap goes through
``Recorder.on_gap``. A restarted recorder resumes from the positions its own files and
``_recorder.json`` record, never records a message twice, and writes new files only. It
publishes ``health:recorder:`` every second.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import IO, Any

import numpy as np
import zmq
import zmq.backend

from engine.bus import BusPublisher, publisher_socket
from engine.config import (
    HWM,
    ConfigError,
    Settings,
    above,
    between,
    endpoint,
    log_level,
    non_empty,
    setting,
    writable_file,
)
from engine.logs import RateLimitedLog, setup_logging
from engine.client import RpcClient, RpcError
from engine.protocol import MAX_TICKS, ProtocolError, TickEncoder, encode, health_topic
from engine.recording import (
    KINDS,
    LOCK_FILE,
    PREFIXES,
    Chunks,
    Gap,
    Positions,
    RecordingError,
    Topic,
    file_name,
    fits_int64,
    parse_topic,
    read_record,
    resume,
    table_of,
    temporary_files,
    tick_tables,
    write_atomic,
    write_state,
)
from engine.security import CurveClient, SecurityError, apply_client
from engine.signals import StopFlag, stop_on_signals

log = logging.getLogger("recorder")

COMPONENT = "recorder"
HEALTH_INTERVAL_S = 1.0
DRAIN = 10_000  # messages read per wake-up before the clock is looked at again
MAX_TOPICS = 100_000  # parsed topic names kept; the engine's are bounded by symbols x timeframes
EXIT_CANNOT_START = 2
REPAIR_TIMEOUT_MS = 2000  # one journal request; the SUB's high-water mark queues meanwhile
_RCVMORE = int(zmq.RCVMORE)


@dataclass(frozen=True)
class RecorderConfig(Settings):
    """Every recorder setting; each field's metadata names its variable and the rules it follows."""

    record_dir: str = field(default="recording", metadata=setting("RECORD_DIR", non_empty))
    bus_endpoint: str = field(default="tcp://127.0.0.1:5555", metadata=setting("BUS_ENDPOINT", endpoint))
    bus_pub_endpoint: str = field(default="tcp://127.0.0.1:5557",
                                  metadata=setting("BUS_PUB_ENDPOINT", endpoint))
    # The engine's RPC: missed ticks are asked for again from its tick journal.
    rpc_endpoint: str = field(default="tcp://127.0.0.1:5556", metadata=setting("RPC_ENDPOINT", endpoint))
    # A chunk (a file per partition) is written this long after its first row at the latest:
    # what a crash can lose, and a file per partition per flush.
    flush_s: float = field(default=1.0, metadata=setting("RECORD_FLUSH_S", above(0)))
    # ... or once this many rows wait (the memory bound).
    flush_rows: int = field(default=100_000, metadata=setting("RECORD_FLUSH_ROWS", between(1, 10_000_000)))
    hwm: int = field(default=100_000, metadata=setting("BUS_HWM", HWM))
    curve_client_secret: str = field(default="", metadata=setting("CURVE_CLIENT_SECRET"))
    curve_server_key: str = field(default="", metadata=setting("CURVE_SERVER_KEY"))
    log_level: str = field(default="INFO", metadata=setting("LOG_LEVEL", log_level))
    log_file: str = field(default="", metadata=setting("LOG_FILE", writable_file))

    @cached_property
    def curve(self) -> CurveClient | None:
        """CURVE client keys (``SecurityError`` when the files are unusable), or None."""
        return CurveClient.load(self.curve_client_secret, self.curve_server_key)


_FLAGS = (
    ("--dir", "record_dir", "the recording directory (env RECORD_DIR, default recording)"),
    ("--flush-s", "flush_s", "write chunks at least this often, seconds (env RECORD_FLUSH_S, default 1)"),
    ("--flush-rows", "flush_rows", "... or once this many rows wait (env RECORD_FLUSH_ROWS, default 100000)"),
    ("--bus-endpoint", "bus_endpoint", "env BUS_ENDPOINT"),
    ("--bus-pub-endpoint", "bus_pub_endpoint", "env BUS_PUB_ENDPOINT"),
    ("--rpc-endpoint", "rpc_endpoint", "the engine's RPC, for missed ticks (env RPC_ENDPOINT)"),
)


def load_config(argv: list[str] | None = None) -> RecorderConfig:
    """CLI flags > environment > .env > defaults; ``ConfigError``/``SecurityError`` name the setting."""
    parser = argparse.ArgumentParser(prog="mt5-recorder", description=__doc__.split("\n")[0])
    for flag, dest, text in _FLAGS:
        parser.add_argument(flag, dest=dest, help=text)
    parser.add_argument("--env-file", default=".env")
    args = parser.parse_args(argv)
    config = RecorderConfig.load({dest: getattr(args, dest) for _, dest, _ in _FLAGS}, dotenv=args.env_file)
    _ = config.curve  # unusable key files stop the recorder here, not at its first connect
    return config


class DirectoryLock:
    """An exclusive lock on the recording directory: two recorders writing one recording
    would interleave their files and state."""

    def __init__(self, root: Path) -> None:
        self._file: IO[str] = (root / LOCK_FILE).open("a")
        try:
            import fcntl  # POSIX; on Windows the lock file's presence is all there is
        except ImportError:
            return
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.close()
            raise RecordingError(f"another recorder is writing {root}") from None

    def release(self) -> None:
        self._file.close()


class Recorder:
    """The process shell: bus messages in, Parquet files out, health back onto the bus."""

    def __init__(self, config: RecorderConfig, ctx: zmq.Context | None = None) -> None:
        self.config = config
        self.root = Path(config.record_dir)
        self._ctx = ctx or zmq.Context.instance()
        self._stop = StopFlag()
        self._chunks = Chunks(config.flush_s, config.flush_rows)
        self._topics: dict[bytes, tuple[str, Topic] | None] = {}
        # Tick frames not read yet, by topic: read at once after each drain of the socket.
        self._ticks: dict[str, tuple[TickEncoder, list[bytes]]] = {}
        self._log = RateLimitedLog(log, interval_s=5.0)
        self._started = time.monotonic()
        self._window = (self._started, 0)
        self._lock: DirectoryLock | None = None
        self._opened = False  # resumed: only then may close() write files and state
        self._sub: zmq.Socket | None = None
        self._pub: BusPublisher | None = None
        self._rpc: RpcClient | None = None
        self.run_id = 0
        self.positions = Positions()
        self.counter = 0
        self.through = ""
        self.received = self.rows = self.bytes = self.files = 0
        self.gaps = self.missed = self.gaps_repaired = self.repaired = 0
        self.missed_by_kind: Counter[str] = Counter()
        self.duplicates = self.malformed = self.dropped = self.rows_lost = 0
        self.write_error = ""

    def stop(self) -> None:
        self._stop.set()

    def open(self) -> None:
        """Lock the directory, resume from what it holds, connect (``RecordingError`` or
        ``OSError`` when the directory cannot be a recording)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = DirectoryLock(self.root)
        for tmp in temporary_files(self.root):
            tmp.unlink()  # half-written by a recorder that died; what it held was never counted
        state = resume(self.root, time.time_ns() // 1_000_000)
        self.run_id, self.positions = state.run, Positions(state.positions)
        cfg = self.config
        self._pub = BusPublisher(publisher_socket(self._ctx, cfg.bus_pub_endpoint, cfg.hwm, cfg.curve))
        sub = self._sub = apply_client(self._ctx.socket(zmq.SUB), cfg.curve)
        sub.linger = 0
        sub.rcvhwm = cfg.hwm
        for prefix in PREFIXES:
            sub.subscribe(prefix)
        sub.connect(cfg.bus_endpoint)
        self._rpc = RpcClient(cfg.rpc_endpoint, REPAIR_TIMEOUT_MS, self._ctx, cfg.curve)
        self._opened = True
        log.info("run %d resumes %d topics in %s", self.run_id, len(state.positions), self.root)

    def close(self) -> None:
        """Write what is buffered, then close the sockets and release the directory."""
        if self._opened:
            self.flush()
        if self._lock is not None:
            self._lock.release()
        if self._pub is not None:
            self._pub.close()
        if self._rpc is not None:
            self._rpc.close()
        if self._sub is not None:
            self._sub.close(0)

    def run(self) -> None:
        sub = self._sub
        # pyzmq's compiled recv and getsockopt: a µs a frame, where the attribute sugar
        # (``sub.rcvmore``) costs several.
        recv = zmq.backend.Socket.recv.__get__(sub)
        more = partial(zmq.backend.Socket.get.__get__(sub), _RCVMORE)
        next_health = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            wait_s = self.config.flush_s - (now - self._chunks.oldest) if self._chunks.rows else 0.1
            if sub.poll(max(1, min(100, int(wait_s * 1000)))):
                received = time.monotonic()
                for _ in range(DRAIN):
                    try:
                        frames = [recv(zmq.NOBLOCK)]
                    except zmq.Again:
                        break
                    while more():
                        frames.append(recv())
                    self.handle(frames, received)
                self.read_ticks(received)
            now = time.monotonic()
            if self._chunks.due(now):
                self.flush()
            if now >= next_health:
                next_health = now + HEALTH_INTERVAL_S
                self._pub.publish(health_topic(COMPONENT), self.health())

    def handle(self, frames: list[bytes], now: float) -> None:
        """One bus message received at ``now`` (monotonic s); never raises: a bad one is counted
        and logged at a bounded rate."""
        self.received += 1
        try:
            if len(frames) != 2:
                raise ProtocolError(f"expected 2 frames, got {len(frames)}")
            topic, record_topic = self._topic(frames[0])
            ticks = record_topic.ticks
            if ticks is not None:
                if frames[1].startswith(ticks.prefix):  # the engine's tick map: read with the others
                    pending = self._ticks.get(topic)
                    if pending is None:
                        pending = self._ticks[topic] = (ticks, [])
                    pending[1].append(frames[1])
                    return
                self._read_ticks_of(topic, now)  # those before it first
            record = read_record(record_topic, frames[1])
        except ProtocolError as exc:
            self.malformed += 1
            self._log.warning("malformed", "skipped a malformed message (%d so far): %s topic=%r",
                              self.malformed, exc, frames[0][:80])
            return
        fresh, gap = self.positions.accept(topic, record.epoch, record.seq)
        if gap is not None:
            self.on_gap(gap)
        if not fresh:
            self.duplicates += 1
        elif record.partition is not None:
            self._chunks.add(topic, record, now)

    def read_ticks(self, now: float) -> None:
        """Read the tick frames gathered since the last call, a topic's at once."""
        for topic in list(self._ticks):
            self._read_ticks_of(topic, now)

    def _read_ticks_of(self, topic: str, now: float) -> None:
        encoder, frames = self._ticks.pop(topic, (None, None))
        if not frames:
            return
        values, written = encoder.values_of(frames)
        written &= fits_int64(values)
        if not written.all():
            self.malformed += int((~written).sum())
            self._log.warning("malformed", "skipped tick frames of %s not in the engine's layout or "
                              "range (%d malformed so far)", topic, self.malformed)
            values = values[written]
            if not len(values):
                return
        keep, gaps = self.positions.accept_many(topic, values["epoch"].astype(np.int64),
                                                values["seq"].astype(np.int64))
        for gap in gaps:
            self.on_gap(gap)
        if keep is not None:
            self.duplicates += int((~keep).sum())
            values = values[keep]
        if len(values):
            for partition, table, last in tick_tables(encoder.symbol, values):
                self._chunks.add_table(topic, partition, table, last, now)

    def _topic(self, raw: bytes) -> tuple[str, Topic]:
        known = self._topics.get(raw)
        if known is None:
            if raw in self._topics:
                raise ProtocolError(f"not a recorded topic: {raw[:80]!r}")
            if len(self._topics) >= MAX_TOPICS:
                self._topics.clear()
            try:
                parsed = parse_topic(raw)  # first: it refuses a name that is not UTF-8
                known = (raw.decode(), parsed)
            except ProtocolError:
                self._topics[raw] = None
                raise
            self._topics[raw] = known
        return known

    def on_gap(self, gap: Gap) -> None:
        """Messages the recorder never received (it fell behind, or was not running): ticks
        are asked for again from the engine's journal (``Subscriber(repair=True)``'s way) and
        recorded before the message that showed the gap; what cannot be had is counted missed."""
        self.gaps += 1
        kind = gap.topic.split(":", 1)[0]
        recovered = self._repair(gap) if kind == "tick" and self._rpc is not None else 0
        lost = gap.missed - recovered
        if recovered:
            self.repaired += recovered
            if not lost:
                self.gaps_repaired += 1
        if lost:
            self.missed += lost
            self.missed_by_kind[kind] += lost
            self._log.warning("gap", "missed %d messages of %s (seq %d..%d, epoch %d, %d repaired); "
                              "%d gaps so far", lost, gap.topic, gap.first, gap.last, gap.epoch,
                              recovered, self.gaps)

    def _repair(self, gap: Gap) -> int:
        """Record the gap's ticks from the engine's journal; how many were had."""
        record_topic = self._topic(gap.topic.encode())[1]
        after, got = gap.first - 1, 0
        now = time.monotonic()
        while after < gap.last:
            try:
                ticks = self._rpc.ticks(record_topic.symbol, after_seq=after, epoch=gap.epoch,
                                        count=min(MAX_TICKS, gap.last - after))
            except RpcError as exc:  # too_old, another epoch, no engine: those are lost
                self._log.warning("repair", "cannot repair %s after seq %d: %s", gap.topic, after, exc)
                break
            ticks = [t for t in ticks if after < t.get("seq", 0) <= gap.last]
            if not ticks:
                break
            for tick in ticks:
                record = read_record(record_topic, encode(tick))
                if record.partition is not None:
                    self._chunks.add(gap.topic, record, now)
            got += len(ticks)
            after = ticks[-1]["seq"]
        return got

    def flush(self) -> None:
        """Write every buffered chunk (a file per partition), then the positions they reach."""
        self.read_ticks(time.monotonic())
        chunks = self._chunks.take()
        for partition, chunk in chunks:
            table, dropped = table_of(KINDS[partition.kind], chunk)
            if dropped:
                self.dropped += dropped
                self._log.warning("unfit", "dropped %d %s rows whose fields do not fit the schema "
                                  "(%d so far)", dropped, partition.kind, self.dropped)
            if not table.num_rows:
                continue
            name = file_name(self.run_id, self.counter)
            self.counter += 1
            try:
                self.bytes += write_atomic(partition.path(self.root) / name, table)
            except OSError as exc:
                self.rows_lost += table.num_rows
                self.write_error = f"{type(exc).__name__}: {exc}"
                self._log.warning("write", "cannot write %s: %s (%d rows lost so far)", partition,
                                  self.write_error, self.rows_lost)
                continue
            self.write_error = ""
            self.through = name
            self.files += 1
            self.rows += table.num_rows
        try:
            write_state(self.root, self.run_id, self.through, self.positions.last)
        except OSError as exc:
            self._log.warning("state", "cannot write the recorder's state: %s", exc)

    def health(self) -> dict[str, Any]:
        now = time.monotonic()
        since, count = self._window
        rate = (self.rows - count) / (now - since) if now > since else 0.0
        self._window = (now, self.rows)
        return {
            "component": COMPONENT,
            "status": "degraded" if self.write_error else "ok",
            "time_msc": time.time_ns() // 1_000_000,
            "dir": str(self.root),
            "run": self.run_id,
            "rows_total": self.rows,
            "rows_per_s": round(rate, 1),
            "bytes_total": self.bytes,
            "files_total": self.files,
            # How long the oldest row not yet on disk has waited: what a crash now would lose.
            "lag_ms": round((now - self._chunks.oldest) * 1000) if self._chunks.rows else 0,
            "buffered_rows": self._chunks.rows,
            "messages_total": self.received,
            "gaps": self.gaps,
            "missed": self.missed,
            "missed_by_kind": dict(self.missed_by_kind),
            "gaps_repaired": self.gaps_repaired,
            "ticks_repaired": self.repaired,
            "duplicates": self.duplicates,
            "malformed": self.malformed,
            "unfit_rows": self.dropped,
            "rows_lost": self.rows_lost,
            "write_error": self.write_error,
            "uptime_s": round(now - self._started, 1),
        }


def main(argv: list[str] | None = None) -> int:
    try:
        config = load_config(argv)
    except (ConfigError, SecurityError) as exc:
        print(f"mt5-recorder: configuration error: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    setup_logging(config.log_level, config.log_file)
    ctx = zmq.Context.instance()
    recorder = Recorder(config, ctx)
    stop_on_signals(recorder.stop)
    try:
        recorder.open()
    except (RecordingError, OSError) as exc:
        print(f"mt5-recorder: cannot start: {exc}", file=sys.stderr)
        recorder.close()
        ctx.term()
        return EXIT_CANNOT_START
    print(f"mt5-recorder: recording {config.bus_endpoint} into {recorder.root} "
          f"(run {recorder.run_id})", flush=True)
    try:
        recorder.run()
    finally:
        recorder.close()
        ctx.term()
    log.info("stopped (pid %d)", os.getpid())
    return 0


if __name__ == "__main__":
    sys.exit(main())
