//! Search over every conversation: an SQLite FTS5 index beside the `messages` index
//! (migration `0018_search.sql`), kept in step by triggers on `messages`: a new row is
//! queued by the transaction that stores it and indexed in a batch a moment later, or
//! before the next search, whichever comes first (`0022_search_queue.sql`); an indexed row
//! leaves the index in the transaction that deletes it, whichever path that is (a delete,
//! retention, an expiry, a copy from another device).
//!
//! This module turns a person's text into an FTS5 query (words, each a prefix; case and
//! diacritics folded), reads results newest first, builds the index in batches for rows that
//! existed before it, and makes snippets. It does not know conversations' names or groups.

use std::collections::HashMap;

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension as _, params, params_from_iter};
use sqlx::Row as _;
use unicode_normalization::UnicodeNormalization as _;
use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory as _};
use volli_core::{MessageId, Timestamp, UserId};

use crate::vault::StoredMessage;
use crate::{Db, StoreError};

/// Longest query, in bytes after trimming.
pub const MAX_QUERY_BYTES: usize = 256;
/// Most words a query is made of (each costs a term lookup).
pub const MAX_WORDS: usize = 16;
/// Most results in one page.
pub const MAX_RESULTS: u32 = 100;
/// Queued rows indexed per write transaction, at most.
const FLUSH_BATCH: u32 = 2_000;
/// Characters of a snippet, about.
const SNIPPET_CHARS: usize = 96;

/// Why a query cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// Nothing to search for.
    #[error("the search query is empty")]
    Empty,
    /// Longer than [`MAX_QUERY_BYTES`].
    #[error("the search query is longer than {MAX_QUERY_BYTES} bytes")]
    TooLong,
    /// Letters or digits are needed: punctuation alone matches nothing.
    #[error("the search query has no words (letters or digits)")]
    NoWords,
    /// More than [`MAX_WORDS`] words.
    #[error("the search query has more than {MAX_WORDS} words")]
    TooManyWords,
}

/// A person's search text, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The words, folded as the index folds them.
    words: Vec<String>,
}

/// Whether the FTS5 `unicode61` tokenizer (default categories `L* N* Co`) keeps `c` in a
/// word: the query is split where the index's text is, so no quoted word becomes a phrase.
/// SQLite's tables are of an older Unicode: these New Tai Lue vowel signs and Vedic signs
/// are combining marks there, which split words, and letters in Rust's.
fn is_word_char(c: char) -> bool {
    c != MARK
        && !matches!(c, '\u{19B0}'..='\u{19C0}' | '\u{19C8}'..='\u{19C9}' | '\u{1CF2}'..='\u{1CF3}')
        && (c.is_ascii_alphanumeric()
            || (!c.is_ascii()
                && (matches!(
                    c.general_category_group(),
                    GeneralCategoryGroup::Letter | GeneralCategoryGroup::Number
                ) || c.general_category() == GeneralCategory::PrivateUse)))
}

/// What starts the terms a row is indexed with besides its text (its day, its
/// conversation): a private-use character, taken out of the text (see `0018_search.sql`).
const MARK: char = '\u{E000}';
/// Milliseconds in a day: rows are indexed with `sent_at / DAY` (0 for times before 1970).
const DAY: i64 = 86_400_000;
/// A query that matches at most this many rows is answered by reading them all and keeping
/// the newest; one that matches more, a day at a time from the newest.
const FEW: i64 = 250;
/// Days read by one query at most, when reading a day at a time.
const MOST_DAYS: usize = 256;
/// Days (and their rows) fetched at a time for reading a day at a time.
const DAYS_READ: usize = 256;
/// Reads of a few days each that one page makes at most; the rest of the page is read from
/// every older match at once (a contact sets the times of its messages: spread over many
/// days, they would otherwise make a search of hundreds of statements in one snapshot).
const MOST_READS: usize = 8;
/// Most terms a word typed is spelled out as; a prefix of more stays a prefix.
const MOST_TERMS: usize = 32;
/// Longest term spelled out, in bytes; a prefix of a longer one stays a prefix.
const MAX_TERM_BYTES: usize = 64;

/// The term a row of conversation `conversation` is indexed with.
fn conversation_term(conversation: &UserId) -> String {
    format!("\"{MARK}c{}\"", conversation.to_string().to_lowercase())
}

/// The term a row sent on `day` is indexed with.
fn day_term(day: i64) -> String {
    format!("\"{MARK}d{day}\"")
}

/// Folds a word as `remove_diacritics 2` does, about: lower case, without combining marks.
fn fold(word: &str) -> String {
    // ASCII has nothing to decompose and no combining marks (most words of most texts:
    // every result's words are folded for its snippet).
    if word.is_ascii() {
        return word.to_ascii_lowercase();
    }
    word.nfd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The words of `text`, with their byte ranges.
fn words(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut rest = text.char_indices().peekable();
    std::iter::from_fn(move || {
        while rest.peek().is_some_and(|(_, c)| !is_word_char(*c)) {
            rest.next();
        }
        let (start, _) = *rest.peek()?;
        let mut end = start;
        while let Some((i, c)) = rest.peek().copied() {
            if !is_word_char(c) {
                break;
            }
            end = i + c.len_utf8();
            rest.next();
        }
        Some((start, &text[start..end]))
    })
}

/// The first string after every string that starts with `word`: its last character that is
/// not the last of all, one further on, and nothing after it (a term may hold any character
/// the tokenizer keeps, U+10FFFF included, so `word` followed by U+10FFFF is not enough).
fn after(word: &str) -> Option<String> {
    let mut chars: Vec<char> = word.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match u32::from(last) + 1 {
            0xD800 => Some('\u{E000}'),
            n => char::from_u32(n),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// `word` as an FTS5 prefix: every term it is the start of.
fn prefix(word: &str) -> String {
    format!("{}*", quoted(word))
}

/// `term` as an FTS5 string.
fn quoted(term: &str) -> String {
    format!("\"{}\"", term.replace('"', "\"\""))
}

/// The FTS5 expression for `word` given the terms of the index it is the start of
/// (`search_words`, `0025_search_words.sql`): those terms, joined by OR, when there are a
/// few; the prefix itself when there are many (they were cut at `MOST_TERMS + 1`) or none
/// (the index's folding of the word may differ from [`fold`]'s: let FTS5 fold it).
fn spelled_out(word: &str, terms: &[String]) -> String {
    if terms.is_empty() || terms.len() > MOST_TERMS {
        return prefix(word);
    }
    let terms: Vec<String> = terms.iter().map(|t| quoted(t)).collect();
    format!("({})", terms.join(" OR "))
}

impl Query {
    /// Parses what a person typed: its words, each matched as the start of a word of a
    /// message, all of them in the same message. FTS5's own syntax is not taken from the
    /// text (`"`, `*`, `AND`, `NEAR` are words or separators like any other).
    pub fn parse(text: &str) -> Result<Self, QueryError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(QueryError::Empty);
        }
        if text.len() > MAX_QUERY_BYTES {
            return Err(QueryError::TooLong);
        }
        let mut out: Vec<String> = Vec::new();
        for (_, word) in words(text) {
            let folded = fold(word);
            if !folded.is_empty() && !out.contains(&folded) {
                out.push(folded);
            }
        }
        if out.is_empty() {
            return Err(QueryError::NoWords);
        }
        if out.len() > MAX_WORDS {
            return Err(QueryError::TooManyWords);
        }
        Ok(Self { words: out })
    }

    /// A short piece of `body` around the first word that matches, and where the matching
    /// words are in it.
    pub fn snippet(&self, body: &str) -> Snippet {
        let matching: Vec<(usize, usize)> = words(body)
            .filter(|(_, w)| {
                let folded = fold(w);
                self.words.iter().any(|q| folded.starts_with(q.as_str()))
            })
            .map(|(start, w)| (start, start + w.len()))
            .collect();
        let first = matching.first().map_or(0, |(start, _)| *start);
        // A window of about SNIPPET_CHARS characters, a third of it before the first match.
        let chars: Vec<(usize, char)> = body.char_indices().collect();
        let at = chars.partition_point(|(i, _)| *i < first);
        let from = at.saturating_sub(SNIPPET_CHARS / 3);
        let to = (from + SNIPPET_CHARS).min(chars.len());
        let from = to.saturating_sub(SNIPPET_CHARS).min(from);
        let start = chars.get(from).map_or(body.len(), |(i, _)| *i);
        let end = chars.get(to).map_or(body.len(), |(i, _)| *i);
        let mut text = String::new();
        let lead = if start > 0 { "…" } else { "" };
        text.push_str(lead);
        text.push_str(body[start..end].trim_end_matches('\n'));
        let cut = text.len();
        if end < body.len() {
            text.push('…');
        }
        // Offsets in UTF-16 code units, as clients' string functions count them.
        let utf16 = |byte: usize| -> usize {
            let in_text = lead.len() + byte - start;
            text[..in_text].encode_utf16().count()
        };
        let highlights = matching
            .into_iter()
            .filter(|(s, e)| *s >= start && lead.len() + *e - start <= cut)
            .map(|(s, e)| (utf16(s), utf16(e)))
            .collect();
        Snippet { text, highlights }
    }
}

/// A piece of a message's text for a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snippet {
    /// The text, with `…` where it was cut.
    pub text: String,
    /// Where the matching words are in it: `[start, end)` in UTF-16 code units.
    pub highlights: Vec<(usize, usize)>,
}

/// What to search and which page.
#[derive(Debug, Clone)]
pub struct Search {
    /// The words.
    pub query: Query,
    /// Only this conversation (a contact's user id, or a group's conversation key).
    pub conversation: Option<UserId>,
    /// Only messages older than this one (the last of the previous page).
    pub before: Option<MessageId>,
    /// At most this many, 1 to [`MAX_RESULTS`].
    pub limit: u32,
}

/// What a search found: the messages, and how far each reader read in each of their
/// conversations (their read ticks and `read_by`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// The messages, newest first.
    pub hits: Vec<Hit>,
    /// Each reader's read mark in each conversation of `hits`, by conversation.
    pub marks: HashMap<UserId, Vec<(UserId, Timestamp)>>,
}

/// One message found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The conversation it is in: a contact's user id or a group's conversation key.
    pub conversation: UserId,
    /// The message.
    pub message: StoredMessage,
}

/// How far the index is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Rows of the messages index looked at by the build.
    pub indexed: u64,
    /// Rows the build has to look at.
    pub total: u64,
}

impl Progress {
    /// Whether every row is in the index.
    pub fn ready(&self) -> bool {
        self.indexed >= self.total
    }
}

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SearchError {
    /// `before` names no stored message.
    #[error("`before` is not a stored message")]
    UnknownCursor,
    /// SQLite failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// User ids read back from their text once per search: a page names the same few users
/// over and over (sender, recipient, conversation, readers), and reading one is a base-58
/// decoding.
#[derive(Default)]
struct Users(HashMap<String, Option<UserId>>);

impl Users {
    fn get(&mut self, text: &str) -> Option<UserId> {
        if let Some(user) = self.0.get(text) {
            return *user;
        }
        let user = text.parse().ok();
        self.0.insert(text.to_owned(), user);
        user
    }
}

/// A row of [`newest`] as a hit; `None` for a row that does not parse.
fn hit(r: &rusqlite::Row<'_>, users: &mut Users) -> rusqlite::Result<Option<Hit>> {
    let conversation: String = r.get(12)?;
    let message =
        crate::vault::index::message_with(crate::vault::index::message_row(r)?, &mut |text| {
            users.get(text)
        });
    Ok(users
        .get(&conversation)
        .zip(message)
        .map(|(conversation, message)| Hit {
            conversation,
            message,
        }))
}

impl Db {
    /// Messages whose text has every word of the query (each as the start of a word), newest
    /// first, never deleted ones. Rows the background build has not reached yet are not
    /// found.
    pub async fn search(&self, search: &Search) -> Result<Page, SearchError> {
        // Every statement of a search runs in a row on one reader, called directly on a
        // blocking thread (ADR 0023). What was stored before the search is found by it: the
        // statement that spells the words out also says whether rows wait to be indexed;
        // then they are indexed first, and the search starts again.
        let first = search.clone();
        if let Some(hits) = self.direct().run(move |c| find(c, &first, true)).await? {
            return Ok(hits);
        }
        self.search_flush().await?;
        let again = search.clone();
        Ok(self
            .direct()
            .run(move |c| find(c, &again, false))
            .await?
            .unwrap_or_default())
    }

    /// How far the index is built.
    pub async fn search_progress(&self) -> Result<Progress, StoreError> {
        let row = sqlx::query(
            "SELECT \
               (SELECT COUNT(*) FROM messages, search_state \
                  WHERE messages.rowid <= search_state.ceiling) AS total, \
               (SELECT COUNT(*) FROM messages, search_state \
                  WHERE messages.rowid <= MIN(search_state.done, search_state.ceiling)) AS indexed",
        )
        .fetch_one(self.pool())
        .await?;
        let count = |name: &str| -> Result<u64, StoreError> {
            Ok(u64::try_from(row.try_get::<i64, _>(name)?).unwrap_or(0))
        };
        Ok(Progress {
            indexed: count("indexed")?,
            total: count("total")?,
        })
    }

    /// Indexes the next `batch` rows that existed before the index (in one short write
    /// transaction, so the vault's commits go on between batches); returns how many rows it
    /// looked at, 0 once the index is whole.
    pub async fn search_build(&self, batch: u32) -> Result<u64, StoreError> {
        let mut tx = self.writer().begin().await?;
        let (done, ceiling): (i64, i64) =
            sqlx::query_as("SELECT done, ceiling FROM search_state WHERE id = 1")
                .fetch_one(&mut *tx)
                .await?;
        if done >= ceiling {
            return Ok(0);
        }
        // The rows after `done`, up to `batch` of them: row ids may have gaps.
        let upto: Option<(i64, i64)> = sqlx::query_as(
            "SELECT MAX(rowid), COUNT(*) FROM (SELECT rowid FROM messages \
             WHERE rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?)",
        )
        .bind(done)
        .bind(ceiling)
        .bind(batch.max(1))
        .fetch_optional(&mut *tx)
        .await?;
        let (upto, looked) = match upto {
            Some((upto, n)) if n > 0 => (upto, n),
            _ => (ceiling, 0),
        };
        index_rows(
            &mut tx,
            "FROM messages m WHERE m.rowid > ?1 AND m.rowid <= ?2",
            &[done, upto],
        )
        .await?;
        sqlx::query("UPDATE search_state SET done = ? WHERE id = 1")
            .bind(upto)
            .execute(&mut *tx)
            .await?;
        if upto >= ceiling {
            // Built: the segments its batches wrote merged into one, which a query reads
            // instead of one per batch (a tenth of a second per 100,000 messages), with the
            // last batch, so a build is never left unmerged.
            sqlx::query("INSERT INTO search (search) VALUES ('optimize')")
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(u64::try_from(looked).unwrap_or(0).max(1))
    }

    /// Indexes the rows queued since the last flush (`0022_search_queue.sql`) in their
    /// state now, [`FLUSH_BATCH`] rows per write transaction (the vault's commits share the
    /// writer and go on between them); returns how many rows it took off the queue.
    pub async fn search_flush(&self) -> Result<u64, StoreError> {
        let mut taken = 0;
        loop {
            let n = self.search_flush_batch().await?;
            taken += n;
            if n < u64::from(FLUSH_BATCH) {
                return Ok(taken);
            }
            tokio::task::yield_now().await;
        }
    }

    /// The first [`FLUSH_BATCH`] queued rows, indexed in one transaction.
    async fn search_flush_batch(&self) -> Result<u64, StoreError> {
        let (queued,): (bool,) = sqlx::query_as("SELECT EXISTS (SELECT 1 FROM search_queue)")
            .fetch_one(self.pool())
            .await?;
        if !queued {
            return Ok(0);
        }
        let mut tx = self.writer().begin().await?;
        let (upto,): (Option<i64>,) = sqlx::query_as(
            "SELECT MAX(rowid) FROM (SELECT rowid FROM search_queue ORDER BY rowid LIMIT ?)",
        )
        .bind(FLUSH_BATCH)
        .fetch_one(&mut *tx)
        .await?;
        let Some(upto) = upto else {
            return Ok(0);
        };
        index_rows(
            &mut tx,
            "FROM search_queue q JOIN messages m ON m.rowid = q.rowid WHERE q.rowid <= ?1",
            &[upto],
        )
        .await?;
        let taken = sqlx::query("DELETE FROM search_queue WHERE rowid <= ?")
            .bind(upto)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(taken)
    }

    /// Bytes the search index takes in the file, and bytes of the text it indexes (for the
    /// figures: what the index costs beside the text).
    pub async fn search_size(&self) -> Result<(u64, u64), StoreError> {
        let (index,): (Option<i64>,) = sqlx::query_as(
            "SELECT SUM(pgsize) FROM dbstat WHERE name = 'search' OR name LIKE 'search\\_%' ESCAPE '\\'",
        )
        .fetch_one(self.pool())
        .await?;
        let (text,): (Option<i64>,) =
            sqlx::query_as("SELECT SUM(LENGTH(CAST(body AS BLOB))) FROM messages WHERE status < 5")
                .fetch_one(self.pool())
                .await?;
        let size = |n: Option<i64>| u64::try_from(n.unwrap_or(0)).unwrap_or(0);
        Ok((size(index), size(text)))
    }
}

/// [`Db::search`] on `conn`; `None` when `queued` asks whether rows wait to be indexed and
/// some do (the words of those rows may not be in the word list yet).
///
/// Every statement reads in one read transaction: the count, the days, the pages and the
/// read marks all see the vault as it was when the first of them ran (a message stored or
/// deleted meanwhile is wholly in or wholly out, and the marks are those of the results).
fn find(conn: &Connection, search: &Search, queued: bool) -> Result<Option<Page>, SearchError> {
    let read = conn.unchecked_transaction().map_err(StoreError::from)?;
    let mut users = Users::default();
    let Some(hits) = hits(&read, search, queued, &mut users)? else {
        return Ok(None);
    };
    let mut conversations: Vec<UserId> = hits.iter().map(|h| h.conversation).collect();
    conversations.sort_unstable();
    conversations.dedup();
    let marks =
        crate::vault::index::read_marks_in(&read, &conversations, &mut |text| users.get(text))?;
    // Nothing was written: ending the read is all a commit does here.
    read.commit().map_err(StoreError::from)?;
    Ok(Some(Page { hits, marks }))
}

/// The messages of [`find`].
fn hits(
    conn: &Connection,
    search: &Search,
    queued: bool,
    users: &mut Users,
) -> Result<Option<Vec<Hit>>, SearchError> {
    let Some(mut scope) = spell_out(conn, &search.query, queued)? else {
        return Ok(None);
    };
    let cursor = match search.before {
        Some(id) => {
            let at: Option<i64> = conn
                .prepare_cached("SELECT sent_at FROM messages WHERE id = ? AND status < 5")
                .and_then(|mut s| s.query_row([&id.as_bytes()[..]], |r| r.get(0)).optional())
                .map_err(StoreError::from)?;
            Some((at.ok_or(SearchError::UnknownCursor)?, id))
        }
        None => None,
    };
    if let Some(conversation) = &search.conversation {
        scope.push_str(" AND ");
        scope.push_str(&conversation_term(conversation));
    }
    let limit = search.limit.clamp(1, MAX_RESULTS);
    let last_day = cursor.map_or(i64::MAX, |(sent_at, _)| sent_at.max(0) / DAY);
    // How many rows match, up to FEW + 1, and the row ids of the newest written and the
    // last of them (how densely the index's recent rows match: which days a page needs).
    let (matches, lowest, highest): (i64, Option<i64>, Option<i64>) = conn
        .prepare_cached(
            "SELECT COUNT(*), MIN(rowid), MAX(rowid) FROM \
               (SELECT rowid FROM search WHERE search MATCH ? ORDER BY rowid DESC LIMIT ?)",
        )
        .and_then(|mut s| {
            s.query_row(params![scope, FEW + 1], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
        })
        .map_err(StoreError::from)?;
    if matches == 0 {
        return Ok(Some(Vec::new()));
    }
    if matches <= FEW {
        return newest(conn, &scope, search, cursor, limit, users).map(Some);
    }
    let mut days = days_through(conn, last_day)?;
    // Many matches: a few days at a time, newest first (days are in order, so the pages
    // of consecutive days follow each other), until the page is full. The first read
    // takes the days whose rows should hold twice the page at the density the count
    // saw; each read that leaves the page short takes twice as many rows as the last.
    let spread = highest
        .unwrap_or(0)
        .saturating_sub(lowest.unwrap_or(0))
        .saturating_add(1);
    let mut want = ((2 * i64::from(limit)).saturating_mul(spread) / matches).max(1);
    let mut out: Vec<Hit> = Vec::new();
    let mut at: usize = 0;
    let mut reads = 0;
    while out.len() < limit as usize {
        let left = limit - u32::try_from(out.len()).unwrap_or(limit);
        if reads == MOST_READS {
            // Every match older than the days read, at once: a day's rows are those sent
            // from its first millisecond (day 0 also those before 1970, never older).
            let Some(&(day, _)) = at.checked_sub(1).and_then(|i| days.get(i)) else {
                break;
            };
            if day > 0 {
                let older = (day.saturating_mul(DAY), MessageId::from_bytes([0; 16]));
                let bound = cursor.map_or(older, |c| c.min(older));
                out.extend(newest(conn, &scope, search, Some(bound), left, users)?);
            }
            break;
        }
        if at == days.len() {
            // The days read so far are used up: the next ones, when there are more.
            let Some(&(oldest, _)) = days.last() else {
                break;
            };
            if !days.len().is_multiple_of(DAYS_READ) {
                break;
            }
            let more = days_through(conn, oldest.saturating_sub(1))?;
            if more.is_empty() {
                break;
            }
            days.extend(more);
        }
        let mut rows = 0;
        let mut these = Vec::new();
        while at < days.len() && these.len() < MOST_DAYS && (these.is_empty() || rows < want) {
            let (day, n) = days[at];
            these.push(day_term(day));
            rows = rows.saturating_add(n);
            at += 1;
        }
        want = want.saturating_mul(2);
        reads += 1;
        let scoped = format!("{scope} AND ({})", these.join(" OR "));
        out.extend(newest(conn, &scoped, search, cursor, left, users)?);
    }
    Ok(Some(out))
}

/// The days up to `last` that have indexed rows, with their rows, newest first,
/// [`DAYS_READ`] at most.
fn days_through(conn: &Connection, last: i64) -> Result<Vec<(i64, i64)>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT day, rows FROM search_days WHERE day <= ? ORDER BY day DESC LIMIT ?",
    )?;
    let rows = statement.query_map(
        params![last, i64::try_from(DAYS_READ).unwrap_or(i64::MAX)],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The query's FTS5 expression, each word spelled out as the terms of the index it is
/// the start of ([`spelled_out`]); `None` when `queued` asks whether rows wait to be
/// indexed and some do (the words of those rows may not be in the list yet).
fn spell_out(conn: &Connection, query: &Query, queued: bool) -> Result<Option<String>, StoreError> {
    if queued {
        let waiting: bool = conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM search_queue)")?
            .query_row([], |r| r.get(0))?;
        if waiting {
            return Ok(None);
        }
    }
    // Each word's terms, from the word up to the first string after all it starts
    // ([`after`]; terms compare as bytes, in the order of their characters). As bytes:
    // FTS5 cuts a token of over 32 KiB where the bytes run out, maybe inside a character,
    // and a contact may send one.
    let mut statement = conn.prepare_cached(
        "SELECT CAST(term AS BLOB) FROM search_words WHERE term >= ? AND term < ? \
         ORDER BY term LIMIT ?",
    )?;
    let mut words = Vec::with_capacity(query.words.len());
    for word in &query.words {
        // No string after it (only U+10FFFF): no terms, the prefix itself.
        let upto = after(word).unwrap_or_else(|| word.clone());
        let most = i64::try_from(MOST_TERMS + 1).unwrap_or(i64::MAX);
        let terms: Option<Vec<String>> = statement
            .query_map(params![word, upto, most], |r| r.get::<_, Vec<u8>>(0))?
            .map(|term| {
                Ok(String::from_utf8(term?)
                    .ok()
                    .filter(|t| t.len() <= MAX_TERM_BYTES))
            })
            .collect::<Result<Vec<Option<String>>, rusqlite::Error>>()?
            .into_iter()
            .collect();
        // A term that is not a whole word of text, or a long one: the prefix itself.
        words.push(match terms {
            Some(terms) => spelled_out(word, &terms),
            None => prefix(word),
        });
    }
    Ok(Some(words.join(" AND ")))
}

/// The newest `limit` rows that match `expression` (and the search's conversation and
/// cursor): every match is joined to its row and the sorter keeps the newest by their
/// times and ids alone; only those are read whole.
fn newest(
    conn: &Connection,
    expression: &str,
    search: &Search,
    cursor: Option<(i64, MessageId)>,
    limit: u32,
    users: &mut Users,
) -> Result<Vec<Hit>, SearchError> {
    let mut sql = String::from(
        // CROSS JOIN: the index is read first and each match looked up (SQLite would
        // otherwise walk one conversation's rows and run the full-text query once for
        // each of them).
        "SELECT m.id, m.sender, m.recipient, m.body, m.sent_at, m.status, m.kind, \
         m.reply_to, m.edited_at, m.unsent, m.expires_at, m.extra, m.conversation \
         FROM (SELECT m.rowid AS r, m.sent_at AS s, m.id AS i \
           FROM search CROSS JOIN messages m ON m.rowid = search.rowid \
           WHERE search MATCH ? AND m.status < 5 AND m.body <> '' AND m.unsent = 0 \
           AND (m.expires_at IS NULL OR m.expires_at > ?)",
    );
    let mut values = vec![
        Value::Text(expression.to_owned()),
        Value::Integer(Timestamp::now().as_millis()),
    ];
    if let Some(conversation) = search.conversation {
        sql.push_str(" AND m.conversation = ?");
        values.push(Value::Text(conversation.to_string()));
    }
    if let Some((sent_at, id)) = cursor {
        sql.push_str(" AND (m.sent_at, m.id) < (?, ?)");
        values.push(Value::Integer(sent_at));
        values.push(Value::Blob(id.as_bytes().to_vec()));
    }
    sql.push_str(
        " ORDER BY m.sent_at DESC, m.id DESC LIMIT ?) t \
         CROSS JOIN messages m ON m.rowid = t.r ORDER BY t.s DESC, t.i DESC",
    );
    values.push(Value::Integer(i64::from(limit)));
    // Only fixed clauses are formatted into the text; every value is bound.
    let mut statement = conn.prepare_cached(&sql).map_err(StoreError::from)?;
    let rows = statement
        .query_map(params_from_iter(values), |r| hit(r, users))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(StoreError::from)?;
    Ok(rows.into_iter().flatten().collect())
}

/// Indexes the rows of `messages m` that `rows` (a `FROM … WHERE …` clause, with `binds` as
/// its numbered parameters) selects, as the triggers index a row (`0018_search.sql`): those
/// with text and not deleted, with their day and conversation terms, counted per day.
async fn index_rows(
    tx: &mut sqlx::SqliteConnection,
    rows: &str,
    binds: &[i64],
) -> Result<(), StoreError> {
    let text = format!(
        "INSERT INTO search (rowid, body) SELECT m.rowid, \
           replace(m.body, char(57344), ' ') \
           || ' ' || char(57344) || 'd' || (MAX(m.sent_at, 0) / 86400000) \
           || ' ' || char(57344) || 'c' || m.conversation \
         {rows} AND m.body <> '' AND m.status < 5"
    );
    let days = format!(
        "INSERT INTO search_days (day, rows) SELECT MAX(m.sent_at, 0) / 86400000 AS d, COUNT(*) \
         {rows} AND m.body <> '' AND m.status < 5 \
         GROUP BY d ON CONFLICT (day) DO UPDATE SET rows = rows + excluded.rows"
    );
    // The rows' words, as the tokenizer makes them (`0025_search_words.sql`).
    let scratch = format!(
        "INSERT INTO search_scratch (rowid, body) SELECT m.rowid, \
           replace(m.body, char(57344), ' ') {rows} AND m.body <> '' AND m.status < 5"
    );
    // Only the callers' fixed clauses are formatted into the text; every value is bound.
    for sql in [text, days, scratch] {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for b in binds {
            query = query.bind(*b);
        }
        query.execute(&mut *tx).await?;
    }
    sqlx::query(
        "INSERT INTO search_words (term) SELECT t.term FROM search_scratch_terms t \
         WHERE NOT EXISTS (SELECT 1 FROM search_words w WHERE w.term = t.term)",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO search_scratch (search_scratch) VALUES ('delete-all')")
        .execute(&mut *tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn queries_are_words_folded_and_bounded() {
        let q = Query::parse("  Café NEAR \"x\" OR* ").unwrap();
        assert_eq!(q.words, ["cafe", "near", "x", "or"]);
        assert_eq!(prefix("cafe"), "\"cafe\"*");
        assert_eq!(Query::parse("   "), Err(QueryError::Empty));
        assert_eq!(Query::parse("?!? …"), Err(QueryError::NoWords));
        assert_eq!(
            Query::parse(&"a".repeat(MAX_QUERY_BYTES + 1)),
            Err(QueryError::TooLong)
        );
        let many: Vec<String> = (0..=MAX_WORDS).map(|i| format!("w{i}")).collect();
        assert_eq!(Query::parse(&many.join(" ")), Err(QueryError::TooManyWords));
        // Repeated words count once.
        assert_eq!(Query::parse("Über über UBER").unwrap().words, ["uber"]);
    }

    #[test]
    fn the_string_after_a_word_follows_every_term_it_starts() {
        assert_eq!(after("caf").as_deref(), Some("cag"));
        assert_eq!(after("caf\u{10FFFF}").as_deref(), Some("cag"));
        assert_eq!(after("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(after("\u{10FFFF}"), None);
        for term in ["caf", "cafe", "caf\u{10FFFF}x", "caf\u{10FFFD}"] {
            assert!(
                term >= "caf" && term < after("caf").unwrap().as_str(),
                "{term:?}"
            );
        }
        // Where SQLite's older tables split a word, so does a query.
        assert_eq!(Query::parse("ab\u{19B0}cd").unwrap().words, ["ab", "cd"]);
    }

    #[test]
    fn a_word_is_spelled_out_as_a_few_terms_or_stays_a_prefix() {
        let terms = |n: usize| -> Vec<String> { (0..n).map(|i| format!("caf{i}")).collect() };
        assert_eq!(spelled_out("caf", &terms(2)), "(\"caf0\" OR \"caf1\")");
        assert_eq!(
            spelled_out("caf", &terms(MOST_TERMS))
                .matches(" OR ")
                .count(),
            MOST_TERMS - 1
        );
        assert_eq!(spelled_out("caf", &terms(MOST_TERMS + 1)), "\"caf\"*");
        assert_eq!(spelled_out("caf", &[]), "\"caf\"*");
        assert_eq!(quoted("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn snippets_cut_around_the_first_match_and_mark_words() {
        let q = Query::parse("cafe").unwrap();
        let s = q.snippet("Meet at the Café at noon");
        assert_eq!(s.text, "Meet at the Café at noon");
        assert_eq!(s.highlights, [(12, 16)]);
        let long = format!(
            "{} the café here {}",
            "word ".repeat(40),
            "tail ".repeat(40)
        );
        let s = q.snippet(&long);
        assert!(
            s.text.starts_with('…') && s.text.ends_with('…'),
            "{}",
            s.text
        );
        let (a, b) = s.highlights[0];
        let units: Vec<u16> = s.text.encode_utf16().collect();
        assert_eq!(String::from_utf16(&units[a..b]).unwrap(), "café");
    }
}
