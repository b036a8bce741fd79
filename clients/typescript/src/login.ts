// Logging a new client in with the one-time link of `POST /v1/clients/login-codes` (shown as a
// QR code by `volli clients add` and the admin page): the link carries the API address and a
// short-lived code, never the token.
import createFetchClient from "openapi-fetch";
import { createVolliClient, ok, VolliError, type Schemas, type VolliClient, type VolliClientOptions } from "./client.js";
import type { paths } from "./generated/api.js";

/** What a login link says: where the node's API is and the code to trade. */
export interface LoginLink {
  apiUrl: string;
  code: string;
}

/** Reads `volli://login?api=…&code=…`; throws `VolliError` `invalid_login_link` otherwise. */
export function parseLoginLink(link: string): LoginLink {
  const bad = () => new VolliError(0, "invalid_login_link", "not a login link: expected volli://login?api=…&code=…");
  let url: URL;
  try {
    url = new URL(link.trim());
  } catch {
    throw bad();
  }
  // `volli://login?…` parses with `login` as the host in some runtimes and as the path in others.
  const what = (url.host || url.pathname.replace(/^\/+/, "")).toLowerCase();
  const apiUrl = url.searchParams.get("api") ?? "";
  const code = url.searchParams.get("code") ?? "";
  if (url.protocol !== "volli:" || what !== "login" || !/^https?:\/\/[^/]/.test(apiUrl) || !code) throw bad();
  return { apiUrl, code };
}

/** A logged-in client: its token (keep it safe, it is not shown again) and a client using it. */
export interface LoggedIn {
  client: VolliClient;
  created: Schemas["CreatedClient"];
}

/**
 * Trades a login link's code for this client's token (`POST /v1/clients/login`) and returns a
 * client that uses it. A wrong, used or expired code throws `VolliError` `invalid_login_code`.
 */
export async function logIn(
  link: string | LoginLink,
  options: Omit<VolliClientOptions, "baseUrl" | "token"> = {},
): Promise<LoggedIn> {
  const { apiUrl, code } = typeof link === "string" ? parseLoginLink(link) : link;
  const anonymous = createFetchClient<paths>({
    baseUrl: apiUrl.replace(/\/+$/, ""),
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });
  const created = await ok(anonymous.POST("/v1/clients/login", { body: { code } }));
  return { created, client: createVolliClient({ ...options, baseUrl: apiUrl, token: created.token }) };
}
