// Screenshots of every page for the README (docs/screenshots/), from two real nodes with a
// little data: `npm run screenshots` (VOLLI_BIN and CHROMIUM as for the browser tests).
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";
import { BIN, call, Nodes } from "../clients/typescript/tests/nodes.mjs";

const OUT = resolve("../docs/screenshots");
const nodes = new Nodes("volli-shots-");
const root = nodes.root;

async function start(name) {
  const node = await nodes.start(name, { env: { VOLLI_DEVICE_NAME: name } });
  return { ...node, call: async (method, path, body) => (await call(node, method, path, body)).body };
}

try {
  const [alice, bob] = await Promise.all([start("alice"), start("bob")]);
  const invite = await alice.call("POST", "/v1/invites", {});
  await bob.call("POST", "/v1/contacts", { invite: invite.link, name: "Alice" });
  const bobId = (await bob.call("GET", "/v1/node")).user_id;
  for (let i = 0; i < 50 && !(await alice.call("GET", "/v1/contacts")).contacts.length; i++) await new Promise((r) => setTimeout(r, 100));
  await alice.call("PUT", `/v1/settings/ui.theme`, { value: "dark" });
  await bob.call("POST", "/v1/messages", { to: (await alice.call("GET", "/v1/node")).user_id, body: "Hi Alice! Dinner on Friday?" });
  await new Promise((r) => setTimeout(r, 500));
  await alice.call("POST", "/v1/messages", { to: bobId, body: "Yes! 7 pm at the usual place." });
  const file = join(root, "holiday-photos.zip");
  writeFileSync(file, Buffer.alloc(24 << 20, 1));
  await alice.call("POST", "/v1/transfers", { to: bobId, path: file });
  await new Promise((r) => setTimeout(r, 1000));

  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: ["--no-sandbox"] });
  const page = await browser.newPage({ viewport: { width: 1200, height: 760 } });
  const login = execFileSync(BIN, ["admin", "--data-dir", alice.dir], { encoding: "utf8" }).trim();
  await page.goto(login);
  await page.getByTestId("live").filter({ hasText: "live" }).waitFor();
  mkdirSync(OUT, { recursive: true });
  const shots = {
    overview: "#/overview",
    contacts: "#/contacts",
    conversations: `#/conversations/${encodeURIComponent(bobId)}`,
    peers: "#/peers",
    plugins: "#/plugins",
    devices: "#/devices",
    transfers: "#/transfers",
    settings: "#/settings",
  };
  for (const [name, hash] of Object.entries(shots)) {
    await page.goto(`${alice.url}/admin${hash}`);
    await page.waitForLoadState("networkidle");
    if (name === "contacts") await page.getByRole("button", { name: "Create invite" }).click();
    if (name === "devices") await page.getByRole("button", { name: "Create pairing code" }).click();
    await page.waitForTimeout(400);
    await page.screenshot({ path: join(OUT, `${name}.png`) });
  }
  await page.setViewportSize({ width: 390, height: 760 });
  await page.goto(`${alice.url}/admin#/conversations/${encodeURIComponent(bobId)}`);
  await page.waitForTimeout(600);
  await page.screenshot({ path: join(OUT, "phone.png") });
  await browser.close();
  console.log(`screenshots in ${OUT}`);
} finally {
  await nodes.stopAll();
}
