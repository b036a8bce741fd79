import { useEffect, useRef, useState } from "preact/hooks";
import { api, ok } from "../client";
import { Confirm, Empty, ErrorNote, Loaded, Page, useAction, useLoad, When } from "../ui";
import { RuleForm, saveRules, useRetention } from "./retention";

export function Conversations({ with: peer }: { with: string | undefined }) {
  const contacts = useLoad(() => ok(api.GET("/v1/contacts")), ["contact"]);
  const current = contacts.data?.contacts.find((c) => c.user_id === peer);
  return (
    <Page title={current ? `Conversation with ${current.name || "a contact"}` : "Conversations"}>
      <div class="split">
        <nav aria-label="Conversations" class="list">
          <Loaded state={contacts} what="contacts">
            {(list) =>
              list.contacts.length === 0 ? (
                <Empty>
                  No contacts yet: <a href="#/contacts">add one</a> to start a conversation.
                </Empty>
              ) : (
                <ul class="plain">
                  {list.contacts.map((c) => (
                    <li key={c.user_id}>
                      <a
                        href={`#/conversations/${encodeURIComponent(c.user_id)}`}
                        aria-current={c.user_id === peer ? "page" : undefined}
                      >
                        {c.name || c.user_id.slice(0, 12)}
                      </a>
                    </li>
                  ))}
                </ul>
              )
            }
          </Loaded>
        </nav>
        {peer ? <Thread peer={peer} key={peer} /> : <Empty>Choose a contact to read and send messages.</Empty>}
      </div>
    </Page>
  );
}

function Thread({ peer }: { peer: string }) {
  const state = useLoad(
    () => ok(api.GET("/v1/messages", { params: { query: { with: peer, limit: 100 } } })),
    // A sync brings messages and deletions made on the user's other devices.
    ["message", "messages", "sync"],
    [peer],
  );
  const [text, setText] = useState("");
  const send = useAction();
  const remove = useAction();
  const end = useRef<HTMLDivElement>(null);
  const count = state.data?.messages.length ?? 0;
  useEffect(() => end.current?.scrollIntoView({ block: "end" }), [count]);
  return (
    <div class="thread">
      <Loaded state={state} what="messages">
        {(list) =>
          list.messages.length === 0 ? (
            <Empty>No messages yet.</Empty>
          ) : (
            <ol class="messages" aria-live="polite">
              {[...list.messages]
                .sort((a, b) => a.sent_at.localeCompare(b.sent_at))
                .map((m) => {
                  const mine = m.to === peer;
                  return (
                    <li key={m.id} class={mine ? "mine" : "theirs"} data-testid="message">
                      <p class="body">{m.body}</p>
                      <p class="meta">
                        <When at={m.sent_at} />
                        {mine && (
                          <span class={`status ${m.status}`} data-testid="message-status">
                            {" "}
                            · {m.status}
                          </span>
                        )}{" "}
                        <Confirm
                          label="Delete"
                          confirm="Delete on all my devices"
                          disabled={remove.busy}
                          onConfirm={() =>
                            remove.run(async () => {
                              await ok(api.DELETE("/v1/messages/{id}", { params: { path: { id: m.id } } }));
                              await state.reload();
                            })
                          }
                        />
                      </p>
                    </li>
                  );
                })}
            </ol>
          )
        }
      </Loaded>
      <ErrorNote error={remove.error} />
      <div ref={end} />
      <form
        class="composer"
        onSubmit={(e) => {
          e.preventDefault();
          const body = text;
          if (!body.trim()) return;
          void send.run(async () => {
            await ok(api.POST("/v1/messages", { body: { to: peer, body } }));
            setText("");
            await state.reload();
          });
        }}
      >
        <label class="grow">
          <span class="sr-only">Message</span>
          <textarea
            rows={2}
            placeholder="Write a message (Enter sends, Shift+Enter for a new line)"
            value={text}
            onInput={(e) => setText(e.currentTarget.value)}
            onKeyDown={(e) => {
              if (e.key === "Enter" && !e.shiftKey) {
                e.preventDefault();
                e.currentTarget.form?.requestSubmit();
              }
            }}
          />
        </label>
        <button type="submit" disabled={send.busy}>
          Send
        </button>
      </form>
      <ErrorNote error={send.error} />
      <Encryption peer={peer} />
      <details class="panel">
        <summary>Retention and deletion</summary>
        <ConversationRetention peer={peer} onDeleted={state.reload} />
      </details>
    </div>
  );
}

/** How the conversation is encrypted, and which devices read it: live. */
function Encryption({ peer }: { peer: string }) {
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

function ConversationRetention({ peer, onDeleted }: { peer: string; onDeleted: () => Promise<void> }) {
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
