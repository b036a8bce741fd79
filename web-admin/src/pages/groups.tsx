import { useEffect, useRef, useState } from "preact/hooks";
import { api, ok, type S } from "../client";
import { Confirm, Empty, ErrorNote, Loaded, Page, useAction, useLoad, When } from "../ui";

type Group = S["Group"];

/** Groups: create one from contacts, read and write in it, manage its members — live. */
export function Groups({ id }: { id: string | undefined }) {
  const groups = useLoad(() => ok(api.GET("/v1/groups")), ["group"]);
  const current = groups.data?.groups.find((g) => g.id === id);
  return (
    <Page title={current ? `Group ${current.name}` : "Groups"}>
      <div class="split">
        <nav aria-label="Groups" class="list">
          <Loaded state={groups} what="groups">
            {(list) =>
              list.groups.length === 0 ? (
                <Empty>No groups yet.</Empty>
              ) : (
                <ul class="plain">
                  {list.groups.map((g) => (
                    <li key={g.id} data-testid="group">
                      <a href={`#/groups/${g.id}`} aria-current={g.id === id ? "page" : undefined}>
                        {g.name}
                      </a>{" "}
                      <span class="muted">· {g.members.length}</span>
                    </li>
                  ))}
                </ul>
              )
            }
          </Loaded>
          <NewGroup onCreated={(g) => (location.hash = `#/groups/${g.id}`)} />
        </nav>
        {id ? <GroupView id={id} key={id} /> : <Empty>Choose a group, or create one with your contacts.</Empty>}
      </div>
    </Page>
  );
}

function NewGroup({ onCreated }: { onCreated: (g: Group) => void }) {
  const contacts = useLoad(() => ok(api.GET("/v1/contacts")), ["contact"]);
  const [name, setName] = useState("");
  const [picked, setPicked] = useState<string[]>([]);
  const create = useAction();
  return (
    <details class="panel">
      <summary>New group</summary>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void create.run(async () => {
            const g = await ok(api.POST("/v1/groups", { body: { name, members: picked } }));
            setName("");
            setPicked([]);
            onCreated(g);
          });
        }}
      >
        <label>
          Name
          <input value={name} maxLength={64} required onInput={(e) => setName(e.currentTarget.value)} />
        </label>
        <fieldset>
          <legend>Members</legend>
          {(contacts.data?.contacts ?? []).map((c) => (
            <label key={c.user_id} class="check">
              <input
                type="checkbox"
                checked={picked.includes(c.user_id)}
                onChange={(e) =>
                  setPicked(
                    e.currentTarget.checked ? [...picked, c.user_id] : picked.filter((p) => p !== c.user_id),
                  )
                }
              />{" "}
              {c.name || c.user_id.slice(0, 12)}
            </label>
          ))}
        </fieldset>
        <button type="submit" disabled={create.busy}>
          Create
        </button>
      </form>
      <ErrorNote error={create.error} />
    </details>
  );
}

function GroupView({ id }: { id: string }) {
  const group = useLoad(
    () => ok(api.GET("/v1/groups/{id}", { params: { path: { id } } })),
    ["group", "contact"],
    [id],
  );
  const node = useLoad(() => ok(api.GET("/v1/node")), []);
  const contacts = useLoad(() => ok(api.GET("/v1/contacts")), ["contact"]);
  const me = node.data?.user_id;
  const names = new Map((contacts.data?.contacts ?? []).map((c) => [c.user_id, c.name]));
  const who = (user: string) => (user === me ? "you" : names.get(user) || `${user.slice(0, 12)}…`);
  return (
    <div class="thread">
      <Loaded state={group} what="the group">
        {(g) => (
          <>
            <Thread id={id} who={who} me={me} />
            <Members group={g} me={me} who={who} contacts={contacts.data?.contacts ?? []} />
          </>
        )}
      </Loaded>
    </div>
  );
}

function Thread({ id, who, me }: { id: string; who: (u: string) => string; me: string | undefined }) {
  const state = useLoad(
    () => ok(api.GET("/v1/messages", { params: { query: { group: id, limit: 100 } } })),
    ["group", "message", "messages", "sync"],
    [id],
  );
  const [text, setText] = useState("");
  const send = useAction();
  const end = useRef<HTMLDivElement>(null);
  const count = state.data?.messages.length ?? 0;
  useEffect(() => end.current?.scrollIntoView({ block: "end" }), [count]);
  return (
    <>
      <Loaded state={state} what="messages">
        {(list) =>
          list.messages.length === 0 ? (
            <Empty>No messages yet.</Empty>
          ) : (
            <ol class="messages" aria-live="polite">
              {[...list.messages]
                .sort((a, b) => a.sent_at.localeCompare(b.sent_at))
                .map((m) => {
                  const mine = m.from === me;
                  return (
                    <li key={m.id} class={mine ? "mine" : "theirs"} data-testid="group-message">
                      {!mine && <p class="meta">{who(m.from)}</p>}
                      <p class="body">{m.body}</p>
                      <p class="meta">
                        <When at={m.sent_at} />
                        {mine && (
                          <span class={`status ${m.status}`} data-testid="message-status">
                            {" "}
                            · {m.status}
                            {m.receipts && (
                              <span class="muted">
                                {" "}
                                ({m.receipts.filter((r) => r.status === "delivered").length}/{m.receipts.length}{" "}
                                delivered)
                              </span>
                            )}
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
            await ok(api.POST("/v1/messages", { body: { group: id, body } }));
            setText("");
            await state.reload();
          });
        }}
      >
        <label class="grow">
          <span class="sr-only">Message to the group</span>
          <textarea
            rows={2}
            placeholder="Write to the group (Enter sends, Shift+Enter for a new line)"
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
    </>
  );
}

function Members({
  group,
  me,
  who,
  contacts,
}: {
  group: Group;
  me: string | undefined;
  who: (u: string) => string;
  contacts: S["Contact"][];
}) {
  const change = useAction();
  const [adding, setAdding] = useState("");
  const [name, setName] = useState(group.name);
  const admin = group.members.some((m) => m.user_id === me && m.role === "admin");
  const path = { id: group.id };
  const outside = contacts.filter((c) => !group.members.some((m) => m.user_id === c.user_id));
  return (
    <details class="panel" open data-testid="group-members">
      <summary>
        {group.members.length} member{group.members.length === 1 ? "" : "s"} · end-to-end encrypted with MLS ·
        epoch {group.epoch}
      </summary>
      <ul class="plain" aria-label="Members">
        {group.members.map((m) => (
          <li key={m.user_id} data-testid="group-member">
            <strong>{who(m.user_id)}</strong> <span class="muted">{m.role}</span>{" "}
            <span class="muted">
              · {m.devices.length} device{m.devices.length === 1 ? "" : "s"}
              {m.devices.length === 0 && " (joins when its keys arrive)"}
            </span>{" "}
            {admin && m.user_id !== me && (
              <>
                <button
                  type="button"
                  class="small"
                  disabled={change.busy}
                  onClick={() =>
                    void change.run(async () => {
                      await ok(
                        api.PUT("/v1/groups/{id}/members/{user_id}", {
                          params: { path: { ...path, user_id: m.user_id } },
                          body: { role: m.role === "admin" ? "member" : "admin" },
                        }),
                      );
                    })
                  }
                >
                  {m.role === "admin" ? "Make member" : "Make admin"}
                </button>{" "}
                <Confirm
                  label="Remove"
                  confirm={`Remove ${who(m.user_id)} from the group`}
                  disabled={change.busy}
                  onConfirm={() =>
                    change.run(async () => {
                      await ok(
                        api.DELETE("/v1/groups/{id}/members/{user_id}", {
                          params: { path: { ...path, user_id: m.user_id } },
                        }),
                      );
                    })
                  }
                />
              </>
            )}
          </li>
        ))}
      </ul>
      {admin && (
        <div class="row">
          <form
            onSubmit={(e) => {
              e.preventDefault();
              if (!adding) return;
              void change.run(async () => {
                await ok(api.POST("/v1/groups/{id}/members", { params: { path }, body: { user_id: adding } }));
                setAdding("");
              });
            }}
          >
            <label>
              Add a contact{" "}
              <select value={adding} onChange={(e) => setAdding(e.currentTarget.value)}>
                <option value="">…</option>
                {outside.map((c) => (
                  <option key={c.user_id} value={c.user_id}>
                    {c.name || c.user_id.slice(0, 12)}
                  </option>
                ))}
              </select>
            </label>{" "}
            <button type="submit" disabled={change.busy || !adding}>
              Add
            </button>
          </form>
          <form
            onSubmit={(e) => {
              e.preventDefault();
              void change.run(async () => {
                await ok(api.PATCH("/v1/groups/{id}", { params: { path }, body: { name } }));
              });
            }}
          >
            <label>
              Name <input value={name} maxLength={64} onInput={(e) => setName(e.currentTarget.value)} />
            </label>{" "}
            <button type="submit" disabled={change.busy}>
              Rename
            </button>
          </form>
        </div>
      )}
      {me && (
        <Confirm
          label="Leave the group"
          confirm="Leave: you will read nothing said after it"
          disabled={change.busy}
          onConfirm={() =>
            change.run(async () => {
              await ok(
                api.DELETE("/v1/groups/{id}/members/{user_id}", { params: { path: { ...path, user_id: me } } }),
              );
              location.hash = "#/groups";
            })
          }
        />
      )}
      <p class="muted">
        Members need not know each other: mail to a member you do not know is carried by a member who does. Changes
        are ordered by the group's committer and show once it applies them.
      </p>
      <ErrorNote error={change.error} />
    </details>
  );
}
