// The chat app's figures (docs/BENCHMARKS.md, "The chat app"), measured in Chromium against
// real nodes on loopback: `npm run bench` (VOLLI_BIN, CHROMIUM and VOLLI_WEB_DIR as for the
// browser tests). Each figure is the median of several runs unless it says otherwise.
import { gzipSync } from "node:zlib";
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";
import { call, Nodes } from "../clients/typescript/tests/nodes.mjs";

const nodes = new Nodes("volli-bench-");
const wait = (ms) => new Promise((r) => setTimeout(r, ms));
const api = async (node, method, path, body) => (await call(node, method, path, body)).body;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))];
const PHONE = { width: 390, height: 844 };
const LONG = Number(process.env.LONG ?? 10_000);

/** Records, in the page, when the first chat row and a given message first appear. */
const PROBE = () => {
  window.__marks = {};
  new MutationObserver(() => {
    const m = window.__marks;
    if (!m.chat && document.querySelector("[data-testid=chat]")) m.chat = performance.now();
    if (window.__want && !m.want) {
      for (const el of document.querySelectorAll("[data-testid=message]")) if (el.textContent.includes(window.__want)) m.want = performance.now();
    }
  }).observe(document, { childList: true, subtree: true, characterData: true });
  // When each message's event frame arrives, before the app handles it.
  window.__frames = new Map();
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (e) => {
        try {
          const ev = JSON.parse(e.data);
          if (ev.body) window.__frames.set(ev.body, performance.now());
        } catch {}
      });
    }
  };
};

try {
  const [alice, bob, carol] = await Promise.all(["alice", "bob", "carol"].map((n) => nodes.start(n, { env: { VOLLI_DEVICE_NAME: n } })));
  const [A, B, C] = await Promise.all([alice, bob, carol].map(async (n) => (await api(n, "GET", "/v1/node")).user_id));
  for (const who of [bob, carol]) await api(who, "POST", "/v1/contacts", { invite: (await api(alice, "POST", "/v1/invites", {})).link, name: "Alice" });
  for (let i = 0; i < 100 && (await api(alice, "GET", "/v1/contacts")).contacts.length < 2; i++) await wait(100);
  for (let i = 0; i < 10; i++) await api(alice, "POST", "/v1/groups", { name: `Group ${i}`, members: [B] });
  await api(bob, "POST", "/v1/messages", { to: A, body: "hello" });
  // The long thread: Carol writes LONG messages to Alice.
  const t0 = Date.now();
  for (let i = 0; i < LONG; i += 50) {
    await Promise.all(Array.from({ length: Math.min(50, LONG - i) }, (_, k) => call(carol, "POST", "/v1/messages", { to: A, body: `long ${i + k}` })));
  }
  // Sent concurrently, they arrive in any order: wait until every one is there.
  for (let i = 0; i < 600; i++) {
    const newest = (await api(alice, "GET", `/v1/messages?with=${C}&limit=500`)).messages;
    if (newest.some((m) => m.body === `long ${LONG - 1}`)) {
      const all = [];
      let before = newest[0]?.id;
      all.push(...newest);
      while (before && all.length < LONG) {
        const page = (await api(alice, "GET", `/v1/messages?with=${C}&limit=500&before=${before}`)).messages;
        if (!page.length) break;
        all.unshift(...page);
        before = page[0].id;
      }
      if (all.length >= LONG) break;
    }
    await wait(500);
  }
  console.error(`seeded ${LONG} messages in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: ["--no-sandbox", "--disable-gpu"] });
  const client = await api(alice, "POST", "/v1/clients", { name: "bench phone", scopes: ["read", "messages", "files"] });
  const results = {};

  // First load (nothing cached) and repeat visits (the service worker's shell, the kept chat list).
  const first = [];
  const repeat = [];
  for (let run = 0; run < 5; run++) {
    const context = await browser.newContext({ viewport: PHONE });
    await context.addInitScript(({ token, scopes }) => {
      if (!localStorage.getItem("volli.client")) localStorage.setItem("volli.client", JSON.stringify({ token, scopes, kind: "client" }));
      localStorage.setItem("volli.notify.asked", "1");
    }, client);
    await context.addInitScript(PROBE);
    const page = await context.newPage();
    await page.goto(`${alice.url}/`);
    await page.waitForFunction(() => window.__marks.chat);
    first.push(await page.evaluate(() => window.__marks.chat));
    await page.evaluate(() => navigator.serviceWorker.ready);
    await page.waitForFunction(() => !!navigator.serviceWorker.controller);
    await wait(800);
    for (let again = 0; again < 3; again++) {
      await page.reload();
      await page.waitForFunction(() => window.__marks.chat);
      repeat.push(await page.evaluate(() => window.__marks.chat));
    }
    await context.close();
  }
  results.firstLoad = median(first);
  results.repeatVisit = median(repeat);

  // The long thread's newest page, opened from the chat list (an admin session: nothing kept).
  const opens = [];
  const context = await browser.newContext({ viewport: PHONE });
  const login = await api(alice, "POST", "/v1/admin/login-codes", {});
  await context.addInitScript(PROBE);
  const page = await context.newPage();
  await page.goto(`${alice.url}/#code=${login.code}`);
  await page.waitForFunction(() => window.__marks.chat);
  for (let run = 0; run < 5; run++) {
    if (run) {
      await page.reload();
      await page.waitForFunction(() => window.__marks.chat);
      await wait(300);
    }
    const ms = await page.evaluate(
      ({ C, want }) =>
        new Promise((resolve) => {
          window.__want = want;
          window.__marks.want = 0;
          const start = performance.now();
          location.hash = `#/chat/u/${C}`;
          const check = () => (window.__marks.want ? resolve(window.__marks.want - start) : setTimeout(check, 5));
          check();
        }),
      { C, want: `long ${LONG - 1}` },
    );
    opens.push(ms);
    await page.evaluate(() => (location.hash = "#/"));
  }
  results.openLong = median(opens);

  // Scrolling back through 2,000 messages: the longest task while pages arrive.
  await page.evaluate((C) => (location.hash = `#/chat/u/${C}`), C);
  await page.getByTestId("message").first().waitFor();
  await page.evaluate(() => {
    window.__long = [];
    new PerformanceObserver((l) => window.__long.push(...l.getEntries().map((e) => e.duration))).observe({ type: "longtask" });
  });
  const scrollStart = Date.now();
  for (let i = 0; i < 200; i++) {
    const n = await page.getByTestId("message").count();
    if (n >= 2000) break;
    await page.locator(".timeline").evaluate((el) => (el.scrollTop = 0));
    await page.waitForFunction((n) => document.querySelectorAll("[data-testid=message]").length > n, n, { timeout: 20_000 });
  }
  const long = await page.evaluate(() => window.__long);
  results.scrollBack = { seconds: (Date.now() - scrollStart) / 1000, longest: Math.max(0, ...long), over50: long.filter((d) => d > 50).length, over100: long.filter((d) => d > 100).length };

  // A message from Bob in the open thread: its event frame to its bubble.
  await page.reload();
  await page.waitForFunction(() => window.__marks.chat);
  await page.evaluate((B) => (location.hash = `#/chat/u/${B}`), B);
  await page.getByTestId("message").first().waitFor();
  const N = 100;
  await page.evaluate(() => {
    window.__seen = new Map();
    new MutationObserver((records) => {
      const now = performance.now();
      for (const r of records)
        for (const n of r.addedNodes)
          if (n.nodeType === 1)
            for (const el of [n, ...n.querySelectorAll("[data-testid=message]")])
              if (el.dataset?.testid === "message") {
                const text = el.querySelector(".text")?.textContent;
                if (text && !window.__seen.has(text)) window.__seen.set(text, now);
              }
    }).observe(document.querySelector(".timeline"), { childList: true, subtree: true });
  });
  for (let i = 0; i < N; i++) {
    await api(bob, "POST", "/v1/messages", { to: A, body: `live ${i}` });
    await wait(30);
  }
  await page.waitForFunction((N) => window.__seen.size >= N, N, { timeout: 30_000 });
  const lat = await page.evaluate((N) => Array.from({ length: N }, (_, i) => window.__seen.get(`live ${i}`) - window.__frames.get(`live ${i}`)), N);
  results.eventToRender = { p50: pct(lat, 50), p99: pct(lat, 99), max: Math.max(...lat) };
  await browser.close();

  let gz = 0;
  for (const f of ["app.js", "sw.js"]) gz += gzipSync(readFileSync(`dist/${f}`), { level: 9 }).length;
  results.jsGzipBytes = gz;
  console.log(JSON.stringify(results, null, 2));
} finally {
  await nodes.stopAll();
}
