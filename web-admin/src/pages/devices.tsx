import { useContext, useEffect, useState } from "preact/hooks";
import { api, ok, type Event, type S } from "../client";
import { Confirm, Copy, ErrorNote, Id, LiveContext, Loaded, Page, Qr, useAction, useLoad, When } from "../ui";

const PERMISSIONS = ["messages", "contacts", "settings", "admin"] as const;

export function Devices() {
  const devices = useLoad(() => ok(api.GET("/v1/devices")), ["device", "pairing", "sync"]);
  const requests = useLoad(() => ok(api.GET("/v1/pairing")), ["pairing", "device"]);
  const revoke = useAction();
  return (
    <Page title="Devices">
      <Loaded state={devices} what="devices">
        {(list) => (
          <table>
            <thead>
              <tr>
                <th>Name</th>
                <th>Peer id</th>
                <th>May</th>
                <th>Added</th>
                <th>Last seen</th>
                <th>
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.devices.map((d) => (
                <tr key={d.peer_id} class={d.revoked ? "muted" : ""} data-testid="device">
                  <td>
                    {d.name}
                    {d.this_device && <span class="badge good">this device</span>}
                    {d.revoked && <span class="badge bad">revoked</span>}
                  </td>
                  <td>
                    <Id value={d.peer_id} />
                  </td>
                  <td>{d.permissions.join(", ")}</td>
                  <td>
                    <When at={d.added_at} />
                  </td>
                  <td>
                    <When at={d.last_seen} />
                  </td>
                  <td>
                    {!d.this_device && !d.revoked && (
                      <Confirm
                        label="Revoke"
                        confirm={`Revoke ${d.name}`}
                        disabled={revoke.busy}
                        onConfirm={() =>
                          revoke.run(async () => {
                            await ok(api.DELETE("/v1/devices/{peer_id}", { params: { path: { peer_id: d.peer_id } } }));
                            await devices.reload();
                          })
                        }
                      />
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Loaded>
      <ErrorNote error={revoke.error} />
      <Warnings />
      <Loaded state={requests} what="pairing requests">
        {(r) => <Requests requests={r.requests} onDecided={requests.reload} />}
      </Loaded>
      <div class="columns">
        <NewPairing />
        <Join />
      </div>
    </Page>
  );
}

type Warning = { at: string; text: string };

/** What this device refused while the page was open: a device's changes outside what it
 * may make, a wrong pairing code. */
function Warnings() {
  const live = useContext(LiveContext);
  const [seen, setSeen] = useState<Warning[]>([]);
  useEffect(() => {
    const text = warning(live.last);
    if (text) setSeen((w) => [{ at: new Date().toISOString(), text }, ...w].slice(0, 10));
  }, [live.last]);
  if (seen.length === 0) return null;
  return (
    <div class="panel warning" role="status" data-testid="device-warnings">
      <h2>Refused</h2>
      <ul class="plain">
        {seen.map((w) => (
          <li key={w.at + w.text}>
            <When at={w.at} />: {w.text}
          </li>
        ))}
      </ul>
    </div>
  );
}

function warning(e: Event | null): string | null {
  if (!e) return null;
  if (e.type === "sync.refused") return `changes from device ${e.peer_id.slice(-8)} were refused: ${e.reason}`;
  if (e.type === "pairing.attempt_failed") return `a pairing attempt failed: ${e.reason}`;
  return null;
}

function Requests({ requests, onDecided }: { requests: S["PairingRequest"][]; onDecided: () => void }) {
  const action = useAction();
  const shown = requests.filter((r) => r.state === "pending");
  if (shown.length === 0) return null;
  const decide = (id: string, verdict: "approve" | "reject") =>
    action.run(async () => {
      const path = { params: { path: { id } } };
      await ok(verdict === "approve" ? api.POST("/v1/pairing/{id}/approve", path) : api.POST("/v1/pairing/{id}/reject", path));
      onDecided();
    });
  return (
    <>
      <h2>Devices asking to join</h2>
      <p>Approve only if the check code matches the one the new device shows.</p>
      <ul class="plain">
        {shown.map((r) => (
          <li key={r.id} class="panel row spread" data-testid="pairing-request">
            <span>
              <strong>{r.device_name}</strong> — check code <code class="big">{r.check_code}</code>{" "}
            </span>
            <span class="row">
              <button type="button" class="small" disabled={action.busy} onClick={() => decide(r.id, "approve")}>
                Approve
              </button>
              <button type="button" class="small danger" disabled={action.busy} onClick={() => decide(r.id, "reject")}>
                Reject
              </button>
            </span>
          </li>
        ))}
      </ul>
      <ErrorNote error={action.error} />
    </>
  );
}

function NewPairing() {
  const [chosen, setChosen] = useState<string[]>(["messages", "contacts", "settings"]);
  const [pairing, setPairing] = useState<S["PairingView"] | null>(null);
  const action = useAction();
  return (
    <form
      class="panel"
      onSubmit={(e) => {
        e.preventDefault();
        void action.run(async () => setPairing(await ok(api.POST("/v1/pairing", { body: { permissions: chosen } }))));
      }}
    >
      <h2>Add a device</h2>
      <fieldset>
        <legend>The new device may</legend>
        {PERMISSIONS.map((p) => (
          <label class="inline" key={p}>
            <input
              type="checkbox"
              checked={chosen.includes(p)}
              onChange={(e) => setChosen(e.currentTarget.checked ? [...chosen, p] : chosen.filter((x) => x !== p))}
            />{" "}
            {p}
          </label>
        ))}
      </fieldset>
      {chosen.includes("admin") && (
        <p class="warning">
          <strong>admin</strong> hands over your signing key. Revoking the device later cannot take it back.
        </p>
      )}
      <button type="submit" disabled={action.busy}>
        Create pairing code
      </button>
      <ErrorNote error={action.error} />
      {pairing && (
        <div class="invite">
          <Qr svg={pairing.qr_svg} label="QR code of the pairing link" />
          <p>
            Code: <code class="big">{pairing.code}</code> <Copy text={pairing.code} />
          </p>
          <p>
            <code class="wrap">{pairing.link}</code> <Copy text={pairing.link} label="Copy link" />
          </p>
          <p class="muted">
            Works once, until <When at={pairing.expires_at} />. Approve the new device above when it asks.
          </p>
        </div>
      )}
    </form>
  );
}

function Join() {
  const [value, setValue] = useState("");
  const [name, setName] = useState("");
  const [joining, setJoining] = useState<S["JoiningView"] | null>(null);
  const action = useAction();
  return (
    <form
      class="panel"
      onSubmit={(e) => {
        e.preventDefault();
        void action.run(async () => {
          const v = value.trim();
          const body = v.startsWith("volli://") ? { link: v } : { code: v };
          setJoining(await ok(api.POST("/v1/pairing/join", { body: { ...body, device_name: name.trim() || undefined } })));
        });
      }}
    >
      <h2>Make this node a device of another user</h2>
      <p class="muted">Only a node without contacts or messages can join.</p>
      <label>
        Pairing link or code
        <input required value={value} onInput={(e) => setValue(e.currentTarget.value)} />
      </label>
      <label>
        Name of this device (optional)
        <input value={name} maxLength={64} onInput={(e) => setName(e.currentTarget.value)} />
      </label>
      <button type="submit" disabled={action.busy}>
        {action.busy ? "Looking for the device…" : "Join"}
      </button>
      <ErrorNote error={action.error} />
      {joining && (
        <p class="success" role="status">
          Waiting for approval. Check that the other device shows <code class="big">{joining.check_code}</code>.
        </p>
      )}
    </form>
  );
}
