//! Credentials: each account's provider API keys, age-encrypted.
//!
//! `profiles/<user>/credentials.age` maps a provider name to a secret and
//! its metadata. It is encrypted (age, X25519) to the account's daemon
//! identity in `<state_dir>/keys/<user>.key` and to the recipients the
//! account added (an age or SSH public key of theirs), so a copied profile
//! leaks nothing and its owner can open it offline with the age CLI. The
//! host's `<state_dir>/credentials.age` (identity `keys/.host.key`) is the
//! admin-managed fallback, used only by the daemon's own code against the
//! endpoint the admin pinned for the provider. See docs/FORMATS.md.
//!
//! One job per file:
//!
//! - `endpoint`: [`Endpoint`], the URL pinned for a provider's host key;
//! - `error`: the module's one error type;
//! - `secret`: [`Secret`], a zeroizing, never-printed string;
//! - `format`: the plaintext inside the age envelope, and the envelope;
//! - `keys`: the identities and locks in `keys/`;
//! - `listener`: who listens on a loopback port (the kernel's tables);
//! - `vault`: reading and changing a credentials file ([`Vault`]);
//! - `resolve`: the agents' lookup: the account's own key for its
//!   processes, own-or-host (bound to the pinned endpoint) for the daemon's
//!   code, and `last_used`;
//! - `rotate`: `profiled rotate-keys`;
//! - `settings`: the `[credentials]` config section (fallback, endpoints).

mod endpoint;
mod error;
mod format;
mod keys;
mod listener;
mod resolve;
mod rotate;
mod secret;
mod settings;
mod vault;

pub use endpoint::Endpoint;
pub use error::{Error, Result};

/// Fuzz target `credentials` (see [`format`]).
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_credentials(data: &[u8]) {
    format::fuzz(data);
}
pub use format::{EntryInfo, MAX_RECIPIENTS, RESERVED_PROVIDERS, check_provider};
pub use keys::KeyStore;
pub use resolve::{HostKey, LAST_USED_GRANULARITY, Resolved, Source, UserKey};
pub use rotate::{Rotation, rotate_keys, run_cli as rotate_keys_cli};
pub use secret::{MAX_SECRET_BYTES, Secret};
pub use settings::{Fallback, RawSettings, Settings};
pub use vault::{FILE, Listing, NewKey, Place, Revealed, Vault};

use std::path::Path;

use crate::profile::ProfileDir;

/// Makes the daemon identity of a profile just created or adopted (the
/// provisioning hook). Failures are logged: the identity is made on first
/// use anyway.
pub fn provision(state_dir: &Path, profile: &ProfileDir) {
    if let Err(e) = Vault::open(state_dir).and_then(|v| v.provision(profile)) {
        tracing::error!(
            "could not make the daemon identity of {}: {e}; it will be made on first use",
            profile.account().name
        );
    }
}
