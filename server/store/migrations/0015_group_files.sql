-- Files offered to a group: one offer, sealed once in the group, fetched by every member.
-- `grp` names the group on the sender's row and on each member's.
ALTER TABLE transfers ADD COLUMN grp TEXT;

-- The members a group file was offered to who fetch it from this node (those who are this
-- user's contacts), and whether they reported having it whole.
CREATE TABLE transfer_members (
    transfer BLOB    NOT NULL,
    user_id  TEXT    NOT NULL,
    done     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (transfer, user_id)
);
