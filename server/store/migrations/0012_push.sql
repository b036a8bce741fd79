-- Web Push: this node's VAPID key (RFC 8292) and the subscriptions clients registered
-- (RFC 8030 endpoints with their RFC 8291 keys). Node-local, like the clients they belong to.
CREATE TABLE push_vapid (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    private_key BLOB    NOT NULL
);

CREATE TABLE push_subscriptions (
    id           TEXT    PRIMARY KEY,
    -- The client that registered it (NULL: the admin token or an admin page session);
    -- revoking the client drops its subscriptions.
    client_id    TEXT,
    endpoint     TEXT    NOT NULL UNIQUE,
    p256dh       BLOB    NOT NULL,
    auth         BLOB    NOT NULL,
    include_text INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL
);
