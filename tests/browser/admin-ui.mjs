// The official Socket.IO Admin UI (@socket.io/admin-ui's prebuilt pages,
// served by tools/admin-ui/serve.mjs) in headless Chromium against two
// Confab gateways. Run by tests/e2e/admin_ui.rs, which starts the cluster
// and passes:
//   GATEWAYS   JSON [actions gateway URL, read-only gateway URL]
//   TOKEN      a token of alice, a member of channel:general
//   ADMIN_USER, ADMIN_PASSWORD   the operator's credentials
//   ARTIFACTS  a directory for failure screenshots
//   SCREENSHOT where to save the UI's screenshot (docs/admin-ui.png)
//
// A real socket.io-client socket of alice connects to the read-only
// gateway. The UI logs in on the read-only gateway: a wrong password is
// refused; it lists both gateways, alice's socket and its rooms; it offers
// no action, and an action sent anyway is refused. Then it logs in on the
// other gateway (mode "actions") and disconnects alice's socket, which
// lives on the read-only gateway: the action travels over NATS.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const { io } = createRequire(join(ROOT, "tests", "js", "package.json"))("socket.io-client");
const { startAdminUi } = await import(join(ROOT, "tools", "admin-ui", "serve.mjs"));

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (run through tests/e2e/admin_ui.rs)`);
  return v;
};
const [GW_ACTIONS, GW_READONLY] = JSON.parse(env("GATEWAYS"));
const TOKEN = env("TOKEN");
const USER = env("ADMIN_USER");
const PASSWORD = env("ADMIN_PASSWORD");
const ARTIFACTS = env("ARTIFACTS");
const SCREENSHOT = env("SCREENSHOT");
const T = 20_000;
const ROOM = "channel:general";

const step = (what) => console.log(`[admin-ui] ${what}`);

async function gatewayId(url) {
  const res = await fetch(`${url}/readyz`);
  return (await res.json()).gateway;
}

function connected(socket) {
  return new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", reject);
  });
}

const ids = { actions: await gatewayId(GW_ACTIONS), readonly: await gatewayId(GW_READONLY) };
step(`gateways ${JSON.stringify(ids)}`);

const alice = io(GW_READONLY, { auth: { token: TOKEN }, transports: ["websocket"], reconnection: false });
await connected(alice);
const sid = alice.id;
const aliceGone = new Promise((resolve) => alice.once("disconnect", resolve));
step(`alice connected to the read-only gateway, sid ${sid}`);

const ui = await startAdminUi({});
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox"],
});
let page;
try {
  /** A fresh page (own localStorage) logged in on `server`. */
  async function login(server, password = PASSWORD) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const p = await context.newPage();
    // Nothing leaves the machine (the page names public CDNs only for fonts).
    await p.route(/^https?:\/\/(?!127\.0\.0\.1)/, (route) => route.abort());
    await p.goto(`${ui.url}/`);
    await p.getByLabel("Server URL").fill(server);
    await p.getByLabel("Username").fill(USER);
    await p.getByLabel("Password").fill(password);
    await p.getByRole("button", { name: "Connect" }).click();
    return p;
  }

  step("a wrong password is refused");
  page = await login(GW_READONLY, "not-the-password");
  await page.getByText("Invalid credentials").waitFor({ timeout: T });
  await page.context().close();

  step("log in on the read-only gateway");
  page = await login(GW_READONLY);
  await page.getByRole("dialog").waitFor({ state: "hidden", timeout: T });

  step("both gateways are listed");
  await page.goto(`${ui.url}/#/servers/`);
  for (const id of [ids.actions, ids.readonly]) {
    await page.getByRole("cell", { name: id, exact: true }).waitFor({ timeout: T });
  }

  step("alice's socket and its rooms are listed");
  await page.goto(`${ui.url}/#/sockets/`);
  await page.getByRole("cell", { name: sid, exact: true }).waitFor({ timeout: T });
  await page.getByRole("cell", { name: sid, exact: true }).click();
  await page.getByText(ROOM, { exact: true }).waitFor({ timeout: T });
  await page.getByText("user:alice", { exact: true }).waitFor({ timeout: T });
  await page.getByText(ids.readonly).first().waitFor({ timeout: T });
  await page.screenshot({ path: SCREENSHOT, fullPage: false });
  step(`screenshot saved to ${SCREENSHOT}`);

  step("read-only: the UI offers no disconnect, and one sent anyway is refused");
  assert.equal(await page.locator("button:has(.mdi-logout)").count(), 0, "no disconnect button");
  const operator = io(`${GW_READONLY}/admin`, {
    auth: { username: USER, password: PASSWORD },
    transports: ["websocket"],
    reconnection: false,
  });
  await connected(operator);
  const refused = await operator.timeout(T).emitWithAck("_disconnect", "/", false, sid);
  assert.equal(refused?.error?.code, "forbidden", `refused: ${JSON.stringify(refused)}`);
  operator.disconnect();
  await new Promise((r) => setTimeout(r, 1500));
  assert.ok(alice.connected, "alice is still connected after the refused action");
  await page.context().close();

  step("log in on the actions gateway; disconnect alice's socket (on the other gateway)");
  page = await login(GW_ACTIONS);
  await page.getByRole("dialog").waitFor({ state: "hidden", timeout: T });
  await page.goto(`${ui.url}/#/sockets/`);
  await page.getByRole("cell", { name: sid, exact: true }).click({ timeout: T });
  await page.getByText(ROOM, { exact: true }).waitFor({ timeout: T });
  // The socket's own button (the client's closes the whole connection).
  const buttons = page.locator("button:has(.mdi-logout)");
  await buttons.nth(1).waitFor({ timeout: T });
  await buttons.nth(1).click();
  const reason = await Promise.race([
    aliceGone,
    new Promise((_, reject) => setTimeout(() => reject(new Error("alice not disconnected")), T)),
  ]);
  assert.equal(reason, "io server disconnect");
  step("alice got 'io server disconnect'");

  step("the UI sees the socket gone");
  await page.goto(`${ui.url}/#/sockets/`);
  await page.getByRole("cell", { name: sid, exact: true }).waitFor({ state: "detached", timeout: T });
  step("ok");
} catch (e) {
  if (page) {
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, "admin-ui-failure.png") }).catch(() => {});
  }
  throw e;
} finally {
  alice.close();
  await browser.close();
  await ui.close();
}
