// The live event stream: a WebSocket opened with a single-use ticket, reopened with back-off.
import { api, ok, session, type Event } from "./client";

export type Status = "connecting" | "live" | "offline";

export function connect(onEvent: (e: Event) => void, onStatus: (s: Status) => void): () => void {
  let socket: WebSocket | null = null;
  let closed = false;
  let delay = 500;
  let timer: number | undefined;

  const retry = () => {
    if (closed || !session.get()) return;
    onStatus("offline");
    timer = window.setTimeout(open, delay);
    delay = Math.min(delay * 2, 10_000);
  };

  async function open() {
    if (closed) return;
    onStatus("connecting");
    let ticket: string;
    try {
      ticket = (await ok(api.POST("/v1/events/ticket"))).ticket;
    } catch {
      return retry();
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/v1/events?ticket=${encodeURIComponent(ticket)}`);
    socket = ws;
    ws.onmessage = (m) => {
      let event: Event;
      try {
        event = JSON.parse(m.data as string) as Event;
      } catch {
        return;
      }
      if (event.type === "ready") {
        delay = 500;
        onStatus("live");
      }
      onEvent(event);
    };
    ws.onclose = () => {
      if (socket === ws) socket = null;
      retry();
    };
  }

  void open();
  return () => {
    closed = true;
    window.clearTimeout(timer);
    socket?.close();
  };
}
