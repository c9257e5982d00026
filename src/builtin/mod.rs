//! The built-in agents: `ingest`, `index` and `organize`. Each is one
//! function the agent framework calls for one user, under that user's lock,
//! on a blocking thread: `run(config, dir) -> Result<Summary, Error>`.
//! Nothing here schedules anything.

pub mod ingest;

pub use crate::organize::run as organize;
pub use crate::search::update::run as index;

use std::fmt::Write as _;

/// The outcome of one run for one user, for the run log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// One line a person can read (`"12 ingested, 1 rejected: …"`).
    pub line: String,
    /// Named counts (`ingested`, `rejected`…), in a stable order.
    pub counts: Vec<(&'static str, u64)>,
    /// Something the user must act on (a missing or rejected key), when the
    /// run could not do its work; the run itself did not fail.
    pub attention: Option<String>,
}

impl Summary {
    /// A summary of `counts` followed by `details` (reasons, at most a few).
    pub fn of(counts: Vec<(&'static str, u64)>, details: &[String]) -> Summary {
        let mut line = counts
            .iter()
            .map(|(name, n)| format!("{n} {name}"))
            .collect::<Vec<_>>()
            .join(", ");
        const SHOWN: usize = 8;
        for d in details.iter().take(SHOWN) {
            let _ = write!(line, "; {d}");
        }
        if details.len() > SHOWN {
            let _ = write!(line, "; and {} more", details.len() - SHOWN);
        }
        Summary {
            line,
            counts,
            attention: None,
        }
    }

    /// A run that could not work until the user acts.
    pub fn attention(reason: String) -> Summary {
        Summary {
            line: reason.clone(),
            counts: Vec::new(),
            attention: Some(reason),
        }
    }

    /// The count named `name` (0 when absent).
    pub fn count(&self, name: &str) -> u64 {
        self.counts
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v)
    }
}
