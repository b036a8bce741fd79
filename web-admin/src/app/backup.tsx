// The backup held by friends: set it up (the recovery phrase, shown once), see where it
// stands and who holds it, back up now, make a new phrase; and the room this node offers
// for contacts' backups.
import { useEffect, useRef, useState } from "preact/hooks";
import { api, ok, type S } from "../client";
import * as data from "../data";
import { useStore } from "../store";
import { title } from "../notify";
import { Confirm, ErrorNote, Loaded, size, useAction, useLoad } from "../ui";
import { Bar, dayLabel, shortTime } from "./bits";

type View = S["BackupView"];

/** Each state in words: a short badge and a sentence. */
const STATES: Record<string, [string, string, "good" | "bad" | ""]> = {
  pending: ["Setting up", "The first backup has not reached your friends yet.", ""],
  ok: ["Backed up", "Your friends hold the newest backup; it can be restored even if one of them is gone.", "good"],
  at_risk: ["At risk", "Just enough friends hold the newest backup: if one more is lost, it cannot be restored.", "bad"],
  incomplete: ["Incomplete", "Too few friends hold the newest backup to restore it.", "bad"],
};

const MIB = 1024 * 1024;

/** A time as people say it: "Today, 09:02", "Yesterday, 18:40", "Friday 4 December, 10:15". */
function Ago({ at, inline }: { at: string | null | undefined; inline?: boolean }) {
  if (!at) return <span>never</span>;
  const day = dayLabel(at);
  return (
    <time dateTime={at} title={new Date(at).toLocaleString()}>
      {inline && (day === "Today" || day === "Yesterday") ? day.toLowerCase() : day}, {shortTime(at)}
    </time>
  );
}

export function Backup() {
  useEffect(() => title.set("Backup"), []);
  const state = useLoad(() => ok(api.GET("/v1/backup")), ["backup"]);
  // The phrase lives in this component only, for as long as it is on screen: never in storage.
  const [phrase, setPhrase] = useState<string[] | null>(null);
  const action = useAction();
  const setup = (rotate: boolean) =>
    void action.run(async () => {
      const made = await ok(api.POST("/v1/backup/setup", { body: rotate ? { rotate: true } : {} }));
      setPhrase(made.words);
    });
  return (
    <section class="screen" aria-labelledby="page-title">
      <Bar back="#/settings" always>
        <h1 id="page-title" tabIndex={-1}>
          Backup
        </h1>
      </Bar>
      <div class="screen-body">
        {phrase ? (
          <Phrase
            words={phrase}
            onDone={() => {
              setPhrase(null);
              void state.reload();
              requestAnimationFrame(() => document.getElementById("page-title")?.focus());
            }}
          />
        ) : (
          <>
            <Loaded state={state} what="the backup">
              {(b) => (b.state === "off" ? <Off busy={action.busy} onSetup={() => setup(false)} /> : <Status b={b} reload={state.reload} onRotate={() => setup(true)} busy={action.busy} />)}
            </Loaded>
            <ErrorNote error={action.error} />
            {state.data && <Offer b={state.data} reload={state.reload} />}
          </>
        )}
      </div>
    </section>
  );
}

function Off({ busy, onSetup }: { busy: boolean; onSetup: () => void }) {
  return (
    <section class="panel" aria-labelledby="backup-off-h" data-testid="backup-off">
      <h2 id="backup-off-h">Not backed up</h2>
      <p>Your friends' nodes can keep an encrypted copy of your contacts, chats and settings, which they cannot read. If you lose this device, a 12-word recovery phrase brings it all back on a new one.</p>
      {data.can("backup") ? (
        <button type="button" disabled={busy} onClick={onSetup}>
          Set up backup
        </button>
      ) : (
        <p class="muted small">Only a login to one of your admin devices with the admin scope can set it up.</p>
      )}
    </section>
  );
}

/** The new phrase, once: large, numbered, dismissed by the user. */
function Phrase({ words, onDone }: { words: string[]; onDone: () => void }) {
  const heading = useRef<HTMLHeadingElement>(null);
  useEffect(() => heading.current?.focus(), []);
  return (
    <section class="panel phrase-panel" aria-labelledby="phrase-h" data-testid="phrase">
      <h2 id="phrase-h" ref={heading} tabIndex={-1}>
        Your recovery phrase
      </h2>
      <p>Write these 12 words down on paper, in order, and keep them somewhere safe. They are shown only this once.</p>
      <ol class="phrase" aria-label="Recovery phrase">
        {words.map((w, i) => (
          <li key={i} data-testid="phrase-word">
            {w}
          </li>
        ))}
      </ol>
      <p class="warning">Anyone with these words can restore your account as you. Never type them anywhere but a new Volli node of your own.</p>
      <button type="button" onClick={onDone}>
        I wrote it down
      </button>
    </section>
  );
}

function Status({ b, reload, onRotate, busy }: { b: View; reload: () => Promise<void>; onRotate: () => void; busy: boolean }) {
  const [badge, sentence, tone] = STATES[b.state] ?? [b.state, "", ""];
  const now = useAction();
  const [done, setDone] = useState<string | null>(null);
  const canLose =
    b.state === "pending" ? "—" : b.can_lose == null ? "None: it cannot be restored as it stands" : b.can_lose === 0 ? "None" : `${b.can_lose} of ${b.holders.length}`;
  return (
    <>
      <section class="panel" aria-labelledby="backup-h" data-testid="backup-status">
        <h2 id="backup-h">
          Backup held by friends{" "}
          <span class={`badge ${tone}`} data-testid="backup-state">
            {badge}
          </span>
        </h2>
        <p>{sentence}</p>
        <dl class="facts">
          <dt>Needed to restore</dt>
          <dd data-testid="backup-k-of-n">{b.n ? `any ${b.k} of ${b.n} friends` : "not chosen yet"}</dd>
          <dt>Friends who could vanish</dt>
          <dd data-testid="backup-can-lose">{canLose}</dd>
          <dt>Last backed up</dt>
          <dd>
            <Ago at={b.updated_at} />
          </dd>
          <dt>Size</dt>
          <dd>{b.bytes ? size(b.bytes) : "—"}</dd>
          {b.tried_at && b.last_error && (
            <>
              <dt>Last tried</dt>
              <dd>
                <Ago at={b.tried_at} />
              </dd>
            </>
          )}
        </dl>
        {b.last_error && <p class="error">The last attempt failed: {b.last_error}</p>}
        {data.can("backup") && (
          <div class="row">
            <button
              type="button"
              disabled={now.busy || busy}
              onClick={() =>
                void now.run(async () => {
                  setDone(null);
                  const r = await ok(api.POST("/v1/backup/refresh"));
                  setDone(`Backed up: ${size(r.bytes_sent)} sent, ${r.holders} ${r.holders === 1 ? "friend holds" : "friends hold"} it.`);
                  await reload();
                })
              }
            >
              {now.busy ? "Backing up…" : "Back up now"}
            </button>
          </div>
        )}
        {done && (
          <p class="success" role="status">
            {done}
          </p>
        )}
        <ErrorNote error={now.error} />
      </section>

      <section class="panel" aria-labelledby="holders-h">
        <h2 id="holders-h">Who holds it</h2>
        {b.holders.length === 0 ? (
          <p class="muted">No friend holds it yet. Contacts whose nodes offer room are asked at the next backup.</p>
        ) : (
          <ul class="plain holders">
            {b.holders.map((h) => (
              <li key={h.user_id} data-testid="holder">
                <div class="row spread">
                  <strong>{h.name || `${h.user_id.slice(0, 8)}…`}</strong>
                  <span class={`badge ${h.online ? "good" : ""}`}>{h.online ? "online" : "offline"}</span>
                </div>
                <p class="muted small">
                  {h.current ? "Has the newest backup" : h.updated_at ? "Has an older backup" : "Has nothing yet"}
                  {h.updated_at && (
                    <>
                      {" · updated "}
                      <Ago at={h.updated_at} inline />
                    </>
                  )}
                  {` · ${size(h.bytes)}`}
                </p>
                {h.refused && <p class="error small">Refused: {h.refused}. Another friend takes its place at the next backup.</p>}
              </li>
            ))}
          </ul>
        )}
      </section>

      {data.can("backup") && (
        <section class="panel" aria-labelledby="rotate-h">
          <h2 id="rotate-h">Recovery phrase</h2>
          <p class="muted small">Lost the paper, or someone saw it? Make a new phrase: the old one stops working once your friends hold the new backup.</p>
          <Confirm label="New phrase" confirm="Make a new phrase" disabled={busy} onConfirm={onRotate} />
        </section>
      )}
    </>
  );
}

/** The room this node offers each contact for their backup. */
function Offer({ b, reload }: { b: View; reload: () => Promise<void> }) {
  const settings = useStore(data.settings);
  const stored = settings["backup.offer_bytes"];
  const current = typeof stored === "number" ? stored : b.held.offer_bytes;
  const [text, setText] = useState(String(Math.round((current / MIB) * 10) / 10));
  const action = useAction();
  const [saved, setSaved] = useState(false);
  useEffect(() => setText(String(Math.round((current / MIB) * 10) / 10)), [current]);
  const held = b.held;
  return (
    <section class="panel" aria-labelledby="offer-h" data-testid="backup-offer">
      <h2 id="offer-h">Space for your contacts' backups</h2>
      <p>
        Your node offers each contact <strong data-testid="offer-bytes">{current ? size(current) : "no space"}</strong> for their encrypted backup.{" "}
        {held.contacts ? `It holds ${size(held.bytes)} for ${held.contacts} ${held.contacts === 1 ? "contact" : "contacts"} now.` : "It holds nothing for anyone now."}
      </p>
      {data.can("settings") ? (
        <form
          class="row"
          onSubmit={(e) => {
            e.preventDefault();
            setSaved(false);
            void action.run(async () => {
              const mib = Number(text);
              if (!Number.isFinite(mib) || mib < 0) throw new Error("Give a number of MiB, 0 or more.");
              await data.setSetting("backup.offer_bytes", Math.round(mib * MIB));
              setSaved(true);
              await reload();
            });
          }}
        >
          <label>
            Space per contact, in MiB (0: none)
            <input type="number" min={0} step="any" inputMode="decimal" required value={text} onInput={(e) => (setText(e.currentTarget.value), setSaved(false))} />
          </label>
          <button type="submit" disabled={action.busy}>
            Save
          </button>
          {saved && (
            <span class="success" role="status">
              Saved.
            </span>
          )}
        </form>
      ) : null}
      <ErrorNote error={action.error} />
    </section>
  );
}
