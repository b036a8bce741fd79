// Routes whose bodies the typed `api` does not carry as the node takes them: a file's bytes
// streamed, with its name, type and thumbnail in the query; a picture's bytes.
import { VolliError, type Schemas, type VolliClient } from "./client.js";

/** Who a file or a message goes to: a contact or a group. */
export type Target = { to: string } | { group: string };

/** A file to send: its bytes, its name, and optionally its media type and a small picture of it. */
export interface FileToSend {
  name: string;
  bytes: Blob | ArrayBuffer | Uint8Array;
  /** Its media type (`image/png`…); the node guesses it from the name otherwise. */
  mime?: string;
  /** A `data:image/png|jpeg|webp;base64,…` URL of at most 16 KiB, shown in the conversation. */
  thumbnail?: string;
}

async function request(client: VolliClient, method: string, path: string, body?: BodyInit, type?: string): Promise<Response> {
  const headers: Record<string, string> = {};
  const token = client.token();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (type) headers["Content-Type"] = type;
  let response: Response;
  try {
    response = await fetch(client.baseUrl + path, { method, headers, ...(body === undefined ? {} : { body }) });
  } catch (e) {
    throw new VolliError(0, "unreachable", `the node cannot be reached: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (!response.ok) {
    const b = (await response.json().catch(() => null)) as { error?: { code?: string; message?: string } } | null;
    throw new VolliError(response.status, b?.error?.code ?? "unknown", b?.error?.message ?? `the node answered ${response.status}`);
  }
  return response;
}

const bodyOf = (bytes: Blob | ArrayBuffer | Uint8Array): BodyInit => (bytes instanceof Uint8Array ? new Blob([bytes as Uint8Array<ArrayBuffer>]) : bytes);

/**
 * Offers a file to a contact or a group (`POST /v1/transfers` with the bytes as the body): it
 * shows in the conversation as a `file` message whose id is the transfer's.
 */
export async function sendFile(client: VolliClient, target: Target, file: FileToSend): Promise<Schemas["Transfer"]> {
  const q = new URLSearchParams("to" in target ? { to: target.to } : { group: target.group });
  q.set("name", file.name);
  if (file.mime) q.set("mime", file.mime);
  if (file.thumbnail) q.set("thumbnail", file.thumbnail);
  const r = await request(client, "POST", `/v1/transfers?${q}`, bodyOf(file.bytes), "application/octet-stream");
  return (await r.json()) as Schemas["Transfer"];
}

/** Sets the user's picture (PNG, JPEG or WebP, ≤ 256 KiB), or removes it with `null`. */
export async function setAvatar(client: VolliClient, image: Blob | null): Promise<void> {
  if (image) await request(client, "PUT", "/v1/profile/avatar", image, image.type || "application/octet-stream");
  else await request(client, "DELETE", "/v1/profile/avatar");
}

/** A contact's picture, or the user's own without `user`; `null` when there is none (`no_avatar`). */
export async function avatar(client: VolliClient, user?: string): Promise<Blob | null> {
  try {
    const r = await request(client, "GET", user ? `/v1/contacts/${encodeURIComponent(user)}/avatar` : "/v1/profile/avatar");
    return await r.blob();
  } catch (e) {
    if (e instanceof VolliError && e.status === 404) return null;
    throw e;
  }
}
