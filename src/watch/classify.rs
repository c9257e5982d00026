//! Which paths of a profile are records worth an event, and what they are.
//!
//! Only the exact layout is recognised, so editor swap files (`.x.swp`,
//! `x~`, vim's `4913`), the daemon's own temporary files (`.<name>.<ULID>.tmp`)
//! and logs never become events.

use serde::Serialize;

use crate::store::valid_id;

/// What kind of record changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `memory/episodic/YYYY/MM/<id>.md`
    Memory,
    /// `memory/tasks/<id>.md`
    Task,
    /// `persona/core.toml` and `persona/facets/<name>.toml`
    Persona,
    /// `profile.toml`
    Settings,
    /// `memory/inbox/<name>`: a file dropped for the ingest agent (no
    /// record id; `on_change` triggers of agents match its path).
    Inbox,
    /// `<id>.md` in the knowledge directory (not in a profile).
    Knowledge,
}

impl Kind {
    /// The name used in event types (`memory.updated`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Memory => "memory",
            Kind::Task => "task",
            Kind::Persona => "persona",
            Kind::Settings => "settings",
            Kind::Inbox => "inbox",
            Kind::Knowledge => "knowledge",
        }
    }
}

/// The kind and record id of the file at `rel` (relative to the profile),
/// or `None` when it is not a record file.
pub fn classify(rel: &str) -> Option<(Kind, Option<String>)> {
    let parts: Vec<&str> = rel.split('/').collect();
    match parts.as_slice() {
        ["profile.toml"] => Some((Kind::Settings, None)),
        ["memory", "inbox", name] if is_dropped_file(name) => Some((Kind::Inbox, None)),
        ["persona", "core.toml"] => Some((Kind::Persona, None)),
        ["persona", "facets", name] => stem(name, ".toml").map(|id| (Kind::Persona, Some(id))),
        ["memory", "tasks", name] => stem(name, ".md").map(|id| (Kind::Task, Some(id))),
        ["memory", "episodic", year, month, name] if digits(year, 4) && digits(month, 2) => {
            stem(name, ".md").map(|id| (Kind::Memory, Some(id)))
        }
        _ => None,
    }
}

/// Whether the directory `rel` (`""` for the profile) may hold record
/// files, so a scan descends into it.
pub fn may_hold_records(rel: &str) -> bool {
    let parts: Vec<&str> = if rel.is_empty() {
        Vec::new()
    } else {
        rel.split('/').collect()
    };
    match parts.as_slice() {
        []
        | ["persona"]
        | ["persona", "facets"]
        | ["memory"]
        | ["memory", "episodic"]
        | ["memory", "inbox"]
        | ["memory", "tasks"] => true,
        ["memory", "episodic", year] => digits(year, 4),
        ["memory", "episodic", year, month] => digits(year, 4) && digits(month, 2),
        _ => false,
    }
}

/// A file someone dropped, not an editor's or a copier's temporary one
/// (hidden names, `x~`, vim's `4913`).
fn is_dropped_file(name: &str) -> bool {
    !name.starts_with('.') && !name.ends_with('~') && name != "4913"
}

fn stem(name: &str, ext: &str) -> Option<String> {
    name.strip_suffix(ext)
        .filter(|id| valid_id(id))
        .map(str::to_owned)
}

fn digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_recognised_and_temporary_files_are_not() {
        let id = "evt-01JD3M8Q7Z8W2N5V4K1B6X9C0A";
        assert_eq!(
            classify(&format!("memory/episodic/2026/11/{id}.md")),
            Some((Kind::Memory, Some(id.to_owned())))
        );
        assert_eq!(
            classify("memory/tasks/tsk-1.md"),
            Some((Kind::Task, Some("tsk-1".to_owned())))
        );
        assert_eq!(classify("profile.toml"), Some((Kind::Settings, None)));
        assert_eq!(classify("persona/core.toml"), Some((Kind::Persona, None)));
        for other in [
            format!("memory/episodic/2026/11/.{id}.md.01JD3M8Q7Z8W2N5V4K1B6X9C0A.tmp"),
            format!("memory/episodic/2026/11/.{id}.md.swp"),
            format!("memory/episodic/2026/11/{id}.md~"),
            format!("memory/episodic/2026/11/{id}.md.swp"),
            "memory/episodic/2026/11/4913".to_owned(),
            "memory/inbox/.note.md.swp".to_owned(),
            "logs/audit/2026-11-22.jsonl".to_owned(),
            "memory/episodic/26/11/x.md".to_owned(),
        ] {
            assert_eq!(classify(&other), None, "{other}");
        }
    }

    #[test]
    fn scans_descend_only_where_records_live() {
        assert!(may_hold_records(""));
        assert!(may_hold_records("memory/episodic/2026/11"));
        assert!(!may_hold_records("memory/episodic/2026/11/x"));
        assert!(!may_hold_records("logs"));
        assert!(may_hold_records("memory/inbox"));
        assert_eq!(classify("memory/inbox/note.md"), Some((Kind::Inbox, None)));
    }
}
