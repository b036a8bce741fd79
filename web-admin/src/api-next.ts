// The routes of "Messages people expect" (API.md) that openapi/openapi.json does not have yet,
// with types copied from API.md. Everything the app calls outside the generated client is here,
// so that once the node has these routes this module switches to `api.GET(...)` and `S[...]`.
//
// Whether the node has a route is asked once per node start: its own OpenAPI document lists
// them (asking the route itself would log a 404 in the console for every absent feature).
import { raw, rawJson, type S } from "./client";

export type Reaction = { emoji: string; from: string[] };
export type FileInfo = { transfer: string; name: string; size: number; mime: string; thumbnail?: string | null };

/** A message as the node will send it: today's fields and the new ones, all optional. */
export type Message = S["Message"] & {
  kind?: "text" | "file" | "system";
  reply_to?: string | null;
  reactions?: Reaction[];
  edited_at?: string | null;
  deleted?: boolean;
  expires_at?: string | null;
  file?: FileInfo | null;
  read_by?: string[];
};

export type Conversation = {
  kind: "direct" | "group";
  with?: string | null;
  group?: string | null;
  title: string;
  last_message: Message | null;
  unread: number;
  updated_at: string;
  disappearing_secs?: number | null;
};

export type Profile = { name: string; avatar: boolean };
export type SearchResult = { message: Message; snippet: string; with?: string | null; group?: string | null };

/** The features of the new routes, as far as this node has them. */
export type Features = {
  conversations: boolean;
  profile: boolean;
  avatars: boolean;
  rename: boolean;
  reply: boolean;
  reactions: boolean;
  edit: boolean;
  deleteForEveryone: boolean;
  read: boolean;
  typing: boolean;
  search: boolean;
  disappearing: boolean;
};

export const NO_FEATURES: Features = {
  conversations: false,
  profile: false,
  avatars: false,
  rename: false,
  reply: false,
  reactions: false,
  edit: false,
  deleteForEveryone: false,
  read: false,
  typing: false,
  search: false,
  disappearing: false,
};

type Doc = { paths?: Record<string, Record<string, unknown>> };

/** Reads the node's OpenAPI document (cached per node start) and says what it has. */
export async function probe(nodeStamp: string): Promise<Features> {
  const key = `volli.features`;
  try {
    const cached = JSON.parse(sessionStorage.getItem(key) ?? "null") as { stamp: string; f: Features } | null;
    if (cached?.stamp === nodeStamp) return cached.f;
  } catch {
    /* a broken cache is asked again */
  }
  const r = await fetch("/openapi.json");
  if (!r.ok) return NO_FEATURES;
  const doc = (await r.json()) as Doc;
  const has = (path: string, method: string) => !!doc.paths?.[path]?.[method];
  const messageSchema = JSON.stringify((doc as { components?: { schemas?: Record<string, unknown> } }).components?.schemas?.["Message"] ?? {});
  const f: Features = {
    conversations: has("/v1/conversations", "get"),
    profile: has("/v1/profile", "get"),
    avatars: has("/v1/profile/avatar", "put"),
    rename: has("/v1/contacts/{user_id}", "patch"),
    reply: messageSchema.includes("reply_to"),
    reactions: has("/v1/messages/{id}/reactions", "post"),
    edit: has("/v1/messages/{id}", "patch"),
    deleteForEveryone: messageSchema.includes("\"deleted\""),
    read: has("/v1/messages/read", "post"),
    typing: has("/v1/typing", "post"),
    search: has("/v1/search", "get"),
    disappearing: has("/v1/conversations/{user_id}/disappearing", "put"),
  };
  try {
    sessionStorage.setItem(key, JSON.stringify({ stamp: nodeStamp, f }));
  } catch {
    /* storage full: asked again next time */
  }
  return f;
}

const enc = encodeURIComponent;
type Target = { with: string } | { group: string };

export const next = {
  conversations: () => rawJson<{ conversations: Conversation[] }>("GET", "/v1/conversations"),
  profile: () => rawJson<Profile>("GET", "/v1/profile"),
  setProfile: (name: string) => rawJson<Profile>("PUT", "/v1/profile", { name }),
  setAvatar: (image: Blob) => raw("PUT", "/v1/profile/avatar", { body: image, headers: { "Content-Type": image.type } }),
  deleteAvatar: () => raw("DELETE", "/v1/profile/avatar"),
  renameContact: (user: string, name: string) => rawJson<S["Contact"]>("PATCH", `/v1/contacts/${enc(user)}`, { name }),
  send: (to: { to: string } | { group: string }, body: string, replyTo?: string) =>
    rawJson<S["Sent"]>("POST", "/v1/messages", { ...to, body, ...(replyTo ? { reply_to: replyTo } : {}) }),
  edit: (id: string, body: string) => rawJson<Message>("PATCH", `/v1/messages/${enc(id)}`, { body }),
  deleteForEveryone: (id: string) => raw("DELETE", `/v1/messages/${enc(id)}?for=everyone`),
  react: (id: string, emoji: string) => rawJson<Message>("POST", `/v1/messages/${enc(id)}/reactions`, { emoji }),
  unreact: (id: string, emoji: string) => rawJson<Message>("DELETE", `/v1/messages/${enc(id)}/reactions/${enc(emoji)}`),
  read: (target: Target, upTo: string) => raw("POST", "/v1/messages/read", { json: { ...target, up_to: upTo } }),
  typing: (to: { to: string } | { group: string }) => raw("POST", "/v1/typing", { json: to }),
  search: (q: string, limit = 30) => rawJson<{ results: SearchResult[] }>("GET", `/v1/search?q=${enc(q)}&limit=${limit}`),
  disappearing: (user: string, secs: number) => raw("PUT", `/v1/conversations/${enc(user)}/disappearing`, { json: { secs } }),
  groupDisappearing: (group: string, secs: number) => rawJson<S["Group"]>("PATCH", `/v1/groups/${enc(group)}`, { disappearing_secs: secs }),
  /** The avatar's bytes as a blob URL, or null when there is none (404 `no_avatar`). */
  avatarUrl: async (path: string): Promise<string | null> => {
    try {
      return URL.createObjectURL(await (await raw("GET", path)).blob());
    } catch {
      return null;
    }
  },
};

/** Events of the new API, as API.md names them (their fields as far as it says). */
export type NextEvent =
  | { type: "message.edited"; id: string; body?: string; edited_at?: string; with?: string; group?: string }
  | { type: "message.deleted"; id: string; with?: string; group?: string }
  | { type: "message.reaction"; id: string; emoji?: string; from?: string; reactions?: Reaction[]; with?: string; group?: string }
  | { type: "message.read"; with?: string; group?: string; up_to?: string; by?: string; from?: string }
  | { type: "typing"; from: string; with?: string; group?: string }
  | { type: "profile.changed" }
  | { type: "contact.changed"; user_id: string };
