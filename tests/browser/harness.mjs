// What every dashboard browser script shares: Debian's headless Chromium through playwright-core
// (no downloaded browser), a page that records what went wrong, and waits on window.dashboardState.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const FLAGS = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync",
];

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Runs `scenario(session)` in a fresh profile and prints one JSON object on stdout: `result`
// (the scenario fills result.steps) with console lines, page errors, dialogs and CSP violations;
// on failure it carries `error` and the exit code is 1.
export async function run(executablePath, scenario) {
  const result = { steps: {}, console: [], pageErrors: [], dialogs: [], cspViolations: [] };
  const profile = mkdtempSync(join(tmpdir(), "dashboard-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath, headless: true, args: FLAGS, viewport: { width: 1360, height: 900 }, timeout: 30000,
  });
  // Every page of the context reports a Content-Security-Policy violation, which only data
  // parsed as markup (or a regression of the page itself) can cause.
  await context.addInitScript(() => {
    document.addEventListener("securitypolicyviolation",
      (e) => console.error(`csp-violation: ${e.violatedDirective} ${e.blockedURI} ${e.sample}`));
  });
  const watch = (page) => {
    page.on("console", (msg) => {
      const line = `${msg.type()}: ${msg.text()}`;
      result.console.push(line);
      if (line.includes("csp-violation:")) result.cspViolations.push(line);
    });
    page.on("pageerror", (err) => result.pageErrors.push(String(err)));
    page.on("dialog", (dialog) => {
      result.dialogs.push(`${dialog.type()}: ${dialog.message()}`);
      dialog.dismiss().catch(() => {});
    });
    return page;
  };
  const newPage = async () => watch(await context.newPage());
  try {
    const page = watch(context.pages()[0] ?? (await context.newPage()));
    await scenario({ page, newPage, result, ...helpers(page) });
    console.log(JSON.stringify(result));
  } catch (err) {
    console.log(JSON.stringify({ ...result, error: String(err?.message ?? err) }));
    process.exitCode = 1;
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

// Reading a page: its dashboardState, a drawn frame, and a bounded wait for a condition on it.
export function helpers(page) {
  const state = () => page.evaluate(() => JSON.parse(JSON.stringify(window.dashboardState)));
  // Two animation frames: the page has drawn what it had (it renders at most once a frame).
  const drawn = () => page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  const waitFor = async (what, fn, arg, timeout = 15000) => {
    try {
      await page.waitForFunction(fn, arg, { timeout, polling: 100 });
    } catch (err) {
      throw new Error(`timed out waiting for ${what}; state: ${JSON.stringify(await state())}`);
    }
  };
  return { state, drawn, waitFor };
}
