//! The private credentials directory of one run:
//! `<runtime_dir>/credentials/<run-id>/`, 0700 and owned by the account,
//! one 0400 file per provider (systemd's `$CREDENTIALS_DIRECTORY`
//! convention), removed when the run ends.

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use crate::accounts::Account;
use crate::creds::Secret;

/// A run's credentials directory; removed on drop.
#[derive(Debug)]
pub struct CredentialsDir {
    path: PathBuf,
}

impl CredentialsDir {
    /// Creates `<base>/<run_id>` holding `keys` for `account`. The files are
    /// written while the directory is still root's, and the directory is
    /// handed over last, so the account never gets a chance to plant a
    /// link where a key is about to be written.
    pub fn create(
        base: &Path,
        run_id: &str,
        account: &Account,
        keys: &[(String, Secret)],
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
        for (provider, secret) in keys {
            let file = rustix::fs::openat(
                &fd,
                provider.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o400),
            )
            .map_err(|e| fail("create a key file", e))?;
            rustix::fs::fchown(&file, uid, gid).map_err(|e| fail("chown a key file", e))?;
            std::fs::File::from(file)
                .write_all(secret.expose().as_bytes())
                .map_err(|e| format!("cannot write a key file in {}: {e}", dir.path.display()))?;
        }
        rustix::fs::fchown(&fd, uid, gid).map_err(|e| fail("chown the directory", e))?;
        Ok(dir)
    }

    /// Its path, for `$CREDENTIALS_DIRECTORY`.
    pub fn path(&self) -> &Path {
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
