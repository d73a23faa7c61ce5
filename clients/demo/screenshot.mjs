// `just demo-screenshot`: runs the demo, lets alice and bob talk in two
// frames of one headless Chromium (Debian's; see the README), and saves
// docs/demo.png.
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";
import { start } from "./serve.mjs";

const out = process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), "..", "..", "docs", "demo.png");
const demo = await start({ port: 0 });
// playwright-core starts Chromium with a new empty profile (its own temp
// --user-data-dir) and removes it afterwards.
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 640 } });
  await page.goto(`${demo.url}/split.html`);
  const frame = (name) => page.frame({ name });
  const connected = (f) => f.waitForFunction(() => document.getElementById("status").textContent === "connected");
  await connected(frame("alice"));
  await connected(frame("bob"));
  const say = async (who, text) => {
    await frame(who).fill("#text", text);
    await frame(who).press("#text", "Enter");
  };
  const shown = (who, text) =>
    frame(who).waitForFunction((t) => document.getElementById("messages").textContent.includes(t), text);
  await say("alice", "Hi bob! Confab is up.");
  await shown("bob", "Confab is up");
  await say("bob", "Hi alice, I see you online.");
  await shown("alice", "I see you online");
  // History on load: bob's tab reloads and gets the conversation back.
  await frame("bob").goto(`${demo.url}/?user=bob`);
  await connected(frame("bob"));
  await shown("bob", "I see you online");
  await say("bob", "Reloaded: history came back.");
  await shown("alice", "history came back");
  // alice types: bob sees it.
  await frame("alice").type("#text", "Typing shows up on the oth", { delay: 20 });
  await frame("bob").waitForFunction(() => document.getElementById("typing").textContent.includes("alice is typing"));
  await frame("alice").waitForFunction(() => document.querySelectorAll(".dot.online").length >= 2);
  await page.screenshot({ path: out });
  console.log(`screenshot: ${out}`);
} finally {
  await browser.close();
  demo.stop();
}
