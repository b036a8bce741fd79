import { api, ok } from "../client";
import { Empty, Id, Loaded, Page, useLoad } from "../ui";

export function Peers() {
  const state = useLoad(async () => {
    const [peers, contacts] = await Promise.all([ok(api.GET("/v1/peers")), ok(api.GET("/v1/contacts"))]);
    const names = new Map(contacts.contacts.map((c) => [c.user_id, c.name]));
    return { peers: peers.peers, names };
  }, ["peer", "contact"]);
  return (
    <Page title="Peers">
      <Loaded state={state} what="peers">
        {({ peers, names }) =>
          peers.length === 0 ? (
            <Empty>No peers known yet. Discovery plugins add the nodes they find here.</Empty>
          ) : (
            <table>
              <thead>
                <tr>
                  <th>Peer</th>
                  <th>User</th>
                  <th>Found by</th>
                  <th>State</th>
                  <th>Path</th>
                  <th>Round trip</th>
                  <th>Addresses</th>
                </tr>
              </thead>
              <tbody>
                {[...peers]
                  .sort((a, b) => Number(b.connected) - Number(a.connected))
                  .map((p) => (
                    <tr key={p.peer_id} data-testid="peer">
                      <td>
                        <Id value={p.peer_id} />
                      </td>
                      <td>{p.user_id ? names.get(p.user_id) || <Id value={p.user_id} /> : <span class="muted">unknown</span>}</td>
                      <td>{p.sources.join(", ") || <span class="muted">—</span>}</td>
                      <td>
                        <span class={p.connected ? "badge good" : "badge"}>{p.connected ? "connected" : "known"}</span>
                      </td>
                      <td data-testid="path">
                        {p.path === "direct" ? (
                          <span title="its own connection, through the NATs where there are any">direct</span>
                        ) : p.path === "relayed" ? (
                          <span title="a circuit through a friend's node, until a hole punch moves it to a direct one">
                            through a friend's node
                          </span>
                        ) : (
                          <span class="muted">—</span>
                        )}
                      </td>
                      <td>{p.rtt_ms == null ? "—" : `${p.rtt_ms} ms`}</td>
                      <td>
                        <ul class="plain small">
                          {p.addrs.map((a) => (
                            <li key={a}>
                              <code class="wrap">{a}</code>
                            </li>
                          ))}
                        </ul>
                      </td>
                    </tr>
                  ))}
              </tbody>
            </table>
          )
        }
      </Loaded>
    </Page>
  );
}
