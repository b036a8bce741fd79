// Screenshots of every screen of the app at phone (390×844) and desktop (1280×800) sizes for
// the README (docs/screenshots/), from three real nodes with a little data:
// `npm run screenshots` (VOLLI_BIN, CHROMIUM and VOLLI_WEB_DIR as for the browser tests).
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";
import { BIN, call, Nodes } from "../clients/typescript/tests/nodes.mjs";

const OUT = resolve("../docs/screenshots");
const nodes = new Nodes("volli-shots-");
const wait = (ms) => new Promise((r) => setTimeout(r, ms));
const api = async (node, method, path, body) => (await call(node, method, path, body)).body;

try {
  const [alice, bob, carol] = await Promise.all(["Alice", "Bob", "Carol"].map((n) => nodes.start(n.toLowerCase(), { env: { VOLLI_DEVICE_NAME: n } })));
  const [A, B, C] = await Promise.all([alice, bob, carol].map(async (n) => (await api(n, "GET", "/v1/node")).user_id));
  for (const [who, name] of [[bob, "Alice"], [carol, "Alice"]]) {
    const invite = await api(alice, "POST", "/v1/invites", {});
    await api(who, "POST", "/v1/contacts", { invite: invite.link, name });
  }
  for (let i = 0; i < 100 && (await api(alice, "GET", "/v1/contacts")).contacts.length < 2; i++) await wait(100);
  // Names as people set them (the machines' names otherwise).
  await Promise.all([[alice, "Alice Martin"], [bob, "Bob Ito"], [carol, "Carol Diaz"]].map(([n, name]) => api(n, "PUT", "/v1/profile", { name })));
  const say = async (from, to, body, extra = {}) => {
    const sent = await api(from, "POST", "/v1/messages", { to, body, ...extra });
    await wait(60);
    return sent.id;
  };
  const dinner = await say(bob, A, "Hi Alice! Dinner on Friday?");
  const seven = await say(alice, B, "Yes! 7 pm at the usual place.", { reply_to: dinner });
  const wine = await say(alice, B, "I'll bring the wine 🍷");
  await say(bob, A, "Perfect. Here is the menu: https://example.org/menu");
  // A reaction, an edit and a read mark: what the thread shows of them.
  for (let i = 0; i < 100 && (await call(bob, "GET", `/v1/messages/${wine}`)).status !== 200; i++) await wait(100);
  await api(bob, "POST", `/v1/messages/${seven}/reactions`, { emoji: "👍" });
  await api(alice, "PATCH", `/v1/messages/${wine}`, { body: "I'll bring the wine and dessert 🍷" });
  const last = await say(bob, A, "See you then!");
  await api(bob, "POST", "/v1/messages/read", { with: A, up_to: wine });
  await wait(300);
  await api(alice, "POST", "/v1/messages/read", { with: B, up_to: last });
  const group = await api(alice, "POST", "/v1/groups", { name: "Book club", members: [B, C] });
  for (let i = 0; i < 100 && (await call(carol, "GET", `/v1/groups/${group.id}`)).status !== 200; i++) await wait(100);
  await wait(500);
  await api(bob, "POST", "/v1/messages", { group: group.id, body: "Who picks the next book?" });
  await wait(100);
  await api(carol, "POST", "/v1/messages", { group: group.id, body: "Me! Something short this time." });
  await wait(100);
  await api(alice, "POST", "/v1/messages", { group: group.id, body: "Sounds good — see you Thursday." });
  await wait(100);
  await api(alice, "PATCH", `/v1/groups/${group.id}`, { disappearing_secs: 604800 });
  const photo = join(nodes.root, "sunset.png");
  writeFileSync(photo, readFileSync("static/icon-512.png"));
  const offer = await api(bob, "POST", "/v1/transfers", { to: A, path: photo });
  for (let i = 0; i < 100 && !(await api(alice, "GET", "/v1/transfers")).transfers.length; i++) await wait(100);
  await api(alice, "POST", `/v1/transfers/${offer.id}/accept`);
  await wait(1500);
  await say(carol, A, "Are you coming to the book club?");
  // Alice's backup, held by Bob's and Carol's nodes.
  await api(alice, "POST", "/v1/backup/setup", {});
  for (let i = 0; i < 600 && (await api(alice, "GET", "/v1/backup")).state !== "ok"; i++) await wait(100);

  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: ["--no-sandbox", "--disable-gpu"] });
  rmSync(OUT, { recursive: true, force: true });
  mkdirSync(OUT, { recursive: true });
  const screens = [
    ["chats", "#/"],
    ["thread", `#/chat/u/${B}`],
    ["group", `#/chat/g/${group.id}`],
    ["new-chat", "#/new"],
    ["add-contact", "#/add"],
    ["contact", `#/contact/${B}`],
    ["group-info", `#/group/${group.id}`],
    ["profile", "#/profile"],
    ["settings", "#/settings"],
    ["backup", "#/backup"],
    ["node-overview", "#/admin/overview"],
    ["node-devices", "#/admin/devices"],
  ];
  for (const [size, viewport] of [["phone", { width: 390, height: 844 }], ["desktop", { width: 1280, height: 800 }]]) {
    const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
    const page = await context.newPage();
    await page.goto(`${alice.url}/`);
    await page.screenshot({ path: join(OUT, `${size}-login.png`) });
    const login = execFileSync(BIN, ["admin", "--data-dir", alice.dir], { encoding: "utf8" }).trim().replace("/admin#", "/#");
    await page.goto(login);
    await page.getByTestId("live").filter({ hasText: "live" }).waitFor();
    await page.getByRole("button", { name: "Not now" }).click();
    // Something new since this device last looked: a count on the chat list.
    await api(carol, "POST", "/v1/messages", { to: A, body: size === "phone" ? "Bring the book, please!" : "See you there 📚" });
    await page.getByTestId("unread").first().waitFor();
    for (const [name, hash] of screens) {
      await page.evaluate((h) => (location.hash = h), hash);
      await page.waitForLoadState("networkidle");
      if (name === "add-contact") await page.getByRole("button", { name: "Create invite" }).click();
      if (name === "node-devices") await page.getByRole("button", { name: "Create pairing code" }).click();
      await wait(400);
      await page.screenshot({ path: join(OUT, `${size}-${name}.png`) });
    }
    // A new recovery phrase, as it is shown once.
    await page.evaluate(() => (location.hash = "#/backup"));
    await page.getByRole("button", { name: "New phrase" }).click();
    await page.getByRole("button", { name: "Make a new phrase" }).click();
    await page.getByTestId("phrase").waitFor();
    await wait(300);
    await page.screenshot({ path: join(OUT, `${size}-backup-phrase.png`) });
    await page.getByRole("button", { name: "I wrote it down" }).click();
    // Search over all history, from the chat list.
    await page.evaluate(() => (location.hash = "#/"));
    await page.getByRole("searchbox").fill("book");
    await page.getByTestId("search-result").first().waitFor();
    await wait(300);
    await page.screenshot({ path: join(OUT, `${size}-search.png`) });
    await page.getByRole("searchbox").fill("");
    // The dark theme, and a message's menu.
    await page.evaluate(() => (document.documentElement.dataset.theme = "dark"));
    await page.evaluate((h) => (location.hash = h), `#/chat/u/${B}`);
    await wait(400);
    const bubble = page.getByTestId("message").filter({ hasText: "Dinner on Friday" }).first();
    await bubble.hover();
    await bubble.getByRole("button", { name: "Message actions" }).click({ force: true });
    await wait(200);
    await page.screenshot({ path: join(OUT, `${size}-thread-dark-menu.png`) });
    await context.close();
  }
  await browser.close();
  console.log(`screenshots in ${OUT}`);
} finally {
  await nodes.stopAll();
}
