// The home screen: every 1:1 and group chat, newest activity first, with a search over names
// and (when the node can search) over all history.
import { useEffect, useRef, useState } from "preact/hooks";
import { message as errorText } from "../client";
import { next, type SearchResult } from "../api-next";
import * as data from "../data";
import { useStore } from "../store";
import { dismissOffer, enablePush, offer } from "../notify";
import { Avatar, Icon, listTime } from "./bits";

export function ChatList({ current }: { current: data.Key | null }) {
  const list = useStore(data.chats);
  const loaded = useStore(data.chatsLoaded);
  const status = useStore(data.connection);
  const avatars = useStore(data.avatars);
  const muted = useStore(data.muted);
  const m = useStore(data.me);
  useStore(data.contacts);
  const [q, setQ] = useState("");
  const [results, setResults] = useState<SearchResult[] | null>(null);
  const [searchError, setSearchError] = useState<string | null>(null);
  const needle = q.trim().toLowerCase();
  const shown = needle ? list.filter((c) => c.title.toLowerCase().includes(needle) || data.chatTitle(c.key).toLowerCase().includes(needle)) : list;

  useEffect(() => {
    if (!m.features.search || needle.length < 2) return setResults(null);
    const timer = setTimeout(() => {
      next
        .search(q.trim())
        .then((r) => (setResults(r.results), setSearchError(null)))
        .catch((e) => setSearchError(errorText(e)));
    }, 250);
    return () => clearTimeout(timer);
  }, [needle, m.features.search]);

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
      <div class="search" role="search">
        <Icon name="search" />
        <label class="sr-only" for="search">
          Search chats{m.features.search ? " and messages" : ""}
        </label>
        <input
          id="search"
          type="search"
          placeholder={m.features.search ? "Search chats and messages" : "Search chats"}
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
              const preview = !last ? (c.kind === "group" ? "New group" : "New contact — say hello") : last.deleted ? "Deleted message" : `${mine ? "You: " : c.kind === "group" ? `${data.nameOf(last.from)}: ` : ""}${last.body}`;
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
                        <span class="preview" data-testid="preview">
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
        {needle && shown.length === 0 && !results?.length && <p class="muted center">No chat is called “{q.trim()}”.</p>}
        {results && results.length > 0 && (
          <section aria-label="Messages found" class="results">
            <h2 class="list-heading">Messages</h2>
            <ul class="plain">
              {results.map((r) => {
                const key = r.group ? data.keyOf("g", r.group) : data.keyOf("u", r.with ?? r.message.from);
                return (
                  <li key={r.message.id}>
                    <a class="chat result" href={`#/chat/${key.replace(":", "/")}/${encodeURIComponent(r.message.id)}`} data-testid="search-result">
                      <span class="chat-main">
                        <span class="chat-top">
                          <span class="chat-title">{data.chatTitle(key)}</span>
                          <time dateTime={r.message.sent_at}>{listTime(r.message.sent_at)}</time>
                        </span>
                        <span class="preview">{r.snippet || r.message.body}</span>
                      </span>
                    </a>
                  </li>
                );
              })}
            </ul>
          </section>
        )}
        {searchError && <p class="error">{searchError}</p>}
      </nav>
    </div>
  );
}

/** The first time the app opens on a device: would the person like to be notified? */
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
