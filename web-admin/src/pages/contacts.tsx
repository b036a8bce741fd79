import { useState } from "preact/hooks";
import { api, ok, type S } from "../client";
import { Confirm, Copy, Empty, ErrorNote, Id, Loaded, Page, Qr, useAction, useLoad, When } from "../ui";

export function Contacts() {
  const state = useLoad(() => ok(api.GET("/v1/contacts")), ["contact"]);
  const remove = useAction();
  return (
    <Page title="Contacts">
      <div class="columns">
        <NewInvite />
        <AddContact onAdded={state.reload} />
      </div>
      <h2>Your contacts</h2>
      <ErrorNote error={remove.error} />
      <Loaded state={state} what="contacts">
        {(list) => (
          <>
            {list.contacts.length === 0 ? (
              <Empty>No contacts yet. Create an invite and share it, or paste one you received.</Empty>
            ) : (
              <table>
                <thead>
                  <tr>
                    <th>Name</th>
                    <th>User id</th>
                    <th>Devices</th>
                    <th>Added</th>
                    <th>
                      <span class="sr-only">Actions</span>
                    </th>
                  </tr>
                </thead>
                <tbody>
                  {list.contacts.map((c) => (
                    <tr key={c.user_id} data-testid="contact">
                      <td>
                        <a href={`#/conversations/${encodeURIComponent(c.user_id)}`}>{c.name || "(no name)"}</a>
                      </td>
                      <td>
                        <Id value={c.user_id} />
                      </td>
                      <td>{c.devices.length}</td>
                      <td>
                        <When at={c.added_at} />
                      </td>
                      <td>
                        <Confirm
                          label="Remove"
                          confirm={`Remove ${c.name || "contact"}`}
                          disabled={remove.busy}
                          onConfirm={() =>
                            remove.run(async () => {
                              await ok(api.DELETE("/v1/contacts/{user_id}", { params: { path: { user_id: c.user_id } } }));
                              await state.reload();
                            })
                          }
                        />
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
            {list.pending.length > 0 && <Pending pending={list.pending} />}
          </>
        )}
      </Loaded>
    </Page>
  );
}

function Pending({ pending }: { pending: S["PendingView"][] }) {
  return (
    <>
      <h2>Waiting for the inviter</h2>
      <p class="muted">The invite is accepted; the node keeps trying to reach the person who made it.</p>
      <ul>
        {pending.map((p) => (
          <li key={p.user_id}>
            <Id value={p.user_id} /> — {p.attempts} attempts
            {p.last_error && <span class="muted"> (last: {p.last_error})</span>}
          </li>
        ))}
      </ul>
    </>
  );
}

function NewInvite() {
  const [invite, setInvite] = useState<S["InviteView"] | null>(null);
  const [uses, setUses] = useState("1");
  const [hours, setHours] = useState("24");
  const action = useAction();
  return (
    <form
      class="panel"
      onSubmit={(e) => {
        e.preventDefault();
        void action.run(async () => {
          const body = { max_uses: Number(uses), ttl_secs: Math.round(Number(hours) * 3600) };
          setInvite(await ok(api.POST("/v1/invites", { body })));
        });
      }}
    >
      <h2>Invite someone</h2>
      <div class="row">
        <label>
          Uses
          <input type="number" min="1" max="1000" required value={uses} onInput={(e) => setUses(e.currentTarget.value)} />
        </label>
        <label>
          Valid for (hours)
          <input type="number" min="0.1" step="any" required value={hours} onInput={(e) => setHours(e.currentTarget.value)} />
        </label>
      </div>
      <button type="submit" disabled={action.busy}>
        Create invite
      </button>
      <ErrorNote error={action.error} />
      {invite && (
        <div class="invite" data-testid="invite">
          <Qr svg={invite.qr_svg} label="QR code of the invite link" />
          <p>
            <code class="wrap" data-testid="invite-link">{invite.link}</code>
          </p>
          <p>
            <Copy text={invite.link} label="Copy link" /> <span class="muted">expires <When at={invite.expires_at} /></span>
          </p>
        </div>
      )}
    </form>
  );
}

function AddContact({ onAdded }: { onAdded: () => void }) {
  const [link, setLink] = useState("");
  const [name, setName] = useState("");
  const [note, setNote] = useState<string | null>(null);
  const action = useAction();
  return (
    <form
      class="panel"
      onSubmit={(e) => {
        e.preventDefault();
        setNote(null);
        void action.run(async () => {
          const r = await api.POST("/v1/contacts", { body: { invite: link.trim(), name: name.trim() || undefined } });
          await ok(Promise.resolve(r));
          setNote(
            r.response.status === 202
              ? "Accepted. The inviter is not reachable yet; the node keeps trying."
              : "Contact added.",
          );
          setLink("");
          setName("");
          onAdded();
        });
      }}
    >
      <h2>Add a contact</h2>
      <label>
        Invite link
        <textarea
          required
          rows={3}
          placeholder="volli://invite/…"
          value={link}
          onInput={(e) => setLink(e.currentTarget.value)}
        />
      </label>
      <label>
        Name (optional)
        <input value={name} maxLength={100} onInput={(e) => setName(e.currentTarget.value)} />
      </label>
      <button type="submit" disabled={action.busy}>
        {action.busy ? "Adding…" : "Add contact"}
      </button>
      <ErrorNote error={action.error} />
      {note && (
        <p class="success" role="status">
          {note}
        </p>
      )}
    </form>
  );
}
