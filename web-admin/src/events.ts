// The live event stream of @volli/client: a WebSocket opened with a single-use ticket,
// reopened with back-off, ended when the node refuses the session.
import { volli, type Event } from "./client";

export type Status = "connecting" | "live" | "offline";

export function connect(onEvent: (e: Event) => void, onStatus: (s: Status) => void): () => void {
  const stream = volli.events();
  const offEvents = stream.onAny(onEvent);
  const offStatus = stream.onStatus((s) => onStatus(s === "closed" ? "offline" : s));
  return () => {
    offEvents();
    offStatus();
    stream.close();
  };
}
