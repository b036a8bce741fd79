-- Revocations of devices, signed by their users: this user's own (also in the devices
-- document), contacts' (handed over by their devices) and group members' (carried in commits
-- and requests). A commit that removes a revoked device carries its revocation, so that every
-- member, knowing the user or not, can check it. Node-local, like the rest of the MLS state.
CREATE TABLE mls_revocations (
    user_id   TEXT    NOT NULL,
    peer      TEXT    NOT NULL,
    statement BLOB    NOT NULL,
    added_at  INTEGER NOT NULL,
    -- Per user: another user's statement about the same device says nothing of it.
    PRIMARY KEY (user_id, peer)
);
CREATE INDEX mls_revocations_user ON mls_revocations (user_id, added_at);

-- Who handed over mail that waits for its commit or Welcome, and its size: what one contact
-- can make this node hold is bounded.
ALTER TABLE mls_pending ADD COLUMN deliverer TEXT NOT NULL DEFAULT '';
ALTER TABLE mls_pending ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
CREATE INDEX mls_pending_deliverer ON mls_pending (deliverer);

-- A revoked client's push subscriptions go with it, in the same transaction, whatever path
-- deletes the client; and none is added for a client that is gone (a request authenticated a
-- moment before the revocation).
DELETE FROM push_subscriptions
    WHERE client_id IS NOT NULL AND client_id NOT IN (SELECT id FROM clients);
CREATE TRIGGER clients_delete_push AFTER DELETE ON clients
BEGIN
    DELETE FROM push_subscriptions WHERE client_id = OLD.id;
END;
CREATE TRIGGER push_subscriptions_live_client BEFORE INSERT ON push_subscriptions
    WHEN NEW.client_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM clients WHERE id = NEW.client_id)
BEGIN
    SELECT RAISE(ABORT, 'the client was revoked');
END;
