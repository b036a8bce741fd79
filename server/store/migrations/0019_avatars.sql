-- Profile pictures this node holds: the user's own (its bytes; the vault's `profile.avatar`
-- setting names the current one by hash, so the user's other devices know which to fetch)
-- and each contact's, fetched from the contact's devices over `/volli/relay/1` and fetched
-- again when the contact says it changed. This node's alone, not synced: the bytes are too
-- large for the vault's documents. One per user, 256 KiB at most (checked before it is
-- written); a contact's goes with the contact.
CREATE TABLE avatars (
    user_id    TEXT    PRIMARY KEY,
    -- BLAKE3 of `bytes`
    hash       BLOB    NOT NULL,
    mime       TEXT    NOT NULL,
    bytes      BLOB    NOT NULL,
    updated_at INTEGER NOT NULL
);
