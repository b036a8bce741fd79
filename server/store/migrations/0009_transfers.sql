-- File transfers, both directions. `offer` holds what the recipient needs (name, layout,
-- hashes, the file's key), so either side can resume after a restart.
CREATE TABLE transfers (
    id            BLOB    PRIMARY KEY,
    direction     TEXT    NOT NULL CHECK (direction IN ('outgoing', 'incoming')),
    peer          TEXT    NOT NULL,
    -- The other side's device this node deals with: the sender's (incoming).
    device        TEXT,
    name          TEXT    NOT NULL,
    size          INTEGER NOT NULL,
    chunk_size    INTEGER NOT NULL,
    list_hash     BLOB    NOT NULL,
    blake3        BLOB    NOT NULL,
    file_key      BLOB    NOT NULL,
    -- The sender's file on disk (outgoing, sent by path), or NULL when the chunks are in the
    -- file backend (uploads, and everything received).
    source        TEXT,
    -- The chunk list, once known (the sender has it from the start).
    list          BLOB,
    -- The sealed offer, as sent (outgoing).
    sealed_offer  BLOB,
    state         TEXT    NOT NULL,
    paused_here   INTEGER NOT NULL DEFAULT 0,
    paused_there  INTEGER NOT NULL DEFAULT 0,
    -- The offer reached the recipient (outgoing).
    delivered     INTEGER NOT NULL DEFAULT 0,
    -- A state change the other side has not heard of yet.
    notify        TEXT,
    bytes_done    INTEGER NOT NULL DEFAULT 0,
    error         TEXT,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX transfers_peer ON transfers (peer, direction);
CREATE INDEX transfers_state ON transfers (state);

-- Chunks of an incoming transfer that are stored and durable, with each one's part of the
-- whole-file hash; chunks of an outgoing upload that are stored.
CREATE TABLE transfer_chunks (
    transfer BLOB    NOT NULL,
    idx      INTEGER NOT NULL,
    cv       BLOB    NOT NULL,
    PRIMARY KEY (transfer, idx)
) WITHOUT ROWID;
