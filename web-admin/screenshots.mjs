// Screenshots of every page for the README (docs/screenshots/), from two real nodes with a
// little data: `npm run screenshots` (VOLLI_BIN and CHROMIUM as for the browser tests).
import { spawn, execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

const BIN = resolve(process.env.VOLLI_BIN ?? "../target/debug/volli");
const OUT = resolve("../docs/screenshots");
const root = mkdtempSync(join(tmpdir(), "volli-shots-"));
const children = [];

async function start(name) {
  const dir = join(root, name);
  writeFileSync(`${dir}.toml`, "[network]\nlan = false\n");
  const child = spawn(BIN, ["serve", "--config", `${dir}.toml`, "--data-dir", dir, "--api-listen", "127.0.0.1:0", "--p2p-listen", "/ip4/127.0.0.1/tcp/0"], {
    stdio: "ignore",
    env: { ...process.env, VOLLI_DEVICE_NAME: name },
  });
  children.push(child);
  while (!existsSync(join(dir, "api.url"))) await new Promise((r) => setTimeout(r, 100));
  const url = readFileSync(join(dir, "api.url"), "utf8").trim();
  const token = readFileSync(join(dir, "admin.token"), "utf8").trim();
  const call = async (method, path, body) => {
    const r = await fetch(url + path, { method, headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" }, body: body && JSON.stringify(body) });
    const t = await r.text();
    return t ? JSON.parse(t) : null;
  };
  return { dir, url, call };
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
  children.forEach((c) => c.kill("SIGTERM"));
  rmSync(root, { recursive: true, force: true });
}
