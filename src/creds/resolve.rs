//! Resolution, the agents' hot path: (account, provider) to the key to use.
//!
//! The account's own key wins; else the host's, when `[credentials]
//! fallback` allows it for the provider; else an error the user can act on.
//! Expired keys are never used (an expired key of the user's counts as none,
//! so an allowed fallback applies).
//!
//! Each call reads and decrypts the file afresh (about 0.1 ms, see
//! docs/BENCHMARKS.md): no cache to go stale when the owner changes a key
//! or `rotate-keys` runs beside the daemon. `last_used` is written at most
//! once a minute per key (when the recorded time is a minute old or more),
//! so a burst of calls costs one write, and the recorded time is accurate
//! to a minute; nothing is held in memory, so nothing is lost at a crash.

use time::{Duration, OffsetDateTime};

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
    Own,
    /// The host's, as a fallback.
    Host,
}

/// A key to use.
#[derive(Debug)]
pub struct Resolved {
    /// The provider.
    pub provider: String,
    /// The key.
    pub secret: Secret,
    /// Whose key it is.
    pub source: Source,
}

impl Vault {
    /// The key `profile`'s account should use for `provider`: its own
    /// unexpired key, else the host's unexpired key when `settings` allows
    /// fallback for `provider`, else [`Error::NoKey`]. A broken file of the
    /// account's is [`Error::Broken`] (no silent fallback: the user must
    /// learn their file is unusable).
    pub fn resolve(
        &self,
        profile: &ProfileDir,
        provider: &str,
        settings: &Settings,
    ) -> Result<Resolved> {
        check_provider(provider)?;
        let now = OffsetDateTime::now_utc();
        let mut expired = None;
        let own = Place::Profile(profile);
        if let Some((mut plain, _)) = self.load(own)?
            && let Some(entry) = plain.providers.remove(provider)
        {
            if !entry.expired(now) {
                self.touch(own, provider, &entry, now);
                return Ok(resolved(provider, entry, Source::Own));
            }
            expired = entry.expires.as_ref().map(ToString::to_string);
        }
        if settings.allows_fallback(provider)
            && let Some((mut plain, _)) = self.load(Place::Host)?
            && let Some(entry) = plain.providers.remove(provider)
            && !entry.expired(now)
        {
            self.touch(Place::Host, provider, &entry, now);
            return Ok(resolved(provider, entry, Source::Host));
        }
        Err(Error::NoKey {
            provider: provider.to_owned(),
            expired,
        })
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

fn resolved(provider: &str, entry: Entry, source: Source) -> Resolved {
    Resolved {
        provider: provider.to_owned(),
        secret: entry.secret,
        source,
    }
}
