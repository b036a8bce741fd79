// People: a new chat or group, adding a contact (invite link, QR code, scan or paste), this
// user's profile, a contact's page (devices, safety check) and a group's page (members, roles).
import { useEffect, useRef, useState } from "preact/hooks";
import { api, ok, message as errorText, type S } from "../client";
import * as data from "../data";
import { useStore } from "../store";
import { title } from "../notify";
import { Copy, ErrorNote, Qr, When } from "../ui";
import { ConversationRetention, Encryption } from "../pages/conversations";
import { Members } from "../pages/groups";
import { Avatar, Bar, Icon } from "./bits";
import { sha256 } from "./sha256";

function useTitle(t: string) {
  useEffect(() => title.set(t), [t]);
}

export function NewChat() {
  useTitle("New chat");
  const list = useStore(data.contacts);
  const avatars = useStore(data.avatars);
  const [making, setMaking] = useState(false);
  const [name, setName] = useState("");
  const [picked, setPicked] = useState<string[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const sorted = [...list].sort((a, b) => data.nameOf(a.user_id).localeCompare(data.nameOf(b.user_id)));
  return (
    <section class="screen" aria-labelledby="page-title">
      <Bar back="#/">
        <h1 id="page-title" tabIndex={-1}>
          {making ? "New group" : "New chat"}
        </h1>
      </Bar>
      <div class="screen-body">
        {!making ? (
          <>
            <ul class="plain actions-list">
              {data.can("send") && list.length > 0 && (
                <li>
                  <button type="button" class="list-action" onClick={() => setMaking(true)}>
                    <span class="round">
                      <Icon name="person" />
                    </span>
                    New group
                  </button>
                </li>
              )}
              {data.can("contacts") && (
                <li>
                  <a class="list-action" href="#/add">
                    <span class="round">
                      <Icon name="plus" />
                    </span>
                    Add a contact
                  </a>
                </li>
              )}
            </ul>
            <h2 class="list-heading">Contacts</h2>
            {sorted.length === 0 ? (
              <p class="empty">No contacts yet.</p>
            ) : (
              <ul class="plain">
                {sorted.map((c) => (
                  <li key={c.user_id}>
                    <a class="chat" href={`#/chat/u/${encodeURIComponent(c.user_id)}`} data-testid="contact">
                      <Avatar id={c.user_id} name={data.nameOf(c.user_id)} url={avatars[c.user_id]} size={40} />
                      <span class="chat-title">{data.nameOf(c.user_id)}</span>
                    </a>
                  </li>
                ))}
              </ul>
            )}
          </>
        ) : (
          <form
            class="panel"
            onSubmit={(e) => {
              e.preventDefault();
              setBusy(true);
              setError(null);
              ok(api.POST("/v1/groups", { body: { name: name.trim(), members: picked } }))
                .then((g) => {
                  data.groups.update((gs) => [...gs.filter((x) => x.id !== g.id), g]);
                  location.hash = `#/chat/g/${g.id}`;
                })
                .catch((err) => setError(errorText(err)))
                .finally(() => setBusy(false));
            }}
          >
            <label>
              Group name
              <input value={name} maxLength={64} required onInput={(e) => setName(e.currentTarget.value)} />
            </label>
            <fieldset>
              <legend>Members</legend>
              {sorted.map((c) => (
                <label key={c.user_id} class="check">
                  <input
                    type="checkbox"
                    checked={picked.includes(c.user_id)}
                    onChange={(e) => setPicked(e.currentTarget.checked ? [...picked, c.user_id] : picked.filter((p) => p !== c.user_id))}
                  />
                  <Avatar id={c.user_id} name={data.nameOf(c.user_id)} url={avatars[c.user_id]} size={28} /> {data.nameOf(c.user_id)}
                </label>
              ))}
            </fieldset>
            <div class="row">
              <button type="submit" disabled={busy || !name.trim()}>
                Create group
              </button>
              <button type="button" class="secondary" onClick={() => setMaking(false)}>
                Cancel
              </button>
            </div>
            <ErrorNote error={error} />
          </form>
        )}
      </div>
    </section>
  );
}

/** Reads a QR code from a photo (the browser's BarcodeDetector; the camera app takes the photo). */
export function ScanButton({ onText, label = "Scan a QR code" }: { onText: (t: string) => void; label?: string }) {
  const input = useRef<HTMLInputElement>(null);
  const [error, setError] = useState<string | null>(null);
  const Detector = (window as unknown as { BarcodeDetector?: new (o: { formats: string[] }) => { detect: (s: ImageBitmapSource) => Promise<{ rawValue: string }[]> } }).BarcodeDetector;
  if (!Detector) return null;
  return (
    <>
      <button type="button" class="secondary" onClick={() => input.current?.click()}>
        {label}
      </button>
      <input
        ref={input}
        type="file"
        accept="image/*"
        capture="environment"
        hidden
        aria-label={label}
        onChange={async (e) => {
          const f = e.currentTarget.files?.[0];
          e.currentTarget.value = "";
          if (!f) return;
          try {
            const codes = await new Detector({ formats: ["qr_code"] }).detect(await createImageBitmap(f));
            if (!codes[0]) throw new Error("No QR code was found in that picture. Try again closer, or paste the link.");
            setError(null);
            onText(codes[0].rawValue);
          } catch (err) {
            setError(errorText(err));
          }
        }}
      />
      <ErrorNote error={error} />
    </>
  );
}

export function AddContact() {
  useTitle("Add a contact");
  const [invite, setInvite] = useState<S["InviteView"] | null>(null);
  const [link, setLink] = useState("");
  const [name, setName] = useState("");
  const [note, setNote] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const add = (text: string) => {
    setBusy(true);
    setError(null);
    setNote(null);
    void (async () => {
      try {
        const r = await api.POST("/v1/contacts", { body: { invite: text.trim(), name: name.trim() || undefined } });
        const c = await ok(Promise.resolve(r));
        setLink("");
        setName("");
        if (r.response.status === 202) setNote("Accepted. The person who invited you is not reachable yet; your node keeps trying.");
        else {
          const contact = c as S["Contact"];
          data.contacts.update((cs) => [...cs.filter((x) => x.user_id !== contact.user_id), contact]);
          setNote(`${contact.name || "The contact"} was added.`);
          location.hash = `#/chat/u/${encodeURIComponent(contact.user_id)}`;
        }
      } catch (e) {
        setError(errorText(e));
      } finally {
        setBusy(false);
      }
    })();
  };
  return (
    <section class="screen" aria-labelledby="page-title">
      <Bar back="#/new" always>
        <h1 id="page-title" tabIndex={-1}>
          Add a contact
        </h1>
      </Bar>
      <div class="screen-body">
        {data.can("invite") && (
          <section class="panel" aria-labelledby="invite-h">
            <h2 id="invite-h">Invite someone</h2>
            <p class="muted">Show them this code, or send them the link. It works once, for a day.</p>
            {!invite ? (
              <button
                type="button"
                disabled={busy}
                onClick={() =>
                  ok(api.POST("/v1/invites", { body: { max_uses: 1, ttl_secs: 86400 } }))
                    .then(setInvite)
                    .catch((e) => setError(errorText(e)))
                }
              >
                Create invite
              </button>
            ) : (
              <div class="invite" data-testid="invite">
                <Qr svg={invite.qr_svg} label="QR code of the invite link" />
                <p>
                  <code class="wrap" data-testid="invite-link">
                    {invite.link}
                  </code>
                </p>
                <p class="row">
                  <Copy text={invite.link} label="Copy link" />
                  {"share" in navigator && (
                    <button type="button" class="small" onClick={() => void navigator.share({ text: invite.link }).catch(() => {})}>
                      Share
                    </button>
                  )}
                  <span class="muted">
                    expires <When at={invite.expires_at} />
                  </span>
                </p>
              </div>
            )}
          </section>
        )}
        <form
          class="panel"
          onSubmit={(e) => {
            e.preventDefault();
            add(link);
          }}
        >
          <h2>Use an invite you received</h2>
          <label>
            Invite link
            <textarea required rows={3} placeholder="volli://invite/…" value={link} onInput={(e) => setLink(e.currentTarget.value)} />
          </label>
          <label>
            Name (optional)
            <input value={name} maxLength={100} onInput={(e) => setName(e.currentTarget.value)} />
          </label>
          <div class="row">
            <button type="submit" disabled={busy}>
              {busy ? "Adding…" : "Add contact"}
            </button>
            <ScanButton onText={(t) => (setLink(t), add(t))} />
          </div>
        </form>
        <ErrorNote error={error} />
        {note && (
          <p class="success" role="status">
            {note}
          </p>
        )}
      </div>
    </section>
  );
}

/** Crops a picture to its centre square, scaled down to a small JPEG (≤ 256 KiB for the node). */
async function cropAvatar(file: File, zoom: number): Promise<Blob> {
  const bitmap = await createImageBitmap(file);
  const side = Math.min(bitmap.width, bitmap.height) / zoom;
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 256;
  const ctx = canvas.getContext("2d")!;
  ctx.drawImage(bitmap, (bitmap.width - side) / 2, (bitmap.height - side) / 2, side, side, 0, 0, 256, 256);
  for (const q of [0.85, 0.7, 0.5]) {
    const blob = await new Promise<Blob | null>((r) => canvas.toBlob(r, "image/jpeg", q));
    if (blob && blob.size <= 256 * 1024) return blob;
  }
  throw new Error("The picture is too large even when small.");
}

export function Profile() {
  useTitle("Profile");
  const m = useStore(data.me);
  const [name, setName] = useState(m.profile?.name ?? "");
  const [file, setFile] = useState<File | null>(null);
  const [preview, setPreview] = useState<string | null>(null);
  const [zoom, setZoom] = useState(1);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [saved, setSaved] = useState<string | null>(null);
  useEffect(() => setName(m.profile?.name ?? ""), [m.profile?.name]);
  useEffect(() => {
    if (!file) return setPreview(null);
    let url: string | null = null;
    void cropAvatar(file, zoom).then(
      (b) => {
        url = URL.createObjectURL(b);
        setPreview(url);
      },
      (e) => setError(errorText(e)),
    );
    return () => url && URL.revokeObjectURL(url);
  }, [file, zoom]);
  const node = m.node;
  const shown = m.profile?.name || node?.device_name || "You";
  const run = (f: () => Promise<unknown>, done: string) => {
    setBusy(true);
    setError(null);
    setSaved(null);
    f()
      .then(() => setSaved(done))
      .catch((err) => setError(errorText(err)))
      .finally(() => setBusy(false));
  };
  return (
    <section class="screen" aria-labelledby="page-title">
      <Bar back="#/settings" always>
        <h1 id="page-title" tabIndex={-1}>
          Profile
        </h1>
      </Bar>
      <div class="screen-body">
        <div class="profile-head">
          <Avatar id={node?.user_id ?? "me"} name={shown} url={preview ?? m.avatar} size={96} />
          <div>
            <p class="big" data-testid="profile-name">
              {shown}
            </p>
            <p class="muted small">
              Your user id <code class="wrap">{node?.user_id}</code> {node && <Copy text={node.user_id} />}
            </p>
          </div>
        </div>
        {data.can("profile") ? (
          <>
            <form
              class="panel"
              onSubmit={(e) => {
                e.preventDefault();
                run(() => data.setProfileName(name.trim()), "Name saved.");
              }}
            >
              <label>
                Your name, as your contacts see it
                <input value={name} maxLength={64} required onInput={(e) => setName(e.currentTarget.value)} />
              </label>
              <button type="submit" disabled={busy || !name.trim() || name.trim() === m.profile?.name}>
                Save name
              </button>
            </form>
            <div class="panel">
              <h2>Picture</h2>
              <p class="muted small">Your contacts see it beside your name. It is cropped to a square and made small here, before it leaves this device.</p>
              <label>
                Choose a picture
                <input type="file" accept="image/png,image/jpeg,image/webp" onChange={(e) => (setFile(e.currentTarget.files?.[0] ?? null), setZoom(1), setSaved(null))} />
              </label>
              {file && (
                <>
                  <label>
                    Zoom
                    <input type="range" min="1" max="3" step="0.1" value={zoom} onInput={(e) => setZoom(Number(e.currentTarget.value))} />
                  </label>
                  <div class="row">
                    <button type="button" disabled={busy} onClick={() => run(async () => (await data.setAvatar(await cropAvatar(file, zoom)), setFile(null)), "Picture saved.")}>
                      Use this picture
                    </button>
                    <button type="button" class="secondary" onClick={() => setFile(null)}>
                      Cancel
                    </button>
                  </div>
                </>
              )}
              {m.avatar && !file && (
                <button type="button" class="secondary" disabled={busy} onClick={() => run(() => data.setAvatar(null), "Picture removed.")}>
                  Remove picture
                </button>
              )}
            </div>
          </>
        ) : (
          <p class="muted">This login cannot change your name or picture.</p>
        )}
        <ErrorNote error={error} />
        {saved && (
          <p class="success" role="status">
            {saved}
          </p>
        )}
      </div>
    </section>
  );
}

/** The safety number: the same 60 digits on both sides when both have the right keys. */
export function safetyNumber(a: string, b: string): string {
  const [x, y] = [a, b].sort();
  const hash = sha256(new TextEncoder().encode(`volli-safety-1\n${x}\n${y}`));
  const digits: string[] = [];
  for (let i = 0; i < 12; i++) {
    const n = ((hash[i * 2]! << 16) | (hash[i * 2 + 1]! << 8) | hash[(i * 2 + 24) % 32]!) % 100000;
    digits.push(String(n).padStart(5, "0"));
  }
  return digits.join(" ");
}

const TIMERS = [0, 30, 300, 3600, 28800, 86400, 604800, 2419200];

/** "Disappearing messages": the chat's timer, set by either side of a 1:1 chat or a group's admins. */
function Disappearing({ chatKey }: { chatKey: data.Key }) {
  useStore(data.chats);
  const groupList = useStore(data.groups);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const { group, id } = data.parseKey(chatKey);
  const secs = data.timerOf(chatKey);
  const g = group ? groupList.find((x) => x.id === id) : undefined;
  const admin = !group || g?.members.some((x) => x.user_id === data.myId() && x.role === "admin");
  const may = data.can("send") && admin;
  const options = TIMERS.includes(secs) ? TIMERS : [...TIMERS, secs].sort((a, b) => a - b);
  return (
    <div class="panel" data-testid="disappearing">
      <label>
        <span>
          <Icon name="timer" /> Disappearing messages
        </span>
        <select
          value={String(secs)}
          disabled={!may || busy}
          onChange={(e) => {
            setBusy(true);
            setError(null);
            data
              .setTimer(chatKey, Number(e.currentTarget.value))
              .catch((err) => setError(errorText(err)))
              .finally(() => setBusy(false));
          }}
        >
          {options.map((s) => (
            <option key={s} value={s}>
              {s ? data.timerText(s) : "Off"}
            </option>
          ))}
        </select>
      </label>
      <p class="muted small">
        {secs ? `New messages disappear from every device ${data.timerText(secs)} after they are sent.` : "Messages stay until someone deletes them."}
        {group && !admin ? " Only the group's admins can change this." : ""}
      </p>
      <ErrorNote error={error} />
    </div>
  );
}

/** This user's own name for a contact, or theirs again. */
function Rename({ c }: { c: S["Contact"] }) {
  const [rename, setRename] = useState(c.name);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => setRename(c.name), [c.name]);
  const run = (name: string | null) => {
    setBusy(true);
    setError(null);
    data
      .renameContact(c.user_id, name)
      .catch((err) => setError(errorText(err)))
      .finally(() => setBusy(false));
  };
  return (
    <form
      class="panel"
      onSubmit={(e) => {
        e.preventDefault();
        run(rename.trim());
      }}
    >
      <label>
        Your name for them
        <input value={rename} maxLength={64} required onInput={(e) => setRename(e.currentTarget.value)} />
      </label>
      <div class="row">
        <button type="submit" disabled={busy || !rename.trim() || rename.trim() === c.name}>
          Rename
        </button>
        {c.renamed && (
          <button type="button" class="secondary" disabled={busy} onClick={() => run(null)}>
            Use their own name, {c.display_name}
          </button>
        )}
      </div>
      <p class="muted small">Only you and your devices see the name you give them.</p>
      <ErrorNote error={error} />
    </form>
  );
}

export function ContactInfo({ id }: { id: string }) {
  const list = useStore(data.contacts);
  const m = useStore(data.me);
  const avatars = useStore(data.avatars);
  const muted = useStore(data.muted);
  const c = list.find((x) => x.user_id === id);
  const name = data.nameOf(id);
  useTitle(name);
  const [error, setError] = useState<string | null>(null);
  const [confirm, setConfirm] = useState(false);
  const key = data.keyOf("u", id);
  const display = c?.display_name;
  return (
    <section class="screen" aria-labelledby="page-title">
      <Bar back={`#/chat/u/${encodeURIComponent(id)}`} always>
        <h1 id="page-title" tabIndex={-1}>
          {name}
        </h1>
      </Bar>
      <div class="screen-body">
        <div class="profile-head">
          <Avatar id={id} name={name} url={avatars[id]} size={96} />
          <div>
            <p class="big">{name}</p>
            {display && display !== name && <p class="muted" data-testid="display-name">calls themself {display}</p>}
            {c && (
              <p class="muted small">
                Contact since <When at={c.added_at} />
              </p>
            )}
          </div>
        </div>
        <label class="inline switch">
          <input type="checkbox" checked={muted.includes(key)} onChange={(e) => data.setMuted(key, e.currentTarget.checked)} /> Mute notifications
        </label>
        <Disappearing chatKey={key} />
        {data.can("contacts") && c && <Rename c={c} />}
        <section class="panel" aria-labelledby="safety-h">
          <h2 id="safety-h">Safety check</h2>
          <p class="muted">
            Compare these numbers with {name}, in person or on a call. If they match on both screens, nobody stands between you.
          </p>
          <p class="safety" data-testid="safety-number">
            {m.node ? safetyNumber(m.node.user_id, id).split(" ").map((g, i) => <span key={i}>{g}</span>) : ""}
          </p>
          <p class="muted small">
            Their user id: <code class="wrap">{id}</code>
          </p>
        </section>
        {c && (
          <section class="panel" aria-labelledby="devices-h">
            <h2 id="devices-h">Their devices</h2>
            <ul class="plain">
              {c.devices.map((d) => (
                <li key={d} data-testid="contact-device">
                  <code title={d}>{d.slice(0, 12)}…{d.slice(-6)}</code>
                </li>
              ))}
            </ul>
          </section>
        )}
        <Encryption peer={id} />
        {data.can("send") && (
          <details class="panel">
            <summary>Retention and deletion</summary>
            <ConversationRetention peer={id} onDeleted={async () => data.timeline(key).set({ messages: [], loaded: false, hasMore: true, loading: false, error: null })} />
          </details>
        )}
        {c && data.can("contacts") && (
          <div class="panel">
            {!confirm ? (
              <button type="button" class="danger secondary" onClick={() => setConfirm(true)}>
                Remove {name} from your contacts
              </button>
            ) : (
              <div class="row">
                <button
                  type="button"
                  class="danger"
                  onClick={() =>
                    ok(api.DELETE("/v1/contacts/{user_id}", { params: { path: { user_id: id } } }))
                      .then(() => {
                        data.contacts.update((cs) => cs.filter((x) => x.user_id !== id));
                        data.chats.update((cs) => cs.filter((x) => x.key !== key));
                        location.hash = "#/";
                      })
                      .catch((err) => setError(errorText(err)))
                  }
                >
                  Remove {name}
                </button>
                <button type="button" class="secondary" onClick={() => setConfirm(false)}>
                  Keep
                </button>
              </div>
            )}
          </div>
        )}
        <ErrorNote error={error} />
      </div>
    </section>
  );
}

export function GroupInfo({ id }: { id: string }) {
  const list = useStore(data.groups);
  const avatars = useStore(data.avatars);
  const contacts = useStore(data.contacts);
  const muted = useStore(data.muted);
  const g = list.find((x) => x.id === id);
  useTitle(g?.name ?? "Group");
  const key = data.keyOf("g", id);
  return (
    <section class="screen" aria-labelledby="page-title">
      <Bar back={`#/chat/g/${encodeURIComponent(id)}`} always>
        <h1 id="page-title" tabIndex={-1}>
          {g?.name ?? "Group"}
        </h1>
      </Bar>
      <div class="screen-body">
        {!g ? (
          <p class="muted">You are not in this group.</p>
        ) : (
          <>
            <div class="profile-head">
              <Avatar id={g.id} name={g.name} size={96} />
              <div>
                <p class="big">{g.name}</p>
                <p class="muted small">
                  Created <When at={g.created_at} />
                </p>
              </div>
            </div>
            <label class="inline switch">
              <input type="checkbox" checked={muted.includes(key)} onChange={(e) => data.setMuted(key, e.currentTarget.checked)} /> Mute notifications
            </label>
            <Disappearing chatKey={key} />
            <Members group={g} me={data.myId()} who={(u) => (u === data.myId() ? "you" : data.nameOf(u))} picture={(u) => (u === data.myId() ? data.me.value.avatar : avatars[u])} contacts={contacts} canChange={data.can("send")} />
          </>
        )}
      </div>
    </section>
  );
}
