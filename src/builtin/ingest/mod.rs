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
//! in `.profiled/ingest-hashes/` ([`hashes`]), so this holds across daemon
//! restarts. A file that cannot be ingested (a link, a FIFO, a hard link,
//! another owner's file, too big, not UTF-8, bad JSON, empty) is moved byte
//! for byte to `memory/inbox/rejected/` and named with its reason in the
//! summary and the user's audit log; nothing is ever deleted.
//!
//! Files are taken in batches of up to [`BATCH_FILES`] files (or
//! [`BATCH_BYTES`] of memories), so a full inbox costs a few syncs per
//! batch rather than several per file:
//! 1. each file is read, hashed and its memories written under hidden
//!    temporary names ([`profile::Batch`]), unsynced;
//! 2. the journal (the batch's hashes and memory paths) is put in place;
//! 3. the batch is committed: one filesystem sync (temporary files and
//!    journal), the memories renamed into place, their directories
//!    synced: the memories are durable;
//! 4. only then are the hashes appended and the originals archived, made
//!    durable by one more sync, and one audit line names the batch.
//!
//! A crash at any step leaves each file in the inbox, or its memories, or
//! both; in the last case the journal lets the next run record its hash,
//! so it is archived as a duplicate rather than ingested twice.
//! The same content twice in one run still makes one memory.
//!
//! A file modified less than [`Options::settle`] ago is left for the next
//! run: it may still be being written (the trigger's debounce usually
//! covers this; the check makes ingest safe on a schedule too).

mod hashes;

use std::time::{Duration, SystemTime};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::Summary;
use crate::audit::{Auditor, SystemLog};
use crate::config::Config;
use crate::profile::{self, Batch, EntryKind, ProfileDir};
use crate::store::{self, NewMemory, Store};
use hashes::Hashes;

pub use hashes::HASHES;

/// Where users drop files.
pub const INBOX: &str = "memory/inbox";
/// Where ingested originals go.
pub const ARCHIVE: &str = "memory/archive";
/// Where refused files are set aside.
pub const REJECTED: &str = "memory/inbox/rejected";
/// The name ingest acts under in audit lines.
pub const ACTOR: &str = "agent:ingest";
/// Files taken in one batch at most, and memories made (a JSON array
/// makes several): the batch ends at the first file past it. A batch also
/// ends when its journal reaches half the profile's file size limit.
pub const BATCH_FILES: usize = 1000;
/// Bytes of new memories in one batch at most (a batch ends at the first
/// file past it).
pub const BATCH_BYTES: u64 = 16 << 20;

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

/// An error that stopped the run (one bad file never does). Files of the
/// batch it stopped stay in the inbox.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The profile layer failed on the inbox, a memory, the archive or
    /// the hash store.
    #[error("ingest: {0}; the files not yet archived stay in memory/inbox/ for the next run")]
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
    let mut run = Run {
        store: &store,
        opts,
        run_id: ulid::Ulid::generate().to_string().to_lowercase(),
        hashes: Hashes::open(dir)?,
        tally: Tally::default(),
    };
    match sweep_litter(dir) {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            "ingest for {}: removed {n} temporary files of an interrupted batch",
            dir.account().name
        ),
        // Hidden litter is never read: not worth failing the run for.
        Err(e) => tracing::warn!("ingest for {}: {e}", dir.account().name),
    }
    let recovered = run.hashes.recover(dir)?;
    if recovered > 0 {
        tracing::info!(
            "ingest for {}: {recovered} files of an interrupted batch were already memories",
            dir.account().name
        );
    }
    let mut rest = entries.as_slice();
    let mut journal = false;
    while !rest.is_empty() {
        let (taken, wrote_journal) = run.batch(rest)?;
        journal |= wrote_journal;
        rest = rest.get(taken..).unwrap_or_default();
    }
    if journal {
        Hashes::clear_journal(dir)?;
    }
    let Tally {
        memories,
        files,
        duplicates,
        waiting,
        mut rejected,
    } = run.tally;
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

/// Removes the temporary files an interrupted batch left (ingest runs
/// under the profile's agent lock, so no batch is under way): in
/// `.profiled/` and in this month's and last month's memory directories,
/// where a batch writes (new memories are filed by the month of their id).
fn sweep_litter(dir: &ProfileDir) -> Result<usize, profile::Error> {
    let now = time::OffsetDateTime::now_utc();
    let last = now.month().previous();
    let last_year = if last == time::Month::December {
        now.year() - 1
    } else {
        now.year()
    };
    let mut n = dir.sweep_batch_litter(".profiled")?;
    for (year, month) in [(now.year(), now.month()), (last_year, last)] {
        n += dir.sweep_batch_litter(&format!("memory/episodic/{year:04}/{:02}", month as u8))?;
    }
    Ok(n)
}

/// What a run did so far.
#[derive(Default)]
struct Tally {
    memories: u64,
    files: u64,
    duplicates: u64,
    waiting: u64,
    /// One line per refused file, saying why.
    rejected: Vec<String>,
}

/// What became of one inbox entry.
enum Outcome {
    /// Its memories are staged in the batch; archived after the commit.
    Ingested(Ingested),
    /// Its content was ingested before; archived after the commit.
    Duplicate,
    /// Modified too recently; left for the next run.
    Waiting,
    /// Moved to `rejected/`, with the line saying why.
    Rejected(String),
    /// Gone before it could be read.
    Gone,
}

/// A file whose memories are staged.
struct Ingested {
    /// The SHA-256 of its bytes, hex.
    hash: String,
    /// Its memories' files.
    paths: Vec<String>,
}

impl Ingested {
    /// The length of its line in the journal.
    fn journal_len(&self) -> u64 {
        journal_line_len(&self.hash, &self.paths)
    }
}

/// The length of a file's line in the journal: its hash, then its
/// memories' paths.
fn journal_line_len(hash: &str, paths: &[String]) -> u64 {
    let paths: usize = paths.iter().map(|p| p.len() + 1).sum();
    (hash.len() + paths + 1) as u64
}

/// The journal's size at which a batch ends: half the profile's file size
/// limit, so the file that crosses it still fits.
fn journal_limit(dir: &ProfileDir) -> u64 {
    dir.max_file() / 2
}

/// One run over one inbox.
struct Run<'a> {
    store: &'a Store<'a>,
    opts: Options,
    run_id: String,
    /// Hashes ingested before and claimed in this run.
    hashes: Hashes,
    tally: Tally,
}

impl Run<'_> {
    /// Ingests one batch from the front of `entries`: returns how many
    /// entries it took and whether it wrote the journal.
    fn batch(&mut self, entries: &[profile::Entry]) -> Result<(usize, bool), Error> {
        let dir = self.store.dir();
        let mut batch = dir.batch();
        // Each file to archive after the commit, with its memories (none
        // for a duplicate).
        let mut to_archive: Vec<(&str, Option<Ingested>)> = Vec::new();
        let mut rejected = 0;
        let mut taken = 0;
        let mut journal_bytes = 0;
        let journal_limit = journal_limit(dir);
        for entry in entries {
            if taken == BATCH_FILES
                || batch.len() >= BATCH_FILES
                || batch.bytes() >= BATCH_BYTES
                || journal_bytes >= journal_limit
            {
                break;
            }
            taken += 1;
            match self.one(entry, &mut batch)? {
                Outcome::Ingested(i) => {
                    journal_bytes += i.journal_len();
                    to_archive.push((&entry.name, Some(i)));
                }
                Outcome::Duplicate => to_archive.push((&entry.name, None)),
                Outcome::Waiting => self.tally.waiting += 1,
                Outcome::Rejected(why) => {
                    rejected += 1;
                    self.tally.rejected.push(why);
                }
                Outcome::Gone => {}
            }
        }
        let ingested: Vec<(&str, &[String])> = to_archive
            .iter()
            .filter_map(|(_, i)| i.as_ref().map(|i| (i.hash.as_str(), i.paths.as_slice())))
            .collect();
        let journal = !ingested.is_empty();
        if journal {
            // Made durable by the commit's sync, before any memory is
            // renamed into place.
            Hashes::write_journal(&mut batch, &ingested)?;
        }
        batch.commit()?;
        // The memories are durable: now their hashes, then the originals
        // (a crash in between is what the journal is for).
        let mut after = dir.batch();
        let new: Vec<&str> = ingested.iter().map(|(h, _)| *h).collect();
        Hashes::record(&mut after, &new)?;
        for (name, _) in &to_archive {
            move_aside(
                &mut |from, to| after.rename(from, to),
                name,
                ARCHIVE,
                &self.run_id,
            )?;
        }
        after.commit()?;
        let memories: Vec<&String> = ingested.iter().flat_map(|(_, p)| p.iter()).collect();
        let files = ingested.len() as u64;
        let duplicates = (to_archive.len() - ingested.len()) as u64;
        if !to_archive.is_empty() {
            let ids = match (memories.first(), memories.last()) {
                (Some(a), Some(b)) => format!(" ({} to {})", stem(a), stem(b)),
                _ => String::new(),
            };
            self.store.audit(
                "ingest.batch",
                INBOX,
                &format!(
                    "ok: {} files: {} memories{ids}, {duplicates} duplicates archived, {rejected} rejected",
                    to_archive.len(),
                    memories.len()
                ),
            );
        }
        self.tally.memories += memories.len() as u64;
        self.tally.files += files;
        self.tally.duplicates += duplicates;
        Ok((taken, journal))
    }

    fn one(&mut self, entry: &profile::Entry, batch: &mut Batch<'_>) -> Result<Outcome, Error> {
        let (store, run_id) = (self.store, self.run_id.as_str());
        let dir = store.dir();
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
        let bytes = match dir.read_stamped(&rel) {
            // Read, then left: one lookup per file where a stat first
            // would take two, and settled files are the common case.
            Ok((_, stamp))
                if SystemTime::now()
                    .duration_since(stamp.modified())
                    .is_ok_and(|age| age < self.opts.settle) =>
            {
                return Ok(Outcome::Waiting);
            }
            Ok((b, _)) => b,
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
        if !self.hashes.claim(&hash) {
            return Ok(Outcome::Duplicate);
        }
        let mut unclaim = |why: String| -> Result<Outcome, Error> {
            self.hashes.unclaim(&hash);
            Ok(Outcome::Rejected(reject(store, name, &why, run_id)?))
        };
        let items = match parse(name, &bytes) {
            Ok(items) => items,
            Err(why) => return unclaim(why),
        };
        // Checked before any memory is staged, so a file is all in or out.
        if let Some(why) = items.iter().find_map(|m| check(m).err()) {
            return unclaim(why);
        }
        let mark = batch.len();
        let count = items.len();
        let mut paths = Vec::with_capacity(count);
        for item in items {
            match store.stage_memory(batch, item) {
                Ok(m) => paths.push(m.path),
                // A memory over the size limit (the file was just under
                // it): the file's fault, not the run's.
                Err(store::Error::Profile(profile::Error::Refused {
                    reason: reason @ profile::Refusal::TooLarge { .. },
                    ..
                })) => {
                    batch.truncate(mark);
                    return unclaim(format!("as a memory, {reason}"));
                }
                Err(store::Error::Profile(e)) => return Err(e.into()),
                // check() ran the store's own rules; anything left is a
                // store rule it missed: say so rather than lose the file.
                Err(e) => {
                    batch.truncate(mark);
                    return unclaim(e.to_string());
                }
            }
        }
        // Its line must fit in the batch's journal (a file of the size
        // limit), or the batch could never be placed.
        if journal_line_len(&hash, &paths) > journal_limit(dir) {
            batch.truncate(mark);
            return unclaim(format!(
                "{count} memories in one file, too many to place together under \
                 limits.max_record_bytes ({} bytes); split it into smaller files",
                dir.max_file()
            ));
        }
        Ok(Outcome::Ingested(Ingested { hash, paths }))
    }
}

/// A record's id: its file name without `.md`.
fn stem(rel: &str) -> &str {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name.strip_suffix(".md").unwrap_or(name)
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

/// Fuzz target `inbox`: `data`'s first byte picks the file's kind (JSON,
/// Markdown or text), the rest is the file, parsed and checked as ingest
/// does.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz(data: &[u8]) {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let name = match pick % 3 {
        0 => "note.json",
        1 => "note.md",
        _ => "note.txt",
    };
    if let Ok(memories) = parse(name, bytes) {
        for m in &memories {
            let _ = check(m);
        }
    }
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

/// Moves `name` to `rejected/`, audits it, and says why.
fn reject(store: &Store<'_>, name: &str, why: &str, run_id: &str) -> Result<String, Error> {
    let dir = store.dir();
    dir.ensure_dir(REJECTED)?;
    move_aside(&mut |from, to| dir.rename(from, to), name, REJECTED, run_id)?;
    store.audit("ingest.reject", name, &format!("refused: {why}"));
    Ok(format!("{name}: {why} (moved to {REJECTED}/)"))
}

/// Renames `INBOX/name` into `to` with `rename`, never over an existing
/// entry: a name taken there gets the run's id appended.
fn move_aside(
    rename: &mut dyn FnMut(&str, &str) -> profile::Result<()>,
    name: &str,
    to: &str,
    run_id: &str,
) -> Result<(), Error> {
    let from = format!("{INBOX}/{name}");
    match rename(&from, &format!("{to}/{name}")) {
        Err(profile::Error::Io { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => {
            Ok(rename(&from, &format!("{to}/{name}.{run_id}"))?)
        }
        other => Ok(other?),
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
