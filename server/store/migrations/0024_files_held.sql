-- Files through friends (ADR 0022): what this node holds for a contact's offline contact,
-- and, on the sender and the recipient, which friends hold a transfer.

-- A file a contact (`depositor`) left here for `recipient`, who designated this node as a
-- relay. `offer` is sealed to the recipient; `list` names the ciphertext chunks; `bytes` is
-- the ciphertext it will take whole (what counts against the depositor's allowance).
CREATE TABLE held_files (
    id         BLOB    PRIMARY KEY,
    depositor  TEXT    NOT NULL,
    recipient  TEXT    NOT NULL,
    offer      BLOB    NOT NULL,
    size       INTEGER NOT NULL,
    chunk_size INTEGER NOT NULL,
    list       BLOB    NOT NULL,
    chunks     INTEGER NOT NULL,
    bytes      INTEGER NOT NULL,
    stored_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX held_files_recipient ON held_files (recipient);
CREATE INDEX held_files_depositor ON held_files (depositor);

-- Its ciphertext chunks, each checked against its name in `list`; they go with the file.
CREATE TABLE held_file_chunks (
    id    BLOB    NOT NULL REFERENCES held_files (id) ON DELETE CASCADE,
    idx   INTEGER NOT NULL,
    bytes BLOB    NOT NULL,
    PRIMARY KEY (id, idx)
) WITHOUT ROWID;

-- Friends that hold a transfer for its recipient (`held`: every chunk is there).
CREATE TABLE transfer_holders (
    transfer BLOB    NOT NULL,
    user_id  TEXT    NOT NULL,
    held     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (transfer, user_id)
);
