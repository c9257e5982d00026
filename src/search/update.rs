//! The `index` agent: brings a user's index up to date with the profile.
//!
//! What was indexed is kept in `manifest.json` beside the index: each
//! record id with its file's stamp (inode, size, mtime). A run lists the
//! record directories, compares stamps, and reads and re-indexes only what
//! changed; ids gone from the profile are deleted. The manifest is written
//! after the index commit, so a crash in between re-indexes a few records
//! (delete-then-add makes that harmless). An index or manifest that cannot
//! be opened or read is removed and rebuilt from the profile.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tantivy::{IndexWriter, TantivyDocument, Term};

use super::{Error, Fields, dir_of, index_error, open, root, tantivy_dir};
use crate::audit::{Auditor, SystemLog};
use crate::builtin::Summary;
use crate::config::Config;
use crate::profile::{EntryKind, ProfileDir};
use crate::statefs;
use crate::store::{Store, valid_id};

/// The manifest beside each index.
const MANIFEST: &str = "manifest.json";
/// The largest manifest read (about 80 bytes a record).
const MAX_MANIFEST: u64 = 256 * 1024 * 1024;
/// The indexer's memory budget (tantivy's minimum is 15 MB a thread).
const WRITER_BUDGET: usize = 32 * 1024 * 1024;
/// The name the index agent acts under in audit lines.
pub const ACTOR: &str = "agent:index";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    /// Record id to the stamp of its file when it was indexed.
    docs: BTreeMap<String, String>,
}

/// A record file found in the profile.
struct Found {
    kind: &'static str,
    stamp: String,
}

/// Brings `dir`'s account's index up to date.
pub fn run(config: &Config, dir: &ProfileDir) -> Result<Summary, Error> {
    let state_dir = &config.paths.state_dir;
    let user = dir.account().name.clone();
    statefs::ensure_private_dir(&root(state_dir))?;
    let idx_dir = dir_of(state_dir, dir.account());
    statefs::ensure_private_dir(&idx_dir)?;
    match update(config, dir, &idx_dir) {
        Err(Error::Index { reason, .. }) => {
            tracing::warn!("search index of {user} is unusable ({reason}); rebuilding it");
            wipe(&idx_dir, &user)?;
            let mut s = update(config, dir, &idx_dir)?;
            s.line
                .push_str(&format!("; rebuilt (the old index was unusable: {reason})"));
            Ok(s)
        }
        other => other,
    }
}

/// Removes the index and its manifest.
fn wipe(idx_dir: &Path, user: &str) -> Result<(), Error> {
    super::query::forget(idx_dir);
    match std::fs::remove_dir_all(tantivy_dir(idx_dir)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(index_error(user, e)),
    }
    match statefs::remove(&idx_dir.join(MANIFEST)) {
        Ok(()) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn update(config: &Config, dir: &ProfileDir, idx_dir: &Path) -> Result<Summary, Error> {
    let user = dir.account().name.as_str();
    let manifest_path = idx_dir.join(MANIFEST);
    let mut manifest: Manifest = match statefs::read(&manifest_path, MAX_MANIFEST)? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| index_error(user, format!("{MANIFEST}: {e}")))?,
        None => Manifest::default(),
    };
    let (index, fields) = open(idx_dir, user)?;
    if manifest.docs.is_empty() && index_has_docs(&index, user)? {
        // Documents without a manifest: the manifest was lost; start over.
        return Err(index_error(user, "documents without a manifest"));
    }
    let found = walk(dir)?;
    let changed: Vec<(&String, &Found)> = found
        .iter()
        .filter(|(id, f)| manifest.docs.get(*id) != Some(&f.stamp))
        .collect();
    let gone: Vec<String> = manifest
        .docs
        .keys()
        .filter(|id| !found.contains_key(*id))
        .cloned()
        .collect();
    let unchanged = found.len() - changed.len();
    if changed.is_empty() && gone.is_empty() {
        return Ok(Summary::of(
            vec![
                ("indexed", 0),
                ("removed", 0),
                ("unchanged", unchanged as u64),
            ],
            &[],
        ));
    }
    let system = SystemLog::new(config.paths.audit_dir());
    let auditor = Auditor::daemon(&system, ACTOR);
    let store = Store::new(dir, &auditor);
    let mut writer: IndexWriter = index
        .writer_with_num_threads(1, WRITER_BUDGET)
        .map_err(|e| index_error(user, e))?;
    let mut problems = Vec::new();
    let mut indexed = 0u64;
    for id in &gone {
        writer.delete_term(Term::from_field_text(fields.id, id));
        manifest.docs.remove(id);
    }
    for (id, f) in changed {
        writer.delete_term(Term::from_field_text(fields.id, id));
        match document(&store, fields, id, f.kind) {
            Ok(doc) => {
                writer.add_document(doc).map_err(|e| index_error(user, e))?;
                indexed += 1;
            }
            // A record that cannot be read is left out (and said so) until
            // its file changes; the listing routes report it too.
            Err(reason) => problems.push(format!("{id}: {reason}")),
        }
        manifest.docs.insert(id.clone(), f.stamp.clone());
    }
    writer.commit().map_err(|e| index_error(user, e))?;
    let json = serde_json::to_vec(&manifest).map_err(|e| index_error(user, e))?;
    statefs::write(&manifest_path, &json, true)?;
    Ok(Summary::of(
        vec![
            ("indexed", indexed),
            ("removed", gone.len() as u64),
            ("unchanged", unchanged as u64),
            ("unreadable", problems.len() as u64),
        ],
        &problems,
    ))
}

fn index_has_docs(index: &tantivy::Index, user: &str) -> Result<bool, Error> {
    let reader = index.reader().map_err(|e| index_error(user, e))?;
    Ok(reader.searcher().num_docs() > 0)
}

/// The document of record `id`.
fn document(
    store: &Store<'_>,
    fields: Fields,
    id: &str,
    kind: &'static str,
) -> Result<TantivyDocument, String> {
    let (title, body, tags) = if kind == "task" {
        let t = store.get_task(id).map_err(|e| e.to_string())?;
        (t.title, t.notes, t.tags)
    } else {
        let m = store.get_memory(id).map_err(|e| e.to_string())?;
        (super::query::first_line(&m.text), m.text, m.tags)
    };
    let mut doc = TantivyDocument::default();
    doc.add_text(fields.id, id);
    doc.add_text(fields.kind, kind);
    doc.add_text(fields.title, &title);
    doc.add_text(fields.body, &body);
    for t in &tags {
        doc.add_text(fields.tags, t);
    }
    Ok(doc)
}

/// Every record file of the profile with its stamp, by id.
fn walk(dir: &ProfileDir) -> Result<BTreeMap<String, Found>, Error> {
    let mut out = BTreeMap::new();
    for year in subdirs(dir, "memory/episodic")? {
        for month in subdirs(dir, &format!("memory/episodic/{year}"))? {
            records(
                dir,
                &format!("memory/episodic/{year}/{month}"),
                "memory",
                &mut out,
            )?;
        }
    }
    records(dir, "memory/tasks", "task", &mut out)?;
    Ok(out)
}

fn subdirs(dir: &ProfileDir, rel: &str) -> Result<Vec<String>, Error> {
    match dir.list(rel) {
        Ok(entries) => Ok(entries
            .into_iter()
            .filter(|e| e.kind == EntryKind::Dir)
            .map(|e| e.name)
            .collect()),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

fn records(
    dir: &ProfileDir,
    rel: &str,
    kind: &'static str,
    out: &mut BTreeMap<String, Found>,
) -> Result<(), Error> {
    let stamps = match dir.stamps(rel) {
        Ok(s) => s,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for (name, stamp) in stamps {
        let Some(id) = name.strip_suffix(".md") else {
            continue;
        };
        if !valid_id(id) {
            continue;
        }
        out.insert(
            id.to_owned(),
            Found {
                kind,
                stamp: stamp.key(),
            },
        );
    }
    Ok(())
}
