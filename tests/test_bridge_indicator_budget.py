"""The bridge-wide budget for clients' own indicator sets (``bridge.api.charge``): its pure
cost model and bucket, its setting, and a real bridge refusing past it while everything else
still answers."""
from __future__ import annotations

import math
import re

import pytest

from bridge.api import (MAX_REQUEST_INDICATORS, REQUEST_VALUES, ROW_FIELDS, indicator_work,
                        largest_indicator_work)
from bridge.config import BridgeConfig
from bridge.ratelimit import TokenBucket
from engine.config import ConfigError
from indicators.spec import parse_indicators
from tests.bridge_procs import BridgeProcess, run
from tests.procs import running
from tests.test_hostile_bridge_indicators import HEAVY_SPEC
from tests.test_metrics import scrape, value

HEAVY_KEYS = sum(len(instance.keys) for instance in parse_indicators(HEAVY_SPEC))
TIGHT_RATE = 1000  # values/s: a heavy set refills in about half a minute, longer than this test


def test_work_counts_the_values_sent_the_values_computed_and_the_request():
    assert ROW_FIELDS == ("symbol", "timeframe", "time", "closed") and REQUEST_VALUES == 512
    assert HEAVY_KEYS == 32
    assert indicator_work(HEAVY_KEYS, 1000, 1000) == 1000 * 36 + 32000 // 32 + 512 == 37512
    assert indicator_work(HEAVY_KEYS, 1, 1000) == 36 + 1000 + 512  # one row still pays for its history
    assert indicator_work(1, 100, 1000) == 500 + 31 + 512
    # the burst holds the largest request (16 three-key instances, every bar) but not two heavy sets
    assert largest_indicator_work(1000) == indicator_work(MAX_REQUEST_INDICATORS * 3, 1000, 1000) == 54012
    assert indicator_work(HEAVY_KEYS, 1000, 1000) <= largest_indicator_work(1000) < 2 * 37512


def test_a_bucket_says_when_it_will_hold_a_cost():
    bucket = TokenBucket(rate=1000.0, burst=5000, now=0.0)
    assert bucket.ready_in(0.0, 5000) == 0.0 and math.isinf(bucket.ready_in(0.0, 5001))
    assert bucket.take(0.0, 4000) and not bucket.take(1.0, 3000)  # 2000 held at t=1
    assert bucket.ready_in(1.0, 3000) == pytest.approx(1.0) and bucket.ready_in(1.5, 3000) == pytest.approx(0.5)
    assert bucket.take(2.0, 3000) and bucket.tokens == pytest.approx(0.0)


def test_the_budget_setting_is_checked_at_start_up():
    assert BridgeConfig.load(environ={}, dotenv=None).indicator_budget_values_per_s == 200_000
    config = BridgeConfig.load(environ={"INDICATOR_BUDGET_VALUES_PER_S": "2500"}, dotenv=None)
    assert config.indicator_budget_values_per_s == 2500
    for bad in ("0", "-5", "lots"):
        with pytest.raises(ConfigError, match="^INDICATOR_BUDGET_VALUES_PER_S: "):
            BridgeConfig.load(environ={"INDICATOR_BUDGET_VALUES_PER_S": bad}, dotenv=None)


def test_past_the_budget_an_own_set_is_rate_limited_and_everything_else_answers(engine):
    """A bridge with a budget of 1000 values/s: its burst (one largest request) answers one heavy
    set, the next is ``rate_limited`` saying when to retry; the configured set, ``ping`` and
    the connection are untouched, and ``indicator_budget_refused`` counts the refusal."""
    asked = {"symbol": "EURUSD", "timeframe": "M1", "count": 1000}

    async def scenario(c):
        first = await c.call("get_indicators", {**asked, "indicators": HEAVY_SPEC})
        second = await c.call("get_indicators", {**asked, "indicators": HEAVY_SPEC})
        configured = await c.call("get_indicators", asked)
        pong = await c.call("ping")
        return first, second, configured, pong, c.of("error"), c.sio.connected

    with running(BridgeProcess(env={"INDICATOR_BUDGET_VALUES_PER_S": str(TIGHT_RATE)}, engine=engine)) as bridge:
        first, second, configured, pong, errors, connected = run(scenario, bridge)
        stats = bridge.health()[1]["stats"]
        samples = scrape(bridge)
    assert len(first["values"]) == 1000 and len(first["indicators"]) == 16
    assert second["code"] == "rate_limited" and second["event"] == "get_indicators"
    found = re.search(r"indicator budget is spent .* 1000 values/s .*costs 37512 values: retry in ([0-9.]+) s",
                      second["message"])
    assert found, second["message"]
    # what the first left (54012 - 37512), refilled at 1000/s: some 20 s until the second fits
    assert 10.0 < float(found.group(1)) <= (37512 - (54012 - 37512)) / TIGHT_RATE
    assert errors == [second] and connected
    assert len(configured["values"]) == 1000 and [i["name"] for i in configured["indicators"]] == [
        "sma", "ema", "rsi", "macd"]
    assert pong["clients"] == 1
    assert stats["indicator_budget_refused"] == 1 and stats["rate_limited"] == 0
    assert value(samples, "mt5_bridge_indicator_budget_refused_total") == 1.0
    print(f"\n[budget] refused past {TIGHT_RATE} values/s: {second['message']!r}")
