-- The vault as many small Loro documents instead of one (ADR 0008): `meta` (contacts,
-- settings, devices) and the chunks of each conversation, `c/<user id>/<n>`, of at most
-- about a thousand messages each. Only the documents being written are in memory; history is
-- read from the `messages` index. The single-document tables of 0001 (`vault_updates`,
-- `vault_snapshots`) are read once by the migration in `vault/migrate.rs` and then dropped.

CREATE TABLE vault_docs (
    id           TEXT    PRIMARY KEY,
    -- for conversation chunks: the other party's user id and the chunk's number
    conversation TEXT,
    chunk        INTEGER,
    -- the latest snapshot (NULL until the first compaction) and the remote updates that were
    -- still waiting for their dependencies when it was taken
    snapshot     BLOB,
    pending      BLOB,
    -- every log row of this document with seq <= upto_seq is contained in the snapshot
    upto_seq     INTEGER NOT NULL DEFAULT 0,
    -- the encoded Loro version vector of everything stored for this document
    version      BLOB    NOT NULL,
    -- for conversation chunks: messages and body bytes in it, to know when a chunk is full
    messages     INTEGER NOT NULL DEFAULT 0,
    bytes        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX vault_docs_conversation ON vault_docs (conversation, chunk);

-- Loro updates not yet folded into their document's snapshot.
CREATE TABLE vault_log (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    doc        TEXT    NOT NULL,
    bytes      BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX vault_log_doc ON vault_log (doc, seq);

-- Every message of every conversation, derived from the chunk documents in the same
-- transaction as their updates: history is paged from here, never from a document.
-- status: 0 queued, 1 relayed, 2 failed, 3 delivered, 4 received (a copy of a message held
-- in two chunks keeps the highest).
CREATE TABLE messages (
    id           BLOB    PRIMARY KEY,
    conversation TEXT    NOT NULL,
    sent_at      INTEGER NOT NULL,
    sender       TEXT    NOT NULL,
    recipient    TEXT    NOT NULL,
    body         TEXT    NOT NULL,
    status       INTEGER NOT NULL,
    doc          TEXT    NOT NULL
);
CREATE INDEX messages_page ON messages (conversation, sent_at, id);

-- Every Loro peer id this vault has written with: a fresh one each time the vault is opened,
-- so an id is never reused, not even by a restored backup or a copied data dir.
CREATE TABLE vault_peers (
    peer      INTEGER PRIMARY KEY,
    opened_at INTEGER NOT NULL
);

-- What each of the user's other devices has acknowledged, per document: sync sends what is
-- missing from here, and compaction keeps whatever a device that is behind still needs.
CREATE TABLE vault_acks (
    device  TEXT NOT NULL,
    doc     TEXT NOT NULL,
    version BLOB NOT NULL,
    PRIMARY KEY (device, doc)
) WITHOUT ROWID;
