// The page's client of the API: the @volli/client package (clients/typescript), whose types
// come from openapi/openapi.json, so a change to the API that breaks this page fails `tsc`.
import { createVolliClient, VolliError, type Event as VolliEvent, type Schemas } from "@volli/client";

export { ok, VolliError } from "@volli/client";
export type S = Schemas;
export type Event = VolliEvent;

const SESSION = "volli.session";

/** The session token: in sessionStorage only, so it ends with the tab. */
export const session = {
  get: (): string | null => sessionStorage.getItem(SESSION),
  set: (token: string) => sessionStorage.setItem(SESSION, token),
  clear: () => sessionStorage.removeItem(SESSION),
};

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
