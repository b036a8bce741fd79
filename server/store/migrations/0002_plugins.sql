-- Plugins the operator installed or configured, and their state.
-- Built-in plugins get a row once the operator changes something about them.
CREATE TABLE plugins (
    name         TEXT    PRIMARY KEY,
    builtin      INTEGER NOT NULL,
    enabled      INTEGER NOT NULL,
    -- JSON array of capability names the operator granted
    grants       TEXT    NOT NULL,
    -- JSON object set through the API, over the manifest's and the config file's values
    config       TEXT    NOT NULL DEFAULT '{}',
    -- JSON array of hosts the http capability may reach
    http_allow   TEXT    NOT NULL DEFAULT '[]',
    -- BLAKE3 of the installed component (installed plugins only)
    hash         TEXT,
    installed_at INTEGER NOT NULL
);

-- Plugin-private key-value storage (the kv capability).
CREATE TABLE plugin_kv (
    plugin TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  BLOB NOT NULL,
    PRIMARY KEY (plugin, key)
) WITHOUT ROWID;
