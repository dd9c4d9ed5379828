"""The live dashboard at ``/``: its routes, and the page itself in real headless Chromium.

The browser test starts an engine, an indicator worker and a bridge, then runs
``tests/browser/dashboard.mjs`` (playwright-core driving Debian's ``/usr/bin/chromium``; no browser
is downloaded), which loads the page, waits for live candles, switches symbol and timeframe with
the page's own controls, takes screenshots and prints what ``window.dashboardState`` saw.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bridge.webui import DASHBOARD_DIR, add_dashboard
from indicators.spec import parse_indicators
from tests.bridge_procs import BridgeProcess, npm_install
from tests.procs import ROOT

BROWSER_DIR = ROOT / "tests" / "browser"
INDICATORS = ("sma", "ema", "rsi", "macd")
OUTPUT_DIR = ROOT / "tests" / "output"  # git-ignored: the latest screenshot, for people to look at
DEBIAN_CHROMIUM = "/usr/bin/chromium"


def assert_overlays_cover_the_history(step: dict) -> None:
    """Nearly every visible bar has each indicator: from get_indicators, not only the live bars."""
    overlay = step["overlay"]
    assert overlay["bars"] > 20 and step["indicatorHistory"] >= overlay["bars"], (overlay, step["indicatorHistory"])
    assert all(overlay[k] >= 0.9 * overlay["bars"] for k in INDICATORS), overlay


def parse_policy(header: str) -> dict[str, list[str]]:
    """A Content-Security-Policy header as {directive: [sources]} (a repeated directive would fail)."""
    directives = [part.split() for part in header.split(";") if part.strip()]
    policy = {d[0]: d[1:] for d in directives}
    assert len(policy) == len(directives), header
    return policy


def assert_no_inline_script(html: str) -> None:
    """index.html: scripts only by src, no event-handler attributes, no inline style."""
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.DOTALL)
    assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts), scripts
    assert not re.search(r"\son[a-z]+\s*=", html, re.IGNORECASE), "an inline event handler"
    assert not re.search(r"\sstyle\s*=", html, re.IGNORECASE), "an inline style"


def find_chromium() -> str:
    """Debian's Chromium; installed with apt-get when absent and we are root, else the test skips."""
    found = shutil.which("chromium") or (DEBIAN_CHROMIUM if os.path.exists(DEBIAN_CHROMIUM) else None)
    if found:
        return found
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("Chromium is not installed (Debian: `apt-get install chromium`) and this user cannot install it")
    for command in (["apt-get", "install", "-y", "chromium"], ["apt-get", "update"],
                    ["apt-get", "install", "-y", "chromium"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=900,
                                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if command[1] == "install" and result.returncode == 0 and os.path.exists(DEBIAN_CHROMIUM):
            return DEBIAN_CHROMIUM
    pytest.skip(f"could not install Debian's chromium with apt-get: {result.stderr[-500:]}")


def install_playwright() -> None:
    """``playwright-core`` (pinned in tests/browser/package-lock.json); it never downloads a browser."""
    if (BROWSER_DIR / "node_modules" / "playwright-core" / "package.json").is_file():
        return
    result = subprocess.run([shutil.which("npm") or "npm", "ci", "--no-audit", "--no-fund"], cwd=BROWSER_DIR,
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.skip(f"npm ci failed in {BROWSER_DIR} (no npm registry?): {result.stderr[-500:]}")


def browser_tools() -> tuple[str, str]:
    """(node, chromium), with the page's socket.io-client and playwright-core installed; skips without node."""
    node = npm_install()  # bridge/js: the socket.io-client the bridge serves to the page
    chromium = find_chromium()
    install_playwright()
    return node, chromium


def run_browser(node: str, script: str, *args: str) -> dict[str, Any]:
    """Run ``tests/browser/SCRIPT`` and return its result, asserting what every page run must
    hold: it finished, no page error, no error on the console, no dialog, no CSP violation."""
    run = subprocess.run([node, str(BROWSER_DIR / script), *args], capture_output=True, text=True, timeout=180)
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result from the browser (exit {run.returncode}): {run.stdout[-2000:]} {run.stderr[-2000:]}"
    result = json.loads(lines[-1])
    assert run.returncode == 0 and "error" not in result, f"{result.get('error')}\nconsole: {result['console']}"
    assert result["pageErrors"] == [], result["pageErrors"]
    assert not [line for line in result["console"] if line.startswith("error")], result["console"]
    assert result["dialogs"] == [] and result["cspViolations"] == [], (result["dialogs"], result["cspViolations"])
    return result


# Today's four under their keys, and an overlay, oscillators and a volume indicator of the catalogue.
DASHBOARD_SET = "sma=sma:20,ema=ema:20,rsi=rsi:14,macd=macd:12:26:9,bb=bbands:20:2:2,stoch:14:3:3,atr:14,obv"


def assert_indicator_switches(toggled: dict) -> None:
    """Every configured instance has a switch; an oscillator switched off loses its pane and draws
    nothing, as does an overlay; switched on again, both draw over the visible bars."""
    instances = parse_indicators(DASHBOARD_SET)
    before, off, on = toggled["before"], toggled["off"], toggled["on"]
    assert before["state"]["instances"] == [{"name": i.name, "kind": i.kind.name, "keys": list(i.keys),
                                             "overlay": i.kind.name in ("sma", "ema", "wma", "bbands")}
                                            for i in instances]
    names = [i.name for i in instances]
    oscillators = [i.name for i in instances if i.kind.name not in ("sma", "ema", "wma", "bbands")]
    assert before["toggles"] == names and before["checked"] == names and before["panes"] == oscillators
    assert toggled["name"] == "rsi" and toggled["overlayName"] == "bb"
    # every key of an oscillator shows in its legend as text
    assert all(key in legend for i, legend in zip([i for i in instances if i.name in oscillators], before["legends"])
               for key in i.keys), before["legends"]
    points = before["state"]["points"]
    bars = before["state"]["overlay"]["bars"]
    assert all(points[name] >= 0.9 * bars for name in names if name != "macd"), (points, bars)
    assert points["macd"] >= 0.9 * 3 * bars and points["bb"] >= 0.9 * 3 * bars, points  # line, signal, histogram
    assert off["panes"] == [n for n in oscillators if n != "rsi"]
    assert off["checked"] == [n for n in names if n not in ("rsi", "bb")]
    assert off["state"]["points"]["rsi"] == 0 and off["state"]["points"]["bb"] == 0
    assert all(off["state"]["points"][n] > 0 for n in names if n not in ("rsi", "bb")), off["state"]["points"]
    assert on["panes"] == oscillators and on["checked"] == names
    assert on["state"]["points"]["rsi"] >= 0.9 * on["state"]["overlay"]["bars"]
    assert on["state"]["points"]["bb"] >= 0.9 * 3 * on["state"]["overlay"]["bars"]


@pytest.mark.timeout(900)  # a first run may install Chromium
def test_dashboard_shows_live_candles_and_switches_symbols(start_engine, start_worker, started, tmp_path: Path) -> None:
    node, chromium = browser_tools()
    engine = start_engine()
    start_worker(engine, "--indicators", DASHBOARD_SET)
    bridge = BridgeProcess(["--indicators", DASHBOARD_SET], engine=engine)
    started.append(bridge)
    bridge.start()

    result = run_browser(node, "dashboard.mjs", bridge.url + "/", str(tmp_path), chromium)
    assert "script-src 'self'" in result["csp"], "it all works under its Content-Security-Policy"

    screenshot = Path(result["screenshot"])
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000
    OUTPUT_DIR.mkdir(exist_ok=True)
    shutil.copyfile(screenshot, OUTPUT_DIR / "dashboard.png")
    shutil.copyfile(result["screenshotSwitched"], OUTPUT_DIR / "dashboard-switched.png")
    print(f"\ndashboard screenshots: {screenshot}, {result['screenshotSwitched']} "
          f"(copies in {OUTPUT_DIR})")

    loaded, live, dom = result["steps"]["loaded"], result["steps"]["live"], result["steps"]["dom"]
    symbol = loaded["symbol"]
    assert symbol in loaded["symbols"] and loaded["timeframe"] == "M1"
    assert loaded["historyBars"] > 1 and loaded["bars"] >= loaded["historyBars"]
    assert loaded["indicatorHistory"] == loaded["historyBars"], "one indicator value per history bar"
    assert_overlays_cover_the_history(loaded)
    # Live: candles events keep coming after the history, the last bar is this symbol's.
    assert live["candleEvents"] >= loaded["candleEvents"] + 3
    assert live["lastBar"]["symbol"] == symbol and live["lastBar"]["timeframe"] == "M1"
    assert live["ticks"][symbol] > loaded["ticks"].get(symbol, 0)
    assert live["indicatorEvents"] > 0 and live["bookEvents"] > 0 and live["accountEvents"] > 0
    assert live["summaryEvents"] > 0 and live["health"]["status"] == "ok" and live["errors"] == []
    # And the page shows it.
    assert symbol in dom["legend"] and all(key in dom["legend"] for key in ("sma", "ema", "bb_upper", "bb_lower"))
    assert dom["book"] == 20 and "equity" in dom["account"] and "indicators:0" in dom["health"]
    assert dom["summaryRows"] == 5 and dom["banner"] is None
    # The sim's demo account: the day's deposit and its core position (held all day but for the
    # day's last three minutes, UTC), shown under the account panel.
    assert live["deals"] >= 2 and dom["dealRows"] == min(live["deals"], 12)
    assert re.search(r"(buy|sell) (in|out)|balance", dom["deals"])
    if time.gmtime().tm_hour * 60 + time.gmtime().tm_min < 1437:
        assert live["positions"] >= 1 and dom["positionRows"] == min(live["positions"], 12)
        assert "buy" in dom["positions"] or "sell" in dom["positions"]

    toggled = result["steps"]["toggled"]
    assert_indicator_switches(toggled)
    print(f"switches: {toggled['before']['toggles']}; points drawn with all on {toggled['before']['state']['points']}, "
          f"rsi and bb off {toggled['off']['state']['points']} (panes {toggled['off']['panes']}), "
          f"on again {toggled['on']['state']['points']}")

    switched = result["steps"]["switched"]
    old, new, before, after = switched["old"], switched["next"], switched["before"], switched["after"]
    assert after["symbol"] == new and after["lastBar"]["symbol"] == new
    assert after["ticks"][new] > before["ticks"][new], "the new symbol's ticks stopped"
    assert after["ticks"][old] == before["ticks"][old], "the old symbol's ticks still arrive after the switch"
    assert after["candleEventsIgnored"] == before["candleEventsIgnored"], "candles of the old selection still arrive"
    assert_overlays_cover_the_history(after)

    timeframe = result["steps"]["timeframe"]
    assert timeframe["symbol"] == new and timeframe["timeframe"] == "M5"
    assert timeframe["lastBar"]["timeframe"] == "M5" and timeframe["indicatorEvents"] > 0
    assert_overlays_cover_the_history(timeframe)


@pytest.mark.timeout(900)  # a first run may install Chromium
def test_dashboard_asks_for_the_token_once_per_tab(start_engine, started) -> None:
    """With BRIDGE_TOKEN set the bridge refuses the page until it is given the token."""
    node, chromium = browser_tools()
    token = secrets.token_urlsafe(16)
    bridge = BridgeProcess(engine=start_engine(), env={"BRIDGE_TOKEN": token})
    started.append(bridge)
    bridge.start()

    steps = run_browser(node, "token.mjs", bridge.url + "/", chromium, token)["steps"]
    asked, wrong, accepted, reloaded, other = (steps[k] for k in ("asked", "wrong", "accepted", "reloaded", "otherTab"))
    assert asked["formShown"] and not asked["connected"] and asked["note"] == "", asked
    assert asked["connection"].startswith("refused: unauthorized") and asked["stored"] is None
    assert wrong["formShown"] and not wrong["connected"] and "refused" in wrong["note"] and wrong["stored"] is None
    assert accepted["connected"] and accepted["symbols"] == 5 and not accepted["formShown"], accepted
    assert accepted["stored"] == token and accepted["tokenAsked"] == 2
    # Kept for the tab: a reload connects without asking; another tab has its own session and asks.
    assert reloaded["connected"] and reloaded["tokenAsked"] == 0 and reloaded["stored"] == token, reloaded
    assert other["formShown"] and not other["connected"] and other["stored"] is None, other
    assert token not in bridge.output(), "the token reached the bridge's log"


def test_dashboard_routes_and_a_missing_socketio_client(tmp_path: Path) -> None:
    """``/`` and ``/static/`` serve the page; without the npm client its script is a 404 saying how to install it."""

    async def scenario() -> None:
        app = web.Application()
        add_dashboard(app, socketio_dist=tmp_path)  # an empty dist: the client is not installed
        async with TestClient(TestServer(app)) as client:
            page = await client.get("/")
            assert page.status == 200 and "dashboard.js" in await page.text()
            policy = parse_policy(page.headers["Content-Security-Policy"])
            host = f"{client.host}:{client.port}"
            assert policy["script-src"] == ["'self'"] and policy["default-src"] == ["'none'"]
            assert policy["connect-src"] == ["'self'", f"ws://{host}", f"wss://{host}"], policy
            assert policy["object-src"] == policy["base-uri"] == policy["frame-ancestors"] == ["'none'"]
            assert page.headers["X-Content-Type-Options"] == "nosniff" and page.headers["X-Frame-Options"] == "DENY"
            # A Host that is not a host name is never written into the policy.
            odd = await client.get("/", headers={"Host": "x; script-src *"})
            odd_policy = parse_policy(odd.headers["Content-Security-Policy"])
            assert odd_policy["connect-src"] == ["'self'"] and odd_policy["script-src"] == ["'self'"], odd_policy
            script = await client.get("/static/dashboard.js")
            assert script.status == 200 and "dashboardState" in await script.text()
            assert (await client.get("/static/dashboard.css")).status == 200
            missing = await client.get("/static/vendor/socket.io.min.js")
            assert missing.status == 404 and "npm ci" in await missing.text()
            for path in ("/static/nothing.js", "/static/..%2Fwebui.py", "/static/vendor/..%2F..%2Fserver.py"):
                assert (await client.get(path)).status == 404, path

    asyncio.run(scenario())
    assert_no_inline_script((DASHBOARD_DIR / "index.html").read_text())
    # The page tells a person what is missing rather than staying blank.
    assert "Socket.IO browser client is missing" in (DASHBOARD_DIR / "dashboard.js").read_text()
