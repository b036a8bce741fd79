// The admin page's service worker: shows the node's Web Push notifications. A push carries
// {"counts": {"message.received": n, …}, "latest": {"type", …}}, encrypted to this browser.
const TITLES = {
  "message.received": (n) => (n === 1 ? "New message" : `${n} new messages`),
  "transfer.offered": (n) => (n === 1 ? "A file is offered to you" : `${n} files are offered to you`),
  "pairing.request": () => "A device asks to join",
  test: () => "Test notification from your Volli node",
};

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
  const title = (TITLES[kind] ?? (() => "Volli node"))(counts[kind] ?? 1);
  const body = latest.body ?? (latest.from ? `from ${latest.from.slice(0, 12)}…` : "");
  event.waitUntil(self.registration.showNotification(title, { body, tag: "volli", data: { kind } }));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const page = event.notification.data?.kind === "message.received" ? "conversations" : "overview";
  event.waitUntil(self.clients.openWindow(`/admin#/${page}`));
});
