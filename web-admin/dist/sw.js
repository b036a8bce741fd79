// The app's service worker: keeps the app shell so the app opens without the node (showing
// what it last had), and shows the node's Web Push notifications. A push carries
// {"counts": {"message.received": n, …}, "latest": {"type", "from"?, "group"?, "body"?}},
// encrypted to this browser. The cache's name changes with every build of the app.
const CACHE = "volli-shell-6ff307c2399b";
const SHELL = ["/", "/app.js", "/app.css", "/manifest.webmanifest", "/icon.svg", "/icon-192.png", "/icon-512.png", "/icon-180.png"];

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((c) => c.addAll(SHELL))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith("volli-shell-") && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

// The shell from the cache at once (then refreshed from the node); the API never from a cache.
self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  const isPage = request.mode === "navigate" && (url.pathname === "/" || url.pathname === "/admin" || url.pathname === "/admin/" || url.pathname === "/index.html");
  const path = isPage ? "/" : url.pathname.replace(/^\/admin\//, "/");
  if (!isPage && !SHELL.includes(path)) return;
  event.respondWith(
    caches.open(CACHE).then(async (cache) => {
      const cached = await cache.match(path);
      const fresh = fetch(path, { cache: "no-cache" })
        .then((r) => {
          if (r.ok) void cache.put(path, r.clone());
          return r;
        })
        .catch(() => undefined);
      if (cached) {
        event.waitUntil(fresh);
        return cached;
      }
      return (await fresh) ?? new Response("The app is not available offline yet.", { status: 503 });
    }),
  );
});

const TITLES = {
  "message.received": (n) => (n === 1 ? "New message" : `${n} new messages`),
  "group.message": (n) => (n === 1 ? "New message in a group" : `${n} new messages in groups`),
  "transfer.offered": (n) => (n === 1 ? "A file is offered to you" : `${n} files are offered to you`),
  "pairing.request": () => "A device asks to join",
  test: () => "Test notification from your Volli node",
};

/** Chats muted on this device (written by the app): their pushes make no sound. */
function mutedChats() {
  return new Promise((resolve) => {
    const r = indexedDB.open("volli", 1);
    r.onupgradeneeded = () => r.result.createObjectStore("kv");
    r.onerror = () => resolve([]);
    r.onsuccess = () => {
      try {
        const get = r.result.transaction("kv").objectStore("kv").get("muted");
        get.onsuccess = () => resolve(get.result ?? []);
        get.onerror = () => resolve([]);
      } catch {
        resolve([]);
      }
    };
  });
}

self.addEventListener("push", (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch {
    data = {};
  }
  const counts = data.counts ?? {};
  const latest = data.latest ?? {};
  const kind = latest.type ?? Object.keys(counts)[0] ?? "test";
  const total = Object.values(counts).reduce((a, b) => a + (Number(b) || 0), 0);
  const title = (TITLES[kind] ?? (() => "Volli"))(counts[kind] ?? 1);
  const key = latest.group ? `g:${latest.group}` : latest.from ? `u:${latest.from}` : null;
  const url = key ? `/#/chat/${key.replace(":", "/")}` : kind === "pairing.request" ? "/#/admin/devices" : "/#/";
  event.waitUntil(
    (async () => {
      const muted = key ? (await mutedChats()).includes(key) : false;
      if (total && self.navigator.setAppBadge) await self.navigator.setAppBadge(total).catch(() => {});
      await self.registration.showNotification(title, {
        body: latest.body ?? "",
        tag: key ?? "volli",
        silent: muted,
        icon: "/icon-192.png",
        data: { url },
      });
    })(),
  );
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = event.notification.data?.url ?? "/#/";
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      const open = windows.find((w) => new URL(w.url).origin === self.location.origin);
      if (open) {
        open.postMessage({ open: url });
        return open.focus();
      }
      return self.clients.openWindow(url);
    })(),
  );
});
