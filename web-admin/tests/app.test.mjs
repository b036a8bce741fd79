// Browser tests of the chat app: Debian's Chromium driven by playwright-core against real
// `volli` nodes, at phone (390×844) and desktop (1280×800) sizes. Every page fails its test on
// a console error, an uncaught exception, or a request to anywhere but the node itself.
//
//   VOLLI_BIN      the node binary (default ../target/debug/volli; see clients/typescript/tests/nodes.mjs)
//   CHROMIUM       the browser (default /usr/bin/chromium)
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createECDH, randomBytes } from "node:crypto";
import { createServer } from "node:http";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";
import { BIN, call, Nodes } from "../../clients/typescript/tests/nodes.mjs";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const AXE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const PHONE = { width: 390, height: 844 };
const DESKTOP = { width: 1280, height: 800 };
const nodes = new Nodes("volli-app-");
const root = nodes.root;
let browser;
/** Pages still open: a test that failed half way leaves none to the next (which would read its messages). */
const contexts = new Set();
let failed = 0;
afterEach(async () => {
  for (const c of [...contexts]) {
    // What a failed test's pages showed, for whoever reads the log (VOLLI_FAIL_SHOTS=dir).
    if (process.env.VOLLI_FAIL_SHOTS) for (const p of c.pages()) await p.screenshot({ path: join(process.env.VOLLI_FAIL_SHOTS, `failed-${++failed}.png`) }).catch(() => {});
    await c.close().catch(() => {});
  }
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
const userId = async (node) => (await call(node, "GET", "/v1/node")).body.user_id;
const hash = (page, h) => page.evaluate((x) => (location.hash = x), h);

/** A page that records every problem: console errors, exceptions, requests elsewhere. */
async function open(node, { viewport = DESKTOP, permissions = [] } = {}) {
  const context = await browser.newContext({ viewport, acceptDownloads: true });
  contexts.add(context);
  context.on("close", () => contexts.delete(context));
  if (permissions.length) await context.grantPermissions(permissions, { origin: new URL(node.url).origin });
  const page = await context.newPage();
  const problems = [];
  const allowed = [];
  const origin = new URL(node.url).origin;
  page.on("console", (m) => m.type() === "error" && !allowed.some((re) => re.test(m.text())) && problems.push(`console: ${m.text()}`));
  page.on("pageerror", (e) => problems.push(`exception: ${e.message}`));
  page.on("request", (r) => {
    const u = r.url();
    if (!u.startsWith(origin) && !u.startsWith("data:") && !u.startsWith("blob:")) problems.push(`request elsewhere: ${u}`);
  });
  page.setDefaultTimeout(20_000);
  return {
    context,
    page,
    problems,
    /** Console errors of this kind are expected (the node stopped on purpose). */
    tolerate: (re) => allowed.push(re),
    done: async () => (await context.close(), assert.deepEqual(problems, [])),
  };
}

/** Logged in with `volli admin`'s one-time link, at the chat list. */
async function logIn(node, options) {
  const s = await open(node, options);
  const url = execFileSync(BIN, ["admin", "--data-dir", node.dir], { encoding: "utf8" }).trim().replace("/admin#", "/#");
  await s.page.goto(url);
  await s.page.getByRole("heading", { name: "Chats" }).waitFor();
  await s.page.getByTestId("live").filter({ hasText: "live" }).waitFor();
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

/** The next push the test's push service receives. */
function pushService() {
  const pushed = [];
  const server = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      pushed.push({ url: req.url, headers: req.headers, body: Buffer.concat(chunks) });
      res.writeHead(201).end();
    });
  });
  return { pushed, server };
}

let alice, bob, carol, A, B, C, push;

before(async () => {
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu"] });
  push = pushService();
  await new Promise((r) => push.server.listen(0, "127.0.0.1", r));
  [alice, bob, carol] = await Promise.all([
    nodes.start("alice", { env: { VOLLI_DEVICE_NAME: "alice" }, config: "[push]\nallow_http = true\n" }),
    nodes.start("bob", { env: { VOLLI_DEVICE_NAME: "bob" } }),
    nodes.start("carol", { env: { VOLLI_DEVICE_NAME: "carol" } }),
  ]);
  [A, B, C] = await Promise.all([alice, bob, carol].map(userId));
  // Alice and Carol know each other already; Alice and Bob meet in the browser.
  const invite = (await call(alice, "POST", "/v1/invites", {})).body;
  assert.equal((await call(carol, "POST", "/v1/contacts", { invite: invite.link, name: "Alice" })).status, 201);
  await until("alice to know carol", async () => (await call(alice, "GET", "/v1/contacts")).body.contacts.length === 1);
});

after(async () => {
  await browser?.close();
  push?.server.close();
  await nodes.stopAll();
});

describe("the chat app", () => {
  test("a person's day: add a contact, chat at both sizes, a photo and a file in place, a group with a join", async () => {
    const a = await logIn(alice, { viewport: DESKTOP });
    const b = await logIn(bob, { viewport: PHONE });

    // Alice invites from the app; Bob, on his phone, pastes the link and lands in the chat.
    await a.page.getByRole("link", { name: "New chat" }).click();
    // The New chat screen's own link: the chat list's empty state has one too, hidden on a
    // phone once the screen is open (a click that found it first would wait on it forever).
    await a.page.locator("main").getByRole("link", { name: "Add a contact" }).click();
    await a.page.getByRole("button", { name: "Create invite" }).click();
    const qr = a.page.getByRole("img", { name: "QR code of the invite link" });
    await qr.waitFor();
    assert.ok(await qr.evaluate((img) => img.complete && img.naturalWidth > 0), "the QR code is drawn");
    const link = (await a.page.getByTestId("invite-link").textContent()).trim();
    await b.page.getByRole("link", { name: "New chat" }).click();
    await b.page.locator("main").getByRole("link", { name: "Add a contact" }).click();
    await b.page.getByLabel("Invite link").fill(link);
    await b.page.getByLabel("Name (optional)").fill("Alice");
    await b.page.getByRole("button", { name: "Add contact" }).click();
    await b.page.getByRole("heading", { name: "Alice", level: 1 }).waitFor();

    // On the phone the thread is a screen of its own, its composer pinned to the bottom.
    assert.equal(await b.page.locator(".pane-list").isVisible(), false, "the chat list is not stacked above the thread");
    const pinned = async (page, height) => {
      const box = await page.locator("form.composer").boundingBox();
      assert.ok(Math.abs(box.y + box.height - height) <= 1, `composer ends at ${box.y + box.height}, not ${height}`);
    };
    await pinned(b.page, PHONE.height);

    // Alice is on her chat list: Bob's message shows there with its preview, a count and the title's count.
    await hash(a.page, "#/");
    await b.page.getByLabel("Message", { exact: true }).fill("Hi Alice! The menu: https://example.org/menu");
    await b.page.getByRole("button", { name: "Send" }).click();
    const bobChat = a.page.getByTestId("chat").filter({ hasText: "bob" });
    await bobChat.getByTestId("preview").filter({ hasText: "Hi Alice!" }).waitFor();
    await bobChat.getByTestId("unread").filter({ hasText: "1" }).waitFor();
    await until("the title's count", async () => (await a.page.title()).startsWith("(1) "));
    // Carol's chat (no message yet) is below Bob's: newest activity first.
    const order = await a.page.getByTestId("chat").locator(".chat-title").allTextContents();
    assert.deepEqual(order.slice(0, 2), ["bob", "carol"]);

    await bobChat.click();
    await a.page.getByRole("heading", { name: "bob", level: 1 }).waitFor();
    await until("the count to clear", async () => !(await a.page.title()).startsWith("("));
    await pinned(a.page, DESKTOP.height);
    const menuLink = a.page.getByTestId("message").getByRole("link", { name: "https://example.org/menu" });
    assert.equal(await menuLink.getAttribute("target"), "_blank");
    assert.match(await menuLink.getAttribute("rel"), /noopener/);

    // A run of messages: one time under the last, a day separator above.
    for (const text of ["Yes!", "7 pm at the usual place.", "I'll bring the wine 🍷"]) {
      await a.page.getByLabel("Message", { exact: true }).fill(text);
      await a.page.getByLabel("Message", { exact: true }).press("Enter");
    }
    const run = b.page.getByTestId("message").filter({ hasText: /Yes!|7 pm|wine/ });
    await until("the run on Bob's phone", async () => (await run.count()) === 3);
    assert.equal(await run.locator("time").count(), 1, "only the last of a run shows its time");
    await a.page.getByTestId("day").filter({ hasText: "Today" }).first().waitFor();
    await b.page.getByTestId("message-status").filter({ hasText: /Delivered|Read/ }).first().waitFor();
    assert.equal(await a.page.getByRole("button", { name: "Delete" }).count(), 0, "no delete button on every bubble");

    // The message menu: the actions this node has, nothing it lacks.
    const hi = a.page.getByTestId("message").filter({ hasText: "Hi Alice!" });
    await hi.hover();
    await hi.getByRole("button", { name: "Message actions" }).click();
    const menu = a.page.getByRole("menu", { name: "Message actions" });
    await menu.getByRole("menuitem", { name: "Copy text" }).waitFor();
    assert.equal(await menu.getByRole("menuitem", { name: "Reply" }).count(), 1);
    assert.equal(await menu.getByRole("menuitem", { name: /React with/ }).count(), 6);
    assert.equal(await menu.getByRole("menuitem", { name: "Edit" }).count(), 0, "another's message is not edited");
    await a.page.keyboard.press("Escape");
    await menu.waitFor({ state: "detached" });

    // A photo, attached: in place on both sides once Bob accepts it, full size on a tap.
    const photo = join(root, "beach.png");
    writeFileSync(photo, readFileSync(new URL("../static/icon-512.png", import.meta.url)));
    await a.page.getByTestId("attach").setInputFiles(photo);
    await a.page.getByTestId("photo").first().waitFor();
    const offered = b.page.getByTestId("file").filter({ hasText: "beach.png" });
    await offered.getByTestId("file-state").filter({ hasText: "offered to you" }).waitFor();
    await offered.getByRole("button", { name: "Accept" }).click();
    const shown = b.page.getByTestId("photo");
    await shown.waitFor();
    await until("the photo to load", () => shown.evaluate((img) => img.complete && img.naturalWidth === 512));
    await shown.click();
    await b.page.getByTestId("full-photo").waitFor();
    await b.page.keyboard.press("Escape");
    await b.page.getByTestId("full-photo").waitFor({ state: "detached" });

    // A file dropped on the thread, accepted and saved: the same bytes.
    const notes = join(root, "notes.txt");
    writeFileSync(notes, "Bring: plates, glasses, the good cheese.\n".repeat(2000));
    await a.page.locator("section.thread").evaluate((thread, text) => {
      const dt = new DataTransfer();
      dt.items.add(new File([text], "notes.txt", { type: "text/plain" }));
      thread.dispatchEvent(new DragEvent("dragover", { dataTransfer: dt, bubbles: true, cancelable: true }));
      thread.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
    }, readFileSync(notes, "utf8"));
    const file = b.page.getByTestId("file").filter({ hasText: "notes.txt" });
    await file.getByRole("button", { name: "Accept" }).click();
    await file.getByTestId("file-state").filter({ hasText: "received" }).waitFor();
    const download = b.page.waitForEvent("download");
    await file.getByRole("button", { name: "Save" }).click();
    assert.deepEqual(readFileSync(await (await download).path()), readFileSync(notes));
    await a.page.getByTestId("file").filter({ hasText: "notes.txt" }).getByTestId("file-state").filter({ hasText: "delivered" }).waitFor();

    // A group: Alice makes it with Bob; Carol joins later, and both threads say so.
    await a.page.getByRole("link", { name: "New chat" }).click();
    await a.page.getByRole("button", { name: "New group" }).click();
    await a.page.getByLabel("Group name").fill("Trip");
    await a.page.getByRole("checkbox", { name: "bob" }).check();
    await a.page.getByRole("button", { name: "Create group" }).click();
    await a.page.getByRole("heading", { name: "Trip", level: 1 }).waitFor();
    await b.page.getByRole("link", { name: "Back", exact: true }).click();
    await b.page.getByTestId("chat").filter({ hasText: "Trip" }).click();
    await b.page.getByRole("heading", { name: "Trip", level: 1 }).waitFor();
    const group = (await call(alice, "GET", "/v1/groups")).body.groups.find((g) => g.name === "Trip");
    assert.equal((await call(alice, "POST", `/v1/groups/${group.id}/members`, { user_id: C })).status, 200);
    // The node's line of the roster change, once, in both threads.
    await a.page.getByTestId("system-line").filter({ hasText: "You added carol" }).waitFor();
    await b.page.getByTestId("system-line").filter({ hasText: /^Alice added / }).waitFor();
    assert.equal(await a.page.getByTestId("system-line").filter({ hasText: /added carol/ }).count(), 1);
    await until("carol in the group", async () => (await call(carol, "GET", `/v1/groups/${group.id}`)).status === 200);
    await call(carol, "POST", "/v1/messages", { group: group.id, body: "Count me in!" });
    await b.page.getByTestId("message").filter({ hasText: "Count me in!" }).waitFor();
    await a.page.getByTestId("message").filter({ hasText: "Count me in!" }).locator(".sender").waitFor();

    // Desktop keys: Ctrl+K searches the chat list, Alt+↓ opens the next chat.
    await a.page.keyboard.press("Control+k");
    await until("the search box to be focused", () => a.page.evaluate(() => document.activeElement?.id === "search"));
    await a.page.keyboard.type("car");
    await until("the list to filter", async () => (await a.page.getByTestId("chat").count()) === 1);
    await a.page.keyboard.press("Escape");
    await a.page.locator("body").click({ position: { x: 900, y: 400 } });
    await a.page.keyboard.press("Alt+ArrowDown");
    await a.page.getByRole("heading", { name: "bob", level: 1 }).waitFor();
    await a.done();
    await b.done();
  });

  test("a muted chat stays quiet: no count in the title", async () => {
    const a = await logIn(alice, { viewport: DESKTOP });
    await hash(a.page, `#/contact/${B}`);
    await a.page.getByLabel("Mute notifications").check();
    await hash(a.page, "#/");
    await call(bob, "POST", "/v1/messages", { to: A, body: "psst (muted)" });
    const chat = a.page.getByTestId("chat").filter({ hasText: "psst (muted)" });
    await chat.getByTestId("unread").waitFor();
    await chat.getByRole("img", { name: "muted" }).waitFor();
    assert.ok(!(await a.page.title()).startsWith("("), await a.page.title());
    await hash(a.page, `#/contact/${B}`);
    await a.page.getByLabel("Mute notifications").uncheck();
    await a.done();
  });

  test("scrolls back to the first of 500 messages, keeping its place, and jumps to an old one", async () => {
    const first = await call(carol, "POST", "/v1/messages", { to: A, body: "history 000" });
    assert.equal(first.status, 202);
    await wait(20);
    for (let i = 1; i < 500; i += 25) {
      await Promise.all(Array.from({ length: Math.min(25, 500 - i) }, (_, k) => call(carol, "POST", "/v1/messages", { to: A, body: `history ${String(i + k).padStart(3, "0")}` })));
    }
    await until("all 500 at alice", async () => (await call(alice, "GET", `/v1/messages?with=${C}&limit=1`)).body.messages[0]?.body.startsWith("history"));
    await until("the last at alice", async () => (await call(alice, "GET", `/v1/messages?with=${C}&limit=500`)).body.messages.length >= 500);
    const a = await logIn(alice, { viewport: PHONE });
    await hash(a.page, `#/chat/u/${C}`);
    await a.page.getByRole("heading", { name: "carol", level: 1 }).waitFor();
    const timeline = a.page.getByRole("region", { name: /Conversation with/ }).locator(".timeline");
    await a.page.getByTestId("message").last().waitFor();
    const atBottom = await timeline.evaluate((el) => el.scrollHeight - el.scrollTop - el.clientHeight);
    assert.ok(atBottom < 5, `opens at the newest message (${atBottom}px above the bottom)`);

    // Each page arrives above what is read, which stays where it was on the screen.
    let pages = 0;
    while (!(await a.page.getByText("This is the start of your conversation").isVisible())) {
      const before = await a.page.getByTestId("message").count();
      // The first message on screen, measured as the scroll reaches the top (which asks for a page).
      const [text, y] = await timeline.evaluate((el) => {
        el.scrollTop = 0;
        const first = el.querySelector("[data-testid=message]");
        return [first.textContent, first.getBoundingClientRect().top];
      });
      await until("an older page", async () => (await a.page.getByTestId("message").count()) > before || (await a.page.getByText("This is the start of your conversation").isVisible()));
      const same = a.page.getByTestId("message").filter({ hasText: text }).first();
      const y2 = await same.evaluate((el) => el.getBoundingClientRect().top);
      if ((await a.page.getByTestId("message").count()) > before) assert.ok(Math.abs(y2 - y) < 8, `the place moved by ${y2 - y}px`);
      assert.ok(++pages < 30, "too many pages");
    }
    await a.page.getByTestId("message").filter({ hasText: "history 000" }).waitFor();
    assert.equal(await a.page.getByTestId("message").filter({ hasText: /^history \d{3}/ }).count(), 500);

    // An old message by its address (as a search result opens it): loaded, shown, marked.
    const old = (await call(alice, "GET", `/v1/messages?with=${C}&limit=500`)).body.messages.find((m) => m.body === "history 010");
    await a.page.reload();
    await hash(a.page, `#/chat/u/${C}/${old.id}`);
    await a.page.locator(`#m-${old.id}.highlight`).waitFor();
    assert.ok(await a.page.getByTestId("message").filter({ hasText: "history 010" }).isVisible());
    await a.done();
  });

  test("a client token's QR login opens the app with its scopes, which open offline and send when the node is back", async () => {
    const offer = (await call(alice, "POST", "/v1/clients/login-codes", { name: "phone", scopes: ["read", "messages"], api_url: alice.url })).body;
    const p = await open(alice, { viewport: PHONE });
    await p.page.goto(`${alice.url}/#login=${encodeURIComponent(offer.code)}`);
    await p.page.getByRole("heading", { name: "Chats" }).waitFor();
    assert.ok(!p.page.url().includes("login="), "the code leaves the address");
    await p.page.getByTestId("live").filter({ hasText: "live" }).waitFor();

    // What the token may not do is not offered: the node's pages, files, contacts.
    await hash(p.page, "#/settings");
    await p.page.getByRole("heading", { name: "Settings" }).waitFor();
    assert.equal(await p.page.getByRole("heading", { name: "Your node" }).count(), 0);
    await hash(p.page, "#/new");
    assert.equal(await p.page.getByRole("link", { name: "Add a contact" }).count(), 0);
    await hash(p.page, `#/chat/u/${B}`);
    await p.page.getByTestId("message").first().waitFor();
    assert.equal(await p.page.getByRole("button", { name: "Attach a file" }).count(), 0);

    // The service worker keeps the app; the node goes away; the app opens with what it had.
    await p.page.evaluate(() => navigator.serviceWorker.ready);
    await until("the service worker to control the page", () => p.page.evaluate(() => !!navigator.serviceWorker.controller));
    await p.page.getByLabel("Message", { exact: true }).fill("before the outage");
    await p.page.getByRole("button", { name: "Send" }).click();
    await p.page.getByTestId("message-status").last().filter({ hasText: /Sent|Delivered/ }).waitFor();
    await wait(700); // what the app keeps is written half a second after it changes
    p.tolerate(/ERR_CONNECTION_REFUSED|WebSocket connection|Failed to load resource/);
    await nodes.stop(alice);
    await p.page.reload();
    await p.page.getByRole("heading", { name: "bob", level: 1 }).waitFor();
    await p.page.getByTestId("message").filter({ hasText: "before the outage" }).waitFor();
    await p.page.getByLabel("Message", { exact: true }).fill("written while the node was away");
    await p.page.getByRole("button", { name: "Send" }).click();
    await p.page.getByTestId("message-status").filter({ hasText: "Waiting for your node" }).waitFor();
    await hash(p.page, "#/");
    await p.page.getByText("Your node cannot be reached").waitFor();
    await p.page.getByTestId("chat").filter({ hasText: "written while the node was away" }).waitFor();

    await nodes.restart(alice);
    await until("the queued message at bob", async () => (await call(bob, "GET", `/v1/messages?with=${A}&limit=5`)).body.messages.some((m) => m.body === "written while the node was away"), 40_000);
    await p.page.getByTestId("live").filter({ hasText: "live" }).waitFor({ timeout: 30_000 });
    await p.done();
  });

  test("offers notifications the first time, subscribes through the node, and a message makes a push", async () => {
    // The test's push service stands in for the browser's: subscribe() answers with its address.
    const ecdh = createECDH("prime256v1");
    ecdh.generateKeys();
    const endpoint = `http://127.0.0.1:${push.server.address().port}/push/alice-phone`;
    const keys = { p256dh: ecdh.getPublicKey().toString("base64url"), auth: randomBytes(16).toString("base64url") };
    const a = await open(alice, { viewport: PHONE, permissions: ["notifications"] });
    await a.page.addInitScript(
      ({ endpoint, keys }) => {
        PushManager.prototype.subscribe = async function (options) {
          window.__applicationServerKey = options.applicationServerKey.byteLength;
          return { endpoint, toJSON: () => ({ endpoint, keys }), unsubscribe: async () => true };
        };
        PushManager.prototype.getSubscription = async () => null;
      },
      { endpoint, keys },
    );
    const url = execFileSync(BIN, ["admin", "--data-dir", alice.dir], { encoding: "utf8" }).trim().replace("/admin#", "/#");
    await a.page.goto(url);
    await a.page.getByRole("region", { name: "Notifications" }).getByRole("button", { name: "Turn on notifications" }).click();
    await until("the subscription at the node", async () => (await call(alice, "GET", "/v1/push/subscriptions")).body.subscriptions.some((s) => s.push_service.includes("127.0.0.1")));
    assert.equal(await a.page.evaluate(() => window.__applicationServerKey), 65, "the node's VAPID key is used");

    const before = push.pushed.length;
    await a.page.evaluate(() => (location.hash = "#/settings"));
    await a.page.getByText("This device is notified of new messages.").waitFor();
    await call(bob, "POST", "/v1/messages", { to: A, body: "are you there?" });
    await until("a push", () => push.pushed.length > before, 20_000);
    const got = push.pushed.at(-1);
    assert.equal(got.url, "/push/alice-phone");
    assert.equal(got.headers["content-encoding"], "aes128gcm");
    assert.ok(!got.body.includes(Buffer.from("are you there")), "the payload is encrypted");

    // Asked once per device: not again on the next visit.
    await a.page.reload();
    await a.page.getByRole("heading", { name: "Settings" }).waitFor();
    await hash(a.page, "#/");
    await a.page.getByRole("heading", { name: "Chats" }).waitFor();
    assert.equal(await a.page.getByRole("region", { name: "Notifications" }).count(), 0);
    await a.page.getByText("This device is notified").count();
    await a.done();
  });

  test("installable: a manifest with icons and a service worker for the shell", async () => {
    const manifest = await (await fetch(`${alice.url}/manifest.webmanifest`)).json();
    assert.equal(manifest.display, "standalone");
    for (const size of ["192x192", "512x512"]) {
      const icon = manifest.icons.find((i) => i.sizes === size && i.type === "image/png");
      assert.ok(icon, size);
      const r = await fetch(alice.url + icon.src);
      assert.equal(r.status, 200);
      assert.equal(r.headers.get("content-type"), "image/png");
    }
    const sw = await fetch(`${alice.url}/sw.js`);
    assert.equal(sw.status, 200);
    assert.match(await sw.text(), /volli-shell-[0-9a-f]{12}/);
    let js = 0;
    for (const f of ["app.js", "sw.js"]) js += (await import("node:zlib")).gzipSync(readFileSync(new URL(`../dist/${f}`, import.meta.url))).length;
    assert.ok(js <= 150 * 1024, `the app's JavaScript is ${js} bytes gzipped`);
  });

  test("dark and light themes from ui.theme, or this device's choice", async () => {
    assert.equal((await call(alice, "PUT", "/v1/settings/ui.theme", { value: "dark" })).status, 200);
    const a = await logIn(alice, { viewport: PHONE });
    await until("the dark theme", () => a.page.evaluate(() => document.documentElement.dataset.theme === "dark"));
    const dark = await a.page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.equal(dark, "rgb(17, 19, 23)");
    await hash(a.page, "#/settings");
    await a.page.getByLabel("Light").check();
    await until("the light theme", () => a.page.evaluate(() => getComputedStyle(document.body).backgroundColor === "rgb(244, 245, 247)"));
    await until("ui.theme light", async () => (await call(alice, "GET", "/v1/settings/ui.theme")).body.value === "light");
    await a.page.getByLabel("As the system").check();
    await until("ui.theme gone", async () => (await call(alice, "GET", "/v1/settings")).body.settings["ui.theme"] === undefined);
    await a.done();
  });

  test("every screen passes axe-core (no serious or critical violation) at both sizes, and the node's pages are inside", async () => {
    const group = (await call(alice, "GET", "/v1/groups")).body.groups[0];
    // A long last message: its preview is cut, it never makes a screen wider than the phone.
    await call(alice, "POST", "/v1/messages", { to: C, body: "A long line about the book club, the chapters we read and the ones still to come, and where we meet" });
    for (const viewport of [PHONE, DESKTOP]) {
      const login = await open(alice, { viewport });
      await login.page.goto(`${alice.url}/`);
      await login.page.getByText("volli admin").first().waitFor();
      await axe(login.page, `login ${viewport.width}`);
      await login.done();
      const a = await logIn(alice, { viewport });
      const screens = [
        ["#/", "Chats"],
        [`#/chat/u/${B}`, "bob"],
        [`#/chat/g/${group.id}`, group.name],
        ["#/new", "New chat"],
        ["#/add", "Add a contact"],
        ["#/profile", "Profile"],
        [`#/contact/${B}`, "bob"],
        [`#/group/${group.id}`, group.name],
        ["#/settings", "Settings"],
        ["#/backup", "Backup"],
        ["#/admin/overview", "Overview"],
        ["#/admin/devices", "Devices"],
      ];
      for (const [h, heading] of screens) {
        await hash(a.page, h);
        await a.page.getByRole("heading", { name: heading, exact: true }).first().waitFor();
        await a.page.waitForLoadState("networkidle");
        await axe(a.page, `${h} ${viewport.width}`);
        const wide = await a.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
        assert.ok(wide <= 0, `${h} at ${viewport.width}: ${wide}px wider than the window`);
      }
      // From the settings to a node page and back, on one login.
      await hash(a.page, "#/settings");
      await a.page.getByRole("link", { name: "Peers" }).click();
      await a.page.getByRole("heading", { name: "Peers" }).waitFor();
      await a.page.getByRole("link", { name: "Back", exact: true }).click();
      await a.page.getByRole("heading", { name: "Settings" }).waitFor();
      await a.done();
    }
  });
});


/** A text bubble by its own text (not by the text it quotes). */
const bubble = (page, text) => page.getByTestId("message").filter({ has: page.locator(".text", { hasText: text }) });
/** Opens a bubble's menu (hovered, as a mouse does; the button is there for keyboards too). */
async function menuOf(page, b) {
  await b.hover();
  await b.getByRole("button", { name: "Message actions" }).click();
  const menu = page.getByRole("menu", { name: "Message actions" });
  await menu.waitFor();
  return menu;
}
const ticks = (b) => b.getByTestId("message-status");

// "Messages as people expect them" (API.md): what a person sees on both sides.
describe("messages as people expect them", () => {
  let group;
  before(async () => {
    group = (await call(alice, "GET", "/v1/groups")).body.groups.find((g) => g.name === "Trip");
  });

  test("a reply quotes its message and jumps to it; reactions toggle and one per person; edits show; deletes for everyone leave a tombstone", async () => {
    const a = await logIn(alice, { viewport: DESKTOP });
    const b = await logIn(bob, { viewport: PHONE });
    await hash(a.page, `#/chat/u/${B}`);
    await hash(b.page, `#/chat/u/${A}`);
    await b.page.getByLabel("Message", { exact: true }).fill("Shall we take the train?");
    await b.page.getByLabel("Message", { exact: true }).press("Enter");
    const question = bubble(a.page, "Shall we take the train?");
    await question.waitFor();

    // Reply from the menu: the quote shows on both sides; a tap on it shows the original.
    await (await menuOf(a.page, question)).getByRole("menuitem", { name: "Reply" }).click();
    await a.page.getByTestId("replying").filter({ hasText: "Replying to bob" }).waitFor();
    await a.page.getByLabel("Message", { exact: true }).fill("Yes, the 9:10");
    await a.page.getByLabel("Message", { exact: true }).press("Enter");
    const answer = bubble(b.page, "Yes, the 9:10");
    await answer.getByTestId("quote").filter({ hasText: "Shall we take the train?" }).waitFor();
    await answer.getByTestId("quote").click();
    await b.page.locator(".msg-row.highlight").filter({ has: b.page.locator(".text", { hasText: "Shall we take the train?" }) }).waitFor();

    // A reaction from the menu, seen on the other side; the other person's tap on it adds theirs.
    await (await menuOf(a.page, question)).getByRole("menuitem", { name: "React with 👍" }).click();
    const bobsView = bubble(b.page, "Shall we take the train?");
    await b.page.locator(".msg-row", { has: bobsView }).getByTestId("reaction").filter({ hasText: "👍" }).click();
    const alicesChip = a.page.locator(".msg-row", { has: question }).getByTestId("reaction");
    await alicesChip.filter({ hasText: "👍 2" }).waitFor();
    // …and a second tap takes it back.
    await b.page.locator(".msg-row", { has: bobsView }).getByTestId("reaction").filter({ hasText: "👍 2" }).click();
    await until("bob's 👍 taken back", async () => (await alicesChip.allTextContents()).join("|") === "👍");
    // One reaction per person: another emoji from the picker replaces Alice's.
    const menu = await menuOf(a.page, question);
    await menu.getByRole("menuitem", { name: "More reactions" }).click();
    await menu.getByRole("menuitem", { name: "React with 🎉" }).click();
    await until("🎉 instead of 👍 at bob's", async () => (await b.page.locator(".msg-row", { has: bobsView }).getByTestId("reaction").allTextContents()).join("|") === "🎉");

    // An edit (↑ in the empty composer edits the last message): "edited" on both sides.
    await a.page.getByLabel("Message", { exact: true }).press("ArrowUp");
    await a.page.getByTestId("editing").waitFor();
    await a.page.getByLabel("Message", { exact: true }).fill("Yes, the 9:40");
    await a.page.getByLabel("Message", { exact: true }).press("Enter");
    await bubble(b.page, "Yes, the 9:40").filter({ hasText: "edited" }).waitFor();
    await bubble(a.page, "Yes, the 9:40").filter({ hasText: "edited" }).waitFor();
    assert.equal(await bubble(b.page, "Yes, the 9:10").count(), 0, await b.page.locator(".timeline").innerText());
    // Another's message cannot be edited.
    assert.equal(await (await menuOf(a.page, question)).getByRole("menuitem", { name: "Edit" }).count(), 0);
    await a.page.keyboard.press("Escape");

    // Deleted for everyone: a tombstone on both sides, its quote says so too.
    await (await menuOf(a.page, bubble(a.page, "Yes, the 9:40"))).getByRole("menuitem", { name: "Delete…" }).click();
    await a.page.getByRole("dialog").getByRole("button", { name: "Delete for everyone" }).click();
    await bubble(b.page, "This message was deleted").waitFor();
    await bubble(a.page, "You deleted this message").waitFor();
    assert.equal(await b.page.getByText("Yes, the 9:40").count(), 0);
    // Deleted for me: gone here, still there.
    await (await menuOf(a.page, question)).getByRole("menuitem", { name: "Delete…" }).click();
    assert.equal(await a.page.getByRole("dialog").getByRole("button", { name: "Delete for everyone" }).count(), 0, "not for everyone: it is Bob's");
    await a.page.getByRole("dialog").getByRole("button", { name: "Delete for me" }).click();
    await question.waitFor({ state: "detached" });
    await a.page.waitForTimeout(500);
    assert.equal(await bubble(b.page, "Shall we take the train?").count(), 1);
    await a.done();
    await b.done();
  });

  test("ticks go to read when the other side sees the message, unless its read receipts are off; unread counts drop on every device", async () => {
    const a = await logIn(alice, { viewport: DESKTOP });
    const b = await logIn(bob, { viewport: PHONE });
    await hash(a.page, `#/chat/u/${B}`);
    await hash(b.page, "#/");
    await a.page.getByLabel("Message", { exact: true }).fill("see you at the station");
    await a.page.getByLabel("Message", { exact: true }).press("Enter");
    const sent = bubble(a.page, "see you at the station");
    await ticks(sent).filter({ hasText: "Delivered" }).waitFor();
    // Bob's chat list: a count, and Alice's "Delivered", not "Read", while he has not opened it.
    const aliceRow = b.page.getByTestId("chat").filter({ hasText: "see you at the station" });
    await aliceRow.getByTestId("unread").filter({ hasText: "1" }).waitFor();
    await a.page.waitForTimeout(500);
    assert.equal(await ticks(sent).textContent(), "Delivered");
    await aliceRow.click();
    await bubble(b.page, "see you at the station").waitFor();
    await ticks(sent).filter({ hasText: "Read" }).waitFor();
    assert.ok(await ticks(sent).evaluate((el) => el.classList.contains("read")), "read ticks are coloured");
    // Alice's chat list shows the read ticks of her last message too.
    await hash(a.page, "#/");
    await a.page.getByTestId("chat").filter({ hasText: "see you at the station" }).getByTestId("list-status").filter({ hasText: "Read" }).waitFor();

    // Bob turns read receipts off: his count still drops, Alice's ticks stay at delivered.
    await hash(b.page, "#/settings");
    await b.page.getByLabel("Send read receipts").uncheck();
    await until("receipts.read false", async () => (await call(bob, "GET", "/v1/settings")).body.settings["receipts.read"] === false);
    await hash(a.page, `#/chat/u/${B}`);
    await a.page.getByLabel("Message", { exact: true }).fill("platform 4");
    await a.page.getByLabel("Message", { exact: true }).press("Enter");
    const second = bubble(a.page, "platform 4");
    await ticks(second).filter({ hasText: "Delivered" }).waitFor();
    await hash(b.page, `#/chat/u/${A}`);
    await bubble(b.page, "platform 4").waitFor();
    await until("bob's count to drop", async () => (await call(bob, "GET", "/v1/conversations")).body.conversations.find((c) => c.with === A).unread === 0);
    await a.page.waitForTimeout(1500);
    assert.equal(await ticks(second).textContent(), "Delivered", "no read receipt while they are off");
    await hash(b.page, "#/settings");
    await b.page.getByLabel("Send read receipts").check();
    await until("receipts.read back on", async () => (await call(bob, "GET", "/v1/settings")).body.settings["receipts.read"] === undefined);
    await b.done();

    // Two devices of Alice (a desktop tab and a phone tab): reading on one drops the count on the other.
    const phone = await logIn(alice, { viewport: PHONE });
    await hash(a.page, "#/");
    for (const body of ["the book is in my bag", "chapter 4 is the best"]) await call(carol, "POST", "/v1/messages", { to: A, body });
    const carolOnPhone = phone.page.getByTestId("chat").filter({ hasText: "chapter 4 is the best" });
    await carolOnPhone.getByTestId("unread").filter({ hasText: "2" }).waitFor();
    await a.page.getByTestId("chat").filter({ hasText: "chapter 4 is the best" }).getByTestId("unread").filter({ hasText: "2" }).waitFor();
    await a.page.getByTestId("chat").filter({ hasText: "chapter 4 is the best" }).click();
    await bubble(a.page, "chapter 4 is the best").waitFor();
    await carolOnPhone.getByTestId("unread").waitFor({ state: "detached" });
    await until("the phone's title count to clear", async () => !(await phone.page.title()).startsWith("("));
    await phone.done();
    await a.done();
  });

  test("typing shows in the thread's header and in the chat list", async () => {
    const a = await logIn(alice, { viewport: PHONE });
    const b = await logIn(bob, { viewport: PHONE });
    await hash(b.page, `#/chat/u/${A}`);
    await b.page.getByLabel("Message", { exact: true }).pressSequentially("on my w", { delay: 40 });
    await a.page.getByTestId("chat").filter({ hasText: "bob" }).getByTestId("list-typing").filter({ hasText: "typing…" }).waitFor();
    await hash(a.page, `#/chat/u/${B}`);
    await b.page.getByLabel("Message", { exact: true }).pressSequentially("ay", { delay: 40 });
    await a.page.getByTestId("typing").filter({ hasText: "typing…" }).waitFor({ timeout: 8000 });
    // It ends once the message arrives.
    await b.page.getByLabel("Message", { exact: true }).press("Enter");
    await bubble(a.page, "on my way").waitFor();
    await a.page.getByTestId("typing").waitFor({ state: "detached" });
    // In a group the header says who.
    await hash(a.page, `#/chat/g/${group.id}`);
    await hash(b.page, `#/chat/g/${group.id}`);
    await b.page.getByLabel("Message", { exact: true }).pressSequentially("hm", { delay: 40 });
    await a.page.getByTestId("typing").filter({ hasText: "bob is typing…" }).waitFor();
    await b.page.getByLabel("Message", { exact: true }).fill("");
    await a.done();
    await b.done();
  });

  test("a disappearing timer: set on the chat's page, a line in both threads, and messages leave in time; in a group only admins set it", async () => {
    const a = await logIn(alice, { viewport: DESKTOP });
    const b = await logIn(bob, { viewport: PHONE });
    await hash(b.page, `#/chat/u/${A}`);
    await hash(a.page, `#/contact/${B}`);
    await a.page.getByLabel("Disappearing messages").selectOption({ label: "30 seconds" });
    await b.page.getByTestId("system-line").filter({ hasText: /set messages to disappear after 30 seconds/ }).waitFor();
    await b.page.getByTestId("timer-badge").filter({ hasText: "30 seconds" }).waitFor();
    await hash(a.page, `#/chat/u/${B}`);
    await a.page.getByTestId("system-line").filter({ hasText: "You set messages to disappear after 30 seconds" }).waitFor();
    await b.page.getByLabel("Message", { exact: true }).fill("this will vanish");
    await b.page.getByLabel("Message", { exact: true }).press("Enter");
    const vanishing = bubble(a.page, "this will vanish");
    await vanishing.getByRole("img", { name: "disappearing" }).waitFor();
    await vanishing.waitFor({ state: "detached", timeout: 45_000 });
    await bubble(b.page, "this will vanish").waitFor({ state: "detached", timeout: 10_000 });
    // Either side turns it off.
    await hash(b.page, `#/contact/${A}`);
    await b.page.getByLabel("Disappearing messages").selectOption({ label: "Off" });
    await a.page.getByTestId("system-line").filter({ hasText: /turned off disappearing messages/ }).waitFor();
    await a.page.getByTestId("timer-badge").waitFor({ state: "detached" });

    // A group: Bob is a member, not an admin; Alice is.
    await hash(b.page, `#/group/${group.id}`);
    assert.ok(await b.page.getByLabel("Disappearing messages").isDisabled());
    await b.page.getByText("Only the group's admins can change this.").waitFor();
    await hash(a.page, `#/group/${group.id}`);
    await a.page.getByLabel("Disappearing messages").selectOption({ label: "1 hour" });
    await until("the group's timer", async () => (await call(bob, "GET", `/v1/groups/${group.id}`)).body.disappearing_secs === 3600);
    await hash(b.page, `#/chat/g/${group.id}`);
    await b.page.getByTestId("system-line").filter({ hasText: /set messages to disappear after 1 hour/ }).waitFor();
    await hash(a.page, `#/group/${group.id}`);
    await a.page.getByLabel("Disappearing messages").selectOption({ label: "Off" });
    await until("the group's timer off", async () => (await call(bob, "GET", `/v1/groups/${group.id}`)).body.disappearing_secs === 0);
    await a.done();
    await b.done();
  });

  test("a picture gets a thumbnail made in the browser, shown before it is accepted; a group file shows each member's progress to its sender", async () => {
    const a = await logIn(alice, { viewport: DESKTOP });
    const b = await logIn(bob, { viewport: PHONE });
    await hash(a.page, `#/chat/u/${B}`);
    await hash(b.page, `#/chat/u/${A}`);
    const photo = join(root, "harbour.png");
    writeFileSync(photo, readFileSync(new URL("../static/icon-512.png", import.meta.url)));
    await a.page.getByTestId("attach").setInputFiles(photo);
    const offered = b.page.getByTestId("file").filter({ hasText: "harbour.png" });
    await offered.getByTestId("file-state").filter({ hasText: "offered to you" }).waitFor();
    const thumb = offered.getByTestId("thumbnail");
    await until("the thumbnail to load", () => thumb.evaluate((img) => img.complete && img.naturalWidth > 0));
    const src = await thumb.getAttribute("src");
    assert.match(src, /^data:image\/(webp|jpeg);base64,/);
    assert.ok(src.length <= 1200, `the thumbnail is ${src.length} bytes`);
    assert.ok((await thumb.evaluate((img) => img.naturalWidth)) <= 96, "a thumbnail, not the picture");
    await offered.getByText(/16 KB/).waitFor();
    // Accepted: the picture itself, full size on a tap.
    await offered.getByRole("button", { name: "Accept" }).click();
    const full = offered.getByTestId("photo");
    await until("the picture to load", () => full.evaluate((img) => img.complete && img.naturalWidth === 512));
    await offered.getByRole("button", { name: "Open", exact: true }).click();
    await b.page.getByTestId("full-photo").waitFor();
    await b.page.keyboard.press("Escape");
    await a.page.getByTestId("file").filter({ hasText: "harbour.png" }).getByTestId("file-state").filter({ hasText: "delivered" }).waitFor();
    // Declined: it says so on both sides.
    const other = join(root, "minutes.txt");
    writeFileSync(other, "minutes of the meeting\n");
    await a.page.getByTestId("attach").setInputFiles(other);
    const minutes = b.page.getByTestId("file").filter({ hasText: "minutes.txt" });
    await minutes.getByRole("button", { name: "Decline" }).click();
    await a.page.getByTestId("file").filter({ hasText: "minutes.txt" }).getByTestId("file-state").filter({ hasText: "declined" }).waitFor();

    // A group file: its sender sees how far each member got.
    await hash(a.page, `#/chat/g/${group.id}`);
    await hash(b.page, `#/chat/g/${group.id}`);
    const plan = join(root, "plan.txt");
    writeFileSync(plan, "day 1: the coast\n".repeat(500));
    await a.page.getByTestId("attach").setInputFiles(plan);
    const mine = a.page.getByTestId("file").filter({ hasText: "plan.txt" });
    await mine.getByTestId("file-state").filter({ hasText: "delivered to 0 of 2" }).waitFor();
    await mine.getByText("Each member").click();
    await mine.getByTestId("file-member").filter({ hasText: "carol" }).filter({ hasText: "has not accepted yet" }).waitFor();
    await b.page.getByTestId("file").filter({ hasText: "plan.txt" }).getByRole("button", { name: "Accept" }).click();
    await mine.getByTestId("file-member").filter({ hasText: "bob" }).filter({ hasText: "has it" }).waitFor();
    await mine.getByTestId("file-state").filter({ hasText: "delivered to 1 of 2" }).waitFor();
    const offer = (await call(carol, "GET", "/v1/transfers")).body.transfers.find((t) => t.name === "plan.txt");
    assert.equal((await call(carol, "POST", `/v1/transfers/${offer.id}/decline`)).status, 200);
    await mine.getByTestId("file-member").filter({ hasText: "carol" }).filter({ hasText: "declined" }).waitFor();
    await a.done();
    await b.done();
  });

  test("message info in a group: who has read it, who has it", async () => {
    const a = await logIn(alice, { viewport: PHONE });
    const b = await logIn(bob, { viewport: PHONE });
    await hash(a.page, `#/chat/g/${group.id}`);
    await hash(b.page, `#/chat/g/${group.id}`);
    await a.page.getByLabel("Message", { exact: true }).fill("tickets are booked");
    await a.page.getByLabel("Message", { exact: true }).press("Enter");
    await bubble(b.page, "tickets are booked").waitFor();
    const sent = bubble(a.page, "tickets are booked");
    await ticks(sent).filter({ hasText: /Delivered \(2 of 2 delivered, 1 read\)/ }).waitFor();
    await (await menuOf(a.page, sent)).getByRole("menuitem", { name: "Info" }).click();
    const info = a.page.getByRole("dialog", { name: "Message info" });
    await info.getByTestId("receipt").filter({ hasText: "bob" }).filter({ hasText: "Read" }).waitFor();
    await info.getByTestId("receipt").filter({ hasText: "carol" }).filter({ hasText: "Delivered" }).waitFor();
    await a.page.keyboard.press("Escape");
    // Carol reads too: every member read it, so its ticks say read.
    const id = (await call(carol, "GET", `/v1/messages?group=${group.id}&limit=5`)).body.messages.find((m) => m.body === "tickets are booked").id;
    assert.equal((await call(carol, "POST", "/v1/messages/read", { group: group.id, up_to: id })).status, 204);
    await ticks(sent).filter({ hasText: /^Read/ }).waitFor();
    await a.done();
    await b.done();
  });

  test("search: results with the words marked, a tap opens the thread at the message", async () => {
    const a = await logIn(alice, { viewport: PHONE });
    await a.page.getByRole("searchbox").fill("history 007");
    const result = a.page.getByTestId("search-result").filter({ hasText: "history 007" }).first();
    await result.waitFor();
    assert.deepEqual(await result.locator("mark").allTextContents(), ["history", "007"]);
    await result.getByText("carol").first().waitFor();
    await result.click();
    await a.page.getByRole("heading", { name: "carol", level: 1 }).waitFor();
    await a.page.locator(".msg-row.highlight").filter({ hasText: "history 007" }).waitFor();
    // Words of a reply from another chat are found too; nothing found says so.
    await hash(a.page, "#/");
    await a.page.getByRole("searchbox").fill("zebra crossing");
    await a.page.getByText("Nothing matches “zebra crossing”.").waitFor();
    await a.done();
  });

  test("a profile's name and picture reach contacts; a contact renamed is called so everywhere, or by their own name again", async () => {
    const a = await logIn(alice, { viewport: DESKTOP });
    const b = await logIn(bob, { viewport: PHONE });
    await hash(a.page, "#/settings");
    await a.page.getByRole("link", { name: /Profile/ }).click();
    await a.page.getByLabel("Your name, as your contacts see it").fill("Alice Liddell");
    await a.page.getByRole("button", { name: "Save name" }).click();
    await a.page.getByText("Name saved.").waitFor();
    await a.page.getByTestId("profile-name").filter({ hasText: "Alice Liddell" }).waitFor();
    // A picture, cropped in the browser.
    const picture = join(root, "me.png");
    writeFileSync(picture, readFileSync(new URL("../static/icon-512.png", import.meta.url)));
    await a.page.getByLabel("Choose a picture").setInputFiles(picture);
    await a.page.getByRole("button", { name: "Use this picture" }).click();
    await a.page.getByText("Picture saved.").waitFor();
    assert.equal((await call(alice, "GET", "/v1/profile")).body.avatar, true);
    // The chat list's own picture is it.
    await a.page.locator(".list-bar img.avatar").waitFor();

    // Bob named her "Alice" when he added her: her own name shows on her page, and he can go back to it.
    await hash(b.page, `#/contact/${A}`);
    await b.page.getByTestId("display-name").filter({ hasText: "calls themself Alice Liddell" }).waitFor();
    await b.page.getByRole("button", { name: "Use their own name, Alice Liddell" }).click();
    await b.page.getByRole("heading", { name: "Alice Liddell", level: 1 }).waitFor();
    // Her picture, on her page, in the chat list and in the thread's header.
    await b.page.locator(".profile-head img.avatar").waitFor();
    await hash(b.page, "#/");
    const row = b.page.getByTestId("chat").filter({ has: b.page.locator(".chat-title", { hasText: "Alice Liddell" }) });
    await row.locator("img.avatar").waitFor();
    await row.click();
    await b.page.locator(".thread .bar img.avatar").waitFor();
    // Renamed: everywhere he sees her.
    await hash(b.page, `#/contact/${A}`);
    await b.page.getByLabel("Your name for them").fill("Ally");
    await b.page.getByRole("button", { name: "Rename" }).click();
    await b.page.getByRole("heading", { name: "Ally", level: 1 }).waitFor();
    await hash(b.page, "#/");
    await b.page.getByTestId("chat").locator(".chat-title", { hasText: "Ally" }).waitFor();
    assert.equal((await call(bob, "GET", `/v1/contacts/${A}`)).body.renamed, true);
    // In the group she is Ally to him too.
    await hash(b.page, `#/group/${group.id}`);
    await b.page.getByTestId("group-member").filter({ hasText: "Ally" }).locator("img.avatar").waitFor();
    await a.done();
    await b.done();
  });
});
