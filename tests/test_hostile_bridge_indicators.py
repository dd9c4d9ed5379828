"""A client's own indicator set is computed in the bridge's event loop: clients asking for the
costliest sets ``get_indicators`` takes (16 instances, periods as long as the history, or 48 keys
of numbers, 1000 bars each) at the rate limit, beside a normal client reading ticks
(``tests.test_hostile_bridge_clients``' harness: its engine at ``--rate 1000``, no stall = a tick
gap under ``BATCH_INTERVAL_MS + 100`` ms). Such a set counts against its client's rate limit as a
request per default set's worth of keys, so one client takes a bounded share of the loop, and all
clients' sets together draw on one bridge-wide budget (``bridge.api.charge`` takes both), so
several such clients at once do too; and a reply is JSON-encoded in slices that let the loop
through (``bridge.encoded``)."""
from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import socketio

import pytest

from bridge.api import DEFAULT_KEYS, indicator_work, largest_indicator_work
from bridge.config import BridgeConfig
from indicators.spec import parse_indicators
from tests.hostile import report
from tests.test_hostile_bridge_clients import (SYMBOL, attack_beside_a_normal_client, bridge,  # noqa: F401
                                               fast_engine, held, stats)

# The largest a request may ask for: 16 instances, each period the MAX_CANDLES (1000) bars held.
HEAVY_SPEC = ",".join([f"s{i}=stoch:1000:1000:1000" for i in range(6)] + [f"b{i}=bbands:1000:2:2" for i in range(5)]
                      + [f"a{i}=adx:1000" for i in range(5)])
# The costliest reply to encode: 48 keys, every value a number once 20 bars are in.
NUMERIC_SPEC = ",".join(f"b{i}=bbands:20:2:2" for i in range(16))
SECONDS = 3.0
LIMITS = BridgeConfig.load(environ={}, dotenv=None)


def keys_of(spec: str) -> int:
    return sum(len(i.keys) for i in parse_indicators(spec))


def work(spec: str) -> int:
    """The values one request for ``spec`` at count 1000 takes from the bridge-wide budget."""
    return indicator_work(keys_of(spec), 1000, LIMITS.max_candles)


async def ask_at_the_rate_limit(url: str, attackers: int, spec: str) -> dict[str, Any]:
    """Each attacker sends get_indicators(spec, count 1000) back to back, again a token's time
    after a refusal, and reads every reply; then each one's ``ping`` must still answer."""
    seen: dict[str, Any] = {"replies": 0, "rate_limited": 0, "budget_spent": 0, "other": 0}
    clients = [socketio.AsyncClient(reconnection=False) for _ in range(attackers)]
    for client in clients:
        await client.connect(url, transports=["websocket"])

    async def one(client: socketio.AsyncClient) -> None:
        started = time.monotonic()
        while time.monotonic() - started < SECONDS:
            reply = await client.call("get_indicators", {"symbol": SYMBOL, "timeframe": "M1", "count": 1000,
                                                         "indicators": spec}, timeout=10)
            if reply.get("code") == "rate_limited":
                seen["rate_limited"] += 1
                seen["budget_spent"] += "bridge-wide indicator budget is spent" in reply["message"]
                await asyncio.sleep(1 / LIMITS.rate_limit_per_s)
            elif "values" in reply and len(reply["values"]) > 100 and len(reply["indicators"]) == 16:
                seen["replies"] += 1
            else:
                seen["other"] += 1
    try:
        await asyncio.gather(*(one(c) for c in clients))
        # connected, and answered: the bridge counts each of them among its clients
        seen["still_connected"] = [c.connected and (await c.call("ping", timeout=5))["clients"] >= attackers
                                   for c in clients]
    finally:
        for client in clients:
            await client.disconnect()
    return seen


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) process ``pid`` has used (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def attack_with(bridge, attackers: int, spec: str):  # noqa: F811
    """Run ``attackers`` clients asking for ``spec`` beside a normal one; the outcome, with the
    attack's duration, how many requests the bridge-wide budget refused meanwhile and the share
    of a core the bridge used (its relaying of the 1000 ticks/s included)."""
    def attack() -> dict[str, Any]:
        refused_before = stats(bridge)["stats"]["indicator_budget_refused"]
        started, cpu_before = time.monotonic(), cpu_seconds(bridge.proc.pid)
        seen = asyncio.run(ask_at_the_rate_limit(bridge.url, attackers, spec))
        seen["seconds"] = round(time.monotonic() - started, 2)
        seen["per_s"] = round(seen["replies"] / seen["seconds"], 1)
        seen["bridge_cpu_pct"] = round(100 * (cpu_seconds(bridge.proc.pid) - cpu_before) / seen["seconds"])
        seen["budget_refused"] = stats(bridge)["stats"]["indicator_budget_refused"] - refused_before
        return seen

    outcome = attack_beside_a_normal_client(bridge, attack)
    report(f"{attackers} client(s) asking get_indicators for 16 instances ({keys_of(spec)} keys) x 1000 bars at the "
           "rate limit", outcome.rss, outcome.normal, **outcome.seen)
    seen = outcome.seen
    assert seen["other"] == 0 and seen["rate_limited"] > 0, seen
    assert seen["still_connected"] == [True] * attackers, seen
    assert outcome.normal.rpc_failures == 0
    return outcome


def budget_bounds(spec: str, seconds: float) -> tuple[float, float]:
    """The replies the bridge-wide budget allows in an attack of ``seconds``: at least its burst
    and half of what it refills in ``SECONDS``, at most its burst and a second more of refill."""
    budget, burst = LIMITS.indicator_budget_values_per_s, largest_indicator_work(LIMITS.max_candles)
    return (burst + budget * SECONDS / 2) // work(spec), (burst + budget * (seconds + 1)) / work(spec)


def test_a_client_asking_for_the_costliest_indicator_sets_does_not_stall_the_others(bridge):  # noqa: F811
    outcome = attack_with(bridge, 1, HEAVY_SPEC)
    seen = outcome.seen
    # its bucket's burst at least (unless the budget holds less), and no more than both hold in the time
    burst, rate = LIMITS.rate_limit_burst, LIMITS.rate_limit_per_s
    cost = -(-keys_of(HEAVY_SPEC) // DEFAULT_KEYS)  # requests one counts as
    least, most = budget_bounds(HEAVY_SPEC, seen["seconds"])
    assert cost == 6
    assert min(burst // cost, least) <= seen["replies"] <= min((burst + rate * (SECONDS + 1)) / cost, most), seen
    held(outcome)


@pytest.mark.parametrize("spec", [HEAVY_SPEC, NUMERIC_SPEC], ids=["long_periods", "numbers"])
def test_several_clients_asking_for_the_costliest_sets_together_do_not_stall_the_others(bridge, spec):  # noqa: F811
    """Three such clients ask for three times what one client's own limit lets through (120k to
    200k values/s each, the budget 200k for all): it answers what it holds and refuses the rest."""
    outcome = attack_with(bridge, 3, spec)
    seen = outcome.seen
    least, most = budget_bounds(spec, seen["seconds"])
    assert seen["budget_spent"] > 0 and seen["budget_refused"] >= seen["budget_spent"], seen
    assert least <= seen["replies"] <= most, seen
    held(outcome)
