//! Dispatch to the built-in agents (ingest, index, organize; their code is
//! in `crate::builtin`). They run on the cycle's blocking thread under the
//! same locks as external agents and are logged the same way: the summary
//! line becomes the run's `output`, and a run that needs the user to act
//! (no model configured, no key, a rejected key) is an `error` whose
//! message says what to do.

use super::decl::Builtin;
use crate::api::AppState;
use crate::builtin::{self, Summary};
use crate::profile::ProfileDir;

/// Runs the built-in `which` on `profile`: `Ok(summary)` or `Err(what the
/// user should know or do)`.
pub fn run(state: &AppState, which: Builtin, profile: &ProfileDir) -> Result<String, String> {
    let config = state.config();
    let summary = match which {
        Builtin::Ingest => builtin::ingest::run(&config, profile).map_err(|e| e.to_string()),
        Builtin::Index => builtin::index(&config, profile).map_err(|e| e.to_string()),
        Builtin::Organize => {
            crate::organize::run_with(&config, profile, &state.settings).map_err(|e| e.to_string())
        }
    }?;
    match summary {
        Summary {
            attention: Some(reason),
            ..
        } => Err(reason),
        Summary { line, .. } => Ok(line),
    }
}
