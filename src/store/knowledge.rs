//! The knowledge hub: the team's shared notes, one Markdown file with TOML
//! front matter per entry (`<id>.md`) in one directory that every eligible
//! account reads, each attributed to the account that owns its file.
//!
//! Attribution is the file's owner as `fstat` says, never a front-matter
//! key, so it cannot be forged: an `author` written in the file is kept as
//! an unknown key and ignored. An entry whose file is not a regular file
//! with one link, or whose owner is not an eligible account, is refused,
//! reported (listing `problems`, the log and the system audit log, once per
//! version of the file) and never served.
//!
//! Entries are read through a cache keyed by each file's `lstat` stamp, so
//! a listing re-reads only the files that changed since the last one.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use toml::value::Datetime;

use super::{
    Error, Page, Problem, Result, check_tags, frontmatter, new_id, valid_id, with_newline,
};
use crate::accounts::{self, Account, Eligibility, Policy, UserId};
use crate::audit::{self, SystemLog};
use crate::profile::{self, EntryKind, Probe, SharedDir, Stamp};
use crate::timefmt;

const PREFIX: &str = "kn";
const KNOWN: &[&str] = &["id", "created", "title", "tags"];
const MAX_TITLE: usize = 200;

#[derive(Serialize, Deserialize, Default)]
struct Front {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<Datetime>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "frontmatter::plain_opt"
    )]
    title: Option<String>,
    #[serde(default, deserialize_with = "frontmatter::plain_list")]
    tags: Vec<String>,
}

/// A knowledge entry as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KnowledgeEntry {
    /// The id (the file name without `.md`).
    pub id: String,
    /// The file, relative to the knowledge directory.
    pub path: String,
    /// The title (the id when the file has none).
    pub title: String,
    /// Tags.
    pub tags: Vec<String>,
    /// When it was created, as its front matter says.
    pub created: Option<String>,
    /// The account that owns the file.
    pub author: String,
    /// The text.
    pub text: String,
}

/// A knowledge entry to add.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKnowledge {
    /// The title; must not be empty.
    pub title: String,
    /// The text; must not be empty.
    pub text: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// What a removal removed.
#[derive(Clone, Debug)]
pub struct Removed {
    /// The entry's owner.
    pub owner: UserId,
    /// Its account name, when there is one.
    pub author: Option<String>,
}

/// An entry as read from its file, before its owner is judged.
#[derive(Clone, Debug)]
struct Parsed {
    owner: UserId,
    /// The version read, as the open file said.
    stamp: Stamp,
    /// Newest-first order: `created`, else the file's modification time.
    secs: i64,
    front: KnowledgeEntry,
}

struct Cached {
    probe: Probe,
    read: std::result::Result<Parsed, Bad>,
    /// Whether a refusal of this version was logged and audited.
    reported: bool,
}

/// Why a file is not served.
#[derive(Clone, Debug)]
struct Bad {
    problem: Problem,
    /// Refused by rule 1 (rather than unparsable): logged and audited.
    refused: bool,
}

impl Bad {
    fn refused(name: &str, reason: &str) -> Bad {
        Bad {
            problem: problem(name, format!("refused: {reason}")),
            refused: true,
        }
    }
}

/// The knowledge directory and what was read of it.
pub struct KnowledgeHub {
    dir: SharedDir,
    system: SystemLog,
    cache: Mutex<HashMap<String, Cached>>,
}

impl KnowledgeHub {
    /// The hub over `dir`; refusals are audited in `system`.
    pub fn new(dir: SharedDir, system: SystemLog) -> KnowledgeHub {
        KnowledgeHub {
            dir,
            system,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &SharedDir {
        &self.dir
    }

    fn cache(&self) -> MutexGuard<'_, HashMap<String, Cached>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an entry written by `author`, as a file the author owns.
    pub fn create(&self, author: &Account, new: NewKnowledge) -> Result<KnowledgeEntry> {
        let title = new.title.trim();
        if title.is_empty()
            || title.chars().count() > MAX_TITLE
            || frontmatter::control_char(title).is_some()
        {
            return Err(Error::Input {
                field: "title".into(),
                reason: format!(
                    "must be 1 to {MAX_TITLE} characters on one line, without control characters"
                ),
            });
        }
        if new.text.trim().is_empty() {
            return Err(Error::Input {
                field: "text".into(),
                reason: "must not be empty".into(),
            });
        }
        check_tags(&new.tags)?;
        let id = new_id(PREFIX);
        let name = format!("{id}.md");
        let created = timefmt::now_toml();
        let front = Front {
            id: Some(id.clone()),
            created: Some(created),
            title: Some(title.to_owned()),
            tags: new.tags.clone(),
        };
        let body = with_newline(&new.text);
        let text = frontmatter::render(&front, &toml::Table::new(), &body).map_err(|reason| {
            Error::Input {
                field: "title".into(),
                reason,
            }
        })?;
        self.dir.create(&name, text.as_bytes(), author)?;
        self.audit(&author.name, &author.name, "knowledge.create", &id, "ok");
        Ok(KnowledgeEntry {
            id,
            path: name,
            title: title.to_owned(),
            tags: new.tags,
            created: Some(created.to_string()),
            author: author.name.clone(),
            text: body,
        })
    }

    /// One page of entries, newest first, after the cursor `before` (a
    /// page's `next`). Refused and unreadable files are `problems`.
    pub fn list(
        &self,
        policy: &Policy,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Page<KnowledgeEntry>> {
        let after = match before {
            None => None,
            Some(c) => Some(parse_cursor(c).ok_or_else(|| Error::Input {
                field: "before".into(),
                reason: "not a cursor of this listing; pass the `next` of the previous page".into(),
            })?),
        };
        let mut names: Vec<String> = self
            .dir
            .list()?
            .into_iter()
            .filter(|e| id_of(&e.name).is_some())
            .map(|e| e.name)
            .collect();
        names.sort_unstable();
        let mut authors = Authors::new(policy);
        let mut rows = Vec::new();
        let mut problems = Vec::new();
        {
            let mut cache = self.cache();
            cache.retain(|name, _| names.binary_search(name).is_ok());
            for name in &names {
                match self.served(&mut cache, name, &mut authors) {
                    Ok(Some((secs, entry))) => rows.push((secs, entry)),
                    Ok(None) => {}
                    Err(p) => problems.push(p),
                }
            }
        }
        rows.sort_unstable_by(|a, b| (b.0, &b.1.id).cmp(&(a.0, &a.1.id)));
        let mut items = Vec::new();
        let mut next = None;
        for (secs, entry) in rows {
            if after
                .as_ref()
                .is_some_and(|(s, id)| (secs, &entry.id) >= (*s, id))
            {
                continue;
            }
            if items.len() == limit {
                next = items
                    .last()
                    .map(|(s, e): &(i64, KnowledgeEntry)| format!("{s}.{}", e.id));
                break;
            }
            items.push((secs, entry));
        }
        Ok(Page {
            items: items.into_iter().map(|(_, e)| e).collect(),
            next,
            problems,
        })
    }

    /// The entry `id`.
    pub fn get(&self, policy: &Policy, id: &str) -> Result<KnowledgeEntry> {
        let not_found = || Error::NotFound {
            kind: "knowledge entry",
            id: id.to_owned(),
        };
        if !valid_id(id) {
            return Err(not_found());
        }
        let name = format!("{id}.md");
        let mut authors = Authors::new(policy);
        let mut cache = self.cache();
        match self.served(&mut cache, &name, &mut authors) {
            Ok(Some((_, entry))) => Ok(entry),
            Ok(None) => Err(not_found()),
            Err(problem) => Err(Error::Invalid { problem }),
        }
    }

    /// Removes the entry `id` for `actor`: its author, or an admin (the
    /// caller says which). A link or refused file is removed like an entry
    /// (by its owner or an admin), so it can be cleaned up.
    pub fn remove(&self, id: &str, actor: &Account, admin: bool) -> Result<Removed> {
        let not_found = || Error::NotFound {
            kind: "knowledge entry",
            id: id.to_owned(),
        };
        if !valid_id(id) {
            return Err(not_found());
        }
        let name = format!("{id}.md");
        let probe = self.dir.probe(&name)?.ok_or_else(not_found)?;
        let author = accounts::by_uid(probe.owner).ok().flatten().map(|a| a.name);
        if probe.owner != actor.uid && !admin {
            return Err(Error::Forbidden {
                reason: format!(
                    "knowledge entry {id} is {}'s; only its author or an admin may remove it",
                    author.as_deref().unwrap_or("another account")
                ),
            });
        }
        self.dir.remove(&name)?;
        self.cache().remove(&name);
        let owner = author.clone().unwrap_or_else(|| probe.owner.to_string());
        self.audit(&actor.name, &owner, "knowledge.delete", id, "ok");
        Ok(Removed {
            owner: probe.owner,
            author,
        })
    }

    /// The stamp and author of the entry file `name` when it would be
    /// served (a regular file with one link whose owner is an eligible
    /// account), judged without opening it; anything else is `None` and,
    /// when something is there, reported once. The watcher's view.
    pub fn attribute(&self, name: &str, policy: &Policy) -> Option<(Stamp, String)> {
        id_of(name)?;
        let probe = match self.dir.probe(name) {
            Ok(Some(p)) => p,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!("knowledge: {e}");
                return None;
            }
        };
        let refusal = match (probe.kind, probe.links) {
            (EntryKind::File, 1) => None,
            (EntryKind::File, n) => Some(profile::Refusal::HardLinked(n).to_string()),
            (EntryKind::Symlink, _) => Some(SYMLINK.to_owned()),
            (_, _) => Some("it is not a regular file; remove it".to_owned()),
        };
        let judged = match refusal {
            Some(r) => Err(r),
            None => Authors::new(policy).name(probe.owner),
        };
        match judged {
            Ok(author) => Some((probe.stamp, author)),
            Err(reason) => {
                let mut cache = self.cache();
                let cached = cache.entry(name.to_owned()).or_insert_with(|| Cached {
                    probe,
                    read: Err(Bad::refused(name, &reason)),
                    reported: false,
                });
                if cached.probe != probe {
                    *cached = Cached {
                        probe,
                        read: Err(Bad::refused(name, &reason)),
                        reported: false,
                    };
                }
                self.report(cached, name, &reason);
                None
            }
        }
    }

    /// The entry `name` if it may be served: `Ok(None)` when it is gone,
    /// `Err` with the problem when it is refused or unreadable.
    fn served(
        &self,
        cache: &mut HashMap<String, Cached>,
        name: &str,
        authors: &mut Authors<'_>,
    ) -> std::result::Result<Option<(i64, KnowledgeEntry)>, Problem> {
        let probe = match self.dir.probe(name) {
            Ok(Some(p)) => p,
            Ok(None) => {
                cache.remove(name);
                return Ok(None);
            }
            Err(e) => return Err(problem(name, e.to_string())),
        };
        let fresh = cache.get(name).is_some_and(|c| c.probe == probe);
        if !fresh {
            let read = self.read(name);
            // Kept under the version the open file had: if the file changed
            // after the probe, the next probe differs and it is read again.
            let probe = match &read {
                Ok(parsed) => Probe {
                    stamp: parsed.stamp,
                    ..probe
                },
                Err(_) => probe,
            };
            cache.insert(
                name.to_owned(),
                Cached {
                    probe,
                    read,
                    reported: false,
                },
            );
        }
        let Some(cached) = cache.get_mut(name) else {
            return Ok(None);
        };
        let parsed = match &cached.read {
            Ok(p) => p.clone(),
            Err(bad) => {
                let bad = bad.clone();
                if bad.refused {
                    self.report(cached, name, &bad.problem.reason);
                }
                return Err(bad.problem);
            }
        };
        match authors.name(parsed.owner) {
            Ok(author) => {
                let mut entry = parsed.front;
                entry.author = author;
                Ok(Some((parsed.secs, entry)))
            }
            Err(reason) => {
                self.report(cached, name, &reason);
                Err(problem(name, format!("refused: {reason}")))
            }
        }
    }

    /// Reads and parses the entry file `name`.
    fn read(&self, name: &str) -> std::result::Result<Parsed, Bad> {
        let unparsable = |line, reason| Bad {
            problem: Problem {
                file: name.to_owned(),
                line,
                reason,
            },
            refused: false,
        };
        let id = id_of(name).ok_or_else(|| unparsable(None, "not an entry name".into()))?;
        let file = self.dir.read(name).map_err(|e| match e {
            profile::Error::Refused { reason, .. } => match reason {
                profile::Refusal::Symlink => Bad::refused(name, SYMLINK),
                r => Bad::refused(name, &r.to_string()),
            },
            e => unparsable(None, e.to_string()),
        })?;
        let text = String::from_utf8(file.bytes)
            .map_err(|_| unparsable(None, "not valid UTF-8 text; save the file as UTF-8".into()))?;
        let doc = frontmatter::parse::<Front>(&text, KNOWN)
            .map_err(|e| unparsable(Some(e.line), e.reason))?;
        if let Some(written) = &doc.front.id
            && written != id
        {
            return Err(unparsable(
                super::line_of_key(&text, "id"),
                format!("id {written:?} does not match the file name {id}.md; rename one to match"),
            ));
        }
        let created = doc.front.created.as_ref().map(ToString::to_string);
        let secs = created
            .as_deref()
            .and_then(|c| {
                time::OffsetDateTime::parse(c, &time::format_description::well_known::Rfc3339).ok()
            })
            .map_or_else(
                || mtime_secs(&file.stamp),
                time::OffsetDateTime::unix_timestamp,
            );
        Ok(Parsed {
            owner: file.owner,
            stamp: file.stamp,
            secs,
            front: KnowledgeEntry {
                id: id.to_owned(),
                path: name.to_owned(),
                title: doc.front.title.unwrap_or_else(|| id.to_owned()),
                tags: doc.front.tags,
                created,
                author: String::new(),
                text: doc.body,
            },
        })
    }

    /// Logs and audits a refusal of `name`, once per version of the file.
    fn report(&self, cached: &mut Cached, name: &str, reason: &str) {
        if cached.reported {
            return;
        }
        cached.reported = true;
        let owner = cached.probe.owner;
        let user = accounts::by_uid(owner)
            .ok()
            .flatten()
            .map_or_else(|| owner.to_string(), |a| a.name);
        tracing::warn!("knowledge: {name} (owner {user}) is never served: {reason}");
        self.audit(
            "profiled",
            &user,
            "knowledge.read",
            name,
            &format!("refused: {reason}"),
        );
    }

    fn audit(&self, actor: &str, user: &str, action: &str, target: &str, result: &str) {
        self.system.append(&audit::Line {
            time: timefmt::now_rfc3339(),
            actor,
            user,
            action,
            target,
            result,
        });
    }
}

const SYMLINK: &str = "it is a symbolic link; links in the knowledge directory are never \
    followed (an entry is its author's own regular file): remove it";

/// The entry id of the file name `name`: `<id>.md`, not hidden.
pub fn id_of(name: &str) -> Option<&str> {
    name.strip_suffix(".md").filter(|id| valid_id(id))
}

fn problem(name: &str, reason: String) -> Problem {
    Problem {
        file: name.to_owned(),
        line: None,
        reason,
    }
}

fn mtime_secs(stamp: &Stamp) -> i64 {
    stamp
        .modified()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `SECS.ID`, as a page's `next` is written.
fn parse_cursor(c: &str) -> Option<(i64, String)> {
    let (secs, id) = c.split_once('.')?;
    if !valid_id(id) {
        return None;
    }
    Some((secs.parse().ok()?, id.to_owned()))
}

/// The account names of file owners, each eligible account looked up once
/// per listing.
struct Authors<'p> {
    policy: &'p Policy,
    known: HashMap<UserId, std::result::Result<String, String>>,
}

impl<'p> Authors<'p> {
    fn new(policy: &'p Policy) -> Authors<'p> {
        Authors {
            policy,
            known: HashMap::new(),
        }
    }

    /// The name of the eligible account `uid`, or why its files are not
    /// served.
    fn name(&mut self, uid: UserId) -> std::result::Result<String, String> {
        let policy = self.policy;
        self.known
            .entry(uid)
            .or_insert_with(|| {
                let not_served = |why: String| {
                    format!(
                        "it is owned by uid {uid}, {why}; an entry is attributed to its file's \
                         owner, so only eligible accounts' files are served"
                    )
                };
                match accounts::by_uid(uid) {
                    Ok(Some(a)) => match policy.eligibility(&a) {
                        Ok(Eligibility::Eligible) => Ok(a.name),
                        Ok(Eligibility::Ineligible(r)) => {
                            Err(not_served(format!("{}: {r}", a.name)))
                        }
                        Err(e) => Err(not_served(format!("which cannot be looked up now ({e})"))),
                    },
                    Ok(None) => Err(not_served("which has no account".into())),
                    Err(e) => Err(not_served(format!("which cannot be looked up now ({e})"))),
                }
            })
            .clone()
    }
}
