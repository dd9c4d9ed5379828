// With BRIDGE_TOKEN set, the dashboard asks for the token once and keeps it for the tab session.
// Usage: node token.mjs BRIDGE_URL CHROMIUM TOKEN
// Refused without a token: the form shows. A wrong token: refused again, the form says so. The
// right one: connected, kept in sessionStorage; a reload connects without asking; another tab
// (its own sessionStorage) asks again. Prints one JSON object; tests/test_dashboard.py asserts.
import { helpers, run } from "./harness.mjs";

const [url, executablePath, token] = process.argv.slice(2);

// What the page shows about its connection and the token.
const look = (page) => page.evaluate(() => ({
  connected: window.dashboardState.connected,
  tokenAsked: window.dashboardState.tokenAsked,
  symbols: window.dashboardState.symbols.length,
  formShown: !document.getElementById("token-form").hidden,
  note: document.getElementById("token-note").textContent,
  connection: document.getElementById("connection").textContent,
  stored: sessionStorage.getItem("mt5-bridge-token"),
}));

const connected = () => window.dashboardState.connected && window.dashboardState.symbols.length > 0;

async function submit(page, value) {
  await page.fill("#token", value);
  await page.click("#token-form button[type=submit]");
}

await run(executablePath, async ({ page, newPage, result, waitFor }) => {
  await page.goto(url, { waitUntil: "load" });
  await waitFor("the token form", () => window.dashboardState.tokenAsked === 1);
  result.steps.asked = await look(page);

  await submit(page, `${token}-wrong`);
  await waitFor("the wrong token refused", () => window.dashboardState.tokenAsked === 2);
  result.steps.wrong = await look(page);

  await submit(page, token);
  await waitFor("connected with the token", connected);
  result.steps.accepted = await look(page);

  await page.reload({ waitUntil: "load" });
  await waitFor("connected again after a reload", connected);
  result.steps.reloaded = await look(page);

  const other = await newPage();
  await other.goto(url, { waitUntil: "load" });
  await helpers(other).waitFor("the token form in another tab", () => window.dashboardState.tokenAsked === 1);
  result.steps.otherTab = await look(other);
});
