-- Search over every conversation: an FTS5 index of the `messages` index's text, kept in step
-- by triggers on `messages`, so whatever writes, deletes or empties a row (a new message, a
-- copy from another device, a delete, retention, an expiry, an edit) changes the search index
-- in the same transaction.
--
-- Contentless (`content=''`): the text is already in `messages`, so the index holds only
-- terms and row ids (`detail=none`: no positions, hence no phrase queries, which search
-- does not make) — a fraction of the text's size. Its row id is the `messages` row id, which
-- VACUUM keeps for a table with indexes. `contentless_delete=1` lets a row leave by its id.
-- Case and diacritics are folded by the tokenizer (`remove_diacritics 2`), for the text and
-- for the query alike.
CREATE VIRTUAL TABLE search USING fts5(
    body,
    content = '',
    contentless_delete = 1,
    detail = none,
    tokenize = 'unicode61 remove_diacritics 2'
);

-- Besides the text, each row is indexed with two terms no text can hold (they start with
-- U+E000, which is taken out of the text): its day (`\uE000d<days since 1970>`) and its
-- conversation (`\uE000c<user id>`). A word found in many messages is then read a day at
-- a time from the newest day on, and one conversation's matches are found by the index
-- alone, so neither costs a row lookup per match. `search_days` counts the indexed rows
-- of each day, so a search visits only days that have some.
CREATE TABLE search_days (
    day  INTEGER PRIMARY KEY,
    rows INTEGER NOT NULL
);

-- The build of the index for rows that existed before it (a vault of an earlier release):
-- rows with `rowid <= done` are indexed; rows in `(done, ceiling]` wait for the background
-- build (`Db::search_build`), which takes them in their state at that time; rows after
-- `ceiling` are indexed as they are written. A vault without messages is ready at once.
CREATE TABLE search_state (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    done    INTEGER NOT NULL,
    ceiling INTEGER NOT NULL
);
INSERT INTO search_state (id, done, ceiling)
    VALUES (1, 0, (SELECT COALESCE(MAX(rowid), 0) FROM messages));

-- A row is indexed while it has text and is not deleted (status 5).
CREATE TRIGGER search_insert AFTER INSERT ON messages
WHEN new.body <> '' AND new.status < 5
     AND (new.rowid <= (SELECT done FROM search_state)
          OR new.rowid > (SELECT ceiling FROM search_state))
BEGIN
    INSERT INTO search (rowid, body) VALUES (new.rowid,
        replace(new.body, char(57344), ' ')
        || ' ' || char(57344) || 'd' || (MAX(new.sent_at, 0) / 86400000)
        || ' ' || char(57344) || 'c' || new.conversation);
    INSERT INTO search_days (day, rows) VALUES (MAX(new.sent_at, 0) / 86400000, 1)
        ON CONFLICT (day) DO UPDATE SET rows = rows + 1;
END;

CREATE TRIGGER search_update AFTER UPDATE OF body, status ON messages
WHEN (old.body IS NOT new.body OR (old.status < 5) <> (new.status < 5))
     AND (new.rowid <= (SELECT done FROM search_state)
          OR new.rowid > (SELECT ceiling FROM search_state))
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

CREATE TRIGGER search_delete AFTER DELETE ON messages
WHEN old.body <> '' AND old.status < 5
     AND (old.rowid <= (SELECT done FROM search_state)
          OR old.rowid > (SELECT ceiling FROM search_state))
BEGIN
    DELETE FROM search WHERE rowid = old.rowid;
    UPDATE search_days SET rows = rows - 1 WHERE day = MAX(old.sent_at, 0) / 86400000;
    DELETE FROM search_days WHERE day = MAX(old.sent_at, 0) / 86400000 AND rows <= 0;
END;
