-- Messages this node's user sent that no device of the recipient has acknowledged yet.
-- The envelope is sealed once, so every retry and every relay carries the same bytes.
CREATE TABLE outbox (
    id              BLOB    PRIMARY KEY,
    recipient       TEXT    NOT NULL,
    envelope        BLOB    NOT NULL,
    body            TEXT    NOT NULL,
    sent_at         INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    relayed         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outbox_due ON outbox (next_attempt_at);
CREATE INDEX outbox_recipient ON outbox (recipient);

-- Envelopes this node holds for others, as a friend's blind mailbox.
CREATE TABLE relay_held (
    id         BLOB    PRIMARY KEY,
    recipient  TEXT    NOT NULL,
    depositor  TEXT    NOT NULL,
    envelope   BLOB    NOT NULL,
    size       INTEGER NOT NULL,
    stored_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX relay_held_recipient ON relay_held (recipient, stored_at);
CREATE INDEX relay_held_depositor ON relay_held (depositor);
CREATE INDEX relay_held_expiry ON relay_held (expires_at);

-- The contacts this node's user designated as relays (they agreed to hold mail for it).
CREATE TABLE relays_designated (
    user_id     TEXT    PRIMARY KEY,
    position    INTEGER NOT NULL,
    accepted_at INTEGER NOT NULL
);
