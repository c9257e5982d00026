//! [`Vault`]: reading and changing credentials files, a profile's
//! (`profiles/<user>/credentials.age`, through the profile layer) or the
//! host's (`<state_dir>/credentials.age`).
//!
//! Every change takes the file's lock (`keys/<name>.lock`), opens the file
//! with the daemon identity, changes the plaintext and writes it back
//! atomically. A file that cannot be opened is never overwritten: the
//! change is refused with [`Error::Broken`] until the owner resets it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zeroize::Zeroizing;

use super::error::{Error, Result};
use super::format::{
    self, Entry, EntryInfo, MAX_RECIPIENTS, OpenError, Plain, UserRecipient, check_provider,
};
use super::keys::{HOST_STEM, Identities, KeyStore, Owner};
use super::secret::Secret;
use crate::profile::{self, ProfileDir, WriteMode};
use crate::statefs;
use crate::store::Problem;
use crate::timefmt;

/// The credentials file's name in a profile and in the state directory.
pub const FILE: &str = "credentials.age";

/// The largest host credentials file read.
const MAX_HOST_BYTES: u64 = 1024 * 1024;

/// Whose credentials file.
#[derive(Clone, Copy, Debug)]
pub enum Place<'a> {
    /// The profile's `credentials.age`.
    Profile(&'a ProfileDir),
    /// The host's `<state_dir>/credentials.age` (the fallback).
    Host,
}

impl<'a> Place<'a> {
    fn owner(self) -> Owner<'a> {
        match self {
            Place::Profile(p) => Owner::User(p.account()),
            Place::Host => Owner::Host,
        }
    }
}

/// A new key, as `PUT /v1/credentials/{provider}` takes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// The key itself.
    pub secret: Secret,
    /// A note for the owner: which account or project.
    #[serde(default)]
    pub label: Option<String>,
    /// When it stops being used: `2027-01-01` (midnight UTC) or an RFC 3339
    /// date and time.
    #[serde(default)]
    pub expires: Option<String>,
}

/// What a listing shows: names and metadata, never a secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Listing {
    /// One entry per provider, by name.
    pub credentials: Vec<EntryInfo>,
    /// The owner's own recipients the file is also encrypted to.
    pub recipients: Vec<String>,
}

/// The answer to an owner's reveal.
#[derive(Debug, Serialize, Deserialize)]
pub struct Revealed {
    /// The key.
    pub secret: Secret,
    /// Its metadata.
    #[serde(flatten)]
    pub info: EntryInfo,
}

/// The credentials files of every profile and of the host, opened with the
/// identities in the keys directory.
#[derive(Clone, Debug)]
pub struct Vault {
    keys: KeyStore,
    host_file: PathBuf,
}

impl Vault {
    /// The vault of the state directory `state_dir` (its `keys/` is created
    /// when missing). Cheap: no key is read until needed.
    pub fn open(state_dir: &Path) -> Result<Vault> {
        Ok(Vault {
            keys: KeyStore::open(state_dir)?,
            host_file: state_dir.join(FILE),
        })
    }

    /// The keys directory.
    pub fn keys(&self) -> &KeyStore {
        &self.keys
    }

    /// The file as named in messages: relative to the profile, or the host
    /// file's path.
    fn shown(&self, place: Place<'_>) -> String {
        match place {
            Place::Profile(_) => FILE.to_owned(),
            Place::Host => self.host_file.display().to_string(),
        }
    }

    fn read_bytes(&self, place: Place<'_>) -> Result<Option<Zeroizing<Vec<u8>>>> {
        match place {
            Place::Profile(p) => match p.read(FILE) {
                Ok(b) => Ok(Some(Zeroizing::new(b))),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e.into()),
            },
            Place::Host => Ok(statefs::read(&self.host_file, MAX_HOST_BYTES)?),
        }
    }

    pub(crate) fn write_bytes(&self, place: Place<'_>, data: &[u8]) -> Result<()> {
        match place {
            Place::Profile(p) => Ok(p.write(FILE, data, WriteMode::Replace)?),
            Place::Host => Ok(statefs::write(&self.host_file, data, true)?),
        }
    }

    fn broken(&self, place: Place<'_>, reason: String) -> Error {
        Error::Broken {
            file: self.shown(place),
            reason,
            fix: match place {
                Place::Profile(_) => {
                    "`profilectl creds reset` moves it aside (to credentials.age.broken-<ID>) so new keys can be set"
                }
                Place::Host => {
                    "as root, restore keys/.host.key from a backup, or move the file aside and set the host's keys again"
                }
            },
        }
    }

    /// Reads and opens `place`'s file: `Ok(None)` when there is none.
    /// A file that does not open with the current identities is read once
    /// more, identities included: a rotation may have replaced both between
    /// the two reads.
    pub(crate) fn load(&self, place: Place<'_>) -> Result<Option<(Plain, Identities)>> {
        let owner = place.owner();
        let mut retried = false;
        loop {
            let Some(bytes) = self.read_bytes(place)? else {
                return Ok(None);
            };
            let Some(ids) = self.keys.load(owner)? else {
                let key = self.keys.key_path(owner);
                return Err(self.broken(
                    place,
                    format!(
                        "the daemon identity that opens it ({}) is missing",
                        key.file_name()
                            .map_or_else(String::new, |n| format!("keys/{}", n.to_string_lossy()))
                    ),
                ));
            };
            match format::open(&bytes, &ids) {
                Ok(plain) => return Ok(Some((plain, ids))),
                Err(OpenError::NoMatchingKey) if !retried => retried = true,
                Err(OpenError::NoMatchingKey) => {
                    return Err(self.broken(
                        place,
                        "it is not encrypted to this account's daemon identity (a file copied from \
                         another account or host, or one whose identity in keys/ was replaced)"
                            .into(),
                    ));
                }
                Err(OpenError::Damaged(reason) | OpenError::Unreadable(reason)) => {
                    return Err(self.broken(place, reason));
                }
            }
        }
    }

    /// Changes `place`'s file under its lock: opens it (or starts an empty
    /// one, making the owner's identity on first use), runs `change` on the
    /// plaintext and writes the result, encrypted to the daemon identity
    /// (and a pending next one) and to the owner's recipients.
    pub(crate) fn update<T>(
        &self,
        place: Place<'_>,
        change: impl FnOnce(&mut Plain) -> Result<T>,
    ) -> Result<T> {
        let owner = place.owner();
        let _lock = self.keys.lock(owner)?;
        let (mut plain, ids) = match self.load(place)? {
            Some(loaded) => loaded,
            None => {
                let ids = match self.keys.load(owner)? {
                    Some(ids) => ids,
                    None => self.keys.create(owner)?,
                };
                (Plain::default(), ids)
            }
        };
        plain.version = format::VERSION;
        let out = change(&mut plain)?;
        let sealed = format::seal(&plain, &ids.recipients(), &self.shown(place))?;
        self.write_bytes(place, &sealed)?;
        Ok(out)
    }

    /// Like [`Vault::update`], but only for a file that exists, and written
    /// only when `change` says it changed something.
    pub(crate) fn update_existing(
        &self,
        place: Place<'_>,
        change: impl FnOnce(&mut Plain) -> bool,
    ) -> Result<()> {
        let _lock = self.keys.lock(place.owner())?;
        if let Some((mut plain, ids)) = self.load(place)?
            && change(&mut plain)
        {
            let sealed = format::seal(&plain, &ids.recipients(), &self.shown(place))?;
            self.write_bytes(place, &sealed)?;
        }
        Ok(())
    }

    /// The keys in `place` (names and metadata) and the owner's recipients.
    pub fn list(&self, place: Place<'_>) -> Result<Listing> {
        let now = OffsetDateTime::now_utc();
        Ok(match self.load(place)? {
            None => Listing {
                credentials: Vec::new(),
                recipients: Vec::new(),
            },
            Some((plain, _)) => Listing {
                credentials: plain
                    .providers
                    .iter()
                    .map(|(name, e)| e.info(name, now))
                    .collect(),
                recipients: plain.recipients,
            },
        })
    }

    /// Sets `provider`'s key in `place`, replacing any. Returns its metadata
    /// and whether one was replaced.
    pub fn set(&self, place: Place<'_>, provider: &str, key: NewKey) -> Result<(EntryInfo, bool)> {
        check_provider(provider)?;
        key.secret.check().map_err(|reason| Error::Input {
            field: "secret",
            reason,
        })?;
        let now = OffsetDateTime::now_utc();
        let label = match key.label.map(|l| l.trim().to_owned()) {
            Some(l) if l.chars().count() > 200 || l.chars().any(char::is_control) => {
                return Err(Error::Input {
                    field: "label",
                    reason: "use at most 200 characters, without control characters".into(),
                });
            }
            Some(l) if l.is_empty() => None,
            other => other,
        };
        let expires = key
            .expires
            .as_deref()
            .map(|e| parse_expiry(e, now))
            .transpose()?;
        let entry = Entry {
            secret: key.secret,
            label,
            created: timefmt::toml_datetime(now),
            last_used: None,
            expires,
        };
        let info = entry.info(provider, now);
        let replaced = self.update(place, |plain| {
            Ok(plain.providers.insert(provider.to_owned(), entry).is_some())
        })?;
        Ok((info, replaced))
    }

    /// Removes `provider`'s key from `place`; [`Error::NotFound`] when there
    /// is none (nothing is written then).
    pub fn remove(&self, place: Place<'_>, provider: &str) -> Result<()> {
        check_provider(provider)?;
        let not_found = || Error::NotFound {
            provider: provider.to_owned(),
            where_: match place {
                Place::Profile(_) => "",
                Place::Host => " in the host's credentials",
            },
        };
        // Check first, so a missing key neither writes nor makes an identity.
        match self.load(place)? {
            Some((plain, _)) if plain.providers.contains_key(provider) => {}
            _ => return Err(not_found()),
        }
        self.update(place, |plain| {
            plain
                .providers
                .remove(provider)
                .map(drop)
                .ok_or_else(not_found)
        })
    }

    /// `provider`'s key in the profile, for its owner's explicit reveal.
    /// The API allows this for the owner only.
    pub fn reveal(&self, profile: &ProfileDir, provider: &str) -> Result<Revealed> {
        check_provider(provider)?;
        let now = OffsetDateTime::now_utc();
        let mut plain = self
            .load(Place::Profile(profile))?
            .map(|(p, _)| p)
            .unwrap_or_default();
        let entry = plain
            .providers
            .remove(provider)
            .ok_or_else(|| Error::NotFound {
                provider: provider.to_owned(),
                where_: "",
            })?;
        Ok(Revealed {
            info: entry.info(provider, now),
            secret: entry.secret,
        })
    }

    /// Replaces the owner's own recipients (age or SSH public keys) and
    /// re-encrypts the file to them and the daemon identity. Returns them
    /// in canonical form.
    pub fn set_recipients(
        &self,
        profile: &ProfileDir,
        recipients: &[String],
    ) -> Result<Vec<String>> {
        let mut canonical: Vec<String> = Vec::new();
        for r in recipients {
            let (c, _) = UserRecipient::parse(r).map_err(|reason| Error::Input {
                field: "recipients",
                // An identity pasted by mistake is a secret: never echo it.
                reason: if UserRecipient::looks_secret(r) {
                    reason
                } else {
                    format!("{:?}: {reason}", r.chars().take(80).collect::<String>())
                },
            })?;
            if !canonical.contains(&c) {
                canonical.push(c);
            }
        }
        if canonical.len() > MAX_RECIPIENTS {
            return Err(Error::Input {
                field: "recipients",
                reason: format!("at most {MAX_RECIPIENTS} recipients"),
            });
        }
        let out = canonical.clone();
        self.update(Place::Profile(profile), move |plain| {
            plain.recipients = canonical;
            Ok(())
        })?;
        Ok(out)
    }

    /// Moves a broken or refused `credentials.age` aside, to
    /// `credentials.age.broken-<ULID>` in the profile, byte for byte (a
    /// rename), and returns that name. A file that opens fine, or none, is
    /// [`Error::NothingToReset`].
    pub fn reset(&self, profile: &ProfileDir) -> Result<String> {
        let place = Place::Profile(profile);
        let _lock = self.keys.lock(place.owner())?;
        match self.load(place) {
            Ok(None) => Err(Error::NothingToReset(
                "there is no credentials.age to reset".into(),
            )),
            Ok(Some(_)) => Err(Error::NothingToReset(
                "credentials.age opens fine, so there is nothing to reset; remove single keys \
                 with `profilectl creds rm PROVIDER`"
                    .into(),
            )),
            Err(Error::Broken { .. } | Error::Profile(profile::Error::Refused { .. })) => {
                let aside = format!("{FILE}.broken-{}", ulid::Ulid::generate());
                profile.rename(FILE, &aside)?;
                Ok(aside)
            }
            Err(e) => Err(e),
        }
    }

    /// The problem with the profile's credentials file, if any, as `GET
    /// /v1/me` lists it.
    pub fn problem(&self, profile: &ProfileDir) -> Option<Problem> {
        let (file, reason) = match self.load(Place::Profile(profile)) {
            Ok(_) => return None,
            Err(Error::Broken { reason, .. }) => (
                FILE.to_owned(),
                format!(
                    "cannot be opened: {reason}; writes to it are refused until \
                     `profilectl creds reset` moves it aside"
                ),
            ),
            Err(Error::Profile(profile::Error::Refused { path, reason })) => (
                path,
                format!("refused: {reason}; `profilectl creds reset` moves it aside"),
            ),
            Err(e @ Error::KeyOwner { .. }) => (FILE.to_owned(), e.to_string()),
            Err(e) => {
                tracing::error!("checking {}'s credentials: {e}", profile.account().name);
                (
                    FILE.to_owned(),
                    "cannot be checked: the daemon's keys are unusable; an admin must look at \
                     the daemon's log"
                        .to_owned(),
                )
            }
        };
        Some(Problem {
            file,
            line: None,
            reason,
        })
    }

    /// Makes the profile's daemon identity when it has none and no
    /// credentials file yet (a file without its identity is left for the
    /// owner to reset, and an identity restored later still opens it).
    pub fn provision(&self, profile: &ProfileDir) -> Result<()> {
        let owner = Owner::User(profile.account());
        if self.keys.load(owner)?.is_none() && !profile.exists(FILE)? {
            self.keys.create(owner)?;
        }
        Ok(())
    }

    /// Whether `name` (from the keys directory) is the host's identity.
    pub fn is_host(name: &str) -> bool {
        name == HOST_STEM
    }
}

/// Parses an expiry: `YYYY-MM-DD` (midnight UTC) or RFC 3339; it must lie
/// in the future.
fn parse_expiry(text: &str, now: OffsetDateTime) -> Result<toml::value::Datetime> {
    let bad = |reason: String| Error::Input {
        field: "expires",
        reason,
    };
    let date_only = time::macros::format_description!("[year]-[month]-[day]");
    let at = OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .or_else(|| {
            time::Date::parse(text, date_only)
                .ok()
                .map(|d| d.midnight().assume_utc())
        })
        .ok_or_else(|| {
            bad(format!(
                "{:?} is not a date; write 2027-01-01 or 2027-01-01T09:00:00Z",
                text.chars().take(40).collect::<String>()
            ))
        })?;
    if at <= now {
        return Err(bad(format!(
            "{} is in the past; a key that has expired is never used",
            timefmt::rfc3339(at)
        )));
    }
    Ok(timefmt::toml_datetime(at))
}
