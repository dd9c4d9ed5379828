"""mt5-recorder: Parquet files of the bus, exactly once across a SIGKILL, replayed into the same
candles; the layout's pure pieces; bad directories refused at start-up."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from engine.client import RpcClient
from engine.models import Tick
from engine.protocol import TICK_FIELDS, TickEncoder, encode, indicator_topic, tick_topic
from engine.recording import (
    KINDS,
    STATE_FILE,
    Chunk,
    Gap,
    Partition,
    Positions,
    Record,
    data_files,
    file_name,
    parse_topic,
    read_record,
    resume,
    table_of,
    temporary_files,
    write_atomic,
    write_state,
)
from engine.sources.recording_reader import price_digits
from engine.recorder import Recorder, RecorderConfig
from tests.procs import ChildProcess, EngineProcess, ServiceProcess, collect, subscriber
from tests.test_readme import readme_block
from tests.test_config import (
    test_every_component_checks_its_endpoints_log_level_and_log_file as endpoint_rules,
    test_every_numeric_setting_of_every_component_has_a_rule as numeric_rules,
)

FLUSH_S = 1.0  # the recorder's default


@dataclass
class RecorderProcess(ChildProcess):
    """An ``mt5-recorder`` child writing ``directory`` from ``engine``'s bus."""

    module = "engine.recorder"
    engine: EngineProcess | None = None
    directory: Path | None = None
    extra: list[str] = field(default_factory=list)

    def command(self) -> list[str]:
        e = self.engine
        return [*super().command(), "--dir", str(self.directory), "--bus-endpoint", e.bus,
                "--bus-pub-endpoint", e.pub, "--rpc-endpoint", e.rpc, *self.extra]

    def start(self, timeout: float = 30.0) -> RecorderProcess:
        self.spawn()
        self.wait_output("mt5-recorder: recording", timeout)
        return self


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def recorded(directory: Path, kind: str) -> list[dict]:
    """Every row of one dataset, as pyarrow reads a hive-partitioned dataset."""
    return ds.dataset(directory / kind, partitioning="hive").to_table().to_pylist()


def start_recorder(started: list, engine: EngineProcess, directory: Path, *extra: str) -> RecorderProcess:
    proc = RecorderProcess(engine=engine, directory=directory, extra=list(extra))
    started.append(proc)
    return proc.start()


def test_recorder_killed_and_restarted_holds_every_tick_of_the_run_exactly_once(
        start_engine, started, zmq_ctx, tmp_path):
    engine = start_engine("--rate", "1000")
    reference = subscriber(zmq_ctx, engine.bus, b"tick:", b"health:recorder:")
    assert reference.poll(10_000), "no ticks from the engine"
    first = start_recorder(started, engine, tmp_path)
    time.sleep(2.5)  # two flushes at least
    killed_ms = now_ms()
    first.stop(signal.SIGKILL)
    time.sleep(1.0)
    respawned_ms = now_ms()
    second = start_recorder(started, engine, tmp_path)
    time.sleep(2.5)
    assert second.stop() == 0  # SIGTERM: flushes what it holds
    stopped_ms = now_ms()
    messages = collect(reference, until=lambda m: bool(m) and m[-1][1].get("time_msc", 0) > stopped_ms + 300,
                       seconds=15)

    ticks = {(p["symbol"], p["seq"]): p for t, p in messages if t.startswith(b"tick:")}
    epochs = {p["epoch"] for p in ticks.values()}
    assert len(epochs) == 1
    seen: dict[str, list[int]] = {}
    for symbol, seq in sorted(ticks):
        seen.setdefault(symbol, []).append(seq)
    for symbol, seqs in seen.items():  # the reference saw every tick
        assert seqs == list(range(seqs[0], seqs[-1] + 1)), symbol

    rows = recorded(tmp_path, "tick")
    keys = [(r["symbol"], r["seq"]) for r in rows]
    assert len(keys) == len(set(keys)), "a tick recorded twice"
    for row in rows:  # each is the tick the bus carried, field by field
        assert {k: v for k, v in row.items() if k != "date"} == ticks[(row["symbol"], row["seq"])]
        assert row["date"] == time.strftime("%Y-%m-%d", time.gmtime(row["time_msc"] // 1000))
    lines = []
    for symbol, seqs in sorted(seen.items()):
        have = sorted(seq for s, seq in keys if s == symbol)
        # Every tick from the recorder's first to its stop, the stretch it was down included
        # (repaired from the engine's tick journal after the restart).
        assert have == list(range(have[0], have[-1] + 1)), f"{symbol}: a hole in the recording"
        down = [seq for seq in seqs if killed_ms + 50 <= ticks[(symbol, seq)]["time_msc"] <= respawned_ms]
        assert down and set(down) <= set(have), symbol
        assert ticks[(symbol, have[-1])]["time_msc"] >= stopped_ms - 3000  # recorded to the end
        lines.append(f"{symbol}: {len(have)} recorded, {len(down)} of them published while it was down")

    runs = sorted({path.name.split("-")[0] for path in data_files(tmp_path)})
    assert len(runs) == 2 and not list(temporary_files(tmp_path))
    for path in data_files(tmp_path):  # every file is whole
        pq.read_table(path)
    state = json.loads((tmp_path / STATE_FILE).read_text())
    for symbol in seen:  # where the next run resumes from
        assert state["positions"][tick_topic(symbol).decode()][1] == max(q for s, q in keys if s == symbol)
    health = [p for t, p in messages if t.startswith(b"health:recorder:") and p["run"] == int(runs[1])]
    assert health, "the restarted recorder published no health"
    last = health[-1]
    assert last["missed_by_kind"].get("tick", 0) == 0
    assert last["gaps_repaired"] >= len(seen) and last["ticks_repaired"] > 0
    assert last["files_total"] > 0 and last["rows_total"] > 0 and last["duplicates"] == 0
    print(f"\nrecorder SIGKILLed and restarted at 1000 ticks/s: {len(rows)} ticks recorded once, none "
          f"missing; restarted recorder's health: gaps {last['gaps']}, repaired {last['gaps_repaired']} "
          f"({last['ticks_repaired']} ticks from the engine's journal), missed {last['missed_by_kind']}\n  "
          + "\n  ".join(lines))


def write_two_symbol_ticks(path: Path, minutes: int, seed: int = 7) -> None:
    """A plain replay CSV: EURUSD and GBPUSD, a tick a second each, random walks."""
    rng = random.Random(seed)
    start = 1704153600000  # 2024-01-02 00:00 UTC
    prices = {"EURUSD": 1.08, "GBPUSD": 1.26}
    lines = ["symbol,time_msc,bid,ask"]
    for second in range(minutes * 60):
        for symbol in prices:
            prices[symbol] += rng.choice((-1, 1)) * rng.randint(1, 9) * 1e-5
            bid = round(prices[symbol], 5)
            lines.append(f"{symbol},{start + second * 1000 + (symbol == 'GBPUSD') * 500},{bid:.5f},"
                         f"{bid + rng.randint(5, 15) * 1e-5:.5f}")
    path.write_text("\n".join(lines) + "\n")


def closed_candles(messages: list) -> dict[tuple, dict]:
    return {(p["symbol"], p["timeframe"], p["time"]): {k: v for k, v in p.items() if k not in ("seq", "epoch")}
            for t, p in messages if t.startswith(b"candle:") and p["closed"]}


def play(started, zmq_ctx, engine: EngineProcess, *prefixes: bytes) -> list:
    """Start ``engine`` (a replay) with a subscriber to ``prefixes`` (default candles) connected
    first; its messages until the replay has finished."""
    sub = subscriber(zmq_ctx, engine.bus, *(prefixes or (b"candle:",)))
    started.append(engine)
    engine.start()
    messages: list = []
    with RpcClient(engine.rpc, timeout_ms=3000) as rpc:
        deadline = time.monotonic() + 60
        while not rpc.health()["source_finished"] and time.monotonic() < deadline:
            messages += collect(sub, seconds=0.2)
    while tail := collect(sub, seconds=0.5):  # what is still queued
        messages += tail
    return messages


def caught_up(health, seconds: float = 30.0) -> dict:
    """The recorder's health once it has read nothing new for a health interval."""
    previous: dict = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _, current in collect(health, until=bool, seconds=2.0):
            if previous and current["messages_total"] == previous["messages_total"]:
                return current
            previous = current
    raise TimeoutError(f"the recorder is still reading: {previous}")


def test_replaying_a_recording_rebuilds_the_same_closed_candles(started, zmq_ctx, tmp_path):
    export = tmp_path / "ticks.csv"
    write_two_symbol_ticks(export, minutes=600)
    recording = tmp_path / "recording"
    # As fast as possible: bars then close on ticks alone (at a finite speed the clock may
    # close one before its last tick is polled, differently in each run). No forming updates:
    # the burst of ticks and closed bars fits every subscriber's queue.
    speed = ["--replay-speed", "0", "--timeframes", "M1,M5,M15,H1", "--forming-throttle-ms", "86400000"]
    engine = EngineProcess(["--source", "replay", "--replay-file", str(export), *speed])
    recorder = start_recorder(started, engine, recording)  # connects before the engine binds
    health = subscriber(zmq_ctx, engine.bus, b"health:recorder:")
    messages = play(started, zmq_ctx, engine)
    caught_up(health)
    assert recorder.stop() == 0
    engine.stop()
    live = closed_candles(messages)

    stored = {(r["symbol"], r["timeframe"], r["time"]): {k: v for k, v in r.items() if k not in ("seq", "epoch", "date")}
              for r in recorded(recording, "candle")}
    common = stored.keys() & live.keys()
    # Both subscribers join as the engine starts its burst: compare the bars both saw.
    assert len(common) >= 0.5 * len(live) and all(stored[k] == live[k] for k in common)

    ticks = recorded(recording, "tick")
    for symbol in ("EURUSD", "GBPUSD"):  # every tick from the recorder's first to the last one
        seqs = sorted(r["seq"] for r in ticks if r["symbol"] == symbol)
        assert seqs == list(range(seqs[0], 600 * 60 + 1))
    first_tick_s = min(r["time_msc"] for r in ticks) // 1000
    messages = play(started, zmq_ctx, EngineProcess(["--source", "replay", "--replay-file", str(recording), *speed]),
                    b"candle:", b"tick:")
    republished = 0
    for symbol in ("EURUSD", "GBPUSD"):  # the same ticks again, in order, to the recording's last
        fields = TICK_FIELDS[1:]
        again = [tuple(p[f] for f in fields) for t, p in messages if t == tick_topic(symbol)]
        stored_ticks = [tuple(r[f] for f in fields) for r in sorted(ticks, key=lambda r: r["seq"])
                        if r["symbol"] == symbol]
        assert len(again) >= 0.5 * len(stored_ticks) and again == stored_ticks[-len(again):]
        republished += len(again)
    replayed = closed_candles(messages)
    # Bars that opened before the recording's first tick are partial in it; the rest must match.
    whole = {k for k in live if k[2] > first_tick_s}
    compared = whole & replayed.keys()
    assert len(compared) >= max(500, 0.5 * len(whole)), (len(compared), len(whole))
    differing = {k: (replayed[k], live[k]) for k in sorted(compared) if replayed[k] != live[k]}
    assert not differing, [(k, {f: (a[f], b[f]) for f in a if a[f] != b[f]}) for k, (a, b) in list(differing.items())[:5]]
    by_tf = {tf: sum(1 for k in compared if k[1] == tf) for tf in ("M1", "M5", "M15", "H1")}
    print(f"\nrecorded {len(ticks)} ticks and {len(stored)} closed candles ({len(common)} checked against "
          f"the bus); the recording replayed republished the same ticks ({republished} seen) and rebuilt "
          f"{len(compared)} of {len(whole)} whole bars identically: {by_tf}")


def test_replay_refuses_a_directory_that_is_not_a_recording_or_holds_a_corrupt_file(started, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    good = Partition("tick", "EURUSD", "2024-01-02").path(broken) / file_name(1, 0)
    write_atomic(good, table_of(KINDS["tick"], _tick_chunk(3))[0])
    corrupt = good.with_name(file_name(1, 1))
    corrupt.write_bytes(good.read_bytes()[:-20])  # a file cut short: no footer
    for directory, message in ((empty, "is not a recording"), (broken, f"{corrupt}: corrupt recording file")):
        engine = EngineProcess(["--source", "replay", "--replay-file", str(directory)])
        started.append(engine)
        engine.start(wait=False)
        assert engine.proc.wait(30) == 2
        assert message in engine.output()


def test_recorder_refuses_a_directory_it_cannot_record_into(started, tmp_path):
    engine = EngineProcess()  # never started: the recorder fails before it needs the bus
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    holder = start_recorder(started, engine, tmp_path / "rec")
    cases = ((["--dir", str(not_a_dir)], "cannot start"),
             (["--dir", str(tmp_path / "rec")], "another recorder is writing"),
             (["--dir", ""], "RECORD_DIR"),
             (["--dir", str(tmp_path / "x"), "--flush-s", "0"], "RECORD_FLUSH_S"))
    for args, message in cases:
        proc = RecorderProcess(engine=engine, directory=tmp_path / "unused", extra=args)  # later --dir wins
        started.append(proc)
        proc.spawn()
        assert proc.proc.wait(30) == 2, proc.output()
        assert message in proc.output()
    assert holder.proc.poll() is None


def test_service_runs_the_recorder_with_record_and_the_readme_query_reads_it(started, zmq_ctx, tmp_path):
    recording = tmp_path / "recording"
    service = ServiceProcess(["--workers", "1", "--no-bridge", "--record", str(recording), "--rate", "200"])
    started.append(service)
    sub = subscriber(zmq_ctx, service.engine.bus, b"health:recorder:")
    service.start()
    health = collect(sub, until=lambda m: any(p["files_total"] > 0 and p["rows_total"] > 0 for _, p in m),
                     seconds=30)
    assert health and health[-1][1]["files_total"] > 0, service.output()
    assert service.stop() == 0
    assert "[recorder] mt5-recorder: recording" in service.output()
    assert recorded(recording, "tick") and recorded(recording, "book")
    query = subprocess.run([sys.executable, "-c", readme_block("recording-query")], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert query.returncode == 0, query.stderr
    count, rest = query.stdout.split(" ", 1)
    eurusd = [r for r in recorded(recording, "tick") if r["symbol"] == "EURUSD"]
    assert int(count) == len(eurusd) > 0 and rest.startswith("EURUSD ticks, last bid")


def test_recorder_counts_bad_indicator_messages_and_keeps_recording(start_engine, started, zmq_ctx, tmp_path):
    """Any publisher may put ind: for a served symbol on the bus; a payload the schema cannot
    hold is counted, never written and never stops the recorder."""
    from engine.bus import BusPublisher, publisher_socket

    engine = start_engine("--rate", "200")
    start_recorder(started, engine, tmp_path)
    health = subscriber(zmq_ctx, engine.bus, b"health:recorder:")
    pub = BusPublisher(publisher_socket(zmq_ctx, engine.pub, 1000))
    topic = indicator_topic("EURUSD", "M1")
    good = {"symbol": "EURUSD", "timeframe": "M1", "time": 1704153600, "closed": True, "sma": 1.5, "rsi": None}
    for i in range(20):
        pub.publish(topic, {**good, "time": 1704153600 + 60 * i, "sma": "high"} if i % 2 else
                    {**good, "time": 1704153600 + 60 * i})
        pub.publish(topic, {**good, "time": "noon"})
        time.sleep(0.05)
    figures = collect(health, until=lambda m: any(p["unfit_rows"] and p["malformed"] for _, p in m), seconds=15)
    pub.close()
    last = figures[-1][1]
    assert last["malformed"] > 0 and last["unfit_rows"] > 0
    rows = recorded(tmp_path, "ind")
    assert rows and {r["sma"] for r in rows} == {1.5} and all(r["rsi"] is None for r in rows)
    assert recorded(tmp_path, "tick")


# -- the pure pieces --------------------------------------------------------------------------


def _tick_chunk(n: int, seq0: int = 1, bid: object = 1.1) -> Chunk:
    chunk = Chunk()
    for i in range(n):
        chunk.rows.append((bid, 1.2, 0.0, 0, 1704153600000 + i, 6, 0.0, seq0 + i, 5))
        chunk.positions["tick:EURUSD:"] = (5, seq0 + i)
    return chunk


def test_positions_tell_duplicates_gaps_and_restarts():
    positions = Positions({"tick:A:": (10, 5)})
    assert positions.accept("tick:A:", 10, 5) == (False, None)
    assert positions.accept("tick:A:", 10, 6) == (True, None)
    assert positions.accept("tick:A:", 10, 9) == (True, Gap("tick:A:", 10, 7, 8))
    assert positions.accept("tick:A:", 9, 100) == (False, None)  # before a restart already seen
    assert positions.accept("tick:A:", 11, 3) == (True, Gap("tick:A:", 11, 1, 2))
    assert positions.accept("tick:A:", 12, 1) == (True, None)
    assert positions.accept("tick:B:", 10, 50) == (True, None)  # joined mid-stream: no gap claimed
    assert Gap("t", 1, 7, 8).missed == 2


def test_records_go_to_their_symbol_and_market_date_and_forming_bars_are_not_written():
    topic = parse_topic(b"candle:EUR/USD:M5:")
    bar = {"symbol": "EUR/USD", "timeframe": "M5", "time": 1704239700, "open": 1.0, "high": 1.0, "low": 1.0,
           "close": 1.0, "tick_volume": 1, "spread": 0, "real_volume": 0, "closed": True, "seq": 3, "epoch": 9}
    record = read_record(topic, encode(bar))
    assert record.partition == Partition("candle", "EUR/USD", "2024-01-02")
    assert record.partition.path(Path("/r")) == Path("/r/candle/symbol=EUR%2FUSD/date=2024-01-02")
    assert read_record(topic, encode({**bar, "closed": False})) == Record(9, 3, None, (), None)
    for bad in ({**bar, "timeframe": "M1"}, {**bar, "seq": -1}, {**bar, "time": "x"}, {**bar, "symbol": "X"}):
        with pytest.raises(ValueError):
            read_record(topic, encode(bad))
    for raw in (b"account:", b"candle:EURUSD:", b"candle:EURUSD:M7:", b"tick:EUR:USD:", b"tick:\xff:"):
        with pytest.raises(ValueError):
            parse_topic(raw)


def test_a_chunk_keeps_its_types_drops_unfit_rows_and_unions_indicator_values():
    table, dropped = table_of(KINDS["tick"], _tick_chunk(3))
    assert dropped == 0 and table.num_rows == 3
    assert str(table.schema.field("bid").type) == "double" and str(table.schema.field("seq").type) == "int64"
    chunk = _tick_chunk(2)
    chunk.rows.append(_tick_chunk(1, 3, bid="1.1").rows[0])
    chunk.rows.append(_tick_chunk(1, 4, bid=2**70).rows[0])
    table, dropped = table_of(KINDS["tick"], chunk)
    assert dropped == 2 and table.column("seq").to_pylist() == [1, 2]
    ind = Chunk()
    for time_, values in ((60, {"sma": 1.0}), (120, {"sma": None, "rsi": 50})):
        ind.rows.append(("M1", time_, True, time_, 1))
        ind.extras.append(values)
    table, _ = table_of(KINDS["ind"], ind)
    assert table.column("sma").to_pylist() == [1.0, None] and table.column("rsi").to_pylist() == [None, 50.0]


def test_resume_reads_past_the_state_to_files_written_after_it(tmp_path):
    part = Partition("tick", "EURUSD", "2024-01-02").path(tmp_path)
    write_atomic(part / file_name(100, 0), table_of(KINDS["tick"], _tick_chunk(3))[0])
    write_state(tmp_path, 100, file_name(100, 0), {"tick:EURUSD:": (5, 3), "candle:EURUSD:M1:": (5, 40)})
    write_atomic(part / file_name(100, 1), table_of(KINDS["tick"], _tick_chunk(2, 4))[0])  # then a crash
    state = resume(tmp_path, now_ms=50)
    assert state.run == 101 and state.positions == {"tick:EURUSD:": (5, 5), "candle:EURUSD:M1:": (5, 40)}
    assert resume(tmp_path, now_ms=10**12).run == 10**12
    (part / f".{file_name(100, 2)}.tmp").write_bytes(b"half")
    assert [p.name for p in temporary_files(tmp_path)] == [f".{file_name(100, 2)}.tmp"]
    assert len(list(data_files(tmp_path))) == 2
    (tmp_path / STATE_FILE).write_text("{")  # cut short: the files alone tell where they end
    assert resume(tmp_path, now_ms=0).positions == {"tick:EURUSD:": (5, 5)}
    (part / file_name(100, 3)).write_bytes(b"PAR1")  # no crash of the recorder's leaves this
    with pytest.raises(ValueError, match="not a readable recording file"):
        resume(tmp_path, now_ms=0)


@pytest.mark.parametrize("check", [numeric_rules, endpoint_rules], ids=["numeric", "endpoints"])
def test_recorder_settings_follow_every_component_rule(check, tmp_path):
    check(RecorderConfig, tmp_path) if check is endpoint_rules else check(RecorderConfig)


def test_price_digits():
    assert [price_digits(p) for p in (1.0851, 149.5, 2.0, 1.08123, 0.1 + 0.2)] == [4, 1, 0, 5, 10]


def test_tick_frames_are_read_as_columns_and_others_keep_their_place(tmp_path):
    """The engine's tick frames are read together; a tick of another encoding (a negative
    volume), a duplicate, a gap and a forged frame of the right length each go their way."""
    recorder = Recorder(RecorderConfig(record_dir=str(tmp_path)))
    encoder, topic = TickEncoder("EURUSD"), tick_topic("EURUSD")
    t0 = 1704153600000

    def tick(seq: int, volume: int = 1) -> bytes:
        return encoder.encode(1.1 + seq / 1e5, 1.2, 0.0, volume, t0 + seq, 6, 1.5, seq, 7)

    forged = bytearray(tick(9))
    forged[forged.index(b"bid") + 1] = ord("x")  # a key the engine never writes, same length
    recorder.handle([b"tick:\xff:", tick(1)], 0.0)  # a topic that is not UTF-8
    recorder.handle([topic], 0.0)  # one frame
    frames = [tick(1), tick(2), tick(3), encode({**Tick("EURUSD", t0 + 4, 1.1, 1.2, 0.0, -1).to_payload(),
                                                 "seq": 4, "epoch": 7}),
              tick(5), tick(7), tick(3), bytes(forged), tick(8)]
    for frame in frames:
        recorder.handle([topic, frame], 0.0)
    recorder.flush()
    rows = recorded(tmp_path, "tick")
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5, 7, 8]
    assert [r["volume"] for r in rows] == [1, 1, 1, -1, 1, 1, 1] and rows[0]["volume_real"] == 1.5
    assert (recorder.gaps, recorder.missed, recorder.duplicates, recorder.malformed) == (1, 1, 1, 3)
    values, written = encoder.values_of([tick(1), bytes(forged)])
    assert written.tolist() == [True, False] and values["seq"][0] == 1 and values["bid"][0] == 1.1 + 1 / 1e5
