// Drives the bridge's dashboard in Debian's headless Chromium with playwright-core (no downloaded browser).
// Usage: node dashboard.mjs BRIDGE_URL OUT_DIR [CHROMIUM]
// Prints one JSON object (what the page saw at each step) on stdout; exits 1 with a message on failure.
// tests/test_dashboard.py runs it against a real engine, indicator worker and bridge, and asserts.
import { join } from "node:path";
import { run, sleep } from "./harness.mjs";

const [url, outDir, executablePath = "/usr/bin/chromium"] = process.argv.slice(2);

await run(executablePath, async ({ page, result, state, drawn, waitFor }) => {
  const response = await page.goto(url, { waitUntil: "load" });
  result.csp = response.headers()["content-security-policy"] ?? null;
  // Right after load: history candles and their indicator values (state.overlay: what the chart drew).
  await waitFor("history candles and indicator values of the first symbol", () => {
    const s = window.dashboardState;
    return s.connected && s.bars > 1 && s.historyBars > 0 && s.indicatorHistory > 0;
  });
  await drawn();
  result.steps.loaded = await state();

  // Live: more candles events for the selection (the history reply was one), ticks, indicators, book, summary.
  const first = result.steps.loaded;
  await waitFor("live candles, ticks, indicators, book, account, deals, summary and health",
    ([c0, t0, sym]) => {
      const s = window.dashboardState;
      return s.candleEvents >= c0 + 3 && (s.ticks[sym] || 0) >= t0 + 3 && s.indicatorEvents > 0 &&
        s.bookEvents > 0 && s.accountEvents > 0 && s.summaryEvents > 0 && s.health && s.pingMs != null &&
        s.deals > 0;
    }, [first.candleEvents, first.ticks[first.symbol] || 0, first.symbol]);
  await sleep(300); // let the frame with the newest values paint
  result.steps.live = await state();
  result.steps.dom = await page.evaluate(() => ({
    title: document.title,
    legend: document.getElementById("legend").textContent,
    book: document.querySelectorAll("#book tr.bid, #book tr.ask").length,
    account: document.getElementById("account").textContent,
    health: document.getElementById("health").textContent,
    summaryRows: document.querySelectorAll("#summary tbody tr").length,
    positionRows: document.querySelectorAll("#positions tbody tr").length,
    positions: document.getElementById("positions").textContent,
    deals: document.getElementById("deals").textContent,
    dealRows: document.querySelectorAll("#deals tbody tr").length,
    banner: document.getElementById("banner").hidden ? null : document.getElementById("banner").textContent,
  }));
  result.screenshot = join(outDir, "dashboard.png");
  await page.screenshot({ path: result.screenshot, fullPage: true });

  // The configured indicators: one switch each; an oscillator switched off loses its pane and
  // draws nothing, switched on again it is back with its points.
  const panes = () => page.evaluate(() => ({
    toggles: [...document.querySelectorAll("#indicator-toggles label")].map((l) => l.textContent),
    checked: [...document.querySelectorAll("#indicator-toggles input:checked")].map((i) => i.dataset.instance),
    panes: [...document.querySelectorAll("#oscillators .oscillator")].filter((p) => !p.hidden && p.offsetHeight > 0)
      .map((p) => p.dataset.instance),
    legends: [...document.querySelectorAll("#oscillators .legend")].map((l) => l.textContent),
  }));
  const toggled = {};
  const oscillator = first.instances.find((i) => i.kind === "rsi") ?? first.instances.find((i) => !i.overlay);
  const overlay = first.instances.find((i) => i.kind === "bbands") ?? first.instances.find((i) => i.overlay);
  toggled.name = oscillator.name;
  toggled.overlayName = overlay.name;
  toggled.before = { ...(await panes()), state: await state() };
  await page.click(`#indicator-toggles input[data-instance="${oscillator.name}"]`);
  await page.click(`#indicator-toggles input[data-instance="${overlay.name}"]`);
  await waitFor("the oscillator and the overlay switched off", ([o, v]) => {
    const s = window.dashboardState;
    return !s.shownInstances.includes(o) && !s.shownInstances.includes(v) && s.points[o] === 0 && s.points[v] === 0;
  }, [oscillator.name, overlay.name]);
  await drawn();
  toggled.off = { ...(await panes()), state: await state() };
  await page.click(`#indicator-toggles input[data-instance="${oscillator.name}"]`);
  await page.click(`#indicator-toggles input[data-instance="${overlay.name}"]`);
  await waitFor("the oscillator and the overlay switched on again", ([o, v]) => {
    const s = window.dashboardState;
    return s.shownInstances.includes(o) && s.shownInstances.includes(v) && s.points[o] > 0 && s.points[v] > 0;
  }, [oscillator.name, overlay.name]);
  await drawn();
  toggled.on = { ...(await panes()), state: await state() };
  result.steps.toggled = toggled;

  // Switch the symbol with the page's own <select>: the new one's ticks and candles come, the old one's stop.
  const old = first.symbol;
  const next = first.symbols.find((s) => s !== old);
  await page.selectOption("#symbol", next);
  await waitFor(`${next} ticks and candles after the switch`,
    ([sym, t0]) => {
      const s = window.dashboardState;
      return s.symbol === sym && s.bars > 1 && s.lastBar?.symbol === sym && (s.ticks[sym] || 0) >= t0 + 3 &&
        s.indicatorHistory > 0;
    }, [next, (await state()).ticks[next] || 0]);
  await sleep(500); // what was already in flight for the old symbol
  const before = await state();
  await sleep(2000);
  const after = await state();
  result.steps.switched = { old, next, before, after };

  // And the timeframe, with its button.
  await page.click('#timeframes button[data-tf="M5"]');
  await waitFor("M5 candles and indicator history", () => {
    const s = window.dashboardState;
    return s.timeframe === "M5" && s.bars > 1 && s.lastBar?.timeframe === "M5" && s.candleEvents > 0 &&
      s.indicatorEvents > 0 && s.indicatorHistory > 0;
  });
  await sleep(300);
  result.steps.timeframe = await state();
  result.screenshotSwitched = join(outDir, "dashboard-switched.png");
  await page.screenshot({ path: result.screenshotSwitched, fullPage: true });
});
