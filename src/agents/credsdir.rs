//! The private credentials directory of one run:
//! `<runtime_dir>/credentials/<run-id>/`, root's, mode 0550 with the
//! account's primary group, one 0400 file per provider owned by the
//! account (systemd's `$CREDENTIALS_DIRECTORY` convention), removed when
//! the run ends. The agent can create nothing there (rule 3): what the
//! daemon removes as root is only what it wrote.
//!
//! An external agent runs as the account, so everything put here is the
//! account's to read, copy or send anywhere: it holds the account's own
//! keys only ([`UserKey`], which a host key can never be; rule 10). A
//! declared provider the account has no key for is left out and the run
//! notes which and how to add it.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::accounts::Account;
use crate::creds::{self, Secret, UserKey, Vault};
use crate::profile::ProfileDir;

/// The keys a run gets and its credentials directory (removed on drop).
#[derive(Debug)]
pub struct RunCredentials {
    // Declared first so it is dropped (removed) first; the keys in memory
    // are wiped as they drop.
    dir: CredentialsDir,
    keys: Vec<UserKey>,
    notes: Vec<String>,
}

impl RunCredentials {
    /// Resolves the account's own keys for `declared` (the agent's
    /// `credentials`) and writes them into `<base>/<run_id>`. A provider
    /// the account has no key for (or only an expired one) is left out
    /// with a note; any other failure (a broken credentials file) is an
    /// error that fails the run, so the user learns of it.
    pub fn prepare(
        vault: &Vault,
        profile: &ProfileDir,
        declared: &[String],
        base: &Path,
        run_id: &str,
    ) -> Result<RunCredentials, String> {
        let mut keys = Vec::new();
        let mut notes = Vec::new();
        for provider in declared {
            match vault.resolve_own(profile, provider) {
                Ok(key) => keys.push(key),
                Err(e @ creds::Error::NoKey { .. }) => notes.push(format!(
                    "{provider} is not in $CREDENTIALS_DIRECTORY: {e} (agents get your own keys \
                     only, never the host's)"
                )),
                Err(e) => return Err(format!("the {provider} key: {e}")),
            }
        }
        let dir = CredentialsDir::create(base, run_id, profile.account(), &keys)?;
        Ok(RunCredentials { dir, keys, notes })
    }

    /// The directory, for `$CREDENTIALS_DIRECTORY`.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The account's key for `provider`, if the run got one.
    pub fn secret(&self, provider: &str) -> Option<&Secret> {
        self.keys
            .iter()
            .find(|k| k.provider() == provider)
            .map(UserKey::secret)
    }

    /// What the user should know: the declared keys left out, and why.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }
}

/// A run's credentials directory; removed on drop.
#[derive(Debug)]
struct CredentialsDir {
    path: PathBuf,
    /// The directory, open: the key files are removed through it.
    fd: OwnedFd,
    /// The names this daemon created in it, the only ones it removes.
    files: Vec<String>,
}

impl CredentialsDir {
    /// Creates `<base>/<run_id>` holding `keys` for `account`: the
    /// account's own keys, the type admits nothing else.
    ///
    /// The directory stays root's (mode 0550, group the account's primary
    /// group, as systemd's `LoadCredential=`): the agent can read it but
    /// create nothing in it, so nothing an agent does there (a tree
    /// thousands of levels deep, say) can reach the daemon's removal of
    /// it. Each key file is 0400 and the account's: 0440 with the group
    /// would show it to every account sharing her primary group (`users`).
    fn create(
        base: &Path,
        run_id: &str,
        account: &Account,
        keys: &[UserKey],
    ) -> Result<CredentialsDir, String> {
        let path = base.join(run_id);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let fd = match rustix::fs::open(
            &path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = std::fs::remove_dir(&path);
                return Err(format!("cannot open {}: {e}", path.display()));
            }
        };
        let mut dir = CredentialsDir {
            path,
            fd,
            files: Vec::new(),
        };
        let fail = |dir: &CredentialsDir, what: &str, e: rustix::io::Errno| {
            format!("cannot {what} in {}: {e}", dir.path.display())
        };
        let uid = Some(rustix::fs::Uid::from_raw(account.uid.0));
        let gid = Some(rustix::fs::Gid::from_raw(account.gid.0));
        for key in keys {
            let file = rustix::fs::openat(
                &dir.fd,
                key.provider(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o400),
            )
            .map_err(|e| fail(&dir, "create a key file", e))?;
            dir.files.push(key.provider().to_owned());
            rustix::fs::fchown(&file, uid, gid).map_err(|e| fail(&dir, "chown a key file", e))?;
            std::fs::File::from(file)
                .write_all(key.secret().expose().as_bytes())
                .map_err(|e| format!("cannot write a key file in {}: {e}", dir.path.display()))?;
        }
        rustix::fs::fchown(&dir.fd, Some(rustix::fs::Uid::ROOT), gid)
            .map_err(|e| fail(&dir, "give the directory the account's group", e))?;
        rustix::fs::fchmod(&dir.fd, Mode::from_raw_mode(0o550))
            .map_err(|e| fail(&dir, "make the directory readable by the account", e))?;
        Ok(dir)
    }

    /// Its path, for `$CREDENTIALS_DIRECTORY`.
    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CredentialsDir {
    /// Removes the names this daemon created, then the directory: never a
    /// recursive removal, so whatever is there costs one system call each.
    fn drop(&mut self) {
        for name in &self.files {
            if let Err(e) = rustix::fs::unlinkat(&self.fd, name.as_str(), AtFlags::empty()) {
                tracing::error!(
                    "could not remove the key file {name} of {}: {e}",
                    self.path.display()
                );
            }
        }
        if let Err(e) = std::fs::remove_dir(&self.path) {
            // The agent cannot write there: anything else in it is a bug
            // (or an administrator's doing), left for a person to look at.
            tracing::error!(
                "could not remove the credentials directory {}: {e} (this is a bug: the daemon \
                 created only key files there; please report it, then remove the directory by hand)",
                self.path.display()
            );
        }
    }
}

/// Removes what runs cut short by a crash left in `base`, bounded whatever
/// is there: in each run directory, the entries that are not directories
/// (key files, one `unlinkat` each), then the directory itself. A
/// directory inside a run's (which an older version let the agent make,
/// to any depth) is logged and left for an administrator, never walked.
pub fn remove_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let removed = if is_dir {
            remove_run_dir(&path)
        } else {
            std::fs::remove_file(&path)
                .map_err(|e| format!("cannot remove {}: {e}", path.display()))
        };
        match removed {
            Ok(()) => tracing::info!(
                "removed the credentials directory of a run cut short: {}",
                path.display()
            ),
            Err(e) => tracing::error!("{e}"),
        }
    }
}

/// Empties and removes one stale run directory, or says why it is left.
fn remove_run_dir(path: &Path) -> Result<(), String> {
    let fail = |what: &str, e: rustix::io::Errno| format!("cannot {what} {}: {e}", path.display());
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail("open", e))?;
    let mut names = Vec::new();
    let mut left = Vec::new();
    for entry in rustix::fs::Dir::read_from(&fd).map_err(|e| fail("list", e))? {
        let entry = entry.map_err(|e| fail("list", e))?;
        let name = entry.file_name().to_owned();
        if name.as_bytes() == b"." || name.as_bytes() == b".." {
            continue;
        }
        if entry.file_type() == FileType::Directory {
            left.push(String::from_utf8_lossy(name.as_bytes()).into_owned());
        } else {
            names.push(name);
        }
    }
    for name in &names {
        // AtFlags::empty(): a directory put in its place since the listing
        // is refused (EISDIR), not removed.
        rustix::fs::unlinkat(&fd, name.as_c_str(), AtFlags::empty())
            .map_err(|e| fail("empty", e))?;
    }
    if !left.is_empty() {
        return Err(format!(
            "left the stale credentials directory {}: it holds directories ({}) that only an \
             older version let an agent make, possibly thousands of levels deep; the daemon does \
             not walk them. Check it, then remove it by hand (rm -rf {0})",
            path.display(),
            left.join(", ")
        ));
    }
    std::fs::remove_dir(path).map_err(|e| format!("cannot remove {}: {e}", path.display()))
}
