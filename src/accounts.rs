//! Accounts through NSS (`getpwnam`, `getpwuid`, `getgrouplist`), never from
//! a file of our own, so LDAP and SSSD hosts work unchanged.
//!
//! Eligibility and the admin role are computed afresh on every call: a change
//! to /etc/group or to the config takes effect on the next request.

use std::ffi::CString;
use std::fmt;
use std::path::PathBuf;

use nix::unistd::{Gid, Group, Uid, User};
use serde::{Deserialize, Serialize};

mod snapshot;

pub use snapshot::{Files, Snapshot, Sources};

/// A numeric user id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub u32);

/// A numeric group id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GroupId(pub u32);

impl UserId {
    /// The superuser.
    pub const ROOT: UserId = UserId(0);
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An OS account as NSS reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// The login name; also the name of the profile directory.
    pub name: String,
    /// The account's uid.
    pub uid: UserId,
    /// The account's primary group.
    pub gid: GroupId,
    /// The home directory.
    pub home: PathBuf,
}

/// What can go wrong while asking NSS.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The name service itself failed (not "no such account").
    #[error(
        "the name service could not look up {what}: {source}; check /etc/nsswitch.conf and that the directory service is reachable"
    )]
    Nss {
        /// What was being looked up.
        what: String,
        /// The errno NSS returned.
        source: nix::Error,
    },
    /// A name that cannot be an account name (NUL byte, slash, leading dot).
    #[error("{0:?} is not a valid account name")]
    InvalidName(String),
}

/// Looks up an account by name. `Ok(None)` when there is no such account.
pub fn by_name(name: &str) -> Result<Option<Account>, Error> {
    if !is_valid_name(name) {
        return Err(Error::InvalidName(name.to_owned()));
    }
    let user = User::from_name(name).map_err(|source| Error::Nss {
        what: format!("account {name:?}"),
        source,
    })?;
    Ok(user.map(Account::from))
}

/// Looks up an account by uid. `Ok(None)` when no account has that uid.
pub fn by_uid(uid: UserId) -> Result<Option<Account>, Error> {
    let user = User::from_uid(Uid::from_raw(uid.0)).map_err(|source| Error::Nss {
        what: format!("uid {uid}"),
        source,
    })?;
    Ok(user.map(Account::from))
}

/// Whether `name` can be a profile directory name: one path component that
/// is not hidden (the daemon keeps its own temporary names hidden) and has
/// no control characters.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && !name.starts_with('.')
        && !name.starts_with('-')
        && !name.contains('/')
        && !name.chars().any(|c| c.is_control())
}

impl From<User> for Account {
    fn from(u: User) -> Self {
        Account {
            name: u.name,
            uid: UserId(u.uid.as_raw()),
            gid: GroupId(u.gid.as_raw()),
            home: u.dir,
        }
    }
}

impl Account {
    /// Every group the account is in, its primary group included, as the
    /// kernel would see it after login (`getgrouplist`).
    pub fn groups(&self) -> Result<Vec<GroupId>, Error> {
        let cname =
            CString::new(self.name.as_str()).map_err(|_| Error::InvalidName(self.name.clone()))?;
        let gids =
            nix::unistd::getgrouplist(&cname, Gid::from_raw(self.gid.0)).map_err(|source| {
                Error::Nss {
                    what: format!("the groups of {:?}", self.name),
                    source,
                }
            })?;
        Ok(gids.into_iter().map(|g| GroupId(g.as_raw())).collect())
    }

    /// Whether the account is in the group named `group` (a primary group
    /// counts). A group that does not exist has no members.
    pub fn is_member_of(&self, group: &str) -> Result<bool, Error> {
        let Some(gid) = group_id(group)? else {
            return Ok(false);
        };
        Ok(gid == self.gid || self.groups()?.contains(&gid))
    }
}

impl Account {
    /// Why the account may not log in any more, if it may not: its password
    /// is locked (`passwd -l`, `usermod -L`) or the account has expired
    /// (`chage -E`). Read from the shadow database through NSS, afresh on
    /// every call, so existing sessions stop the moment an admin locks it.
    pub fn login_blocked(&self) -> Result<Option<String>, Error> {
        let Some(entry) = shadow_entry(&self.name)? else {
            return Ok(None);
        };
        if entry.password_locked {
            return Ok(Some(format!("the account {} is locked", self.name)));
        }
        let today = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / 86_400);
        if entry
            .expiry
            .expired_on(i64::try_from(today).unwrap_or(i64::MAX))
        {
            return Ok(Some(format!("the account {} has expired", self.name)));
        }
        Ok(None)
    }
}

/// What the shadow database says about an account.
struct ShadowEntry {
    password_locked: bool,
    expiry: Expiry,
}

/// The account's expiry date (shadow(5) `sp_expire`), read as pam_unix
/// reads it: a count of days since 1970-01-01 from which the account is
/// expired. `-1` (an empty field) is the only "never"; 0 is not: it is
/// the day `chage -E 0` writes, expired since 1970-01-01.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expiry {
    Never,
    /// Expired from this day on (days since the epoch).
    From(i64),
}

impl Expiry {
    // `c_long` is i32 on 32-bit targets, where the conversion is not a no-op.
    #[allow(clippy::useless_conversion)]
    fn from_shadow(sp_expire: libc::c_long) -> Expiry {
        if sp_expire == -1 {
            Expiry::Never
        } else {
            Expiry::From(i64::from(sp_expire))
        }
    }

    /// Whether the account is expired on `today` (days since the epoch).
    fn expired_on(self, today: i64) -> bool {
        match self {
            Expiry::Never => false,
            Expiry::From(day) => today >= day,
        }
    }
}

/// The account's shadow entry (`getspnam_r`); `None` when it has none.
fn shadow_entry(name: &str) -> Result<Option<ShadowEntry>, Error> {
    let cname = CString::new(name).map_err(|_| Error::InvalidName(name.to_owned()))?;
    let mut buf = vec![0 as libc::c_char; 4096];
    loop {
        // SAFETY: an all-zero `spwd` is a valid value of a plain C struct of
        // pointers and integers; getspnam_r overwrites it before we read it.
        let mut entry: libc::spwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::spwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `cname` is a
        // NUL-terminated string, `entry` and `result` are live locals, and
        // `buf` is a live buffer of the length passed. The strings the entry
        // points to live in `buf`, which outlives their use below.
        let rc = unsafe {
            libc::getspnam_r(
                cname.as_ptr(),
                &mut entry,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc == libc::ENOENT || (rc == 0 && result.is_null()) {
            return Ok(None);
        }
        if rc != 0 {
            return Err(Error::Nss {
                what: format!("the shadow entry of {name:?}"),
                source: nix::Error::from_raw(rc),
            });
        }
        // SAFETY: on success `sp_pwdp` is either null or a NUL-terminated
        // string inside `buf`, which is still alive.
        let locked = !entry.sp_pwdp.is_null()
            && unsafe { std::ffi::CStr::from_ptr(entry.sp_pwdp) }
                .to_bytes()
                .starts_with(b"!");
        return Ok(Some(ShadowEntry {
            password_locked: locked,
            expiry: Expiry::from_shadow(entry.sp_expire),
        }));
    }
}

/// The gid of the group named `name`, if there is one.
pub fn group_id(name: &str) -> Result<Option<GroupId>, Error> {
    let group = Group::from_name(name).map_err(|source| Error::Nss {
        what: format!("group {name:?}"),
        source,
    })?;
    Ok(group.map(|g| GroupId(g.gid.as_raw())))
}

/// Who may have a profile and who is an admin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Lowest eligible uid.
    pub uid_min: u32,
    /// Highest eligible uid.
    pub uid_max: u32,
    /// When not empty, an account must be in one of these groups.
    pub allowed_groups: Vec<String>,
    /// Accounts that never get a profile.
    pub denied_users: Vec<String>,
    /// Accounts that are admins by name.
    pub admins: Vec<String>,
    /// Members of this group are admins.
    pub admin_group: String,
}

/// Whether an account may have a profile, and if not, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Eligibility {
    /// The account may have a profile.
    Eligible,
    /// The account may not; the text says why, for the 403 answer.
    Ineligible(String),
}

impl Policy {
    /// Decides whether `account` may have a profile.
    pub fn eligibility(&self, account: &Account) -> Result<Eligibility, Error> {
        self.decide(account, |group| account.is_member_of(group))
    }

    /// [`Policy::eligibility`] with groups from `accounts` (one snapshot
    /// for many accounts, as an agent cycle asks).
    pub fn eligibility_in(
        &self,
        account: &Account,
        accounts: &Snapshot,
    ) -> Result<Eligibility, Error> {
        self.decide(account, |group| accounts.is_member_of(account, group))
    }

    fn decide(
        &self,
        account: &Account,
        mut is_member_of: impl FnMut(&str) -> Result<bool, Error>,
    ) -> Result<Eligibility, Error> {
        let uid = account.uid.0;
        if uid < self.uid_min || uid > self.uid_max {
            return Ok(Eligibility::Ineligible(format!(
                "account {} (uid {uid}) is outside the eligible uid range {}..{}",
                account.name, self.uid_min, self.uid_max
            )));
        }
        if self.denied_users.contains(&account.name) {
            return Ok(Eligibility::Ineligible(format!(
                "account {} is listed in denied_users",
                account.name
            )));
        }
        if !self.allowed_groups.is_empty() {
            let mut allowed = false;
            for group in &self.allowed_groups {
                if is_member_of(group)? {
                    allowed = true;
                    break;
                }
            }
            if !allowed {
                return Ok(Eligibility::Ineligible(format!(
                    "account {} is in none of the allowed groups ({})",
                    account.name,
                    self.allowed_groups.join(", ")
                )));
            }
        }
        Ok(Eligibility::Eligible)
    }

    /// Whether `account` is an admin: root, listed in `admins`, or a member
    /// of `admin_group`.
    pub fn is_admin(&self, account: &Account) -> Result<bool, Error> {
        if account.uid == UserId::ROOT || self.admins.contains(&account.name) {
            return Ok(true);
        }
        account.is_member_of(&self.admin_group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_reads_like_pam_unix() {
        // An empty field (-1) is never; day 0 is `chage -E 0`: expired.
        assert!(!Expiry::from_shadow(-1).expired_on(20_000));
        assert!(Expiry::from_shadow(0).expired_on(20_000));
        assert!(Expiry::from_shadow(0).expired_on(0));
        assert!(Expiry::from_shadow(19_999).expired_on(20_000));
        assert!(Expiry::from_shadow(20_000).expired_on(20_000));
        assert!(!Expiry::from_shadow(20_001).expired_on(20_000));
    }

    #[test]
    fn names_that_cannot_be_a_directory_are_invalid() {
        for bad in ["", ".", "..", ".hidden", "a/b", "-rf", "a\nb"] {
            assert!(!is_valid_name(bad), "{bad:?} accepted");
        }
        for good in ["alice", "john.doe", "user@example.com", "pft-alice"] {
            assert!(is_valid_name(good), "{good:?} refused");
        }
    }

    #[test]
    fn root_is_found_and_is_admin() -> Result<(), Error> {
        let root = by_uid(UserId::ROOT)?.ok_or(Error::InvalidName("root".into()))?;
        assert_eq!(root.name, "root");
        let policy = Policy {
            uid_min: 1000,
            uid_max: 60000,
            allowed_groups: vec![],
            denied_users: vec![],
            admins: vec![],
            admin_group: "profiled-admin".into(),
        };
        assert!(policy.is_admin(&root)?);
        assert!(matches!(
            policy.eligibility(&root)?,
            Eligibility::Ineligible(_)
        ));
        Ok(())
    }
}
