// The home screen: every 1:1 and group chat, newest activity first, with a search over names
// and (when the node can search) over all history.
import type { JSX } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { api, message as errorText, ok } from "../client";
import * as data from "../data";
import { useStore } from "../store";
import { dismissOffer, enablePush, offer } from "../notify";
import { useLoad } from "../ui";
import { Avatar, Icon, listTime } from "./bits";

export function ChatList({ current }: { current: data.Key | null }) {
  const list = useStore(data.chats);
  const loaded = useStore(data.chatsLoaded);
  const status = useStore(data.connection);
  const avatars = useStore(data.avatars);
  const muted = useStore(data.muted);
  const m = useStore(data.me);
  const typing = useStore(data.typing);
  useStore(data.contacts);
  useStore(data.groups);
  const [q, setQ] = useState("");
  const [results, setResults] = useState<data.SearchResult[] | null>(null);
  const [searchError, setSearchError] = useState<string | null>(null);
  const needle = q.trim().toLowerCase();
  const shown = needle ? list.filter((c) => c.title.toLowerCase().includes(needle) || data.chatTitle(c.key).toLowerCase().includes(needle)) : list;

  useEffect(() => {
    if (needle.length < 2) return (setResults(null), setSearchError(null));
    let current = true;
    const timer = setTimeout(() => {
      data
        .search(q.trim())
        .then((r) => current && (setResults(r), setSearchError(null)))
        .catch((e) => current && setSearchError(errorText(e)));
    }, 200);
    return () => ((current = false), clearTimeout(timer));
  }, [needle]);
  const indexing = m.node?.search.state === "building" ? m.node.search : null;

  const me = m.node?.user_id ?? "";
  const myName = m.profile?.name || m.node?.device_name || "You";
  return (
    <div class="chatlist">
      <header class="bar list-bar">
        <a class="iconbtn me" href="#/settings" aria-label="Settings and profile">
          <Avatar id={me || "me"} name={myName} url={m.avatar} size={34} />
        </a>
        <h1 class="bar-title">Chats</h1>
        <span class={`live ${status}`} data-testid="live" role="status" title={status === "live" ? "Connected to your node" : status === "connecting" ? "Connecting to your node" : "Your node cannot be reached"}>
          <span class="sr-only">{status === "live" ? "live" : status === "connecting" ? "connecting…" : "offline, retrying"}</span>
        </span>
        <div class="bar-actions">
          {(data.can("send") || data.can("contacts")) && (
            <a class="iconbtn" href="#/new" aria-label="New chat" aria-keyshortcuts="Control+Alt+N">
              <Icon name="plus" />
            </a>
          )}
          <a class="iconbtn" href="#/settings" aria-label="Settings">
            <Icon name="gear" />
          </a>
        </div>
      </header>
      {status === "offline" && (
        <p class="banner" role="status">
          Your node cannot be reached. Showing what this device last had; messages you write are sent when it answers.
        </p>
      )}
      <NotifyOffer />
      <BackupOffer />
      <div class="search" role="search">
        <Icon name="search" />
        <label class="sr-only" for="search">
          Search chats and messages
        </label>
        <input
          id="search"
          type="search"
          placeholder="Search chats and messages"
          value={q}
          aria-keyshortcuts="Control+K"
          onInput={(e) => setQ(e.currentTarget.value)}
          onKeyDown={(e) => e.key === "Escape" && setQ("")}
        />
      </div>
      <nav aria-label="Chats" class="chats">
        {!loaded ? (
          <p class="muted center" aria-busy="true">
            Loading chats…
          </p>
        ) : shown.length === 0 && !needle ? (
          <div class="empty center">
            <p>No chats yet.</p>
            {data.can("contacts") && (
              <a class="button" href="#/add">
                Add a contact
              </a>
            )}
          </div>
        ) : (
          <ul class="plain">
            {shown.map((c) => {
              const title = data.chatTitle(c.key);
              const last = c.last;
              const mine = last?.from === me;
              const who = typing[c.key];
              const preview = who
                ? c.kind === "group"
                  ? `${data.nameOf(who.from)} is typing…`
                  : "typing…"
                : !last
                  ? c.kind === "group"
                    ? "New group"
                    : "New contact — say hello"
                  : last.kind === "system" || last.deleted
                    ? data.summary(last)
                    : `${mine ? "You: " : c.kind === "group" ? `${data.nameOf(last.from)}: ` : ""}${data.summary(last)}`;
              return (
                <li key={c.key}>
                  <a class={`chat${c.unread ? " unread" : ""}`} href={`#/chat/${c.key.replace(":", "/")}`} aria-current={c.key === current ? "page" : undefined} data-testid="chat">
                    <Avatar id={c.id} name={title} url={c.kind === "direct" ? avatars[c.id] : null} size={46} />
                    <span class="chat-main">
                      <span class="chat-top">
                        <span class="chat-title">{title}</span>
                        {last && <time dateTime={last.sent_at}>{listTime(c.updated_at)}</time>}
                      </span>
                      <span class="chat-bottom">
                        {mine && last && !last.deleted && last.kind !== "system" && !who && <ListTicks status={last.pending ? "sending" : last.status} />}
                        <span class={`preview${who ? " typing" : ""}`} data-testid={who ? "list-typing" : "preview"}>
                          {preview}
                        </span>
                        {muted.includes(c.key) && (
                          <span class="muted-icon" title="Muted">
                            <Icon name="bellOff" label="muted" />
                          </span>
                        )}
                        {c.unread > 0 && (
                          <span class="count" data-testid="unread">
                            {c.unread}
                            <span class="sr-only"> unread</span>
                          </span>
                        )}
                      </span>
                    </span>
                  </a>
                </li>
              );
            })}
          </ul>
        )}
        {needle && shown.length === 0 && results !== null && !results.length && <p class="muted center">Nothing matches “{q.trim()}”.</p>}
        {results && results.length > 0 && (
          <section aria-label="Messages found" class="results">
            <h2 class="list-heading">Messages</h2>
            <ul class="plain">
              {results.map((r) => {
                const key = data.keyFor(r, r.message.from);
                const title = data.chatTitle(key);
                const from = r.group ? `${data.nameOf(r.message.from)}: ` : r.message.from === me ? "You: " : "";
                return (
                  <li key={r.message.id}>
                    <a class="chat result" href={`#/chat/${key.replace(":", "/")}/${encodeURIComponent(r.message.id)}`} data-testid="search-result">
                      <Avatar id={data.parseKey(key).id} name={title} url={r.group ? null : avatars[data.parseKey(key).id]} size={40} />
                      <span class="chat-main">
                        <span class="chat-top">
                          <span class="chat-title">{title}</span>
                          <time dateTime={r.message.sent_at}>{listTime(r.message.sent_at)}</time>
                        </span>
                        <span class="preview snippet">
                          {from}
                          <Highlighted text={r.snippet || r.message.body} marks={r.snippet ? r.highlights : []} />
                        </span>
                      </span>
                    </a>
                  </li>
                );
              })}
            </ul>
          </section>
        )}
        {needle.length >= 2 && indexing && (
          <p class="muted small center" role="status">
            Still indexing older messages ({indexing.indexed} of {indexing.total}): some may not be found yet.
          </p>
        )}
        {searchError && <p class="error">{searchError}</p>}
      </nav>
    </div>
  );
}

/** A snippet with the words that matched marked (`[start, end)` in UTF-16 code units). */
function Highlighted({ text, marks }: { text: string; marks: number[][] }) {
  const parts: (string | JSX.Element)[] = [];
  let at = 0;
  for (const [start = 0, end = 0] of [...marks].sort((a, b) => (a[0] ?? 0) - (b[0] ?? 0))) {
    if (start < at || end <= start || end > text.length) continue;
    if (start > at) parts.push(text.slice(at, start));
    parts.push(<mark key={start}>{text.slice(start, end)}</mark>);
    at = end;
  }
  if (at < text.length) parts.push(text.slice(at));
  return <>{parts}</>;
}

/** The ticks of this user's last message, in the chat list. */
function ListTicks({ status }: { status: string }) {
  const icon = status === "delivered" || status === "read" ? "checks" : status === "sending" ? "clock" : status === "failed" ? "alert" : "check";
  return (
    <span class={`ticks ${status}`} data-testid="list-status">
      <Icon name={icon} />
      <span class="sr-only">{status === "read" ? "Read" : status === "delivered" ? "Delivered" : status === "sending" ? "Sending" : status === "failed" ? "Not delivered" : "Sent"}</span>
    </span>
  );
}

/** The first time the app opens on a device: would the person like to be notified? */
/** Whether the backup was offered on this device and put off ("Later"). */
const BACKUP_LATER = "volli.backup.later";

/**
 * The backup, offered on the chat list until it is set up: once this user has a contact (a
 * friend's node to hold it) and this login may set it up, and not while notifications are
 * offered (one question at a time). "Later" puts it off on this device; Settings → Backup
 * stays. The node does not make a recovery phrase unasked: a phrase is shown once, to a
 * person, and a node's first start has nobody to show it to but its log.
 */
function BackupOffer() {
  const notifying = useStore(offer);
  const contacts = useStore(data.contacts);
  const [later, setLater] = useState(() => !!localStorage.getItem(BACKUP_LATER));
  const wanted = data.can("backup") && !notifying && !later && contacts.length > 0;
  const backup = useLoad(() => (wanted ? ok(api.GET("/v1/backup")) : Promise.resolve(null)), ["backup"], [wanted]);
  if (!wanted || backup.data?.state !== "off") return null;
  return (
    <div class="offer" role="region" aria-label="Backup offer" data-testid="backup-prompt">
      <p>Keep your chats if this device is lost: your friends' nodes can hold an encrypted backup, restored with a recovery phrase.</p>
      <div class="row">
        <a class="button" href="#/backup">
          Set up backup
        </a>
        <button
          type="button"
          class="secondary"
          onClick={() => {
            localStorage.setItem(BACKUP_LATER, "1");
            setLater(true);
          }}
        >
          Later
        </button>
      </div>
    </div>
  );
}

function NotifyOffer() {
  const show = useStore(offer);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const ref = useRef<HTMLDivElement>(null);
  if (!show && !error) return null;
  return (
    <div class="offer" ref={ref} role="region" aria-label="Notifications">
      {error ? (
        <p class="error" role="alert">
          {error}{" "}
          <button type="button" class="small" onClick={() => setError(null)}>
            OK
          </button>
        </p>
      ) : (
        <>
          <p>Get notified of new messages on this device, also while the app is closed?</p>
          <div class="row">
            <button
              type="button"
              disabled={busy}
              onClick={() => {
                setBusy(true);
                enablePush()
                  .catch((e) => setError(errorText(e)))
                  .finally(() => setBusy(false));
              }}
            >
              Turn on notifications
            </button>
            <button type="button" class="secondary" onClick={dismissOffer}>
              Not now
            </button>
          </div>
        </>
      )}
    </div>
  );
}
