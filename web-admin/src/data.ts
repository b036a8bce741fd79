// The app's stores, one per concern, and how the API and the event stream feed them:
// who this user is and may be, contacts and groups, the chat list, one timeline per opened
// chat, file transfers, the outbox of sends waiting for the node, typing and unread counts.
// Views read these stores and call the actions here; none of them fetches on its own.
import { api, ok, raw, session, unreachable, message as errorText, volli, type Event, type S } from "./client";
import { idb, Store } from "./store";

export type Message = S["Message"];
export type Msg = Message & { pending?: "sending" | "waiting" | "failed"; error?: string };
export type Key = string; // "u:<user id>" or "g:<group id>"
export type Sys = { id: string; at: string; text: string };
export type Chat = {
  key: Key;
  kind: "direct" | "group";
  id: string;
  title: string;
  last: Msg | null;
  unread: number;
  updated_at: string;
  disappearing_secs: number;
};
export type Timeline = {
  messages: Msg[];
  loaded: boolean;
  hasMore: boolean;
  loading: boolean;
  error: string | null;
};
export type Upload = { id: string; key: Key; name: string; size: number; sent: number; url: string | null; error: string | null };
export type Transfer = S["Transfer"] & { url?: string | null };
export type Status = "connecting" | "live" | "offline";
export type SearchResult = S["SearchResult"];

export const keyOf = (kind: "u" | "g", id: string): Key => `${kind}:${id}`;
export const parseKey = (key: Key) => ({ group: key.startsWith("g:"), id: key.slice(2) });
export const targetOf = (key: Key): { to: string } | { group: string } => {
  const { group, id } = parseKey(key);
  return group ? { group: id } : { to: id };
};
/** The chat a message, event or search result belongs to. */
export const keyFor = (x: { with?: string | null; group?: string | null }, fallback = ""): Key =>
  x.group ? keyOf("g", x.group) : keyOf("u", x.with ?? fallback);

// ---------------------------------------------------------------------------------------
// Stores

export const me = new Store<{ node: S["Node"] | null; profile: S["Profile"] | null; avatar: string | null }>({
  node: null,
  profile: null,
  avatar: null,
});
export const connection = new Store<Status>("connecting");
export const contacts = new Store<S["Contact"][]>([]);
export const pending = new Store<S["PendingView"][]>([]);
export const groups = new Store<S["Group"][]>([]);
export const chats = new Store<Chat[]>([]);
export const chatsLoaded = new Store(false);
export const transfers = new Store<Record<string, Transfer>>({});
export const uploads = new Store<Upload[]>([]);
export const progress = new Store<Record<string, number>>({});
export const system = new Store<Record<Key, Sys[]>>({});
export const typing = new Store<Record<Key, { from: string; until: number }>>({});
/** Contacts' pictures as blob URLs (null while loading or when there is none). */
export const avatars = new Store<Record<string, string | null>>({});
export const muted = new Store<string[]>(readJson("volli.muted", []));
export const settings = new Store<Record<string, unknown>>({});
export const lastEvent = new Store<Event | null>(null);
const timelines = new Map<Key, Store<Timeline>>();

/** The chat on screen now, if any (its messages are read as they are seen). */
export const openChat = new Store<Key | null>(null);

function readJson<T>(key: string, fallback: T): T {
  try {
    return (JSON.parse(localStorage.getItem(key) ?? "null") as T) ?? fallback;
  } catch {
    return fallback;
  }
}

export function timeline(key: Key): Store<Timeline> {
  let t = timelines.get(key);
  if (!t) timelines.set(key, (t = new Store<Timeline>({ messages: [], loaded: false, hasMore: true, loading: false, error: null })));
  return t;
}

// ---------------------------------------------------------------------------------------
// What this login may do: the token's scopes and this device's permissions, both.

export type Ability = "send" | "files" | "contacts" | "invite" | "admin" | "settings" | "profile" | "backup";
export function can(what: Ability): boolean {
  const scopes = session.scopes();
  const perms = me.value.node?.permissions ?? ["messages", "contacts", "settings", "admin"];
  switch (what) {
    case "send":
      return scopes.includes("messages") && perms.includes("messages");
    case "files":
      return scopes.includes("files") && perms.includes("messages");
    case "contacts":
      return scopes.includes("contacts") && perms.includes("contacts");
    case "invite":
      return scopes.includes("contacts") && perms.includes("admin");
    case "admin":
      return scopes.includes("admin");
    case "settings":
      return scopes.includes("admin") && perms.includes("settings");
    case "profile":
      return scopes.includes("contacts") && perms.includes("settings");
    case "backup":
      // Only a device holding the identity backs it up (setup, refresh, a new phrase).
      return scopes.includes("admin") && perms.includes("admin");
  }
}

// ---------------------------------------------------------------------------------------
// Names

export function myId(): string {
  return me.value.node?.user_id ?? "";
}

/** A person as this user knows them: "You", a contact's name, a group member's name. */
export function nameOf(user: string): string {
  if (user === myId()) return "You";
  const c = contacts.value.find((x) => x.user_id === user);
  if (c) return c.name || c.display_name || `${user.slice(0, 6)}…`;
  for (const g of groups.value) {
    const m = g.members.find((x) => x.user_id === user);
    if (m?.name) return m.name;
  }
  return `${user.slice(0, 6)}…`;
}

export function chatTitle(key: Key): string {
  const { group, id } = parseKey(key);
  if (group) return groups.value.find((g) => g.id === id)?.name ?? chats.value.find((c) => c.key === key)?.title ?? "Group";
  return nameOf(id);
}

/** "1 hour", "30 seconds": a disappearing timer in words. */
export function timerText(secs: number): string {
  const units: [number, string][] = [
    [604800, "week"],
    [86400, "day"],
    [3600, "hour"],
    [60, "minute"],
    [1, "second"],
  ];
  for (const [n, word] of units) if (secs >= n && secs % n === 0) return `${secs / n} ${word}${secs / n === 1 ? "" : "s"}`;
  return `${secs} seconds`;
}

/** What a system line says ("You set messages to disappear after 1 hour"). */
export function systemText(m: Message): string {
  const s = (m.system ?? {}) as { timer?: number; by?: string; added?: string; removed?: string; role?: string; user?: string; name?: string };
  if (typeof s.timer === "number") {
    const by = nameOf(s.by ?? m.from);
    return s.timer ? `${by} set messages to disappear after ${timerText(s.timer)}` : `${by} turned off disappearing messages`;
  }
  // A group's roster (the node writes a line for each change, on every member's devices).
  const you = (u: string) => u === myId();
  if (s.added) return s.by ? `${nameOf(s.by)} added ${you(s.added) ? "you" : nameOf(s.added)}` : `${nameOf(s.added)} ${you(s.added) ? "were" : "was"} added`;
  if (s.removed) return you(s.removed) ? "You are no longer a member" : `${nameOf(s.removed)} is no longer a member`;
  if (s.role && s.user) return `${nameOf(s.user)} ${you(s.user) ? "are" : "is"} now ${s.role === "admin" ? "an admin" : "a member"}`;
  if (typeof s.name === "string") return `${s.by ? nameOf(s.by) : "Someone"} renamed the group “${s.name}”`;
  return m.body || "The conversation changed";
}

/** Whether a system line is about a disappearing timer. */
export function isTimerLine(m: Message): boolean {
  return typeof (m.system as { timer?: unknown } | null | undefined)?.timer === "number";
}

/** A message in one line, for the chat list and quotes. */
export function summary(m: Message): string {
  if (m.deleted) return "This message was deleted";
  if (m.kind === "system") return systemText(m);
  if (m.kind === "file" && m.file) return `${m.file.mime.startsWith("image/") ? "📷" : "📎"} ${m.file.name}`;
  return m.body;
}

// ---------------------------------------------------------------------------------------
// Loading

let persist = false;
let stopStream: (() => void) | null = null;

/** Starts the app's data: what was kept on this device first, then the node, then live events. */
export async function start(): Promise<void> {
  persist = session.kind() === "client";
  if (persist) await restore();
  stopStream?.();
  const stream = volli.events();
  const offAny = stream.onAny(onEvent);
  const offStatus = stream.onStatus((s) => {
    const status: Status = s === "closed" ? "offline" : s;
    connection.set(status);
    if (status === "live") void flushOutbox();
  });
  stopStream = () => (offAny(), offStatus(), stream.close());
  await refreshAll();
}

export function stop() {
  stopStream?.();
  stopStream = null;
}

let everLive = false;
let fresh = false;
async function refreshAll(): Promise<void> {
  try {
    const node = await ok(api.GET("/v1/node"));
    me.update((m) => ({ ...m, node }));
    await Promise.all([loadContacts(), loadGroups(), loadTransfers(), loadSettings(), loadProfile()]);
    await loadChats();
    for (const [key, t] of timelines) if (t.value.loaded) void refreshTimeline(key);
    fresh = true;
  } catch (e) {
    if (!unreachable(e)) throw e;
  }
}

async function loadNode() {
  const node = await ok(api.GET("/v1/node"));
  me.update((m) => ({ ...m, node }));
}

/** An image of the API as a blob URL, or null when there is none (404 `no_avatar`). */
async function imageUrl(path: string): Promise<string | null> {
  try {
    return URL.createObjectURL(await (await raw("GET", path)).blob());
  } catch {
    return null;
  }
}

async function loadProfile() {
  const profile = await ok(api.GET("/v1/profile")).catch(() => null);
  const avatar = profile?.avatar ? await imageUrl("/v1/profile/avatar") : null;
  const old = me.value.avatar;
  if (old) URL.revokeObjectURL(old);
  me.update((m) => ({ ...m, profile, avatar }));
}

async function loadSettings() {
  const s = await ok(api.GET("/v1/settings"));
  settings.set((s.settings ?? {}) as Record<string, unknown>);
}

/** A contact's picture, fetched again (it changed, or it is new). */
function loadAvatar(user: string, has: boolean) {
  const old = avatars.value[user];
  if (!has) {
    if (old) URL.revokeObjectURL(old);
    avatars.update((a) => ({ ...a, [user]: null }));
    return;
  }
  void imageUrl(`/v1/contacts/${encodeURIComponent(user)}/avatar`).then((url) => {
    if (old) URL.revokeObjectURL(old);
    avatars.update((a) => ({ ...a, [user]: url }));
  });
}

async function loadContacts() {
  const list = await ok(api.GET("/v1/contacts"));
  contacts.set(list.contacts);
  pending.set(list.pending);
  for (const c of list.contacts) if (c.avatar && avatars.value[c.user_id] === undefined) loadAvatar(c.user_id, true);
}

async function loadGroups() {
  const list = await ok(api.GET("/v1/groups"));
  const before = new Map(groups.value.map((g) => [g.id, g]));
  groups.set(list.groups);
  // The lines a roster change wrote in a group's conversation ("Alice added Carol").
  if (list.groups.some((g) => { const old = before.get(g.id); return old && (old.epoch !== g.epoch || old.name !== g.name); })) reloadSoon(reloadOpen);
}

async function loadTransfers() {
  const list = await ok(api.GET("/v1/transfers"));
  const old = transfers.value;
  const map: Record<string, Transfer> = {};
  for (const t of list.transfers) map[t.id] = { ...t, url: old[t.id]?.url ?? null };
  transfers.set(map);
}

async function loadTransfer(id: string) {
  try {
    const t = await ok(api.GET("/v1/transfers/{id}", { params: { path: { id } } }));
    transfers.update((m) => ({ ...m, [id]: { ...t, url: m[id]?.url ?? null } }));
  } catch {
    /* forgotten: the conversation's item keeps what it last said */
  }
}

// ---------------------------------------------------------------------------------------
// The chat list (the node's: GET /v1/conversations, unread counts kept on every device)

const byActivity = (a: Chat, b: Chat) => b.updated_at.localeCompare(a.updated_at);

/** Chats changed here by an event (a message in or out), by when: a list asked before keeps them. */
let bumps = 0;
const bumped = new Map<Key, number>();
let listAsked = 0;
let listShown = 0;

async function loadChats() {
  const asked = ++listAsked;
  const since = bumps;
  const list = await ok(api.GET("/v1/conversations"));
  // An answer to an older question, once a newer one is shown, is stale.
  if (asked < listShown) return;
  listShown = asked;
  const here = new Map(chats.value.map((c) => [c.key, c]));
  const fresh = list.conversations.map(fromConversation).map((c) => {
    if (readingNow.has(c.key)) c = { ...c, unread: Math.min(c.unread, readingNow.get(c.key)!) };
    // A message this page put in the list while the node was answering stays there.
    const local = here.get(c.key);
    if ((bumped.get(c.key) ?? 0) > since && local?.last && (!c.last || local.last.sent_at > c.last.sent_at)) return { ...c, last: local.last, updated_at: local.updated_at, unread: Math.max(c.unread, local.unread) };
    return c;
  });
  for (const [key, n] of bumped) if (n > since && !fresh.some((c) => c.key === key) && here.has(key)) fresh.push(here.get(key)!);
  chats.set(fresh.sort(byActivity));
  chatsLoaded.set(true);
  save();
}

function fromConversation(c: S["ChatView"]): Chat {
  const group = c.kind === "group";
  const id = (group ? c.group : c.with) ?? "";
  return {
    key: keyOf(group ? "g" : "u", id),
    kind: group ? "group" : "direct",
    id,
    title: c.title,
    last: c.last_message ?? null,
    unread: c.unread,
    updated_at: c.updated_at ?? "",
    disappearing_secs: c.disappearing_secs,
  };
}

/** Puts a message at the top of the chat list (a new one, or one this user sent). */
function bump(key: Key, m: Msg, incoming: boolean) {
  chats.update((list) => {
    const i = list.findIndex((c) => c.key === key);
    const { group, id } = parseKey(key);
    const chat: Chat = i >= 0 ? list[i]! : { key, kind: group ? "group" : "direct", id, title: chatTitle(key), last: null, unread: 0, updated_at: m.sent_at, disappearing_secs: 0 };
    if (chat.last && chat.last.sent_at > m.sent_at && !m.pending) return list;
    const updated: Chat = { ...chat, last: m, updated_at: m.sent_at > chat.updated_at ? m.sent_at : new Date().toISOString(), unread: incoming && !m.pending ? chat.unread + 1 : chat.unread };
    return [updated, ...list.filter((c) => c.key !== key)].sort(byActivity);
  });
  bumped.set(key, ++bumps);
  save();
}

/** Whether the person is looking at this chat right now. */
export function isReading(key: Key): boolean {
  return openChat.value === key && document.visibilityState === "visible" && document.hasFocus();
}

export function totalUnread(): number {
  return chats.value.filter((c) => !muted.value.includes(c.key)).reduce((n, c) => n + c.unread, 0);
}

const readPosted = new Map<Key, string>();
/** Chats whose read mark is on its way to the node: their count as this device has it meanwhile. */
const readingNow = new Map<Key, number>();

/**
 * Marks a chat read up to `upTo`, the newest message from someone else that the person has
 * seen: the node drops the unread count on every device of this user and (unless setting
 * `receipts.read` is false) tells the sender. Nothing is posted when nothing was unread.
 */
export function markRead(key: Key, upTo: Msg) {
  const chat = chats.value.find((c) => c.key === key);
  if (!chat?.unread) return;
  const t = timeline(key).value;
  const after = t.messages.filter((m) => !m.pending && m.from !== myId() && m.sent_at > upTo.sent_at).length;
  if (after >= chat.unread) return;
  chats.update((list) => list.map((c) => (c.key === key ? { ...c, unread: after } : c)));
  const posted = t.messages.find((m) => m.id === readPosted.get(key));
  if (posted && posted.sent_at >= upTo.sent_at) return;
  readPosted.set(key, upTo.id);
  readingNow.set(key, after);
  const { group, id } = parseKey(key);
  void ok(api.POST("/v1/messages/read", { body: { ...(group ? { group: id } : { with: id }), up_to: upTo.id } }))
    .catch(() => readPosted.delete(key))
    .finally(() => readingNow.delete(key));
}

export function setMuted(key: Key, on: boolean) {
  muted.update((m) => (on ? [...new Set([...m, key])] : m.filter((k) => k !== key)));
  localStorage.setItem("volli.muted", JSON.stringify(muted.value));
  void idb.set("muted", muted.value).catch(() => {});
}

/** Sets a chat's disappearing timer (0: off); in a group only its admins may. */
export async function setTimer(key: Key, secs: number) {
  const { group, id } = parseKey(key);
  if (group) {
    const g = await ok(api.PATCH("/v1/groups/{id}", { params: { path: { id } }, body: { disappearing_secs: secs } }));
    groups.update((gs) => gs.map((x) => (x.id === id ? g : x)));
  } else await ok(api.PUT("/v1/conversations/{user_id}/disappearing", { params: { path: { user_id: id } }, body: { secs } }));
  chats.update((cs) => cs.map((c) => (c.key === key ? { ...c, disappearing_secs: secs } : c)));
}

/** The timer of a chat, as the chat list or the group says. */
export function timerOf(key: Key): number {
  const { group, id } = parseKey(key);
  const chat = chats.value.find((c) => c.key === key);
  if (chat) return chat.disappearing_secs;
  return group ? (groups.value.find((g) => g.id === id)?.disappearing_secs ?? 0) : 0;
}

// ---------------------------------------------------------------------------------------
// Timelines

const PAGE = 50;

function query(key: Key, extra: { before?: string; limit: number }) {
  const { group, id } = parseKey(key);
  return group ? { group: id, ...extra } : { with: id, ...extra };
}

function sortMessages(list: Msg[]): Msg[] {
  // As the node orders them: by time, then by id (messages sent in the same millisecond).
  return list.sort((a, b) => (a.pending && !b.pending ? 1 : !a.pending && b.pending ? -1 : a.sent_at < b.sent_at ? -1 : a.sent_at > b.sent_at ? 1 : a.pending ? 0 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** Loads the newest page of a chat, once (later only refreshed). */
export async function openTimeline(key: Key) {
  const t = timeline(key);
  if (t.value.loaded || t.value.loading) return;
  await refreshTimeline(key);
}

async function refreshTimeline(key: Key) {
  const t = timeline(key);
  t.update((v) => ({ ...v, loading: true }));
  try {
    const page = (await ok(api.GET("/v1/messages", { params: { query: query(key, { limit: PAGE }) } }))).messages as Msg[];
    t.update((v) => {
      const first = page[0]?.sent_at ?? "";
      const last = page.at(-1)?.sent_at ?? "";
      const fresh = new Set(page.map((m) => m.id));
      // Older pages already loaded stay, and so do messages that came live while this page was
      // on its way; the newest page replaces what it covers.
      // (A message of the same millisecond as the page's first or last is outside it too.)
      const kept = v.messages.filter((m) => !m.pending && !fresh.has(m.id) && (page.length < PAGE ? m.sent_at > last : m.sent_at <= first || m.sent_at > last));
      const waiting = v.messages.filter((m) => m.pending);
      return {
        messages: sortMessages([...kept, ...page, ...waiting]),
        loaded: true,
        hasMore: v.loaded ? v.hasMore : page.length === PAGE,
        loading: false,
        error: null,
      };
    });
    save();
  } catch (e) {
    t.update((v) => ({ ...v, loading: false, error: v.loaded ? null : errorText(e) }));
  }
}

/** The page before the oldest loaded message; false when there is nothing more. */
export async function loadOlder(key: Key): Promise<boolean> {
  const t = timeline(key);
  const v = t.value;
  if (v.loading || !v.hasMore) return false;
  const oldest = v.messages.find((m) => !m.pending);
  if (!oldest) return false;
  t.set({ ...v, loading: true });
  try {
    const page = (await ok(api.GET("/v1/messages", { params: { query: query(key, { before: oldest.id, limit: PAGE }) } }))).messages as Msg[];
    t.update((w) => {
      const have = new Set(w.messages.map((m) => m.id));
      return { ...w, messages: [...page.filter((m) => !have.has(m.id)), ...w.messages], hasMore: page.length === PAGE, loading: false };
    });
    return page.length > 0;
  } catch (e) {
    t.update((w) => ({ ...w, loading: false, error: errorText(e) }));
    return false;
  }
}

/** Pages back until a message is loaded (a search result, a quoted reply). */
export async function findMessage(key: Key, id: string): Promise<boolean> {
  const t = timeline(key);
  const idle = () =>
    new Promise<void>((resolve) => {
      if (!t.value.loading) return resolve();
      const off = t.subscribe(() => !t.value.loading && (off(), resolve()));
    });
  await openTimeline(key);
  for (let i = 0; i < 1000; i++) {
    await idle();
    if (t.value.messages.some((m) => m.id === id)) return true;
    if (!t.value.hasMore || t.value.error) return false;
    // Another reader (the scroll) may be loading the same page: wait for it instead.
    if (!t.value.loading) await loadOlder(key);
  }
  return false;
}

function patchMessage(id: string, f: (m: Msg) => Msg | null, key?: Key): boolean {
  const stores = key ? [timeline(key)] : [...timelines.values()];
  let found = false;
  for (const t of stores) {
    const i = t.value.messages.findIndex((m) => m.id === id);
    if (i < 0) continue;
    found = true;
    const updated = f(t.value.messages[i]!);
    const messages = [...t.value.messages];
    if (updated) messages[i] = updated;
    else messages.splice(i, 1);
    t.set({ ...t.value, messages });
  }
  chats.update((list) => (list.some((c) => c.last?.id === id) ? list.map((c) => (c.last?.id === id ? { ...c, last: f(c.last!) } : c)) : list));
  return found;
}

function addMessage(key: Key, m: Msg) {
  const t = timeline(key);
  // A chat not opened yet gets its messages when it is; one being loaded keeps what comes meanwhile.
  if ((t.value.loaded || t.value.loading) && !t.value.messages.some((x) => x.id === m.id)) {
    t.set({ ...t.value, messages: sortMessages([...t.value.messages, m]) });
  }
}

/** One message from the node (a file offer, a line the event did not carry), into its chat. */
async function fetchMessage(id: string, tries = 3): Promise<Msg | null> {
  for (let i = 0; i < tries; i++) {
    try {
      return (await ok(api.GET("/v1/messages/{id}", { params: { path: { id } } }))) as Msg;
    } catch {
      await new Promise((r) => setTimeout(r, 300 * (i + 1)));
    }
  }
  return null;
}

// ---------------------------------------------------------------------------------------
// Sending, and the outbox of sends the node has not taken yet

const statusSeen = new Map<string, string>();
type Out = { local: string; key: Key; body: string; replyTo?: string; at: string };
export const outbox = new Store<Out[]>([]);
let localSeq = 0;

function localMessage(key: Key, out: Out, from: string, pendingState: Msg["pending"]): Msg {
  const { group, id } = parseKey(key);
  return { id: out.local, from, to: id, ...(group ? { group: id } : {}), kind: "text", body: out.body, sent_at: out.at, status: "sending", pending: pendingState, reply_to: out.replyTo ?? null, reactions: [], deleted: false };
}

export async function send(key: Key, body: string, replyTo?: string) {
  const local = `local:${Date.now().toString(36)}${(localSeq++).toString(36)}`;
  const out: Out = { local, key, body, at: new Date().toISOString(), ...(replyTo ? { replyTo } : {}) };
  const m = localMessage(key, out, myId(), "sending");
  addMessage(key, m);
  bump(key, m, false);
  outbox.update((o) => [...o, out]);
  save();
  await flushOutbox();
}

let flushing = false;
let retryTimer: ReturnType<typeof setTimeout> | undefined;
let retryDelay = 1000;

/** Sends what waits, in order; what the node does not answer for waits for the next try. */
export async function flushOutbox() {
  if (flushing) return;
  flushing = true;
  clearTimeout(retryTimer);
  try {
    while (outbox.value.length) {
      const out = outbox.value[0]!;
      try {
        const sent = await ok(api.POST("/v1/messages", { body: { ...targetOf(out.key), body: out.body, ...(out.replyTo ? { reply_to: out.replyTo } : {}) } }));
        outbox.update((o) => o.filter((x) => x.local !== out.local));
        const status = statusSeen.get(sent.id) ?? sent.status;
        // The node's event for this message may have come first (a group echoes it): keep one.
        if (timeline(out.key).value.messages.some((m) => m.id === sent.id)) patchMessage(out.local, () => null, out.key);
        else patchMessage(out.local, (m) => ({ ...m, id: sent.id, status, pending: undefined as never }), out.key);
        retryDelay = 1000;
      } catch (e) {
        if (unreachable(e)) {
          patchMessage(out.local, (m) => ({ ...m, pending: "waiting" }), out.key);
          for (const o of outbox.value) patchMessage(o.local, (m) => ({ ...m, pending: "waiting" }), o.key);
          retryTimer = setTimeout(() => void flushOutbox(), retryDelay);
          retryDelay = Math.min(retryDelay * 2, 15_000);
          break;
        }
        outbox.update((o) => o.filter((x) => x.local !== out.local));
        patchMessage(out.local, (m) => ({ ...m, pending: "failed", error: errorText(e) }), out.key);
      }
    }
  } finally {
    flushing = false;
    save();
  }
}

/** Tries a failed send again. */
export function retry(key: Key, m: Msg) {
  patchMessage(m.id, () => null, key);
  void send(key, m.body, m.reply_to ?? undefined);
}

export function discard(key: Key, m: Msg) {
  outbox.update((o) => o.filter((x) => x.local !== m.id));
  patchMessage(m.id, () => null, key);
  save();
}

export async function deleteForMe(key: Key, id: string) {
  await ok(api.DELETE("/v1/messages/{id}", { params: { path: { id } } }));
  patchMessage(id, () => null, key);
  reloadSoon(reloadChats);
}

export async function deleteForEveryone(key: Key, id: string) {
  await ok(api.DELETE("/v1/messages/{id}", { params: { path: { id }, query: { for: "everyone" } } }));
  patchMessage(id, (m) => ({ ...m, deleted: true, body: "", reactions: [] }), key);
}

export async function edit(key: Key, id: string, body: string) {
  const m = await ok(api.PATCH("/v1/messages/{id}", { params: { path: { id } }, body: { body } }));
  patchMessage(id, (old) => ({ ...old, ...m }), key);
}

/** Reacts with `emoji`, or takes this user's reaction back when it is that one already. */
export async function react(key: Key, m: Msg, emoji: string) {
  const mine = m.reactions.find((r) => r.emoji === emoji)?.from.includes(myId());
  const path = { params: { path: { id: m.id } } };
  const updated = mine
    ? await ok(api.DELETE("/v1/messages/{id}/reactions/{emoji}", { params: { path: { id: m.id, emoji } } }))
    : await ok(api.POST("/v1/messages/{id}/reactions", { ...path, body: { emoji } }));
  patchMessage(m.id, (old) => ({ ...old, reactions: updated.reactions }), key);
}

/** One person's reaction (or none) on a message: at most one each. */
function setReaction(m: Msg, from: string, emoji: string | null | undefined): Msg {
  const reactions = m.reactions.map((r) => ({ ...r, from: r.from.filter((u) => u !== from) })).filter((r) => r.from.length);
  if (emoji) {
    const r = reactions.find((x) => x.emoji === emoji);
    if (r) r.from = [...r.from, from];
    else reactions.push({ emoji, from: [from] });
  }
  return { ...m, reactions };
}

let lastTyping = 0;
let lastTypingKey: Key | null = null;
/** Tells the other side this user is typing (the node sends at most one frame per 3 s). */
export function sendTyping(key: Key) {
  if (!can("send") || (lastTypingKey === key && Date.now() - lastTyping < 2000)) return;
  lastTyping = Date.now();
  lastTypingKey = key;
  void ok(api.POST("/v1/typing", { body: targetOf(key) })).catch(() => {});
}

function stopTyping(key: Key, from: string) {
  if (typing.value[key]?.from === from) typing.update((t) => (({ [key]: _x, ...rest }) => rest)(t));
}

// ---------------------------------------------------------------------------------------
// Files

let uploadSeq = 0;
// The API takes a thumbnail of up to 16 KiB, but the node's file offer between nodes is a
// request of at most 8 KiB that carries it several times over: an offer whose thumbnail is
// longer than about 1,800 characters never reaches the other side. Kept well under that (the
// file's name travels in the same request).
const THUMB = 1200;
const PICTURE = /^image\/(png|jpeg|webp|gif|bmp|avif)$/;

/** A small picture of an image (a WebP or JPEG data URL), drawn on a canvas; null for others. */
export async function thumbnail(file: Blob): Promise<string | null> {
  if (!PICTURE.test(file.type)) return null;
  try {
    const bitmap = await createImageBitmap(file);
    for (const side of [96, 72, 56, 40]) {
      const scale = Math.min(1, side / Math.max(bitmap.width, bitmap.height));
      const canvas = document.createElement("canvas");
      canvas.width = Math.max(1, Math.round(bitmap.width * scale));
      canvas.height = Math.max(1, Math.round(bitmap.height * scale));
      const ctx = canvas.getContext("2d")!;
      // Transparent pictures get a white ground (JPEG has no alpha).
      ctx.fillStyle = "#fff";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      for (const q of [0.6, 0.45, 0.3]) {
        for (const type of ["image/webp", "image/jpeg"]) {
          const url = canvas.toDataURL(type, q);
          // A browser that cannot write WebP gives a PNG instead: not what was asked.
          if (url.startsWith(`data:${type};`) && url.length <= THUMB) return url;
        }
      }
    }
  } catch {
    /* not a picture the browser can read: sent without one */
  }
  return null;
}

/** Sends a file into a chat, with its upload progress on the bubble and a thumbnail of a picture. */
export async function sendFile(key: Key, file: File) {
  const id = `upload:${uploadSeq++}`;
  const image = PICTURE.test(file.type) ? URL.createObjectURL(file) : null;
  uploads.update((u) => [...u, { id, key, name: file.name, size: file.size, sent: 0, url: image, error: null }]);
  const thumb = await thumbnail(file);
  const { group, id: target } = parseKey(key);
  const q = new URLSearchParams({ [group ? "group" : "to"]: target, name: file.name });
  if (file.type) q.set("mime", file.type);
  if (thumb) q.set("thumbnail", thumb);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", `/v1/transfers?${q}`);
  xhr.setRequestHeader("Authorization", `Bearer ${session.get() ?? ""}`);
  xhr.setRequestHeader("Content-Type", "application/octet-stream");
  xhr.upload.onprogress = (e) => uploads.update((u) => u.map((x) => (x.id === id ? { ...x, sent: e.loaded } : x)));
  const fail = (text: string) => uploads.update((u) => u.map((x) => (x.id === id ? { ...x, error: text } : x)));
  xhr.onerror = () => fail("The node cannot be reached. Is it running?");
  xhr.onload = () => {
    let answer = null as { id?: string; error?: { message?: string } } | null;
    try {
      answer = JSON.parse(xhr.responseText) as { id?: string; error?: { message?: string } } | null;
    } catch {
      /* not JSON: the status says enough */
    }
    if (xhr.status !== 201 || !answer?.id) return fail(answer?.error?.message ?? `The node answered ${xhr.status}.`);
    const t = answer as unknown as S["Transfer"];
    transfers.update((m) => ({ ...m, [t.id]: { ...t, url: image } }));
    // The offer is an item of the conversation, with the transfer's id.
    void fetchMessage(t.id).then((m) => {
      uploads.update((u) => u.filter((x) => x.id !== id));
      if (!m) return;
      addMessage(key, m);
      bump(key, m, false);
    });
  };
  xhr.send(file);
}

export function dismissUpload(id: string) {
  uploads.update((u) => u.filter((x) => x.id !== id));
}

export async function transferAction(id: string, what: "accept" | "decline" | "cancel" | "pause" | "resume") {
  const path = { params: { path: { id } } };
  const call = {
    accept: () => api.POST("/v1/transfers/{id}/accept", path),
    decline: () => api.POST("/v1/transfers/{id}/decline", path),
    cancel: () => api.POST("/v1/transfers/{id}/cancel", path),
    pause: () => api.POST("/v1/transfers/{id}/pause", path),
    resume: () => api.POST("/v1/transfers/{id}/resume", path),
  }[what];
  const t = await ok(call());
  transfers.update((m) => ({ ...m, [id]: { ...t, url: m[id]?.url ?? null } }));
}

/** A received file's bytes as a blob URL (pictures are shown in place with it). */
export async function contentUrl(t: Transfer): Promise<string> {
  if (t.url) return t.url;
  const blob = await (await raw("GET", `/v1/transfers/${encodeURIComponent(t.id)}/content`)).blob();
  const url = URL.createObjectURL(blob);
  transfers.update((m) => (m[t.id] ? { ...m, [t.id]: { ...m[t.id]!, url } } : m));
  return url;
}

// ---------------------------------------------------------------------------------------
// Search, profile, contacts

/** Messages of every conversation (or one) that hold the words, newest first. */
export async function search(q: string, options: { key?: Key; before?: string; limit?: number } = {}): Promise<SearchResult[]> {
  const where = options.key ? (parseKey(options.key).group ? { group: parseKey(options.key).id } : { with: parseKey(options.key).id }) : {};
  const query = { q, limit: options.limit ?? 30, ...where, ...(options.before ? { before: options.before } : {}) };
  return (await ok(api.GET("/v1/search", { params: { query } }))).results;
}

export async function setProfileName(name: string) {
  const profile = await ok(api.PUT("/v1/profile", { body: { name } }));
  me.update((m) => ({ ...m, profile }));
}

export async function setAvatar(image: Blob | null) {
  if (image) await raw("PUT", "/v1/profile/avatar", { body: image, headers: { "Content-Type": image.type } });
  else await raw("DELETE", "/v1/profile/avatar");
  await loadProfile();
}

/** This user's own name for a contact; null: the contact's own name again. */
export async function renameContact(user: string, name: string | null) {
  const c = await ok(api.PATCH("/v1/contacts/{user_id}", { params: { path: { user_id: user } }, body: { name } }));
  contacts.update((cs) => cs.map((x) => (x.user_id === user ? c : x)));
  chats.update((cs) => cs.map((x) => (x.key === keyOf("u", user) ? { ...x, title: c.name } : x)));
}

export async function setSetting(key: string, value: unknown) {
  if (value === undefined) await ok(api.DELETE("/v1/settings/{key}", { params: { path: { key } } }));
  else await ok(api.PUT("/v1/settings/{key}", { params: { path: { key } }, body: { value } }));
  settings.update((s) => {
    const { [key]: _old, ...rest } = s;
    return value === undefined ? rest : { ...rest, [key]: value };
  });
}

// ---------------------------------------------------------------------------------------
// Events

const incomingListeners = new Set<(key: Key, m: Msg) => void>();
/** Called with every message from someone else (for sounds and notifications). */
export function onIncoming(f: (key: Key, m: Msg) => void): () => void {
  incomingListeners.add(f);
  return () => incomingListeners.delete(f);
}

let reloadTimer: ReturnType<typeof setTimeout> | undefined;
const reloads = new Set<() => Promise<unknown>>();
/** Reloads run once for a burst of events (a sync brings many at once). */
function reloadSoon(f: () => Promise<unknown>) {
  reloads.add(f);
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(() => {
    const all = [...reloads];
    reloads.clear();
    void (async () => {
      for (const r of all) await r().catch(() => {});
    })();
  }, 150);
}
const reloadChats = () => loadChats();
const reloadContacts = async () => (await loadContacts(), await loadChats());
const reloadGroups = async () => (await loadGroups(), await loadChats());
const reloadOpen = async () => {
  for (const [key, t] of timelines) if (t.value.loaded) await refreshTimeline(key);
};
const reloadTransfers = () => loadTransfers();

/** A received message: into its timeline and to the top of the chat list. */
function received(key: Key, m: Msg) {
  addMessage(key, m);
  // The event does not say when a message of a chat with a timer disappears: the node does.
  if (timerOf(key) > 0 && !m.expires_at) void fetchMessage(m.id, 1).then((full) => full && patchMessage(m.id, (x) => ({ ...x, expires_at: full.expires_at }), key));
  stopTyping(key, m.from);
  bump(key, m, true);
  incomingListeners.forEach((f) => f(key, m));
  reloadSoon(reloadChats);
}

function onEvent(raw: Event) {
  const e = raw;
  lastEvent.set(raw);
  switch (e.type) {
    case "ready":
      // The first `ready` follows the first load, unless that found the node away.
      if (everLive || !fresh) void refreshAll();
      everLive = true;
      break;
    case "resync":
      void refreshAll();
      break;
    case "message.received": {
      const key = keyOf("u", e.from);
      received(key, { id: e.id, from: e.from, to: myId(), kind: "text", body: e.body, sent_at: e.sent_at, status: "received", reply_to: e.reply_to ?? null, reactions: [], deleted: false });
      break;
    }
    case "group.message": {
      const key = keyOf("g", e.group);
      const mine = e.from === myId();
      const m: Msg = { id: e.id, from: e.from, to: e.group, group: e.group, kind: "text", body: e.body, sent_at: e.sent_at, status: mine ? "delivered" : "received", reply_to: e.reply_to ?? null, reactions: [], deleted: false, read_by: [] };
      if (mine) {
        if (timeline(key).value.messages.some((x) => x.id === e.id)) break;
        addMessage(key, m);
        bump(key, m, false);
      } else received(key, m);
      break;
    }
    case "message.status":
      // The status may come before the answer to the send that made the message.
      statusSeen.set(e.id, e.status);
      if (statusSeen.size > 500) statusSeen.delete(statusSeen.keys().next().value!);
      patchMessage(e.id, (m) => ({ ...m, status: e.status }));
      // A group message's receipts (who has it) come with the message itself.
      if ([...timelines].some(([key, t]) => key.startsWith("g:") && t.value.messages.some((m) => m.id === e.id))) reloadSoon(reloadOpen);
      break;
    case "messages.deleted":
      for (const id of e.ids) patchMessage(id, () => null);
      reloadSoon(reloadChats);
      break;
    case "message.edited":
      patchMessage(e.id, (m) => ({ ...m, body: e.body, edited_at: e.edited_at }));
      break;
    case "message.deleted":
      patchMessage(e.id, (m) => ({ ...m, deleted: true, body: "", reactions: [], file: m.file ? { ...m.file, thumbnail: null } : null }));
      reloadSoon(reloadChats);
      break;
    case "message.reaction":
      patchMessage(e.id, (m) => setReaction(m, e.from, e.emoji));
      break;
    case "message.read": {
      const key = keyFor(e);
      if (e.by === myId()) {
        // Read on another device of this user: its count drops here too.
        reloadSoon(reloadChats);
        break;
      }
      const t = timeline(key);
      const upTo = t.value.messages.find((m) => m.id === e.up_to);
      if (!upTo || parseKey(key).group) {
        // A group's status is its least advanced member's: the node says it.
        if (t.value.loaded) reloadSoon(reloadOpen);
        break;
      }
      for (const m of t.value.messages) if (m.from === myId() && !m.pending && m.sent_at <= upTo.sent_at && m.status !== "read") patchMessage(m.id, (x) => ({ ...x, status: "read" }), key);
      break;
    }
    case "typing": {
      if (e.from === myId()) break;
      const key = e.group ? keyOf("g", e.group) : keyOf("u", e.with ?? e.from);
      typing.update((t) => ({ ...t, [key]: { from: e.from, until: Date.now() + 6000 } }));
      setTimeout(() => typing.update((t) => (t[key] && t[key]!.until <= Date.now() ? (({ [key]: _x, ...rest }) => rest)(t) : t)), 6100);
      break;
    }
    case "conversation.changed": {
      if (e.disappearing_secs !== undefined && e.disappearing_secs !== null) {
        const key = keyFor(e);
        const secs = e.disappearing_secs;
        chats.update((cs) => cs.map((c) => (c.key === key ? { ...c, disappearing_secs: secs } : c)));
        if (e.group) groups.update((gs) => gs.map((g) => (g.id === e.group ? { ...g, disappearing_secs: secs } : g)));
        // The line in the conversation ("Alice set messages to disappear after…").
        if (timeline(key).value.loaded) reloadSoon(reloadOpen);
      }
      reloadSoon(reloadChats);
      break;
    }
    case "sync.completed":
      reloadSoon(reloadChats);
      reloadSoon(reloadOpen);
      break;
    case "contact.added":
    case "contact.removed":
    case "contact.failed":
      reloadSoon(reloadContacts);
      break;
    case "contact.changed":
      contacts.update((cs) => cs.map((c) => (c.user_id === e.user_id ? { ...c, name: e.name, display_name: e.display_name, avatar: e.avatar } : c)));
      chats.update((cs) => cs.map((c) => (c.key === keyOf("u", e.user_id) ? { ...c, title: e.name } : c)));
      loadAvatar(e.user_id, e.avatar);
      reloadSoon(reloadContacts);
      break;
    case "profile.changed":
      void loadProfile();
      break;
    case "group.created":
    case "group.changed":
      reloadSoon(reloadGroups);
      break;
    case "settings.changed":
      reloadSoon(loadSettings);
      break;
    case "search.progress":
    case "search.ready":
      reloadSoon(loadNode);
      break;
    case "transfer.offered":
      void loadTransfer(e.id);
      void fetchMessage(e.id).then((m) => {
        if (!m) return reloadSoon(reloadChats);
        const key = e.group ? keyOf("g", e.group) : keyOf("u", e.from);
        if (e.from === myId()) (addMessage(key, m), bump(key, m, false));
        else received(key, m);
      });
      break;
    case "transfer.progress": {
      progress.update((p) => ({ ...p, [e.id]: e.bytes_done }));
      // A group file's sender follows each member.
      const t = transfers.value[e.id];
      if (t?.group && t.direction === "outgoing") reloadSoon(reloadTransfers);
      break;
    }
    case "transfer.updated":
    case "transfer.completed":
    case "transfer.failed":
      void loadTransfer(e.id);
      break;
  }
}

// ---------------------------------------------------------------------------------------
// What this device keeps for opening offline (client logins only: an admin session ends with
// its tab, and so does everything it saw)

type Snapshot = {
  user: string;
  node: S["Node"] | null;
  contacts: S["Contact"][];
  groups: S["Group"][];
  chats: Chat[];
  timelines: [Key, Msg[]][];
  outbox: Out[];
  system: Record<Key, Sys[]>;
};

let saveTimer: ReturnType<typeof setTimeout> | undefined;
function save() {
  if (!persist) return;
  clearTimeout(saveTimer);
  saveTimer = setTimeout(() => {
    const recent = chats.value.slice(0, 20).map((c) => c.key);
    const snap: Snapshot = {
      user: myId(),
      node: me.value.node,
      contacts: contacts.value,
      groups: groups.value,
      chats: chats.value,
      timelines: recent.filter((k) => timelines.get(k)?.value.loaded).map((k) => [k, timeline(k).value.messages.filter((m) => !m.pending).slice(-PAGE)]),
      outbox: outbox.value,
      system: system.value,
    };
    void idb.set("snapshot", snap).catch(() => {});
  }, 500);
}

async function restore() {
  const snap = await idb.get<Snapshot>("snapshot").catch(() => undefined);
  if (!snap) return;
  me.update((m) => ({ ...m, node: snap.node }));
  contacts.set(snap.contacts);
  groups.set(snap.groups);
  // A snapshot of an earlier release may lack fields that are required now.
  chats.set(snap.chats.map((c) => ({ ...c, updated_at: c.updated_at ?? "", disappearing_secs: c.disappearing_secs ?? 0 })));
  chatsLoaded.set(true);
  system.set(snap.system ?? {});
  const upgrade = (m: Msg): Msg => ({ ...m, kind: m.kind ?? "text", reactions: m.reactions ?? [], deleted: m.deleted ?? false });
  for (const [key, messages] of snap.timelines) timeline(key).set({ messages: messages.map(upgrade), loaded: true, hasMore: true, loading: false, error: null });
  outbox.set(snap.outbox ?? []);
  for (const out of snap.outbox ?? []) addMessage(out.key, localMessage(out.key, out, snap.user, "waiting"));
}

/** Forgets everything this device kept (logging out). */
export async function forget() {
  stop();
  clearTimeout(saveTimer);
  persist = false;
  await idb.clear().catch(() => {});
}
