//! Login sessions and personal tokens. A token is 256 random bits shown
//! once; only its SHA-256 is kept, in memory and in one file per token under
//! `<state_dir>/sessions/` (root, 0700), so sessions survive a restart and a
//! copy of the directory opens nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::accounts::{Account, UserId};
use crate::statefs;

/// Every token starts with this, so secret scanners can spot a leaked one.
pub const PREFIX: &str = "pfd_";
/// Live sessions and tokens one account may hold.
pub const MAX_PER_ACCOUNT: usize = 100;

/// A session record is a few hundred bytes; anything larger is not one.
const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// What can go wrong with the token store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The sessions directory or a file in it is unusable.
    #[error("session store: {0}")]
    State(#[from] statefs::Error),
    /// The sessions directory could not be listed.
    #[error("session store {}: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The account already has the most live sessions and tokens allowed.
    #[error(
        "this account already has {0} live sessions and tokens; revoke some (profilectl token list, token revoke ID)"
    )]
    TooMany(usize),
    /// No randomness (the kernel's getrandom failed).
    #[error("no randomness for a new token: {0}")]
    Random(String),
}

/// A login session or a personal token for scripts (both bearer tokens).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// From a PAM login; idle and absolute expiry.
    Session,
    /// Created by the user for a script; absolute expiry only.
    Token,
}

/// What is kept of a token: never the secret, only its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Public id, for listing and revoking.
    pub id: String,
    /// Session or token.
    pub kind: Kind,
    /// The account name when issued.
    pub user: String,
    /// The account uid when issued; a reused name with another uid gets
    /// nothing.
    pub uid: UserId,
    /// A personal token's name.
    pub name: Option<String>,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds.
    pub expires: u64,
    /// Unix seconds.
    pub last_used: u64,
    /// Hex SHA-256 of the secret.
    hash: String,
}

struct Entry {
    record: Record,
    persisted_last_used: u64,
}

/// A freshly issued token: the secret, to be shown once.
pub struct Issued {
    /// The secret (`pfd_…`).
    pub secret: Zeroizing<String>,
    /// What is kept.
    pub record: Record,
}

/// All live sessions and tokens.
pub struct TokenStore {
    dir: PathBuf,
    by_hash: Mutex<HashMap<String, Entry>>,
    /// Ids of entries found expired when presented, whose files
    /// [`TokenStore::flush`] removes (off the request path).
    expired: Mutex<Vec<String>>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hash(secret: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(secret.as_bytes());
    // Every request hashes its token: no allocation per byte.
    let mut out = String::with_capacity(2 * digest.len());
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

impl TokenStore {
    /// Loads the store from `dir` (created root 0700 when missing),
    /// dropping what has expired.
    pub fn open(dir: &Path) -> Result<TokenStore, Error> {
        let io = |source| Error::Io {
            path: dir.to_owned(),
            source,
        };
        statefs::ensure_private_dir(dir)?;
        let mut by_hash = HashMap::new();
        let t = now();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            // A link, a foreign or oversized file is refused by statefs and
            // skipped: the daemon starts, and the log says why.
            let parsed = match statefs::read(&path, MAX_RECORD_BYTES) {
                Ok(bytes) => bytes.and_then(|b| serde_json::from_slice::<Record>(&b).ok()),
                Err(e) => {
                    tracing::warn!("{e}");
                    continue;
                }
            };
            match parsed {
                Some(r) if r.expires > t => {
                    by_hash.insert(
                        r.hash.clone(),
                        Entry {
                            persisted_last_used: r.last_used,
                            record: r,
                        },
                    );
                }
                Some(_) => {
                    if let Err(e) = statefs::remove(&path) {
                        tracing::warn!("could not remove an expired session: {e}");
                    }
                }
                None => tracing::warn!("{}: not a session record, ignored", path.display()),
            }
        }
        Ok(TokenStore {
            dir: dir.to_owned(),
            by_hash: Mutex::new(by_hash),
            expired: Mutex::new(Vec::new()),
        })
    }

    /// Issues a new session or token for `account`, valid for `lifetime`.
    pub fn issue(
        &self,
        kind: Kind,
        account: &Account,
        name: Option<String>,
        lifetime: Duration,
    ) -> Result<Issued, Error> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut()).map_err(|e| Error::Random(e.to_string()))?;
        let mut secret = Zeroizing::new(String::with_capacity(PREFIX.len() + 64));
        secret.push_str(PREFIX);
        for b in bytes.iter() {
            secret.push_str(&format!("{b:02x}"));
        }
        let t = now();
        self.make_room(kind, account, t)?;
        let record = Record {
            id: ulid::Ulid::generate().to_string(),
            kind,
            user: account.name.clone(),
            uid: account.uid,
            name,
            created: t,
            expires: t.saturating_add(lifetime.as_secs()),
            last_used: t,
            hash: hash(&secret),
        };
        self.persist(&record)?;
        self.lock().insert(
            record.hash.clone(),
            Entry {
                persisted_last_used: t,
                record: record.clone(),
            },
        );
        Ok(Issued { secret, record })
    }

    /// Keeps an account under [`MAX_PER_ACCOUNT`] live entries, so a loop of
    /// logins or token requests cannot fill root's disk: expired entries go
    /// first, then the oldest session; personal tokens are never evicted,
    /// a new one is refused instead.
    fn make_room(&self, kind: Kind, account: &Account, t: u64) -> Result<(), Error> {
        let mut map = self.lock();
        let mut gone: Vec<String> = Vec::new();
        map.retain(|_, e| {
            let keep = e.record.uid != account.uid || e.record.expires > t;
            if !keep {
                gone.push(e.record.id.clone());
            }
            keep
        });
        let mine = || map.values().filter(|e| e.record.uid == account.uid);
        if mine().count() >= MAX_PER_ACCOUNT {
            let oldest_session = mine()
                .filter(|e| e.record.kind == Kind::Session)
                .min_by_key(|e| e.record.last_used)
                .map(|e| (e.record.hash.clone(), e.record.id.clone()));
            match (kind, oldest_session) {
                (Kind::Session, Some((hash, id))) => {
                    map.remove(&hash);
                    gone.push(id);
                }
                _ => return Err(Error::TooMany(MAX_PER_ACCOUNT)),
            }
        }
        drop(map);
        for id in gone {
            self.remove_file(&id);
        }
        Ok(())
    }

    /// The record of `secret` when it is live; a session idle longer than
    /// `idle` has expired. Marks it used, in memory only: the request path
    /// never touches the disk; [`TokenStore::flush`] writes the times and
    /// removes the files of entries found expired.
    pub fn authenticate(&self, secret: &str, idle: Duration) -> Option<Record> {
        if !secret.starts_with(PREFIX) {
            return None;
        }
        let h = hash(secret);
        let t = now();
        let mut map = self.lock();
        let entry = map.get_mut(&h)?;
        let r = &entry.record;
        let idle_out = r.kind == Kind::Session && t.saturating_sub(r.last_used) > idle.as_secs();
        if r.expires <= t || idle_out {
            let id = r.id.clone();
            map.remove(&h);
            drop(map);
            // Gone from memory now; should the daemon stop before the file
            // goes, the next start drops it again (expired) or the next
            // use does (idle).
            self.expired
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(id);
            return None;
        }
        entry.record.last_used = t;
        Some(entry.record.clone())
    }

    /// Removes the files of entries found expired, and writes the
    /// `last_used` time of every entry used since it was last written. The
    /// daemon calls it every minute and at shutdown, off the request path:
    /// idle expiry needs the time across restarts, but not to the second.
    pub fn flush(&self) {
        let expired = std::mem::take(&mut *self.expired.lock().unwrap_or_else(|p| p.into_inner()));
        for id in expired {
            self.remove_file(&id);
        }
        let due: Vec<Record> = self
            .lock()
            .values_mut()
            .filter(|e| e.record.last_used != e.persisted_last_used)
            .map(|e| {
                e.persisted_last_used = e.record.last_used;
                e.record.clone()
            })
            .collect();
        for record in due {
            if let Err(e) = self.persist(&record) {
                tracing::warn!("could not record the use of a session: {e}");
            }
            // A revocation may have removed the token while it was being
            // written: remove the file again, or it would come back at the
            // next start.
            if !self.lock().contains_key(&record.hash) {
                self.remove_file(&record.id);
            }
        }
    }

    /// The live sessions and tokens of `user`, oldest first.
    pub fn list(&self, user: &str) -> Vec<Record> {
        let t = now();
        let mut out: Vec<Record> = self
            .lock()
            .values()
            .map(|e| e.record.clone())
            .filter(|r| r.user == user && r.expires > t)
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Revokes `user`'s token `id`; `false` when `user` has no such token.
    pub fn revoke(&self, user: &str, id: &str) -> Result<bool, Error> {
        let mut map = self.lock();
        let Some(h) = map
            .iter()
            .find(|(_, e)| e.record.user == user && e.record.id == id)
            .map(|(h, _)| h.clone())
        else {
            return Ok(false);
        };
        map.remove(&h);
        drop(map);
        self.delete_file(id)?;
        Ok(true)
    }

    /// Revokes every session and token of `user`; how many.
    pub fn revoke_all(&self, user: &str) -> Result<usize, Error> {
        let mut map = self.lock();
        let ids: Vec<String> = map
            .values()
            .filter(|e| e.record.user == user)
            .map(|e| e.record.id.clone())
            .collect();
        map.retain(|_, e| e.record.user != user);
        drop(map);
        for id in &ids {
            self.delete_file(id)?;
        }
        Ok(ids.len())
    }

    /// Live login sessions, for metrics.
    pub fn live_sessions(&self) -> usize {
        let t = now();
        self.lock()
            .values()
            .filter(|e| e.record.kind == Kind::Session && e.record.expires > t)
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.by_hash.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn persist(&self, r: &Record) -> Result<(), Error> {
        let path = self.path(&r.id);
        let json = serde_json::to_vec(r).map_err(|e| Error::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        Ok(statefs::write(&path, &json, true)?)
    }

    /// Removes a token's file durably: a revoked token must not come back
    /// after a crash.
    fn delete_file(&self, id: &str) -> Result<(), Error> {
        Ok(statefs::remove(&self.path(id))?)
    }

    fn remove_file(&self, id: &str) {
        if let Err(e) = self.delete_file(id) {
            tracing::warn!("could not remove an expired session: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> Account {
        Account {
            name: "alice".into(),
            uid: UserId(1000),
            gid: crate::accounts::GroupId(1000),
            home: "/home/alice".into(),
        }
    }

    #[test]
    fn only_the_hash_is_stored_and_it_survives_a_reload() -> Result<(), Error> {
        let dir = std::env::temp_dir().join(format!("pft-tokens-{}", ulid::Ulid::generate()));
        let store = TokenStore::open(&dir)?;
        let issued = store.issue(
            Kind::Token,
            &account(),
            Some("ci".into()),
            Duration::from_secs(60),
        )?;
        let on_disk: String = std::fs::read_dir(&dir)
            .map_err(|source| Error::Io {
                path: dir.clone(),
                source,
            })?
            .flatten()
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect();
        assert!(!on_disk.contains(issued.secret.as_str()));
        assert!(on_disk.contains(&hash(&issued.secret)));

        let again = TokenStore::open(&dir)?;
        let r = again.authenticate(&issued.secret, Duration::from_secs(1));
        assert_eq!(r.map(|r| r.user), Some("alice".to_owned()));
        assert!(
            again
                .authenticate("pfd_00", Duration::from_secs(1))
                .is_none()
        );
        assert!(again.revoke("alice", &issued.record.id)?);
        assert!(
            again
                .authenticate(&issued.secret, Duration::from_secs(1))
                .is_none()
        );
        assert!(TokenStore::open(&dir)?.list("alice").is_empty());
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
