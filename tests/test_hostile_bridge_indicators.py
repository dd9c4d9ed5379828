"""A client's own indicator set is computed in the bridge's event loop: clients asking for the
costliest sets ``get_indicators`` takes (16 instances, periods as long as the history, 1000 bars
each) at the rate limit, beside a normal client reading ticks (``tests.test_hostile_bridge_clients``'
harness: its engine at ``--rate 1000``, no stall = a tick gap under ``BATCH_INTERVAL_MS + 100`` ms).
Such a set counts as a request per default set's worth of keys (``bridge.api.charge``), so one
client takes a bounded share of the loop (several such clients at once still add up)."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import socketio

from bridge.api import DEFAULT_KEYS
from bridge.config import BridgeConfig
from indicators.spec import parse_indicators
from tests.hostile import report
from tests.test_hostile_bridge_clients import (SYMBOL, attack_beside_a_normal_client, bridge,  # noqa: F401
                                               fast_engine, held)

# The largest a request may ask for: 16 instances, each period the MAX_CANDLES (1000) bars held.
HEAVY_SPEC = ",".join([f"s{i}=stoch:1000:1000:1000" for i in range(6)] + [f"b{i}=bbands:1000:2:2" for i in range(5)]
                      + [f"a{i}=adx:1000" for i in range(5)])
ATTACKERS, SECONDS = 1, 3.0
LIMITS = BridgeConfig.load(environ={}, dotenv=None)
COST = -(-sum(len(i.keys) for i in parse_indicators(HEAVY_SPEC)) // DEFAULT_KEYS)  # requests one counts as


async def ask_at_the_rate_limit(url: str) -> dict[str, int]:
    """Each attacker sends get_indicators(HEAVY_SPEC, count 1000) back to back, again a token's
    time after a refusal, and reads every reply."""
    seen = {"replies": 0, "rate_limited": 0, "other": 0}
    clients = [socketio.AsyncClient(reconnection=False) for _ in range(ATTACKERS)]
    for client in clients:
        await client.connect(url, transports=["websocket"])

    async def one(client: socketio.AsyncClient) -> None:
        started = time.monotonic()
        while time.monotonic() - started < SECONDS:
            reply = await client.call("get_indicators", {"symbol": SYMBOL, "timeframe": "M1", "count": 1000,
                                                         "indicators": HEAVY_SPEC}, timeout=10)
            if reply.get("code") == "rate_limited":
                seen["rate_limited"] += 1
                await asyncio.sleep(1 / LIMITS.rate_limit_per_s)
            elif "values" in reply and len(reply["values"]) > 100 and len(reply["indicators"]) == 16:
                seen["replies"] += 1
            else:
                seen["other"] += 1
    try:
        await asyncio.gather(*(one(c) for c in clients))
    finally:
        for client in clients:
            await client.disconnect()
    return seen


def test_a_client_asking_for_the_costliest_indicator_sets_does_not_stall_the_others(bridge):  # noqa: F811
    def attack() -> dict[str, Any]:
        started = time.monotonic()
        seen = asyncio.run(ask_at_the_rate_limit(bridge.url))
        seen["per_s"] = round(seen["replies"] / (time.monotonic() - started), 1)
        return seen

    outcome = attack_beside_a_normal_client(bridge, attack)
    report(f"{ATTACKERS} client(s) asking get_indicators for 16 instances x 1000 bars at the rate limit", outcome.rss,
           outcome.normal, **outcome.seen)
    # each attacker gets its burst's worth at least, and no more than its bucket holds in the time
    burst, rate = LIMITS.rate_limit_burst, LIMITS.rate_limit_per_s
    assert COST == 6 and outcome.seen["other"] == 0 and outcome.seen["rate_limited"] > 0, outcome.seen
    assert ATTACKERS * (burst // COST) <= outcome.seen["replies"] <= ATTACKERS * (burst + rate * (SECONDS + 1)) / COST
    assert outcome.normal.rpc_failures == 0
    held(outcome)
