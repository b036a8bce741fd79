// A conversation's encryption and retention, shown on the contact's page of the app.
import { useState } from "preact/hooks";
import { api, ok } from "../client";
import { Confirm, ErrorNote, Loaded, useAction, useLoad, When } from "../ui";
import { RuleForm, saveRules, useRetention } from "./retention";

/** How the conversation is encrypted, and which devices read it: live. */
export function Encryption({ peer }: { peer: string }) {
  const state = useLoad(
    () => ok(api.GET("/v1/conversations/{user_id}", { params: { path: { user_id: peer } } })),
    ["conversation", "message", "contact", "device"],
    [peer],
  );
  return (
    <details class="panel" data-testid="encryption">
      <summary>
        <Loaded state={state} what="the conversation's encryption">
          {(c) =>
            c.encryption === "mls" ? (
              <span data-testid="encryption-kind">
                End-to-end encrypted with MLS (post-quantum, forward secrecy) · epoch {c.epoch}
              </span>
            ) : (
              <span data-testid="encryption-kind">
                Sealed to the contact's key
                {c.ready ? " · moves to MLS with the next message" : " · moves to MLS once your nodes have met"}
              </span>
            )
          }
        </Loaded>
      </summary>
      {state.data && state.data.encryption === "mls" && (
        <>
          <p class="muted">
            Every message has its own key, deleted once used; the group's keys change with every commit.
            {state.data.keys_updated_at && (
              <>
                {" "}
                This device's keys were last refreshed <When at={state.data.keys_updated_at} />.
              </>
            )}
          </p>
          <ul class="plain" aria-label="Devices in this conversation">
            {state.data.members.map((m) => (
              <li key={m.peer_id} data-testid="member">
                <code>{m.peer_id.slice(0, 16)}…</code> {m.user_id === peer ? "(theirs)" : "(yours)"}
                {m.peer_id === state.data?.committer && " · orders the group's changes"}
              </li>
            ))}
          </ul>
        </>
      )}
    </details>
  );
}

export function ConversationRetention({ peer, onDeleted }: { peer: string; onDeleted: () => Promise<void> }) {
  const rules = useRetention();
  const wipe = useAction();
  const [deleted, setDeleted] = useState<number | null>(null);
  return (
    <>
      <Loaded state={rules} what="retention rules">
        {(r) => {
          const own = r.conversations?.[peer];
          const others = { ...(r.conversations ?? {}) };
          delete others[peer];
          return (
            <RuleForm
              key={JSON.stringify(own ?? r.default)}
              title={own ? "This conversation's own rule" : "This conversation follows the default rule"}
              rule={own ?? r.default}
              save={async (rule) => {
                await saveRules({ ...r, conversations: { ...others, [peer]: rule } });
                await rules.reload();
              }}
              extra={
                own && (
                  <button
                    type="button"
                    class="small"
                    onClick={() =>
                      void wipe.run(async () => {
                        await saveRules({ ...r, conversations: others });
                        await rules.reload();
                      })
                    }
                  >
                    Use the default
                  </button>
                )
              }
            />
          );
        }}
      </Loaded>
      <div class="row">
        <Confirm
          label="Delete the whole conversation"
          confirm="Delete every message on all my devices"
          disabled={wipe.busy}
          onConfirm={() =>
            wipe.run(async () => {
              const answer = await ok(
                api.DELETE("/v1/conversations/{user_id}", { params: { path: { user_id: peer } } }),
              );
              setDeleted(answer.deleted);
              await onDeleted();
            })
          }
        />
        {deleted !== null && (
          <span class="muted" role="status">
            {deleted} message{deleted === 1 ? "" : "s"} deleted.
          </span>
        )}
      </div>
      <ErrorNote error={wipe.error} />
    </>
  );
}
