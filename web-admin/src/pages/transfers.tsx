import { useContext, useEffect, useRef, useState } from "preact/hooks";
import { api, ok, session, VolliError, type S } from "../client";
import { Confirm, Empty, ErrorNote, Id, LiveContext, Loaded, Page, size, useAction, useLoad, When } from "../ui";

type Progress = { bytes_done: number; rate: number; at: number };

/** Follows `transfer.progress` events: bytes done and a smoothed rate per transfer. */
function useProgress(): Map<string, Progress> {
  const live = useContext(LiveContext);
  const seen = useRef(new Map<string, Progress>());
  const [, redraw] = useState(0);
  useEffect(() => {
    const e = live.last;
    if (!e || e.type !== "transfer.progress") return;
    const now = performance.now();
    const before = seen.current.get(e.id);
    let rate = before?.rate ?? 0;
    if (before && now > before.at) {
      const instant = ((e.bytes_done - before.bytes_done) * 1000) / (now - before.at);
      rate = before.rate ? 0.7 * before.rate + 0.3 * instant : instant;
    }
    seen.current.set(e.id, { bytes_done: e.bytes_done, rate: Math.max(0, rate), at: now });
    redraw((n) => n + 1);
  }, [live.last]);
  return seen.current;
}

const FINISHED = ["completed", "declined", "cancelled", "failed"];

/** Forgets every finished transfer at once (received files' content with them). */
function ClearFinished({ count, onCleared }: { count: number; onCleared: () => void }) {
  const action = useAction();
  if (count === 0) return null;
  return (
    <p class="row">
      <Confirm
        label={`Delete ${count} finished`}
        confirm={`Delete ${count} finished transfers and the files received with them`}
        disabled={action.busy}
        onConfirm={() =>
          action.run(async () => {
            await ok(api.DELETE("/v1/transfers", { params: { query: {} } }));
            onCleared();
          })
        }
      />
      <ErrorNote error={action.error} />
    </p>
  );
}

export function Transfers() {
  const state = useLoad(async () => {
    const [transfers, contacts, node, groups] = await Promise.all([
      ok(api.GET("/v1/transfers")),
      ok(api.GET("/v1/contacts")),
      ok(api.GET("/v1/node")),
      ok(api.GET("/v1/groups")),
    ]);
    return { transfers: transfers.transfers, contacts: contacts.contacts, me: node.user_id, groups: groups.groups };
  }, ["transfer", "contact", "group"]);
  const progress = useProgress();
  return (
    <Page title="Transfers">
      <Loaded state={state} what="transfers">
        {({ transfers, contacts, me, groups }) => {
          const names = new Map(contacts.map((c) => [c.user_id, c.name]));
          const groupNames = new Map(groups.map((g) => [g.id, g.name]));
          const who = (t: S["Transfer"]) => {
            const person = names.get(t.peer) ?? (t.peer === me ? "your other devices" : "");
            if (!t.group) return person;
            const group = `group ${groupNames.get(t.group) ?? t.group.slice(0, 8)}`;
            return t.direction === "outgoing" ? group : `${person || t.peer.slice(0, 12)} in ${group}`;
          };
          return (
            <>
              <SendFile contacts={contacts} groups={groups} me={me} onSent={state.reload} />
              <ClearFinished count={transfers.filter((t) => FINISHED.includes(t.state)).length} onCleared={state.reload} />
              {transfers.length === 0 ? (
                <Empty>No transfers yet.</Empty>
              ) : (
                <ul class="plain transfers">
                  {[...transfers]
                    .sort((a, b) => b.created_at.localeCompare(a.created_at))
                    .map((t) => (
                      <Transfer key={t.id} t={t} who={who(t)} progress={progress.get(t.id)} onChange={state.reload} />
                    ))}
                </ul>
              )}
            </>
          );
        }}
      </Loaded>
    </Page>
  );
}

function Transfer(props: { t: S["Transfer"]; who: string; progress: Progress | undefined; onChange: () => void }) {
  const { t, progress } = props;
  const action = useAction();
  const done = t.state === "running" && progress ? Math.max(progress.bytes_done, t.bytes_done) : t.bytes_done;
  const pct = t.size ? Math.min(100, (done * 100) / t.size) : t.state === "completed" ? 100 : 0;
  const path = { params: { path: { id: t.id } } };
  const act = (what: "accept" | "decline" | "pause" | "resume" | "cancel") =>
    action.run(async () => {
      const request = {
        accept: () => api.POST("/v1/transfers/{id}/accept", path),
        decline: () => api.POST("/v1/transfers/{id}/decline", path),
        pause: () => api.POST("/v1/transfers/{id}/pause", path),
        resume: () => api.POST("/v1/transfers/{id}/resume", path),
        cancel: () => api.POST("/v1/transfers/{id}/cancel", path),
      }[what];
      await ok(request());
      props.onChange();
    });
  const incoming = t.direction === "incoming";
  return (
    <li class="panel" data-testid="transfer">
      <div class="row spread">
        <strong class="wrap">{t.name}</strong>
        <span class={`badge ${t.state === "completed" ? "good" : t.state === "failed" ? "bad" : ""}`} data-testid="transfer-state">
          {t.state}
          {t.paused_by ? ` by ${t.paused_by}` : ""}
        </span>
      </div>
      <p class="muted small">
        {incoming ? "from" : "to"} {props.who || <Id value={t.peer} />} · {size(t.size)} · <When at={t.created_at} />
      </p>
      <progress max={100} value={pct} aria-label={`${t.name}: ${pct.toFixed(0)} %`} />
      <p class="small">
        {size(done)} of {size(t.size)} ({pct.toFixed(0)} %)
        {t.state === "running" && progress && progress.rate > 0 && ` · ${size(progress.rate)}/s`}
      </p>
      {t.via.length > 0 && (
        <p class="small" data-testid="transfer-via">
          Held for {incoming ? "you" : "them"} at a friend's node: {t.via.map((u) => <Id key={u} value={u} />)}
        </p>
      )}
      {t.error && <p class="error-text">{t.error}</p>}
      <div class="row">
        {incoming && t.state === "offered" && (
          <>
            <button type="button" class="small" disabled={action.busy} onClick={() => act("accept")}>
              Accept
            </button>
            <button type="button" class="small" disabled={action.busy} onClick={() => act("decline")}>
              Decline
            </button>
          </>
        )}
        {t.state === "running" && (
          <button type="button" class="small" disabled={action.busy} onClick={() => act("pause")}>
            Pause
          </button>
        )}
        {t.state === "paused" && (
          <button type="button" class="small" disabled={action.busy} onClick={() => act("resume")}>
            Resume
          </button>
        )}
        {["offered", "running", "paused"].includes(t.state) && !(incoming && t.state === "offered") && (
          <Confirm label="Cancel" confirm="Cancel the transfer" disabled={action.busy} onConfirm={() => act("cancel")} />
        )}
        {incoming && t.state === "completed" && <Save t={t} />}
        {["completed", "declined", "cancelled", "failed"].includes(t.state) && (
          <Confirm
            label="Delete"
            confirm="Delete it"
            disabled={action.busy}
            onConfirm={() =>
              action.run(async () => {
                await ok(api.DELETE("/v1/transfers/{id}", path));
                props.onChange();
              })
            }
          />
        )}
      </div>
      <ErrorNote error={action.error} />
    </li>
  );
}

/** Downloads a received file with the session token (a plain link could not send it). */
function Save({ t }: { t: S["Transfer"] }) {
  const action = useAction();
  return (
    <>
      <button
        type="button"
        class="small"
        disabled={action.busy}
        onClick={() =>
          action.run(async () => {
            const response = await fetch(`/v1/transfers/${encodeURIComponent(t.id)}/content`, {
              headers: { Authorization: `Bearer ${session.get() ?? ""}` },
            });
            if (!response.ok) {
              const body = (await response.json().catch(() => null)) as { error?: { code: string; message: string } } | null;
              throw new VolliError(response.status, body?.error?.code ?? "unknown", body?.error?.message ?? "The file cannot be read.");
            }
            const url = URL.createObjectURL(await response.blob());
            const a = document.createElement("a");
            a.href = url;
            a.download = t.name;
            a.click();
            setTimeout(() => URL.revokeObjectURL(url), 10_000);
          })
        }
      >
        Save
      </button>
      <ErrorNote error={action.error} />
    </>
  );
}

/** Sends a file to a contact, to this user's other devices, or to a group (`group:ID`). */
function SendFile(props: { contacts: S["Contact"][]; groups: S["Group"][]; me: string; onSent: () => void }) {
  const [to, setTo] = useState("");
  const [file, setFile] = useState<File | null>(null);
  const [sent, setSent] = useState<number | null>(null);
  const action = useAction();
  return (
    <form
      class="panel"
      onSubmit={(e) => {
        e.preventDefault();
        if (!file || !to) return;
        setSent(0);
        void action.run(async () => {
          try {
            await ok(
              api.POST("/v1/transfers", {
                params: {
                  query: to.startsWith("group:") ? { group: to.slice(6), name: file.name } : { to, name: file.name },
                },
                body: file as unknown as string,
                bodySerializer: (b: unknown) => b as BodyInit,
                headers: { "Content-Type": "application/octet-stream" },
              }),
            );
          } finally {
            setSent(null);
          }
          setFile(null);
          (e.target as HTMLFormElement).reset();
          props.onSent();
        });
      }}
    >
      <h2>Send a file</h2>
      <div class="row">
        <label>
          To
          <select required value={to} onChange={(e) => setTo(e.currentTarget.value)}>
            <option value="">Choose…</option>
            {props.contacts.map((c) => (
              <option key={c.user_id} value={c.user_id}>
                {c.name || c.user_id}
              </option>
            ))}
            <option value={props.me}>My other devices</option>
            {props.groups.length > 0 && (
              <optgroup label="Groups">
                {props.groups.map((g) => (
                  <option key={g.id} value={`group:${g.id}`}>
                    {g.name} (group)
                  </option>
                ))}
              </optgroup>
            )}
          </select>
        </label>
        <label>
          File
          <input type="file" required onChange={(e) => setFile(e.currentTarget.files?.[0] ?? null)} />
        </label>
      </div>
      <button type="submit" disabled={action.busy || !file || !to}>
        {sent !== null ? "Uploading…" : "Send"}
      </button>
      <ErrorNote error={action.error} />
    </form>
  );
}
