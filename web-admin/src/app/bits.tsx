// Small pieces the chat screens share: icons, avatars, times, linkified text.
import type { ComponentChildren, JSX } from "preact";

const PATHS: Record<string, string> = {
  back: "M15 5l-7 7 7 7",
  plus: "M12 5v14M5 12h14",
  gear: "M12 15a3 3 0 100-6 3 3 0 000 6zM19.4 13a7.6 7.6 0 000-2l2-1.6-2-3.4-2.4 1a7.4 7.4 0 00-1.7-1L15 3.5h-4l-.4 2.5a7.4 7.4 0 00-1.7 1l-2.4-1-2 3.4 2 1.6a7.6 7.6 0 000 2l-2 1.6 2 3.4 2.4-1a7.4 7.4 0 001.7 1l.4 2.5h4l.4-2.5a7.4 7.4 0 001.7-1l2.4 1 2-3.4z",
  clip: "M20 11.5l-8.2 8.2a5 5 0 01-7.1-7.1l8.5-8.5a3.3 3.3 0 014.7 4.7L9.4 17.3a1.7 1.7 0 01-2.4-2.4l7.8-7.8",
  send: "M4 12l16-8-6 16-2.5-6.5z M11.5 13.5L20 4",
  check: "M5 12.5l4.5 4.5L19 7.5",
  checks: "M2 12.5l4.5 4.5L16 7.5M9.5 16l1 1L20 7.5",
  clock: "M12 21a9 9 0 110-18 9 9 0 010 18zM12 7v5l3 2",
  more: "M6 12h.01M12 12h.01M18 12h.01",
  close: "M6 6l12 12M18 6L6 18",
  reply: "M10 8L4 13l6 5M4 13h10a6 6 0 016 6",
  info: "M12 21a9 9 0 110-18 9 9 0 010 18zM12 11v6M12 7.5v.01",
  down: "M12 5v14M6 13l6 6 6-6",
  file: "M14 3H6v18h12V7zM14 3v4h4",
  search: "M10.5 18a7.5 7.5 0 110-15 7.5 7.5 0 010 15zM16 16l5 5",
  alert: "M12 3l10 18H2zM12 10v5M12 18v.01",
  person: "M12 12a4 4 0 100-8 4 4 0 000 8zM4 21a8 8 0 0116 0",
  timer: "M12 21a8 8 0 110-16 8 8 0 010 16zM12 9v4l2.5 1.5M9.5 2.5h5",
  camera: "M4 8h3l2-3h6l2 3h3v11H4zM12 16.5a3.5 3.5 0 100-7 3.5 3.5 0 000 7z",
  bellOff: "M6 8a6 6 0 0110.5-4M18 11v3l2 3H8M10 20a2 2 0 004 0M3 3l18 18",
};

export function Icon({ name, label }: { name: keyof typeof PATHS | string; label?: string }) {
  return (
    <svg class="icon" viewBox="0 0 24 24" aria-hidden={label ? undefined : "true"} role={label ? "img" : undefined} aria-label={label}>
      <path d={PATHS[name] ?? ""} />
    </svg>
  );
}

/** A person's or a group's picture: the image when there is one, else initials on a colour of their id. */
export function Avatar({ id, name, url, size = 40 }: { id: string; name: string; url?: string | null; size?: number }) {
  const style = { width: `${size}px`, height: `${size}px`, fontSize: `${Math.round(size * 0.4)}px` };
  if (url) return <img class="avatar" src={url} alt="" style={style} />;
  let h = 0;
  for (let i = 0; i < id.length; i++) h = (h * 31 + id.charCodeAt(i)) % 360;
  const letters = name
    .split(/\s+/)
    .filter(Boolean)
    .slice(0, 2)
    .map((w) => [...w][0]?.toUpperCase() ?? "")
    .join("");
  return (
    <span class="avatar" aria-hidden="true" style={{ ...style, background: `hsl(${h} 45% 38%)` }}>
      {letters || "?"}
    </span>
  );
}

const sameDay = (a: Date, b: Date) => a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();

export function shortTime(at: string): string {
  return new Date(at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** The time in the chat list: a time today, "Yesterday", a weekday this week, else a date. */
export function listTime(at: string): string {
  const d = new Date(at);
  const now = new Date();
  if (sameDay(d, now)) return shortTime(at);
  const y = new Date(now);
  y.setDate(now.getDate() - 1);
  if (sameDay(d, y)) return "Yesterday";
  if (now.getTime() - d.getTime() < 6 * 86400_000) return d.toLocaleDateString([], { weekday: "short" });
  return d.toLocaleDateString([], { day: "numeric", month: "short", ...(d.getFullYear() === now.getFullYear() ? {} : { year: "numeric" }) });
}

/** A day separator's words. */
export function dayLabel(at: string): string {
  const d = new Date(at);
  const now = new Date();
  if (sameDay(d, now)) return "Today";
  const y = new Date(now);
  y.setDate(now.getDate() - 1);
  if (sameDay(d, y)) return "Yesterday";
  return d.toLocaleDateString([], { weekday: "long", day: "numeric", month: "long", ...(d.getFullYear() === now.getFullYear() ? {} : { year: "numeric" }) });
}

export const dayOf = (at: string) => new Date(at).toDateString();

const URL_RE = /\bhttps?:\/\/[^\s<>"']*[^\s<>"'.,;:!?)\]}]/g;

/** Text with its web addresses as links (opened in a new tab; nothing is fetched to preview them). */
export function Linked({ text }: { text: string }) {
  const parts: (string | JSX.Element)[] = [];
  let at = 0;
  for (const match of text.matchAll(URL_RE)) {
    const i = match.index ?? 0;
    if (i > at) parts.push(text.slice(at, i));
    parts.push(
      <a href={match[0]} target="_blank" rel="noopener noreferrer nofollow">
        {match[0]}
      </a>,
    );
    at = i + match[0].length;
  }
  if (at < text.length) parts.push(text.slice(at));
  return <>{parts}</>;
}

const EMOJI_ONLY = /^(?:\p{Extended_Pictographic}|\p{Emoji_Component}|\u200d|\ufe0f|\s){1,12}$/u;
export const onlyEmoji = (text: string) => text.length <= 24 && EMOJI_ONLY.test(text) && /\p{Extended_Pictographic}/u.test(text);

export function size(bytes: number): string {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let v = bytes;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** A screen's header: back (on a phone, or always when `back` says), title, actions. */
export function Bar(props: { back?: string; children: ComponentChildren; actions?: ComponentChildren; always?: boolean }) {
  return (
    <header class="bar">
      {props.back && (
        <a class={`iconbtn back${props.always ? " always" : ""}`} href={props.back} aria-label="Back">
          <Icon name="back" />
        </a>
      )}
      <div class="bar-title">{props.children}</div>
      {props.actions && <div class="bar-actions">{props.actions}</div>}
    </header>
  );
}
