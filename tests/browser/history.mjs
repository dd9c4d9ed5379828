// Drags the dashboard's price chart back through history in headless Chromium (playwright-core):
// at the chart's left edge the page asks get_candles for the bars before the oldest it holds.
// Usage: node history.mjs BRIDGE_URL [CHROMIUM]
// Prints one JSON object (what the page saw before and after dragging); exits 1 on failure.
// tests/test_dashboard_history.py runs it against a real engine and bridge, and asserts.
import { run } from "./harness.mjs";

const [url, executablePath = "/usr/bin/chromium"] = process.argv.slice(2);

await run(executablePath, async ({ page, result, state, drawn, waitFor }) => {
  await page.goto(`${url}?symbol=EURUSD&tf=M1`, { waitUntil: "load" });
  await waitFor("the history candles", () => window.dashboardState.historyBars > 0 && window.dashboardState.bars > 1);
  await drawn();
  result.steps.loaded = await state();
  const box = await page.locator("#price").boundingBox();
  const y = box.y + box.height / 2;
  // Each drag moves the chart 600 px (about 66 bars) to the right, towards older bars.
  for (let k = 0; k < 6; k += 1) {
    await page.mouse.move(box.x + 100, y);
    await page.mouse.down();
    await page.mouse.move(box.x + 700, y, { steps: 12 });
    await page.mouse.up();
    await drawn();
  }
  await waitFor("older bars", () => window.dashboardState.olderBars >= 400);
  await drawn();
  result.steps.dragged = await state();
});
