// Shared pieces: live reloading on events, actions with their errors, small widgets.
import { createContext, type ComponentChildren } from "preact";
import { useCallback, useContext, useEffect, useRef, useState } from "preact/hooks";
import { message, type Event } from "./client";
import { title } from "./notify";

/** What changed recently: a counter per event family ("message", "transfer", …). */
export type Live = { ticks: Record<string, number>; last: Event | null };
export const LiveContext = createContext<Live>({ ticks: {}, last: null });

export function topic(e: Event): string {
  return e.type.split(".")[0] ?? e.type;
}

/** Loads with `load`, again whenever an event of one of `topics` arrives (or after a resync). */
export function useLoad<T>(load: () => Promise<T>, topics: string[], deps: unknown[] = []) {
  const live = useContext(LiveContext);
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);
  const seq = useRef(0);
  const stamp = topics.map((t) => live.ticks[t] ?? 0).join(",") + "|" + (live.ticks["resync"] ?? 0);
  const reload = useCallback(async () => {
    const mine = ++seq.current;
    setLoading(true);
    try {
      const value = await load();
      if (mine === seq.current) {
        setData(value);
        setError(null);
      }
    } catch (e) {
      if (mine === seq.current) setError(message(e));
    } finally {
      if (mine === seq.current) setLoading(false);
    }
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);
  useEffect(() => {
    void reload();
  }, [reload, stamp]);
  return { data, error, loading, reload };
}

/** Runs an async action once at a time and keeps its error to show next to it. */
export function useAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const run = useCallback(async (f: () => Promise<unknown>): Promise<boolean> => {
    setBusy(true);
    setError(null);
    try {
      await f();
      return true;
    } catch (e) {
      setError(message(e));
      return false;
    } finally {
      setBusy(false);
    }
  }, []);
  return { busy, error, run, setError };
}

export function ErrorNote({ error }: { error: string | null | undefined }) {
  return error ? (
    <p class="error" role="alert">
      {error}
    </p>
  ) : null;
}

export function Loading({ what }: { what: string }) {
  return (
    <p class="muted" aria-busy="true">
      Loading {what}…
    </p>
  );
}

export function Empty({ children }: { children: ComponentChildren }) {
  return <p class="empty">{children}</p>;
}

/** A section that shows loading, error and empty states around its content. */
export function Loaded<T>(props: {
  state: { data: T | undefined; error: string | null };
  what: string;
  children: (data: T) => ComponentChildren;
}) {
  const { data, error } = props.state;
  if (data === undefined) return error ? <ErrorNote error={error} /> : <Loading what={props.what} />;
  return (
    <>
      <ErrorNote error={error} />
      {props.children(data)}
    </>
  );
}

export function Page(props: { title: string; children: ComponentChildren; actions?: ComponentChildren }) {
  useEffect(() => {
    title.set(props.title);
  }, [props.title]);
  return (
    <section aria-labelledby="page-title">
      <header class="page-head">
        <h1 id="page-title" tabIndex={-1}>
          {props.title}
        </h1>
        {props.actions}
      </header>
      {props.children}
    </section>
  );
}

export function Copy({ text, label = "Copy" }: { text: string; label?: string }) {
  const [done, setDone] = useState(false);
  return (
    <button
      type="button"
      class="small"
      onClick={async () => {
        try {
          await navigator.clipboard.writeText(text);
          setDone(true);
          setTimeout(() => setDone(false), 1500);
        } catch {
          /* clipboard not available (plain http on another host): the text is selectable */
        }
      }}
    >
      {done ? "Copied" : label}
    </button>
  );
}

/** A QR code the node drew (SVG), shown as an image so its markup never enters the page. */
export function Qr({ svg, label }: { svg: string; label: string }) {
  return <img class="qr" alt={label} src={`data:image/svg+xml;charset=utf-8,${encodeURIComponent(svg)}`} />;
}

/** An identifier shortened for reading, complete on hover and when copied. */
export function Id({ value }: { value: string }) {
  const short = value.length > 20 ? `${value.slice(0, 8)}…${value.slice(-6)}` : value;
  return (
    <code class="id" title={value}>
      {short}
    </code>
  );
}

export function When({ at }: { at: string | null | undefined }) {
  if (!at) return <span class="muted">never</span>;
  const d = new Date(at);
  return <time dateTime={at} title={d.toISOString()}>{d.toLocaleString()}</time>;
}

export function size(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function duration(secs: number): string {
  const d = Math.floor(secs / 86400);
  const h = Math.floor((secs % 86400) / 3600);
  const m = Math.floor((secs % 3600) / 60);
  if (d) return `${d} d ${h} h`;
  if (h) return `${h} h ${m} min`;
  if (m) return `${m} min`;
  return `${Math.floor(secs)} s`;
}

/** A button that asks again before doing something that cannot be undone. */
export function Confirm(props: { label: string; confirm: string; onConfirm: () => void; disabled?: boolean }) {
  const [asking, setAsking] = useState(false);
  if (!asking)
    return (
      <button type="button" class="small danger" disabled={props.disabled} onClick={() => setAsking(true)}>
        {props.label}
      </button>
    );
  return (
    <span class="confirm">
      <button
        type="button"
        class="small danger"
        autoFocus
        onClick={() => {
          setAsking(false);
          props.onConfirm();
        }}
      >
        {props.confirm}
      </button>
      <button type="button" class="small" onClick={() => setAsking(false)}>
        Keep
      </button>
    </span>
  );
}
