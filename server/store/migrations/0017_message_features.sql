-- Messages as people expect them: what a message is besides its text, derived (like the rest
-- of this table) from the conversation's chunk documents and written in the same transaction.
--   kind        text, file or system (a line such as "Carol was added")
--   reply_to    the message it answers (hex id)
--   edited_at   when its author last edited it (the body is the latest text)
--   unsent      deleted for everyone by its author: listed as a tombstone, no text
--   expires_at  when it disappears from every device (a conversation's timer)
--   timer       for a system line that set a conversation's timer: its seconds (0: off)
--   extra       reactions, a file's details, a system line's details (JSON)
ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'text';
ALTER TABLE messages ADD COLUMN reply_to TEXT;
ALTER TABLE messages ADD COLUMN edited_at INTEGER;
ALTER TABLE messages ADD COLUMN unsent INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN expires_at INTEGER;
ALTER TABLE messages ADD COLUMN timer INTEGER;
ALTER TABLE messages ADD COLUMN extra TEXT NOT NULL DEFAULT '';
CREATE INDEX messages_expiry ON messages (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX messages_timer ON messages (conversation, sent_at) WHERE timer IS NOT NULL;

-- How far each reader has read in each conversation (this user on any of its devices, and
-- the others who sent read receipts): the newest message marked as read by it. Unread
-- counts and "read" ticks come from here.
CREATE TABLE read_marks (
    conversation TEXT    NOT NULL,
    reader       TEXT    NOT NULL,
    sent_at      INTEGER NOT NULL,
    id           BLOB    NOT NULL,
    PRIMARY KEY (conversation, reader)
);

-- What an outbox row carries when it is not a plain text (a reply, a reaction, an edit, a
-- read receipt, a timer...): the content, to be sealed again when the recipient asks.
ALTER TABLE outbox ADD COLUMN content BLOB;

-- What each contact's node reads (the message kinds of a release), as it last said: kept so
-- that a reply sent while the contact is offline after a restart is not sent as plain text.
CREATE TABLE contact_features (
    user_id    TEXT    PRIMARY KEY,
    features   INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- A group file's sender sees each member that fetches from it: its state (offered, running,
-- completed, declined, cancelled) and how much it fetched. The transfer completes once every
-- member who accepted has it; declines do not hold it open.
ALTER TABLE transfer_members ADD COLUMN state TEXT NOT NULL DEFAULT 'offered';
ALTER TABLE transfer_members ADD COLUMN bytes_done INTEGER NOT NULL DEFAULT 0;
