// One conversation: its timeline (messages, files, system lines, day separators), paged back
// without end while keeping the scroll position, and the composer pinned under it.
import { Component, type JSX } from "preact";
import { useEffect, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import { message as errorText } from "../client";
import * as data from "../data";
import { useStore } from "../store";
import { title } from "../notify";
import { Avatar, Bar, dayLabel, dayOf, Icon, Linked, onlyEmoji, shortTime, size } from "./bits";

type Msg = data.Msg;
type Item =
  | { kind: "msg"; id: string; at: string; from: string; m: Msg }
  | { kind: "upload"; id: string; at: string; from: string; u: data.Upload }
  | { kind: "sys"; id: string; at: string; from: ""; text: string };

const REACTIONS = ["👍", "❤️", "😂", "😮", "😢", "🙏"];
const MORE_EMOJI = ["😀", "😊", "😍", "🥰", "😘", "😉", "😎", "🤔", "😅", "🤣", "😭", "😡", "😱", "🥳", "😴", "🙄", "👏", "🙌", "👌", "✌️", "🤞", "💪", "👎", "🔥", "✨", "🎉", "💯", "✅", "❌", "👀", "🤝", "💔"];
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
  const uploads = useStore(data.uploads);
  const sys = useStore(data.system)[chatKey];
  const typing = useStore(data.typing)[chatKey];
  const contactList = useStore(data.contacts);
  const groupList = useStore(data.groups);
  const avatars = useStore(data.avatars);
  useStore(data.chats);
  const g = group ? groupList.find((x) => x.id === id) : undefined;
  const name = data.chatTitle(chatKey);
  const known = group ? !!g : contactList.some((c) => c.user_id === id);
  const timer = data.timerOf(chatKey);

  const [replyTo, setReplyTo] = useState<Msg | null>(null);
  const [editing, setEditing] = useState<Msg | null>(null);
  const [menu, setMenu] = useState<{ m: Msg; x: number; y: number } | null>(null);
  const [confirmDelete, setConfirmDelete] = useState<Msg | null>(null);
  const [info, setInfo] = useState<Msg | null>(null);
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
        if (key === chatKey) setHeard(`${data.nameOf(m.from)}: ${data.summary(m)}`);
      }),
    [chatKey],
  );
  useEffect(() => {
    if (typeof matchMedia === "function" && matchMedia("(pointer: fine)").matches && !focus) composer.current?.focus({ preventScroll: true });
  }, [chatKey]);

  const scroller = useRef<HTMLDivElement>(null);
  // Read up to the newest message from someone else that is on screen (or above it).
  const seenFrame = useRef(0);
  const markSeen = () => {
    cancelAnimationFrame(seenFrame.current);
    seenFrame.current = requestAnimationFrame(() => {
      const el = scroller.current;
      if (!el || !data.isReading(chatKey)) return;
      const chat = data.chats.value.find((c) => c.key === chatKey);
      if (!chat?.unread) return;
      const bottom = el.getBoundingClientRect().bottom;
      const rows = el.querySelectorAll<HTMLElement>("[data-read]");
      for (let i = rows.length - 1; i >= 0; i--) {
        if (rows[i]!.getBoundingClientRect().top >= bottom - 4) continue;
        const m = data.timeline(chatKey).value.messages.find((x) => x.id === rows[i]!.dataset.read);
        if (m) data.markRead(chatKey, m);
        return;
      }
    });
  };

  // This chat is on screen: its messages are read while the page is seen.
  useEffect(() => {
    data.openChat.set(chatKey);
    void data.openTimeline(chatKey);
    document.addEventListener("visibilitychange", markSeen);
    window.addEventListener("focus", markSeen);
    const offChats = data.chats.subscribe(markSeen);
    return () => {
      document.removeEventListener("visibilitychange", markSeen);
      window.removeEventListener("focus", markSeen);
      offChats();
      if (data.openChat.value === chatKey) data.openChat.set(null);
    };
  }, [chatKey]);
  useEffect(markSeen, [t.messages]);

  const jump = async (target: string) => {
    if (!(await data.findMessage(chatKey, target))) return setNote("That message is no longer here.");
    setHighlight(target);
    stick.current = false;
    requestAnimationFrame(() => document.getElementById(`m-${target}`)?.scrollIntoView({ block: "center" }));
  };
  useEffect(() => {
    if (focus) void jump(focus);
  }, [focus, chatKey]);

  const actions = useRef<Actions>(null as unknown as Actions);
  actions.current = {
    menu: (m, at) => {
      const r = at.getBoundingClientRect();
      const h = 330;
      setMenu({ m, x: Math.min(r.left, window.innerWidth - 250), y: r.bottom + 4 > window.innerHeight - h ? Math.max(8, r.top - h) : r.bottom + 4 });
    },
    reply: (m) => {
      if (!data.can("send") || m.kind === "system" || m.pending) return;
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

  // The items in time order: messages (texts, files, the node's system lines), uploads, and
  // the lines this device noted about a group's members.
  const items = useMemo(() => {
    const oldest = t.hasMore ? (t.messages.find((m) => !m.pending)?.sent_at ?? "") : "";
    const list: Item[] = t.messages.map((m) => ({ kind: "msg", id: m.id, at: m.sent_at, from: m.kind === "system" ? "" : m.from, m }));
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
  }, [t, uploads, sys, chatKey, g]);

  const byId = useMemo(() => new Map(t.messages.map((m) => [m.id, m])), [t.messages]);

  // Scrolling: stick to the newest while at the bottom; keep the place when older pages arrive.
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
    // A scroll may still be on its way when the thread has left the screen.
    const el = scroller.current;
    if (!el) return;
    const atBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 60;
    stick.current = atBottom;
    setAway(!atBottom);
    markSeen();
    if (el.scrollTop < el.clientHeight && t.hasMore && !t.loading && t.loaded) void data.loadOlder(chatKey);
  };

  const drop = (e: DragEvent) => {
    e.preventDefault();
    setDragging(false);
    if (!data.can("files")) return;
    for (const f of Array.from(e.dataTransfer?.files ?? [])) void data.sendFile(chatKey, f);
  };

  const subtitle = typing
    ? group
      ? `${data.nameOf(typing.from)} is typing…`
      : "typing…"
    : g
      ? g.members.map((m) => data.nameOf(m.user_id)).join(", ")
      : "";
  const unread = data.chats.value.find((c) => c.key === chatKey)?.unread ?? 0;

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
            <span class="who-title">
              <h1 id="page-title" tabIndex={-1}>
                {name}
              </h1>
              {timer > 0 && (
                <span class="timer-badge" data-testid="timer-badge" title={`Messages disappear after ${data.timerText(timer)}`}>
                  <Icon name="timer" />
                  <span>{data.timerText(timer)}</span>
                  <span class="sr-only"> disappearing messages</span>
                </span>
              )}
            </span>
            {subtitle && (
              <span class={`sub${typing ? " typing" : ""}`} data-testid={typing ? "typing" : undefined} aria-live={typing ? "polite" : undefined}>
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
          <Items items={items} group={group} byId={byId} actions={stable} highlight={highlight} chatKey={chatKey} avatars={avatars} />
        </div>
      </div>
      {away && (
        <button
          type="button"
          class="to-newest"
          aria-label={unread ? `Jump to the newest message, ${unread} unread` : "Jump to the newest message"}
          onClick={() => {
            stick.current = true;
            setHighlight(null);
            if (scroller.current) scroller.current.scrollTop = scroller.current.scrollHeight;
          }}
        >
          <Icon name="down" />
          {unread > 0 && (
            <span class="count" aria-hidden="true">
              {unread}
            </span>
          )}
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
            const last = [...t.messages].reverse().find((m) => m.from === data.myId() && m.kind === "text" && !m.pending && !m.deleted);
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
          onClose={() => setMenu(null)}
          onReply={() => stable.reply(menu.m)}
          onEdit={() => (setEditing(menu.m), setReplyTo(null), composer.current?.focus())}
          onReact={(e) => stable.react(menu.m, e)}
          onInfo={() => setInfo(menu.m)}
          onDelete={() => setConfirmDelete(menu.m)}
        />
      )}
      {confirmDelete && (
        <DeleteDialog
          m={confirmDelete}
          everyone={confirmDelete.from === data.myId() && !confirmDelete.deleted && data.can("send")}
          onClose={() => setConfirmDelete(null)}
          onDelete={(everyone) => {
            const m = confirmDelete;
            setConfirmDelete(null);
            void (everyone ? data.deleteForEveryone(chatKey, m.id) : data.deleteForMe(chatKey, m.id)).catch((e) => setNote(errorText(e)));
          }}
        />
      )}
      {info && <InfoDialog m={byId.get(info.id) ?? info} group={group} onClose={() => setInfo(null)} />}
      {lightbox && <Lightbox {...lightbox} onClose={() => setLightbox(null)} />}
    </section>
  );
}

/** The timeline's items with day separators and runs; rendered item by item, memoised. */
function Items(props: { items: Item[]; group: boolean; byId: Map<string, Msg>; actions: Actions; highlight: string | null; chatKey: data.Key; avatars: Record<string, string | null> }) {
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
    if (it.kind === "msg" && it.m.kind === "system") {
      out.push(
        <p class="sys" key={it.id} id={`m-${it.id}`} data-testid="system-line" data-read={it.m.from !== me ? it.id : undefined}>
          {data.isTimerLine(it.m) ? (
            <>
              <Icon name="timer" /> {data.systemText(it.m)}
            </>
          ) : (
            data.systemText(it.m)
          )}
        </p>,
      );
      continue;
    }
    const prev = items[i - 1];
    const nextItem = items[i + 1];
    const joins = (a: Item | undefined, b: Item | undefined) =>
      !!a && !!b && a.from !== "" && b.from !== "" && a.from === b.from && (a.kind === "upload" || b.kind === "upload" || (dayOf(a.at) === dayOf(b.at) && Math.abs(Date.parse(b.at) - Date.parse(a.at)) < RUN_GAP));
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
        group={props.group}
        showName={props.group && !mine && first}
        avatar={props.group && !mine && last ? (props.avatars[it.from] ?? null) : undefined}
        quoted={quoted}
        actions={props.actions}
        highlight={props.highlight === it.id}
        chatKey={props.chatKey}
      />,
    );
  }
  return <div class={`items${props.group ? " in-group" : ""}`}>{out}</div>;
}

type RowProps = {
  item: Item;
  mine: boolean;
  first: boolean;
  last: boolean;
  group: boolean;
  showName: boolean;
  /** In a group, beside the last of someone's run: their picture (null: their initials). */
  avatar: string | null | undefined;
  quoted: Msg | null;
  actions: Actions;
  highlight: boolean;
  chatKey: data.Key;
};

/** One bubble; re-rendered only when what it shows changes (long threads stay fast). */
class Row extends Component<RowProps> {
  override shouldComponentUpdate(n: RowProps) {
    const p = this.props;
    const same = p.item === n.item || (p.item.kind === "msg" && n.item.kind === "msg" && p.item.m === n.item.m && p.item.at === n.item.at);
    return !same || p.mine !== n.mine || p.first !== n.first || p.last !== n.last || p.showName !== n.showName || p.avatar !== n.avatar || p.quoted !== n.quoted || p.highlight !== n.highlight;
  }
  render() {
    const { item, mine, first, last, showName, avatar } = this.props;
    const cls = `msg-row ${mine ? "mine" : "theirs"}${first ? " first" : ""}${last ? " last" : ""}${this.props.highlight ? " highlight" : ""}`;
    const read = item.kind === "msg" && !mine && !item.m.pending ? item.id : undefined;
    return (
      <div class={cls} id={`m-${item.id}`} data-read={read}>
        {avatar !== undefined && (
          <span class="row-avatar">
            <Avatar id={item.from} name={data.nameOf(item.from)} url={avatar} size={28} />
          </span>
        )}
        {item.kind === "msg" && item.m.kind === "file" && item.m.file && !item.m.deleted ? (
          <FileBubble m={item.m} file={item.m.file} {...this.props} />
        ) : item.kind === "msg" ? (
          <MessageBubble {...this.props} m={item.m} showName={showName} />
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
  const key = m.pending === "failed" ? "failed" : (m.pending ?? m.status);
  const [icon, words] = STATUS[key] ?? ["check", m.status];
  let detail = words;
  if (group && m.receipts?.length) {
    const delivered = m.receipts.filter((r) => r.status === "delivered" || r.status === "read").length;
    const read = m.receipts.filter((r) => r.status === "read").length;
    detail = `${words} (${delivered} of ${m.receipts.length} delivered${read && key !== "read" ? `, ${read} read` : ""})`;
  }
  return (
    <span class={`ticks ${key}`} data-testid="message-status" title={detail}>
      <Icon name={icon} />
      <span class="sr-only">{detail}</span>
    </span>
  );
}

/** Long press (menu) and swipe right (reply) on a touch screen; double click replies. */
function useGestures(m: Msg, actions: Actions) {
  const touch = useRef<{ x: number; y: number; timer: ReturnType<typeof setTimeout> | undefined; dx: number } | null>(null);
  const bubble = useRef<HTMLDivElement>(null);
  const canReply = data.can("send") && !m.pending && !m.deleted;
  return {
    ref: bubble,
    onPointerDown: (e: PointerEvent) => {
      if (e.pointerType !== "touch") return;
      touch.current = { x: e.clientX, y: e.clientY, dx: 0, timer: setTimeout(() => bubble.current && actions.menu(m, bubble.current), 500) };
    },
    onPointerMove: (e: PointerEvent) => {
      const t = touch.current;
      if (!t) return;
      const dx = e.clientX - t.x;
      if (Math.abs(dx) > 8 || Math.abs(e.clientY - t.y) > 8) clearTimeout(t.timer);
      if (canReply && dx > 0 && Math.abs(e.clientY - t.y) < 30 && bubble.current) {
        t.dx = Math.min(dx, 80);
        bubble.current.style.transform = `translateX(${t.dx}px)`;
      }
    },
    onPointerUp: () => {
      const t = touch.current;
      if (!t) return;
      clearTimeout(t.timer);
      if (bubble.current) bubble.current.style.transform = "";
      if (t.dx >= 60) actions.reply(m);
      touch.current = null;
    },
    onDblClick: () => canReply && actions.reply(m),
  };
}

function Quote({ id, quoted, jump }: { id: string; quoted: Msg | null; jump: (id: string) => void }) {
  return (
    <button type="button" class="quote" onClick={() => jump(id)} data-testid="quote" aria-label={quoted ? `Reply to ${data.nameOf(quoted.from)}: ${data.summary(quoted)}. Show it` : "Reply to an earlier message. Show it"}>
      <strong>{quoted ? data.nameOf(quoted.from) : "Reply"}</strong>
      <span>{quoted ? data.summary(quoted) : "to an earlier message"}</span>
    </button>
  );
}

function Reactions({ m, react }: { m: Msg; react: (m: Msg, emoji: string) => void }) {
  if (!m.reactions.length) return null;
  const me = data.myId();
  return (
    <div class="reactions">
      {m.reactions.map((r) => {
        const own = r.from.includes(me);
        return (
          <button
            type="button"
            key={r.emoji}
            class={`reaction${own ? " own" : ""}`}
            aria-label={`${r.emoji} ${r.from.length}: ${r.from.map(data.nameOf).join(", ")}${own ? ". Take yours back" : `. React with ${r.emoji}`}`}
            aria-pressed={own}
            disabled={!data.can("send")}
            onClick={() => react(m, r.emoji)}
            data-testid="reaction"
          >
            <span class="emoji">{r.emoji}</span>
            {r.from.length > 1 ? ` ${r.from.length}` : ""}
          </button>
        );
      })}
    </div>
  );
}

function Meta({ m, mine, last, group }: { m: Msg; mine: boolean; last: boolean; group: boolean }) {
  return (
    <span class="meta">
      {m.expires_at && !m.deleted && (
        <span class="expiring" title={`Disappears ${new Date(m.expires_at).toLocaleString()}`}>
          <Icon name="timer" label="disappearing" />
        </span>
      )}
      {m.edited_at && !m.deleted && <span class="edited">edited</span>}
      {(last || m.pending) && (
        <time dateTime={m.sent_at} title={new Date(m.sent_at).toLocaleString()}>
          {shortTime(m.sent_at)}
        </time>
      )}
      {mine && !m.deleted && <Ticks m={m} group={group} />}
    </span>
  );
}

function MessageBubble(props: RowProps & { m: Msg }) {
  const { m, mine, showName, last, quoted, actions, group } = props;
  const gestures = useGestures(m, actions);
  const more = useRef<HTMLButtonElement>(null);
  const deleted = m.deleted;
  const emoji = !deleted && onlyEmoji(m.body);
  return (
    <>
      <div class={`bubble${emoji ? " jumbo" : ""}${deleted ? " deleted" : ""}${m.pending === "failed" ? " failed" : ""}`} data-testid="message" {...gestures} onPointerCancel={gestures.onPointerUp}>
        {showName && <p class="sender">{data.nameOf(m.from)}</p>}
        {m.reply_to && !deleted && <Quote id={m.reply_to} quoted={quoted} jump={actions.jump} />}
        <p class="text">{deleted ? <em>{mine ? "You deleted this message" : "This message was deleted"}</em> : <Linked text={m.body} />}</p>
        <Meta m={m} mine={mine} last={last} group={group} />
        {!m.pending && (
          <button type="button" class="more" ref={more} aria-label="Message actions" aria-haspopup="menu" onClick={(e) => actions.menu(m, e.currentTarget)}>
            <Icon name="more" />
          </button>
        )}
      </div>
      {!deleted && <Reactions m={m} react={actions.react} />}
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

/** A file offered in the conversation: its picture (thumbnail, then the file once here), name, size, state. */
function FileBubble(props: RowProps & { m: Msg; file: NonNullable<Msg["file"]> }) {
  const { m, file, mine, showName, last, quoted, actions, group } = props;
  const t = useStore(data.transfers)[file.transfer];
  const bytes = useStore(data.progress)[file.transfer];
  const gestures = useGestures(m, actions);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [url, setUrl] = useState<string | null>(t?.url ?? null);
  const picture = file.mime.startsWith("image/");
  const state = t?.state ?? file.state ?? "gone";
  const incoming = !mine;
  const canShow = picture && t && (t.url || (incoming && state === "completed")) && file.size <= 40_000_000;
  useEffect(() => {
    if (canShow && !url) void data.contentUrl(t).then(setUrl, () => setUrl(null));
    else if (t?.url && t.url !== url) setUrl(t.url);
  }, [canShow, state, t?.url]);
  const done = t ? (state === "running" && bytes !== undefined ? Math.max(bytes, t.bytes_done) : t.bytes_done) : 0;
  const pct = file.size ? Math.min(100, (done * 100) / file.size) : 0;
  const act = (what: "accept" | "decline" | "cancel") => {
    setBusy(true);
    setError(null);
    data
      .transferAction(file.transfer, what)
      .catch((e) => setError(errorText(e)))
      .finally(() => setBusy(false));
  };
  const save = async () => {
    try {
      const u = url ?? (await data.contentUrl(t!));
      const a = document.createElement("a");
      a.href = u;
      a.download = file.name;
      a.click();
    } catch (e) {
      setError(errorText(e));
    }
  };
  const files = data.can("files");
  const shown = url ?? file.thumbnail ?? null;
  const members = t?.members ?? null;
  return (
    <>
      <div class={`bubble file${shown ? " has-photo" : ""}`} data-testid="file" {...gestures} onPointerCancel={gestures.onPointerUp}>
        {showName && <p class="sender">{data.nameOf(m.from)}</p>}
        {m.reply_to && <Quote id={m.reply_to} quoted={quoted} jump={actions.jump} />}
        {shown &&
          (url ? (
            <button type="button" class="photo" onClick={() => actions.open(url, file.name)} aria-label={`Open ${file.name} full size`}>
              <img src={url} alt={file.name} data-testid="photo" />
            </button>
          ) : (
            <span class="photo thumb">
              <img src={shown} alt={`${file.name} (preview)`} data-testid="thumbnail" />
            </span>
          ))}
        <div class="file-row">
          {!shown && (
            <span class="file-icon">
              <Icon name="file" />
            </span>
          )}
          <span class="file-text">
            <strong class="wrap">{file.name}</strong>
            <span class="small file-sub">
              {size(file.size)} · <span data-testid="file-state">{fileState(state, incoming, members, t?.via ?? [])}</span>
            </span>
          </span>
        </div>
        {(state === "running" || state === "paused" || (state === "offered" && !incoming && !members && !t?.via.length)) && <progress max={100} value={pct} aria-label={`${file.name}: ${pct.toFixed(0)} %`} />}
        <div class="file-actions">
          {incoming && state === "offered" && files && (
            <>
              <button type="button" class="small" disabled={busy} onClick={() => act("accept")}>
                Accept
              </button>
              <button type="button" class="small" disabled={busy} onClick={() => act("decline")}>
                Decline
              </button>
            </>
          )}
          {incoming && state === "completed" && (
            <>
              {url && (
                <button type="button" class="small" onClick={() => actions.open(url, file.name)}>
                  Open
                </button>
              )}
              <button type="button" class="small" onClick={() => void save()}>
                Save
              </button>
            </>
          )}
          {!incoming && ["offered", "running", "paused"].includes(state) && files && (
            <button type="button" class="small" disabled={busy} onClick={() => act("cancel")}>
              Cancel
            </button>
          )}
        </div>
        {members && members.length > 0 && (
          <details class="members-progress" data-testid="file-members">
            <summary>Each member</summary>
            <ul class="plain">
              {members.map((x) => (
                <li key={x.user_id} data-testid="file-member">
                  <span>{data.nameOf(x.user_id)}</span>{" "}
                  <span class="small">
                    {x.state === "running" ? `${size(x.bytes_done)} of ${size(file.size)}` : memberState(x.state)}
                  </span>
                </li>
              ))}
            </ul>
          </details>
        )}
        {error && <p class="error-text" role="alert">{error}</p>}
        <Meta m={m} mine={mine} last={last} group={group} />
        {!m.pending && (
          <button type="button" class="more" aria-label="Message actions" aria-haspopup="menu" onClick={(e) => actions.menu(m, e.currentTarget)}>
            <Icon name="more" />
          </button>
        )}
      </div>
      <Reactions m={m} react={actions.react} />
    </>
  );
}

function memberState(state: string): string {
  return { offered: "has not accepted yet", completed: "has it", declined: "declined", cancelled: "cancelled", running: "receiving" }[state] ?? state;
}

function fileState(state: string, incoming: boolean, members: { state: string }[] | null, via: string[]): string {
  if (members && members.length && !incoming) {
    const have = members.filter((x) => x.state === "completed").length;
    if (state === "offered" || state === "running" || state === "completed") return `delivered to ${have} of ${members.length}`;
  }
  // Files through friends: held at a mutual friend's node while one side is away.
  const at = via.map((u) => data.nameOf(u)).join(" and ");
  switch (state) {
    case "offered":
      if (via.length) return incoming ? `offered to you · waiting at ${at}'s node` : `they are away · waiting at ${at}'s node`;
      return incoming ? "offered to you" : "waiting for them to accept";
    case "running":
      if (via.length && incoming) return `receiving (via ${at}'s node)`;
      return incoming ? "receiving" : "sending";
    case "completed":
      return incoming ? "received" : "delivered";
    case "gone":
      return "no longer here";
    default:
      return state;
  }
}

function UploadBubble({ u }: { u: data.Upload }) {
  const pct = u.size ? (u.sent * 100) / u.size : 0;
  return (
    <div class="bubble file" data-testid="upload">
      {u.url ? <img class="photo-preview" src={u.url} alt={u.name} /> : <strong class="wrap">{u.name}</strong>}
      <progress max={100} value={pct} aria-label={`Uploading ${u.name}: ${pct.toFixed(0)} %`} />
      <span class="muted small">{u.error ? "" : `Uploading ${size(u.sent)} of ${size(u.size)}`}</span>
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
  // Before the next keystroke: what is typed right after choosing Edit replaces the old text.
  useLayoutEffect(() => {
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
      if (body !== props.editing.body) void data.edit(props.chatKey, id, body).catch((e) => props.onError(errorText(e)));
    } else void data.send(props.chatKey, body, props.replyTo?.id);
    props.onDone();
    props.inputRef.current?.focus();
  };
  const files = data.can("files");
  const about = props.editing ?? props.replyTo;
  return (
    <form
      class="composer"
      onSubmit={(e) => {
        e.preventDefault();
        submit();
      }}
    >
      {about && (
        <div class="composing" data-testid={props.editing ? "editing" : "replying"}>
          <div>
            <strong>{props.editing ? "Edit message" : `Replying to ${data.nameOf(about.from)}`}</strong>
            <span class="muted">{data.summary(about)}</span>
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
        {files && !props.editing && (
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
                for (const f of Array.from(e.currentTarget.files ?? [])) void data.sendFile(props.chatKey, f);
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
              if (e.currentTarget.value && !props.editing) data.sendTyping(props.chatKey);
            }}
            onPaste={(e) => {
              const pasted = Array.from(e.clipboardData?.files ?? []);
              if (pasted.length && files) {
                e.preventDefault();
                for (const f of pasted) void data.sendFile(props.chatKey, f);
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

function MessageMenu(props: { m: Msg; x: number; y: number; onClose: () => void; onReply: () => void; onEdit: () => void; onReact: (e: string) => void; onInfo: () => void; onDelete: () => void }) {
  const { m } = props;
  const ref = useRef<HTMLDivElement>(null);
  const [more, setMore] = useState(false);
  const mine = m.from === data.myId();
  const send = data.can("send");
  const live = !m.deleted;
  useEffect(() => {
    const el = ref.current!;
    (el.querySelector("[role=menuitem]") as HTMLElement | null)?.focus();
    const away = (e: Event) => !el.contains(e.target as Node) && props.onClose();
    setTimeout(() => document.addEventListener("pointerdown", away), 0);
    return () => document.removeEventListener("pointerdown", away);
  }, []);
  useEffect(() => {
    if (more) (ref.current?.querySelector(".emoji-grid [role=menuitem]") as HTMLElement | null)?.focus();
  }, [more]);
  const item = (label: string, f: () => void) => (
    <button type="button" role="menuitem" onClick={() => (props.onClose(), f())}>
      {label}
    </button>
  );
  const own = m.reactions.find((r) => r.from.includes(data.myId()))?.emoji;
  const emoji = (r: string) => (
    <button type="button" role="menuitem" key={r} class={own === r ? "own" : undefined} aria-label={own === r ? `Take back ${r}` : `React with ${r}`} onClick={() => (props.onClose(), props.onReact(r))}>
      {r}
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
      {live && send && (
        <div class="react-row">
          {REACTIONS.map(emoji)}
          <button type="button" role="menuitem" class="more-emoji" aria-label="More reactions" aria-expanded={more} onClick={() => setMore(!more)}>
            <Icon name="plus" />
          </button>
        </div>
      )}
      {more && <div class="emoji-grid">{MORE_EMOJI.map(emoji)}</div>}
      {live && send && item("Reply", props.onReply)}
      {live && m.kind === "text" && item("Copy text", () => void navigator.clipboard?.writeText(m.body).catch(() => {}))}
      {live && mine && m.kind === "text" && send && item("Edit", props.onEdit)}
      {mine && item("Info", props.onInfo)}
      {send && item("Delete…", props.onDelete)}
    </div>
  );
}

function DeleteDialog(props: { m: Msg; everyone: boolean; onClose: () => void; onDelete: (everyone: boolean) => void }) {
  const text = props.m.deleted ? "" : data.summary(props.m);
  return (
    <Dialog label="Delete message" onClose={props.onClose}>
      <h2>Delete this message?</h2>
      {text && <p class="muted">“{text.length > 80 ? `${text.slice(0, 80)}…` : text}”</p>}
      {props.everyone && <p class="muted small">For everyone: it is replaced by “This message was deleted” on every device of everyone in this chat.</p>}
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

const RECEIPT: Record<string, string> = { read: "Read", delivered: "Delivered", relayed: "Held by a friend", queued: "Waiting", failed: "Not delivered" };

/** Who has a message this user sent: each member of a group, or the one contact. */
function InfoDialog({ m, group, onClose }: { m: Msg; group: boolean; onClose: () => void }) {
  const [, words] = STATUS[m.status] ?? ["", m.status];
  const order = ["read", "delivered", "relayed", "queued", "failed"];
  const receipts = [...(m.receipts ?? [])].sort((a, b) => order.indexOf(a.status) - order.indexOf(b.status));
  return (
    <Dialog label="Message info" onClose={onClose}>
      <h2>Message info</h2>
      <p class="muted">{data.summary(m)}</p>
      <dl class="facts">
        <dt>Sent</dt>
        <dd>{new Date(m.sent_at).toLocaleString()}</dd>
        {m.edited_at && (
          <>
            <dt>Edited</dt>
            <dd>{new Date(m.edited_at).toLocaleString()}</dd>
          </>
        )}
        {m.expires_at && (
          <>
            <dt>Disappears</dt>
            <dd>{new Date(m.expires_at).toLocaleString()}</dd>
          </>
        )}
        {!group && (
          <>
            <dt>Status</dt>
            <dd data-testid="info-status">{words}</dd>
          </>
        )}
      </dl>
      {group && (
        <ul class="plain receipts" aria-label="Members">
          {receipts.map((r) => (
            <li key={r.user_id} data-testid="receipt">
              <Avatar id={r.user_id} name={data.nameOf(r.user_id)} url={data.avatars.value[r.user_id]} size={28} />
              <span class="grow">{data.nameOf(r.user_id)}</span>
              <span class={`ticks ${r.status}`}>
                <Icon name={STATUS[r.status]?.[0] ?? "check"} />
              </span>
              <span>{RECEIPT[r.status] ?? r.status}</span>
            </li>
          ))}
          {receipts.length === 0 && <li class="muted">No member has it yet.</li>}
        </ul>
      )}
      <div class="dialog-actions">
        <button type="button" class="secondary" onClick={onClose}>
          Close
        </button>
      </div>
    </Dialog>
  );
}

export function Dialog(props: { label: string; onClose: () => void; children: preact.ComponentChildren }) {
  const ref = useRef<HTMLDivElement>(null);
  const close = useRef(props.onClose);
  close.current = props.onClose;
  // A layout effect: Escape works from the moment the dialog is on screen.
  useLayoutEffect(() => {
    const before = document.activeElement as HTMLElement | null;
    const focusIn = () => {
      const el = ref.current;
      if (el && !el.contains(document.activeElement)) (el.querySelector("button, input, a, textarea, select") as HTMLElement | null)?.focus();
    };
    focusIn();
    // What was clicked to open it may take focus back as the click ends.
    const frame = requestAnimationFrame(focusIn);
    // Escape closes the topmost dialog wherever the focus is.
    const onKey = (e: KeyboardEvent) => {
      const all = document.querySelectorAll(".dialog");
      if (e.key === "Escape" && all[all.length - 1] === ref.current) (e.preventDefault(), close.current());
    };
    document.addEventListener("keydown", onKey);
    return () => (cancelAnimationFrame(frame), document.removeEventListener("keydown", onKey), before?.focus?.());
  }, []);
  return (
    <div class="scrim" onClick={(e) => e.target === e.currentTarget && props.onClose()}>
      <div class="dialog" role="dialog" aria-modal="true" aria-label={props.label} ref={ref}>
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
