//! Memories: `memory/episodic/YYYY/MM/<id>.md`, one per file, newest first.

use serde::{Deserialize, Serialize};
use toml::value::Datetime;

use std::collections::BTreeMap;
use std::ops::Bound;

use super::frontmatter::Document;
use super::view::{Index, MemoryKey, Picked, Slot, kept};
use super::{
    Error, Page, Problem, RecordFront, Result, Store, bad_slots, check_tags, fill_texts, new_id,
    problem_of, record_stems, render_record, valid_id, with_newline,
};
use crate::profile::{self, EntryKind, WriteMode};
use crate::timefmt;

const DIR: &str = "memory/episodic";
const PREFIX: &str = "evt";
const KNOWN: &[&str] = &["id", "created", "updated", "tags", "processed", "source"];

#[derive(Serialize, Deserialize, Default)]
struct Front {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<Datetime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated: Option<Datetime>,
    #[serde(default, deserialize_with = "super::frontmatter::plain_list")]
    tags: Vec<String>,
    #[serde(default)]
    processed: bool,
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "super::frontmatter::plain_opt"
    )]
    source: Option<String>,
}

/// A memory as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Memory {
    /// The id (the file name without `.md`).
    pub id: String,
    /// The file, relative to the profile.
    pub path: String,
    /// When it was created.
    pub created: Option<String>,
    /// When it was last changed through profiled.
    pub updated: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Whether the organize agent has seen it.
    pub processed: bool,
    /// Where it came from (`profilectl`, `api`, `ingest`…).
    pub source: Option<String>,
    /// The text.
    pub text: String,
}

/// A memory to capture.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMemory {
    /// The text; must not be empty.
    pub text: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Where it came from.
    pub source: Option<String>,
}

/// A replacement for a memory's text and, optionally, tags and flag.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryUpdate {
    /// The new text.
    pub text: String,
    /// New tags; kept when absent.
    pub tags: Option<Vec<String>>,
    /// New processed flag; kept when absent.
    pub processed: Option<bool>,
}

impl Store<'_> {
    /// Captures a new memory.
    pub fn create_memory(&self, new: NewMemory) -> Result<Memory> {
        let (rel, text, memory) = render_new(new)?;
        self.dir
            .write(&rel, text.as_bytes(), WriteMode::CreateNew)?;
        self.wrote(&rel);
        self.audit("memory.create", &memory.id, "ok");
        Ok(memory)
    }

    /// Writes a new memory into `batch`: it appears, under its own name,
    /// when the batch is committed, and only then. Not audited: the
    /// caller audits the batch (the ingest agent, one line per batch).
    pub fn stage_memory(&self, batch: &mut profile::Batch<'_>, new: NewMemory) -> Result<Memory> {
        let (rel, text, memory) = render_new(new)?;
        batch.stage(&rel, text.as_bytes())?;
        Ok(memory)
    }

    /// One page of memories, newest first, starting after the id `before`.
    pub fn list_memories(&self, limit: usize, before: Option<&str>) -> Result<Page<Memory>> {
        let (mut page, stale) = self.with_index(|index| pick(index, limit, before).page());
        fill_texts(&mut page, &stale, |m: &Memory| {
            self.read_memory(&m.id, &m.path).map(|(m, _)| m)
        });
        Ok(page)
    }

    /// The memory `id`.
    pub fn get_memory(&self, id: &str) -> Result<Memory> {
        let rel = self.locate(id)?;
        Ok(self.read_memory(id, &rel)?.0)
    }

    /// Replaces the text (and optionally tags and flag) of memory `id`,
    /// keeping every other front-matter key.
    pub fn update_memory(&self, id: &str, update: MemoryUpdate) -> Result<Memory> {
        check_text(&update.text)?;
        if let Some(tags) = &update.tags {
            check_tags(tags)?;
        }
        let rel = self.locate(id)?;
        let (_, doc) = self.read_memory(id, &rel)?;
        let mut front = doc.front;
        front.id = Some(id.to_owned());
        front.updated = Some(timefmt::now_toml());
        if let Some(tags) = update.tags {
            front.tags = tags;
        }
        if let Some(p) = update.processed {
            front.processed = p;
        }
        let body = with_newline(&update.text);
        self.write_record(&rel, &front, &doc.extra, &body, WriteMode::Replace)?;
        self.wrote(&rel);
        self.audit("memory.update", id, "ok");
        Ok(to_memory(id, &rel, &front, &body))
    }

    /// Deletes memory `id`.
    pub fn delete_memory(&self, id: &str) -> Result<()> {
        let rel = self.locate(id)?;
        self.dir.remove(&rel)?;
        self.wrote(&rel);
        self.audit("memory.delete", id, "ok");
        Ok(())
    }

    /// Problems of every memory file, and links where the YYYY/MM tree
    /// has directories.
    pub(super) fn memory_problems(&self) -> Vec<Problem> {
        let mut out = self.unfollowed_links(DIR);
        if let Ok(years) = self.dir.list(DIR) {
            for year in digit_dirs(years, 4) {
                out.extend(self.unfollowed_links(&format!("{DIR}/{year}")));
            }
        }
        // From the disk, not the view: a file fixed by hand is seen fixed at
        // once, before the watcher reports it.
        let (slots, tree) = self.walk_memories();
        out.extend(tree);
        out.extend(bad_slots(slots.iter()));
        out
    }

    /// Every memory file of the profile, read from disk, and the problems
    /// of the tree itself.
    pub(super) fn walk_memories(&self) -> (BTreeMap<MemoryKey, Slot<()>>, Vec<Problem>) {
        let mut slots = BTreeMap::new();
        let mut tree = Vec::new();
        // An unusable tree (a refused directory) is a problem to report,
        // not a failure of the whole listing.
        let months = match self.months() {
            Ok(m) => m,
            Err(e) => {
                tree.extend(problem_of(e));
                return (slots, tree);
            }
        };
        for (year, month) in months {
            let dir = format!("{DIR}/{year}/{month}");
            let entries = match self.dir.list(&dir) {
                Ok(e) => e,
                Err(e) => {
                    tree.extend(problem_of(e.into()));
                    continue;
                }
            };
            for stem in record_stems(entries) {
                let rel = format!("{dir}/{stem}.md");
                if let Some(slot) = self.memory_slot(&stem, &rel) {
                    slots.insert((year.clone(), month.clone(), stem), slot);
                }
            }
        }
        (slots, tree)
    }

    /// What the view keeps of the memory file `rel`: `None` when it is
    /// gone.
    pub(super) fn memory_slot(&self, stem: &str, rel: &str) -> Option<Slot<()>> {
        match self.read_memory(stem, rel) {
            Ok((m, _)) => Some(kept(m, (), rel, |m| &mut m.text)),
            Err(e) => problem_of(e).map(Slot::Bad),
        }
    }

    /// The `(YYYY, MM)` directories, newest first.
    fn months(&self) -> Result<Vec<(String, String)>> {
        let years = match self.dir.list(DIR) {
            Ok(e) => e,
            Err(profile::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut years = digit_dirs(years, 4);
        years.sort_unstable_by(|a, b| b.cmp(a));
        let mut out = Vec::new();
        for year in years {
            let mut months = digit_dirs(self.dir.list(&format!("{DIR}/{year}"))?, 2);
            months.sort_unstable_by(|a, b| b.cmp(a));
            out.extend(months.into_iter().map(|m| (year.clone(), m)));
        }
        Ok(out)
    }

    /// The path of memory `id`: where its id says it is, else wherever a
    /// person moved it within the YYYY/MM tree.
    fn locate(&self, id: &str) -> Result<String> {
        let not_found = || Error::NotFound {
            kind: "memory",
            id: id.to_owned(),
        };
        if !valid_id(id) {
            return Err(not_found());
        }
        if let Some(rel) = path_for(id)
            && self.exists(&rel)?
        {
            return Ok(rel);
        }
        for (year, month) in self.months()? {
            let rel = format!("{DIR}/{year}/{month}/{id}.md");
            if self.exists(&rel)? {
                return Ok(rel);
            }
        }
        Err(not_found())
    }

    fn exists(&self, rel: &str) -> Result<bool> {
        Ok(self.dir.exists(rel)?)
    }

    fn read_memory(&self, stem: &str, rel: &str) -> Result<(Memory, Document<Front>)> {
        let doc = self.read_record::<Front>(stem, rel, KNOWN)?;
        Ok((to_memory(stem, rel, &doc.front, &doc.body), doc))
    }
}

/// The memory in `text`, the file `rel` named `stem`.md, as a read of it
/// parses it (for the fuzz target `record`).
#[cfg(feature = "fuzzing")]
pub(crate) fn parse(stem: &str, rel: &str, text: &str) -> Result<Memory> {
    let doc = super::parse_record::<Front>(stem, rel, text, KNOWN)?;
    Ok(to_memory(stem, rel, &doc.front, &doc.body))
}

impl Store<'_> {}

/// Checks `new` and renders it as a new memory: its path, its file's
/// text, and the memory.
fn render_new(new: NewMemory) -> Result<(String, String, Memory)> {
    check_text(&new.text)?;
    check_tags(&new.tags)?;
    if let Some(source) = &new.source
        && (source.chars().count() > 64 || source.chars().any(char::is_control))
    {
        return Err(Error::Input {
            field: "source".into(),
            reason: "must be at most 64 characters without control characters".into(),
        });
    }
    let id = new_id(PREFIX);
    let rel = path_for(&id).ok_or_else(|| Error::Input {
        field: "id".into(),
        reason: "could not derive a path for a new id".into(),
    })?;
    let front = Front {
        id: Some(id.clone()),
        created: Some(timefmt::now_toml()),
        tags: new.tags,
        source: new.source,
        ..Front::default()
    };
    let body = with_newline(&new.text);
    let text = render_record(&rel, &front, &toml::Table::new(), &body)?;
    let memory = to_memory(&id, &rel, &front, &body);
    Ok((rel, text, memory))
}

/// One page of memories from `index`, newest first, after the id `before`.
pub(super) fn pick<'a>(index: &'a Index, limit: usize, before: Option<&str>) -> Picked<'a> {
    // Months after the cursor's are skipped whole: a key below
    // (year, month + "\0", "") is in that month or an earlier one.
    let upper = match before.and_then(month_of) {
        Some((y, m)) => Bound::Excluded((y, format!("{m}\0"), String::new())),
        None => Bound::Unbounded,
    };
    let mut picked = Picked {
        problems: index.memory_tree.clone(),
        ..Picked::default()
    };
    for ((_, _, stem), slot) in index.memories.range((Bound::Unbounded, upper)).rev() {
        if before.is_some_and(|b| stem.as_str() >= b) {
            continue;
        }
        if picked.items.len() == limit {
            picked.next = picked.items.last().map(|(id, _, _)| (*id).to_owned());
            break;
        }
        match slot {
            Slot::Record { json, whole, .. } => picked.items.push((stem, json, *whole)),
            Slot::Bad(problem) => picked.problems.push(problem.clone()),
        }
    }
    picked
}

fn to_memory(id: &str, rel: &str, front: &Front, body: &str) -> Memory {
    Memory {
        id: id.to_owned(),
        path: rel.to_owned(),
        created: front.created.as_ref().map(ToString::to_string),
        updated: front.updated.as_ref().map(ToString::to_string),
        tags: front.tags.clone(),
        processed: front.processed,
        source: front.source.clone(),
        text: body.to_owned(),
    }
}

impl RecordFront for Front {
    fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    fn tags(&self) -> &[String] {
        &self.tags
    }
}

fn check_text(text: &str) -> Result<()> {
    if text.trim().is_empty() {
        return Err(Error::Input {
            field: "text".into(),
            reason: "must not be empty".into(),
        });
    }
    Ok(())
}

fn digit_dirs(entries: Vec<profile::Entry>, len: usize) -> Vec<String> {
    entries
        .into_iter()
        .filter(|e| e.kind == EntryKind::Dir)
        .map(|e| e.name)
        .filter(|n| n.len() == len && n.bytes().all(|b| b.is_ascii_digit()))
        .collect()
}

/// `(YYYY, MM)` of an id made by [`new_id`](super::new_id).
fn month_of(id: &str) -> Option<(String, String)> {
    let ulid = id.strip_prefix(PREFIX)?.strip_prefix('-')?;
    let ms = ulid::Ulid::from_string(ulid).ok()?.timestamp_ms();
    let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(ms / 1000).ok()?).ok()?;
    Some((
        format!("{:04}", t.year()),
        format!("{:02}", t.month() as u8),
    ))
}

/// Where memory `id` is written: the month its ULID was made in.
fn path_for(id: &str) -> Option<String> {
    let (y, m) = month_of(id)?;
    Some(format!("{DIR}/{y}/{m}/{id}.md"))
}
