//! One PAM login: a fresh context per attempt with the user preset, a
//! conversation that answers the password prompt, `pam_authenticate` then
//! `pam_acct_mgmt`, and a check that no module changed the user. No PAM
//! session is ever opened: profiled grants API access, not a login shell.
//!
//! This blocks (PAM sleeps on failure to slow guessing): callers run it on
//! the blocking pool, a bounded number at a time.

use std::ffi::{CStr, CString};

use pam_client::{ConversationHandler, ErrorCode, Flag};
use zeroize::Zeroizing;

/// Why a login failed. Only the log sees the difference; the client gets
/// the same answer for every one of them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// PAM could not start (a missing or broken service file).
    #[error("PAM service {service:?} could not start: {reason}")]
    Start {
        /// The service name.
        service: String,
        /// PAM's message.
        reason: String,
    },
    /// Authentication failed: wrong password, unknown or locked account.
    #[error("authentication failed: {0}")]
    Authenticate(String),
    /// Account management refused: expired, locked, or needs a new password.
    #[error("account refused: {0}")]
    Account(String),
    /// A module changed the user name during the conversation.
    #[error("PAM changed the user from {asked:?} to {got:?}")]
    UserChanged {
        /// The user asked for.
        asked: String,
        /// The user PAM ended with.
        got: String,
    },
}

/// The conversation: answers the one password prompt, logs what modules
/// say, refuses any other question.
struct Conversation {
    password: Option<Zeroizing<String>>,
    user: String,
}

impl ConversationHandler for Conversation {
    fn prompt_echo_on(&mut self, prompt: &CStr) -> Result<CString, ErrorCode> {
        // The user is preset; a module asking anything visible (a name, an
        // OTP) is a configuration this daemon does not support.
        tracing::warn!(
            "PAM asked {:?} for {}; only a password is supported",
            prompt.to_string_lossy(),
            self.user
        );
        Err(ErrorCode::CONV_ERR)
    }

    fn prompt_echo_off(&mut self, _prompt: &CStr) -> Result<CString, ErrorCode> {
        // Answer once: a second password prompt (a new-password dialog)
        // gets nothing.
        let password = self.password.take().ok_or(ErrorCode::CONV_ERR)?;
        CString::new(password.as_bytes()).map_err(|_| ErrorCode::CONV_ERR)
    }

    fn text_info(&mut self, msg: &CStr) {
        tracing::info!("PAM for {}: {}", self.user, msg.to_string_lossy());
    }

    fn error_msg(&mut self, msg: &CStr) {
        tracing::warn!("PAM for {}: {}", self.user, msg.to_string_lossy());
    }
}

/// Authenticates `user` with `password` through PAM `service`.
pub fn login(service: &str, user: &str, password: Zeroizing<String>) -> Result<(), Error> {
    let conversation = Conversation {
        password: Some(password),
        user: user.to_owned(),
    };
    let mut ctx =
        pam_client::Context::new(service, Some(user), conversation).map_err(|e| Error::Start {
            service: service.to_owned(),
            reason: e.to_string(),
        })?;
    ctx.authenticate(Flag::DISALLOW_NULL_AUTHTOK)
        .map_err(|e| Error::Authenticate(e.to_string()))?;
    ctx.acct_mgmt(Flag::DISALLOW_NULL_AUTHTOK)
        .map_err(|e| Error::Account(e.to_string()))?;
    let got = ctx.user().map_err(|e| Error::Account(e.to_string()))?;
    if got != user {
        return Err(Error::UserChanged {
            asked: user.to_owned(),
            got,
        });
    }
    Ok(())
}
