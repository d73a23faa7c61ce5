// The browser end to end: headless Chromium (Debian's, driven by
// playwright-core) on the better-auth app's page (app.mjs), talking to
// Confab through @confab/client with only the browser's credentials.
// Run by tests/e2e/browser.rs, which starts the app and Confab and passes:
//   APP_URL, GATEWAYS (JSON array of gateway URLs), CONFAB_API,
//   CONFAB_SERVICE_TOKEN, AUTH_MODE ("cookie" or "jwt"), ARTIFACTS (a
//   directory for the failure screenshots), LABEL.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

import { chromium } from "playwright-core";
import { startProxy } from "./proxy.mjs";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (run through tests/e2e/browser.rs)`);
  return v;
};
const APP = env("APP_URL");
const GATEWAYS = JSON.parse(env("GATEWAYS"));
const API = env("CONFAB_API");
const SVC = env("CONFAB_SERVICE_TOKEN");
const MODE = env("AUTH_MODE");
const ARTIFACTS = env("ARTIFACTS");
const LABEL = process.env.LABEL ?? "browser";
const T = 20_000;
const ROOM = "channel:general";

const step = (what) => console.log(`[${LABEL}] ${what}`);

async function command(actor, cmd) {
  const res = await fetch(`${API}/v1/commands`, {
    method: "POST",
    headers: { authorization: `Bearer ${SVC}`, "content-type": "application/json" },
    body: JSON.stringify(actor ? { actor, command: cmd } : { command: cmd }),
  });
  assert.equal(res.status, 200, `${JSON.stringify(cmd)} -> ${res.status} ${await res.text()}`);
}

/** Waits until the page's log has an entry matching `pred`; returns it. */
async function logged(page, what, pred, from = 0) {
  const end = Date.now() + T;
  for (;;) {
    const log = await page.evaluate(() => window.t.log);
    const hit = log.slice(from).find(pred);
    if (hit) return hit;
    if (Date.now() > end) {
      throw new Error(`${what}: not seen within ${T} ms; the page logged ${JSON.stringify(log)}`);
    }
    await page.waitForTimeout(50);
  }
}

const logLength = (page) => page.evaluate(() => window.t.log.length);

// playwright-core starts Chromium with a new empty profile (its own temp
// --user-data-dir) and removes it afterwards.
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const pages = {};
const proxy = await startProxy(GATEWAYS[0]);
let failed = false;
try {
  for (const who of ["alice", "bob"]) {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.on("pageerror", (e) => console.log(`[${LABEL}] ${who} page error: ${e.message}`));
    await page.goto(APP);
    await page.waitForFunction(() => window.t !== undefined);
    pages[who] = page;
  }
  const { alice, bob } = pages;

  step("sign up, sign out, sign in (better-auth, email and password)");
  const ids = {};
  for (const [who, page] of Object.entries(pages)) {
    const email = `${who}-${Date.now()}@example.com`;
    ids[who] = await page.evaluate(([e]) => window.t.signUp(e, "correct horse battery", "x"), [email]);
    await page.evaluate(() => window.t.signOut());
    assert.equal(await page.evaluate(([e]) => window.t.signIn(e, "correct horse battery"), [email]), ids[who]);
  }
  if (MODE === "cookie") {
    const cookies = await alice.context().cookies();
    assert.ok(
      cookies.some((c) => c.name === "better-auth.session_token" && c.httpOnly),
      `the session cookie is set: ${JSON.stringify(cookies.map((c) => c.name))}`,
    );
  }

  step("workspace and channel for both users (membership API)");
  await command(null, { type: "create_workspace", id: "w1", name: "Acme", owner: ids.alice });
  await command(ids.alice, { type: "create_channel", channel: "general", workspace: "w1", name: "general", visibility: "public" });
  await command(ids.alice, { type: "add_workspace_member", workspace: "w1", user: ids.bob, role: "member" });
  await command(ids.bob, { type: "join_channel", channel: "general" });

  step(`connect through @confab/client (${MODE}): polling first, then the upgrade`);
  await alice.evaluate(([url, mode]) => window.t.mount(url, mode), [proxy.url, MODE]);
  const bobGateway = GATEWAYS[GATEWAYS.length - 1];
  await bob.evaluate(([url, mode]) => window.t.mount(url, mode), [bobGateway, MODE]);
  for (const page of [alice, bob]) {
    const open = await logged(page, "engine open", (e) => e.type === "open");
    assert.equal(open.transport, "polling", "the client polls first");
    const connected = await logged(page, "connect", (e) => e.type === "connect" || e.type === "connect_error");
    assert.equal(connected.type, "connect", `connected: ${JSON.stringify(connected)}`);
    const upgrade = await logged(page, "upgrade", (e) => e.type === "upgrade");
    assert.equal(upgrade.transport, "websocket");
    assert.equal((await page.evaluate(() => window.t.state())).transport, "websocket");
  }

  step("message:new from another user");
  let ack = await bob.evaluate(([room]) => window.t.send(room, "hello alice"), [ROOM]);
  assert.ok(ack.id, `bob's send: ${JSON.stringify(ack)}`);
  const got = await logged(alice, "bob's message", (e) => e.type === "message:new" && e.id === ack.id);
  assert.equal(got.authorId, ids.bob);
  assert.equal(got.body, "hello alice");

  step("alice loses her connection; bob writes meanwhile; alice recovers" + (GATEWAYS.length > 1 ? " on the other gateway" : ""));
  const before = await alice.evaluate(() => window.t.state());
  let mark = await logLength(alice);
  proxy.cut();
  await logged(alice, "disconnect", (e) => e.type === "disconnect", mark);
  ack = await bob.evaluate(([room]) => window.t.send(room, "while you were away"), [ROOM]);
  assert.ok(ack.id, `bob's send: ${JSON.stringify(ack)}`);
  proxy.restore(GATEWAYS[GATEWAYS.length - 1]);
  const back = await logged(alice, "reconnect", (e) => e.type === "connect" || e.type === "recovery:failed", mark);
  assert.deepEqual(back.type, "connect", JSON.stringify(back));
  assert.equal(back.recovered, true, "socket.recovered");
  assert.equal(back.id, before.id, "the same socket id");
  const missed = await logged(alice, "the missed message", (e) => e.type === "message:new" && e.id === ack.id, mark);
  assert.equal(missed.body, "while you were away");
  await alice.waitForTimeout(300);
  const log = await alice.evaluate(() => window.t.log);
  assert.equal(log.filter((e) => e.type === "message:new" && e.id === ack.id).length, 1, "delivered once");
  assert.ok(!log.some((e) => e.type === "recovery:failed"), "no recovery:failed");

  step("useSocket disconnects on unmount");
  mark = await logLength(alice);
  await alice.evaluate(() => window.t.unmount());
  assert.equal((await alice.evaluate(() => window.t.state())).connected, false);

  step("signed out, reconnecting is refused");
  const sessionCookies = (await alice.context().cookies()).filter((c) => c.name.includes("session_token"));
  await alice.evaluate(() => window.t.signOut());
  await alice.evaluate(([url, mode]) => window.t.mount(url, mode), [proxy.url, MODE]);
  const refused = await logged(alice, "refusal", (e) => e.type === "connect_error" || e.type === "connect", mark);
  assert.equal(refused.type, "connect_error", `after sign-out: ${JSON.stringify(refused)}`);
  await alice.waitForTimeout(500);
  assert.equal((await alice.evaluate(() => window.t.state())).connected, false);
  console.log(`[${LABEL}] refusal after sign-out: ${refused.message} ${JSON.stringify(refused.data)}`);

  if (MODE === "cookie") {
    step("the signed-out session's old cookie is refused too (after the gateway's cache TTL)");
    await alice.evaluate(() => window.t.unmount());
    await alice.context().addCookies(sessionCookies);
    // The gateway trusted the session for auth.session.cache_ttl (1 s
    // here): a revoked session is refused once that has passed.
    await alice.waitForTimeout(1500);
    mark = await logLength(alice);
    await alice.evaluate(([url, mode]) => window.t.mount(url, mode), [proxy.url, MODE]);
    const revoked = await logged(alice, "refusal", (e) => e.type === "connect_error" || e.type === "connect", mark);
    assert.equal(revoked.type, "connect_error", `with the revoked cookie: ${JSON.stringify(revoked)}`);
    assert.equal(revoked.data?.code, "session_invalid", JSON.stringify(revoked));
  }
  step("ok");
} catch (e) {
  failed = true;
  mkdirSync(ARTIFACTS, { recursive: true });
  for (const [who, page] of Object.entries(pages)) {
    const path = join(ARTIFACTS, `${LABEL}-${who}-failure.png`);
    try {
      await page.screenshot({ path, fullPage: true });
      console.log(`[${LABEL}] screenshot of ${who}'s page: ${path}`);
    } catch (err) {
      console.log(`[${LABEL}] no screenshot of ${who}'s page: ${err.message}`);
    }
  }
  console.error(e);
} finally {
  proxy.close();
  await browser.close();
}
process.exit(failed ? 1 : 0);
