-- Client tokens of this node (phones, browsers, scripts), each limited to its scopes. Only
-- the token's hash is kept; the token itself was shown once, when the client was created.
-- They belong to this node, not to the user's synced vault.
CREATE TABLE clients (
    id           TEXT    PRIMARY KEY,
    name         TEXT    NOT NULL,
    scopes       TEXT    NOT NULL,
    token_hash   BLOB    NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER
);
