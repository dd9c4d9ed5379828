"""Lossless replay: every closed bar and indicator value reaches every bot, slow ones included;
the ``replay`` op (start, pause, resume, status, seek); a paused start; cutting off a dead bot."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import zmq

from engine.client import RpcClient
from engine.config import ConfigError, EngineConfig
from engine.bus import BusPublisher, publisher_socket, still_stalled
from engine.protocol import ErrorCode, RpcError, tick_topic
from engine.service import EngineService
from engine.sources.replay import PlaybackError, ReplaySource
from engine.launcher import ready_to_play
from tests.procs import EngineProcess, ServiceProcess, collect, engine_config, engine_thread, subscriber
from tests.replay_bots import Bar, BotProcess, write_bar_export

BARS = 5000
SYMBOL = "EURUSD"


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> tuple[Path, list[Bar]]:
    return write_bar_export(tmp_path_factory.mktemp("replay"), BARS)


def replay_args(path: Path, *extra: str) -> list[str]:
    return ["--source", "replay", "--replay-file", str(path), "--replay-speed", "0",
            "--replay-start", "paused", "--symbols", SYMBOL, *extra]


def rpc_error(client: RpcClient, **request) -> RpcError:
    with pytest.raises(RpcError) as caught:
        client.call("replay", **request)
    return caught.value


def wait_subscribed(rpc: RpcClient, at_least: int, timeout: float = 10.0) -> None:
    """Until the engine has taken ``at_least`` bytes of distinct subscription prefixes."""
    deadline = time.monotonic() + timeout
    while rpc.health()["bus_subscription_bytes"] < at_least:
        assert time.monotonic() < deadline, "the subscriptions never reached the engine"
        time.sleep(0.05)


def by_topic(messages: list) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for topic, payload in messages:
        out.setdefault(topic, []).append(payload)
    return out


def check_stream(received: dict[str, list[dict]], bars: list[Bar]) -> dict[str, int]:
    """Every closed M1 bar of the file (the last one never closes: no tick after it) with the
    file's prices, and its closed indicator value, in order, with consecutive ``seq`` on every
    topic; returns the counts per topic."""
    for topic, payloads in received.items():
        seqs = [p["seq"] for p in payloads]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"a gap in {topic}"
    candles = [c for c in received[f"candle:{SYMBOL}:M1:"] if c["closed"]]
    assert [(c["time"], c["open"], c["high"], c["low"], c["close"]) for c in candles] == \
        [(b.time, b.open, b.high, b.low, b.close) for b in bars[:-1]]
    values = [v for v in received[f"ind:{SYMBOL}:M1:"] if v["closed"]]
    assert [v["time"] for v in values] == [b.time for b in bars[:-1]]
    hours = sorted({b.time // 3600 * 3600 for b in bars})[:-1]
    assert [c["time"] for c in received[f"candle:{SYMBOL}:H1:"] if c["closed"]] == hours
    assert [v["time"] for v in received[f"ind:{SYMBOL}:H1:"] if v["closed"]] == hours
    return {topic: len(payloads) for topic, payloads in received.items()}


def test_full_speed_replay_delivers_every_closed_bar_and_value_to_both_bots(
        export, start_engine, start_worker, started, tmp_path):
    path, bars = export
    # A small bus queue, so the slow bot holds the engine back many times over.
    engine = start_engine(*replay_args(path, "--timeframes", "M1,H1", "--hwm", "1000"))
    start_worker(engine)
    prefixes = (f"candle:{SYMBOL}:", f"ind:{SYMBOL}:")
    bots = [BotProcess(endpoint=engine.bus, out=tmp_path / f"bot{i}.json", prefixes=prefixes, args=args)
            for i, args in enumerate((["--hwm", "1000"], ["--hwm", "100", "--pause-every", "50", "--pause-ms", "3"]))]
    for bot in bots:
        started.append(bot)
        bot.start()
    with RpcClient(engine.rpc) as rpc:
        wait_subscribed(rpc, sum(len(p) for p in prefixes))
        assert rpc.call("replay", action="start")["state"] == "playing"
        fast, slow = (bot.result() for bot in bots)
        health = rpc.health()
        status = rpc.call("replay", action="status")
    counts = check_stream(by_topic(fast["messages"]), bars)
    assert check_stream(by_topic(slow["messages"]), bars) == counts
    assert slow["messages"] == fast["messages"]  # the same payloads, in the same order
    assert status["state"] == "finished" and status["position"] == status["total"] == BARS
    assert health["bus_waits"] > 0  # the slow bot did hold the engine back
    assert health["bus_stalled_closed"] == 0
    print(f"\nlossless replay of {BARS} bars: {counts}; engine waited {health['bus_waits']} times; "
          f"fast bot {fast['last'] - fast['first']:.2f} s, slow bot {slow['last'] - slow['first']:.2f} s")


def test_a_bot_that_never_reads_is_cut_off_and_the_other_gets_everything(
        export, start_engine, started, tmp_path, zmq_ctx):
    path, bars = export
    engine = start_engine(*replay_args(path, "--timeframes", "M1,H1", "--hwm", "100",
                                       "--replay-stall-s", "0.5"))
    dead = zmq_ctx.socket(zmq.SUB)  # subscribes and never reads
    dead.linger, dead.rcvhwm = 0, 10
    dead.setsockopt(zmq.RCVBUF, 4096)  # a small window, so the engine's side fills soon
    dead.subscribe(b"candle:")
    dead.connect(engine.bus)
    bot = BotProcess(endpoint=engine.bus, out=tmp_path / "bot.json", prefixes=("candle:",))
    started.append(bot)
    bot.start()
    with RpcClient(engine.rpc) as rpc:
        wait_subscribed(rpc, len("candle:"))
        time.sleep(0.2)
        began = time.monotonic()
        rpc.call("replay", action="start")
        received = by_topic(bot.result()["messages"])
        health = rpc.health()
    assert health["bus_stalled_closed"] >= 1
    assert health["bus_waits"] > 0
    closed = [c["time"] for c in received[f"candle:{SYMBOL}:M1:"] if c["closed"]]
    assert closed == [b.time for b in bars[:-1]]
    seqs = [c["seq"] for c in received[f"candle:{SYMBOL}:M1:"]]
    assert seqs == list(range(1, len(seqs) + 1))
    assert "cutting it off (REPLAY_STALL_S)" in engine.output()
    print(f"\nstall cut-off: {health['bus_stalled_closed']} cut, engine waited {health['bus_waits']} times, "
          f"the other bot got all {len(closed)} closed bars; replay {time.monotonic() - began:.1f} s")


# -- in-process: the replay op ---------------------------------------------------------------


@pytest.fixture
def paused_engine(export):
    path, bars = export
    config = engine_config(source="replay", replay_file=str(path), replay_speed="0",
                           replay_start="paused", symbols=SYMBOL, timeframes="M1", hwm="100")
    service = EngineService(config, ReplaySource(config), zmq.Context.instance())
    with engine_thread(service):
        with RpcClient(config.rpc_endpoint) as rpc:
            yield config, rpc, bars


def test_the_replay_op_acts_and_refuses_clearly(paused_engine):
    config, rpc, _ = paused_engine
    status = rpc.call("replay", action="status")
    assert status == {"state": "ready", "position": 0, "total": BARS, "speed": 0.0,
                      "source_file": config.replay_file, "time_msc": status["time_msc"]}
    for request, says in (
        ({}, "'action' must be one of start, pause, resume, status, seek"),
        ({"action": "rewind"}, "'action' must be one of"),
        ({"action": 1}, "'action' must be one of"),
        ({"action": "seek"}, "'time' must be a non-negative number"),
        ({"action": "seek", "time": "soon"}, "'time' must be a non-negative number"),
        ({"action": "seek", "time": -5}, "'time' must be a non-negative number"),
        ({"action": "seek", "time": True}, "'time' must be a non-negative number"),
        ({"action": "seek", "time": 1e308}, "'time' must be a non-negative number up to"),
        ({"action": "seek", "time": float("nan")}, "'time' must be a non-negative number"),
        ({"action": "pause"}, "only a playing replay can pause; it is ready"),
        ({"action": "resume"}, "only a paused replay can resume; it is ready (use start)"),
    ):
        error = rpc_error(rpc, **request)
        assert error.code == ErrorCode.BAD_REQUEST and says in error.message, (request, error)
    assert rpc.call("replay", action="start")["state"] in ("playing", "finished")
    assert "already started" in rpc_error(rpc, action="start").message
    deadline = time.monotonic() + 10
    while rpc.call("replay", action="status")["state"] != "finished":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert rpc.call("replay", action="status")["position"] == BARS
    assert rpc.health()["replay_state"] == "finished"


def test_the_replay_op_on_a_live_source_says_there_is_no_replay(engine):
    with RpcClient(engine.rpc) as rpc:
        error = rpc_error(rpc, action="status")
    assert error.code == ErrorCode.UNAVAILABLE and "not a replay" in error.message


def test_a_paused_replay_publishes_nothing_until_start_then_from_the_first_bar(paused_engine, zmq_ctx):
    config, rpc, bars = paused_engine
    sub = subscriber(zmq_ctx, config.bus_endpoint, b"tick:", b"candle:")
    wait_subscribed(rpc, len("tick:candle:"))
    assert collect(sub, seconds=0.5) == []
    assert rpc.call("replay", action="status")["position"] == 0
    rpc.call("replay", action="start")
    got = collect(sub, until=lambda m: any(p.get("closed") for _, p in m), seconds=5)
    ticks = [p for t, p in got if t.startswith(b"tick:")]
    assert ticks[0]["seq"] == 1 and ticks[0]["time_msc"] == bars[0].time * 1000
    assert ticks[0]["bid"] == bars[0].open
    first_closed = next(p for _, p in got if p.get("closed"))
    assert (first_closed["time"], first_closed["seq"]) == (bars[0].time, first_closed["seq"])


def test_seek_moves_the_replay_and_bars_rebuild_from_there(paused_engine, zmq_ctx):
    config, rpc, bars = paused_engine
    sub = subscriber(zmq_ctx, config.bus_endpoint, b"candle:")
    wait_subscribed(rpc, len("candle:"))
    status = rpc.call("replay", action="seek", time=bars[3000].time)
    assert (status["state"], status["position"], status["time_msc"]) == ("ready", 3000, bars[3000].time * 1000)
    status = rpc.call("replay", action="seek", time=bars[100].time + 30)  # back, between bars
    assert (status["state"], status["position"]) == ("ready", 101)
    rpc.call("replay", action="start")
    got = [p for _, p in collect(sub, until=lambda m: sum(p["closed"] for _, p in m) >= 3, seconds=5)]
    assert [p["time"] for p in got if p["closed"]][:3] == [b.time for b in bars[101:104]]
    assert [p["seq"] for p in got] == list(range(1, len(got) + 1))
    rpc.call("replay", action="pause")
    assert rpc.call("replay", action="status")["state"] == "paused"
    before = rpc.call("replay", action="status")["position"]
    time.sleep(0.3)
    assert rpc.call("replay", action="status")["position"] == before  # paused: nothing plays
    status = rpc.call("replay", action="seek", time=bars[-1].time + 3600)  # past the end
    assert (status["state"], status["position"]) == ("finished", BARS)
    status = rpc.call("replay", action="seek", time=bars[4990].time)  # a finished replay pauses
    assert (status["state"], status["position"]) == ("paused", 4990)
    assert rpc.call("replay", action="resume")["state"] in ("playing", "finished")


def test_ticks_nobody_subscribed_to_keep_their_seq_and_snapshot_and_flow_once_subscribed(
        paused_engine, zmq_ctx):
    """At full speed, ticks no subscription matches are not sent (only the last is encoded,
    for ``snapshot``), yet each takes its ``seq``: the snapshot is the journal's last tick, and
    a tick subscriber that comes later gets the next ``seq`` and every tick from there."""
    config, rpc, bars = paused_engine
    candles = subscriber(zmq_ctx, config.bus_endpoint, b"candle:")
    wait_subscribed(rpc, len("candle:"))
    rpc.call("replay", action="start")
    deadline = time.monotonic() + 20
    while rpc.call("replay", action="status")["state"] != "finished":
        assert time.monotonic() < deadline, "the replay never finished"
        time.sleep(0.02)
    health = rpc.health()
    (topic, last), = rpc.snapshot(tick_topic(SYMBOL).decode())
    assert topic == tick_topic(SYMBOL).decode() and last["seq"] == health["ticks_total"] > 4 * BARS * 3 // 4
    journaled = rpc.ticks(SYMBOL, after_seq=last["seq"] - 3, epoch=health["epoch"])
    assert [t["seq"] for t in journaled] == [last["seq"] - 2, last["seq"] - 1, last["seq"]]
    assert {k: journaled[-1][k] for k in ("time_msc", "bid", "ask")} == \
        {k: last[k] for k in ("time_msc", "bid", "ask")}
    assert last["bid"] == bars[-1].close
    closed = [p for _, p in collect(candles, until=lambda m: m and m[-1][1]["closed"]
                                    and m[-1][1]["time"] == bars[-2].time) if p["closed"]]
    assert [p["time"] for p in closed] == [b.time for b in bars[:-1]]

    ticks = subscriber(zmq_ctx, config.bus_endpoint, b"tick:")
    wait_subscribed(rpc, len("candle:tick:"))
    rpc.call("replay", action="seek", time=bars[100].time)
    rpc.call("replay", action="resume")
    got = [p for _, p in collect(ticks, until=lambda m: m and m[-1][1]["time_msc"] >= bars[110].time * 1000)]
    assert [p["seq"] for p in got] == list(range(last["seq"] + 1, last["seq"] + 1 + len(got)))
    assert (got[0]["time_msc"], got[0]["bid"]) == (bars[100].time * 1000, bars[100].open)


def test_a_worker_value_that_waits_for_a_slow_bot_is_relayed_once_it_reads(paused_engine, zmq_ctx):
    """The engine holds a worker's message the bus cannot take yet and relays it, and the rest
    in order, once the bot reads: paused, so only the worker's messages are on the bus."""
    config, rpc, _ = paused_engine
    bot = zmq_ctx.socket(zmq.SUB)
    bot.linger, bot.rcvhwm = 0, 10
    bot.setsockopt(zmq.RCVBUF, 4096)
    bot.subscribe(b"ind:")
    bot.connect(config.bus_endpoint)
    wait_subscribed(rpc, len("ind:"))
    sent, padding = 2000, "x" * 1000  # 2 MB: more than the small window and buffers hold
    figures, received = {}, threading.Event()

    def publish() -> None:  # the worker, on its own thread (its socket is this thread's)
        worker = BusPublisher(publisher_socket(zmq_ctx, config.bus_pub_endpoint, 1000, nodrop=True),
                              on_full=lambda: time.sleep(0.0005) is None)
        time.sleep(0.3)  # its connection is up
        for i in range(sent):
            worker.publish(f"ind:{SYMBOL}:M1:".encode(), {"time": i, "pad": padding})
        figures.update(dropped=worker.dropped)
        received.wait(40)  # closing drops what its queue still holds (linger 0)
        worker.close()

    thread = threading.Thread(target=publish)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while rpc.health()["bus_waits"] == 0:  # until the engine holds a message for the bot
            assert time.monotonic() < deadline, "the engine never had to wait for the bot"
            time.sleep(0.05)
        got = collect(bot, until=lambda m: len(m) >= sent, seconds=30)
    finally:
        received.set()
        thread.join(30)
    assert [p["time"] for _, p in got] == list(range(sent))
    assert [p["seq"] for _, p in got] == list(range(1, sent + 1))
    assert figures["dropped"] == 0


def test_after_a_seek_back_the_worker_starts_its_values_afresh(export, start_engine, start_worker, zmq_ctx):
    path, bars = export
    engine = start_engine(*replay_args(path, "--timeframes", "M1"))
    worker = start_worker(engine)
    sub = subscriber(zmq_ctx, engine.bus, f"ind:{SYMBOL}:M1:".encode())
    with RpcClient(engine.rpc) as rpc:
        wait_subscribed(rpc, len(f"ind:{SYMBOL}:M1:"))
        rpc.call("replay", action="seek", time=bars[4000].time)
        rpc.call("replay", action="start")
        first = collect(sub, until=lambda m: any(p["time"] == bars[4010].time for _, p in m), seconds=10)
        time.sleep(2.1)  # a series warms at most once every 2 s
        assert rpc.call("replay", action="status")["state"] == "finished"
        assert rpc.call("replay", action="seek", time=bars[100].time)["state"] == "paused"
        collect(sub, seconds=0.3)  # what was on its way
        rpc.call("replay", action="resume")
        again = [p for _, p in collect(sub, until=lambda m: any(p["time"] == bars[130].time for _, p in m),
                                       seconds=10) if p["closed"]]
    assert first[0][1]["time"] >= bars[4000].time  # values of the first stretch
    assert [p["time"] for p in again][:30] == [b.time for b in bars[100:130]]
    assert again[0]["sma"] is None and again[19]["sma"] is not None  # warming up from the seek point
    assert "bars went back in time; warming up again" in worker.output()


# -- the launcher starts its replay once the children are healthy ----------------------------


def test_mt5_service_plays_a_replay_once_its_worker_is_healthy(export, started, zmq_ctx):
    path, bars = export
    service = ServiceProcess(["--no-bridge", "--workers", "1", "--source", "replay", "--replay-file", str(path),
                              "--replay-speed", "0", "--symbols", SYMBOL, "--timeframes", "M1"])
    started.append(service)
    service.start()
    with RpcClient(service.engine.rpc) as rpc:
        deadline = time.monotonic() + 30
        # The worker's value of the last bar: it took the replay from its first bar to its end.
        while [p["time"] for _, p in rpc.snapshot(f"ind:{SYMBOL}:M1:")] != [bars[-1].time]:
            assert time.monotonic() < deadline, service.output()
            time.sleep(0.1)
        assert rpc.call("replay", action="status")["state"] == "finished"
        worker = dict(rpc.snapshot("health:indicators:0:"))["health:indicators:0:"]
    assert "replay started: indicators:0 report healthy" in service.output()
    assert worker["rewarms"] == 0 and worker["rewarms_limited"] == 0  # never a gap in its candles


# -- pure pieces and settings ----------------------------------------------------------------


def test_a_paused_replay_at_speed_keeps_its_clock_still_and_resumes_where_it_stopped(export):
    path, bars = export
    config = EngineConfig(source="replay", replay_file=str(path), replay_speed=60.0, replay_start="paused")
    source = ReplaySource(config)
    source.start()
    try:
        assert source.poll(0) == [] and source.state == "ready"
        source.start_playing()
        assert [t.time_msc for t in source.poll(1000)] == [bars[0].time * 1000]  # 1 s wall = 60 s
        assert source.poll(2000)[-1].time_msc == bars[1].time * 1000  # 1 s more: bar 1's open
        source.pause(2000)
        assert source.poll(60_000) == [] and source.market_time(60_000) == bars[1].time * 1000
        source.resume()
        assert source.poll(100_000) == []  # the clock goes on from where it paused: nothing due yet
        times = [t.time_msc for t in source.poll(101_000)]
        assert bars[1].time * 1000 < times[0] and times[-1] == bars[2].time * 1000
        with pytest.raises(PlaybackError, match="already started"):
            source.start_playing()
    finally:
        source.stop()



def test_a_connection_is_stalled_only_while_bytes_wait_and_none_are_acknowledged():
    assert still_stalled(None, 100, 50, 1.0) == (100, 1.0)
    assert still_stalled((100, 1.0), 100, 50, 5.0) == (100, 1.0)  # stuck since 1.0
    assert still_stalled((100, 1.0), 180, 50, 5.0) == (180, 5.0)  # it read
    assert still_stalled((100, 1.0), 100, 0, 5.0) == (100, 5.0)  # nothing waits for it


def test_ready_to_play_names_what_is_not_healthy_yet():
    expected = ["indicators:0", "indicators:1"]
    assert ready_to_play({"indicators:0": "ok", "indicators:1": "ok"}, expected, "ok") == []
    assert ready_to_play({"indicators:0": "ok"}, expected, None) == ["indicators:1"]
    assert ready_to_play({"indicators:0": "degraded", "indicators:1": "ok"}, expected, "degraded") == \
        ["indicators:0", "bridge"]


@pytest.mark.parametrize("overrides, says", [
    ({"replay_start": "later"}, "REPLAY_START: must be one of now, paused"),
    ({"replay_stall_s": 0}, "REPLAY_STALL_S: must be > 0"),
    ({"replay_stall_s": "soon"}, "REPLAY_STALL_S: cannot use 'soon' as a number"),
])
def test_replay_settings_are_checked_at_start_up(overrides, says):
    with pytest.raises(ConfigError, match=says):
        EngineConfig.load(overrides, environ={}, dotenv=None)


def test_a_bad_replay_start_stops_the_engine_with_exit_2(export):
    engine = EngineProcess(["--source", "replay", "--replay-file", str(export[0]), "--replay-start", "later"])
    engine.spawn()
    assert engine.proc.wait(30) == 2
    assert "REPLAY_START: must be one of now, paused, got 'later'" in engine.output()
