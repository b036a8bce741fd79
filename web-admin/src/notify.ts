// Telling the person that something arrived: the tab title's count, the app badge, a short
// sound while the app is open on another chat, and Web Push (through the node's VAPID key and
// the service worker) while it is closed. Muted chats stay quiet everywhere.
import { api, ok } from "./client";
import { chats, isReading, muted, onIncoming, totalUnread, nameOf, chatTitle, parseKey, type Key, type Msg } from "./data";
import { Store } from "./store";

export const title = new Store("Chats");
export const sound = new Store(localStorage.getItem("volli.sound") !== "off");
export const push = new Store<"on" | "off" | "blocked" | "unsupported">(initialPush());

function initialPush(): "on" | "off" | "blocked" | "unsupported" {
  if (!("serviceWorker" in navigator) || !("PushManager" in window) || !("Notification" in window)) return "unsupported";
  if (Notification.permission === "denied") return "blocked";
  return localStorage.getItem("volli.push") ? "on" : "off";
}

export function setSound(on: boolean) {
  sound.set(on);
  localStorage.setItem("volli.sound", on ? "on" : "off");
}

/** Whether to offer notifications now: the first time the app is opened on this device. */
export const offer = new Store(push.value === "off" && !localStorage.getItem("volli.notify.asked"));
export function dismissOffer() {
  localStorage.setItem("volli.notify.asked", "1");
  offer.set(false);
}

/** Registers the service worker (the offline app shell, and push). */
export async function registerWorker(): Promise<ServiceWorkerRegistration | null> {
  if (!("serviceWorker" in navigator)) return null;
  try {
    return await navigator.serviceWorker.register("/sw.js", { scope: "/" });
  } catch {
    return null;
  }
}

/** Subscribes this browser to Web Push through the node; throws with words when it cannot. */
export async function enablePush(): Promise<void> {
  localStorage.setItem("volli.notify.asked", "1");
  offer.set(false);
  if (!("serviceWorker" in navigator) || !("PushManager" in window)) throw new Error("This browser cannot receive push notifications.");
  const permission = await Notification.requestPermission();
  if (permission !== "granted") {
    push.set(permission === "denied" ? "blocked" : "off");
    throw new Error("Notifications are blocked for this page; allow them in the browser's site settings.");
  }
  const registration = (await registerWorker()) ?? (await navigator.serviceWorker.ready);
  await navigator.serviceWorker.ready;
  const { public_key } = await ok(api.GET("/v1/push/vapid"));
  const key = Uint8Array.from(atob(public_key.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  let subscription: PushSubscription;
  try {
    subscription = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
  } catch (e) {
    throw new Error(`The browser's push service did not answer (${e instanceof Error ? e.message : String(e)}).`);
  }
  const json = subscription.toJSON();
  const made = await ok(
    api.POST("/v1/push/subscriptions", {
      body: { endpoint: json.endpoint ?? "", keys: { p256dh: json.keys?.p256dh ?? "", auth: json.keys?.auth ?? "" } },
    }),
  );
  localStorage.setItem("volli.push", JSON.stringify({ id: made.id, endpoint: json.endpoint }));
  push.set("on");
}

export async function disablePush(): Promise<void> {
  const saved = JSON.parse(localStorage.getItem("volli.push") ?? "null") as { id: string } | null;
  if (saved) await ok(api.DELETE("/v1/push/subscriptions/{id}", { params: { path: { id: saved.id } } })).catch(() => {});
  const registration = await navigator.serviceWorker?.getRegistration("/");
  await (await registration?.pushManager.getSubscription())?.unsubscribe().catch(() => false);
  localStorage.removeItem("volli.push");
  push.set("off");
}

let audio: AudioContext | null = null;
/** A short two-note chime, made here (no sound file to fetch). */
function chime() {
  try {
    audio ??= new AudioContext();
    if (audio.state === "suspended") return void audio.resume().catch(() => {});
    const t = audio.currentTime;
    for (const [i, f] of [880, 1318].entries()) {
      const o = audio.createOscillator();
      const g = audio.createGain();
      o.frequency.value = f;
      g.gain.setValueAtTime(0.0001, t + i * 0.09);
      g.gain.exponentialRampToValueAtTime(0.12, t + i * 0.09 + 0.02);
      g.gain.exponentialRampToValueAtTime(0.0001, t + i * 0.09 + 0.25);
      o.connect(g).connect(audio.destination);
      o.start(t + i * 0.09);
      o.stop(t + i * 0.09 + 0.3);
    }
  } catch {
    /* no audio: the count and badge still tell */
  }
}

/** Keeps title and badge counts, and sounds or notifies for new messages. */
export function startNotifications(): () => void {
  const update = () => {
    const n = totalUnread();
    document.title = n ? `(${n}) ${title.value} · Volli` : `${title.value} · Volli`;
    const nav = navigator as Navigator & { setAppBadge?: (n: number) => Promise<void>; clearAppBadge?: () => Promise<void> };
    if (n) void nav.setAppBadge?.(n).catch(() => {});
    else void nav.clearAppBadge?.().catch(() => {});
  };
  const offs = [chats.subscribe(update), title.subscribe(update), muted.subscribe(update)];
  const onFocus = () => update();
  window.addEventListener("focus", onFocus);
  offs.push(() => window.removeEventListener("focus", onFocus));
  offs.push(
    onIncoming((key: Key, m: Msg) => {
      if (muted.value.includes(key) || isReading(key)) return;
      if (document.visibilityState === "visible") {
        if (sound.value) chime();
        return;
      }
      // Hidden: a push notification comes from the node when this browser is subscribed.
      if (push.value === "on" || !("Notification" in window) || Notification.permission !== "granted") return;
      const group = parseKey(key).group;
      void navigator.serviceWorker?.getRegistration("/").then((r) =>
        r?.showNotification(group ? chatTitle(key) : nameOf(m.from), {
          body: group ? `${nameOf(m.from)}: ${m.body}` : m.body,
          tag: key,
          data: { url: `/#/chat/${key.replace(":", "/")}` },
        }),
      );
    }),
  );
  update();
  return () => offs.forEach((f) => f());
}
