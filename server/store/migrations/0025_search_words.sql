-- The words of the search index, for spelling a word typed out as the terms it is the start
-- of (`Db::search`). `search_terms` (an `fts5vocab` table, 0023) lists them too, but counts
-- each term's rows as it reads it: 1.8–2.0 ms for a word found in 70,000 of 100,000
-- messages, the largest part of a search for it. `search_words` is a plain table of the
-- words, looked up by a seek.
--
-- Its words are the tokenizer's own: text being indexed is also put into `search_scratch`
-- (an index like `search`, emptied at once), whose terms are copied here. A word stays until
-- the index is merged after an erase (`Db::drop_free_pages`), which deletes the words the
-- merged index no longer has, so the words of deleted text leave the file with it.
-- Meanwhile a word no row has any more only adds a term that matches nothing.
CREATE TABLE search_words (
    term TEXT PRIMARY KEY
) WITHOUT ROWID;

CREATE VIRTUAL TABLE search_scratch USING fts5(
    body,
    content = '',
    detail = none,
    tokenize = 'unicode61 remove_diacritics 2'
);
CREATE VIRTUAL TABLE search_scratch_terms USING fts5vocab(search_scratch, row);

-- The words of what is indexed already (the terms that start with U+E000 are a row's day and
-- conversation, never typed).
INSERT INTO search_words (term)
    SELECT term FROM search_terms WHERE substr(term, 1, 1) <> char(57344);

-- An edit of an indexed row brings its words along: beside `search_update` (0022), which
-- indexes the new text under the same condition, when there is text.
CREATE TRIGGER search_update_words AFTER UPDATE OF body, status ON messages
WHEN (old.body IS NOT new.body OR (old.status < 5) <> (new.status < 5))
     AND (new.rowid <= (SELECT done FROM search_state)
          OR new.rowid > (SELECT ceiling FROM search_state))
     AND NOT EXISTS (SELECT 1 FROM search_queue WHERE rowid = new.rowid)
     AND new.body <> '' AND new.status < 5
BEGIN
    INSERT INTO search_scratch (rowid, body)
        VALUES (new.rowid, replace(new.body, char(57344), ' '));
    -- Not `OR IGNORE`: the statement that fires a trigger decides its conflicts (an upsert
    -- of `messages` would fail on a word known already).
    INSERT INTO search_words (term) SELECT t.term FROM search_scratch_terms t
        WHERE NOT EXISTS (SELECT 1 FROM search_words w WHERE w.term = t.term);
    INSERT INTO search_scratch (search_scratch) VALUES ('delete-all');
END;
