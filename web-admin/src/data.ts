// The app's stores, one per concern, and how the API and the event stream feed them:
// who this user is and may be, contacts and groups, the chat list, one timeline per opened
// chat, file transfers, the outbox of sends waiting for the node, typing and unread counts.
// Views read these stores and call the actions here; none of them fetches on its own.
import { api, ok, raw, session, unreachable, message as errorText, volli, type Event, type S } from "./client";
import { next, NO_FEATURES, probe, type Conversation, type Features, type Message, type NextEvent, type Profile } from "./api-next";
import { idb, Store } from "./store";

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
  disappearing_secs?: number | null;
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

export const keyOf = (kind: "u" | "g", id: string): Key => `${kind}:${id}`;
export const parseKey = (key: Key) => ({ group: key.startsWith("g:"), id: key.slice(2) });
export const targetOf = (key: Key): { to: string } | { group: string } => {
  const { group, id } = parseKey(key);
  return group ? { group: id } : { to: id };
};

// ---------------------------------------------------------------------------------------
// Stores

export const me = new Store<{ node: S["Node"] | null; features: Features; profile: Profile | null; avatar: string | null }>({
  node: null,
  features: NO_FEATURES,
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
export const avatars = new Store<Record<string, string | null>>({});
export const muted = new Store<string[]>(readJson("volli.muted", []));
export const settings = new Store<Record<string, unknown>>({});
export const lastEvent = new Store<Event | null>(null);
const timelines = new Map<Key, Store<Timeline>>();

/** The chat on screen now, if any (its messages are read as they arrive). */
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

export type Ability = "send" | "files" | "contacts" | "invite" | "admin" | "settings";
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
  }
}

// ---------------------------------------------------------------------------------------
// Names

export function myId(): string {
  return me.value.node?.user_id ?? "";
}

export function nameOf(user: string): string {
  if (user === myId()) return "You";
  const c = contacts.value.find((x) => x.user_id === user);
  const display = (c as { display_name?: string } | undefined)?.display_name;
  return c?.name || display || `${user.slice(0, 6)}…`;
}

export function chatTitle(key: Key): string {
  const { group, id } = parseKey(key);
  if (group) return groups.value.find((g) => g.id === id)?.name ?? chats.value.find((c) => c.key === key)?.title ?? "Group";
  return nameOf(id);
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
    const features = await probe(`${node.version}|${node.started_at}`).catch(() => NO_FEATURES);
    me.update((m) => ({ ...m, features }));
    await Promise.all([loadContacts(), loadGroups(), loadTransfers(), loadSettings(), loadProfile()]);
    await loadChats();
    for (const [key, t] of timelines) if (t.value.loaded) void refreshTimeline(key);
    fresh = true;
  } catch (e) {
    if (!unreachable(e)) throw e;
  }
}

async function loadProfile() {
  const f = me.value.features;
  if (!f.profile) return;
  const profile = await next.profile().catch(() => null);
  let avatar: string | null = null;
  if (profile?.avatar) avatar = await next.avatarUrl("/v1/profile/avatar");
  const old = me.value.avatar;
  if (old) URL.revokeObjectURL(old);
  me.update((m) => ({ ...m, profile, avatar }));
}

async function loadSettings() {
  const s = await ok(api.GET("/v1/settings"));
  settings.set((s.settings ?? {}) as Record<string, unknown>);
}

async function loadContacts() {
  const list = await ok(api.GET("/v1/contacts"));
  contacts.set(list.contacts);
  pending.set(list.pending);
  if (me.value.features.avatars) {
    for (const c of list.contacts) {
      if ((c as { avatar?: boolean }).avatar && avatars.value[c.user_id] === undefined) {
        avatars.update((a) => ({ ...a, [c.user_id]: null }));
        void next.avatarUrl(`/v1/contacts/${encodeURIComponent(c.user_id)}/avatar`).then((url) => avatars.update((a) => ({ ...a, [c.user_id]: url })));
      }
    }
  }
}

async function loadGroups() {
  const list = await ok(api.GET("/v1/groups"));
  const before = new Map(groups.value.map((g) => [g.id, g]));
  for (const g of list.groups) {
    const old = before.get(g.id);
    if (old) noteGroupChanges(old, g);
  }
  groups.set(list.groups);
}

/** "Carol was added", "Bob left": what changed in a group between two reads of it. */
function noteGroupChanges(old: S["Group"], now: S["Group"]) {
  const at = new Date().toISOString();
  const lines: Sys[] = [];
  const was = new Set(old.members.map((m) => m.user_id));
  const is = new Set(now.members.map((m) => m.user_id));
  for (const m of now.members) if (!was.has(m.user_id)) lines.push({ id: `sys:${now.id}:${now.epoch}:+${m.user_id}`, at, text: `${nameOf(m.user_id)} ${m.user_id === myId() ? "were" : "was"} added` });
  for (const m of old.members) if (!is.has(m.user_id)) lines.push({ id: `sys:${now.id}:${now.epoch}:-${m.user_id}`, at, text: `${nameOf(m.user_id)} left` });
  for (const m of now.members) {
    const o = old.members.find((x) => x.user_id === m.user_id);
    if (o && o.role !== m.role) lines.push({ id: `sys:${now.id}:${now.epoch}:r${m.user_id}`, at, text: `${nameOf(m.user_id)} ${m.user_id === myId() ? "are" : "is"} now ${m.role === "admin" ? "an admin" : "a member"}` });
  }
  if (old.name !== now.name) lines.push({ id: `sys:${now.id}:${now.epoch}:n`, at, text: `The group is now called “${now.name}”` });
  if (lines.length) addSystem(keyOf("g", now.id), lines);
}

function addSystem(key: Key, lines: Sys[]) {
  system.update((s) => {
    const have = new Set((s[key] ?? []).map((l) => l.id));
    return { ...s, [key]: [...(s[key] ?? []), ...lines.filter((l) => !have.has(l.id))] };
  });
  save();
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
    await loadTransfers();
  }
}

// ---------------------------------------------------------------------------------------
// The chat list

const READ = () => `volli.read.${myId()}`;
function readMarks(): Record<Key, string> {
  return readJson(READ(), {});
}
function setReadMark(key: Key, at: string) {
  const marks = readMarks();
  if (marks[key] && marks[key] >= at) return;
  marks[key] = at;
  localStorage.setItem(READ(), JSON.stringify(marks));
}

const byActivity = (a: Chat, b: Chat) => b.updated_at.localeCompare(a.updated_at);

async function loadChats() {
  if (me.value.features.conversations) {
    const list = await next.conversations();
    chats.set(list.conversations.map(fromConversation).sort(byActivity));
    chatsLoaded.set(true);
    save();
    return;
  }
  // Without GET /v1/conversations: contacts and groups, each with its newest message.
  const old = new Map(chats.value.map((c) => [c.key, c]));
  const base: Chat[] = [
    ...contacts.value.map((c) => {
      const key = keyOf("u", c.user_id);
      return { key, kind: "direct" as const, id: c.user_id, title: nameOf(c.user_id), last: old.get(key)?.last ?? null, unread: old.get(key)?.unread ?? 0, updated_at: old.get(key)?.updated_at ?? c.added_at };
    }),
    ...groups.value.map((g) => {
      const key = keyOf("g", g.id);
      return { key, kind: "group" as const, id: g.id, title: g.name, last: old.get(key)?.last ?? null, unread: old.get(key)?.unread ?? 0, updated_at: old.get(key)?.updated_at ?? g.created_at };
    }),
  ];
  chats.set(base.sort(byActivity));
  chatsLoaded.set(true);
  const marks = readMarks();
  const filled = await Promise.all(
    base.map(async (chat) => {
      const query = chat.kind === "group" ? { group: chat.id, limit: 1 } : { with: chat.id, limit: 1 };
      const page = await ok(api.GET("/v1/messages", { params: { query } })).catch(() => null);
      const last = (page?.messages.at(-1) as Msg | undefined) ?? null;
      if (!last) return chat;
      let unread = 0;
      const mark = marks[chat.key];
      if (!mark) setReadMark(chat.key, last.sent_at);
      else if (last.from !== myId() && last.sent_at > mark) {
        const q = chat.kind === "group" ? { group: chat.id, limit: 50 } : { with: chat.id, limit: 50 };
        const recent = await ok(api.GET("/v1/messages", { params: { query: q } })).catch(() => null);
        unread = (recent?.messages ?? []).filter((m) => m.from !== myId() && m.sent_at > mark).length;
      }
      return { ...chat, last, unread, updated_at: last.sent_at > chat.updated_at ? last.sent_at : chat.updated_at };
    }),
  );
  const now = new Map(chats.value.map((c) => [c.key, c]));
  // Keep what events changed while the newest messages were on their way.
  chats.set(
    filled
      .map((c) => {
        const live = now.get(c.key);
        if (live && live.last && (!c.last || live.last.sent_at > c.last.sent_at)) return live;
        return { ...c, title: live?.title ?? c.title };
      })
      .sort(byActivity),
  );
  save();
}

function fromConversation(c: Conversation): Chat {
  const group = c.kind === "group";
  const id = (group ? c.group : c.with) ?? "";
  return { key: keyOf(group ? "g" : "u", id), kind: c.kind, id, title: c.title, last: c.last_message, unread: c.unread, updated_at: c.updated_at, disappearing_secs: c.disappearing_secs ?? null };
}

/** Puts a message at the top of the chat list (a new one, or one this user sent). */
function bump(key: Key, m: Msg, incoming: boolean) {
  chats.update((list) => {
    const i = list.findIndex((c) => c.key === key);
    const { group, id } = parseKey(key);
    const chat: Chat = i >= 0 ? list[i]! : { key, kind: group ? "group" : "direct", id, title: chatTitle(key), last: null, unread: 0, updated_at: m.sent_at };
    const reading = isReading(key);
    const updated: Chat = { ...chat, last: m, updated_at: m.sent_at > chat.updated_at ? m.sent_at : new Date().toISOString(), unread: incoming && !reading && !m.pending ? chat.unread + 1 : chat.unread };
    return [updated, ...list.filter((c) => c.key !== key)].sort(byActivity);
  });
  save();
}

/** Whether the person is looking at this chat right now. */
export function isReading(key: Key): boolean {
  return openChat.value === key && document.visibilityState === "visible" && document.hasFocus();
}

export function totalUnread(): number {
  return chats.value.filter((c) => !muted.value.includes(c.key)).reduce((n, c) => n + c.unread, 0);
}

/** Marks a chat read up to its newest message, on this device and (when the node can) everywhere. */
export function markRead(key: Key) {
  const t = timeline(key).value;
  const newest = [...t.messages].reverse().find((m) => !m.pending);
  const chat = chats.value.find((c) => c.key === key);
  if (newest) setReadMark(key, newest.sent_at);
  else if (chat?.last) setReadMark(key, chat.last.sent_at);
  if (chat && chat.unread > 0) chats.update((list) => list.map((c) => (c.key === key ? { ...c, unread: 0 } : c)));
  // The read receipt (and the unread count on this user's other devices), once per newest message.
  const incoming = [...t.messages].reverse().find((m) => !m.pending && m.from !== myId());
  if (me.value.features.read && incoming && readPosted.get(key) !== incoming.id && (chat?.unread || incoming.status !== "read")) {
    readPosted.set(key, incoming.id);
    const { group, id } = parseKey(key);
    void next.read(group ? { group: id } : { with: id }, incoming.id).catch(() => readPosted.delete(key));
  }
}
const readPosted = new Map<Key, string>();

export function setMuted(key: Key, on: boolean) {
  muted.update((m) => (on ? [...new Set([...m, key])] : m.filter((k) => k !== key)));
  localStorage.setItem("volli.muted", JSON.stringify(muted.value));
  void idb.set("muted", muted.value).catch(() => {});
}

// ---------------------------------------------------------------------------------------
// Timelines

const PAGE = 50;

function query(key: Key, extra: { before?: string; limit: number }) {
  const { group, id } = parseKey(key);
  return group ? { group: id, ...extra } : { with: id, ...extra };
}

function sortMessages(list: Msg[]): Msg[] {
  return list.sort((a, b) => (a.pending && !b.pending ? 1 : !a.pending && b.pending ? -1 : a.sent_at.localeCompare(b.sent_at)));
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
      const kept = v.messages.filter((m) => !m.pending && !fresh.has(m.id) && (m.sent_at < first || m.sent_at > last));
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

function patchMessage(id: string, f: (m: Msg) => Msg | null, key?: Key) {
  const stores = key ? [timeline(key)] : [...timelines.values()];
  for (const t of stores) {
    const i = t.value.messages.findIndex((m) => m.id === id);
    if (i < 0) continue;
    const updated = f(t.value.messages[i]!);
    const messages = [...t.value.messages];
    if (updated) messages[i] = updated;
    else messages.splice(i, 1);
    t.set({ ...t.value, messages });
  }
  chats.update((list) => list.map((c) => (c.last?.id === id ? { ...c, last: f(c.last) } : c)));
}

function addMessage(key: Key, m: Msg) {
  const t = timeline(key);
  // A chat not opened yet gets its messages when it is; one being loaded keeps what comes meanwhile.
  if ((t.value.loaded || t.value.loading) && !t.value.messages.some((x) => x.id === m.id)) {
    t.set({ ...t.value, messages: sortMessages([...t.value.messages, m]) });
  }
}

// ---------------------------------------------------------------------------------------
// Sending, and the outbox of sends the node has not taken yet

const statusSeen = new Map<string, string>();
type Out = { local: string; key: Key; body: string; replyTo?: string; at: string };
export const outbox = new Store<Out[]>([]);
let localSeq = 0;

export async function send(key: Key, body: string, replyTo?: string) {
  const local = `local:${Date.now().toString(36)}${(localSeq++).toString(36)}`;
  const out: Out = { local, key, body, at: new Date().toISOString(), ...(replyTo ? { replyTo } : {}) };
  const m: Msg = { id: local, from: myId(), to: parseKey(key).id, body, sent_at: out.at, status: "sending", pending: "sending", reply_to: replyTo ?? null };
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
        const target = targetOf(out.key);
        const sent = out.replyTo
          ? await next.send(target, out.body, out.replyTo)
          : await ok(api.POST("/v1/messages", { body: { ...target, body: out.body } }));
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
}

export async function deleteForEveryone(key: Key, id: string) {
  await next.deleteForEveryone(id);
  patchMessage(id, (m) => ({ ...m, deleted: true, body: "" }), key);
}

export async function edit(key: Key, id: string, body: string) {
  const m = await next.edit(id, body);
  patchMessage(id, (old) => ({ ...old, ...m }), key);
}

export async function react(key: Key, m: Msg, emoji: string) {
  const mine = m.reactions?.find((r) => r.emoji === emoji)?.from.includes(myId());
  const updated = mine ? await next.unreact(m.id, emoji) : await next.react(m.id, emoji);
  patchMessage(m.id, (old) => ({ ...old, ...updated }), key);
}

let lastTyping = 0;
/** Tells the other side this user is typing, at most every 4 seconds. */
export function sendTyping(key: Key) {
  if (!me.value.features.typing || Date.now() - lastTyping < 4000) return;
  lastTyping = Date.now();
  void next.typing(targetOf(key)).catch(() => {});
}

// ---------------------------------------------------------------------------------------
// Files

let uploadSeq = 0;

/** Sends a file into a chat, with its upload progress on the bubble. */
export function sendFile(key: Key, file: File) {
  const id = `upload:${uploadSeq++}`;
  const image = file.type.startsWith("image/") ? URL.createObjectURL(file) : null;
  uploads.update((u) => [...u, { id, key, name: file.name, size: file.size, sent: 0, url: image, error: null }]);
  const { group, id: target } = parseKey(key);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", `/v1/transfers?${group ? "group" : "to"}=${encodeURIComponent(target)}&name=${encodeURIComponent(file.name)}`);
  xhr.setRequestHeader("Authorization", `Bearer ${session.get() ?? ""}`);
  xhr.setRequestHeader("Content-Type", "application/octet-stream");
  xhr.upload.onprogress = (e) => uploads.update((u) => u.map((x) => (x.id === id ? { ...x, sent: e.loaded } : x)));
  const fail = (text: string) => uploads.update((u) => u.map((x) => (x.id === id ? { ...x, error: text } : x)));
  xhr.onerror = () => fail("The node cannot be reached. Is it running?");
  xhr.onload = () => {
    let body: { id?: string; error?: { message?: string } } | null = null;
    try {
      body = JSON.parse(xhr.responseText) as typeof body;
    } catch {
      /* not JSON: the status says enough */
    }
    const answer = body as { id?: string; error?: { message?: string } } | null;
    if (xhr.status !== 201 || !answer?.id) return fail(answer?.error?.message ?? `The node answered ${xhr.status}.`);
    const t = answer as unknown as S["Transfer"];
    transfers.update((m) => ({ ...m, [t.id]: { ...t, url: image } }));
    uploads.update((u) => u.filter((x) => x.id !== id));
  };
  xhr.send(file);
}

export function dismissUpload(id: string) {
  uploads.update((u) => u.filter((x) => x.id !== id));
}

export function transfersOf(key: Key, all: Record<string, Transfer>): Transfer[] {
  const { group, id } = parseKey(key);
  return Object.values(all).filter((t) => (group ? t.group === id : t.peer === id && !t.group));
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

const IMAGE = /\.(png|jpe?g|gif|webp|avif|bmp)$/i;
export const isImage = (name: string) => IMAGE.test(name);

/** A received file's bytes as a blob URL (images are shown in place with it). */
export async function contentUrl(t: Transfer): Promise<string> {
  if (t.url) return t.url;
  const blob = await (await raw("GET", `/v1/transfers/${encodeURIComponent(t.id)}/content`)).blob();
  const url = URL.createObjectURL(blob);
  transfers.update((m) => (m[t.id] ? { ...m, [t.id]: { ...m[t.id]!, url } } : m));
  return url;
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

function onEvent(raw: Event) {
  const e = raw as Event | NextEvent;
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
      const m: Msg = { id: e.id, from: e.from, to: myId(), body: e.body, sent_at: e.sent_at, status: "received", kind: "text", ...pickNew(e) };
      addMessage(key, m);
      bump(key, m, true);
      if (isReading(key)) markRead(key);
      incomingListeners.forEach((f) => f(key, m));
      if (me.value.features.conversations) reloadSoon(reloadChats);
      break;
    }
    case "group.message": {
      const key = keyOf("g", e.group);
      const mine = e.from === myId();
      const m: Msg = { id: e.id, from: e.from, to: e.group, group: e.group, body: e.body, sent_at: e.sent_at, status: mine ? "delivered" : "received", kind: "text", ...pickNew(e) };
      if (mine && timeline(key).value.messages.some((x) => x.id === e.id)) break;
      addMessage(key, m);
      bump(key, m, !mine);
      if (!mine) {
        if (isReading(key)) markRead(key);
        incomingListeners.forEach((f) => f(key, m));
      }
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
      avatars.update((a) => {
        const { [e.user_id]: _gone, ...rest } = a;
        return rest;
      });
      reloadSoon(reloadContacts);
      break;
    case "profile.changed":
      void loadProfile();
      break;
    case "group.created":
    case "group.changed":
      reloadSoon(reloadGroups);
      break;
    case "conversation.changed":
      if (me.value.features.conversations) reloadSoon(reloadChats);
      break;
    case "settings.changed":
      reloadSoon(loadSettings);
      break;
    case "transfer.offered":
      void loadTransfer(e.id).then(() => {
        const t = transfers.value[e.id];
        if (!t) return;
        const key = t.group ? keyOf("g", t.group) : keyOf("u", t.peer);
        const m: Msg = { id: `file:${t.id}`, from: e.from, to: myId(), body: `📎 ${t.name}`, sent_at: t.created_at, status: "received", kind: "file" };
        bump(key, m, true);
        incomingListeners.forEach((f) => f(key, m));
      });
      break;
    case "transfer.progress":
      progress.update((p) => ({ ...p, [e.id]: e.bytes_done }));
      break;
    case "transfer.updated":
    case "transfer.completed":
    case "transfer.failed":
      void loadTransfer(e.id);
      break;
    case "message.edited":
      patchMessage(e.id, (m) => ({ ...m, ...(e.body !== undefined ? { body: e.body } : {}), edited_at: e.edited_at ?? new Date().toISOString() }));
      break;
    case "message.deleted":
      patchMessage(e.id, (m) => ({ ...m, deleted: true, body: "" }));
      break;
    case "message.reaction":
      if (e.reactions) patchMessage(e.id, (m) => ({ ...m, reactions: e.reactions! }));
      else reloadSoon(reloadOpen);
      break;
    case "message.read":
      reloadSoon(reloadOpen);
      reloadSoon(reloadChats);
      break;
    case "typing": {
      const key = e.group ? keyOf("g", e.group) : keyOf("u", e.from);
      if (e.from === myId()) break;
      typing.update((t) => ({ ...t, [key]: { from: e.from, until: Date.now() + 6000 } }));
      setTimeout(() => typing.update((t) => (t[key] && t[key]!.until <= Date.now() ? (({ [key]: _x, ...rest }) => rest)(t) : t)), 6100);
      break;
    }
  }
}

/** The new message fields, when an event carries them. */
function pickNew(e: object): Partial<Msg> {
  const x = e as Partial<Msg>;
  const out: Partial<Msg> = {};
  if (x.reply_to) out.reply_to = x.reply_to;
  if (x.kind) out.kind = x.kind;
  if (x.file) out.file = x.file;
  if (x.expires_at) out.expires_at = x.expires_at;
  return out;
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
  chats.set(snap.chats);
  chatsLoaded.set(true);
  system.set(snap.system ?? {});
  for (const [key, messages] of snap.timelines) timeline(key).set({ messages, loaded: true, hasMore: true, loading: false, error: null });
  outbox.set(snap.outbox ?? []);
  for (const out of snap.outbox ?? []) {
    const m: Msg = { id: out.local, from: snap.user, to: parseKey(out.key).id, body: out.body, sent_at: out.at, status: "sending", pending: "waiting", reply_to: out.replyTo ?? null };
    addMessage(out.key, m);
  }
}

/** Forgets everything this device kept (logging out). */
export async function forget() {
  stop();
  clearTimeout(saveTimer);
  persist = false;
  await idb.clear().catch(() => {});
}
