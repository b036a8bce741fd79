-- The terms of the search index, for spelling a word typed as a prefix out as the terms it
-- is the start of. FTS5 answers a prefix (`"wor"*`) by merging the whole list of rows of
-- every term it starts, whatever the LIMIT: about 6 ms for a word found in 70,000 of
-- 100,000 messages, at each of a search's queries. The same words as terms joined by OR
-- are read only as far as a query needs. `Db::search` looks the terms up here (a range of
-- this table is a seek in the index) and keeps `*` for a prefix of many terms.
CREATE VIRTUAL TABLE search_terms USING fts5vocab(search, row);
