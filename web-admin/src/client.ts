// The typed API client. Types come from openapi/openapi.json (see `npm run gen`), so a change
// to the API that breaks this page fails `tsc`.
import createClient from "openapi-fetch";
import type { components, paths } from "./generated/api";

export type S = components["schemas"];
export type Event = S["Event"];

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

export const api = createClient<paths>({ baseUrl: location.origin });
api.use({
  onRequest({ request }) {
    const token = session.get();
    if (token) request.headers.set("Authorization", `Bearer ${token}`);
    return request;
  },
  onResponse({ response, request }) {
    if (response.status === 401 && !request.url.endsWith("/v1/admin/session")) {
      session.clear();
      loggedOut.forEach((f) => f());
    }
    return response;
  },
});

/** An error the API answered, with its stable code and its message for people. */
export class ApiFailure extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

type Answer<T> = { data?: T; error?: unknown; response: Response };

/** The data of a successful answer; otherwise throws an `ApiFailure` with the node's message. */
export async function ok<T>(request: Promise<Answer<T>>): Promise<T> {
  let answer: Answer<T>;
  try {
    answer = await request;
  } catch {
    throw new ApiFailure(0, "unreachable", "The node cannot be reached. Is it running?");
  }
  if (answer.response.ok) return answer.data as T;
  const body = answer.error as { error?: { code?: string; message?: string } } | undefined;
  throw new ApiFailure(
    answer.response.status,
    body?.error?.code ?? "unknown",
    body?.error?.message ?? `The node answered ${answer.response.status}.`,
  );
}

export function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
