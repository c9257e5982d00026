//! The account database as it stands at one moment, for work that looks up
//! many accounts at once (an agent cycle over every profile).
//!
//! With nss-files every `getpwnam` and every `getgrouplist` reads
//! /etc/passwd or /etc/group from the top: a cycle over N accounts that
//! asks NSS once per account costs O(N²). A snapshot reads each file once,
//! lazily (on the first question that needs it), and answers from maps.
//!
//! It answers from the files only where that is provably what NSS would
//! answer (see [`Sources`]); everything else goes to NSS as before, so
//! LDAP and SSSD hosts keep working unchanged. A snapshot is meant to live
//! for one cycle: an account removed or a group changed afterwards is seen
//! by the next snapshot.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::OnceLock;

use super::{Account, Error, GroupId, UserId, by_name, group_id, is_valid_name};

/// Where the files are (the real ones outside unit tests).
#[derive(Clone, Debug)]
pub struct Files {
    /// /etc/nsswitch.conf
    pub nsswitch: PathBuf,
    /// /etc/passwd
    pub passwd: PathBuf,
    /// /etc/group
    pub group: PathBuf,
}

impl Default for Files {
    fn default() -> Self {
        Files {
            nsswitch: "/etc/nsswitch.conf".into(),
            passwd: "/etc/passwd".into(),
            group: "/etc/group".into(),
        }
    }
}

/// What /etc/nsswitch.conf lets the snapshot answer from the files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sources {
    /// `passwd:` starts with a plain `files`: a name found in /etc/passwd
    /// is answered from its first line there (NSS returns on the first
    /// source that knows the name); other names still go to NSS.
    pub passwd_files_first: bool,
    /// `passwd:` is `files` alone: a name missing from /etc/passwd does
    /// not exist.
    pub passwd_files_only: bool,
    /// `group:` is `files` alone. Only then are supplementary groups
    /// computed from /etc/group: `getgrouplist` merges the groups of
    /// *every* source (it does not stop at the first), so with `systemd`,
    /// `sss` or `ldap` listed too the file alone could miss a group.
    pub group_files_only: bool,
}

impl Sources {
    /// Reads the `passwd:` and `group:` lines of `text` (nsswitch.conf).
    pub fn parse(text: &str) -> Sources {
        let mut passwd = None;
        let mut group = None;
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let Some((db, services)) = line.split_once(':') else {
                continue;
            };
            let services: Vec<&str> = services.split_whitespace().collect();
            match db.trim() {
                "passwd" => passwd = Some(services),
                "group" => group = Some(services),
                _ => {}
            }
        }
        // An action right after `files` (`files [SUCCESS=continue]`)
        // changes what a hit in the file means: then trust NSS alone.
        let files_first = |s: &[&str]| {
            s.first() == Some(&"files") && s.get(1).is_none_or(|next| !next.starts_with('['))
        };
        let files_only = |s: &[&str]| s == ["files"];
        // No line (or no file) means glibc's built-in default, which this
        // code does not try to reproduce: NSS answers.
        let passwd = passwd.unwrap_or_default();
        let group = group.unwrap_or_default();
        Sources {
            passwd_files_first: files_first(&passwd),
            passwd_files_only: files_only(&passwd),
            group_files_only: files_only(&group),
        }
    }

    /// Sources that send every question to NSS.
    pub const NSS_ONLY: Sources = Sources {
        passwd_files_first: false,
        passwd_files_only: false,
        group_files_only: false,
    };
}

/// /etc/passwd read once: the first entry of each name, and the names
/// whose first line the snapshot does not parse with certainty (those go
/// to NSS).
#[derive(Debug, Default)]
struct PasswdTable {
    accounts: HashMap<String, Account>,
    unsure: HashSet<String>,
}

impl PasswdTable {
    fn parse(text: &str) -> PasswdTable {
        let mut t = PasswdTable::default();
        for raw in text.lines() {
            let line = raw.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let name = line.split(':').next().unwrap_or(line);
            if t.accounts.contains_key(name) || t.unsure.contains(name) {
                continue; // NSS answers with the first line of a name
            }
            // glibc skips leading blanks before the name; such a line is
            // unusual enough to leave to NSS.
            let plain = if raw.len() == line.len() {
                parse_passwd_line(line)
            } else {
                None
            };
            match plain {
                Some(account) => {
                    t.accounts.insert(account.name.clone(), account);
                }
                None => {
                    t.unsure.insert(name.to_owned());
                }
            }
        }
        t
    }
}

/// One /etc/passwd line in its plain form (seven fields, decimal ids, no
/// leading blanks, not a `+`/`-` compat entry); `None` for anything else.
fn parse_passwd_line(line: &str) -> Option<Account> {
    let fields: Vec<&str> = line.split(':').collect();
    let [name, _password, uid, gid, _gecos, home, _shell] = fields.as_slice() else {
        return None;
    };
    if !is_valid_name(name) || name.starts_with('+') {
        return None;
    }
    Some(Account {
        name: (*name).to_owned(),
        uid: UserId(decimal(uid)?),
        gid: GroupId(decimal(gid)?),
        home: PathBuf::from(home),
    })
}

/// A plain decimal id (no sign, no blanks, fits in 32 bits).
fn decimal(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// /etc/group read once: each group's gid by name, and each account's
/// supplementary groups by member name, in file order.
#[derive(Debug, Default)]
struct GroupTable {
    gids: HashMap<String, GroupId>,
    member_of: HashMap<String, Vec<GroupId>>,
}

impl GroupTable {
    /// `None` when a line is not in the plain form (four fields, a decimal
    /// gid, members separated by commas without blanks): then membership
    /// is left to `getgrouplist`, which parses such lines its own way.
    fn parse(text: &str) -> Option<GroupTable> {
        let mut t = GroupTable::default();
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split(':').collect();
            let [name, _password, gid, members] = fields.as_slice() else {
                return None;
            };
            if !is_valid_name(name)
                || name.starts_with('+')
                || members.contains(char::is_whitespace)
            {
                return None;
            }
            let gid = GroupId(decimal(gid)?);
            t.gids.entry((*name).to_owned()).or_insert(gid);
            for member in members.split(',').filter(|m| !m.is_empty()) {
                t.member_of.entry(member.to_owned()).or_default().push(gid);
            }
        }
        Some(t)
    }
}

/// The account database of one moment; see the module docs.
#[derive(Debug)]
pub struct Snapshot {
    files: Files,
    sources: Sources,
    passwd: OnceLock<Option<PasswdTable>>,
    group: OnceLock<Option<GroupTable>>,
}

impl Snapshot {
    /// A snapshot of the real files, taken as questions come.
    pub fn new() -> Snapshot {
        Snapshot::of(Files::default())
    }

    /// A snapshot of `files` (tests point it at their own).
    pub fn of(files: Files) -> Snapshot {
        let sources = match std::fs::read_to_string(&files.nsswitch) {
            Ok(text) => Sources::parse(&text),
            Err(_) => Sources::NSS_ONLY,
        };
        Snapshot {
            files,
            sources,
            passwd: OnceLock::new(),
            group: OnceLock::new(),
        }
    }

    /// What the snapshot may answer from the files.
    pub fn sources(&self) -> Sources {
        self.sources
    }

    fn passwd(&self) -> Option<&PasswdTable> {
        self.passwd
            .get_or_init(|| {
                if !self.sources.passwd_files_first {
                    return None;
                }
                // Unreadable: NSS answers (and reports the error itself).
                let text = std::fs::read_to_string(&self.files.passwd).ok()?;
                Some(PasswdTable::parse(&text))
            })
            .as_ref()
    }

    fn group(&self) -> Option<&GroupTable> {
        self.group
            .get_or_init(|| {
                if !self.sources.group_files_only {
                    return None;
                }
                let text = std::fs::read_to_string(&self.files.group).ok()?;
                GroupTable::parse(&text)
            })
            .as_ref()
    }

    /// The account named `name`, as [`super::by_name`] would find it.
    pub fn by_name(&self, name: &str) -> Result<Option<Account>, Error> {
        if !is_valid_name(name) {
            return Err(Error::InvalidName(name.to_owned()));
        }
        if let Some(table) = self.passwd()
            && !table.unsure.contains(name)
        {
            if let Some(account) = table.accounts.get(name) {
                return Ok(Some(account.clone()));
            }
            if self.sources.passwd_files_only {
                return Ok(None);
            }
        }
        by_name(name)
    }

    /// Every group `account` is in, its primary group first, as
    /// [`Account::groups`] (`getgrouplist`) would list them (the same set;
    /// a group listed twice in /etc/group appears once).
    pub fn groups(&self, account: &Account) -> Result<Vec<GroupId>, Error> {
        let Some(table) = self.group() else {
            return account.groups();
        };
        let mut out = vec![account.gid];
        for gid in table.member_of.get(&account.name).into_iter().flatten() {
            if !out.contains(gid) {
                out.push(*gid);
            }
        }
        Ok(out)
    }

    /// Whether `account` is in the group named `group` (a primary group
    /// counts), as [`Account::is_member_of`] decides it.
    pub fn is_member_of(&self, account: &Account, group: &str) -> Result<bool, Error> {
        let gid = match self.group() {
            Some(table) => table.gids.get(group).copied(),
            None => group_id(group)?,
        };
        let Some(gid) = gid else {
            return Ok(false);
        };
        Ok(gid == account.gid || self.groups(account)?.contains(&gid))
    }
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nsswitch_lines_decide_what_the_files_may_answer() {
        let debian = "passwd:         files systemd\ngroup:          files systemd\n";
        assert_eq!(
            Sources::parse(debian),
            Sources {
                passwd_files_first: true,
                passwd_files_only: false,
                group_files_only: false,
            }
        );
        let plain = "# comment\npasswd: files # local only\ngroup: files\n";
        assert_eq!(
            Sources::parse(plain),
            Sources {
                passwd_files_first: true,
                passwd_files_only: true,
                group_files_only: true,
            }
        );
        for nss_first in [
            "passwd: sss files\ngroup: sss files\n",
            "passwd: files [SUCCESS=continue] ldap\ngroup: compat\n",
            "passwd: compat\n",
            "",
        ] {
            let s = Sources::parse(nss_first);
            assert!(
                !s.passwd_files_first && !s.group_files_only,
                "{nss_first:?}"
            );
        }
    }

    #[test]
    fn passwd_answers_the_first_plain_line_and_leaves_odd_ones_to_nss() {
        let t = PasswdTable::parse(
            "root:x:0:0:root:/root:/bin/bash\n\
             alice:x:1000:1000:Alice:/home/alice:/bin/sh\n\
             alice:x:2000:2000::/home/other:/bin/sh\n\
             # bob:x:1:1::/:/bin/sh\n\
             \x20carol:x:1002:1002::/home/carol:/bin/sh\n\
             dave:x:-1:1003::/home/dave:/bin/sh\n\
             +eve::::::\n",
        );
        let alice = t.accounts.get("alice").expect("alice parsed");
        assert_eq!((alice.uid, alice.gid), (UserId(1000), GroupId(1000)));
        assert_eq!(alice.home, PathBuf::from("/home/alice"));
        assert!(!t.accounts.contains_key("bob") && !t.unsure.contains("bob"));
        for odd in ["carol", "dave", "+eve"] {
            assert!(t.unsure.contains(odd), "{odd} should go to NSS");
        }
    }

    #[test]
    fn group_lists_members_in_order_and_refuses_odd_lines() {
        let t = GroupTable::parse("wheel:x:10:alice,bob\nstaff:x:50:\ndev:x:60:bob\n")
            .expect("plain lines");
        assert_eq!(t.member_of["bob"], [GroupId(10), GroupId(60)]);
        assert_eq!(t.gids["staff"], GroupId(50));
        assert!(GroupTable::parse("wheel:x:10: alice\n").is_none());
        assert!(GroupTable::parse("wheel:x:ten:alice\n").is_none());
        assert!(GroupTable::parse("+:::\n").is_none());
    }
}
