//! The open-file limit: the daemon holds a directory handle per profile
//! (about 10,000 descriptors at 10,000 profiles), far above the usual soft
//! limit of 1024, so it raises its soft limit to the hard one at start, as
//! systemd recommends for services (the unit sets the hard limit).

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The raise failed.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot raise the open-file limit from {soft} to {hard}: {source}; \
     the daemon goes on with {soft} (set LimitNOFILE= in the unit, or ulimit -n)"
)]
pub struct Error {
    /// The soft limit in force.
    pub soft: Limit,
    /// The hard limit it tried to reach.
    pub hard: Limit,
    source: rustix::io::Errno,
}

/// One limit; None is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub Option<u64>);

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("unlimited"),
        }
    }
}

/// The soft limit before and after the raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    /// The soft limit found.
    pub before: Limit,
    /// The soft limit now in force.
    pub now: Limit,
}

/// Sets the soft `RLIMIT_NOFILE` to the hard limit.
pub fn raise_to_hard() -> Result<Raised, Error> {
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return Ok(Raised {
            before: Limit(limit.current),
            now: Limit(limit.current),
        });
    }
    let wanted = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    setrlimit(Resource::Nofile, wanted).map_err(|source| Error {
        soft: Limit(limit.current),
        hard: Limit(limit.maximum),
        source,
    })?;
    Ok(Raised {
        before: Limit(limit.current),
        now: Limit(limit.maximum),
    })
}
