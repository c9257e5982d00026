//! Paths that must stay apart. The profiles root is a directory whose
//! children are named by accounts and handed to them (a profile is adopted:
//! chowned to the account of its name), and the knowledge directory holds
//! files that accounts create. Were either the state directory, or contain
//! one of the daemon's root-only directories, an account named like that
//! directory (`keys`, `sessions`) would be given it. So neither may be
//! equal to, contain, or sit inside a root-only directory, nor overlap the
//! other; they may sit inside the state or runtime directory (the default
//! layout puts them in the state directory), where their own name is
//! theirs.
//!
//! Paths are compared as written (after `Path::components`, which drops
//! `.` and repeated slashes; `..` is refused when the config is read):
//! a symbolic link that joins two paths is not seen here.

use std::ops::Range;
use std::path::{Path, PathBuf};

/// What lives directly in the state directory, root's only: the daemon
/// identities (creds::keys), sessions (daemon), the system audit log
/// (`Paths::audit_dir`), the search indexes (search::root) and the host's
/// credentials file (creds::vault).
const STATE_ENTRIES: &[&str] = &["keys", "sessions", "audit", "index", "credentials.age"];
/// What lives directly in the runtime directory besides the socket and the
/// lock directory (configured on their own): the agents' credentials
/// directories (agents::cycle, daemon).
const RUNTIME_ENTRIES: &[&str] = &["credentials"];

/// A configured path, the key it comes from, and where the file sets it
/// (`None`: the built-in default).
#[derive(Clone, Debug)]
pub struct Place {
    /// The dotted key, `paths.state_dir`.
    pub key: &'static str,
    /// The path.
    pub path: PathBuf,
    /// The byte range of its value in the config file, when written there.
    pub span: Option<Range<usize>>,
}

impl Place {
    /// A place for `path` from `key`.
    pub fn new(key: &'static str, path: &Path, span: Option<Range<usize>>) -> Place {
        Place {
            key,
            path: path.to_owned(),
            span,
        }
    }
}

/// Two places that overlap: the account-named one, the other, and why.
#[derive(Debug)]
pub struct Clash {
    /// Where to point the error: the written one of the two.
    pub span: Option<Range<usize>>,
    /// What is wrong and what to do.
    pub reason: String,
}

/// How two directories lie towards each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Relation {
    Same,
    /// The first contains the second.
    Contains,
    /// The first is inside the second.
    Inside,
    Apart,
}

fn relation(a: &Path, b: &Path) -> Relation {
    let (a, b): (PathBuf, PathBuf) = (a.components().collect(), b.components().collect());
    if a == b {
        Relation::Same
    } else if b.starts_with(&a) {
        Relation::Contains
    } else if a.starts_with(&b) {
        Relation::Inside
    } else {
        Relation::Apart
    }
}

/// Checks that no account-named directory in `named` overlaps another one,
/// or a root-only place of `state` (the state directory), `runtime` (the
/// runtime directory) or `private` (the lock directory, the socket, the
/// agents directory …).
pub fn check(
    named: &[Place],
    state: &Place,
    runtime: &Place,
    private: &[Place],
) -> Result<(), Clash> {
    let entries_of = |container: &Place, names: &[&str]| {
        names
            .iter()
            .map(|name| Place {
                key: container.key,
                path: container.path.join(name),
                span: container.span.clone(),
            })
            .collect::<Vec<_>>()
    };
    let mut entries = entries_of(state, STATE_ENTRIES);
    entries.extend(entries_of(runtime, RUNTIME_ENTRIES));
    for (i, dir) in named.iter().enumerate() {
        // Containers: a named directory may sit inside these, not be them.
        for container in [state, runtime] {
            match relation(&dir.path, &container.path) {
                Relation::Same | Relation::Contains => {
                    return Err(clash(dir, container, &describe(dir, container, state)));
                }
                Relation::Inside | Relation::Apart => {}
            }
        }
        let others = named
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| p);
        for other in entries.iter().chain(private).chain(others) {
            if relation(&dir.path, &other.path) != Relation::Apart {
                return Err(clash(dir, other, &describe(dir, other, state)));
            }
        }
    }
    Ok(())
}

/// The reason for a clash of the account-named `dir` with `other`.
fn describe(dir: &Place, other: &Place, state: &Place) -> String {
    let (d, o) = (dir.path.display(), other.path.display());
    let what = match relation(&dir.path, &other.path) {
        Relation::Same => format!("{} {d} is also {}", dir.key, other.key),
        Relation::Contains => {
            let name = other
                .path
                .strip_prefix(&dir.path)
                .ok()
                .and_then(|rest| rest.components().next())
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .unwrap_or_default();
            format!(
                "{} {d} contains {} {o}: an account named {name:?} would be given it",
                dir.key, other.key
            )
        }
        Relation::Inside | Relation::Apart => {
            format!("{} {d} is inside {} {o}", dir.key, other.key)
        }
    };
    format!(
        "{what}; every entry of {} is named by an account and handed to it, so \
         give it a directory of its own apart from the daemon's (the defaults are \
         {s}/profiles and {s}/knowledge)",
        dir.key,
        s = state.path.display()
    )
}

/// The clash, pointed at the key of the two that the file sets (the
/// account-named one when both are).
fn clash(dir: &Place, other: &Place, reason: &str) -> Clash {
    let (span, key) = match (&dir.span, &other.span) {
        (None, Some(span)) => (Some(span.clone()), other.key),
        (span, _) => (span.clone(), dir.key),
    };
    Clash {
        span,
        reason: format!("{key}: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(key: &'static str, path: &str) -> Place {
        Place::new(key, Path::new(path), None)
    }

    fn run(profiles: &str, knowledge: &str, state: &str) -> Result<(), Clash> {
        let state = place("paths.state_dir", state);
        let runtime = place("paths.runtime_dir", "/run/profiled");
        let private = [
            place("paths.lock_dir", "/run/profiled/locks"),
            place("paths.socket", "/run/profiled/api.sock"),
            place("paths.agents_dir", "/etc/profiled/agents.d"),
        ];
        let named = [
            place("paths.profiles_dir", profiles),
            place("knowledge.dir", knowledge),
        ];
        check(&named, &state, &runtime, &private)
    }

    #[test]
    fn the_default_layout_passes() {
        let ok = run(
            "/var/lib/profiled/profiles",
            "/var/lib/profiled/knowledge",
            "/var/lib/profiled",
        );
        assert!(ok.is_ok(), "{ok:?}");
        assert!(run("/home/profiles", "/srv/kb", "/var/lib/profiled").is_ok());
    }

    #[test]
    fn a_named_directory_never_holds_the_daemons_own() {
        let reason = |r: Result<(), Clash>| r.err().map(|c| c.reason).unwrap_or_default();
        // The state directory itself: `keys` would be a profile.
        let r = reason(run("/var/lib/profiled", "/srv/kb", "/var/lib/profiled"));
        assert!(
            r.contains("paths.profiles_dir") && r.contains("is also paths.state_dir"),
            "{r}"
        );
        // Above it: an account named `profiled` would get the state dir.
        let r = reason(run("/var/lib", "/srv/kb", "/var/lib/profiled"));
        assert!(r.contains("an account named \"profiled\""), "{r}");
        // One of its root-only entries, or inside one.
        for p in ["/var/lib/profiled/keys", "/var/lib/profiled/sessions/x"] {
            let r = reason(run(p, "/srv/kb", "/var/lib/profiled"));
            assert!(!r.is_empty(), "{p} passed");
        }
        // The runtime directory, the lock directory, the socket's.
        for p in [
            "/run/profiled",
            "/run/profiled/locks",
            "/run",
            "/run/profiled/credentials",
        ] {
            assert!(
                run(p, "/srv/kb", "/var/lib/profiled").is_err(),
                "{p} passed"
            );
        }
        // The two named directories apart from each other.
        for (p, k) in [
            ("/srv/p", "/srv/p"),
            ("/srv/p", "/srv/p/kb"),
            ("/srv/p/x", "/srv/p"),
        ] {
            assert!(run(p, k, "/var/lib/profiled").is_err(), "{p} {k} passed");
        }
        // Written differently, the same path.
        assert!(run("/var/lib/profiled/./", "/srv/kb", "/var//lib/profiled").is_err());
    }
}
