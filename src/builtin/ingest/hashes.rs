//! The content hashes of every file ingested, so the same content dropped
//! again makes no second memory, also after a restart; and the journal
//! that keeps that true across a crash in the middle of a batch.
//!
//! Layout (docs/FORMATS.md "Inbox"): `.profiled/ingest-hashes/<xx>`, one
//! file per first byte of the hash (256 at most), each one lowercase hex
//! SHA-256 per line, appended once per batch. Sharded so no file nears the
//! profile's size limit (`limits.max_record_bytes`): at 1 MiB each they
//! hold about four million hashes. The first format, one file at
//! `.profiled/ingest-hashes`, is moved aside to `ingest-hashes.v1`, copied
//! into the shards and removed; a crash part way through repeats the copy.
//!
//! The journal, `.profiled/ingest-journal`, is in place (and synced with
//! the batch) before a batch's memories are renamed into place: one line per file, its hash
//! and the paths of its memories. A run that finds a journal records the
//! hash of each file whose memories are all in place; that file, if still
//! in the inbox, is then archived as a duplicate. A file whose memories are
//! not all there is ingested again (a duplicate of some memories, never a
//! lost one).

use std::collections::{BTreeMap, HashSet};

use crate::profile::{self, Batch, EntryKind, ProfileDir};

/// The directory of hash shards.
pub const HASHES: &str = ".profiled/ingest-hashes";
/// Where a hash file of the first format waits while it is copied.
const LEGACY: &str = ".profiled/ingest-hashes.v1";
/// The batch in progress: each file's hash and its memories.
const JOURNAL: &str = ".profiled/ingest-journal";

/// The hashes ingested so far, and those claimed by the run.
pub struct Hashes {
    seen: HashSet<String>,
}

impl Hashes {
    /// Reads every shard of `dir`, after moving a hash file of the first
    /// format into the shards.
    pub fn open(dir: &ProfileDir) -> Result<Hashes, profile::Error> {
        if dir.stamp(HASHES)?.is_some() {
            // A regular file where the shards go: the first format.
            dir.rename(HASHES, LEGACY)?;
        }
        let mut seen = HashSet::new();
        if dir.is_dir(HASHES) {
            for entry in dir.list(HASHES)? {
                if entry.kind == EntryKind::File && is_shard_name(&entry.name) {
                    let bytes = dir.read(&format!("{HASHES}/{}", entry.name))?;
                    seen.extend(hashes_in(&bytes));
                }
            }
        }
        let legacy = match dir.read(LEGACY) {
            Ok(bytes) => Some(hashes_in(&bytes).collect::<Vec<_>>()),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        let mut hashes = Hashes { seen };
        if let Some(legacy) = legacy {
            let fresh: Vec<String> = legacy
                .into_iter()
                .filter(|h| !hashes.seen.contains(h))
                .collect();
            hashes.persist(dir, fresh)?;
            dir.remove(LEGACY)?;
        }
        Ok(hashes)
    }

    /// Claims `hash` for this run: false when it was ingested before or
    /// claimed already (the file is a duplicate).
    pub fn claim(&mut self, hash: &str) -> bool {
        self.seen.insert(hash.to_owned())
    }

    /// Gives back a claim whose file was not ingested after all.
    pub fn unclaim(&mut self, hash: &str) {
        self.seen.remove(hash);
    }

    /// Appends `hashes` (claimed) to their shards in `batch`, one write
    /// per shard; durable at the batch's commit.
    pub fn record(batch: &mut Batch<'_>, hashes: &[&str]) -> Result<(), profile::Error> {
        let mut shards: BTreeMap<&str, String> = BTreeMap::new();
        for h in hashes {
            let text = shards.entry(h.get(..2).unwrap_or("00")).or_default();
            text.push_str(h);
            text.push('\n');
        }
        for (shard, text) in shards {
            batch.append(&format!("{HASHES}/{shard}"), text.as_bytes())?;
        }
        Ok(())
    }

    /// Records `hashes` on disk now, and as seen.
    fn persist(&mut self, dir: &ProfileDir, hashes: Vec<String>) -> Result<(), profile::Error> {
        if hashes.is_empty() {
            return Ok(());
        }
        let mut batch = dir.batch();
        Hashes::record(
            &mut batch,
            &hashes.iter().map(String::as_str).collect::<Vec<_>>(),
        )?;
        batch.commit()?;
        self.seen.extend(hashes);
        Ok(())
    }

    /// Finishes the batch a crash interrupted, if any: records the hash of
    /// each file whose memories are all in place. Returns how many.
    pub fn recover(&mut self, dir: &ProfileDir) -> Result<usize, profile::Error> {
        let text = match dir.read(JOURNAL) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.is_not_found() => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut placed = Vec::new();
        for line in text.lines() {
            let mut words = line.split(' ');
            let Some(hash) = words.next().filter(|h| is_hash(h)) else {
                continue;
            };
            if self.seen.contains(hash) {
                continue;
            }
            let mut all_there = true;
            for rel in words {
                // A path that is not a plain one counts as missing.
                all_there &= dir.exists(rel).unwrap_or(false);
            }
            if all_there {
                placed.push(hash.to_owned());
            }
        }
        let n = placed.len();
        self.persist(dir, placed)?;
        Hashes::clear_journal(dir)?;
        Ok(n)
    }

    /// Writes the journal of the batch about to be placed into it (in
    /// place before its commit syncs): each ingested file's hash and its
    /// memories' paths.
    pub fn write_journal(
        batch: &mut Batch<'_>,
        files: &[(&str, &[String])],
    ) -> Result<(), profile::Error> {
        let mut text = String::new();
        for (hash, paths) in files {
            text.push_str(hash);
            for p in *paths {
                text.push(' ');
                text.push_str(p);
            }
            text.push('\n');
        }
        batch.replace(JOURNAL, text.as_bytes())
    }

    /// Removes the journal once its batches are recorded.
    pub fn clear_journal(dir: &ProfileDir) -> Result<(), profile::Error> {
        match dir.remove(JOURNAL) {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }
}

/// The well-formed hashes in a shard's bytes (anything else is skipped).
fn hashes_in(bytes: &[u8]) -> impl Iterator<Item = String> + '_ {
    bytes
        .split(|b| *b == b'\n')
        .filter_map(|l| std::str::from_utf8(l).ok())
        .map(str::trim)
        .filter(|l| is_hash(l))
        .map(str::to_owned)
}

/// A lowercase hex SHA-256.
fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Two lowercase hex digits.
fn is_shard_name(s: &str) -> bool {
    s.len() == 2 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::{hashes_in, is_hash};

    #[test]
    fn only_well_formed_lines_count() {
        let h = "ab".repeat(32);
        let text = format!("{h}\nnot a hash\n{}\n\n  {h}  \n", "AB".repeat(32));
        let found: Vec<String> = hashes_in(text.as_bytes()).collect();
        assert_eq!(found, vec![h.clone(), h]);
        assert!(!is_hash("ab"));
    }
}
