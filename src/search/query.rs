//! Queries over a user's index, for `GET /v1/search`.
//!
//! A search reads the index as the `index` agent last left it; it does not
//! walk the profile first (a walk over 100,000 records costs more than the
//! query). Readers are kept open per index and reloaded before each query,
//! which costs a read of tantivy's small `meta.json`.
//!
//! The text reaching here has kept [`super::limits`]; what it costs to
//! match is bounded by a time budget checked between matching documents.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tantivy::query::{EnableScoring, Query, QueryParser};
use tantivy::schema::{Schema, Value};
use tantivy::snippet::{Snippet, SnippetGenerator};
use tantivy::tokenizer::TokenizerManager;
use tantivy::{
    DocAddress, DocSet, Index, IndexReader, ReloadPolicy, Searcher, TERMINATED, TantivyDocument,
};

use super::limits::QueryText;
use super::{Error, Fields, dir_of, index_error, open, tantivy_dir};
use crate::accounts::Account;

/// The longest title shown.
const TITLE_CHARS: usize = 120;
/// The longest snippet, in bytes of the original text.
const SNIPPET_BYTES: usize = 200;

/// One hit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// The record's id.
    pub id: String,
    /// `memory` or `task`.
    pub kind: String,
    /// The task's title or the memory's first line.
    pub title: String,
    /// A passage with the match, matched words between `**`.
    pub snippet: String,
    /// The relevance (BM25), higher is better.
    pub score: f32,
}

/// The answer to a search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hits {
    /// The query as given.
    pub query: String,
    /// The best hits first.
    pub hits: Vec<Hit>,
    /// Matching stopped at the time budget: these are the best hits found
    /// until then (a narrower query answers in full).
    #[serde(default)]
    pub partial: bool,
}

struct Open {
    index: Index,
    reader: IndexReader,
    fields: Fields,
}

fn cache() -> &'static Mutex<HashMap<PathBuf, std::sync::Arc<Open>>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, std::sync::Arc<Open>>>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

/// Drops the cached reader of the index in `dir` (before it is rebuilt).
pub(super) fn forget(dir: &Path) {
    cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(dir);
}

/// The `limit` best hits for `query` in `account`'s index only. An index
/// not built yet has no hits. Matching stops at `budget` (checked between
/// matching documents) and the answer is then the best hits found so far,
/// marked `partial`.
pub fn search(
    state_dir: &Path,
    account: &Account,
    query: &QueryText,
    limit: usize,
    budget: Duration,
) -> Result<Hits, Error> {
    let deadline = Instant::now() + budget;
    let user = account.name.as_str();
    let dir = dir_of(state_dir, account);
    if !tantivy_dir(&dir).join("meta.json").exists() {
        return Ok(Hits {
            query: query.as_str().to_owned(),
            hits: Vec::new(),
            partial: false,
        });
    }
    let open = reader_of(&dir, user)?;
    match hits(&open, user, query, limit, deadline) {
        Err(Error::Index { .. }) => {
            // The files may have been rebuilt under a cached reader: reopen.
            forget(&dir);
            hits(&*reader_of(&dir, user)?, user, query, limit, deadline)
        }
        other => other,
    }
}

/// Parses `query` as a search over the index's schema, exactly as
/// [`search`] does (for the fuzz target, which has no index).
pub fn parse(query: &QueryText) -> Result<Box<dyn Query>, Error> {
    let (schema, fields) = super::schema();
    parse_with(&parser(schema, fields, TokenizerManager::default()), query)
}

fn parser(schema: Schema, f: Fields, tokenizers: TokenizerManager) -> QueryParser {
    let mut parser = QueryParser::new(schema, vec![f.title, f.body, f.tags], tokenizers);
    parser.set_conjunction_by_default();
    parser
}

fn parse_with(parser: &QueryParser, query: &QueryText) -> Result<Box<dyn Query>, Error> {
    parser
        .parse_query(query.as_str())
        .map_err(|e| Error::BadQuery {
            query: query.as_str().to_owned(),
            reason: e.to_string(),
        })
}

fn reader_of(dir: &Path, user: &str) -> Result<std::sync::Arc<Open>, Error> {
    let mut cache = cache().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(o) = cache.get(dir) {
        return Ok(o.clone());
    }
    let (index, fields) = open(dir, user)?;
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()
        .map_err(|e| index_error(user, e))?;
    let o = std::sync::Arc::new(Open {
        index,
        reader,
        fields,
    });
    cache.insert(dir.to_owned(), o.clone());
    Ok(o)
}

/// How many documents are matched between two looks at the clock.
const CLOCK_EVERY: u32 = 256;

/// The `limit` best (score, address) pairs of `query`, best first, and
/// whether matching stopped at `deadline`. Collected here rather than by
/// tantivy's `TopDocs` so the loop can stop: a scorer cannot be told to.
fn top(
    searcher: &Searcher,
    query: &dyn Query,
    limit: usize,
    deadline: Instant,
) -> tantivy::Result<(Vec<(f32, DocAddress)>, bool)> {
    let weight = query.weight(EnableScoring::enabled_from_searcher(searcher))?;
    // The best `limit` so far, worst on top, so it is the one replaced.
    let mut best: BinaryHeap<Reverse<Ranked>> = BinaryHeap::with_capacity(limit + 1);
    let mut seen = 0u32;
    for (ord, segment) in searcher.segment_readers().iter().enumerate() {
        let mut scorer = weight.scorer(segment, 1.0)?;
        let alive = segment.alive_bitset();
        let mut doc = scorer.doc();
        while doc != TERMINATED {
            seen = seen.wrapping_add(1);
            if seen.is_multiple_of(CLOCK_EVERY) && Instant::now() >= deadline {
                return Ok((into_sorted(best), true));
            }
            if alive.is_none_or(|a| a.is_alive(doc)) {
                let ranked = Ranked {
                    score: scorer.score(),
                    address: DocAddress::new(ord as u32, doc),
                };
                if best.len() < limit {
                    best.push(Reverse(ranked));
                } else if best.peek().is_some_and(|Reverse(worst)| ranked > *worst) {
                    best.pop();
                    best.push(Reverse(ranked));
                }
            }
            doc = scorer.advance();
        }
    }
    Ok((into_sorted(best), false))
}

fn into_sorted(best: BinaryHeap<Reverse<Ranked>>) -> Vec<(f32, DocAddress)> {
    // Ascending order of `Reverse` is best first.
    best.into_sorted_vec()
        .into_iter()
        .map(|Reverse(r)| (r.score, r.address))
        .collect()
}

/// A hit's rank: the higher score first, then the earlier document (the
/// order tantivy's `TopDocs` gives).
#[derive(Clone, Copy, Debug)]
struct Ranked {
    score: f32,
    address: DocAddress,
}

impl Ord for Ranked {
    fn cmp(&self, other: &Ranked) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.address.cmp(&self.address))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Ranked) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Ranked) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

fn hits(
    open: &Open,
    user: &str,
    query: &QueryText,
    limit: usize,
    deadline: Instant,
) -> Result<Hits, Error> {
    let f = open.fields;
    open.reader.reload().map_err(|e| index_error(user, e))?;
    let searcher = open.reader.searcher();
    let parser = parser(open.index.schema(), f, open.index.tokenizers().clone());
    let parsed = parse_with(&parser, query)?;
    let (top, mut partial) =
        top(&searcher, &*parsed, limit.max(1), deadline).map_err(|e| index_error(user, e))?;
    let mut snippets =
        SnippetGenerator::create(&searcher, &*parsed, f.body).map_err(|e| index_error(user, e))?;
    snippets.set_max_num_chars(SNIPPET_BYTES);
    let mut out = Vec::with_capacity(top.len());
    for (score, addr) in top {
        let doc: TantivyDocument = searcher.doc(addr).map_err(|e| index_error(user, e))?;
        let text = |field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let body = text(f.body);
        // Highlighting tokenizes the whole text (up to the record size
        // limit per hit): past the deadline the hit keeps a plain snippet.
        let mut marked = if Instant::now() < deadline {
            highlighted(&snippets.snippet_from_doc(&doc))
        } else {
            partial = true;
            String::new()
        };
        if marked.trim().is_empty() {
            marked = body.chars().take(SNIPPET_BYTES).collect();
        }
        out.push(Hit {
            id: text(f.id),
            kind: text(f.kind),
            title: text(f.title),
            snippet: marked.split_whitespace().collect::<Vec<_>>().join(" "),
            score,
        });
    }
    Ok(Hits {
        query: query.as_str().to_owned(),
        hits: out,
        partial,
    })
}

/// The snippet's fragment with its matched words between `**`.
fn highlighted(snippet: &Snippet) -> String {
    let mut marked = String::new();
    let fragment = snippet.fragment();
    let mut at = 0;
    for r in snippet.highlighted() {
        let (start, end) = (r.start, r.end);
        if let (Some(before), Some(word)) = (fragment.get(at..start), fragment.get(start..end)) {
            marked.push_str(before);
            marked.push_str("**");
            marked.push_str(word);
            marked.push_str("**");
            at = end;
        }
    }
    marked.push_str(fragment.get(at..).unwrap_or_default());
    marked
}

/// The first non-empty line of `text`, shortened to a title.
pub fn first_line(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    line.trim().chars().take(TITLE_CHARS).collect()
}
