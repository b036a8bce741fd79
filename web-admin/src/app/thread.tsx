// One conversation: its timeline (messages, files, system lines, day separators), paged back
// without end while keeping the scroll position, and the composer pinned under it.
import { Component, type JSX } from "preact";
import { useEffect, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import { message as errorText } from "../client";
import * as data from "../data";
import { useStore } from "../store";
import { title } from "../notify";
import type { Features } from "../api-next";
import { Avatar, Bar, dayLabel, dayOf, Icon, Linked, onlyEmoji, shortTime, size } from "./bits";

type Msg = data.Msg;
type Item =
  | { kind: "msg"; id: string; at: string; from: string; m: Msg }
  | { kind: "file"; id: string; at: string; from: string; t: data.Transfer }
  | { kind: "upload"; id: string; at: string; from: string; u: data.Upload }
  | { kind: "sys"; id: string; at: string; from: ""; text: string };

const REACTIONS = ["👍", "❤️", "😂", "😮", "😢", "🙏"];
const RUN_GAP = 5 * 60_000;

/** What a bubble can ask of its thread: stable across renders, so bubbles need not re-render. */
type Actions = {
  menu: (m: Msg, at: HTMLElement) => void;
  reply: (m: Msg) => void;
  jump: (id: string) => void;
  react: (m: Msg, emoji: string) => void;
  open: (url: string, name: string) => void;
};

export function Thread({ chatKey, focus }: { chatKey: data.Key; focus?: string | undefined }) {
  const { group, id } = data.parseKey(chatKey);
  const t = useStore(data.timeline(chatKey));
  const allTransfers = useStore(data.transfers);
  const uploads = useStore(data.uploads);
  const sys = useStore(data.system)[chatKey];
  const typing = useStore(data.typing)[chatKey];
  const features = useStore(data.me).features;
  const contactList = useStore(data.contacts);
  const groupList = useStore(data.groups);
  const avatars = useStore(data.avatars);
  useStore(data.chats);
  const g = group ? groupList.find((x) => x.id === id) : undefined;
  const name = data.chatTitle(chatKey);
  const known = group ? !!g : contactList.some((c) => c.user_id === id);

  const [replyTo, setReplyTo] = useState<Msg | null>(null);
  const [editing, setEditing] = useState<Msg | null>(null);
  const [menu, setMenu] = useState<{ m: Msg; x: number; y: number } | null>(null);
  const [confirmDelete, setConfirmDelete] = useState<Msg | null>(null);
  const [lightbox, setLightbox] = useState<{ url: string; name: string } | null>(null);
  const [note, setNote] = useState<string | null>(null);
  const [highlight, setHighlight] = useState<string | null>(null);
  const [dragging, setDragging] = useState(false);
  const composer = useRef<HTMLTextAreaElement>(null);

  useEffect(() => {
    title.set(name);
  }, [name]);

  // Screen readers hear what arrives in the open chat; a keyboard and mouse start in the composer.
  const [heard, setHeard] = useState("");
  useEffect(
    () =>
      data.onIncoming((key, m) => {
        if (key === chatKey) setHeard(`${data.nameOf(m.from)}: ${m.body}`);
      }),
    [chatKey],
  );
  useEffect(() => {
    if (typeof matchMedia === "function" && matchMedia("(pointer: fine)").matches && !focus) composer.current?.focus({ preventScroll: true });
  }, [chatKey]);

  // This chat is on screen: its messages are read while the page is seen.
  useEffect(() => {
    data.openChat.set(chatKey);
    void data.openTimeline(chatKey).then(() => data.isReading(chatKey) && data.markRead(chatKey));
    const seen = () => data.isReading(chatKey) && data.markRead(chatKey);
    document.addEventListener("visibilitychange", seen);
    window.addEventListener("focus", seen);
    return () => {
      document.removeEventListener("visibilitychange", seen);
      window.removeEventListener("focus", seen);
      if (data.openChat.value === chatKey) data.openChat.set(null);
    };
  }, [chatKey]);

  const jump = async (target: string) => {
    if (!(await data.findMessage(chatKey, target))) return setNote("That message is no longer here.");
    setHighlight(target);
    requestAnimationFrame(() => document.getElementById(`m-${target}`)?.scrollIntoView({ block: "center" }));
  };
  useEffect(() => {
    if (focus) void jump(focus);
  }, [focus, chatKey]);

  const actions = useRef<Actions>(null as unknown as Actions);
  actions.current = {
    menu: (m, at) => {
      const r = at.getBoundingClientRect();
      setMenu({ m, x: Math.min(r.left, window.innerWidth - 230), y: r.bottom + 4 > window.innerHeight - 260 ? Math.max(8, r.top - 260) : r.bottom + 4 });
    },
    reply: (m) => {
      if (!features.reply || !data.can("send")) return;
      setEditing(null);
      setReplyTo(m);
      composer.current?.focus();
    },
    jump: (target) => void jump(target),
    react: (m, emoji) => void data.react(chatKey, m, emoji).catch((e) => setNote(errorText(e))),
    open: (url, n) => setLightbox({ url, name: n }),
  };
  const stable = useMemo<Actions>(
    () => ({
      menu: (m, at) => actions.current.menu(m, at),
      reply: (m) => actions.current.reply(m),
      jump: (x) => actions.current.jump(x),
      react: (m, e) => actions.current.react(m, e),
      open: (u, n) => actions.current.open(u, n),
    }),
    [],
  );

  // The items in time order: messages, files, uploads, and system lines.
  const items = useMemo(() => {
    const oldest = t.hasMore ? (t.messages.find((m) => !m.pending)?.sent_at ?? "") : "";
    const list: Item[] = t.messages.map((m) => ({ kind: "msg", id: m.id, at: m.sent_at, from: m.from, m }));
    // Files the node already lists as messages of the conversation are shown there, once.
    const asMessages = new Set(t.messages.map((m) => m.file?.transfer).filter(Boolean));
    for (const tr of data.transfersOf(chatKey, allTransfers)) {
      if (tr.created_at < oldest || asMessages.has(tr.id)) continue;
      list.push({ kind: "file", id: `file:${tr.id}`, at: tr.created_at, from: tr.direction === "outgoing" ? data.myId() : tr.peer, t: tr });
    }
    for (const u of uploads) if (u.key === chatKey) list.push({ kind: "upload", id: u.id, at: "9999", from: data.myId(), u });
    if (!t.hasMore && g) {
      const creator = g.members.find((m) => !m.sponsor)?.user_id;
      list.push({ kind: "sys", id: "sys:created", at: g.created_at, from: "", text: creator ? `${data.nameOf(creator)} created the group “${g.name}”` : `The group “${g.name}” was created` });
    }
    for (const s of sys ?? []) if (s.at >= oldest) list.push({ kind: "sys", id: s.id, at: s.at, from: "", text: s.text });
    return list.sort((a, b) => {
      const pa = a.kind === "msg" && a.m.pending ? 1 : 0;
      const pb = b.kind === "msg" && b.m.pending ? 1 : 0;
      return pa - pb || a.at.localeCompare(b.at);
    });
  }, [t, allTransfers, uploads, sys, chatKey, g]);

  const byId = useMemo(() => new Map(t.messages.map((m) => [m.id, m])), [t.messages]);

  // Scrolling: stick to the newest while at the bottom; keep the place when older pages arrive.
  const scroller = useRef<HTMLDivElement>(null);
  const stick = useRef(true);
  const firstId = useRef<string | null>(null);
  const fromBottom = useRef<number | null>(null);
  const anchor = useRef<{ node: Element; y: number } | null>(null);
  const [away, setAway] = useState(false);
  const currentFirst = t.messages[0]?.id ?? null;
  if (scroller.current && firstId.current !== currentFirst && firstId.current !== null && !stick.current) {
    // Render phase, before the DOM changes: remember where the first message on screen is.
    const top = scroller.current.getBoundingClientRect().top;
    for (const row of scroller.current.querySelectorAll(".msg-row")) {
      const r = row.getBoundingClientRect();
      if (r.bottom > top) {
        anchor.current = { node: row, y: r.top };
        break;
      }
    }
    if (!anchor.current) fromBottom.current = scroller.current.scrollHeight - scroller.current.scrollTop;
  }
  firstId.current = currentFirst;
  useLayoutEffect(() => {
    const el = scroller.current;
    if (!el) return;
    if (anchor.current) {
      if (anchor.current.node.isConnected) el.scrollTop += anchor.current.node.getBoundingClientRect().top - anchor.current.y;
      anchor.current = null;
    } else if (fromBottom.current !== null) {
      el.scrollTop = el.scrollHeight - fromBottom.current;
      fromBottom.current = null;
    } else if (stick.current && !focus) el.scrollTop = el.scrollHeight;
    if (t.loaded && t.hasMore && !t.loading && el.scrollHeight <= el.clientHeight + 200) void data.loadOlder(chatKey);
  });
  useEffect(() => {
    const el = scroller.current;
    const inner = el?.firstElementChild;
    if (!el || !inner) return;
    const ro = new ResizeObserver(() => {
      if (stick.current && !fromBottom.current) el.scrollTop = el.scrollHeight;
    });
    ro.observe(inner);
    return () => ro.disconnect();
  }, [chatKey]);
  useEffect(() => {
    stick.current = !focus;
  }, [chatKey]);
  const onScroll = () => {
    const el = scroller.current!;
    const atBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 60;
    stick.current = atBottom;
    setAway(!atBottom);
    if (el.scrollTop < el.clientHeight && t.hasMore && !t.loading && t.loaded) void data.loadOlder(chatKey);
  };

  const drop = (e: DragEvent) => {
    e.preventDefault();
    setDragging(false);
    if (!data.can("files")) return;
    for (const f of Array.from(e.dataTransfer?.files ?? [])) data.sendFile(chatKey, f);
  };

  const subtitle = typing
    ? group
      ? `${data.nameOf(typing.from)} is typing…`
      : "typing…"
    : g
      ? g.members.map((m) => data.nameOf(m.user_id)).join(", ")
      : "";

  return (
    <section
      class="thread"
      aria-label={`Conversation with ${name}`}
      onDragOver={(e) => {
        if (data.can("files") && e.dataTransfer?.types.includes("Files")) {
          e.preventDefault();
          setDragging(true);
        }
      }}
      onDragLeave={(e) => e.currentTarget === e.target && setDragging(false)}
      onDrop={drop}
    >
      <Bar
        back="#/"
        actions={
          <a class="iconbtn" href={group ? `#/group/${encodeURIComponent(id)}` : `#/contact/${encodeURIComponent(id)}`} aria-label={group ? "Group info" : "Contact info"}>
            <Icon name="info" />
          </a>
        }
      >
        <a class="who" href={group ? `#/group/${encodeURIComponent(id)}` : `#/contact/${encodeURIComponent(id)}`}>
          <Avatar id={id} name={name} url={group ? null : avatars[id]} size={36} />
          <span class="who-text">
            <h1 id="page-title" tabIndex={-1}>
              {name}
            </h1>
            {subtitle && (
              <span class={`sub${typing ? " typing" : ""}`} data-testid={typing ? "typing" : undefined}>
                {subtitle}
              </span>
            )}
          </span>
        </a>
      </Bar>
      <p class="sr-only" aria-live="polite">
        {heard}
      </p>
      <div class="timeline" ref={scroller} onScroll={onScroll} tabIndex={0} aria-label="Messages">
        <div class="timeline-inner">
          <div class="history-edge" aria-live="polite">
            {t.loading && t.loaded && <span class="muted">Loading older messages…</span>}
            {!t.hasMore && t.loaded && <span class="muted">This is the start of your conversation{group ? "" : ` with ${name}`}.</span>}
          </div>
          {!t.loaded && !t.error && <p class="muted center" aria-busy="true">Loading messages…</p>}
          {t.error && <p class="error center" role="alert">{t.error}</p>}
          {t.loaded && items.length === 0 && <p class="empty center">No messages yet. Say hello!</p>}
          <Items items={items} group={group} byId={byId} actions={stable} features={features} highlight={highlight} chatKey={chatKey} />
        </div>
      </div>
      {away && (
        <button
          type="button"
          class="to-newest"
          aria-label="Jump to the newest message"
          onClick={() => {
            stick.current = true;
            setHighlight(null);
            scroller.current!.scrollTop = scroller.current!.scrollHeight;
          }}
        >
          <Icon name="down" />
        </button>
      )}
      {note && (
        <p class="toast" role="status">
          {note}{" "}
          <button type="button" class="small" onClick={() => setNote(null)}>
            OK
          </button>
        </p>
      )}
      {known && data.can("send") ? (
        <Composer
          chatKey={chatKey}
          inputRef={composer}
          replyTo={replyTo}
          editing={editing}
          onDone={() => {
            setReplyTo(null);
            setEditing(null);
            stick.current = true;
          }}
          onEditLast={() => {
            if (!features.edit) return;
            const last = [...t.messages].reverse().find((m) => m.from === data.myId() && !m.pending && !m.deleted);
            if (last) (setEditing(last), setReplyTo(null));
          }}
          onError={setNote}
        />
      ) : (
        <p class="composer-note muted">{known ? "This login can read this chat but not write in it." : group ? "You are no longer in this group." : "This person is not one of your contacts any more."}</p>
      )}
      {dragging && (
        <div class="dropzone" aria-hidden="true">
          Drop to send to {name}
        </div>
      )}
      {menu && (
        <MessageMenu
          m={menu.m}
          x={menu.x}
          y={menu.y}
          features={features}
          onClose={() => setMenu(null)}
          onReply={() => stable.reply(menu.m)}
          onEdit={() => (setEditing(menu.m), setReplyTo(null), composer.current?.focus())}
          onReact={(e) => stable.react(menu.m, e)}
          onDelete={() => setConfirmDelete(menu.m)}
        />
      )}
      {confirmDelete && (
        <DeleteDialog
          m={confirmDelete}
          everyone={features.deleteForEveryone && confirmDelete.from === data.myId()}
          onClose={() => setConfirmDelete(null)}
          onDelete={(everyone) => {
            const m = confirmDelete;
            setConfirmDelete(null);
            void (everyone ? data.deleteForEveryone(chatKey, m.id) : data.deleteForMe(chatKey, m.id)).catch((e) => setNote(errorText(e)));
          }}
        />
      )}
      {lightbox && <Lightbox {...lightbox} onClose={() => setLightbox(null)} />}
    </section>
  );
}

/** The timeline's items with day separators and runs; rendered item by item, memoised. */
function Items(props: { items: Item[]; group: boolean; byId: Map<string, Msg>; actions: Actions; features: Features; highlight: string | null; chatKey: data.Key }) {
  const out: JSX.Element[] = [];
  let day = "";
  const me = data.myId();
  const items = props.items;
  for (let i = 0; i < items.length; i++) {
    const it = items[i]!;
    const d = it.kind === "upload" ? day : dayOf(it.at);
    if (d !== day && it.kind !== "upload") {
      day = d;
      out.push(
        <div class="day" role="separator" key={`day:${d}`} data-testid="day">
          <span>{dayLabel(it.at)}</span>
        </div>,
      );
    }
    if (it.kind === "sys") {
      out.push(
        <p class="sys" key={it.id} data-testid="system-line">
          {it.text}
        </p>,
      );
      continue;
    }
    const prev = items[i - 1];
    const nextItem = items[i + 1];
    const joins = (a: Item | undefined, b: Item | undefined) =>
      !!a && !!b && a.kind !== "sys" && b.kind !== "sys" && a.from === b.from && (a.kind === "upload" || b.kind === "upload" || (dayOf(a.at) === dayOf(b.at) && Math.abs(Date.parse(b.at) - Date.parse(a.at)) < RUN_GAP));
    const first = !joins(prev, it);
    const last = !joins(it, nextItem);
    const mine = it.from === me;
    const quoted = it.kind === "msg" && it.m.reply_to ? (props.byId.get(it.m.reply_to) ?? null) : null;
    out.push(
      <Row
        key={it.id}
        item={it}
        mine={mine}
        first={first}
        last={last}
        showName={props.group && !mine && first}
        quoted={quoted}
        actions={props.actions}
        features={props.features}
        highlight={props.highlight === it.id}
        chatKey={props.chatKey}
      />,
    );
  }
  return <div class="items">{out}</div>;
}

type RowProps = {
  item: Item;
  mine: boolean;
  first: boolean;
  last: boolean;
  showName: boolean;
  quoted: Msg | null;
  actions: Actions;
  features: Features;
  highlight: boolean;
  chatKey: data.Key;
};

/** One bubble; re-rendered only when what it shows changes (long threads stay fast). */
class Row extends Component<RowProps> {
  override shouldComponentUpdate(n: RowProps) {
    const p = this.props;
    return p.item !== n.item && !(p.item.kind === "msg" && n.item.kind === "msg" && p.item.m === n.item.m && p.item.at === n.item.at)
      ? true
      : (n.item.kind === "msg" && !!n.item.m.file) || p.mine !== n.mine || p.first !== n.first || p.last !== n.last || p.showName !== n.showName || p.quoted !== n.quoted || p.features !== n.features || p.highlight !== n.highlight;
  }
  render() {
    const { item, mine, first, last, showName } = this.props;
    const cls = `msg-row ${mine ? "mine" : "theirs"}${first ? " first" : ""}${last ? " last" : ""}${this.props.highlight ? " highlight" : ""}`;
    return (
      <div class={cls} id={`m-${item.id}`}>
        {item.kind === "msg" && item.m.file && data.transfers.value[item.m.file.transfer] && !item.m.deleted ? (
          <FileBubble t={data.transfers.value[item.m.file.transfer]!} mine={mine} showName={showName} last={last} open={this.props.actions.open} />
        ) : item.kind === "msg" ? (
          <MessageBubble {...this.props} m={item.m} showName={showName} />
        ) : item.kind === "file" ? (
          <FileBubble t={item.t} mine={mine} showName={showName} last={last} open={this.props.actions.open} />
        ) : item.kind === "upload" ? (
          <UploadBubble u={item.u} />
        ) : null}
      </div>
    );
  }
}

const STATUS: Record<string, [string, string]> = {
  sending: ["clock", "Sending"],
  waiting: ["clock", "Waiting for your node"],
  queued: ["check", "Sent"],
  relayed: ["check", "Sent, held by a friend"],
  delivered: ["checks", "Delivered"],
  read: ["checks", "Read"],
  failed: ["alert", "Not delivered"],
};

function Ticks({ m, group }: { m: Msg; group: boolean }) {
  const key = m.pending === "failed" ? "failed" : m.pending ?? m.status;
  const [icon, words] = STATUS[key] ?? ["check", m.status];
  let detail = words;
  if (group && m.receipts?.length) {
    const delivered = m.receipts.filter((r) => r.status === "delivered" || r.status === "read").length;
    detail = `${words} (${delivered} of ${m.receipts.length} delivered)`;
  }
  if (group && m.read_by?.length) detail += `, read by ${m.read_by.map(data.nameOf).join(", ")}`;
  return (
    <span class={`ticks ${key}`} data-testid="message-status" title={detail}>
      <Icon name={icon} />
      <span class="sr-only">{detail}</span>
    </span>
  );
}

function MessageBubble(props: RowProps & { m: Msg }) {
  const { m, mine, showName, last, quoted, actions, features } = props;
  const group = data.parseKey(props.chatKey).group;
  const touch = useRef<{ x: number; y: number; timer: ReturnType<typeof setTimeout> | undefined; dx: number } | null>(null);
  const bubble = useRef<HTMLDivElement>(null);
  const more = useRef<HTMLButtonElement>(null);
  if (m.kind === "system") return <p class="sys" data-testid="system-line">{m.body}</p>;
  const deleted = m.deleted;
  const emoji = !deleted && onlyEmoji(m.body);
  const onPointerDown = (e: PointerEvent) => {
    if (e.pointerType !== "touch") return;
    touch.current = { x: e.clientX, y: e.clientY, dx: 0, timer: setTimeout(() => bubble.current && actions.menu(m, bubble.current), 500) };
  };
  const onPointerMove = (e: PointerEvent) => {
    const t = touch.current;
    if (!t) return;
    const dx = e.clientX - t.x;
    if (Math.abs(dx) > 8 || Math.abs(e.clientY - t.y) > 8) clearTimeout(t.timer);
    if (features.reply && dx > 0 && Math.abs(e.clientY - t.y) < 30 && bubble.current) {
      t.dx = Math.min(dx, 80);
      bubble.current.style.transform = `translateX(${t.dx}px)`;
    }
  };
  const onPointerUp = () => {
    const t = touch.current;
    if (!t) return;
    clearTimeout(t.timer);
    if (bubble.current) bubble.current.style.transform = "";
    if (t.dx >= 60) actions.reply(m);
    touch.current = null;
  };
  return (
    <>
      <div
        class={`bubble${emoji ? " jumbo" : ""}${deleted ? " deleted" : ""}${m.pending === "failed" ? " failed" : ""}`}
        ref={bubble}
        data-testid="message"
        onPointerDown={onPointerDown}
        onPointerMove={onPointerMove}
        onPointerUp={onPointerUp}
        onPointerCancel={onPointerUp}
        onDblClick={() => features.reply && actions.reply(m)}
      >
        {showName && <p class="sender">{data.nameOf(m.from)}</p>}
        {m.reply_to && (
          <button type="button" class="quote" onClick={() => m.reply_to && actions.jump(m.reply_to)} data-testid="quote">
            <strong>{quoted ? data.nameOf(quoted.from) : "Reply"}</strong>
            <span>{quoted ? (quoted.deleted ? "Deleted message" : quoted.body) : "to an earlier message"}</span>
          </button>
        )}
        {m.file?.thumbnail && !deleted && <img class="photo-preview" src={m.file.thumbnail} alt={m.file.name} />}
        <p class="text">{deleted ? <em>{mine ? "You deleted this message" : "This message was deleted"}</em> : m.file && !m.body ? `📎 ${m.file.name} (${size(m.file.size)})` : <Linked text={m.body} />}</p>
        <span class="meta">
          {m.edited_at && !deleted && <span class="edited">edited</span>}
          {(last || m.pending) && <time dateTime={m.sent_at} title={new Date(m.sent_at).toLocaleString()}>{shortTime(m.sent_at)}</time>}
          {mine && <Ticks m={m} group={group} />}
        </span>
        {!deleted && !m.pending && (
          <button type="button" class="more" ref={more} aria-label="Message actions" aria-haspopup="menu" onClick={(e) => actions.menu(m, e.currentTarget)}>
            <Icon name="more" />
          </button>
        )}
      </div>
      {m.reactions && m.reactions.length > 0 && (
        <div class="reactions">
          {m.reactions.map((r) => (
            <button
              type="button"
              key={r.emoji}
              class={`reaction${r.from.includes(data.myId()) ? " own" : ""}`}
              aria-label={`${r.emoji} ${r.from.length}: ${r.from.map(data.nameOf).join(", ")}`}
              disabled={!features.reactions || !data.can("send")}
              onClick={() => actions.react(m, r.emoji)}
              data-testid="reaction"
            >
              {r.emoji} {r.from.length > 1 ? r.from.length : ""}
            </button>
          ))}
        </div>
      )}
      {m.pending === "failed" && (
        <p class="send-error" role="alert">
          {m.error ?? "Not sent."}{" "}
          <button type="button" class="small" onClick={() => data.retry(props.chatKey, m)}>
            Try again
          </button>{" "}
          <button type="button" class="small" onClick={() => data.discard(props.chatKey, m)}>
            Delete
          </button>
        </p>
      )}
    </>
  );
}

function FileBubble({ t, mine, showName, last, open }: { t: data.Transfer; mine: boolean; showName: boolean; last: boolean; open: (url: string, name: string) => void }) {
  const bytes = useStore(data.progress)[t.id];
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [url, setUrl] = useState<string | null>(t.url ?? null);
  const image = data.isImage(t.name);
  const incoming = t.direction === "incoming";
  const canShow = image && (t.url || (incoming && t.state === "completed")) && t.size <= 40_000_000;
  useEffect(() => {
    if (canShow && !url) void data.contentUrl(t).then(setUrl, () => setUrl(null));
  }, [canShow, t.state]);
  const done = t.state === "running" && bytes !== undefined ? Math.max(bytes, t.bytes_done) : t.bytes_done;
  const pct = t.size ? Math.min(100, (done * 100) / t.size) : 0;
  const act = (what: "accept" | "decline" | "cancel") => {
    setBusy(true);
    setError(null);
    data
      .transferAction(t.id, what)
      .catch((e) => setError(errorText(e)))
      .finally(() => setBusy(false));
  };
  const save = async () => {
    try {
      const u = url ?? (await data.contentUrl(t));
      const a = document.createElement("a");
      a.href = u;
      a.download = t.name;
      a.click();
    } catch (e) {
      setError(errorText(e));
    }
  };
  const files = data.can("files");
  return (
    <div class={`bubble file${url ? " has-photo" : ""}`} data-testid="file">
      {showName && <p class="sender">{data.nameOf(t.peer)}</p>}
      {url ? (
        <button type="button" class="photo" onClick={() => open(url, t.name)} aria-label={`Open ${t.name} full size`}>
          <img src={url} alt={t.name} data-testid="photo" />
        </button>
      ) : (
        <div class="file-row">
          <span class="file-icon">
            <Icon name="file" />
          </span>
          <span class="file-text">
            <strong class="wrap">{t.name}</strong>
            <span class="muted small">
              {size(t.size)} · <span data-testid="file-state">{fileState(t)}</span>
            </span>
          </span>
        </div>
      )}
      {(t.state === "running" || t.state === "paused" || (t.state === "offered" && !incoming)) && (
        <progress max={100} value={pct} aria-label={`${t.name}: ${pct.toFixed(0)} %`} />
      )}
      <div class="file-actions">
        {incoming && t.state === "offered" && files && (
          <>
            <button type="button" class="small" disabled={busy} onClick={() => act("accept")}>
              Accept
            </button>
            <button type="button" class="small" disabled={busy} onClick={() => act("decline")}>
              Decline
            </button>
          </>
        )}
        {incoming && t.state === "completed" && (
          <button type="button" class="small" onClick={() => void save()}>
            Save
          </button>
        )}
        {!incoming && ["offered", "running", "paused"].includes(t.state) && files && (
          <button type="button" class="small" disabled={busy} onClick={() => act("cancel")}>
            Cancel
          </button>
        )}
      </div>
      {error && <p class="error-text" role="alert">{error}</p>}
      <span class="meta">{last && <time dateTime={t.created_at}>{shortTime(t.created_at)}</time>}</span>
      {mine && t.state === "completed" && <span class="sr-only">delivered</span>}
    </div>
  );
}

function fileState(t: data.Transfer): string {
  const incoming = t.direction === "incoming";
  switch (t.state) {
    case "offered":
      return incoming ? "offered to you" : "waiting for them to accept";
    case "running":
      return incoming ? "receiving" : "sending";
    case "completed":
      return incoming ? "received" : "delivered";
    default:
      return t.state;
  }
}

function UploadBubble({ u }: { u: data.Upload }) {
  const pct = u.size ? (u.sent * 100) / u.size : 0;
  return (
    <div class="bubble file" data-testid="file">
      {u.url ? <img class="photo-preview" src={u.url} alt={u.name} /> : <strong class="wrap">{u.name}</strong>}
      <progress max={100} value={pct} aria-label={`Uploading ${u.name}: ${pct.toFixed(0)} %`} />
      <span class="muted small">
        {u.error ? "" : `Uploading ${size(u.sent)} of ${size(u.size)}`}
      </span>
      {u.error && (
        <p class="error-text" role="alert">
          {u.error}{" "}
          <button type="button" class="small" onClick={() => data.dismissUpload(u.id)}>
            Dismiss
          </button>
        </p>
      )}
    </div>
  );
}

function Composer(props: {
  chatKey: data.Key;
  inputRef: { current: HTMLTextAreaElement | null };
  replyTo: Msg | null;
  editing: Msg | null;
  onDone: () => void;
  onEditLast: () => void;
  onError: (e: string) => void;
}) {
  const drafts = useRef(new Map<string, string>());
  const [text, setText] = useState(drafts.current.get(props.chatKey) ?? "");
  const file = useRef<HTMLInputElement>(null);
  useEffect(() => {
    setText(drafts.current.get(props.chatKey) ?? "");
  }, [props.chatKey]);
  useEffect(() => {
    if (props.editing) setText(props.editing.body);
  }, [props.editing]);
  useLayoutEffect(() => {
    const el = props.inputRef.current;
    if (!el) return;
    el.style.height = "auto";
    el.style.height = `${Math.min(el.scrollHeight, 160)}px`;
  }, [text]);
  const coarse = typeof matchMedia === "function" && matchMedia("(pointer: coarse)").matches;
  const submit = () => {
    const body = text.trim();
    if (!body) return;
    setText("");
    drafts.current.delete(props.chatKey);
    if (props.editing) {
      const id = props.editing.id;
      void data.edit(props.chatKey, id, body).catch((e) => props.onError(errorText(e)));
    } else void data.send(props.chatKey, body, props.replyTo?.id);
    props.onDone();
    props.inputRef.current?.focus();
  };
  const files = data.can("files");
  return (
    <form
      class="composer"
      onSubmit={(e) => {
        e.preventDefault();
        submit();
      }}
    >
      {(props.replyTo || props.editing) && (
        <div class="composing" data-testid={props.editing ? "editing" : "replying"}>
          <div>
            <strong>{props.editing ? "Edit message" : `Replying to ${data.nameOf(props.replyTo!.from)}`}</strong>
            <span class="muted">{(props.editing ?? props.replyTo)!.body}</span>
          </div>
          <button
            type="button"
            class="iconbtn"
            aria-label={props.editing ? "Cancel editing" : "Cancel reply"}
            onClick={() => {
              if (props.editing) setText("");
              props.onDone();
            }}
          >
            <Icon name="close" />
          </button>
        </div>
      )}
      <div class="composer-row">
        {files && (
          <>
            <button type="button" class="iconbtn" aria-label="Attach a file" onClick={() => file.current?.click()}>
              <Icon name="clip" />
            </button>
            <input
              ref={file}
              type="file"
              multiple
              hidden
              aria-label="File to send"
              data-testid="attach"
              onChange={(e) => {
                for (const f of Array.from(e.currentTarget.files ?? [])) data.sendFile(props.chatKey, f);
                e.currentTarget.value = "";
              }}
            />
          </>
        )}
        <label class="grow">
          <span class="sr-only">Message</span>
          <textarea
            ref={props.inputRef}
            rows={1}
            placeholder="Message"
            value={text}
            enterkeyhint={coarse ? "enter" : "send"}
            onInput={(e) => {
              setText(e.currentTarget.value);
              drafts.current.set(props.chatKey, e.currentTarget.value);
              if (e.currentTarget.value) data.sendTyping(props.chatKey);
            }}
            onPaste={(e) => {
              const pasted = Array.from(e.clipboardData?.files ?? []);
              if (pasted.length && files) {
                e.preventDefault();
                for (const f of pasted) data.sendFile(props.chatKey, f);
              }
            }}
            onKeyDown={(e) => {
              if (e.key === "Enter" && !e.shiftKey && !coarse && !e.isComposing) {
                e.preventDefault();
                submit();
              } else if (e.key === "Escape" && (props.replyTo || props.editing)) {
                e.preventDefault();
                if (props.editing) setText("");
                props.onDone();
              } else if (e.key === "ArrowUp" && !text) props.onEditLast();
            }}
          />
        </label>
        <button type="submit" class="iconbtn send" aria-label={props.editing ? "Save" : "Send"} disabled={!text.trim()}>
          <Icon name={props.editing ? "check" : "send"} />
        </button>
      </div>
    </form>
  );
}

function MessageMenu(props: {
  m: Msg;
  x: number;
  y: number;
  features: Features;
  onClose: () => void;
  onReply: () => void;
  onEdit: () => void;
  onReact: (e: string) => void;
  onDelete: () => void;
}) {
  const { m, features } = props;
  const ref = useRef<HTMLDivElement>(null);
  const mine = m.from === data.myId();
  const send = data.can("send");
  useEffect(() => {
    const el = ref.current!;
    (el.querySelector("[role=menuitem]") as HTMLElement | null)?.focus();
    const away = (e: Event) => !el.contains(e.target as Node) && props.onClose();
    setTimeout(() => document.addEventListener("pointerdown", away), 0);
    return () => document.removeEventListener("pointerdown", away);
  }, []);
  const item = (label: string, f: () => void) => (
    <button type="button" role="menuitem" onClick={() => (props.onClose(), f())}>
      {label}
    </button>
  );
  return (
    <div
      class="menu-pop"
      role="menu"
      aria-label="Message actions"
      ref={ref}
      style={{ left: `${Math.max(8, props.x)}px`, top: `${props.y}px` }}
      onKeyDown={(e) => {
        const all = Array.from(ref.current!.querySelectorAll<HTMLElement>("[role=menuitem]"));
        const i = all.indexOf(document.activeElement as HTMLElement);
        if (e.key === "Escape") (e.preventDefault(), props.onClose());
        else if (e.key === "ArrowDown" || e.key === "ArrowRight") (e.preventDefault(), all[(i + 1) % all.length]?.focus());
        else if (e.key === "ArrowUp" || e.key === "ArrowLeft") (e.preventDefault(), all[(i - 1 + all.length) % all.length]?.focus());
      }}
    >
      {features.reactions && send && (
        <div class="react-row">
          {REACTIONS.map((r) => (
            <button type="button" role="menuitem" key={r} aria-label={`React with ${r}`} onClick={() => (props.onClose(), props.onReact(r))}>
              {r}
            </button>
          ))}
        </div>
      )}
      {features.reply && send && item("Reply", props.onReply)}
      {item("Copy text", () => void navigator.clipboard?.writeText(m.body).catch(() => {}))}
      {features.edit && mine && send && item("Edit", props.onEdit)}
      {send && item("Delete…", props.onDelete)}
    </div>
  );
}

function DeleteDialog(props: { m: Msg; everyone: boolean; onClose: () => void; onDelete: (everyone: boolean) => void }) {
  return (
    <Dialog label="Delete message" onClose={props.onClose}>
      <h2>Delete this message?</h2>
      <p class="muted">“{props.m.body.length > 80 ? `${props.m.body.slice(0, 80)}…` : props.m.body}”</p>
      <div class="dialog-actions">
        {props.everyone && (
          <button type="button" class="danger" onClick={() => props.onDelete(true)}>
            Delete for everyone
          </button>
        )}
        <button type="button" class="danger secondary" onClick={() => props.onDelete(false)}>
          Delete for me
        </button>
        <button type="button" class="secondary" onClick={props.onClose}>
          Cancel
        </button>
      </div>
    </Dialog>
  );
}

export function Dialog(props: { label: string; onClose: () => void; children: preact.ComponentChildren }) {
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const before = document.activeElement as HTMLElement | null;
    (ref.current?.querySelector("button, input, a, textarea") as HTMLElement | null)?.focus();
    return () => before?.focus?.();
  }, []);
  return (
    <div class="scrim" onClick={(e) => e.target === e.currentTarget && props.onClose()}>
      <div class="dialog" role="dialog" aria-modal="true" aria-label={props.label} ref={ref} onKeyDown={(e) => e.key === "Escape" && (e.preventDefault(), props.onClose())}>
        {props.children}
      </div>
    </div>
  );
}

function Lightbox({ url, name, onClose }: { url: string; name: string; onClose: () => void }) {
  return (
    <Dialog label={name} onClose={onClose}>
      <div class="lightbox">
        <img src={url} alt={name} data-testid="full-photo" />
        <div class="dialog-actions">
          <a class="button secondary" href={url} download={name}>
            Save
          </a>
          <button type="button" class="secondary" onClick={onClose}>
            Close
          </button>
        </div>
      </div>
    </Dialog>
  );
}
