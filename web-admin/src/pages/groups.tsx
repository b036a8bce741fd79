// A group's members and their roles, shown on the group's page of the app.
import { useState } from "preact/hooks";
import { api, ok, type S } from "../client";
import { Confirm, ErrorNote, useAction } from "../ui";
import { Avatar } from "../app/bits";

type Group = S["Group"];

export function Members({
  group,
  me,
  who,
  picture,
  contacts,
  canChange,
}: {
  canChange: boolean;
  group: Group;
  me: string | undefined;
  who: (u: string) => string;
  picture?: (u: string) => string | null | undefined;
  contacts: S["Contact"][];
}) {
  const change = useAction();
  const [adding, setAdding] = useState("");
  const [name, setName] = useState(group.name);
  const admin = canChange && group.members.some((m) => m.user_id === me && m.role === "admin");
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
            <Avatar id={m.user_id} name={who(m.user_id)} url={picture?.(m.user_id)} size={32} />
            <span class="member-name">
              <strong>{who(m.user_id)}</strong> <span class={`badge${m.role === "admin" ? " good" : ""}`}>{m.role}</span>
            </span>{" "}
            <span class="muted small">
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
      {me && canChange && (
        <Confirm
          label="Leave the group"
          confirm="Leave: you will read nothing said after it"
          disabled={change.busy}
          onConfirm={() =>
            change.run(async () => {
              await ok(
                api.DELETE("/v1/groups/{id}/members/{user_id}", { params: { path: { ...path, user_id: me } } }),
              );
              location.hash = "#/";
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
