// The typed client: every route and schema from openapi/openapi.json, through openapi-fetch.
import createFetchClient, { type Client } from "openapi-fetch";
import type { components, paths } from "./generated/api.js";
import { EventStream, type EventStreamOptions } from "./events.js";

export type { components, paths };
/** Every schema of the API by name: `Schemas["Contact"]`, `Schemas["CreatedClient"]`. */
export type Schemas = components["schemas"];

/** A bearer token, or a function that returns the current one (read before every request). */
export type TokenSource = string | (() => string | null | undefined);

export interface VolliClientOptions {
  /** The node's API address, as in its login link: `https://node.example.org`. */
  baseUrl: string;
  /** The client token (from `logIn` or `POST /v1/clients`), or the admin token on the node's machine. */
  token?: TokenSource;
  /** Called when the node refuses the token a request carried (401: revoked or expired). */
  onUnauthorized?: () => void;
  /** The `fetch` to use [default: the global one]. */
  fetch?: (input: Request) => Promise<Response>;
}

export interface VolliClient {
  /** The node's API address, without a trailing slash. */
  readonly baseUrl: string;
  /** Every route, typed from the OpenAPI document: `api.GET("/v1/contacts")`. */
  readonly api: Client<paths>;
  /** The token requests carry now, if any. */
  token(): string | undefined;
  /** Opens the live event stream (`/v1/events`), reopened with back-off until closed. */
  events(options?: EventStreamOptions): EventStream;
}

/** An error the node answered, with its stable code (`insufficient_scope`, `unknown_contact`…). */
export class VolliError extends Error {
  override name = "VolliError";
  constructor(
    /** The HTTP status, or 0 when the node could not be reached. */
    readonly status: number,
    /** The node's stable error code; `unreachable` when there was no answer. */
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

type Answer<T> = { data?: T; error?: unknown; response: Response };

/**
 * The data of a successful answer; otherwise throws a `VolliError` with the node's code and
 * message: `const { contacts } = await ok(volli.api.GET("/v1/contacts"))`.
 */
export async function ok<T>(request: Promise<Answer<T>>): Promise<T> {
  let answer: Answer<T>;
  try {
    answer = await request;
  } catch (e) {
    throw new VolliError(0, "unreachable", `the node cannot be reached: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (answer.response.ok) return answer.data as T;
  const body = answer.error as { error?: { code?: string; message?: string } } | undefined;
  throw new VolliError(
    answer.response.status,
    body?.error?.code ?? "unknown",
    body?.error?.message ?? `the node answered ${answer.response.status}`,
  );
}

/** A client of one node. */
export function createVolliClient(options: VolliClientOptions): VolliClient {
  const baseUrl = options.baseUrl.replace(/\/+$/, "");
  if (!/^https?:\/\/[^/]/.test(baseUrl)) {
    throw new VolliError(0, "invalid_base_url", `not an http:// or https:// address: ${options.baseUrl}`);
  }
  const source = options.token;
  const token = () => (typeof source === "function" ? source() : source) ?? undefined;
  const api = createFetchClient<paths>({ baseUrl, ...(options.fetch ? { fetch: options.fetch } : {}) });
  api.use({
    onRequest({ request }) {
      const t = token();
      if (t) request.headers.set("Authorization", `Bearer ${t}`);
      return request;
    },
    onResponse({ request, response }) {
      if (response.status === 401 && request.headers.has("Authorization")) options.onUnauthorized?.();
      return response;
    },
  });
  const client: VolliClient = {
    baseUrl,
    api,
    token,
    events: (eventOptions) => new EventStream(client, eventOptions),
  };
  return client;
}
