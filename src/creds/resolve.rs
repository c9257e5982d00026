//! Resolution, the agents' hot path: (account, provider) to the key to use.
//!
//! Two lookups, two types (rule 10): [`Vault::resolve_own`] gives a
//! [`UserKey`], the account's own, which is all a process the account
//! controls may ever get; [`Vault::resolve`], for the daemon's own code,
//! gives the account's key, else the host's when `[credentials] fallback`
//! allows it for the provider, as a [`HostKey`] bound to the endpoint the
//! administrator pinned for it; else an error the user can act on. Expired
//! keys are never used (an expired key of the user's counts as none, so an
//! allowed fallback applies).
//!
//! Each call reads and decrypts the file afresh (about 0.1 ms, see
//! docs/BENCHMARKS.md): no cache to go stale when the owner changes a key
//! or `rotate-keys` runs beside the daemon. `last_used` is written at most
//! once a minute per key (when the recorded time is a minute old or more),
//! so a burst of calls costs one write, and the recorded time is accurate
//! to a minute; nothing is held in memory, so nothing is lost at a crash.

use time::{Duration, OffsetDateTime};

use super::endpoint::Endpoint;
use super::error::{Error, Result};
use super::format::{Entry, check_provider, to_time};
use super::secret::Secret;
use super::settings::Settings;
use super::vault::{Place, Vault};
use crate::profile::ProfileDir;
use crate::timefmt;

/// `last_used` is rewritten only when it is at least this old.
pub const LAST_USED_GRANULARITY: Duration = Duration::minutes(1);

/// Where a resolved key came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The account's own credentials.age.
    User,
    /// The host's, as a fallback.
    Host,
}

/// A key of the account's own. The only kind of key that may reach a
/// process the account controls (an external agent's
/// `$CREDENTIALS_DIRECTORY` takes nothing else) or an endpoint the account
/// chose: it is theirs to use anywhere.
#[derive(Debug)]
pub struct UserKey {
    provider: String,
    secret: Secret,
}

impl UserKey {
    /// The provider.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The key.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }
}

/// The host's key for a provider, bound to the endpoint the administrator
/// pinned for that provider (rule 10). It has no public way to its text:
/// only the daemon's own request code (`organize::chat`) sends it, and only
/// to [`HostKey::endpoint`].
#[derive(Debug)]
pub struct HostKey {
    secret: Secret,
    endpoint: Endpoint,
}

impl HostKey {
    /// The only endpoint this key may be sent to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The key, for the request to [`HostKey::endpoint`] only.
    pub(crate) fn secret(&self) -> &Secret {
        &self.secret
    }
}

/// A key for the daemon's own code: the account's, or the host's bound to
/// its pinned endpoint.
#[derive(Debug)]
pub enum Resolved {
    /// The account's own key.
    User(UserKey),
    /// The host's key, as a fallback.
    Host(HostKey),
}

impl Resolved {
    /// Whose key it is.
    pub fn source(&self) -> Source {
        match self {
            Resolved::User(_) => Source::User,
            Resolved::Host(_) => Source::Host,
        }
    }
}

impl Vault {
    /// The account's own unexpired key for `provider`, never the host's:
    /// what a process the account controls may be given. None is
    /// [`Error::NoKey`]; a broken file is [`Error::Broken`].
    pub fn resolve_own(&self, profile: &ProfileDir, provider: &str) -> Result<UserKey> {
        check_provider(provider)?;
        let now = OffsetDateTime::now_utc();
        self.own(profile, provider, now)?
            .map_err(|expired| Error::NoKey {
                provider: provider.to_owned(),
                expired,
            })
    }

    /// The key the daemon's own code should use for `profile`'s account
    /// and `provider`: the account's own unexpired key, else the host's
    /// unexpired key with its pinned endpoint when `settings` allows
    /// fallback for `provider`, else [`Error::NoKey`]. A broken file of
    /// the account's is [`Error::Broken`] (no silent fallback: the user
    /// must learn their file is unusable).
    pub fn resolve(
        &self,
        profile: &ProfileDir,
        provider: &str,
        settings: &Settings,
    ) -> Result<Resolved> {
        check_provider(provider)?;
        let now = OffsetDateTime::now_utc();
        let expired = match self.own(profile, provider, now)? {
            Ok(key) => return Ok(Resolved::User(key)),
            Err(expired) => expired,
        };
        if let Some(endpoint) = settings.host_endpoint(provider)
            && let Some((mut plain, _)) = self.load(Place::Host)?
            && let Some(entry) = plain.providers.remove(provider)
            && !entry.expired(now)
        {
            self.touch(Place::Host, provider, &entry, now);
            return Ok(Resolved::Host(HostKey {
                secret: entry.secret,
                endpoint: endpoint.clone(),
            }));
        }
        Err(Error::NoKey {
            provider: provider.to_owned(),
            expired,
        })
    }

    /// The account's own unexpired key; else `Err` holding when its key
    /// expired (`None`: it has no key for `provider`).
    fn own(
        &self,
        profile: &ProfileDir,
        provider: &str,
        now: OffsetDateTime,
    ) -> Result<std::result::Result<UserKey, Option<String>>> {
        let own = Place::Profile(profile);
        let Some((mut plain, _)) = self.load(own)? else {
            return Ok(Err(None));
        };
        let Some(entry) = plain.providers.remove(provider) else {
            return Ok(Err(None));
        };
        if entry.expired(now) {
            return Ok(Err(entry.expires.as_ref().map(ToString::to_string)));
        }
        self.touch(own, provider, &entry, now);
        Ok(Ok(UserKey {
            provider: provider.to_owned(),
            secret: entry.secret,
        }))
    }

    /// Records the use of `entry` when its `last_used` is a minute old or
    /// more. A failure is logged, never fails the resolution: the key is
    /// good, only its bookkeeping is late.
    fn touch(&self, place: Place<'_>, provider: &str, entry: &Entry, now: OffsetDateTime) {
        let recent = entry
            .last_used
            .as_ref()
            .and_then(to_time)
            .is_some_and(|t| now - t < LAST_USED_GRANULARITY && t <= now);
        if recent {
            return;
        }
        let stamp = timefmt::toml_datetime(now);
        let result = self.update_existing(place, |plain| match plain.providers.get_mut(provider) {
            Some(e) => {
                e.last_used = Some(stamp);
                true
            }
            None => false,
        });
        if let Err(e) = result {
            let whose = match place {
                Place::Profile(p) => p.account().name.clone(),
                Place::Host => "the host".to_owned(),
            };
            tracing::warn!("could not record the use of {whose}'s key for {provider}: {e}");
        }
    }
}
