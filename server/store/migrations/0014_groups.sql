-- Group conversations. Outbox rows of a group carry its id: delivered to each member user like
-- one-to-one mail, through a member who is the recipient's contact when this user is not.
ALTER TABLE outbox ADD COLUMN grp TEXT;

-- How far each of this user's group messages got with each member (per-member receipts).
-- Belongs to this device (the one that sent); statuses only move forward.
CREATE TABLE group_receipts (
    message BLOB    NOT NULL,
    user_id TEXT    NOT NULL,
    status  INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    PRIMARY KEY (message, user_id)
);
