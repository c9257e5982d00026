//! A per-user full-text index of memories and tasks (tantivy), kept by the
//! `index` agent ([`update::run`]) and read by `GET /v1/search`
//! ([`query::search`]).
//!
//! The index holds the user's text but lives outside the profile, in
//! `<state_dir>/index/<user>-<uid>/` (root, 0700): tantivy opens its files
//! by path, and inside the user-writable profile a planted symlink would
//! make root follow it (rule 1). The uid in the name means an account name
//! given to a new person never serves the old person's index.

pub mod budget;
pub mod limits;
pub mod query;
pub mod update;

use std::path::{Path, PathBuf};

use tantivy::Index;
use tantivy::directory::MmapDirectory;
use tantivy::schema::{Field, STORED, STRING, Schema, TEXT};

use crate::accounts::Account;
use crate::{profile, statefs};

/// An error of the index or of a query.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The query cannot be parsed.
    #[error("bad query {query:?}: {reason}; use words, \"quoted phrases\", AND/OR/NOT, tags:NAME")]
    BadQuery {
        /// The query as given.
        query: String,
        /// What the parser found wrong.
        reason: String,
    },
    /// The index files failed.
    #[error("search index of {user}: {reason}")]
    Index {
        /// Whose index.
        user: String,
        /// What failed.
        reason: String,
    },
    /// The state directory is unsafe or unwritable.
    #[error(transparent)]
    State(#[from] statefs::Error),
    /// The profile could not be read.
    #[error(transparent)]
    Profile(#[from] profile::Error),
}

/// The fields of a document.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fields {
    id: Field,
    kind: Field,
    title: Field,
    body: Field,
    tags: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let fields = Fields {
        id: b.add_text_field("id", STRING | STORED),
        kind: b.add_text_field("kind", STRING | STORED),
        title: b.add_text_field("title", TEXT | STORED),
        body: b.add_text_field("body", TEXT | STORED),
        tags: b.add_text_field("tags", TEXT),
    };
    (b.build(), fields)
}

/// `<state_dir>/index`, the parent of every user's index.
pub fn root(state_dir: &Path) -> PathBuf {
    state_dir.join("index")
}

/// The directory of `account`'s index.
pub fn dir_of(state_dir: &Path, account: &Account) -> PathBuf {
    root(state_dir).join(format!("{}-{}", account.name, account.uid.0))
}

/// The tantivy files inside a user's index directory.
fn tantivy_dir(dir: &Path) -> PathBuf {
    dir.join("tantivy")
}

/// Opens (creating when missing) the index in `dir`.
fn open(dir: &Path, user: &str) -> Result<(Index, Fields), Error> {
    let (schema, fields) = schema();
    let path = tantivy_dir(dir);
    std::fs::create_dir_all(&path).map_err(|e| index_error(user, e))?;
    let mmap = MmapDirectory::open(&path).map_err(|e| index_error(user, e))?;
    let index = Index::open_or_create(mmap, schema).map_err(|e| index_error(user, e))?;
    Ok((index, fields))
}

fn index_error(user: &str, e: impl std::fmt::Display) -> Error {
    Error::Index {
        user: user.to_owned(),
        reason: e.to_string(),
    }
}

/// Fuzz target `search_query`: `data` through [`limits::QueryText`] and,
/// when accepted, tantivy's parser as a search runs it. An accepted text
/// must never parse into a deeper tree than the limits allow (the scanner
/// and tantivy must agree about nesting), nor into a range, set, exists or
/// match-all leaf.
#[cfg(feature = "fuzzing")]
pub fn fuzz_query(data: &[u8]) {
    use tantivy::query_grammar::{UserInputAst as A, UserInputLeaf as L};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(query) = limits::QueryText::new(text) else {
        return;
    };
    if let Ok(ast) = tantivy::query_grammar::parse_query(query.as_str()) {
        // Every `NOT` (a word) may add a level besides the parentheses.
        let most = limits::MAX_DEPTH + limits::MAX_WORDS + 2;
        // A stack, not recursion: the tree is what is being checked.
        let mut stack = vec![(&ast, 1usize)];
        while let Some((node, depth)) = stack.pop() {
            assert!(depth <= most, "{query:?} parsed {depth} deep: {ast:?}");
            match node {
                A::Clause(children) => stack.extend(children.iter().map(|(_, c)| (c, depth + 1))),
                A::Boost(inner, _) => stack.push((inner, depth + 1)),
                A::Leaf(leaf) => assert!(
                    matches!(**leaf, L::Literal(_)),
                    "{query:?} parsed into {leaf:?}"
                ),
            }
        }
    }
    let _ = query::parse(&query);
}
