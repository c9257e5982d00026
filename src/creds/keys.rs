//! The daemon's age identities, one per account and one for the host, in
//! `<state_dir>/keys/` (root, 0700):
//!
//! - `<user>.key`: the X25519 identity that opens `profiles/<user>/credentials.age`,
//!   in age-keygen's format with comments (so `age -d -i` reads it);
//! - `.host.key`: the host identity for `<state_dir>/credentials.age` (a
//!   leading dot: no account name can start with one, see
//!   `accounts::is_valid_name`);
//! - `<name>.key.next`: a new identity during a rotation, until the file it
//!   opens is safely written; it is tried too, so an interrupted rotation
//!   loses nothing;
//! - `<name>.lock`: the flock that lets one writer at a time change a
//!   credentials file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use age::x25519::{Identity, Recipient};
use zeroize::Zeroizing;

use super::error::{Error, Result};
use crate::accounts::Account;
use crate::statefs;
use crate::timefmt;

/// The largest identity file read (one is about 200 bytes).
const MAX_KEY_BYTES: u64 = 4096;

/// The stem of the host's identity files: not a possible account name.
pub(crate) const HOST_STEM: &str = ".host";

/// Whose identity.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Owner<'a> {
    /// An account's: opens its profile's credentials.age.
    User(&'a Account),
    /// The host's: opens `<state_dir>/credentials.age`.
    Host,
}

impl Owner<'_> {
    fn stem(&self) -> &str {
        match self {
            Owner::User(a) => &a.name,
            Owner::Host => HOST_STEM,
        }
    }
}

/// The identities that may open one credentials file: the current one
/// and, after an interrupted rotation, the next one.
pub(crate) struct Identities {
    /// `<name>.key`.
    pub current: Identity,
    /// `<name>.key.next`, when a rotation was interrupted.
    pub next: Option<Identity>,
}

impl Identities {
    /// Every identity, current first.
    pub fn all(&self) -> impl Iterator<Item = &Identity> {
        std::iter::once(&self.current).chain(self.next.as_ref())
    }

    /// The recipients a file is encrypted to so that any of these
    /// identities opens it.
    pub fn recipients(&self) -> Vec<Recipient> {
        self.all().map(Identity::to_public).collect()
    }
}

/// The keys directory.
#[derive(Clone, Debug)]
pub struct KeyStore {
    dir: PathBuf,
}

impl KeyStore {
    /// Opens `<state_dir>/keys`, creating it (root, 0700) when missing, and
    /// checks that only root can use it.
    pub fn open(state_dir: &Path) -> Result<KeyStore> {
        let dir = state_dir.join("keys");
        statefs::ensure_private_dir(&dir)?;
        Ok(KeyStore { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, owner: Owner<'_>, suffix: &str) -> PathBuf {
        self.dir.join(format!("{}{suffix}", owner.stem()))
    }

    /// The identity file of `owner`.
    pub(crate) fn key_path(&self, owner: Owner<'_>) -> PathBuf {
        self.path(owner, ".key")
    }

    /// Takes the writer's lock of `owner`'s credentials file.
    pub(crate) fn lock(&self, owner: Owner<'_>) -> Result<File> {
        Ok(statefs::lock(&self.path(owner, ".lock"))?)
    }

    /// Loads `owner`'s identities; `Ok(None)` when it has none yet.
    pub(crate) fn load(&self, owner: Owner<'_>) -> Result<Option<Identities>> {
        let Some(current) = self.read_identity(owner, ".key")? else {
            return Ok(None);
        };
        let next = self.read_identity(owner, ".key.next")?;
        Ok(Some(Identities { current, next }))
    }

    fn read_identity(&self, owner: Owner<'_>, suffix: &str) -> Result<Option<Identity>> {
        let path = self.path(owner, suffix);
        let Some(bytes) = statefs::read(&path, MAX_KEY_BYTES)? else {
            return Ok(None);
        };
        let damaged = |what: &str| Error::UnsafeState {
            path: path.clone(),
            reason: format!("is not an age identity file: {what}"),
            fix: "restore it from a backup, or move it aside and reset the credentials it opened"
                .into(),
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| damaged("not UTF-8 text"))?;
        let mut identity = None;
        for line in text.lines().map(str::trim) {
            if let Some(uid) = line.strip_prefix("# uid:") {
                if let (Owner::User(account), Ok(key_uid)) = (owner, uid.trim().parse::<u32>())
                    && key_uid != account.uid.0
                {
                    return Err(Error::KeyOwner {
                        user: account.name.clone(),
                        key_uid,
                        uid: account.uid.0,
                    });
                }
            } else if !line.is_empty() && !line.starts_with('#') {
                identity = Some(
                    Identity::from_str(line).map_err(|_| damaged("its key line does not parse"))?,
                );
            }
        }
        identity.map(Some).ok_or_else(|| damaged("no key line"))
    }

    /// Makes `owner`'s first identity. If another thread or process made
    /// one meanwhile, that one is kept and returned.
    pub(crate) fn create(&self, owner: Owner<'_>) -> Result<Identities> {
        let identity = Identity::generate();
        match statefs::write(&self.key_path(owner), &key_file(owner, &identity), false) {
            Ok(()) => Ok(Identities {
                current: identity,
                next: None,
            }),
            Err(statefs::Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                self.load(owner)?.ok_or_else(|| Error::UnsafeState {
                    path: self.key_path(owner),
                    reason: "vanished right after it was created".into(),
                    fix: "check what else manages this directory".into(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Writes `identity` as `owner`'s next identity (durably).
    pub(crate) fn write_next(&self, owner: Owner<'_>, identity: &Identity) -> Result<()> {
        Ok(statefs::write(
            &self.path(owner, ".key.next"),
            &key_file(owner, identity),
            true,
        )?)
    }

    /// Makes the next identity the current one; the current one is gone.
    pub(crate) fn promote_next(&self, owner: Owner<'_>) -> Result<()> {
        Ok(statefs::rename(
            &self.path(owner, ".key.next"),
            &self.key_path(owner),
        )?)
    }

    /// Removes a next identity that opens nothing.
    pub(crate) fn discard_next(&self, owner: Owner<'_>) -> Result<()> {
        Ok(statefs::remove(&self.path(owner, ".key.next"))?)
    }

    /// The names with an identity file: account names, and [`HOST_STEM`]
    /// for the host. Sorted.
    pub fn owners(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(Error::io(&self.dir, "list"))? {
            let entry = entry.map_err(Error::io(&self.dir, "list"))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(stem) = name.strip_suffix(".key")
                && (stem == HOST_STEM || !stem.starts_with('.'))
            {
                out.push(stem.to_owned());
            }
        }
        out.sort();
        Ok(out)
    }
}

/// The text of an identity file: age-keygen's format, with what it is for
/// and whose it is in comments.
fn key_file(owner: Owner<'_>, identity: &Identity) -> Zeroizing<Vec<u8>> {
    let (what, uid) = match owner {
        Owner::User(a) => (
            format!("opens profiles/{}/credentials.age", a.name),
            format!("# uid: {}\n", a.uid),
        ),
        Owner::Host => (
            "opens the host's credentials.age in the state directory".to_owned(),
            String::new(),
        ),
    };
    let secret = identity.to_string();
    let text = Zeroizing::new(format!(
        "# profiled daemon identity: {what}. Root only; keep it out of profiles.\n\
         # created: {}\n{uid}# public key: {}\n{}\n",
        timefmt::now_rfc3339(),
        identity.to_public(),
        secret.expose_secret()
    ));
    Zeroizing::new(text.as_bytes().to_vec())
}
