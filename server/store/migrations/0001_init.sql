-- The Loro vault: an append-only log of updates plus the latest snapshot.
-- Opening the vault imports the snapshot, its pending sidecar, then every later update.
CREATE TABLE vault_updates (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    bytes      BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE vault_snapshots (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    -- every update with seq <= upto_seq is contained in this snapshot
    upto_seq   INTEGER NOT NULL,
    snapshot   BLOB    NOT NULL,
    -- remote updates still waiting for causal dependencies when the snapshot was taken
    pending    BLOB,
    created_at INTEGER NOT NULL
);
