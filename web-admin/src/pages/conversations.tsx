import { useEffect, useRef, useState } from "preact/hooks";
import { api, ok } from "../client";
import { Empty, ErrorNote, Loaded, Page, useAction, useLoad, When } from "../ui";

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
    ["message"],
    [peer],
  );
  const [text, setText] = useState("");
  const send = useAction();
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
                        )}
                      </p>
                    </li>
                  );
                })}
            </ol>
          )
        }
      </Loaded>
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
    </div>
  );
}
