// Markup in every field the dashboard shows must stay text: no script runs, no element is made of it.
// Usage: node xss.mjs BRIDGE_URL CHROMIUM MARKUP_JSON
// The bridge serves tests/hostile_engine.py's data (markup in names, descriptions, account strings,
// health strings, and in numeric fields of RPC replies). Then the page's own socket listeners are
// handed markup in every field of every event, as a bridge that let anything through would send it.
// Prints one JSON object: a snapshot of the page after each step; tests/test_dashboard_xss.py asserts.
import { run } from "./harness.mjs";

const [url, executablePath, markupJson] = process.argv.slice(2);
const MARKUP = JSON.parse(markupJson);

// What the page shows, and any sign that data became markup or code.
function snapshot() {
  const text = (id) => document.getElementById(id).textContent;
  const all = [...document.querySelectorAll("*")];
  return {
    title: document.title,
    pwned: window.__pwned ?? null,
    symbol: window.dashboardState.symbol,
    options: [...document.querySelectorAll("#symbol option")].map((o) => ({ text: o.textContent, value: o.value, title: o.title })),
    legend: text("legend"),
    bookSymbol: text("book-symbol"),
    quote: text("quote"),
    book: text("book"),
    account: text("account"),
    health: text("health"),
    summary: [...document.querySelectorAll("#summary tbody tr")].map((tr) => tr.textContent),
    summaryCells: [...document.querySelectorAll("#summary tbody td:first-child")].map((td) => td.textContent),
    workers: [...document.querySelectorAll("#health dt")].map((dt) => dt.textContent),
    connection: text("connection"),
    service: text("service"),
    // Elements no data may create, the page's own two scripts aside, and handlers in attributes.
    foreign: all.filter((el) => ["IMG", "SVG", "IFRAME", "OBJECT", "EMBED"].includes(el.tagName.toUpperCase()))
      .map((el) => el.outerHTML.slice(0, 120)),
    scripts: document.scripts.length,
    handlers: all.flatMap((el) => [...el.attributes].filter((a) => /^on/i.test(a.name)).map((a) => `${el.tagName} ${a.name}`)),
    boldFromData: all.filter((el) => el.textContent === "bold").length,
  };
}

// The page's socket listeners, each handed markup in every field (the socket disconnected first,
// so nothing live overwrites it before the snapshot).
function inject([a, b, c, d]) {
  const socket = window.dashboardSocket;
  const { symbol, timeframe, lastBar } = window.dashboardState;
  const fire = (event, payload) => socket.listeners(event).forEach((listener) => listener(payload));
  socket.disconnect();
  const next = (lastBar?.time ?? 0) + 60;
  fire("tick", { symbol, bid: a, ask: b, last: c, volume: d, time_msc: a, flags: b, volume_real: c });
  fire("candles", { symbol, timeframe, candles: [
    { symbol, timeframe, time: a, open: b, high: c, low: d, close: a, tick_volume: b, closed: c },
    { symbol, timeframe, time: next, open: 1.1, high: 1.2, low: 1.0, close: 1.15, tick_volume: d, spread: a, closed: b },
    a,
  ] });
  fire("candles", { symbol, timeframe, candles: a });
  fire("indicators", { symbol, timeframe, time: next, closed: a, sma: a, ema: b, rsi: c, macd: d, macd_signal: a, macd_hist: b });
  fire("order_book", { symbol, time_msc: a, bids: [[a, b], c, [1.1, d]], asks: d });
  fire("account_update", { login: a, name: b, server: c, currency: d, company: a, balance: a, equity: b, profit: c,
    margin: d, margin_free: a, margin_level: b, leverage: c });
  fire("market_summary", { time_msc: a, symbols: { [a]: { last: a, change_pct: b, low: c, high: d }, [b]: c, [c]: [d] } });
  fire("health", { status: a, bridge: b, version: c, uptime: d, clients: a, subscriptions: b, server_time: c,
    engine: { status: d, health: { ticks_per_s: a, status: b } }, workers: { [a]: b, [c]: d },
    stats: { tick_to_write_ms: { p50: c, p99: d } } });
  fire("connect_error", new Error(d));
  fire("error", { code: a, message: b, event: c });
}

await run(executablePath, async ({ page, result, state, drawn, waitFor }) => {
  await page.goto(url, { waitUntil: "load" });
  const title = await page.title();
  await waitFor("the stand-in's symbols, candles, book, account, summary, health and indicators", () => {
    const s = window.dashboardState;
    return s.connected && s.symbols.length === 3 && s.bars > 1 && s.bookEvents > 0 && s.accountEvents > 0 &&
      s.summaryEvents > 0 && s.health && s.pingMs != null && s.indicatorEvents > 0 && s.ticksTotal > 0;
  });
  await drawn();
  result.steps.stream = { title, ...(await page.evaluate(snapshot)), state: await state() };

  // Another markup-named symbol, with the page's own <select>.
  const next = result.steps.stream.state.symbols[1];
  await page.selectOption("#symbol", { index: 1 });
  await waitFor("the second symbol's candles", (sym) => {
    const s = window.dashboardState;
    return s.symbol === sym && s.bars > 1 && s.lastBar?.symbol === sym && s.bookEvents > 0;
  }, next);
  await drawn();
  result.steps.switched = await page.evaluate(snapshot);

  await page.evaluate(inject, MARKUP);
  await drawn();
  result.steps.injected = { ...(await page.evaluate(snapshot)), state: await state() };
});
