"""The dashboard loads older bars when its chart is dragged to the left edge (real headless
Chromium, ``tests/browser/history.mjs``), as the engine's ``candles`` date range gives them."""
from __future__ import annotations

import pytest

from engine.client import RpcClient
from tests.test_dashboard import browser_tools, run_browser


@pytest.mark.timeout(900)  # a first run may install Chromium
def test_dragging_the_chart_to_its_left_edge_loads_older_bars(start_stack) -> None:
    node, chromium = browser_tools()
    engine, _worker, bridge = start_stack()
    result = run_browser(node, "history.mjs", bridge.url + "/", chromium)
    loaded, dragged = result["steps"]["loaded"], result["steps"]["dragged"]
    print(f"\ndashboard history: {loaded['bars']} bars loaded, {dragged['bars']} after "
          f"{dragged['olderRequests']} older requests ({dragged['olderBars']} older bars)")
    assert loaded["olderRequests"] == 0 and loaded["scrollBars"] == 0
    assert dragged["olderRequests"] >= 2 and dragged["scrollBars"] > 0
    # Each request brought the window of 200 M1 bars before the oldest held: contiguous, in order.
    assert dragged["oldestBar"] == loaded["oldestBar"] - 60 * dragged["olderBars"]
    assert dragged["bars"] >= loaded["bars"] + dragged["olderBars"]
    with RpcClient(engine.rpc) as rpc:
        older = rpc.candle_range("EURUSD", "M1", dragged["oldestBar"], loaded["oldestBar"] - 1)
    assert len(older) == dragged["olderBars"] and older[0]["time"] == dragged["oldestBar"]
    assert dragged["errors"] == []
