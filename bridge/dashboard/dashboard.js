// The live dashboard: plain browser JavaScript over the bridge's Socket.IO API (README "Socket.IO API").
// `io` is the socket.io-client browser build the bridge serves (bridge/webui.py: SOCKETIO_DIRS).
// window.dashboardState exposes what arrived (counts per event and symbol) for people and tests.
// Whatever arrives is data: it reaches the page only as text (DOM nodes and textContent, never
// parsed as HTML), and a value shown as a number is shown only when it is a finite number.
"use strict";

(() => {
  const HISTORY_BARS = 200;       // get_candles and get_indicators count; older bars come this many at a time
  const MAX_BARS = 3000;          // bars kept in memory (live ones and older ones loaded by dragging)
  const MAX_EMPTY_WINDOWS = 10;   // older windows in a row without a bar (a closed market) before giving up
  const BAR_PX = 9;               // horizontal space per bar
  const AXIS_PX = 72;             // right-hand price axis
  const TIME_AXIS_PX = 18;        // bottom time axis of the price pane
  const PING_EVERY_MS = 5000;     // health is pushed on change only; ask for it now and then
  const MAX_DEALS = 50;           // deals kept for the table and the chart's marks
  const DEALS_BACK_S = 86400;     // the deals asked for on connect: the last day (market clock)
  const MAX_ROWS = 12;            // positions and orders shown
  const TOKEN_KEY = "mt5-bridge-token"; // sessionStorage: asked once, kept for the tab session
  const MAX_DIGITS = 10;          // a symbol's digits beyond this are not a price's (toFixed allows 100)
  const MAX_INSTANCES = 64;       // indicator instances listed (a switch and maybe a pane each)
  const COLORS = { up: "#26a69a", down: "#ef5350", grid: "#1f2731", axis: "#7d8a99", text: "#d6dde6" };
  // One colour per indicator output, in the order of the configured keys.
  const PALETTE = ["#f5c542", "#4aa3ff", "#b388ff", "#ff9f43", "#4dd0e1", "#f06292", "#aed581", "#ffd54f",
    "#9575cd", "#4db6ac", "#e57373", "#90a4ae"];
  // Kinds drawn on the price chart (in price units); every other kind gets an oscillator pane.
  const OVERLAY_KINDS = new Set(["sma", "ema", "wma", "bbands"]);
  // How an oscillator pane draws a kind: a fixed range, guide levels, an output as a histogram,
  // the decimals of its values ("price": the symbol's digits + 1). Unknown kinds: auto range.
  const PANE_STYLE = {
    rsi: { range: [0, 100], levels: [30, 50, 70], decimals: 1 },
    stoch: { range: [0, 100], levels: [20, 80], decimals: 1 },
    adx: { range: [0, 100], levels: [25], decimals: 1 },
    cci: { levels: [-100, 0, 100], decimals: 1 },
    macd: { levels: [0], histogram: "_hist", decimals: "price" },
    atr: { decimals: "price" },
    obv: { decimals: 0 },
  };
  const $ = (id) => document.getElementById(id);

  // Everything a test or a curious person may want to read.
  const state = (window.dashboardState = {
    connected: false,
    symbol: null,
    timeframe: "M1",
    generation: 0,            // bumped on every switch; late replies of an older one are ignored
    symbols: [],
    ticks: {},                // received tick events per symbol
    ticksTotal: 0,
    candleEvents: 0,          // candles events for the current (symbol, timeframe)
    candleEventsIgnored: 0,   // for another selection (in flight during a switch)
    bars: 0,                  // bars on the chart
    historyBars: 0,
    lastBar: null,
    indicatorEvents: 0,
    indicatorPoints: 0,
    indicatorHistory: 0,      // values of the current selection from get_indicators
    overlay: { bars: 0 },     // bars drawn, and per indicator key those with a value
    instances: [],            // the configured indicators (get_indicators): {name, kind, keys, overlay}
    shownInstances: [],       // names of those switched on
    points: {},               // per instance: points it drew in the last frame (0 when switched off)
    bookEvents: 0,
    accountEvents: 0,
    positions: 0,             // open positions held (get_positions, then position_update events)
    orders: 0,                // pending orders held
    deals: 0,                 // deals held (get_deals, then deal events)
    positionEvents: 0,
    orderEvents: 0,
    dealEvents: 0,
    dealMarks: 0,             // deals marked on the price chart
    summaryEvents: 0,
    healthEvents: 0,
    health: null,
    pingMs: null,
    errors: [],
    clientMissing: false,
    tokenAsked: 0,            // times the page asked for BRIDGE_TOKEN (the bridge refused without it)
    oldestBar: null,          // open time of the oldest bar held
    scrollBars: 0,            // bars between the newest one and the chart's right edge (dragged back)
    olderRequests: 0,         // get_candles ranges asked for when the chart reached its left edge
    olderBars: 0,             // bars they brought
    olderDone: false,         // no older bars to ask for (none left, refused, or MAX_BARS held)
  });

  // Data of the current selection.
  let bars = [];                   // [{time, open, high, low, close, tick_volume, closed}], oldest first
  let indicators = new Map();      // bar time -> an indicators payload: {time, closed, <key>: value...}
  let instances = [];              // state.instances, with each output's colour
  const switchedOff = new Set();   // instance names a person switched off (kept across selections)
  let book = null;
  let account = null;
  // The account's activity, by ticket (MT5's TradePosition, TradeOrder and TradeDeal fields).
  const positions = new Map();
  const orders = new Map();
  let deals = [];                  // newest first, at most MAX_DEALS
  let summary = null;
  let lastTick = null;
  // Dragging back through history: the next older window's end (a bar open time), whether a
  // request for it is out, and how many windows in a row had no bar.
  let olderTo = null;
  let loadingOlder = false;
  let emptyWindows = 0;
  const digitsOf = Object.create(null); // keyed by symbol names, whatever they are
  const pointOf = Object.create(null);

  // ---------------------------------------------------------------- rendering, at most once a frame
  const dirty = new Set();
  let frame = 0;
  function invalidate(...parts) {
    parts.forEach((p) => dirty.add(p));
    if (!frame) frame = requestAnimationFrame(render);
  }
  function render() {
    frame = 0;
    const parts = new Set(dirty);
    dirty.clear();
    if (parts.has("chart")) drawCharts();
    if (parts.has("quote")) renderQuote();
    if (parts.has("book")) renderBook();
    if (parts.has("account")) renderAccount();
    if (parts.has("activity")) renderActivity();
    if (parts.has("health")) renderHealth();
    if (parts.has("summary")) renderSummary();
  }
  window.addEventListener("resize", () => invalidate("chart"));

  // ---------------------------------------------------------------- formatting
  // A value used as a number is one (JSON numbers; the bridge sends NaN as null), else null.
  const finite = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
  const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
  const list = (v) => (Array.isArray(v) ? v : []);
  const places = (d) => (Number.isInteger(d) && d >= 0 && d <= MAX_DIGITS ? d : 5);
  const digits = () => digitsOf[state.symbol] ?? 5;
  const price = (v, d = digits()) => (finite(v) == null ? "—" : v.toFixed(places(d)));
  const money = (v) => (finite(v) == null ? "—" : v.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 }));
  const num = (v, d = 2) => (finite(v) == null ? "—" : v.toFixed(places(d)));
  const count = (v) => (finite(v) == null ? "—" : String(v));
  const text = (v, missing = "—") => (typeof v === "string" || finite(v) != null ? String(v) : missing);
  const pad2 = (n) => String(n).padStart(2, "0");
  function timeLabel(t, withDate) {
    const d = new Date(t * 1000);
    const hm = `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}`;
    return withDate ? `${d.getUTCDate()} ${d.toLocaleString("en-US", { month: "short", timeZone: "UTC" })} ${hm}` : hm;
  }

  // An element with text (or element) children: strings become text nodes, never markup.
  // props: className, title, value, ... as DOM properties; style: {color, width}; dataset.
  function elem(tag, props, ...children) {
    const node = document.createElement(tag);
    const { style, dataset, ...rest } = props || {};
    Object.assign(node, rest);
    if (style) Object.assign(node.style, style); // CSSOM, which the page's CSP allows (no style attributes)
    if (dataset) Object.assign(node.dataset, dataset);
    node.append(...children.filter((c) => c != null && c !== false).map((c) => (c instanceof Node ? c : String(c))));
    return node;
  }
  const kvRows = (rows) => rows.flatMap(([k, ...v]) => [elem("dt", null, k), elem("dd", null, ...v)]);

  function showBanner(...parts) {
    const el = $("banner");
    el.replaceChildren(...parts.map((p) => (p instanceof Node ? p : String(p))));
    el.hidden = false;
  }

  // ---------------------------------------------------------------- candles and indicators
  function upsertBar(bar) {
    const n = bars.length;
    if (n === 0 || bar.time > bars[n - 1].time) {
      bars.push(bar);
      if (state.scrollBars > 0) state.scrollBars += 1; // a dragged view stays where it is
      if (bars.length > MAX_BARS) bars.splice(0, bars.length - MAX_BARS);
      return;
    }
    let lo = 0;
    let hi = n - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const t = bars[mid].time;
      if (t === bar.time) {
        if (!(bars[mid].closed && !bar.closed)) bars[mid] = bar; // a closed bar is final
        return;
      }
      if (t < bar.time) lo = mid + 1;
      else hi = mid - 1;
    }
    bars.splice(lo, 0, bar);
  }

  // A bar the chart can place: its time and prices are finite numbers.
  const isBar = (b) => isObject(b) && ["time", "open", "high", "low", "close"].every((k) => finite(b[k]) != null);

  function onCandles(msg) {
    if (!msg || msg.symbol !== state.symbol || msg.timeframe !== state.timeframe) {
      state.candleEventsIgnored += 1;
      return;
    }
    state.candleEvents += 1;
    for (const bar of list(msg.candles)) if (isBar(bar)) upsertBar(bar);
    state.bars = bars.length;
    state.lastBar = bars.length ? { ...bars[bars.length - 1] } : null;
    state.oldestBar = bars.length ? bars[0].time : null;
    invalidate("chart");
  }

  function onIndicators(msg) {
    if (!isObject(msg) || msg.symbol !== state.symbol || msg.timeframe !== state.timeframe) return;
    state.indicatorEvents += 1;
    const old = indicators.get(msg.time);
    if (old && old.closed && !msg.closed) return;
    indicators.set(msg.time, msg);
    if (indicators.size > MAX_BARS * 2 && bars.length) {
      const first = bars[0].time;
      for (const t of indicators.keys()) if (t < first) indicators.delete(t);
    }
    state.indicatorPoints = indicators.size;
    invalidate("chart");
  }

  // History from get_indicators, under the live values: a bar that already has a live value keeps
  // it, unless the history has that bar closed and the live value was of it still forming.
  function onIndicatorHistory(values) {
    for (const v of list(values).filter(isObject)) {
      const old = indicators.get(v.time);
      if (!old || (v.closed && !old.closed)) indicators.set(v.time, v);
    }
    state.indicatorHistory = list(values).length;
    state.indicatorPoints = indicators.size;
    invalidate("chart");
  }

  // ---------------------------------------------------------------- canvas drawing
  function setup(canvas) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    return { ctx, w, h };
  }

  // The bars that fit, right-aligned, and the x of each (the same in every pane); dragged back
  // by state.scrollBars.
  function visible(width) {
    const plotW = width - AXIS_PX;
    const count = Math.max(1, Math.floor(plotW / BAR_PX));
    const end = bars.length - Math.min(state.scrollBars, Math.max(0, bars.length - 1));
    const shown = bars.slice(Math.max(0, end - count), end);
    const offset = plotW - shown.length * BAR_PX;
    return { shown, plotW, count, atLeftEdge: end - count <= 0, x: (i) => offset + (i + 0.5) * BAR_PX };
  }

  // Dragging the price chart to the right shows older bars; at its left edge, older ones load.
  function onDrag(canvas) {
    let from = null;
    canvas.addEventListener("pointerdown", (e) => {
      from = { x: e.clientX, scroll: state.scrollBars };
      canvas.setPointerCapture(e.pointerId);
    });
    canvas.addEventListener("pointermove", (e) => {
      if (!from) return;
      const scroll = Math.max(0, Math.min(bars.length - 1, from.scroll + Math.round((e.clientX - from.x) / BAR_PX)));
      if (scroll === state.scrollBars) return;
      state.scrollBars = scroll;
      invalidate("chart");
      if (visible(canvas.clientWidth).atLeftEdge) loadOlder();
    });
    const end = () => { from = null; };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
  }

  const TF_UNIT_S = { M: 60, H: 3600, D: 86400, W: 604800 };
  // A timeframe's length in seconds (a month as 31 days: only the size of a window to ask for).
  const tfSeconds = (tf) => (tf.startsWith("MN") ? 31 * 86400 : (TF_UNIT_S[tf[0]] ?? 60) * (parseInt(tf.slice(1), 10) || 1));

  // The HISTORY_BARS bars before the oldest held, by date range; the reply also arrives as a
  // `candles` event, which puts them in place (upsertBar). A window of a closed market has none:
  // the next drag asks for the one before it.
  function loadOlder() {
    if (loadingOlder || state.olderDone || !bars.length || !socket.connected) return;
    if (bars.length + HISTORY_BARS > MAX_BARS) {
      state.olderDone = true;
      return;
    }
    const { symbol, timeframe, generation } = state;
    const to = Math.min(olderTo ?? Infinity, bars[0].time - 1);
    if (to < 0) {
      state.olderDone = true;
      return;
    }
    const from = Math.max(0, to + 1 - HISTORY_BARS * tfSeconds(timeframe));
    loadingOlder = true;
    state.olderRequests += 1;
    socket.emit("get_candles", { symbol, timeframe, from, to }, (reply) => {
      if (generation !== state.generation) return;
      loadingOlder = false;
      if (!isObject(reply) || reply.code) {
        // Refused (a source without older bars says so): stop asking; rate limited: a later drag asks again.
        if (reply?.code !== "rate_limited") state.olderDone = true;
        return;
      }
      const got = list(reply.candles).filter(isBar).length;
      state.olderBars += got;
      emptyWindows = got ? 0 : emptyWindows + 1;
      olderTo = from - 1;
      if (from === 0 || emptyWindows >= MAX_EMPTY_WINDOWS) state.olderDone = true;
    });
  }

  function niceStep(range, ticks) {
    const raw = range / Math.max(1, ticks);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const f = raw / mag;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
  }

  function yAxis(ctx, lo, hi, y, w, top, bottom, fmt, ticks = 6) {
    const step = niceStep(hi - lo || 1, ticks);
    ctx.fillStyle = COLORS.axis;
    ctx.textAlign = "left";
    for (let k = Math.ceil(lo / step); k * step <= hi; k += 1) {
      const v = k === 0 ? 0 : k * step;
      const py = Math.round(y(v)) + 0.5;
      if (py < top || py > bottom) continue;
      ctx.strokeStyle = COLORS.grid;
      ctx.beginPath();
      ctx.moveTo(0, py);
      ctx.lineTo(w - AXIS_PX, py);
      ctx.stroke();
      ctx.fillText(fmt(v), w - AXIS_PX + 6, py);
    }
  }

  // Tags of the latest values on the right-hand axis ([{y, text, color, fill}]), pushed apart so none overlap.
  function tags(ctx, w, list) {
    const placed = list.filter((t) => t && Number.isFinite(t.y)).sort((a, b) => a.y - b.y);
    for (let i = 1; i < placed.length; i += 1) placed[i].y = Math.max(placed[i].y, placed[i - 1].y + 16);
    for (const t of placed) {
      ctx.fillStyle = t.color;
      ctx.fillRect(w - AXIS_PX + 1, t.y - 8, AXIS_PX - 2, 16);
      ctx.fillStyle = t.fill ?? "#111";
      ctx.textAlign = "left";
      ctx.fillText(t.text, w - AXIS_PX + 6, t.y);
    }
  }

  // A line through consecutive bars that have a value; a dot where a value stands alone.
  // Returns the latest value drawn (null when none) and the number of points drawn.
  function series(ctx, shown, x, y, pick, color) {
    ctx.strokeStyle = color;
    ctx.fillStyle = color;
    ctx.lineWidth = 1.5;
    let run = [];
    const flush = () => {
      if (run.length === 1) {
        ctx.beginPath();
        ctx.arc(run[0][0], run[0][1], 2.5, 0, Math.PI * 2);
        ctx.fill();
      } else if (run.length > 1) {
        ctx.beginPath();
        run.forEach(([px, py], k) => (k ? ctx.lineTo(px, py) : ctx.moveTo(px, py)));
        ctx.stroke();
      }
      run = [];
    };
    let latest = null;
    let points = 0;
    shown.forEach((bar, i) => {
      const v = pick(indicators.get(bar.time));
      if (v == null || !Number.isFinite(v)) flush();
      else {
        run.push([x(i), y(v)]);
        latest = v;
        points += 1;
      }
    });
    flush();
    ctx.lineWidth = 1;
    return [latest, points];
  }

  function emptyText(ctx, w, h, text) {
    ctx.fillStyle = COLORS.axis;
    ctx.textAlign = "center";
    ctx.fillText(text, (w - AXIS_PX) / 2, h / 2);
  }

  function drawCharts() {
    const { shown } = visible($("price").clientWidth);
    const overlay = { bars: shown.length };
    for (const inst of instances) {
      for (const key of inst.keys) overlay[key] = shown.filter((b) => finite(indicators.get(b.time)?.[key]) != null).length;
    }
    state.overlay = overlay;
    const points = {};
    for (const inst of instances) points[inst.name] = 0;
    drawPrice(points);
    for (const inst of instances) if (!inst.overlay && isShown(inst)) points[inst.name] = drawOscillator(inst);
    state.points = points;
    renderLegends();
  }

  const isShown = (inst) => !switchedOff.has(inst.name);

  function drawPrice(points) {
    const { ctx, w, h } = setup($("price"));
    const { shown, x } = visible(w);
    const top = 10;
    const bottom = h - TIME_AXIS_PX - 6;
    if (!shown.length) {
      emptyText(ctx, w, h, state.clientMissing ? "no Socket.IO client (see above)"
        : state.symbol ? `waiting for ${state.symbol} ${state.timeframe} candles…` : "connecting…");
      return;
    }
    const overlays = instances.filter((inst) => inst.overlay && isShown(inst));
    let lo = Infinity;
    let hi = -Infinity;
    shown.forEach((b) => {
      lo = Math.min(lo, b.low);
      hi = Math.max(hi, b.high);
      const ind = indicators.get(b.time);
      for (const inst of overlays) {
        for (const key of inst.keys) {
          const v = finite(ind?.[key]);
          if (v != null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
        }
      }
    });
    const padding = (hi - lo) * 0.06 || hi * 0.0005 || 1;
    lo -= padding;
    hi += padding;
    const y = (v) => bottom - ((v - lo) / (hi - lo)) * (bottom - top);
    yAxis(ctx, lo, hi, y, w, top, bottom, (v) => price(v));

    // time axis
    ctx.fillStyle = COLORS.axis;
    ctx.textAlign = "center";
    const every = Math.ceil(90 / BAR_PX);
    shown.forEach((b, i) => {
      if ((shown.length - 1 - i) % every || x(i) < 24) return;
      const prev = shown[i - every];
      const newDay = prev && Math.floor(prev.time / 86400) !== Math.floor(b.time / 86400);
      ctx.fillText(timeLabel(b.time, newDay), x(i), h - TIME_AXIS_PX / 2);
    });

    // candles
    const body = Math.max(1, BAR_PX - 3);
    shown.forEach((b, i) => {
      const color = b.close >= b.open ? COLORS.up : COLORS.down;
      const cx = Math.round(x(i)) + 0.5;
      ctx.strokeStyle = color;
      ctx.fillStyle = color;
      ctx.beginPath();
      ctx.moveTo(cx, y(b.high));
      ctx.lineTo(cx, y(b.low));
      ctx.stroke();
      const y0 = y(Math.max(b.open, b.close));
      const y1 = y(Math.min(b.open, b.close));
      ctx.globalAlpha = b.closed === false ? 0.75 : 1;
      ctx.fillRect(cx - body / 2, y0, body, Math.max(1, y1 - y0));
      ctx.globalAlpha = 1;
    });

    const latest = [];
    for (const inst of overlays) {
      inst.keys.forEach((key, k) => {
        const [value, drawn] = series(ctx, shown, x, y, (ind) => ind?.[key], inst.colors[k]);
        points[inst.name] += drawn;
        if (value != null) latest.push({ y: y(value), text: price(value), color: inst.colors[k] });
      });
    }
    markDeals(ctx, shown, x, y, top, bottom);

    // last price
    const last = shown[shown.length - 1];
    const color = last.close >= last.open ? COLORS.up : COLORS.down;
    const py = Math.round(y(last.close)) + 0.5;
    ctx.strokeStyle = color;
    ctx.setLineDash([3, 3]);
    ctx.beginPath();
    ctx.moveTo(0, py);
    ctx.lineTo(w - AXIS_PX, py);
    ctx.stroke();
    ctx.setLineDash([]);
    tags(ctx, w, [...latest, { y: py, text: price(last.close), color, fill: "#fff" }]);
  }

  // The account's deals in the shown symbol, at their price on the bar holding their time: a
  // buy points up, a sell down; an entry filled, an exit hollow.
  function markDeals(ctx, shown, x, y, top, bottom) {
    let marked = 0;
    if (shown.length) {
      const span = tfSeconds(state.timeframe);
      const first = shown[0].time;
      const index = new Map(shown.map((b, i) => [b.time, i]));
      for (const d of deals) {
        if (d.symbol !== state.symbol || finite(d.price) == null || finite(d.time_msc) == null) continue;
        const t = Math.floor(d.time_msc / 1000);
        if (t < first) continue;
        const i = index.get(t - (t % span));
        if (i === undefined) continue;
        const py = y(d.price);
        if (py < top || py > bottom) continue;
        const buy = d.type === 0;
        const cx = x(i);
        const size = 5;
        ctx.beginPath();
        ctx.moveTo(cx, py + (buy ? -size : size));
        ctx.lineTo(cx - size, py + (buy ? size : -size));
        ctx.lineTo(cx + size, py + (buy ? size : -size));
        ctx.closePath();
        const color = buy ? COLORS.up : COLORS.down;
        if (d.entry === 0) {
          ctx.fillStyle = color;
          ctx.fill();
        } else {
          ctx.strokeStyle = color;
          ctx.lineWidth = 1.5;
          ctx.stroke();
          ctx.lineWidth = 1;
        }
        marked += 1;
      }
    }
    state.dealMarks = marked;
  }

  const decimalsOf = (inst) => {
    const d = PANE_STYLE[inst.kind]?.decimals ?? 2;
    return d === "price" ? Math.max(places(digits()) + 1, 2) : d;
  };

  // One oscillator instance in its own pane: its outputs as lines (MACD's histogram as bars),
  // guide levels, a fixed range where the kind has one. Returns the points drawn.
  function drawOscillator(inst) {
    const { ctx, w, h } = setup(inst.canvas);
    const { shown, x } = visible(w);
    const style = PANE_STYLE[inst.kind] ?? {};
    const top = 6;
    const bottom = h - 6;
    const d = decimalsOf(inst);
    const values = shown.flatMap((b) => inst.keys.map((key) => finite(indicators.get(b.time)?.[key]))).filter((v) => v != null);
    if (!values.length) {
      emptyText(ctx, w, h, `${inst.name}: waiting for indicator values…`);
      return 0;
    }
    let [lo, hi] = style.range ?? [Math.min(...values, ...(style.levels ?? [])), Math.max(...values, ...(style.levels ?? []))];
    if (!style.range) {
      const padding = (hi - lo) * 0.1 || Math.abs(hi) * 0.1 || 1e-5;
      lo -= padding;
      hi += padding;
    }
    const y = (v) => bottom - ((v - lo) / (hi - lo)) * (bottom - top);
    if (style.range) {
      ctx.textAlign = "left";
      for (const level of style.levels ?? []) {
        const py = Math.round(y(level)) + 0.5;
        ctx.strokeStyle = COLORS.grid;
        ctx.setLineDash([4, 4]);
        ctx.beginPath();
        ctx.moveTo(0, py);
        ctx.lineTo(w - AXIS_PX, py);
        ctx.stroke();
        ctx.setLineDash([]);
        ctx.fillStyle = COLORS.axis;
        ctx.fillText(String(level), w - AXIS_PX + 6, py);
      }
    } else {
      yAxis(ctx, lo, hi, y, w, top, bottom, (v) => v.toFixed(places(d)), 3);
      for (const level of style.levels ?? []) {
        const py = Math.round(y(level)) + 0.5;
        ctx.strokeStyle = COLORS.axis;
        ctx.beginPath();
        ctx.moveTo(0, py);
        ctx.lineTo(w - AXIS_PX, py);
        ctx.stroke();
      }
    }
    let points = 0;
    const latest = [];
    inst.keys.forEach((key, k) => {
      if (style.histogram && key === inst.name + style.histogram) {
        const zero = Math.round(y(Math.min(Math.max(0, lo), hi))) + 0.5;
        const body = Math.max(1, BAR_PX - 3);
        shown.forEach((b, i) => {
          const v = finite(indicators.get(b.time)?.[key]);
          if (v == null) return;
          ctx.fillStyle = v >= 0 ? "rgba(38,166,154,0.6)" : "rgba(239,83,80,0.6)";
          const py = y(v);
          ctx.fillRect(Math.round(x(i)) - body / 2, Math.min(py, zero), body, Math.max(1, Math.abs(zero - py)));
          points += 1;
        });
        return;
      }
      const [value, drawn] = series(ctx, shown, x, y, (ind) => ind?.[key], inst.colors[k]);
      points += drawn;
      if (value != null) latest.push({ y: y(value), text: value.toFixed(places(d)), color: inst.colors[k] });
    });
    tags(ctx, w, latest);
    return points;
  }

  function renderLegends() {
    const last = bars[bars.length - 1];
    const ind = last ? indicators.get(last.time) : null;
    const swatch = (color, label, value) => elem("span", { style: { color } }, `${label} ${value}`);
    const values = (inst, fmt) => inst.keys.map((key, k) => swatch(inst.colors[k], key, fmt(ind?.[key])));
    const overlays = instances.filter((inst) => inst.overlay && isShown(inst));
    $("legend").replaceChildren(...(last
      ? [elem("span", null, elem("b", null, state.symbol), ` · ${state.timeframe}${last.closed === false ? " · forming" : ""}`),
        elem("span", null, `O ${price(last.open)}`), elem("span", null, `H ${price(last.high)}`),
        elem("span", null, `L ${price(last.low)}`),
        elem("span", { className: last.close >= last.open ? "up" : "down" }, `C ${price(last.close)}`),
        elem("span", { className: "muted" }, `vol ${count(last.tick_volume)}`),
        ...overlays.flatMap((inst) => values(inst, (v) => price(v)))]
      : [elem("span", { className: "muted" }, `${state.symbol ?? ""} ${state.timeframe}`)]));
    for (const inst of instances) {
      if (!inst.overlay) inst.legend.replaceChildren(...values(inst, (v) => num(v, decimalsOf(inst))));
    }
  }

  // The configured instances from get_indicators' reply: a switch for each, a pane for each
  // oscillator. Built again only when the set changes (the same set on every selection).
  const isInstance = (i) => isObject(i) && typeof i.name === "string" && typeof i.kind === "string" &&
    Array.isArray(i.keys) && i.keys.length > 0 && i.keys.every((k) => typeof k === "string");
  function setInstances(described) {
    const valid = list(described).filter(isInstance).slice(0, MAX_INSTANCES);
    const signature = JSON.stringify(valid.map((i) => [i.name, i.kind, i.keys]));
    if (signature === JSON.stringify(instances.map((i) => [i.name, i.kind, i.keys]))) return;
    let color = 0;
    instances = valid.map((i) => ({
      name: i.name,
      kind: i.kind,
      keys: [...i.keys],
      overlay: OVERLAY_KINDS.has(i.kind),
      colors: i.keys.map(() => PALETTE[color++ % PALETTE.length]),
    }));
    const panes = [];
    const toggles = instances.map((inst) => {
      const box = elem("input", { type: "checkbox", checked: isShown(inst), dataset: { instance: inst.name } });
      const label = elem("label", { title: `${inst.kind}: ${inst.keys.join(", ")}` }, box, inst.name);
      if (!inst.overlay) {
        inst.legend = elem("div", { className: "legend small" });
        inst.canvas = elem("canvas", { className: "pane pane-oscillator" });
        inst.pane = elem("div", { className: "oscillator", hidden: !isShown(inst), dataset: { instance: inst.name } },
          inst.legend, inst.canvas);
        panes.push(inst.pane);
      }
      box.addEventListener("change", () => showInstance(inst, box.checked));
      return label;
    });
    $("indicator-toggles").replaceChildren(...toggles);
    $("oscillators").replaceChildren(...panes);
    state.instances = instances.map(({ name, kind, keys, overlay }) => ({ name, kind, keys, overlay }));
    state.shownInstances = instances.filter(isShown).map((inst) => inst.name);
    invalidate("chart");
  }

  function showInstance(inst, on) {
    if (on) switchedOff.delete(inst.name);
    else switchedOff.add(inst.name);
    if (inst.pane) inst.pane.hidden = !on;
    state.shownInstances = instances.filter(isShown).map((i) => i.name);
    invalidate("chart");
  }

  // ---------------------------------------------------------------- side panels
  function renderQuote() {
    const t = lastTick;
    if (!t) {
      $("quote").replaceChildren();
      return;
    }
    const point = finite(pointOf[t.symbol]) > 0 ? pointOf[t.symbol] : Math.pow(10, -places(digits()));
    const spread = finite(t.ask) != null && finite(t.bid) != null ? Math.round((t.ask - t.bid) / point) : "—";
    const muted = (label) => elem("span", { className: "muted" }, label);
    $("quote").replaceChildren(muted("bid"), " ", elem("b", null, price(t.bid)), " \u00a0", muted("ask"), " ",
      elem("b", null, price(t.ask)), " \u00a0", muted(`spread ${spread}`));
  }

  // A book level the table can show: [price, volume], both finite numbers.
  const isLevel = (l) => Array.isArray(l) && finite(l[0]) != null && finite(l[1]) != null;

  function renderBook() {
    const el = $("book");
    $("book-symbol").textContent = state.symbol ?? "";
    if (!book) {
      el.replaceChildren(elem("tr", null, elem("td", { className: "muted" }, "waiting…")));
      return;
    }
    const asks = list(book.asks).filter(isLevel).slice(0, 10);
    const bids = list(book.bids).filter(isLevel).slice(0, 10);
    const maxVol = Math.max(1e-9, ...asks.map((l) => l[1]), ...bids.map((l) => l[1]));
    const row = (side, [p, v]) => elem("tr", { className: side }, elem("td", null, price(p)),
      elem("td", null, elem("span", { className: "depth", style: { width: `${Math.round((v / maxVol) * 100)}%` } }), num(v, 2)));
    const spread = asks.length && bids.length ? price(asks[0][0] - bids[0][0]) : "—";
    el.replaceChildren(
      elem("thead", null, elem("tr", null, elem("th", null, "price"), elem("th", null, "volume"))),
      elem("tbody", null, ...asks.slice().reverse().map((l) => row("ask", l)),
        elem("tr", { className: "spread" }, elem("td", { colSpan: 2 }, `spread ${spread}`)),
        ...bids.map((l) => row("bid", l))));
  }

  function renderAccount() {
    const a = account;
    if (!isObject(a)) return;
    const cur = typeof a.currency === "string" ? ` ${a.currency}` : "";
    $("account").replaceChildren(...kvRows([
      ["account", `${finite(a.login) ?? ""} ${text(a.name, "")}`],
      ["server", text(a.server)],
      ["balance", money(a.balance) + cur],
      ["equity", money(a.equity) + cur],
      ["profit", elem("span", { className: a.profit >= 0 ? "up" : "down" }, money(a.profit)), cur],
      ["margin", money(a.margin) + cur],
      ["free margin", money(a.margin_free) + cur],
      ["margin level", finite(a.margin_level) ? `${num(a.margin_level, 1)} %` : "—"],
      ["leverage", finite(a.leverage) ? `1:${a.leverage}` : "—"],
    ]));
  }

  const SIDES = ["buy", "sell", "buy limit", "sell limit", "buy stop", "sell stop", "buy stop limit", "sell stop limit"];
  const side = (type) => (Number.isInteger(type) && type >= 0 && type < SIDES.length ? SIDES[type] : "—");
  const signed = (v) => elem("span", { className: finite(v) != null && v >= 0 ? "up" : "down" }, money(v));
  const table = (id, head, rows, empty) => $(id).replaceChildren(
    elem("thead", null, elem("tr", null, ...head.map((k) => elem("th", null, k)))),
    elem("tbody", null, ...(rows.length ? rows
      : [elem("tr", null, elem("td", { className: "muted", colSpan: head.length }, empty))])));
  const byTicket = (items) => [...items.values()].sort((a, b) => (a.ticket > b.ticket ? 1 : -1));
  const mine = (symbol) => (symbol === state.symbol ? "current" : "");

  function renderActivity() {
    const d = (sym) => digitsOf[sym] ?? 5;
    const open = byTicket(positions);
    $("positions-count").textContent = open.length ? String(open.length) : "";
    // The current price is the quote's; SL and TP show on hovering the row.
    table("positions", ["symbol", "side", "lots", "open", "profit"],
      open.slice(0, MAX_ROWS).map((p) => elem("tr", {
        className: mine(p.symbol),
        title: `SL ${p.sl ? price(p.sl, d(p.symbol)) : "—"} · TP ${p.tp ? price(p.tp, d(p.symbol)) : "—"} · now ${price(p.price_current, d(p.symbol))}`,
      }, elem("td", null, text(p.symbol)), elem("td", null, side(p.type)), elem("td", null, num(p.volume, 2)),
        elem("td", null, price(p.price_open, d(p.symbol))), elem("td", null, signed(p.profit)))), "none");
    const pending = byTicket(orders);
    $("orders-count").textContent = pending.length ? String(pending.length) : "";
    table("orders", ["symbol", "type", "lots", "price"],
      pending.slice(0, MAX_ROWS).map((o) => elem("tr", { className: mine(o.symbol) },
        elem("td", null, text(o.symbol)), elem("td", null, side(o.type)), elem("td", null, num(o.volume_current, 2)),
        elem("td", null, price(o.price_open, d(o.symbol))))), "none");
    table("deals", ["time", "symbol", "", "lots", "price", "profit"],
      deals.slice(0, MAX_ROWS).map((x) => elem("tr", { className: mine(x.symbol) },
        elem("td", null, finite(x.time_msc) != null ? timeLabel(Math.floor(x.time_msc / 1000), true) : "—"),
        elem("td", null, x.symbol ? text(x.symbol) : "balance"),
        elem("td", null, x.symbol ? `${side(x.type)} ${x.entry === 0 ? "in" : "out"}` : ""),
        elem("td", null, x.symbol ? num(x.volume, 2) : ""), elem("td", null, x.symbol ? price(x.price, d(x.symbol)) : ""),
        elem("td", null, x.entry === 0 && x.symbol ? "" : signed(x.profit)))), "none yet");
  }

  // A position or order update: `closed` removes it, anything else replaces it.
  function applyUpdate(items, msg) {
    if (!isObject(msg) || finite(msg.ticket) == null) return;
    if (msg.state === "closed") items.delete(msg.ticket);
    else items.set(msg.ticket, msg);
    state.positions = positions.size;
    state.orders = orders.size;
    invalidate("activity");
  }

  function addDeals(list_) {
    const known = new Set(deals.map((x) => x.ticket));
    const fresh = list(list_).filter((x) => isObject(x) && finite(x.ticket) != null && !known.has(x.ticket));
    deals = [...deals, ...fresh].sort((a, b) => (b.time_msc - a.time_msc) || (b.ticket - a.ticket)).slice(0, MAX_DEALS);
    state.deals = deals.length;
    invalidate("activity", "chart");
  }

  function pill(el, label, status) {
    el.textContent = label;
    el.className = `pill pill-${status === "ok" ? "ok" : status === "down" ? "down" : "degraded"}`;
  }

  function renderHealth() {
    const hl = state.health;
    if (!isObject(hl)) return;
    pill($("service"), `service ${text(hl.status, "?")}`, hl.status);
    const engine = isObject(hl.engine) ? hl.engine : {};
    const figures = isObject(engine.health) ? engine.health : {};
    const stats = isObject(hl.stats) ? hl.stats : {};
    const lat = isObject(stats.tick_to_write_ms) ? stats.tick_to_write_ms : {};
    const workers = Object.entries(isObject(hl.workers) ? hl.workers : {});
    $("health").replaceChildren(...kvRows([
      ["status", elem("span", { className: hl.status === "ok" ? "up" : "down" }, text(hl.status, "?"))],
      ["engine", text(engine.status, "?") + (finite(figures.ticks_per_s) != null ? ` · ${figures.ticks_per_s} ticks/s` : "")],
      ...(workers.length ? workers.map(([name, st]) => [name, text(st, "?")]) : [["workers", "none heard"]]),
      ["clients", count(hl.clients)],
      ["subscriptions", count(hl.subscriptions)],
      ["tick → write", finite(lat.p50) != null ? `p50 ${lat.p50} ms · p99 ${count(lat.p99)} ms` : "—"],
      ["ping", state.pingMs != null ? `${state.pingMs} ms` : "—"],
      ["uptime", finite(hl.uptime) != null ? `${Math.round(hl.uptime)} s` : "—"],
      ["version", text(hl.version)],
    ]));
  }

  function renderSummary() {
    if (!isObject(summary)) return;
    const entries = Object.entries(isObject(summary.symbols) ? summary.symbols : {});
    $("summary").replaceChildren(
      elem("thead", null, elem("tr", null, ...["symbol", "last", "change", "range"].map((k) => elem("th", null, k)))),
      elem("tbody", null, ...entries.map(([sym, raw]) => {
        const s = isObject(raw) ? raw : {};
        const d = digitsOf[sym] ?? 5;
        const up = finite(s.change_pct) != null && s.change_pct >= 0;
        return elem("tr", { className: sym === state.symbol ? "current" : "", dataset: { symbol: sym } },
          elem("td", null, sym), elem("td", null, price(s.last, d)),
          elem("td", { className: up ? "up" : "down" }, `${up ? "+" : ""}${num(s.change_pct, 2)}%`),
          elem("td", { className: "muted" }, `${price(s.low, d)}–${price(s.high, d)}`));
      })));
  }

  // ---------------------------------------------------------------- controls
  function markTimeframe() {
    document.querySelectorAll("#timeframes button").forEach((b) => b.classList.toggle("active", b.dataset.tf === state.timeframe));
  }

  function fillSymbols(infos) {
    const known = infos.filter((s) => isObject(s) && typeof s.name === "string" && s.name);
    state.symbols = known.map((s) => s.name);
    known.forEach((s) => {
      digitsOf[s.name] = places(s.digits);
      pointOf[s.name] = finite(s.point);
    });
    const select = $("symbol");
    select.replaceChildren(...known.map((s) => elem("option", { value: s.name, title: text(s.description, "") }, s.name)));
    if (state.symbol) select.value = state.symbol;
  }

  // ---------------------------------------------------------------- Socket.IO
  if (typeof window.io !== "function") {
    state.clientMissing = true;
    pill($("connection"), "no Socket.IO client", "down");
    const code = (t) => elem("code", null, t);
    showBanner("The Socket.IO browser client is missing: ", code("/static/vendor/socket.io.min.js"), " was not served. ",
      "Install it with ", code("npm ci"), " in ", code("bridge/js"), " (", code("make install"),
      " does this when npm is present), then reload. A package from ", code("pip install ."),
      " carries it only when npm was on PATH where it was built.");
    invalidate("chart");
    return;
  }

  // BRIDGE_TOKEN: asked for when the bridge refuses the connection as unauthorized, then kept in
  // sessionStorage (this tab, until it closes) and sent as auth.token on every (re)connect.
  const tokenStore = {
    get() {
      try {
        return sessionStorage.getItem(TOKEN_KEY);
      } catch {
        return null; // storage disabled: the token lives as long as the page
      }
    },
    set(token) {
      try {
        if (token == null) sessionStorage.removeItem(TOKEN_KEY);
        else sessionStorage.setItem(TOKEN_KEY, token);
      } catch {
        /* storage disabled: kept in memory below */
      }
    },
  };
  let token = tokenStore.get();

  const socket = window.io({
    transports: ["websocket"],
    auth: (send) => send(token ? { token } : {}),
  });
  window.dashboardSocket = socket;

  function askForToken(refused) {
    state.tokenAsked += 1;
    $("token-note").textContent = refused ? "The bridge refused that token; try again." : "";
    $("token-form").hidden = false;
    $("token").focus();
  }

  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("token").value;
    tokenStore.set(token);
    $("token").value = "";
    $("token-form").hidden = true;
    pill($("connection"), "connecting…", "down");
    socket.connect();
  });

  function select(symbol, timeframe) {
    if (!symbol || (symbol === state.symbol && timeframe === state.timeframe)) return;
    const old = { symbol: state.symbol, timeframe: state.timeframe };
    if (old.symbol && socket.connected) {
      // Another symbol: everything of the old one stops. Same symbol: only the old timeframe.
      socket.emit("unsubscribe", old.symbol === symbol ? old : { symbol: old.symbol });
    }
    state.symbol = symbol;
    state.timeframe = timeframe;
    state.generation += 1;
    state.candleEvents = 0;
    state.indicatorEvents = 0;
    state.historyBars = 0;
    state.indicatorHistory = 0;
    bars = [];
    indicators = new Map();
    if (old.symbol !== symbol) {
      book = null;
      lastTick = null;
    }
    state.bars = 0;
    state.lastBar = null;
    state.oldestBar = null;
    state.indicatorPoints = 0;
    state.scrollBars = 0;
    state.olderRequests = 0;
    state.olderBars = 0;
    state.olderDone = false;
    olderTo = null;
    loadingOlder = false;
    emptyWindows = 0;
    $("symbol").value = symbol;
    markTimeframe();
    history.replaceState(null, "", `?symbol=${encodeURIComponent(symbol)}&tf=${encodeURIComponent(timeframe)}`);
    invalidate("chart", "book", "quote", "summary", "activity");
    if (socket.connected) subscribe();
  }

  function subscribe() {
    const { symbol, timeframe, generation } = state;
    socket.emit("subscribe", { symbol, timeframe });
    // The reply also arrives as a `candles` event (merged there); the acknowledgement tells errors.
    socket.emit("get_candles", { symbol, timeframe, count: HISTORY_BARS }, (reply) => {
      if (generation !== state.generation) return;
      if (reply?.code) state.errors.push(reply);
      else state.historyBars = reply?.candles?.length ?? 0;
    });
    // Indicator values over the same history, so the overlays and panes cover it from the start.
    socket.emit("get_indicators", { symbol, timeframe, count: HISTORY_BARS }, (reply) => {
      if (generation !== state.generation) return;
      if (reply?.code) state.errors.push(reply);
      else {
        setInstances(reply?.indicators);
        onIndicatorHistory(reply?.values ?? []);
      }
    });
    socket.emit("get_order_book", { symbol }, (reply) => {
      if (generation === state.generation && reply && !reply.code) onBook(reply);
    });
  }

  function onBook(msg) {
    if (!isObject(msg)) return;
    state.bookEvents += 1;
    if (msg.symbol !== state.symbol) return;
    book = msg;
    invalidate("book");
  }

  function ping() {
    if (!socket.connected) return;
    const sent = performance.now();
    socket.emit("ping", () => {
      state.pingMs = Math.round(performance.now() - sent);
      invalidate("health");
    });
  }

  socket.on("connect", () => {
    state.connected = true;
    $("token-form").hidden = true;
    pill($("connection"), "connected", "ok");
    socket.emit("get_symbols", (infos) => {
      if (!Array.isArray(infos)) {
        state.errors.push(infos);
        return;
      }
      fillSymbols(infos);
      const params = new URLSearchParams(location.search);
      const wanted = params.get("symbol");
      const tf = params.get("tf") || state.timeframe;
      const symbol = state.symbol && state.symbols.includes(state.symbol) ? state.symbol
        : state.symbols.includes(wanted) ? wanted : state.symbols[0];
      if (symbol === state.symbol) subscribe(); // a reconnect: subscribe again, reload history
      else select(symbol, tf);
      invalidate("summary");
      ping();
    });
    socket.emit("get_account_info", (a) => {
      if (a && !a.code) {
        account = a;
        invalidate("account");
      }
    });
    // The activity as it stands; the updates that follow keep it current. A source without
    // activity answers `unavailable`: the tables stay empty.
    socket.emit("get_positions", {}, (reply) => {
      if (!isObject(reply) || reply.code) return;
      positions.clear();
      list(reply.positions).forEach((p) => applyUpdate(positions, p));
    });
    socket.emit("get_orders", {}, (reply) => {
      if (!isObject(reply) || reply.code) return;
      orders.clear();
      list(reply.orders).forEach((o) => applyUpdate(orders, o));
    });
    const now = Math.floor(Date.now() / 1000);
    // The market clock may run hours ahead of UTC (a trade server's): ask a day either side.
    socket.emit("get_deals", { from: now - DEALS_BACK_S, to: now + DEALS_BACK_S }, (reply) => {
      if (isObject(reply) && !reply.code) addDeals(reply.deals);
    });
  });
  socket.on("disconnect", (reason) => {
    state.connected = false;
    pill($("connection"), `disconnected (${reason})`, "down");
  });
  socket.on("connect_error", (err) => {
    const message = text(err?.message, "");
    pill($("connection"), `refused: ${message}`, "down");
    // The bridge's refusal for a missing or wrong BRIDGE_TOKEN (bridge/server.py on_connect);
    // socket.io does not retry a refusal, so the form's submit connects again.
    if (message.startsWith("unauthorized")) {
      const refused = Boolean(token);
      token = null;
      tokenStore.set(null);
      askForToken(refused);
    }
  });

  socket.on("tick", (t) => {
    if (!isObject(t)) return;
    state.ticks[t.symbol] = (state.ticks[t.symbol] || 0) + 1;
    state.ticksTotal += 1;
    if (t.symbol === state.symbol) {
      lastTick = t;
      invalidate("quote");
    }
  });
  socket.on("candles", onCandles);
  socket.on("indicators", onIndicators);
  socket.on("order_book", onBook);
  const onAccount = (a) => {
    state.accountEvents += 1;
    account = a;
    invalidate("account");
  };
  socket.on("account_update", onAccount);
  socket.on("position_update", (p) => {
    state.positionEvents += 1;
    applyUpdate(positions, p);
  });
  socket.on("order_update", (o) => {
    state.orderEvents += 1;
    applyUpdate(orders, o);
  });
  socket.on("deal", (d) => {
    state.dealEvents += 1;
    addDeals([d]);
  });
  socket.on("account_info", onAccount);
  socket.on("market_summary", (s) => {
    state.summaryEvents += 1;
    summary = s;
    invalidate("summary");
  });
  socket.on("health", (h) => {
    state.healthEvents += 1;
    state.health = h;
    invalidate("health");
  });
  socket.on("error", (e) => {
    state.errors.push(e);
    if (state.errors.length > 50) state.errors.shift();
  });

  $("symbol").addEventListener("change", (e) => select(e.target.value, state.timeframe));
  $("timeframes").addEventListener("click", (e) => {
    const tf = e.target?.dataset?.tf;
    if (tf) select(state.symbol, tf);
  });
  $("summary").addEventListener("click", (e) => {
    const row = e.target.closest("tr[data-symbol]");
    if (row && state.symbols.includes(row.dataset.symbol)) select(row.dataset.symbol, state.timeframe);
  });
  window.dashboardSelect = select;
  onDrag($("price"));
  setInterval(ping, PING_EVERY_MS);
  markTimeframe();
  invalidate("chart");
})();
