//! Tasks: `memory/tasks/<id>.md`, one per file, with a status.

use serde::{Deserialize, Serialize};
use toml::value::Datetime;

use std::collections::BTreeMap;
use std::ops::Bound;

use super::frontmatter::Document;
use super::view::{Index, Picked, Slot, kept};
use super::{
    Error, Page, Problem, RecordFront, Result, Store, bad_slots, check_tags, fill_texts, new_id,
    problem_of, record_stems, valid_id, with_newline,
};
use crate::profile::{self, WriteMode};
use crate::timefmt;

const DIR: &str = "memory/tasks";
const PREFIX: &str = "task";
const KNOWN: &[&str] = &["id", "created", "updated", "status", "title", "due", "tags"];

/// Where a task stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Not started.
    #[default]
    Todo,
    /// Being worked on.
    InProgress,
    /// Finished.
    Done,
    /// Dropped.
    Cancelled,
}

impl TaskStatus {
    /// The status as the API, the files and the command line write it.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Todo => "todo",
            TaskStatus::InProgress => "in_progress",
            TaskStatus::Done => "done",
            TaskStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Front {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(deserialize_with = "super::frontmatter::plain")]
    title: String,
    #[serde(default)]
    status: TaskStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<Datetime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated: Option<Datetime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    due: Option<Datetime>,
    #[serde(default, deserialize_with = "super::frontmatter::plain_list")]
    tags: Vec<String>,
}

/// A task as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Task {
    /// The id (the file name without `.md`).
    pub id: String,
    /// The file, relative to the profile.
    pub path: String,
    /// A one-line title.
    pub title: String,
    /// Where it stands.
    pub status: TaskStatus,
    /// When it was created.
    pub created: Option<String>,
    /// When it was last changed through profiled.
    pub updated: Option<String>,
    /// When it is due (a TOML date or datetime).
    pub due: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Free text below the front matter.
    pub notes: String,
}

/// A task to add.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTask {
    /// A one-line title; must not be empty.
    pub title: String,
    /// Free text.
    #[serde(default)]
    pub notes: String,
    /// Defaults to `todo`.
    #[serde(default)]
    pub status: TaskStatus,
    /// `2026-12-01` or `2026-12-01T09:00:00Z`.
    pub due: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Changes to a task; absent fields are kept.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskPatch {
    /// New title.
    pub title: Option<String>,
    /// New notes.
    pub notes: Option<String>,
    /// New status.
    pub status: Option<TaskStatus>,
    /// New due date; `""` removes it.
    pub due: Option<String>,
    /// New tags.
    pub tags: Option<Vec<String>>,
}

impl Store<'_> {
    /// Adds a task.
    pub fn create_task(&self, new: NewTask) -> Result<Task> {
        check_title(&new.title)?;
        check_tags(&new.tags)?;
        let id = new_id(PREFIX);
        let rel = format!("{DIR}/{id}.md");
        let front = Front {
            id: Some(id.clone()),
            title: new.title.trim().to_owned(),
            status: new.status,
            created: Some(timefmt::now_toml()),
            updated: None,
            due: parse_due(new.due.as_deref())?,
            tags: new.tags,
        };
        let notes = with_newline(&new.notes);
        self.write_record(
            &rel,
            &front,
            &toml::Table::new(),
            &notes,
            WriteMode::CreateNew,
        )?;
        self.wrote(&rel);
        self.audit("task.create", &id, "ok");
        Ok(to_task(&id, &rel, &front, &notes))
    }

    /// One page of tasks, newest first, optionally only those in `status`.
    pub fn list_tasks(
        &self,
        status: Option<TaskStatus>,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Page<Task>> {
        let (mut page, stale) = self.with_index(|index| pick(index, status, limit, before).page());
        fill_texts(&mut page, &stale, |t: &Task| {
            self.read_task(&t.id, &t.path).map(|(t, _)| t)
        });
        Ok(page)
    }

    /// The task `id`.
    pub fn get_task(&self, id: &str) -> Result<Task> {
        let rel = self.task_path(id)?;
        Ok(self.read_task(id, &rel)?.0)
    }

    /// Applies `patch` to task `id`, keeping every other front-matter key.
    pub fn update_task(&self, id: &str, patch: TaskPatch) -> Result<Task> {
        let rel = self.task_path(id)?;
        let (_, doc) = self.read_task(id, &rel)?;
        let mut front = doc.front;
        let mut notes = doc.body;
        if let Some(title) = patch.title {
            check_title(&title)?;
            front.title = title.trim().to_owned();
        }
        if let Some(tags) = patch.tags {
            check_tags(&tags)?;
            front.tags = tags;
        }
        if let Some(s) = patch.status {
            front.status = s;
        }
        if let Some(due) = patch.due {
            front.due = parse_due(Some(&due).filter(|d| !d.is_empty()).map(String::as_str))?;
        }
        if let Some(n) = patch.notes {
            notes = with_newline(&n);
        }
        front.id = Some(id.to_owned());
        front.updated = Some(timefmt::now_toml());
        self.write_record(&rel, &front, &doc.extra, &notes, WriteMode::Replace)?;
        self.wrote(&rel);
        self.audit("task.update", id, "ok");
        Ok(to_task(id, &rel, &front, &notes))
    }

    /// Deletes task `id`.
    pub fn delete_task(&self, id: &str) -> Result<()> {
        let rel = self.task_path(id)?;
        self.dir.remove(&rel)?;
        self.wrote(&rel);
        self.audit("task.delete", id, "ok");
        Ok(())
    }

    /// Problems of every task file.
    pub(super) fn task_problems(&self) -> Vec<Problem> {
        // From the disk, like the memories' problems.
        let (slots, mut out) = self.walk_tasks();
        out.extend(bad_slots(slots.iter()));
        out
    }

    /// Every task file of the profile, read from disk, and the problems of
    /// the task directory itself.
    pub(super) fn walk_tasks(&self) -> (BTreeMap<String, Slot<TaskStatus>>, Vec<Problem>) {
        match self.task_stems() {
            Ok(stems) => (
                stems
                    .into_iter()
                    .filter_map(|stem| {
                        let rel = format!("{DIR}/{stem}.md");
                        self.task_slot(&stem, &rel).map(|slot| (stem, slot))
                    })
                    .collect(),
                Vec::new(),
            ),
            Err(e) => (BTreeMap::new(), problem_of(e).into_iter().collect()),
        }
    }

    /// What the view keeps of the task file `rel`: `None` when it is gone.
    pub(super) fn task_slot(&self, stem: &str, rel: &str) -> Option<Slot<TaskStatus>> {
        match self.read_task(stem, rel) {
            Ok((t, _)) => {
                let status = t.status;
                Some(kept(t, status, rel, |t| &mut t.notes))
            }
            Err(e) => problem_of(e).map(Slot::Bad),
        }
    }

    fn task_stems(&self) -> Result<Vec<String>> {
        match self.dir.list(DIR) {
            Ok(entries) => Ok(record_stems(entries)),
            Err(profile::Error::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    fn task_path(&self, id: &str) -> Result<String> {
        let rel = format!("{DIR}/{id}.md");
        if valid_id(id) && self.dir.exists(&rel)? {
            Ok(rel)
        } else {
            Err(Error::NotFound {
                kind: "task",
                id: id.to_owned(),
            })
        }
    }

    fn read_task(&self, stem: &str, rel: &str) -> Result<(Task, Document<Front>)> {
        let doc = self.read_record::<Front>(stem, rel, KNOWN)?;
        Ok((to_task(stem, rel, &doc.front, &doc.body), doc))
    }
}

/// The task in `text`, the file `rel` named `stem`.md, as a read of it
/// parses it (for the fuzz target `record`).
#[cfg(feature = "fuzzing")]
pub(crate) fn parse(stem: &str, rel: &str, text: &str) -> Result<Task> {
    let doc = super::parse_record::<Front>(stem, rel, text, KNOWN)?;
    Ok(to_task(stem, rel, &doc.front, &doc.body))
}

impl Store<'_> {}

/// One page of tasks from `index`, newest first, optionally only those in
/// `status`.
pub(super) fn pick<'a>(
    index: &'a Index,
    status: Option<TaskStatus>,
    limit: usize,
    before: Option<&str>,
) -> Picked<'a> {
    let upper = before.map_or(Bound::Unbounded, Bound::Excluded);
    let mut picked = Picked {
        problems: index.task_tree.clone(),
        ..Picked::default()
    };
    for (id, slot) in index.tasks.range::<str, _>((Bound::Unbounded, upper)).rev() {
        match slot {
            Slot::Record { json, meta, whole } if status.is_none_or(|s| s == *meta) => {
                if picked.items.len() == limit {
                    picked.next = picked.items.last().map(|(id, _, _)| (*id).to_owned());
                    break;
                }
                picked.items.push((id, json, *whole));
            }
            Slot::Record { .. } => {}
            Slot::Bad(problem) => picked.problems.push(problem.clone()),
        }
    }
    picked
}

fn to_task(id: &str, rel: &str, front: &Front, notes: &str) -> Task {
    Task {
        id: id.to_owned(),
        path: rel.to_owned(),
        title: front.title.clone(),
        status: front.status,
        created: front.created.as_ref().map(ToString::to_string),
        updated: front.updated.as_ref().map(ToString::to_string),
        due: front.due.as_ref().map(ToString::to_string),
        tags: front.tags.clone(),
        notes: notes.to_owned(),
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

fn check_title(title: &str) -> Result<()> {
    if title.trim().is_empty() || super::frontmatter::control_char(title).is_some() {
        return Err(Error::Input {
            field: "title".into(),
            reason: "must be one non-empty line without control characters".into(),
        });
    }
    Ok(())
}

fn parse_due(due: Option<&str>) -> Result<Option<Datetime>> {
    due.map(|d| match d.parse::<Datetime>() {
        // A bare time of day has no day to be due on.
        Ok(dt) if dt.date.is_some() => Ok(dt),
        _ => Err(Error::Input {
            field: "due".into(),
            reason: format!("{d:?} is not a date; write 2026-12-01 or 2026-12-01T09:00:00Z"),
        }),
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::TaskStatus;

    #[test]
    fn a_status_is_written_as_serde_writes_it() {
        for s in [
            TaskStatus::Todo,
            TaskStatus::InProgress,
            TaskStatus::Done,
            TaskStatus::Cancelled,
        ] {
            assert_eq!(serde_json::to_value(s).ok(), Some(s.as_str().into()));
        }
    }
}
