import { api, ok, type S } from "../client";
import { Copy, duration, Loaded, Page, size, useLoad, When } from "../ui";

export function Overview() {
  const state = useLoad(async () => {
    const [node, peers, relay, contacts, transfers] = await Promise.all([
      ok(api.GET("/v1/node")),
      ok(api.GET("/v1/peers")),
      ok(api.GET("/v1/relay")),
      ok(api.GET("/v1/contacts")),
      ok(api.GET("/v1/transfers")),
    ]);
    return { node, peers, relay, contacts, transfers };
  }, ["peer", "contact", "transfer", "message", "device"]);
  return (
    <Page title="Overview">
      <Loaded state={state} what="the node">
        {({ node, peers, relay, contacts, transfers }) => {
          const connected = peers.peers.filter((p) => p.connected).length;
          const uptime = (Date.now() - new Date(node.started_at).getTime()) / 1000;
          const active = transfers.transfers.filter((t) => t.state === "running" || t.state === "offered").length;
          return (
            <>
              <dl class="facts">
                <dt>User id</dt>
                <dd>
                  <code class="wrap" data-testid="user-id">{node.user_id}</code> <Copy text={node.user_id} />
                </dd>
                <dt>Peer id</dt>
                <dd>
                  <code class="wrap">{node.peer_id}</code>
                </dd>
                <dt>Device</dt>
                <dd>{node.device_name}</dd>
                <dt>This device may</dt>
                <dd data-testid="permissions">
                  {node.permissions.join(", ")}
                  {node.permissions.length < 4 && (
                    <span class="muted">
                      {" "}
                      — it was paired with these only; other changes are made on a device that has them
                    </span>
                  )}
                </dd>
                <dt>Version</dt>
                <dd>{node.version}</dd>
                <dt>Running since</dt>
                <dd>
                  <When at={node.started_at} /> ({duration(Math.max(0, uptime))})
                </dd>
                <dt>Reachable from outside</dt>
                <dd data-testid="reachability">
                  <Reachability node={node} peers={peers.peers} contacts={contacts.contacts} />
                </dd>
                <dt>Listening on</dt>
                <dd>
                  {node.listen_addrs.length === 0 ? (
                    <span class="muted">no peer-to-peer addresses</span>
                  ) : (
                    <ul class="plain">
                      {node.listen_addrs.map((a) => (
                        <li key={a}>
                          <code class="wrap">{a}</code>
                        </li>
                      ))}
                    </ul>
                  )}
                </dd>
              </dl>
              <div class="cards">
                <a class="card" href="#/peers">
                  <strong>{connected}</strong> connected of {peers.peers.length} known peers
                </a>
                <a class="card" href="#/contacts">
                  <strong>{contacts.contacts.length}</strong> contacts
                  {contacts.pending.length > 0 && `, ${contacts.pending.length} pending`}
                </a>
                <a class="card" href="#/transfers">
                  <strong>{active}</strong> active transfers
                </a>
                <div class="card">
                  <strong>{size(relay.bytes)}</strong> held for friends ({relay.envelopes} messages for{" "}
                  {relay.recipients} people)
                </div>
              </div>
              <h2>Held on this node</h2>
              <dl class="facts" data-testid="storage">
                <dt>Mail for friends</dt>
                <dd>
                  {size(relay.bytes)} in {count(relay.envelopes, "message")};{" "}
                  {relay.next_expiry ? (
                    <>
                      the first expires <When at={relay.next_expiry} />
                    </>
                  ) : (
                    "nothing to expire"
                  )}
                  . Nothing is held longer than {duration(relay.max_hold_secs)}.
                </dd>
                <dt>Files for friends</dt>
                <dd data-testid="held-files">
                  {size(relay.held_files.bytes)} in {count(relay.held_files.files, "file")} for{" "}
                  {count(relay.held_files.recipients, "person", "people")}
                  {relay.held_files.next_expiry && (
                    <>
                      ; the first expires <When at={relay.held_files.next_expiry} />
                    </>
                  )}
                  .{" "}
                  {relay.held_files.relay_bytes > 0
                    ? `Each contact may leave up to ${size(relay.held_files.relay_bytes)} here for friends who are away (files.relay_bytes).`
                    : "This node holds no files for contacts (files.relay_bytes is 0)."}
                </dd>
                <dt>Relay policy</dt>
                <dd>
                  <code>{relay.policy.plugin}</code> ({relay.policy.state}
                  {relay.policy.state !== "running" && ": nothing is held for anyone"})
                  <ul class="plain" data-testid="relay-limits">
                    {Object.entries(relay.policy.limits).map(([k, v]) => (
                      <li key={k}>
                        {k.replace(/_/g, " ")}: {limit(k, v)}
                      </li>
                    ))}
                  </ul>
                  <a href="#/plugins">Change them on the Plugins page</a>
                </dd>
                <dt>File transfers</dt>
                <dd data-testid="transfer-storage">
                  {size(relay.transfers.bytes)} in {count(relay.transfers.files, "file")}, of at most{" "}
                  {size(relay.transfers.max_bytes)} ({size(relay.transfers.max_bytes_per_contact)} per contact); a
                  sent file is kept {duration(relay.transfers.keep_secs)}
                  {relay.transfers.next_expiry && (
                    <>
                      , the next expires <When at={relay.transfers.next_expiry} />
                    </>
                  )}
                  .
                </dd>
              </dl>
            </>
          );
        }}
      </Loaded>
    </Page>
  );
}

type Node = S["Node"];
type PeerList = S["Peer"][];
type ContactList = S["Contact"][];

/** Whether other nodes can reach this one, and how they do when they cannot directly. */
function Reachability({ node, peers, contacts }: { node: Node; peers: PeerList; contacts: ContactList }) {
  const names = new Map(contacts.map((c) => [c.user_id, c.name]));
  const relayName = (peer: string) => {
    const user = peers.find((p) => p.peer_id === peer)?.user_id;
    return (user && names.get(user)) || `${peer.slice(0, 12)}…`;
  };
  const addrs = (list: string[]) => (
    <ul class="plain small">
      {list.map((a) => (
        <li key={a}>
          <code class="wrap">{a}</code>
        </li>
      ))}
    </ul>
  );
  switch (node.reachability) {
    case "public":
      return (
        <>
          <span class="badge good">yes</span> other nodes connect to this one directly
          {node.external_addrs.length > 0 && <>, at {addrs(node.external_addrs)}</>}
        </>
      );
    case "private":
      return node.relayed_via.length > 0 ? (
        <>
          <span class="badge">through friends</span> this node is behind a NAT or a firewall; contacts reach it
          through {node.relayed_via.length === 1 ? "the node" : "the nodes"} of{" "}
          <span data-testid="relayed-via">{node.relayed_via.map(relayName).join(" and ")}</span>, and connect
          directly where the routers let them
        </>
      ) : (
        <>
          <span class="badge bad">not yet</span> this node is behind a NAT or a firewall and no friend's node
          relays for it yet: it asks every contact whose node is publicly reachable. Until one is online, contacts
          reach it only when it connects to them (or forward port 8471 on the router to it).
        </>
      );
    default:
      return (
        <>
          <span class="badge">not known</span> no node it connects to has confirmed it can dial this one back, so it
          acts as if it could not: it asks friends' nodes to relay for it
          {node.relayed_via.length > 0 && (
            <>
              {" "}
              (now <span data-testid="relayed-via">{node.relayed_via.map(relayName).join(" and ")}</span>)
            </>
          )}{" "}
          and connects directly where the routers let it
        </>
      );
  }
}

/** A relay-policy setting, readable: sizes for bytes, durations for seconds. */
function limit(key: string, value: unknown): string {
  if (typeof value !== "number") return JSON.stringify(value);
  if (key.includes("bytes")) return size(value);
  if (key.endsWith("_secs")) return duration(value);
  return value.toLocaleString();
}

function count(n: number, what: string, many = `${what}s`): string {
  return `${n.toLocaleString()} ${n === 1 ? what : many}`;
}
