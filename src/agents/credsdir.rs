//! The private credentials directory of one run:
//! `<runtime_dir>/credentials/<run-id>/`, 0700 and owned by the account,
//! one 0400 file per provider (systemd's `$CREDENTIALS_DIRECTORY`
//! convention), removed when the run ends.
//!
//! An external agent runs as the account, so everything put here is the
//! account's to read, copy or send anywhere: it holds the account's own
//! keys only ([`UserKey`], which a host key can never be; rule 10). A
//! declared provider the account has no key for is left out and the run
//! notes which and how to add it.

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

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
}

impl CredentialsDir {
    /// Creates `<base>/<run_id>` holding `keys` for `account`: the
    /// account's own keys, the type admits nothing else. The files are
    /// written while the directory is still root's, and the directory is
    /// handed over last, so the account never gets a chance to plant a
    /// link where a key is about to be written.
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
        let dir = CredentialsDir { path };
        let fail = |what: &str, e: rustix::io::Errno| {
            format!("cannot {what} in {}: {e}", dir.path.display())
        };
        let fd = rustix::fs::open(
            &dir.path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| fail("open the directory", e))?;
        let uid = Some(rustix::fs::Uid::from_raw(account.uid.0));
        let gid = Some(rustix::fs::Gid::from_raw(account.gid.0));
        for key in keys {
            let file = rustix::fs::openat(
                &fd,
                key.provider(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o400),
            )
            .map_err(|e| fail("create a key file", e))?;
            rustix::fs::fchown(&file, uid, gid).map_err(|e| fail("chown a key file", e))?;
            std::fs::File::from(file)
                .write_all(key.secret().expose().as_bytes())
                .map_err(|e| format!("cannot write a key file in {}: {e}", dir.path.display()))?;
        }
        rustix::fs::fchown(&fd, uid, gid).map_err(|e| fail("chown the directory", e))?;
        Ok(dir)
    }

    /// Its path, for `$CREDENTIALS_DIRECTORY`.
    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CredentialsDir {
    fn drop(&mut self) {
        // remove_dir_all does not follow links, so whatever the agent put
        // there is removed, never what a link points to.
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::error!("could not remove {}: {e}", self.path.display());
        }
    }
}

/// Removes what runs cut short by a crash left in `base`.
pub fn remove_stale(base: &Path) {
    if let Ok(entries) = std::fs::read_dir(base) {
        for e in entries.flatten() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
