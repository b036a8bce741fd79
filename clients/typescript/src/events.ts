// The live event stream: `POST /v1/events/ticket` for a single-use ticket, then a WebSocket on
// `/v1/events?ticket=…`; reopened with back-off when the connection drops, and closed for good
// when the node refuses the client (its token revoked or lacking the `read` scope).
import { ok, VolliError, type Schemas, type VolliClient } from "./client.js";

/** One event, as the node sends it. */
export type Event = Schemas["Event"];
/** The `type` of every event the API documents. */
export type EventType = Event["type"];
/** The event of one type: `EventOf<"message.received">` has `from`, `body`, `sent_at`… */
export type EventOf<T extends EventType> = Extract<Event, { type: T }>;

/**
 * `connecting` (asking for a ticket or opening the socket), `live` (the node said `ready`),
 * `offline` (waiting to try again), `closed` (by `close()`, or by the node: see `error`).
 */
export type StreamStatus = "connecting" | "live" | "offline" | "closed";

/** What the stream needs of a WebSocket: the browser's, Node's (20 with `--experimental-websocket`, 22+) or the `ws` package's. */
export type WebSocketConstructor = new (url: string) => unknown;

export interface EventStreamOptions {
  /** The WebSocket class [default: `globalThis.WebSocket`]. */
  WebSocket?: WebSocketConstructor;
  /** The first wait before trying again, doubled on every failure up to `maxDelayMs` [500]. */
  minDelayMs?: number;
  /** The longest wait between attempts [10000]. */
  maxDelayMs?: number;
}

interface Socket {
  onmessage: ((e: { data: unknown }) => void) | null;
  onclose: ((e: { code: number; reason?: string }) => void) | null;
  onerror: ((e: unknown) => void) | null;
  close(code?: number): void;
}

/** The close code the node uses when the client is revoked (RFC 6455 policy violation). */
const POLICY = 1008;

type Listener = (e: Event) => void;

/** A live event stream of one node; make one with `client.events()`. */
export class EventStream {
  /** Where the stream is now. */
  status: StreamStatus = "connecting";
  /** Why the node closed the stream for good, when it did. */
  error: VolliError | undefined;

  readonly #client: VolliClient;
  readonly #WebSocket: WebSocketConstructor;
  readonly #minDelay: number;
  readonly #maxDelay: number;
  #delay: number;
  #socket: Socket | null = null;
  #timer: ReturnType<typeof setTimeout> | undefined;
  readonly #byType = new Map<string, Set<Listener>>();
  readonly #any = new Set<Listener>();
  readonly #statusListeners = new Set<(s: StreamStatus) => void>();

  constructor(client: VolliClient, options: EventStreamOptions = {}) {
    const Impl = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!Impl) {
      throw new VolliError(
        0,
        "no_websocket",
        "this runtime has no WebSocket: pass one (the `ws` package's) as options.WebSocket, or run Node 22+",
      );
    }
    this.#client = client;
    this.#WebSocket = Impl;
    this.#minDelay = options.minDelayMs ?? 500;
    this.#maxDelay = options.maxDelayMs ?? 10_000;
    this.#delay = this.#minDelay;
    void this.#open();
  }

  /** Calls `listener` with every event of `type`; returns a function that stops it. */
  on<T extends EventType>(type: T, listener: (e: EventOf<T>) => void): () => void {
    let set = this.#byType.get(type);
    if (!set) this.#byType.set(type, (set = new Set()));
    const l = listener as Listener;
    set.add(l);
    return () => set.delete(l);
  }

  /** Calls `listener` with every event, also types newer than this package. */
  onAny(listener: (e: Event) => void): () => void {
    this.#any.add(listener);
    return () => this.#any.delete(listener);
  }

  /** Calls `listener` on every change of `status`. */
  onStatus(listener: (s: StreamStatus) => void): () => void {
    this.#statusListeners.add(listener);
    return () => this.#statusListeners.delete(listener);
  }

  /**
   * The next event of `type` that `match` accepts (every one by default), or a `VolliError`
   * `timeout` after `timeoutMs` [30000], or the stream's error if it closes first.
   */
  next<T extends EventType>(type: T, match: (e: EventOf<T>) => boolean = () => true, timeoutMs = 30_000): Promise<EventOf<T>> {
    return new Promise((resolve, reject) => {
      const done = () => (clearTimeout(timer), stop(), unwatch());
      const stop = this.on(type, (e) => {
        if (match(e)) (done(), resolve(e));
      });
      const unwatch = this.onStatus((s) => {
        if (s === "closed") (done(), reject(this.error ?? new VolliError(0, "closed", "the event stream was closed")));
      });
      const timer = setTimeout(
        () => (done(), reject(new VolliError(0, "timeout", `no ${type} event within ${timeoutMs} ms`))),
        timeoutMs,
      );
    });
  }

  /** Closes the stream; nothing is reopened. */
  close(): void {
    clearTimeout(this.#timer);
    const socket = this.#socket;
    this.#socket = null;
    socket?.close();
    this.#set("closed");
  }

  #set(status: StreamStatus) {
    if (this.status === status) return;
    this.status = status;
    for (const l of [...this.#statusListeners]) l(status);
  }

  #retry() {
    if (this.status === "closed") return;
    this.#set("offline");
    // Jitter keeps many clients of a restarted node from coming back at the same instant.
    const wait = this.#delay * (0.75 + Math.random() * 0.5);
    this.#delay = Math.min(this.#delay * 2, this.#maxDelay);
    this.#timer = setTimeout(() => void this.#open(), wait);
  }

  #fail(error: VolliError) {
    this.error = error;
    this.close();
  }

  async #open() {
    if (this.status === "closed") return;
    this.#set("connecting");
    let ticket: string;
    try {
      ticket = (await ok(this.#client.api.POST("/v1/events/ticket"))).ticket;
    } catch (e) {
      // A refused token or a missing scope will not change by trying again.
      if (e instanceof VolliError && (e.status === 401 || e.status === 403)) return this.#fail(e);
      return this.#retry();
    }
    // close() may have run while the ticket was on its way.
    if ((this.status as StreamStatus) === "closed") return;
    const url = `${this.#client.baseUrl.replace(/^http/, "ws")}/v1/events?ticket=${encodeURIComponent(ticket)}`;
    let socket: Socket;
    try {
      socket = new this.#WebSocket(url) as Socket;
    } catch {
      return this.#retry();
    }
    this.#socket = socket;
    socket.onmessage = (m) => {
      if (this.#socket !== socket) return;
      let event: Event;
      try {
        event = JSON.parse(typeof m.data === "string" ? m.data : String(m.data)) as Event;
      } catch {
        return;
      }
      if (event.type === "ready") {
        this.#delay = this.#minDelay;
        this.#set("live");
      }
      for (const l of [...(this.#byType.get(event.type) ?? [])]) l(event);
      for (const l of [...this.#any]) l(event);
    };
    socket.onerror = () => {};
    socket.onclose = (e) => {
      if (this.#socket !== socket) return;
      this.#socket = null;
      if (e.code === POLICY) {
        return this.#fail(new VolliError(401, "revoked", e.reason || "the node closed the stream: this client was revoked"));
      }
      this.#retry();
    };
  }
}
