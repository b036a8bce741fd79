-- Backups held by friends (docs/adr/0021-backups-held-by-friends.md).
--
-- As a holder: pieces of contacts' backups, opaque bytes (shards of sealed blobs, and each
-- backup's sealed manifest under the all-zero piece id), filed under the backup's locator,
-- each with the contact that put it, whose quota (`[backup] offer_bytes`) it counts against.
-- Dropped with the contact, or when the contact keeps other pieces.
CREATE TABLE backup_held (
    locator   BLOB    NOT NULL,
    piece     BLOB    NOT NULL,
    owner     TEXT    NOT NULL,
    size      INTEGER NOT NULL,
    bytes     BLOB    NOT NULL,
    stored_at INTEGER NOT NULL,
    PRIMARY KEY (locator, piece)
);
CREATE INDEX backup_held_owner ON backup_held (owner);

-- As an owner: where this node's own backup stands (its holders, its blobs, its sequence
-- number), one encoded row written by the node after each refresh. No secret is in it: the
-- key that seals the backup is in identity/backup.key.
CREATE TABLE backup_state (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    state BLOB    NOT NULL
);
