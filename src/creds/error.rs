//! The one error type of the credentials module. Every message says what
//! went wrong, where, and what to do, and none ever contains a secret: a
//! secret is never formatted into an error, and parse errors of a decrypted
//! file report only a line number (a TOML message may quote the text).

use std::path::PathBuf;

use crate::profile;

/// What went wrong with credentials.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A provider name that cannot be used.
    #[error("provider {name:?} is not a valid name: {why}")]
    InvalidProvider {
        /// The name as given.
        name: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// A request's input is wrong; `field` names the part.
    #[error("{field}: {reason}")]
    Input {
        /// The offending field.
        field: &'static str,
        /// What is wrong and what to send instead (never the value of a secret).
        reason: String,
    },
    /// The file holds no key for `provider` (reveal, delete).
    #[error(
        "there is no key for {provider:?}{where_}; `profilectl creds list` shows the ones there are"
    )]
    NotFound {
        /// The provider asked for.
        provider: String,
        /// `""` for a profile, `" in the host's credentials"` for the host file.
        where_: &'static str,
    },
    /// Resolution found no usable key: none of the user's, and no fallback.
    #[error("no key for {provider:?}: {}set one with profilectl creds set {provider}", expired_note(.expired))]
    NoKey {
        /// The provider asked for.
        provider: String,
        /// When the user's key for it expired, if it did.
        expired: Option<String>,
    },
    /// A credentials file exists but cannot be opened (truncated, tampered,
    /// encrypted to someone else, its identity lost). It is never
    /// overwritten: writes are refused until it is reset.
    #[error(
        "{file} cannot be opened: {reason}. Nothing was changed and the file is kept as it is; {fix}"
    )]
    Broken {
        /// The file: `credentials.age` (relative to the profile) or the host file's path.
        file: String,
        /// What is wrong with it.
        reason: String,
        /// What to do.
        fix: &'static str,
    },
    /// A reset was asked for but the file opens fine (or is absent).
    #[error("{0}")]
    NothingToReset(String),
    /// The daemon identity stored under the account's name belongs to
    /// another uid: the name was reused. An admin must decide.
    #[error(
        "the daemon identity keys/{user}.key was made for uid {key_uid}, not for {user} (uid {uid}); \
         the account name was reused. An admin must decide: move keys/{user}.key aside (as root), \
         then {user} runs `profilectl creds reset`"
    )]
    KeyOwner {
        /// The account name.
        user: String,
        /// The uid the identity was made for.
        key_uid: u32,
        /// The account's uid now.
        uid: u32,
    },
    /// A file or directory of the state directory is unsafe to use.
    #[error("{}: {reason}; fix: {fix}", path.display())]
    UnsafeState {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
        /// The command that fixes it.
        fix: String,
    },
    /// An operation in the state directory failed.
    #[error("{}: {op} failed: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// age refused to encrypt (a recipient it cannot use).
    #[error("encrypting {file} failed: {reason}")]
    Encrypt {
        /// The file being written.
        file: String,
        /// age's reason.
        reason: String,
    },
    /// The profile layer refused or failed (rule 1).
    #[error(transparent)]
    Profile(#[from] profile::Error),
}

fn expired_note(expired: &Option<String>) -> String {
    match expired {
        Some(at) => format!("the key set for it expired at {at}; "),
        None => String::new(),
    }
}

impl Error {
    /// An I/O error on `path`.
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        op: &'static str,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, op, source }
    }
}

/// Result of the credentials module.
pub type Result<T> = std::result::Result<T, Error>;

impl From<crate::statefs::Error> for Error {
    fn from(e: crate::statefs::Error) -> Error {
        match e {
            crate::statefs::Error::Unsafe { path, reason, fix } => {
                Error::UnsafeState { path, reason, fix }
            }
            crate::statefs::Error::Io { path, op, source } => Error::Io { path, op, source },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_key_says_what_to_run() {
        let e = Error::NoKey {
            provider: "openai".into(),
            expired: None,
        };
        assert_eq!(
            e.to_string(),
            "no key for \"openai\": set one with profilectl creds set openai"
        );
        let e = Error::NoKey {
            provider: "openai".into(),
            expired: Some("2026-01-01T00:00:00Z".into()),
        };
        assert!(
            e.to_string()
                .contains("expired at 2026-01-01T00:00:00Z; set one")
        );
    }
}
