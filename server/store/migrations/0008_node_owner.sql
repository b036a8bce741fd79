-- Whose data this database holds. A node that joins another user (pairing) starts that
-- user's data from nothing: see `Db::claim_for`.
CREATE TABLE node_owner (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    user_id TEXT    NOT NULL
);
