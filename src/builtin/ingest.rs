//! `ingest`: files dropped in `memory/inbox/` become memories.
//!
//! Accepted (see docs/FORMATS.md "Inbox"):
//! - `*.json`: an object `{"text": "…", "tags": ["…"]}` (`content` is
//!   accepted for `text`), or an array of such objects (one memory each);
//! - `*.md` / `*.markdown` with `+++` TOML front matter: the body becomes
//!   the text and `tags` are kept (other keys are ignored);
//! - anything else that is UTF-8 text: the whole text, no tags.
//!
//! Each ingested file is moved to `memory/archive/` (a clash of names gets
//! the run's id appended). A file whose content (SHA-256 of its bytes) was
//! ingested before is archived without adding a memory: the hashes are kept
//! in `.profiled/ingest-hashes`, one hex line each, so this holds across
//! daemon restarts. A file that cannot be ingested (a link, a FIFO, a hard
//! link, another owner's file, too big, not UTF-8, bad JSON, empty) is
//! moved byte for byte to `memory/inbox/rejected/` and named with its reason
//! in the summary and the user's audit log; nothing is ever deleted.
//!
//! Files are taken by a few threads at once (each costs several fsyncs);
//! the same content twice in one run still makes one memory.
//!
//! A file modified less than [`Options::settle`] ago is left for the next
//! run: it may still be being written (the trigger's debounce usually
//! covers this; the check makes ingest safe on a schedule too).

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::Summary;
use crate::audit::{Auditor, SystemLog};
use crate::config::Config;
use crate::profile::{self, EntryKind, ProfileDir};
use crate::store::{self, NewMemory, Store};

/// Where users drop files.
pub const INBOX: &str = "memory/inbox";
/// Where ingested originals go.
pub const ARCHIVE: &str = "memory/archive";
/// Where refused files are set aside.
pub const REJECTED: &str = "memory/inbox/rejected";
/// The hashes of every content ingested so far.
pub const HASHES: &str = ".profiled/ingest-hashes";
/// The name ingest acts under in audit lines.
pub const ACTOR: &str = "agent:ingest";

/// How a run behaves.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Files modified more recently than this are left for the next run.
    pub settle: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            settle: Duration::from_secs(1),
        }
    }
}

/// An error that stopped the run (one bad file never does).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The profile layer failed on the inbox, archive or hash file.
    #[error("ingest: {0}")]
    Profile(#[from] profile::Error),
}

/// One memory found in a file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonItem {
    text: Option<String>,
    content: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum JsonShape {
    One(JsonItem),
    Many(Vec<JsonItem>),
}

#[derive(Debug, Default, Deserialize)]
struct MdFront {
    #[serde(default)]
    tags: Vec<String>,
}

/// Ingests `dir`'s inbox with the default options.
pub fn run(config: &Config, dir: &ProfileDir) -> Result<Summary, Error> {
    run_with(config, dir, Options::default())
}

/// Ingests `dir`'s inbox.
pub fn run_with(config: &Config, dir: &ProfileDir, opts: Options) -> Result<Summary, Error> {
    let system = SystemLog::new(config.paths.audit_dir());
    let auditor = Auditor::daemon(&system, ACTOR);
    let store = Store::new(dir, &auditor);
    let mut entries = match dir.list(INBOX) {
        Ok(e) => e,
        Err(e) if e.is_not_found() => return Ok(Summary::of(vec![("ingested", 0)], &[])),
        Err(e) => return Err(e.into()),
    };
    entries.retain(|e| e.kind != EntryKind::Dir);
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    dir.ensure_dir(ARCHIVE)?;
    // Made here, before the threads: ensure_dir creates a directory and
    // then hands it to the account, and a second thread opening it in
    // between would find root's directory and refuse it.
    let now = time::OffsetDateTime::now_utc();
    dir.ensure_dir(&format!(
        "memory/episodic/{:04}/{:02}",
        now.year(),
        now.month() as u8
    ))?;
    let run = Run {
        store: &store,
        opts,
        run_id: ulid::Ulid::generate().to_string().to_lowercase(),
        seen: Mutex::new(load_hashes(dir)?),
    };
    // Each file costs a few fsyncs (record, directory, audit line, archive
    // rename): files are taken by a few threads at once so the waits
    // overlap. Order between files does not matter; each is all or nothing.
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let outcomes: Vec<Result<Vec<Outcome>, Error>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..WORKERS.min(entries.len().max(1)))
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    while !failed.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(entry) = entries.get(i) else { break };
                        match run.one(entry) {
                            Ok(o) => out.push(o),
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                    }
                    Ok(out)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Ok(Vec::new())))
            .collect()
    });
    let (mut memories, mut files, mut duplicates, mut waiting) = (0u64, 0u64, 0u64, 0u64);
    let mut rejected = Vec::new();
    let mut new_hashes = Vec::new();
    let mut first_error = None;
    for o in outcomes {
        match o {
            Ok(list) => {
                for o in list {
                    match o {
                        Outcome::Ingested { memories: n, hash } => {
                            memories += n;
                            files += 1;
                            new_hashes.push(hash);
                        }
                        Outcome::Duplicate => duplicates += 1,
                        Outcome::Waiting => waiting += 1,
                        Outcome::Rejected(why) => rejected.push(why),
                        Outcome::Gone => {}
                    }
                }
            }
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    // The memories are written before their hashes: a crash in between
    // makes duplicates on the next run, never a lost file. The hashes of
    // what was done are kept even when another file failed the run.
    if !new_hashes.is_empty() {
        new_hashes.sort();
        let mut text = new_hashes.join("\n");
        text.push('\n');
        dir.append(HASHES, text.as_bytes())?;
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    rejected.sort();
    let mut counts = vec![
        ("ingested", memories),
        ("files", files),
        ("duplicates", duplicates),
        ("rejected", rejected.len() as u64),
    ];
    if waiting > 0 {
        counts.push(("still being written", waiting));
    }
    Ok(Summary::of(counts, &rejected))
}

/// Threads ingesting files of one inbox at once.
const WORKERS: usize = 8;

/// What became of one inbox entry.
enum Outcome {
    /// Memories were made and the file archived.
    Ingested { memories: u64, hash: String },
    /// Its content was ingested before; archived.
    Duplicate,
    /// Modified too recently; left for the next run.
    Waiting,
    /// Moved to `rejected/`, with the line saying why.
    Rejected(String),
    /// Gone before it could be read.
    Gone,
}

/// One run over one inbox.
struct Run<'a> {
    store: &'a Store<'a>,
    opts: Options,
    run_id: String,
    /// Hashes ingested before and claimed in this run.
    seen: Mutex<HashSet<String>>,
}

impl Run<'_> {
    fn one(&self, entry: &profile::Entry) -> Result<Outcome, Error> {
        let (store, dir, run_id) = (self.store, self.store.dir(), self.run_id.as_str());
        let name = entry.name.as_str();
        let rel = format!("{INBOX}/{name}");
        match entry.kind {
            EntryKind::File => {}
            EntryKind::Symlink => {
                return Ok(Outcome::Rejected(reject(
                    store,
                    name,
                    "a symbolic link",
                    run_id,
                )?));
            }
            _ => {
                return Ok(Outcome::Rejected(reject(
                    store,
                    name,
                    "not a regular file",
                    run_id,
                )?));
            }
        }
        if let Ok(Some(stamp)) = dir.stamp(&rel)
            && SystemTime::now()
                .duration_since(stamp.modified())
                .is_ok_and(|age| age < self.opts.settle)
        {
            return Ok(Outcome::Waiting);
        }
        let bytes = match dir.read(&rel) {
            Ok(b) => b,
            Err(profile::Error::Refused { reason, .. }) => {
                return Ok(Outcome::Rejected(reject(
                    store,
                    name,
                    &reason.to_string(),
                    run_id,
                )?));
            }
            Err(e) if e.is_not_found() => return Ok(Outcome::Gone),
            Err(e) => return Err(e.into()),
        };
        let hash = hex(&Sha256::digest(&bytes));
        // Claimed before the memories are made, so two identical files in
        // one run make one memory.
        if !self.lock_seen().insert(hash.clone()) {
            archive(dir, name, run_id)?;
            return Ok(Outcome::Duplicate);
        }
        let unclaim = |why: String| -> Result<Outcome, Error> {
            self.lock_seen().remove(&hash);
            Ok(Outcome::Rejected(reject(store, name, &why, run_id)?))
        };
        let items = match parse(name, &bytes) {
            Ok(items) => items,
            Err(why) => return unclaim(why),
        };
        // Checked before any memory is written, so a file is all in or out.
        if let Some(why) = items.iter().find_map(|m| check(m).err()) {
            return unclaim(why);
        }
        let mut memories = 0;
        for item in items {
            match store.create_memory(item) {
                Ok(_) => memories += 1,
                Err(store::Error::Profile(e)) => return Err(e.into()),
                // check() ran the store's own rules; anything left is a
                // store rule it missed: say so rather than lose the file.
                Err(e) if memories == 0 => return unclaim(e.to_string()),
                Err(e) => {
                    tracing::warn!("ingest of {name}: {e} after {memories} memories");
                    break;
                }
            }
        }
        archive(dir, name, run_id)?;
        Ok(Outcome::Ingested { memories, hash })
    }

    fn lock_seen(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The memories in the file `name`, or why there are none.
fn parse(name: &str, bytes: &[u8]) -> Result<Vec<NewMemory>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        format!(
            "not UTF-8 text (bad byte at offset {}); convert it to UTF-8",
            e.valid_up_to()
        )
    })?;
    let lower = name.to_ascii_lowercase();
    let memory = |text: String, tags: Vec<String>| NewMemory {
        text,
        tags,
        source: Some("ingest".into()),
    };
    if lower.ends_with(".json") {
        let shape: JsonShape = serde_json::from_str(text).map_err(|e| {
            format!(
                "bad JSON at line {} column {}: {e}; send {{\"text\": …, \"tags\": […]}} or an array of them",
                e.line(),
                e.column()
            )
        })?;
        let items = match shape {
            JsonShape::One(i) => vec![i],
            JsonShape::Many(v) => v,
        };
        if items.is_empty() {
            return Err("an empty JSON array".into());
        }
        return items
            .into_iter()
            .enumerate()
            .map(|(n, i)| match i.text.or(i.content) {
                Some(t) => Ok(memory(t, i.tags)),
                None => Err(format!("JSON item {n} has no \"text\" or \"content\"")),
            })
            .collect();
    }
    if (lower.ends_with(".md") || lower.ends_with(".markdown")) && text.starts_with("+++") {
        let doc = crate::store::frontmatter::parse::<MdFront>(text, &["tags"])
            .map_err(|e| format!("line {}: {}", e.line, e.reason))?;
        return Ok(vec![memory(doc.body, doc.front.tags)]);
    }
    Ok(vec![memory(text.to_owned(), Vec::new())])
}

/// The store's rules on a new memory, as a reason.
fn check(m: &NewMemory) -> Result<(), String> {
    if m.text.trim().is_empty() {
        return Err("no text".into());
    }
    if let Some(t) = m
        .tags
        .iter()
        .find(|t| t.trim().is_empty() || t.chars().count() > 64 || t.chars().any(char::is_control))
    {
        return Err(format!(
            "tag {t:?} must be 1 to 64 characters without control characters"
        ));
    }
    Ok(())
}

/// Moves the inbox file `name` to the archive.
fn archive(dir: &ProfileDir, name: &str, run_id: &str) -> Result<(), Error> {
    move_aside(dir, name, ARCHIVE, run_id)
}

/// Moves `name` to `rejected/`, audits it, and says why.
fn reject(store: &Store<'_>, name: &str, why: &str, run_id: &str) -> Result<String, Error> {
    store.dir().ensure_dir(REJECTED)?;
    move_aside(store.dir(), name, REJECTED, run_id)?;
    store.audit("ingest.reject", name, &format!("refused: {why}"));
    Ok(format!("{name}: {why} (moved to {REJECTED}/)"))
}

/// Renames `INBOX/name` into `to`, never over an existing entry.
fn move_aside(dir: &ProfileDir, name: &str, to: &str, run_id: &str) -> Result<(), Error> {
    let from = format!("{INBOX}/{name}");
    match dir.rename(&from, &format!("{to}/{name}")) {
        Err(profile::Error::Io { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => {
            Ok(dir.rename(&from, &format!("{to}/{name}.{run_id}"))?)
        }
        other => Ok(other?),
    }
}

/// Every content hash ingested so far.
fn load_hashes(dir: &ProfileDir) -> Result<HashSet<String>, Error> {
    match dir.read(HASHES) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()),
        Err(e) if e.is_not_found() => Ok(HashSet::new()),
        Err(e) => Err(e.into()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn texts(name: &str, body: &str) -> Result<Vec<(String, Vec<String>)>, String> {
        parse(name, body.as_bytes()).map(|v| v.into_iter().map(|m| (m.text, m.tags)).collect())
    }

    #[test]
    fn accepted_shapes() {
        assert_eq!(
            texts("a.json", r#"{"text": "t", "tags": ["x"]}"#),
            Ok(vec![("t".into(), vec!["x".into()])])
        );
        assert_eq!(
            texts("a.JSON", r#"[{"content": "c"}, {"text": "d"}]"#),
            Ok(vec![("c".into(), vec![]), ("d".into(), vec![])])
        );
        assert_eq!(
            texts(
                "a.md",
                "+++\ntags = [\"m\"]\ntitle = \"ignored\"\n+++\nbody\n"
            ),
            Ok(vec![("body\n".into(), vec!["m".into()])])
        );
        assert_eq!(texts("a", "plain"), Ok(vec![("plain".into(), vec![])]));
    }

    #[test]
    fn refused_shapes_say_why() {
        let why = texts("a.json", r#"{"txt": "t"}"#).expect_err("unknown key");
        assert!(why.contains("bad JSON"), "{why}");
        let why = texts("a.json", "[]").expect_err("empty array");
        assert!(why.contains("empty"), "{why}");
        let why = texts("a.json", r#"[{"tags": []}]"#).expect_err("no text");
        assert!(why.contains("item 0"), "{why}");
        let why = parse("a.txt", b"caf\xe9").expect_err("latin-1");
        assert!(why.contains("offset 3"), "{why}");
    }
}
