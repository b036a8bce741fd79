// The package against real nodes: typed calls, the node's errors, the QR login, and the event
// stream's typed events, reconnection after a restart and end on revocation.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { avatar, createVolliClient, logIn, ok, parseLoginLink, sendFile, setAvatar, VolliError } from "../dist/index.js";
import { call, Nodes } from "./nodes.mjs";

const nodes = new Nodes("volli-client-");
let alice;
let bob;

before(async () => {
  [alice, bob] = await Promise.all([nodes.start("alice"), nodes.start("bob")]);
});
after(() => nodes.stopAll());

/** A client token made with the admin token, and a client using it. */
async function clientOf(node, name, scopes) {
  const created = await call(node, "POST", "/v1/clients", { name, scopes });
  assert.equal(created.status, 201);
  return { id: created.body.id, client: createVolliClient({ baseUrl: node.url, token: created.body.token }) };
}

describe("@volli/client", () => {
  test("reads login links and refuses what is not one", () => {
    assert.deepEqual(parseLoginLink("volli://login?api=https%3A%2F%2Fnode.example.org%3A8443&code=abc"), {
      apiUrl: "https://node.example.org:8443",
      code: "abc",
    });
    for (const bad of ["", "volli://invite/xyz", "https://node/login?api=x&code=y", "volli://login?api=ftp%3A%2F%2Fx&code=y", "volli://login?api=http%3A%2F%2Fx"]) {
      assert.throws(() => parseLoginLink(bad), (e) => e instanceof VolliError && e.code === "invalid_login_link", bad);
    }
    assert.throws(() => createVolliClient({ baseUrl: "node.example.org" }), (e) => e.code === "invalid_base_url");
  });

  test("logs in with a login link, and the code works once", async () => {
    const offer = await call(alice, "POST", "/v1/clients/login-codes", { name: "phone", scopes: ["read", "messages"] });
    assert.equal(offer.status, 201);
    const { client, created } = await logIn(offer.body.link);
    assert.deepEqual(created.scopes.sort(), ["messages", "read"]);
    assert.equal(client.baseUrl, alice.url);
    const node = await ok(client.api.GET("/v1/node"));
    assert.match(node.user_id, /\S/);
    await assert.rejects(logIn(offer.body.link), (e) => e instanceof VolliError && e.status === 401 && e.code === "invalid_login_code");
  });

  test("throws the node's error with its status and stable code", async () => {
    const { client } = await clientOf(alice, "reader", ["read"]);
    await assert.rejects(
      ok(client.api.POST("/v1/messages", { body: { to: "nobody", body: "hi" } })),
      (e) => e instanceof VolliError && e.status === 403 && e.code === "insufficient_scope",
    );
    const nobody = createVolliClient({ baseUrl: "http://127.0.0.1:1" });
    await assert.rejects(ok(nobody.api.GET("/health")), (e) => e instanceof VolliError && e.status === 0 && e.code === "unreachable");
  });

  test("adds a contact and delivers a message with typed events on both sides", async () => {
    const a = (await clientOf(alice, "script", ["read", "messages", "contacts"])).client;
    const b = (await clientOf(bob, "script", ["read", "messages", "contacts"])).client;
    const aEvents = a.events();
    const bEvents = b.events();
    try {
      await Promise.all([aEvents.next("ready"), bEvents.next("ready")]);
      assert.equal(aEvents.status, "live");
      const invite = await ok(a.api.POST("/v1/invites", { body: {} }));
      const added = aEvents.next("contact.added");
      const { user_id: bobId } = await ok(b.api.GET("/v1/node"));
      const { user_id: aliceId } = await ok(a.api.GET("/v1/node"));
      await ok(b.api.POST("/v1/contacts", { body: { invite: invite.link, name: "Alice" } }));
      assert.equal((await added).user_id, bobId);

      const received = aEvents.next("message.received", (e) => e.body === "hello from a script");
      const delivered = bEvents.next("message.status", (e) => e.status === "delivered");
      const sent = await ok(b.api.POST("/v1/messages", { body: { to: aliceId, body: "hello from a script" } }));
      const got = await received;
      assert.equal(got.from, bobId);
      assert.equal((await delivered).id, sent.id);
      const { messages } = await ok(a.api.GET("/v1/messages", { params: { query: { with: bobId } } }));
      assert.ok(messages.some((m) => m.body === "hello from a script"));
    } finally {
      aEvents.close();
      bEvents.close();
    }
  });

  test("replies, reactions, edits, read marks and search through typed routes; a file with a thumbnail and a picture through the helpers", async () => {
    const a = (await clientOf(alice, "app", ["read", "messages", "files", "contacts"])).client;
    const b = (await clientOf(bob, "app", ["read", "messages", "files", "contacts"])).client;
    const { user_id: aliceId } = await ok(a.api.GET("/v1/node"));
    const { user_id: bobId } = await ok(b.api.GET("/v1/node"));
    const aEvents = a.events();
    const bEvents = b.events();
    try {
      await Promise.all([aEvents.next("ready"), bEvents.next("ready")]);
      const arrived = aEvents.next("message.received", (e) => e.body === "the blue train leaves at nine");
      const question = await ok(b.api.POST("/v1/messages", { body: { to: aliceId, body: "the blue train leaves at nine" } }));
      await arrived;
      // A reply, seen with what it answers.
      const replied = bEvents.next("message.received", (e) => e.reply_to === question.id);
      const answer = await ok(a.api.POST("/v1/messages", { body: { to: bobId, body: "see you on it", reply_to: question.id } }));
      assert.equal((await replied).id, answer.id);
      // One reaction per person: a second replaces the first; anything but one emoji is refused.
      const reacted = bEvents.next("message.reaction", (e) => e.id === question.id && e.emoji === "🚆");
      await ok(a.api.POST("/v1/messages/{id}/reactions", { params: { path: { id: question.id } }, body: { emoji: "👍" } }));
      const m = await ok(a.api.POST("/v1/messages/{id}/reactions", { params: { path: { id: question.id } }, body: { emoji: "🚆" } }));
      assert.deepEqual(m.reactions, [{ emoji: "🚆", from: [aliceId] }]);
      assert.equal((await reacted).from, aliceId);
      await assert.rejects(ok(a.api.POST("/v1/messages/{id}/reactions", { params: { path: { id: question.id } }, body: { emoji: "no" } })), (e) => e.code === "invalid_reaction");
      const back = await ok(a.api.DELETE("/v1/messages/{id}/reactions/{emoji}", { params: { path: { id: question.id, emoji: "🚆" } } }));
      assert.deepEqual(back.reactions, []);
      // An edit by its author only.
      const edited = bEvents.next("message.edited", (e) => e.id === answer.id);
      const changed = await ok(a.api.PATCH("/v1/messages/{id}", { params: { path: { id: answer.id } }, body: { body: "see you on the platform" } }));
      assert.ok(changed.edited_at);
      assert.equal((await edited).body, "see you on the platform");
      await assert.rejects(ok(a.api.PATCH("/v1/messages/{id}", { params: { path: { id: question.id } }, body: { body: "x" } })), (e) => e.status === 403 && e.code === "not_author");
      // Read: the chat list's count drops, the sender hears it.
      const before = (await ok(a.api.GET("/v1/conversations"))).conversations.find((c) => c.with === bobId);
      assert.ok(before.unread >= 1);
      const read = bEvents.next("message.read", (e) => e.by === aliceId && e.up_to === question.id);
      await ok(a.api.POST("/v1/messages/read", { body: { with: bobId, up_to: question.id } }));
      await read;
      assert.equal((await ok(a.api.GET("/v1/conversations"))).conversations.find((c) => c.with === bobId).unread, 0);
      // Search: the typed route sends its query.
      const { results } = await ok(a.api.GET("/v1/search", { params: { query: { q: "blue tra", with: bobId } } }));
      assert.equal(results[0]?.message.id, question.id);
      assert.equal(results[0].snippet.slice(results[0].highlights[0][0], results[0].highlights[0][1]), "blue");

      // A file with a thumbnail: a `file` item of the conversation on both sides.
      const thumbnail = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=";
      const offered = aEvents.next("transfer.offered", (e) => e.name === "ticket.png");
      const t = await sendFile(b, { to: aliceId }, { name: "ticket.png", bytes: new Uint8Array(3000).fill(7), mime: "image/png", thumbnail });
      assert.equal(t.state, "offered");
      assert.equal((await offered).id, t.id);
      const item = await ok(a.api.GET("/v1/messages/{id}", { params: { path: { id: t.id } } }));
      assert.equal(item.kind, "file");
      assert.deepEqual({ name: item.file.name, mime: item.file.mime, thumbnail: item.file.thumbnail }, { name: "ticket.png", mime: "image/png", thumbnail });
      await assert.rejects(sendFile(b, { to: "nobody" }, { name: "x", bytes: new Uint8Array(1) }), (e) => e instanceof VolliError && e.status >= 400);

      // A picture: set, seen by the contact, removed.
      const png = Uint8Array.from(atob(thumbnail.split(",")[1]), (c) => c.charCodeAt(0));
      const changedCard = bEvents.next("contact.changed", (e) => e.user_id === aliceId && e.avatar);
      await setAvatar(a, new Blob([png], { type: "image/png" }));
      assert.deepEqual(new Uint8Array(await (await avatar(a)).arrayBuffer()), png);
      await changedCard;
      assert.deepEqual(new Uint8Array(await (await avatar(b, aliceId)).arrayBuffer()), png);
      await setAvatar(a, null);
      assert.equal(await avatar(a), null);
    } finally {
      aEvents.close();
      bEvents.close();
    }
  });

  test("the event stream comes back after the node restarts, and ends when the client is revoked", async () => {
    const { id, client } = await clientOf(alice, "watcher", ["read"]);
    let unauthorized = 0;
    const watched = createVolliClient({ baseUrl: alice.url, token: client.token(), onUnauthorized: () => unauthorized++ });
    const events = watched.events({ minDelayMs: 100, maxDelayMs: 500 });
    const seen = [];
    events.onStatus((s) => seen.push(s));
    try {
      await events.next("ready");
      // A node shutting down is not a revocation: the stream waits and comes back.
      const back = events.next("ready", () => true, 60_000);
      await nodes.restart(alice);
      await back;
      assert.ok(seen.includes("offline"), `went offline while the node was down: ${seen}`);
      assert.equal(events.status, "live");
      // Events flow on the new connection.
      const addedEvent = events.next("client.added", (e) => e.name === "after restart");
      assert.equal((await call(alice, "POST", "/v1/clients", { name: "after restart", scopes: ["read"] })).status, 201);
      assert.deepEqual((await addedEvent).scopes, ["read"]);

      const ended = new Promise((r) => events.onStatus((s) => s === "closed" && r()));
      assert.equal((await call(alice, "DELETE", `/v1/clients/${id}`)).status, 204);
      await ended;
      assert.equal(events.error?.code, "revoked");
      await assert.rejects(ok(watched.api.GET("/v1/node")), (e) => e.status === 401);
      assert.equal(unauthorized, 1);
      // Nothing is reopened after the end.
      await new Promise((r) => setTimeout(r, 700));
      assert.equal(events.status, "closed");
    } finally {
      events.close();
    }
  });

  test("a client without the read scope gets no event stream", async () => {
    const { client } = await clientOf(alice, "sender", ["messages"]);
    const events = client.events();
    await new Promise((r) => events.onStatus((s) => s === "closed" && r()));
    assert.equal(events.error?.code, "insufficient_scope");
  });
});
