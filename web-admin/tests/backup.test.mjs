// Browser tests of the app's Backup screen (Settings → Backup held by friends) against real
// nodes: Alice, with Bob and Carol as contacts whose nodes hold her backup; and a file that
// waits at a friend's node (Bob's) for a contact who is away (Dave). Debian's Chromium
// driven by playwright-core at phone (390×844) and desktop (1280×800) sizes; every page fails
// its test on a console error, an uncaught exception, or a request to anywhere but the node.
//
//   VOLLI_BIN          the node binary (default ../target/debug/volli; see clients/typescript/tests/nodes.mjs)
//   CHROMIUM           the browser (default /usr/bin/chromium)
//   VOLLI_SCREENSHOTS  a directory for the screen's pictures (docs/screenshots: phone-backup.png, desktop-backup.png)
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";
import { BIN, call, Nodes } from "../../clients/typescript/tests/nodes.mjs";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const AXE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const PHONE = { width: 390, height: 844 };
const DESKTOP = { width: 1280, height: 800 };
const nodes = new Nodes("volli-app-backup-");
let browser;
const contexts = new Set();
afterEach(async () => {
  for (const c of [...contexts]) await c.close().catch(() => {});
});

const wait = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(what, f, ms = 20_000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await wait(100);
  }
}
const hash = (page, h) => page.evaluate((x) => (location.hash = x), h);

/** A page that records every problem: console errors, exceptions, requests elsewhere (as app.test.mjs). */
async function open(node, { viewport = DESKTOP } = {}) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
  contexts.add(context);
  context.on("close", () => contexts.delete(context));
  const page = await context.newPage();
  const problems = [];
  const origin = new URL(node.url).origin;
  page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
  page.on("pageerror", (e) => problems.push(`exception: ${e.message}`));
  page.on("request", (r) => {
    const u = r.url();
    if (!u.startsWith(origin) && !u.startsWith("data:") && !u.startsWith("blob:")) problems.push(`request elsewhere: ${u}`);
  });
  page.setDefaultTimeout(20_000);
  return { context, page, problems, done: async () => (await context.close(), assert.deepEqual(problems, [])) };
}

/** Logged in with `volli admin`'s one-time link, at the chat list. */
async function logIn(node, options) {
  const s = await open(node, options);
  const url = execFileSync(BIN, ["admin", "--data-dir", node.dir], { encoding: "utf8" }).trim().replace("/admin#", "/#");
  await s.page.goto(url);
  await s.page.getByRole("heading", { name: "Chats" }).waitFor();
  await s.page.getByTestId("live").filter({ hasText: "live" }).waitFor();
  // The first start offers notifications; not now.
  const notNow = s.page.getByRole("button", { name: "Not now" });
  if (await notNow.waitFor({ timeout: 2_000 }).then(() => true, () => false)) await notNow.click();
  return s;
}

/** axe-core on the page as it is: no serious or critical violation. */
async function axe(page, screen) {
  await page.evaluate(AXE);
  const result = await page.evaluate(() => window.axe.run(document, { runOnly: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] }));
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert.deepEqual(
    bad.map((v) => `${screen}: ${v.id} (${v.impact}) ${v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join(", ")}`),
    [],
  );
}

/** Everything the page keeps: localStorage, sessionStorage and every IndexedDB store, as text. */
const kept = (page) =>
  page.evaluate(async () => {
    const out = [JSON.stringify({ ...localStorage }), JSON.stringify({ ...sessionStorage })];
    for (const { name } of await indexedDB.databases()) {
      const db = await new Promise((ok, fail) => {
        const r = indexedDB.open(name);
        r.onsuccess = () => ok(r.result);
        r.onerror = () => fail(r.error);
      });
      for (const store of db.objectStoreNames) {
        const all = await new Promise((ok) => {
          const r = db.transaction(store).objectStore(store).getAll();
          r.onsuccess = () => ok(r.result);
          r.onerror = () => ok([]);
        });
        out.push(JSON.stringify(all));
      }
      db.close();
    }
    return out.join("\n");
  });

async function shot(page, name) {
  if (!process.env.VOLLI_SCREENSHOTS) return;
  await wait(300);
  await page.screenshot({ path: join(process.env.VOLLI_SCREENSHOTS, name) });
}

async function noWiderThanWindow(page, what) {
  const wide = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(wide <= 0, `${what}: ${wide}px wider than the window`);
}

let alice, bob, carol;

before(async () => {
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu"] });
  [alice, bob, carol] = await Promise.all(["alice", "bob", "carol"].map((n) => nodes.start(n, { env: { VOLLI_DEVICE_NAME: n } })));
  // Bob and Carol are Alice's contacts: their nodes offer room for her backup.
  for (const [who, name] of [
    [bob, "Alice"],
    [carol, "Alice"],
  ]) {
    const invite = (await call(alice, "POST", "/v1/invites", {})).body;
    assert.equal((await call(who, "POST", "/v1/contacts", { invite: invite.link, name })).status, 201);
  }
  await until("alice to know bob and carol", async () => (await call(alice, "GET", "/v1/contacts")).body.contacts.length === 2);
});

after(async () => {
  await browser?.close();
  await nodes.stopAll();
});

describe("the backup screen", () => {
  test("the chat list offers the backup until it is set up; Later puts it off on this device", async () => {
    const a = await logIn(alice, { viewport: PHONE });
    const { page } = a;
    // Alice has friends whose nodes can hold it and no backup yet: offered, in words.
    const offer = page.getByRole("region", { name: "Backup offer" });
    await offer.getByText(/encrypted backup/).waitFor();
    await noWiderThanWindow(page, "the chat list with the offer at 390");
    await axe(page, "backup offer 390");
    await shot(page, "phone-backup-offer.png");
    await offer.getByRole("link", { name: "Set up backup" }).click();
    await page.getByRole("heading", { name: "Backup", level: 1 }).waitFor();
    await page.getByTestId("backup-off").waitFor();
    // Back at the list, put off: gone, also after a reload of the page on this device.
    await hash(page, "#/");
    await offer.getByRole("button", { name: "Later" }).click();
    assert.equal(await offer.count(), 0);
    await page.reload();
    await page.getByRole("heading", { name: "Chats" }).waitFor();
    await page.getByTestId("live").filter({ hasText: "live" }).waitFor();
    await wait(500);
    assert.equal(await offer.count(), 0);
    await a.done();
    // Another device (a fresh page) is asked again.
    const b = await logIn(alice, { viewport: DESKTOP });
    await b.page.getByTestId("backup-prompt").waitFor();
    await b.done();
  });

  test("set up from the settings: the phrase shown once, held by two friends, back up now, a new phrase, the space offered; at both sizes", async () => {
    const a = await logIn(alice, { viewport: PHONE });
    const { page } = a;
    await hash(page, "#/settings");
    await page.getByRole("link", { name: /Backup held by friends/ }).click();
    await page.getByRole("heading", { name: "Backup", level: 1 }).waitFor();

    // Not set up: what it is in plain words, and the button.
    const off = page.getByTestId("backup-off");
    await off.getByText("12-word recovery phrase").waitFor();
    await axe(page, "backup off 390");
    await page.getByRole("button", { name: "Set up backup" }).click();

    // The phrase, once: twelve words, large.
    await page.getByTestId("phrase").waitFor();
    const words = await page.getByTestId("phrase-word").allTextContents();
    assert.equal(words.length, 12);
    assert.ok(words.every((w) => /^[a-z]+$/.test(w)), `words: ${words.join(" ")}`);
    const fontSize = await page.getByTestId("phrase-word").first().evaluate((el) => parseFloat(getComputedStyle(el).fontSize));
    assert.ok(fontSize >= 20, `the words are large (${fontSize}px)`);
    await noWiderThanWindow(page, "the phrase at 390");
    await axe(page, "backup phrase 390");
    await shot(page, "phone-backup-phrase.png");
    const phrase = words.join(" ");
    assert.ok(!(await kept(page)).includes(words.slice(0, 3).join(" ")), "the phrase is kept nowhere in the page's storage");
    await page.getByRole("button", { name: "I wrote it down" }).click();
    await page.getByTestId("backup-status").waitFor();
    assert.equal(await page.getByTestId("phrase").count(), 0);
    assert.ok(!(await page.content()).includes(phrase), "the phrase left the page");

    // The first backup reaches Bob's and Carol's nodes: with two holders one is needed, one may vanish.
    await page.getByTestId("backup-state").filter({ hasText: "Backed up" }).waitFor({ timeout: 90_000 });
    const view = (await call(alice, "GET", "/v1/backup")).body;
    assert.equal(view.state, "ok");
    assert.equal(await page.getByTestId("backup-k-of-n").textContent(), `any ${view.k} of ${view.n} friends`);
    assert.equal(await page.getByTestId("backup-can-lose").textContent(), `${view.can_lose} of ${view.holders.length}`);
    const holders = page.getByTestId("holder");
    await until("both holders listed", async () => (await holders.count()) === 2);
    assert.deepEqual((await holders.locator("strong").allTextContents()).sort(), ["bob", "carol"]);
    await holders.filter({ hasText: "online" }).nth(1).waitFor();
    await holders.filter({ hasText: "Has the newest backup" }).nth(1).waitFor();

    // Gone after a reload too, and no second setup is offered.
    await page.reload();
    await page.getByTestId("backup-status").waitFor();
    assert.equal(await page.getByTestId("phrase").count(), 0);
    assert.equal(await page.getByRole("button", { name: "Set up backup" }).count(), 0);
    assert.ok(!(await page.content()).includes(phrase));
    assert.ok(!(await kept(page)).includes(words.slice(0, 3).join(" ")));

    // Back up now.
    const seq = view.seq;
    await page.getByRole("button", { name: "Back up now" }).click();
    await page.getByRole("status").filter({ hasText: /Backed up: .* sent, 2 friends hold it\./ }).waitFor({ timeout: 60_000 });
    assert.ok((await call(alice, "GET", "/v1/backup")).body.seq > seq, "a new backup was made");

    // The space this node offers each contact: the default, then 64 MiB.
    const offer = page.getByTestId("backup-offer");
    await offer.getByTestId("offer-bytes").filter({ hasText: "256.0 MiB" }).waitFor();
    await offer.getByLabel("Space per contact, in MiB (0: none)").fill("64");
    await offer.getByRole("button", { name: "Save" }).click();
    await offer.getByRole("status").filter({ hasText: "Saved." }).waitFor();
    await offer.getByTestId("offer-bytes").filter({ hasText: "64.0 MiB" }).waitFor();
    assert.equal((await call(alice, "GET", "/v1/settings")).body.settings["backup.offer_bytes"], 64 * 1024 * 1024);
    assert.equal((await call(alice, "GET", "/v1/backup")).body.held.offer_bytes, 64 * 1024 * 1024);

    await page.locator(".screen-body").evaluate((el) => el.scrollTo(0, 0));
    await noWiderThanWindow(page, "the backup at 390");
    await axe(page, "backup 390");
    await shot(page, "phone-backup.png");
    await a.done();

    // Set up: the chat list no longer offers it, on any device.
    const later = await logIn(alice, { viewport: PHONE });
    await later.page.getByTestId("chat").or(later.page.getByText("No chats yet.")).first().waitFor();
    await wait(500);
    assert.equal(await later.page.getByTestId("backup-prompt").count(), 0);
    await later.done();

    // The desktop: the same screen beside the chat list.
    const d = await logIn(alice, { viewport: DESKTOP });
    await hash(d.page, "#/backup");
    await d.page.getByTestId("backup-state").filter({ hasText: "Backed up" }).waitFor();
    await until("both holders listed", async () => (await d.page.getByTestId("holder").count()) === 2);
    await noWiderThanWindow(d.page, "the backup at 1280");
    await axe(d.page, "backup 1280");
    await shot(d.page, "desktop-backup.png");

    // A new phrase, after a confirmation: other words, shown once.
    await d.page.getByRole("button", { name: "New phrase" }).click();
    await d.page.getByRole("button", { name: "Make a new phrase" }).click();
    await d.page.getByTestId("phrase").waitFor();
    const again = await d.page.getByTestId("phrase-word").allTextContents();
    assert.equal(again.length, 12);
    assert.notEqual(again.join(" "), phrase);
    await axe(d.page, "backup phrase 1280");
    await shot(d.page, "desktop-backup-phrase.png");
    await d.page.getByRole("button", { name: "I wrote it down" }).click();
    await d.page.getByTestId("backup-status").waitFor();
    assert.equal(await d.page.getByTestId("phrase").count(), 0);
    await d.page.getByTestId("backup-state").filter({ hasText: "Backed up" }).waitFor({ timeout: 90_000 });
    await d.done();
  });

  test("a login without the admin scope sees where the backup stands, and nothing it may not do", async () => {
    const offer = (await call(alice, "POST", "/v1/clients/login-codes", { name: "phone", scopes: ["read", "messages"], api_url: alice.url })).body;
    const p = await open(alice, { viewport: PHONE });
    await p.page.goto(`${alice.url}/#login=${encodeURIComponent(offer.code)}`);
    await p.page.getByRole("heading", { name: "Chats" }).waitFor();
    await hash(p.page, "#/settings");
    await p.page.getByRole("link", { name: /Backup held by friends/ }).click();
    await p.page.getByTestId("backup-state").waitFor();
    await until("the holders", async () => (await p.page.getByTestId("holder").count()) === 2);
    await p.page.getByTestId("offer-bytes").filter({ hasText: "64.0 MiB" }).waitFor();
    for (const name of ["Back up now", "New phrase", "Set up backup", "Save"]) {
      assert.equal(await p.page.getByRole("button", { name }).count(), 0, `no “${name}”`);
    }
    assert.equal(await p.page.getByLabel("Space per contact, in MiB (0: none)").count(), 0);
    await axe(p.page, "backup read-only 390");
    await p.done();
  });
});

describe("files through friends", () => {
  test("a file to a contact who is away says it waits at a friend's node, then that it was delivered", async () => {
    const dave = await nodes.start("dave", { env: { VOLLI_DEVICE_NAME: "dave" } });
    for (const friend of [bob, alice]) {
      const invite = (await call(friend, "POST", "/v1/invites", {})).body;
      assert.equal((await call(dave, "POST", "/v1/contacts", { invite: invite.link })).status, 201);
    }
    const D = (await call(dave, "GET", "/v1/node")).body.user_id;
    const B = (await call(bob, "GET", "/v1/node")).body.user_id;
    // Dave's node designates Bob's as a relay and tells Alice's with a newer card.
    await until(
      "alice to know that bob relays for dave",
      async () => ((await call(alice, "GET", `/v1/contacts/${D}`)).body.relays ?? []).includes(B),
      60_000,
    );
    assert.equal((await call(dave, "PUT", "/v1/settings/transfers.auto_accept_bytes", { value: 1 << 20 })).status, 200);
    await nodes.stop(dave);

    const a = await logIn(alice, { viewport: PHONE });
    const { page } = a;
    await hash(page, `#/chat/u/${D}`);
    const plans = join(nodes.root, "plans.txt");
    writeFileSync(plans, "the plans for the summer\n".repeat(2000));
    await page.getByTestId("attach").setInputFiles(plans);
    const item = page.getByTestId("file").filter({ hasText: "plans.txt" });
    await item.getByTestId("file-state").filter({ hasText: "they are away · waiting at bob's node" }).waitFor({ timeout: 60_000 });
    const held = (await call(bob, "GET", "/v1/relay")).body.held_files;
    assert.equal(held.files, 1);
    assert.equal(held.recipients, 1);
    await noWiderThanWindow(page, "a file waiting at a friend's node at 390");
    await axe(page, "file via a friend 390");
    await shot(page, "phone-file-via-friend.png");

    // Dave is back: he takes it, and Alice's page says it was delivered; Bob lets it go.
    await nodes.restart(dave);
    await item.getByTestId("file-state").filter({ hasText: "delivered" }).waitFor({ timeout: 60_000 });
    await until("bob to let the file go", async () => (await call(bob, "GET", "/v1/relay")).body.held_files.files === 0);
    await a.done();
  });
});
