import { useState } from "preact/hooks";
import { api, ok, type S } from "../client";
import { enablePush } from "../notify";
import { Confirm, Copy, Empty, ErrorNote, Id, Loaded, Page, Qr, useAction, useLoad, When } from "../ui";

const SCOPES = [
  ["read", "read everything and follow events"],
  ["messages", "send and delete messages"],
  ["files", "send and receive files"],
  ["contacts", "invite, add and remove contacts"],
  ["admin", "everything, including devices, plugins and clients"],
] as const;

/** Client tokens: phones, browsers and scripts, each limited to its scopes. */
export function Clients() {
  const clients = useLoad(() => ok(api.GET("/v1/clients")), ["client"]);
  const revoke = useAction();
  return (
    <Page title="Clients">
      <p class="muted">
        Apps that use this node's API with a token of their own, limited to what you allow. Revoking one refuses its
        token at once.
      </p>
      <Loaded state={clients} what="clients">
        {(list) =>
          list.clients.length === 0 ? (
            <Empty>No clients yet. Add one below, for example your phone.</Empty>
          ) : (
            <table>
              <thead>
                <tr>
                  <th>Name</th>
                  <th>Id</th>
                  <th>May</th>
                  <th>Created</th>
                  <th>Last used</th>
                  <th>
                    <span class="sr-only">Actions</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {list.clients.map((c) => (
                  <tr key={c.id} data-testid="client">
                    <td>{c.name}</td>
                    <td>
                      <Id value={c.id} />
                    </td>
                    <td>{c.scopes.join(", ")}</td>
                    <td>
                      <When at={c.created_at} />
                    </td>
                    <td>
                      <When at={c.last_used_at} />
                    </td>
                    <td>
                      <Confirm
                        label="Revoke"
                        confirm={`Revoke ${c.name}`}
                        disabled={revoke.busy}
                        onConfirm={() =>
                          revoke.run(async () => {
                            await ok(api.DELETE("/v1/clients/{id}", { params: { path: { id: c.id } } }));
                            await clients.reload();
                          })
                        }
                      />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )
        }
      </Loaded>
      <ErrorNote error={revoke.error} />
      <NewClient />
      <Notifications />
    </Page>
  );
}

/** Web Push subscriptions: this browser's, and every client's. */
function Notifications() {
  const subs = useLoad(() => ok(api.GET("/v1/push/subscriptions")), ["client"]);
  const action = useAction();
  const [sent, setSent] = useState<string | null>(null);
  const subscribe = () =>
    action.run(async () => {
      await enablePush();
      await subs.reload();
    });
  return (
    <section class="panel" aria-labelledby="notifications">
      <h2 id="notifications">Notifications</h2>
      <p class="muted">
        Clients that registered for Web Push are told of new messages, file offers and pairing requests without keeping a
        connection open — who wrote, never what, unless a client asked for the text.
      </p>
      <Loaded state={subs} what="subscriptions">
        {(list) =>
          list.subscriptions.length === 0 ? (
            <Empty>No client has registered for notifications.</Empty>
          ) : (
            <table>
              <thead>
                <tr>
                  <th>Push service</th>
                  <th>Client</th>
                  <th>Last push</th>
                  <th>
                    <span class="sr-only">Actions</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {list.subscriptions.map((s) => (
                  <tr key={s.id} data-testid="subscription">
                    <td>
                      {s.push_service}
                      {s.include_text && <span class="badge">with text</span>}
                    </td>
                    <td>{s.client_id ? <Id value={s.client_id} /> : "admin"}</td>
                    <td>
                      <When at={s.last_push_at} />
                      {s.last_error && <span class="badge bad">{s.last_error}</span>}
                    </td>
                    <td class="row">
                      <button
                        type="button"
                        class="small"
                        disabled={action.busy}
                        onClick={() =>
                          void action.run(async () => {
                            await ok(api.POST("/v1/push/test", { body: { id: s.id } }));
                            setSent(s.push_service);
                          })
                        }
                      >
                        Send test
                      </button>
                      <button
                        type="button"
                        class="small danger"
                        disabled={action.busy}
                        onClick={() =>
                          void action.run(async () => {
                            await ok(api.DELETE("/v1/push/subscriptions/{id}", { params: { path: { id: s.id } } }));
                            await subs.reload();
                          })
                        }
                      >
                        Remove
                      </button>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )
        }
      </Loaded>
      <button type="button" class="secondary" disabled={action.busy} onClick={() => void subscribe()}>
        Notify this browser
      </button>
      <ErrorNote error={action.error} />
      {sent && (
        <p class="success" role="status">
          A test push is on its way to {sent}.
        </p>
      )}
    </section>
  );
}

function NewClient() {
  const [name, setName] = useState("phone");
  const [chosen, setChosen] = useState<string[]>(["read", "messages"]);
  const [apiUrl, setApiUrl] = useState(location.origin);
  const [offer, setOffer] = useState<S["LoginOffer"] | null>(null);
  const [created, setCreated] = useState<S["CreatedClient"] | null>(null);
  const action = useAction();
  const body = () => ({ name: name.trim(), scopes: chosen });
  return (
    <form
      class="panel"
      onSubmit={(e) => {
        e.preventDefault();
        void action.run(async () => {
          setCreated(null);
          setOffer(await ok(api.POST("/v1/clients/login-codes", { body: { ...body(), api_url: apiUrl.trim() } })));
        });
      }}
    >
      <h2>Add a client</h2>
      <label>
        Name
        <input required value={name} maxLength={64} onInput={(e) => setName(e.currentTarget.value)} />
      </label>
      <fieldset>
        <legend>The client may</legend>
        {SCOPES.map(([scope, what]) => (
          <label class="inline" key={scope} title={what}>
            <input
              type="checkbox"
              checked={chosen.includes(scope)}
              onChange={(e) => setChosen(e.currentTarget.checked ? [...chosen, scope] : chosen.filter((x) => x !== scope))}
            />{" "}
            {scope}
          </label>
        ))}
      </fieldset>
      {chosen.includes("admin") && (
        <p class="warning">
          <strong>admin</strong> lets the client do everything this page can, including pairing devices.
        </p>
      )}
      <label>
        Address the client reaches this node at
        <input required value={apiUrl} maxLength={512} onInput={(e) => setApiUrl(e.currentTarget.value)} />
      </label>
      <div class="row">
        <button type="submit" disabled={action.busy}>
          Show login code
        </button>
        <button
          type="button"
          class="secondary"
          disabled={action.busy}
          onClick={() =>
            void action.run(async () => {
              setOffer(null);
              setCreated(await ok(api.POST("/v1/clients", { body: body() })));
            })
          }
        >
          Create a token now
        </button>
      </div>
      <ErrorNote error={action.error} />
      {offer && (
        <div class="invite" data-testid="client-login">
          <Qr svg={offer.qr_svg} label="QR code of the client login link" />
          <p>
            Scan it with the app, or enter the address <code>{offer.api_url}</code> and the code{" "}
            <code class="wrap">{offer.code}</code> <Copy text={offer.code} />
          </p>
          <p>
            In the phone's browser, this address opens the app logged in:{" "}
            <code class="wrap" data-testid="client-login-url">{`${offer.api_url.replace(/\/+$/, "")}/#login=${encodeURIComponent(offer.code)}`}</code>{" "}
            <Copy text={`${offer.api_url.replace(/\/+$/, "")}/#login=${encodeURIComponent(offer.code)}`} label="Copy address" />
          </p>
          <p>
            <code class="wrap">{offer.link}</code> <Copy text={offer.link} label="Copy link" />
          </p>
          <p class="muted">
            Works once, until <When at={offer.expires_at} />. The app trades it for a token of its own; the client
            appears above when it does.
          </p>
        </div>
      )}
      {created && (
        <div class="invite" data-testid="client-token">
          <p>
            Token of <strong>{created.name}</strong>: <code class="wrap">{created.token}</code>{" "}
            <Copy text={created.token} />
          </p>
          <p class="warning">This is the only time the token is shown. Keep it like a password.</p>
        </div>
      )}
    </form>
  );
}
