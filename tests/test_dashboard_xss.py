"""The dashboard never runs data as code (issue 11, part 2).

A real bridge serves ``tests/hostile_engine.py``'s data (markup in symbol names and descriptions,
account and health strings, and in numeric fields of its RPC replies) to the real page in
headless Chromium; then the page's own socket listeners get markup in every field of every
event. No script may run (title unchanged, ``window.__pwned`` never set, no dialog, no CSP
violation), no element may be made of the data, and markup shown is shown as literal text.
"""
from __future__ import annotations

import json
import re

import pytest

from bridge.webui import DASHBOARD_DIR
from tests.bridge_procs import BridgeProcess
from tests.hostile_engine import ACCOUNT_STRINGS, MARKUP, SYMBOLS, HostileEngine, symbol_infos
from tests.test_dashboard import browser_tools, run_browser

TITLE = re.search(r"<title>(.*)</title>", (DASHBOARD_DIR / "index.html").read_text()).group(1)


def without(text: str, *parts: str) -> str:
    """``text`` with every occurrence of each of ``parts`` taken out."""
    for part in parts:
        text = text.replace(part, "")
    return text


def assert_no_markup_in_numbers(step: dict, *account_strings: str) -> None:
    """The quote, book, legend (but its symbol) and account (but its strings) show only numbers."""
    numbers = (step["quote"], step["book"], without(step["legend"], step["symbol"]),
               without(step["account"], *account_strings))
    assert not [m for m in MARKUP if any(m in shown for shown in numbers)], numbers


def assert_nothing_ran(step: dict) -> None:
    """No script ran and no element came from the data."""
    assert step["title"] == TITLE and step["pwned"] is None, (step["title"], step["pwned"])
    assert step["foreign"] == [] and step["handlers"] == [] and step["boldFromData"] == 0, step
    assert step["scripts"] == 2, "only the page's own two scripts"


@pytest.mark.timeout(900)  # a first run may install Chromium
def test_markup_in_every_field_stays_text(started) -> None:
    node, chromium = browser_tools()
    with HostileEngine() as engine:
        bridge = BridgeProcess(engine=engine)  # type: ignore[arg-type]  # duck-typed: .bus, .rpc
        started.append(bridge)
        bridge.start()
        result = run_browser(node, "xss.mjs", bridge.url + "/", chromium, json.dumps(MARKUP))
        answered = dict(engine.requests)

    stream, switched, injected = (result["steps"][k] for k in ("stream", "switched", "injected"))
    for step in (stream, switched, injected):
        assert_nothing_ran(step)
    # The page used the stand-in's replies and stream (RPC: symbols, candles, book, account).
    assert {"symbols", "candles", "book", "account"} <= answered.keys(), answered
    state = stream["state"]
    assert state["symbols"] == list(SYMBOLS) and state["symbol"] == SYMBOLS[0]
    assert state["bars"] > 1 and state["bookEvents"] > 0 and state["accountEvents"] > 0

    # Through the bridge: names, descriptions and account strings shown as they are, as text.
    infos = symbol_infos()
    assert stream["options"] == [{"text": s["name"], "value": s["name"], "title": s["description"]} for s in infos]
    assert stream["bookSymbol"] == SYMBOLS[0] and stream["legend"].startswith(SYMBOLS[0])
    assert all(value in stream["account"] for value in (ACCOUNT_STRINGS["name"], ACCOUNT_STRINGS["server"],
                                                         ACCOUNT_STRINGS["currency"])), stream["account"]
    assert stream["summaryCells"] == list(SYMBOLS)
    # Markup in numeric fields (the first symbol's digits and point, candle volumes, book levels,
    # account figures) is not a number: shown as "—" or left out, never as markup.
    for step in (stream, switched):
        assert_no_markup_in_numbers(step, *ACCOUNT_STRINGS.values())
    assert switched["symbol"] == SYMBOLS[1] and switched["bookSymbol"] == SYMBOLS[1]

    # Straight into the page's listeners: every string shown is the markup, literally.
    a, b, c, d = MARKUP
    assert injected["account"].startswith(f"account {b}") and f"server{c}" in injected["account"]
    assert injected["account"].count(d) == 5, "the currency after each amount"
    assert f"status{a}" in injected["health"] and f"engine{d}" in injected["health"]
    assert f"version{c}" in injected["health"] and "ticks/s" not in injected["health"]
    assert {a, c} <= set(injected["workers"]), injected["workers"]
    assert injected["summaryCells"] == [a, b, c]
    assert injected["connection"] == f"refused: {d}" and injected["service"] == f"service {a}"
    # Numbers that are not numbers: the chart kept its bars, the quote, book and legend show none of it.
    assert injected["state"]["bars"] > 1
    assert_no_markup_in_numbers(injected, b, c, d)
    print(f"\n[hostile] dashboard XSS: {len(MARKUP)} markups through the bridge ({sum(answered.values())} RPC "
          f"replies) and into every listener; title {injected['title']!r}, __pwned {injected['pwned']}, "
          f"foreign elements {len(injected['foreign'])}, CSP violations {len(result['cspViolations'])}, "
          f"dialogs {len(result['dialogs'])}")
