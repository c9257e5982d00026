//! Dispatch to the built-in agents (ingest, index, organize). They run on
//! the cycle's blocking thread under the same locks as external agents and
//! are logged the same way; the summary they return becomes the run's
//! `output`.

use super::decl::Builtin;
use crate::accounts::Account;
use crate::api::AppState;
use crate::profile::ProfileDir;

/// Runs the built-in `which` for `account`: `Ok(summary)` or
/// `Err(what went wrong, for the user)`.
pub fn run(
    _state: &AppState,
    which: Builtin,
    _account: &Account,
    _profile: &ProfileDir,
    _run_id: &str,
    _trigger: &str,
) -> Result<String, String> {
    Err(format!(
        "the built-in agent {:?} is not in this build",
        which.as_str()
    ))
}
