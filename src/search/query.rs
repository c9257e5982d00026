//! Queries over a user's index, for `GET /v1/search`.
//!
//! A search reads the index as the `index` agent last left it; it does not
//! walk the profile first (a walk over 100,000 records costs more than the
//! query). Readers are kept open per index and reloaded before each query,
//! which costs a read of tantivy's small `meta.json`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::Value;
use tantivy::snippet::SnippetGenerator;
use tantivy::{Index, IndexReader, ReloadPolicy, TantivyDocument};

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
/// not built yet has no hits.
pub fn search(
    state_dir: &Path,
    account: &Account,
    query: &str,
    limit: usize,
) -> Result<Hits, Error> {
    let user = account.name.as_str();
    let dir = dir_of(state_dir, account);
    if !tantivy_dir(&dir).join("meta.json").exists() {
        return Ok(Hits {
            query: query.to_owned(),
            hits: Vec::new(),
        });
    }
    let open = reader_of(&dir, user)?;
    match hits(&open, user, query, limit) {
        Err(Error::Index { .. }) => {
            // The files may have been rebuilt under a cached reader: reopen.
            forget(&dir);
            hits(&*reader_of(&dir, user)?, user, query, limit)
        }
        other => other,
    }
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

fn hits(open: &Open, user: &str, query: &str, limit: usize) -> Result<Hits, Error> {
    let f = open.fields;
    open.reader.reload().map_err(|e| index_error(user, e))?;
    let searcher = open.reader.searcher();
    let mut parser = QueryParser::for_index(&open.index, vec![f.title, f.body, f.tags]);
    parser.set_conjunction_by_default();
    let parsed = parser.parse_query(query).map_err(|e| Error::BadQuery {
        query: query.to_owned(),
        reason: e.to_string(),
    })?;
    let top = searcher
        .search(&parsed, &TopDocs::with_limit(limit.max(1)))
        .map_err(|e| index_error(user, e))?;
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
        let snippet = snippets.snippet_from_doc(&doc);
        let mut marked = String::new();
        let fragment = snippet.fragment();
        let mut at = 0;
        for r in snippet.highlighted() {
            let (start, end) = (r.start, r.end);
            if let (Some(before), Some(word)) = (fragment.get(at..start), fragment.get(start..end))
            {
                marked.push_str(before);
                marked.push_str("**");
                marked.push_str(word);
                marked.push_str("**");
                at = end;
            }
        }
        marked.push_str(fragment.get(at..).unwrap_or_default());
        let body = text(f.body);
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
        query: query.to_owned(),
        hits: out,
    })
}

/// The first non-empty line of `text`, shortened to a title.
pub fn first_line(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    line.trim().chars().take(TITLE_CHARS).collect()
}
