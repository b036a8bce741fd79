-- Receipts a recipient left at this node for the senders of messages it fetched here, kept
-- until each sender fetches and acknowledges them (or they expire).
CREATE TABLE relay_receipts (
    message_id BLOB    NOT NULL,
    sender     TEXT    NOT NULL,
    receipt    BLOB    NOT NULL,
    stored_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (message_id, sender)
);
CREATE INDEX relay_receipts_sender ON relay_receipts (sender, stored_at);
CREATE INDEX relay_receipts_expiry ON relay_receipts (expires_at);
