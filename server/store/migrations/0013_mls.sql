-- Conversations on MLS. Everything here belongs to this device alone: it is never synced to
-- the user's other devices and never put into a backup.

-- This device's MLS state (groups, epochs, its own key packages), as the volli-mls crate keys
-- it. Written in the same transaction as the messages it goes with.
CREATE TABLE mls_state (
    key   BLOB PRIMARY KEY,
    value BLOB NOT NULL
);

-- Key packages other devices (contacts' and the user's own) handed this node, to add them to
-- conversations: a one-time package is used once and deleted; a device's last-resort
-- package is kept, the newest only.
CREATE TABLE mls_key_packages (
    reference   BLOB    PRIMARY KEY,
    peer        TEXT    NOT NULL,
    user_id     TEXT    NOT NULL,
    last_resort INTEGER NOT NULL,
    package     BLOB    NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX mls_key_packages_peer ON mls_key_packages (peer, last_resort, received_at);

-- MLS messages that arrived before what they depend on (a commit of an earlier epoch, the
-- Welcome into their group). They were acknowledged, so they are kept until they can be
-- processed, or until they expire.
CREATE TABLE mls_pending (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id    BLOB    NOT NULL,
    epoch       INTEGER NOT NULL,
    mail        BLOB    NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX mls_pending_group ON mls_pending (group_id, epoch, seq);

-- The commits (with the proposals they include) that started each recent epoch, for a member
-- device that missed them.
CREATE TABLE mls_commits (
    group_id   BLOB    NOT NULL,
    epoch      INTEGER NOT NULL,
    messages   BLOB    NOT NULL,
    stored_at  INTEGER NOT NULL,
    PRIMARY KEY (group_id, epoch)
);

-- Handshake mail (commits, proposals, Welcomes) is for one device of the recipient, and is not
-- a message of the conversation.
ALTER TABLE outbox ADD COLUMN device TEXT;
ALTER TABLE outbox ADD COLUMN handshake INTEGER NOT NULL DEFAULT 0;

-- Mail held for one device of the recipient is served to that device only.
ALTER TABLE relay_held ADD COLUMN device TEXT;
