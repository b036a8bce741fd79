// The app's client of the API: the @volli/client package (clients/typescript), whose types
// come from openapi/openapi.json, so a change to the API that breaks the app fails `tsc`.
import { createVolliClient, VolliError, type Event as VolliEvent, type Schemas } from "@volli/client";

export { ok, VolliError } from "@volli/client";
export type S = Schemas;
export type Event = VolliEvent;

/** Every scope a client token can have; an admin session has them all. */
export const ALL_SCOPES = ["read", "messages", "files", "contacts", "admin"] as const;
export type Scope = (typeof ALL_SCOPES)[number];

type Stored = { token: string; scopes: string[]; kind: "admin" | "client" };

const SESSION = "volli.session";
const CLIENT = "volli.client";

/**
 * The login. An admin session (from `volli admin`) lives in sessionStorage and ends with the
 * tab; a client token (the phone's QR login) is kept in localStorage, so the installed app
 * stays logged in, with the scopes the node gave it.
 */
export const session = {
  get: (): string | null => sessionStorage.getItem(SESSION) ?? client()?.token ?? null,
  kind: (): "admin" | "client" | null => (sessionStorage.getItem(SESSION) ? "admin" : client() ? "client" : null),
  scopes: (): string[] => (sessionStorage.getItem(SESSION) ? [...ALL_SCOPES] : (client()?.scopes ?? [])),
  set: (token: string) => sessionStorage.setItem(SESSION, token),
  setClient: (token: string, scopes: string[]) =>
    localStorage.setItem(CLIENT, JSON.stringify({ token, scopes, kind: "client" } satisfies Stored)),
  clear: () => {
    sessionStorage.removeItem(SESSION);
    localStorage.removeItem(CLIENT);
  },
};

function client(): Stored | null {
  try {
    const s = JSON.parse(localStorage.getItem(CLIENT) ?? "null") as Stored | null;
    return s && typeof s.token === "string" ? s : null;
  } catch {
    return null;
  }
}

/** Listeners told when the node refuses the session (expired or revoked). */
const loggedOut = new Set<() => void>();
export function onLoggedOut(f: () => void): () => void {
  loggedOut.add(f);
  return () => loggedOut.delete(f);
}

export const volli = createVolliClient({
  baseUrl: location.origin,
  token: session.get,
  onUnauthorized: () => {
    session.clear();
    loggedOut.forEach((f) => f());
  },
});
export const api = volli.api;

/** What to tell the user about an error. */
export function message(e: unknown): string {
  if (e instanceof VolliError && e.code === "unreachable") return "The node cannot be reached. Is it running?";
  return e instanceof Error ? e.message : String(e);
}

/** Whether an error means "the node did not answer" (so a send can wait and try again). */
export function unreachable(e: unknown): boolean {
  return e instanceof VolliError && (e.code === "unreachable" || e.status === 502 || e.status === 503 || e.status === 504);
}

/** A request to the node outside the typed client (file bytes, routes not in openapi.json yet). */
export async function raw(method: string, path: string, init: { body?: BodyInit | null; json?: unknown; headers?: Record<string, string> } = {}): Promise<Response> {
  const headers: Record<string, string> = { ...(init.headers ?? {}) };
  const token = session.get();
  if (token) headers.Authorization = `Bearer ${token}`;
  let body = init.body ?? null;
  if (init.json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(init.json);
  }
  let response: Response;
  try {
    response = await fetch(path, { method, headers, body });
  } catch (e) {
    throw new VolliError(0, "unreachable", `the node cannot be reached: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (response.status === 401 && token) {
    session.clear();
    loggedOut.forEach((f) => f());
  }
  if (!response.ok) {
    const b = (await response.json().catch(() => null)) as { error?: { code?: string; message?: string } } | null;
    throw new VolliError(response.status, b?.error?.code ?? "unknown", b?.error?.message ?? `the node answered ${response.status}`);
  }
  return response;
}

/** `raw` for a JSON answer (204 gives undefined). */
export async function rawJson<T>(method: string, path: string, json?: unknown): Promise<T> {
  const r = await raw(method, path, json === undefined ? {} : { json });
  return (r.status === 204 ? undefined : await r.json()) as T;
}
