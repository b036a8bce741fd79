// Browser tests of the admin page: Debian's Chromium driven by playwright-core against real
// `volli` nodes. Every test fails on a console error, an uncaught exception, or a request to
// anywhere but the node itself.
//
//   VOLLI_BIN      the node binary (default ../target/debug/volli; see clients/typescript/tests/nodes.mjs)
//   PLUGIN_WASM    a plugin component to install (the SDK template's static-peers)
//   CHROMIUM       the browser (default /usr/bin/chromium)
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createECDH, randomBytes } from "node:crypto";
import { createServer } from "node:http";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { BIN, call, Nodes } from "../../clients/typescript/tests/nodes.mjs";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const PLUGIN_WASM = process.env.PLUGIN_WASM;
const nodes = new Nodes("volli-admin-");
const root = nodes.root;
let browser;

const startNode = (name, args = [], config = "") => nodes.start(name, { args, config });

/** `volli admin` for this node: the one-time login URL it prints. */
function loginUrl(node) {
  return execFileSync(BIN, ["admin", "--data-dir", node.dir], { encoding: "utf8" }).trim();
}

/** A page that records every problem: console errors, exceptions, requests elsewhere. */
async function open(node) {
  const context = await browser.newContext({ acceptDownloads: true });
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
  return {
    context,
    page,
    problems,
    /** The browser logs an API error the page handles as a failed request: expected here. */
    allow(status) {
      const i = problems.findIndex((p) => p.includes(`status of ${status}`));
      assert.ok(i >= 0, `no ${status} was logged: ${problems.join("; ")}`);
      problems.splice(i, 1);
    },
    done: async () => (await context.close(), assert.deepEqual(problems, [])),
  };
}

const PAGES = { Overview: "overview", Contacts: "contacts", Peers: "peers", Plugins: "plugins", Devices: "devices", Clients: "clients", Transfers: "transfers", Settings: "settings" };

/** Opens one of the node's pages: from the app's settings, then its tab. */
async function go(page, name) {
  if (!(await page.getByRole("navigation", { name: "Pages" }).isVisible())) {
    await page.evaluate(() => (location.hash = "#/settings"));
    await page.getByRole("heading", { name: "Settings", level: 1 }).waitFor();
    await page.getByRole("link", { name: PAGES[name] === "settings" ? "Node settings and retention" : new RegExp(`^${name}`) }).click();
  }
  await page.getByRole("navigation", { name: "Pages" }).getByRole("link", { name: name === "Settings" ? "Node settings" : name, exact: true }).click();
}

/** Opens a chat from the app's chat list. */
async function openChat(page, name) {
  await page.evaluate(() => (location.hash = "#/"));
  await page.getByTestId("chat").filter({ hasText: name }).first().click();
}

async function logIn(node) {
  const session = await open(node);
  const url = loginUrl(node);
  assert.match(url, /\/admin#code=[A-Za-z0-9_-]+$/);
  await session.page.goto(url);
  await session.page.getByRole("heading", { name: "Overview" }).waitFor();
  await session.page.getByTestId("live").filter({ hasText: "live" }).waitFor();
  return session;
}

before(async () => {
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu"] });
});

after(async () => {
  await browser?.close();
  await nodes.stopAll();
});

describe("the admin page", () => {
  let alice;
  let bob;
  before(async () => {
    [alice, bob] = await Promise.all([startNode("alice"), startNode("bob")]);
  });

  test("is served with strict security headers and needs a login", async () => {
    const r = await fetch(`${alice.url}/admin`);
    assert.equal(r.status, 200);
    const csp = r.headers.get("content-security-policy");
    assert.match(csp, /script-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.equal(r.headers.get("referrer-policy"), "no-referrer");
    assert.equal(r.headers.get("x-content-type-options"), "nosniff");

    const s = await open(alice);
    await s.page.goto(`${alice.url}/admin`);
    await s.page.getByText("volli admin").first().waitFor();
    await s.done();
  });

  test("logs in once with the one-time URL, keeps no token in the URL or localStorage", async () => {
    const url = loginUrl(alice);
    const s = await open(alice);
    await s.page.goto(url);
    await s.page.getByRole("heading", { name: "Overview" }).waitFor();
    const node = (await call(alice, "GET", "/v1/node")).body;
    await s.page.getByTestId("user-id").filter({ hasText: node.user_id }).waitFor();
    assert.ok(!s.page.url().includes("code="), `the code stays in the URL: ${s.page.url()}`);
    const token = await s.page.evaluate(() => sessionStorage.getItem("volli.session"));
    assert.ok(token);
    const kept = await s.page.evaluate(() => Object.values(localStorage).join("\n"));
    assert.ok(!kept.includes(token), "the session token is not kept in localStorage");
    await s.page.evaluate(() => (location.hash = "#/settings"));
    await s.page.getByRole("button", { name: "Log out" }).click();
    await s.page.getByText("volli admin").first().waitFor();
    await s.done();

    // The same URL a second time: refused, with the node's message.
    const again = await open(alice);
    await again.page.goto(url);
    await again.page.getByRole("alert").filter({ hasText: "already used" }).waitFor();
    again.allow(401);
    await again.done();
  });

  test("creates an invite with its QR code, adds a contact between two nodes, and messages live", async () => {
    const a = await logIn(alice);
    const b = await logIn(bob);

    await go(a.page, "Contacts");
    await a.page.getByRole("heading", { name: "Contacts", level: 1 }).waitFor();
    await a.page.getByText("No contacts yet").waitFor();
    await a.page.getByRole("button", { name: "Create invite" }).click();
    const link = (await a.page.getByTestId("invite-link").textContent()).trim();
    assert.match(link, /^volli:\/\/invite\//);
    const qr = a.page.getByRole("img", { name: "QR code of the invite link" });
    await qr.waitFor();
    assert.ok(await qr.evaluate((img) => img.complete && img.naturalWidth > 0), "the QR code is drawn");

    // Bad input: the node's own message is shown, nothing is added.
    await go(b.page, "Contacts");
    await b.page.getByLabel("Invite link").fill("volli://invite/garbage");
    await b.page.getByRole("button", { name: "Add contact" }).click();
    await b.page.getByRole("alert").waitFor();
    assert.match(await b.page.getByRole("alert").textContent(), /invite/i);
    b.allow(400);
    assert.equal((await call(bob, "GET", "/v1/contacts")).body.contacts.length, 0);

    await b.page.getByLabel("Invite link").fill(link);
    await b.page.getByLabel("Name (optional)").fill("Alice");
    await b.page.getByRole("button", { name: "Add contact" }).click();
    await b.page.getByRole("status").filter({ hasText: /Contact added|Accepted/ }).waitFor();
    await b.page.getByTestId("contact").filter({ hasText: "Alice" }).waitFor();
    // Alice's page learns of Bob live, without a reload.
    await a.page.getByTestId("contact").first().waitFor();

    // Bob writes; Alice's open conversation shows it live; Bob sees its status change.
    await a.page.getByTestId("contact").first().getByRole("link").click();
    await a.page.getByText("No messages yet.").waitFor();
    await b.page.getByTestId("contact").filter({ hasText: "Alice" }).getByRole("link").click();
    await b.page.getByRole("heading", { name: "Alice", level: 1 }).waitFor();
    await b.page.getByLabel("Message", { exact: true }).fill("hello from the browser");
    await b.page.getByLabel("Message", { exact: true }).press("Enter");
    await b.page.getByTestId("message").filter({ hasText: "hello from the browser" }).waitFor();
    await a.page.getByTestId("message").filter({ hasText: "hello from the browser" }).waitFor();
    await b.page.getByTestId("message-status").filter({ hasText: /delivered|read/i }).waitFor();

    await a.page.getByLabel("Message", { exact: true }).fill("hello back");
    await a.page.getByRole("button", { name: "Send" }).click();
    await b.page.getByTestId("message").filter({ hasText: "hello back" }).waitFor();

    // The conversation is on MLS by now: both contact pages say so, live, with both devices in it.
    for (const page of [a.page, b.page]) {
      await page.getByRole("link", { name: "Contact info" }).click();
      await page.getByTestId("encryption-kind").filter({ hasText: "End-to-end encrypted with MLS" }).waitFor();
      await page.getByTestId("encryption").locator("summary").click();
      assert.equal(await page.getByTestId("member").count(), 2);
      await page.getByTestId("member").filter({ hasText: "orders the group's changes" }).waitFor();
    }

    // The peer shows up, connected, with how it was found.
    await go(a.page, "Peers");
    await a.page.getByTestId("peer").filter({ hasText: "connected" }).first().waitFor();
    // On loopback the connection is the node's own, not through a friend's relay.
    await a.page.getByTestId("peer").filter({ hasText: "connected" }).getByTestId("path").filter({ hasText: "direct" }).first().waitFor();
    await a.done();
    await b.done();
  });

  test("creates a group, writes in it live, promotes and renames, showing the node's errors", async () => {
    const a = await logIn(alice);
    const b = await logIn(bob);
    await a.page.evaluate(() => (location.hash = "#/new"));
    await a.page.getByRole("button", { name: "New group" }).click();
    await a.page.getByLabel("Group name").fill("Friends");
    await a.page.getByRole("checkbox").first().check();
    await a.page.getByRole("button", { name: "Create group" }).click();
    await a.page.getByRole("heading", { name: "Friends", level: 1 }).waitFor();
    // Bob's chat list learns of the group live; both see both members.
    await openChat(b.page, "Friends");
    await b.page.getByRole("heading", { name: "Friends", level: 1 }).waitFor();

    await b.page.getByLabel("Message", { exact: true }).fill("hello, group");
    await b.page.getByLabel("Message", { exact: true }).press("Enter");
    await a.page.getByTestId("message").filter({ hasText: "hello, group" }).waitFor();
    await a.page.getByLabel("Message", { exact: true }).fill("hello back");
    await a.page.getByRole("button", { name: "Send" }).click();
    await b.page.getByTestId("message").filter({ hasText: "hello back" }).waitFor();
    await a.page.getByTestId("message-status").filter({ hasText: "1 of 1 delivered" }).waitFor();
    for (const page of [a.page, b.page]) {
      await page.getByRole("link", { name: "Group info" }).click();
      await page.getByTestId("group-members").locator("summary").filter({ hasText: "2 members" }).waitFor();
    }

    // Only an admin sees the controls; Alice makes Bob one, and his page shows it live.
    assert.equal(await b.page.getByRole("button", { name: "Rename" }).count(), 0);
    await a.page.getByRole("button", { name: "Make admin" }).click();
    await b.page.getByTestId("group-member").filter({ hasText: "you" }).filter({ hasText: "admin" }).waitFor();
    await b.page.getByRole("button", { name: "Rename" }).waitFor();

    // A name of spaces: the node's message, nothing changed.
    await a.page.getByLabel("Name", { exact: true }).last().fill("   ");
    await a.page.getByRole("button", { name: "Rename" }).click();
    await a.page.getByRole("alert").filter({ hasText: /name/ }).waitFor();
    a.allow(400);
    await a.page.getByLabel("Name", { exact: true }).last().fill("Old friends");
    await a.page.getByRole("button", { name: "Rename" }).click();
    await b.page.getByTestId("chat").filter({ hasText: "Old friends" }).waitFor();
    // The change shows in the thread as a line of its own.
    await b.page.getByRole("link", { name: "Back", exact: true }).click();
    await b.page.getByTestId("system-line").filter({ hasText: "renamed the group “Old friends”" }).waitFor();
    await a.done();
    await b.done();
  });

  test("deletes a message and a whole conversation and sets retention rules, showing the node's errors", async () => {
    const a = await logIn(alice);
    const [bobId] = [(await call(bob, "GET", "/v1/node")).body.user_id];
    for (const text of ["one", "two", "three"]) {
      assert.equal((await call(alice, "POST", "/v1/messages", { to: bobId, body: text })).status, 202);
    }
    await a.page.evaluate((id) => (location.hash = `#/chat/u/${id}`), bobId);
    const message = (text) => a.page.getByTestId("message").filter({ hasText: text });
    await message("three").waitFor();

    // One message, from its menu, after a confirmation; the contact keeps their copy.
    assert.equal(await a.page.getByRole("button", { name: "Delete" }).count(), 0, "no delete button on every bubble");
    await message("hello back").hover();
    await message("hello back").getByRole("button", { name: "Message actions" }).click();
    await a.page.getByRole("menuitem", { name: "Delete…" }).click();
    await a.page.getByRole("dialog").getByRole("button", { name: "Delete for me" }).click();
    await message("hello back").waitFor({ state: "detached" });
    const mine = (await call(alice, "GET", `/v1/messages?with=${bobId}`)).body.messages.map((m) => m.body);
    assert.deepEqual(mine, ["hello from the browser", "one", "two", "three"]);
    const aliceId = (await call(alice, "GET", "/v1/node")).body.user_id;
    const theirs = (await call(bob, "GET", `/v1/messages?with=${aliceId}`)).body.messages.map((m) => m.body);
    assert.ok(theirs.includes("hello back"));

    // This conversation's own rule: a bad one shows the node's message; "keep the last 2" applies.
    await a.page.getByRole("link", { name: "Contact info" }).click();
    await a.page.getByText("Retention and deletion").click();
    const form = a.page.getByTestId("retention");
    await form.getByText("follows the default rule").waitFor();
    await form.getByLabel("Newest messages to keep").fill("200000000");
    await form.getByRole("button", { name: "Save" }).click();
    await form.getByRole("alert").filter({ hasText: "keep_last" }).waitFor();
    a.allow(400);
    await form.getByLabel("Newest messages to keep").fill("2");
    await form.getByRole("button", { name: "Save" }).click();
    await a.page.getByTestId("retention").getByText("Keeps the last 2").waitFor();
    await a.page.getByRole("link", { name: "Back", exact: true }).click();
    await message("one").waitFor({ state: "detached" });
    // The list is drawn again as the rule applies: the two kept, once it settles.
    await message("hello from the browser").waitFor({ state: "detached" });
    await message("two").waitFor();
    await message("three").waitFor();
    assert.equal(await a.page.getByTestId("message").count(), 2);
    await a.page.getByRole("link", { name: "Contact info" }).click();
    await a.page.getByText("Retention and deletion").click();
    assert.deepEqual((await call(alice, "GET", "/v1/retention")).body.conversations, { [bobId]: { keep_last: 2 } });

    // The whole conversation.
    await a.page.getByRole("button", { name: "Delete the whole conversation" }).click();
    await a.page.getByRole("button", { name: "Delete every message on all my devices" }).click();
    await a.page.getByRole("status").filter({ hasText: "2 messages deleted." }).waitFor();
    await a.page.getByRole("link", { name: "Back", exact: true }).click();
    await a.page.getByText("No messages yet.").waitFor();

    // The default rule, on the settings page.
    await go(a.page, "Settings");
    const defaults = a.page.getByTestId("retention");
    await defaults.getByText("Keeps every message").waitFor();
    await defaults.getByLabel("Days to keep").fill("30");
    await defaults.getByRole("button", { name: "Save" }).click();
    await a.page.getByTestId("retention").getByText("Keeps 30 days").waitFor();
    assert.deepEqual((await call(alice, "GET", "/v1/retention")).body.default, { days: 30 });
    await a.done();
  });

  test("installs, disables, enables and configures a plugin, showing the node's errors", { skip: !PLUGIN_WASM && "PLUGIN_WASM is not set" }, async () => {
    const a = await logIn(alice);
    await go(a.page, "Plugins");
    await a.page.getByTestId("plugin-mdns").waitFor();
    await a.page.getByLabel("Component (.wasm)").setInputFiles(PLUGIN_WASM);
    await a.page.getByLabel("Grant (comma-separated)").fill("log");
    await a.page.getByRole("button", { name: "Install" }).click();
    await a.page.getByRole("status").filter({ hasText: "Installed static-peers" }).waitFor();
    const card = a.page.getByTestId("plugin-static-peers");
    await card.getByTestId("plugin-state").filter({ hasText: "running" }).waitFor();

    await card.getByRole("button", { name: "Disable" }).click();
    await card.getByTestId("plugin-state").filter({ hasText: "disabled" }).waitFor();
    assert.equal((await call(alice, "GET", "/v1/plugins/static-peers")).body.enabled, false);
    await card.getByRole("button", { name: "Enable" }).click();
    await card.getByTestId("plugin-state").filter({ hasText: "running" }).waitFor();

    // Not JSON: caught on the page. A configuration the plugin refuses: the node's message.
    await card.getByRole("button", { name: "Configure" }).click();
    const editor = card.getByLabel(/Configuration/);
    await editor.fill("{ not json");
    await card.getByRole("button", { name: "Save configuration" }).click();
    await card.getByRole("alert").filter({ hasText: "not valid JSON" }).waitFor();
    await editor.fill('{"peers": "not a list"}');
    await card.getByRole("button", { name: "Save configuration" }).click();
    await card.getByRole("alert").filter({ hasText: /.{10,}/ }).waitFor();
    a.allow(400);
    await editor.fill('{"peers": []}');
    await card.getByRole("button", { name: "Save configuration" }).click();
    await card.getByRole("status").filter({ hasText: "Saved" }).waitFor();

    await card.getByRole("button", { name: "Remove" }).click();
    await card.getByRole("button", { name: "Remove static-peers" }).click();
    await card.waitFor({ state: "detached" });
    await a.done();
  });

  test("sends a file and follows it to completion on both sides", async () => {
    const a = await logIn(alice);
    const b = await logIn(bob);
    const file = join(root, "photo.bin");
    writeFileSync(file, Buffer.alloc(3 << 20, 7));
    await go(b.page, "Transfers");
    await b.page.getByText("No transfers yet.").waitFor();
    await b.page.getByLabel("To").selectOption({ label: "Alice" });
    await b.page.getByLabel("File", { exact: true }).setInputFiles(file);
    await b.page.getByRole("button", { name: "Send" }).click();
    await b.page.getByTestId("transfer").filter({ hasText: "photo.bin" }).waitFor();

    await go(a.page, "Transfers");
    const incoming = a.page.getByTestId("transfer").filter({ hasText: "photo.bin" });
    await incoming.getByRole("button", { name: "Accept" }).click();
    await incoming.getByTestId("transfer-state").filter({ hasText: "completed" }).waitFor();
    await b.page.getByTestId("transfer").getByTestId("transfer-state").filter({ hasText: "completed" }).waitFor();
    const download = a.page.waitForEvent("download");
    await incoming.getByRole("button", { name: "Save" }).click();
    const saved = await (await download).path();
    assert.deepEqual(readFileSync(saved), readFileSync(file));

    // The overview shows what transfers and friends' mail hold, against their limits.
    await go(a.page, "Overview");
    const storage = a.page.getByTestId("transfer-storage");
    await storage.filter({ hasText: "3.0 MiB in 1 file, of at most 256.0 GiB (64.0 GiB per contact)" }).waitFor();
    await storage.filter({ hasText: "a sent file is kept 7 d 0 h" }).waitFor();
    const limits = a.page.getByTestId("relay-limits");
    await limits.getByText("max ttl secs: 7 d 0 h").waitFor();
    await limits.getByText("max bytes per depositor: 50.0 MiB").waitFor();
    await a.page.getByTestId("storage").getByText("friends-only").waitFor();

    // A file to a group: one offer, and each member's page shows it as from its sender in
    // the group.
    const aliceId = (await call(alice, "GET", "/v1/node")).body.user_id;
    const made = await call(bob, "POST", "/v1/groups", { name: "Photos", members: [aliceId] });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    for (let i = 0; i < 300; i++) {
      if ((await call(alice, "GET", `/v1/groups/${made.body.id}`)).status === 200) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const album = join(root, "album.bin");
    writeFileSync(album, Buffer.alloc(1 << 20, 9));
    await go(b.page, "Transfers");
    await b.page.getByRole("combobox", { name: /^To/ }).selectOption({ label: "Photos (group)" });
    await b.page.getByLabel("File", { exact: true }).setInputFiles(album);
    await b.page.getByRole("button", { name: "Send" }).click();
    const sentToGroup = b.page.getByTestId("transfer").filter({ hasText: "album.bin" });
    await sentToGroup.filter({ hasText: "to group Photos" }).waitFor();
    await go(a.page, "Transfers");
    const fromGroup = a.page.getByTestId("transfer").filter({ hasText: "album.bin" });
    await fromGroup.filter({ hasText: "in group Photos" }).waitFor();
    await fromGroup.getByRole("button", { name: "Accept" }).click();
    await fromGroup.getByTestId("transfer-state").filter({ hasText: "completed" }).waitFor();
    await sentToGroup.getByTestId("transfer-state").filter({ hasText: "completed" }).waitFor();
    await a.done();
    await b.done();
  });

  test("shows what this device may do and what it refused, and clears finished transfers", async () => {
    const a = await logIn(alice);
    await a.page.getByTestId("permissions").filter({ hasText: "messages, contacts, settings, admin" }).waitFor();
    // Whether others can reach the node, in words: on loopback nothing confirms an address
    // from outside, so it is still not known or knows it is not reachable yet.
    await a.page.getByTestId("reachability").filter({ hasText: /not known|not yet|through friends|other nodes connect/ }).waitFor();

    // Someone who can reach Alice's node tries a pairing code with the wrong words: the
    // Devices page says so, live.
    await go(a.page, "Devices");
    await a.page.getByTestId("device").filter({ hasText: "this device" }).waitFor();
    const offer = (await call(alice, "POST", "/v1/pairing", {})).body;
    const info = (await call(alice, "GET", "/v1/node")).body;
    const guesser = await startNode("guesser", ["--bootstrap", `${info.listen_addrs[0]}/p2p/${info.peer_id}`]);
    for (let i = 0; i < 100; i++) {
      const peers = (await call(guesser, "GET", "/v1/peers")).body.peers;
      if (peers.some((p) => p.connected)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const nameplate = offer.code.split("-")[0];
    const wrong = await call(guesser, "POST", "/v1/pairing/join", { code: `${nameplate}-abandon-ability-able` });
    assert.equal(wrong.status, 400, JSON.stringify(wrong.body));
    await a.page.getByTestId("device-warnings").filter({ hasText: "a pairing attempt failed" }).waitFor();

    // A finished transfer, deleted with the others in one go.
    const file = join(root, "declined.bin");
    writeFileSync(file, Buffer.alloc(1 << 16, 1));
    const bobId = (await call(bob, "GET", "/v1/node")).body.user_id;
    const sent = await call(alice, "POST", "/v1/transfers", { to: bobId, path: file });
    assert.equal(sent.status, 201, JSON.stringify(sent.body));
    assert.equal((await call(alice, "POST", `/v1/transfers/${sent.body.id}/cancel`)).status, 200);
    await go(a.page, "Transfers");
    const clear = a.page.getByRole("button", { name: /^Delete \d+ finished$/ });
    await clear.click();
    await a.page.getByRole("button", { name: /^Delete \d+ finished transfers/ }).click();
    await clear.waitFor({ state: "detached" });
    const left = (await call(alice, "GET", "/v1/transfers")).body.transfers;
    assert.ok(left.every((t) => !["completed", "declined", "cancelled", "failed"].includes(t.state)), JSON.stringify(left));
    await a.done();
  });

  test("logs a phone in with a QR code, shows it live, and revokes it", async () => {
    const a = await logIn(alice);
    await go(a.page, "Clients");
    await a.page.getByText("No clients yet").waitFor();

    // No scope at all: the node's own error, and nothing created.
    for (const scope of ["read", "messages"]) await a.page.getByRole("checkbox", { name: scope, exact: true }).uncheck();
    await a.page.getByRole("button", { name: "Show login code" }).click();
    await a.page.getByRole("alert").filter({ hasText: "at least one scope" }).waitFor();
    a.allow(400);
    for (const scope of ["read", "messages"]) await a.page.getByRole("checkbox", { name: scope, exact: true }).check();

    await a.page.getByLabel("Name").fill("phone");
    await a.page.getByRole("button", { name: "Show login code" }).click();
    const login = a.page.getByTestId("client-login");
    await login.getByRole("img", { name: "QR code of the client login link" }).waitFor();
    const link = await login.locator("code", { hasText: "volli://login?" }).textContent();
    const url = new URL(link);
    assert.equal(url.searchParams.get("api"), new URL(alice.url).origin, link);
    assert.ok(!link.includes("volli_c_"), "no token in the link");
    // The same code as an address the phone's browser opens (the app trades it on arrival).
    const address = await login.getByTestId("client-login-url").textContent();
    assert.equal(address, `${new URL(alice.url).origin}/#login=${encodeURIComponent(url.searchParams.get("code"))}`);

    // The phone trades the code for its token; the page shows the new client at once.
    const traded = await fetch(`${url.searchParams.get("api")}/v1/clients/login`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ code: url.searchParams.get("code") }),
    });
    assert.equal(traded.status, 201);
    const phone = { ...alice, token: (await traded.json()).token };
    const row = a.page.getByTestId("client").filter({ hasText: "phone" });
    await row.filter({ hasText: "read, messages" }).waitFor();
    assert.equal((await call(phone, "GET", "/v1/node")).status, 200);
    const refused = await call(phone, "POST", "/v1/invites", {});
    assert.equal(refused.status, 403);
    assert.equal(refused.body.error.code, "insufficient_scope");

    // A token for a script, shown once.
    await a.page.getByLabel("Name").fill("backup script");
    await a.page.getByRole("button", { name: "Create a token now" }).click();
    await a.page.getByTestId("client-token").filter({ hasText: "volli_c_" }).waitFor();
    await a.page.getByTestId("client").filter({ hasText: "backup script" }).waitFor();

    await row.getByRole("button", { name: "Revoke" }).click();
    await row.getByRole("button", { name: "Revoke phone" }).click();
    await row.waitFor({ state: "detached" });
    assert.equal((await call(phone, "GET", "/v1/node")).status, 401);
    await a.done();
  });

  test("lists push subscriptions, sends a test push and says when this browser cannot subscribe", async (t) => {
    const pushed = [];
    const service = createServer((req, res) => {
      const chunks = [];
      req.on("data", (c) => chunks.push(c));
      req.on("end", () => {
        pushed.push({ url: req.url, headers: req.headers, body: Buffer.concat(chunks) });
        res.writeHead(201).end();
      });
    });
    await new Promise((r) => service.listen(0, "127.0.0.1", r));
    t.after(() => service.close());
    const origin = `http://127.0.0.1:${service.address().port}`;
    const carol = await startNode("carol", [], "[push]\nallow_http = true\n");
    const ecdh = createECDH("prime256v1");
    ecdh.generateKeys();
    const registered = await call(carol, "POST", "/v1/push/subscriptions", {
      endpoint: `${origin}/push/phone`,
      keys: { p256dh: ecdh.getPublicKey().toString("base64url"), auth: randomBytes(16).toString("base64url") },
    });
    assert.equal(registered.status, 201, JSON.stringify(registered.body));

    const c = await logIn(carol);
    await go(c.page, "Clients");
    const row = c.page.getByTestId("subscription").filter({ hasText: `127.0.0.1:${service.address().port}` });
    await row.waitFor();
    await row.getByRole("button", { name: "Send test" }).click();
    await c.page.getByRole("status").filter({ hasText: "A test push is on its way" }).waitFor();
    for (let i = 0; i < 100 && pushed.length === 0; i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(pushed.length, 1, "one push arrived");
    assert.equal(pushed[0].url, "/push/phone");
    assert.equal(pushed[0].headers["content-encoding"], "aes128gcm");
    const vapid = (await call(carol, "GET", "/v1/push/vapid")).body.public_key;
    assert.match(pushed[0].headers.authorization, new RegExp(`^vapid t=[\\w-]+\\.[\\w-]+\\.[\\w-]+, k=${vapid}$`));
    assert.ok(!pushed[0].body.includes(Buffer.from("test")), "the payload is encrypted");

    // Headless and offline, the browser has no push service to subscribe with: the page says so.
    await c.page.getByRole("button", { name: "Notify this browser" }).click();
    await c.page.getByRole("alert").filter({ hasText: /push service|blocked|cannot receive/ }).waitFor();

    await row.getByRole("button", { name: "Remove" }).click();
    await row.waitFor({ state: "detached" });
    assert.deepEqual((await call(carol, "GET", "/v1/push/subscriptions")).body.subscriptions, []);
    await c.done();
  });

  test("shows devices, settings and the pages on a phone-sized screen", async () => {
    const a = await logIn(alice);
    // Keyboard only: Tab reaches the navigation, Enter follows a link.
    await go(a.page, "Contacts");
    await a.page.getByRole("heading", { name: "Contacts", level: 1 }).waitFor();
    await a.page.evaluate(() => document.activeElement?.blur());
    let reached = false;
    for (let i = 0; i < 40 && !reached; i++) {
      await a.page.keyboard.press("Tab");
      reached = await a.page.evaluate(() => document.activeElement?.textContent === "Overview");
    }
    assert.ok(reached, "Tab never reaches the Overview link");
    await a.page.keyboard.press("Enter");
    await a.page.getByRole("heading", { name: "Overview" }).waitFor();

    await a.page.setViewportSize({ width: 390, height: 844 });
    await go(a.page, "Devices");
    await a.page.getByTestId("device").filter({ hasText: "this device" }).waitFor();
    await a.page.getByRole("button", { name: "Create pairing code" }).click();
    await a.page.getByRole("img", { name: "QR code of the pairing link" }).waitFor();

    await go(a.page, "Settings");
    await a.page.getByLabel("Key").fill("theme");
    await a.page.getByLabel("Value (JSON)").fill('"dark"');
    await a.page.getByRole("button", { name: "Save" }).last().click();
    await a.page.getByTestId("setting").filter({ hasText: "theme" }).waitFor();
    assert.equal((await call(alice, "GET", "/v1/settings/theme")).body.value, "dark");
    await a.done();
  });
});
