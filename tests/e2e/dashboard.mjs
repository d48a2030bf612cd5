// Drive the admin dashboard in a real headless Chromium (Debian's `chromium`, through
// playwright-core) while the official TypeScript SDK client calls through the gateway; print what
// the page showed as one JSON object.
//
//   node dashboard.mjs <admin base> <token> <MCP route URL> <screenshot.png>
import { chromium } from "playwright-core";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [adminBase, token, routeUrl, screenshot] = process.argv.slice(2);
const out = { console_errors: [] };
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // Root in a container has no user namespace for Chromium's sandbox.
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on("console", (m) => { if (m.type() === "error") out.console_errors.push(m.text()); });
  page.on("pageerror", (e) => out.console_errors.push(String(e)));

  // A wrong token: the page asks for one again and says why.
  await page.goto(`${adminBase}/#token=not-the-token-at-all`);
  await page.waitForSelector("#login:not([hidden])", { timeout: 20000 });
  out.wrong_token_message = await page.textContent("#login-error");

  // The right one, typed into the form.
  await page.fill("#token", token);
  await page.click("#login button");
  await page.waitForSelector("tr[data-route]", { timeout: 20000 });
  out.url_after_login = page.url();
  // From here on nothing should fail (the wrong token's 401 above was expected).
  out.console_errors = [];
  out.routes = await page.$$eval("tr[data-route]", (rows) => rows.map((r) => r.dataset.route));
  const requests = () => page.$eval('tr[data-route="demo"] td.requests', (td) => Number(td.textContent));
  out.requests_before = await requests();

  // SDK traffic: a session, a list, three calls, one tool whose name is markup.
  const client = new Client({ name: "dashboard-e2e", version: "1.0.0" });
  await client.connect(new StreamableHTTPClientTransport(new URL(routeUrl)));
  await client.listTools();
  for (let i = 0; i < 3; i++) await client.callTool({ name: "echo", arguments: { text: `dash ${i}` } });
  try {
    await client.callTool({ name: '<img src=x onerror="window.pwned=1">', arguments: {} });
  } catch { /* the upstream refuses an unknown tool */ }
  await client.close();

  // The numbers move on their own (the page streams snapshots).
  await page.waitForFunction(
    (before) => Number(document.querySelector('tr[data-route="demo"] td.requests').textContent) >= before + 5,
    out.requests_before,
    { timeout: 20000 },
  );
  out.requests_after = await requests();
  await page.waitForFunction(
    () => [...document.querySelectorAll("#decisions td")].some((td) => td.textContent.includes("<img")),
    null,
    { timeout: 20000 },
  );
  out.decisions = await page.$$eval("#decisions tbody tr", (rows) => rows.length);
  out.markup_shown_as_text = await page.$$eval("#decisions td", (tds) => tds.some((td) => td.textContent.includes('<img src=x onerror="window.pwned=1">')));
  out.markup_became_elements = await page.$$eval("#decisions img", (imgs) => imgs.length);
  out.pwned = await page.evaluate(() => window.pwned === 1);
  out.health = await page.textContent('tr[data-route="demo"] td.health');
  out.snapshots = await page.evaluate(() => Number(document.body.dataset.snapshots));

  // The reload button: a reload through the API, shown on the page.
  await page.click("#reload");
  await page.waitForFunction(() => document.querySelector("#reload-status").textContent.includes("applied"), null, { timeout: 20000 });
  out.reload_status = await page.textContent("#reload-status");
  out.generation = await page.textContent("#generation");
  await page.screenshot({ path: screenshot, fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
