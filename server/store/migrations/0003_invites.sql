-- Invites this node issued. The secret itself is never stored, only its keyed hash.
CREATE TABLE invites (
    id         BLOB    PRIMARY KEY,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    max_uses   INTEGER NOT NULL,
    uses       INTEGER NOT NULL DEFAULT 0
);

-- Who redeemed which invite, so a redeemer retrying after a lost answer succeeds again.
CREATE TABLE invite_redemptions (
    invite_id   BLOB    NOT NULL REFERENCES invites (id) ON DELETE CASCADE,
    user_id     TEXT    NOT NULL,
    redeemed_at INTEGER NOT NULL,
    PRIMARY KEY (invite_id, user_id)
);

-- Invites this node accepted while the inviter was unreachable; retried until they
-- succeed, fail for good, or expire.
CREATE TABLE pending_contacts (
    inviter         TEXT    PRIMARY KEY,
    link            TEXT    NOT NULL,
    name            TEXT,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT
);
