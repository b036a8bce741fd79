-- New rows reach the search index in batches instead of one commit at a time.
--
-- FTS5 writes a segment (and rewrites its structure record) at every commit that changed
-- it; the vault commits each message sent or received on its own, so indexing it there cost
-- about 7 % of the throughput of messages between two nodes. A new row is now only queued
-- (`search_queue`, its row id); `Db::search_flush` indexes what is queued in one
-- transaction — in the background a moment after the vault's commits, and before every
-- search, so a search still finds every message stored before it.
--
-- A queued row is taken in its state at flush time: an edit, a delete or an expiry before
-- then changes only `messages`, and the update and delete triggers leave the index alone
-- for it (it is not in it yet).
CREATE TABLE search_queue (
    rowid INTEGER PRIMARY KEY
);

DROP TRIGGER search_insert;
DROP TRIGGER search_update;
DROP TRIGGER search_delete;

CREATE TRIGGER search_insert AFTER INSERT ON messages
WHEN new.body <> '' AND new.status < 5
     AND (new.rowid <= (SELECT done FROM search_state)
          OR new.rowid > (SELECT ceiling FROM search_state))
BEGIN
    INSERT OR IGNORE INTO search_queue (rowid) VALUES (new.rowid);
END;

CREATE TRIGGER search_update AFTER UPDATE OF body, status ON messages
WHEN (old.body IS NOT new.body OR (old.status < 5) <> (new.status < 5))
     AND (new.rowid <= (SELECT done FROM search_state)
          OR new.rowid > (SELECT ceiling FROM search_state))
     AND NOT EXISTS (SELECT 1 FROM search_queue WHERE rowid = new.rowid)
BEGIN
    DELETE FROM search WHERE rowid = old.rowid AND old.body <> '' AND old.status < 5;
    UPDATE search_days SET rows = rows - 1
        WHERE day = MAX(old.sent_at, 0) / 86400000 AND old.body <> '' AND old.status < 5;
    INSERT INTO search (rowid, body)
        SELECT new.rowid,
            replace(new.body, char(57344), ' ')
            || ' ' || char(57344) || 'd' || (MAX(new.sent_at, 0) / 86400000)
            || ' ' || char(57344) || 'c' || new.conversation
        WHERE new.body <> '' AND new.status < 5;
    INSERT INTO search_days (day, rows)
        SELECT MAX(new.sent_at, 0) / 86400000, 1 WHERE new.body <> '' AND new.status < 5
        ON CONFLICT (day) DO UPDATE SET rows = rows + 1;
    DELETE FROM search_days WHERE day = MAX(old.sent_at, 0) / 86400000 AND rows <= 0;
END;

-- One trigger for a deleted row, so the order of its steps is fixed (SQLite runs separate
-- triggers on one event in an order of its own): the index and the day counts first, for a
-- row that is in the index (not queued), then the queue.
CREATE TRIGGER search_delete AFTER DELETE ON messages
BEGIN
    DELETE FROM search WHERE rowid = old.rowid
        AND old.body <> '' AND old.status < 5
        AND (old.rowid <= (SELECT done FROM search_state)
             OR old.rowid > (SELECT ceiling FROM search_state))
        AND NOT EXISTS (SELECT 1 FROM search_queue WHERE rowid = old.rowid);
    UPDATE search_days SET rows = rows - 1
        WHERE day = MAX(old.sent_at, 0) / 86400000
        AND old.body <> '' AND old.status < 5
        AND (old.rowid <= (SELECT done FROM search_state)
             OR old.rowid > (SELECT ceiling FROM search_state))
        AND NOT EXISTS (SELECT 1 FROM search_queue WHERE rowid = old.rowid);
    DELETE FROM search_days WHERE day = MAX(old.sent_at, 0) / 86400000 AND rows <= 0;
    DELETE FROM search_queue WHERE rowid = old.rowid;
END;
