//! The system configuration, `/etc/profiled/profiled.toml`.
//!
//! Every error names the file, the line and the key, so an admin can go
//! straight to the mistake; an unknown key is an error, not silently ignored.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::accounts::{self, Policy};

mod overlap;

use overlap::Place;

/// Where the system config lives unless `--config` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/profiled/profiled.toml";

/// A problem with the config file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read {}: {source}", file.display())]
    Read {
        /// The config file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file was read but something in it is wrong.
    #[error("{}:{line}: {reason}", file.display())]
    Invalid {
        /// The config file.
        file: PathBuf,
        /// 1-based line of the offending key or value.
        line: usize,
        /// What is wrong and, where it helps, what to write instead.
        reason: String,
    },
}

/// Where things live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    /// State: keys, sessions, the system audit log.
    pub state_dir: PathBuf,
    /// The profiles root: one directory per account.
    pub profiles_dir: PathBuf,
    /// Runtime files: the socket and lock files.
    pub runtime_dir: PathBuf,
    /// The Unix socket the API listens on.
    pub socket: PathBuf,
    /// Admins' agent declarations: `*.toml` files.
    pub agents_dir: PathBuf,
    /// Lock files and cycle stamps of the agents (root, 0700); two daemons
    /// sharing one profiles tree share this directory too.
    pub lock_dir: PathBuf,
}

impl Paths {
    /// The system audit log directory.
    pub fn audit_dir(&self) -> PathBuf {
        self.state_dir.join("audit")
    }
}

/// The loopback TCP listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tcp {
    /// Where to listen (loopback only); `None` when disabled.
    pub listen: Option<SocketAddr>,
}

/// How the watcher learns of changes in the profiles (`[watch]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watch {
    /// inotify, polling, or inotify with a fallback to polling.
    pub mode: WatchMode,
    /// How often polling walks the profiles (poll mode and the fallback).
    pub poll_interval: Duration,
    /// The most inotify watches one profile may take; past it the rest of
    /// the profile is polled (one account cannot exhaust root's watches).
    pub max_watches_per_profile: usize,
}

/// `watch.max_watches_per_profile` when unset: far more directories than a
/// profile's records use (a year of months is 13), far fewer than the
/// kernel's default limit of watches for all of root.
const DEFAULT_WATCHES_PER_PROFILE: usize = 2_000;

/// `watch.mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchMode {
    /// inotify; when the kernel's watch limit is reached, poll as well.
    Auto,
    /// inotify only (a reached limit is logged, nothing polls).
    Inotify,
    /// Polling only: for network filesystems, where inotify misses writes
    /// made on other hosts.
    Poll,
}

/// Logins, sessions and tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Auth {
    /// The PAM service (a file in /etc/pam.d).
    pub pam_service: String,
    /// PAM conversations run at once; more wait their turn.
    pub max_concurrent_logins: usize,
    /// A session unused this long expires.
    pub session_idle: Duration,
    /// A session expires this long after login, used or not.
    pub session_max: Duration,
    /// The longest lifetime a personal token may ask for.
    pub token_max: Duration,
    /// Failed logins allowed before delays start (per account).
    pub login_free_attempts: u32,
    /// Failed logins allowed from one client address before delays start.
    pub client_free_attempts: u32,
    /// The longest delay a run of failed logins earns.
    pub login_max_delay: Duration,
}

/// A per-account request rate: a token bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: u32,
    /// Bucket size: the burst allowed after a quiet spell.
    pub burst: u32,
}

/// Size limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// Largest profile file the daemon reads.
    pub max_record_bytes: u64,
    /// Largest page a listing returns.
    pub max_page_size: usize,
    /// Request rate per account.
    pub rate: Rate,
    /// Per-account overrides of `rate`.
    pub rate_overrides: BTreeMap<String, Rate>,
    /// Connection and event-stream budgets (rule 9).
    pub connections: Connections,
}

/// How many connections and event streams each caller may hold at once,
/// per listener (rule 9): one account cannot starve the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connections {
    /// Open connections per account: per uid on the socket, per account a
    /// token authenticated on TCP.
    pub per_account: usize,
    /// Open connections per uid on the socket for a uid that is neither
    /// eligible nor an admin (system accounts, unknown uids).
    pub per_ineligible_uid: usize,
    /// Open connections per listener, all callers together.
    pub total: usize,
    /// The part of `total` only root and admins may use.
    pub reserved: usize,
    /// TCP connections that have not yet authenticated, all together; a
    /// new one pushes out the longest idle of them when they are full.
    pub unauthenticated: usize,
    /// `/v1/events` streams per account, both listeners together.
    pub event_streams_per_account: usize,
    /// How long a connection may stay open without a request (between
    /// keep-alive requests as before the first), headers included.
    pub idle_timeout: Duration,
}

impl Limits {
    /// The request rate of `user`.
    pub fn rate_of(&self, user: &str) -> Rate {
        self.rate_overrides.get(user).copied().unwrap_or(self.rate)
    }
}

/// The whole validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
    /// Where things live.
    pub paths: Paths,
    /// Who gets a profile and who is admin.
    pub policy: Policy,
    /// Size and rate limits.
    pub limits: Limits,
    /// The TCP listener.
    pub tcp: Tcp,
    /// Logins, sessions and tokens.
    pub auth: Auth,
    /// Provider keys: which providers may fall back to the host's key.
    pub credentials: crate::creds::Settings,
    /// The file watcher.
    pub watch: Watch,
    /// Agent cycles and runs.
    pub agents: Agents,
    /// The shared knowledge hub.
    pub knowledge: Knowledge,
}

/// The knowledge hub (`[knowledge]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Knowledge {
    /// The directory of entries (root-owned; entries owned by their authors).
    pub dir: PathBuf,
    /// A group whose members may create entries directly in the directory
    /// (it becomes root:GROUP, mode 1775); without one, entries are created
    /// through the API only (mode 0755).
    pub group: Option<String>,
}

/// How agents run (`[agents]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agents {
    /// Cycles of different agents running at once: admins' agents, and as
    /// many again of users' own agents (a pool of their own).
    pub max_parallel_agents: usize,
    /// Users one cycle runs at once (each under her own lock), so a user
    /// whose run hangs (stopped with SIGSTOP, say) delays only herself.
    pub cycle_parallel: usize,
    /// A run's limit when its declaration gives none.
    pub default_timeout: Duration,
    /// The longest a user-declared agent may run (its own `timeout` and
    /// `default_timeout` are capped to it): a user's agent holds her
    /// profile's lock, and admin agents skip her while it runs.
    pub max_user_timeout: Duration,
    /// Between SIGTERM and SIGKILL when a run times out.
    pub kill_grace: Duration,
    /// At shutdown, how long the run in progress may go on.
    pub shutdown_grace: Duration,
    /// How long a run waits for the user's lock (another agent in the
    /// same profile) before it is recorded as skipped.
    pub lock_wait: Duration,
    /// How long path changes must be quiet before a triggered run.
    pub debounce: Duration,
    /// The tail of a run's output that is kept, in bytes.
    pub output_limit: usize,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    paths: RawPaths,
    #[serde(default)]
    accounts: RawAccounts,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    tcp: RawTcp,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    credentials: crate::creds::RawSettings,
    #[serde(default)]
    watch: RawWatch,
    #[serde(default)]
    agents: RawAgents,
    #[serde(default)]
    knowledge: RawKnowledge,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKnowledge {
    dir: Option<SpannedPath>,
    group: Option<Name>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAgents {
    max_parallel_agents: Option<NonZeroU64>,
    cycle_parallel: Option<NonZeroU64>,
    default_timeout: Option<HumanDuration>,
    max_user_timeout: Option<HumanDuration>,
    kill_grace: Option<HumanDuration>,
    shutdown_grace: Option<HumanDuration>,
    lock_wait: Option<HumanDuration>,
    debounce: Option<HumanDuration>,
    output_limit: Option<NonZeroU64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWatch {
    mode: Option<WatchMode>,
    poll_interval: Option<HumanDuration>,
    max_watches_per_profile: Option<std::num::NonZeroUsize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTcp {
    listen: Option<ListenAddr>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    pam_service: Option<Name>,
    max_concurrent_logins: Option<NonZeroU64>,
    session_idle_timeout: Option<HumanDuration>,
    session_max_lifetime: Option<HumanDuration>,
    token_max_lifetime: Option<HumanDuration>,
    login_free_attempts: Option<u32>,
    client_free_attempts: Option<u32>,
    login_max_delay: Option<HumanDuration>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct RawRate {
    requests_per_second: NonZeroU64,
    request_burst: NonZeroU64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPaths {
    state_dir: Option<SpannedPath>,
    profiles_dir: Option<SpannedPath>,
    runtime_dir: Option<SpannedPath>,
    socket: Option<SpannedPath>,
    agents_dir: Option<SpannedPath>,
    lock_dir: Option<SpannedPath>,
}

/// A path and where the file sets it, for errors about how it lies
/// towards the others.
type SpannedPath = toml::Spanned<AbsolutePath>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAccounts {
    uid_min: Option<toml::Spanned<u32>>,
    uid_max: Option<toml::Spanned<u32>>,
    #[serde(default)]
    allowed_groups: Vec<Name>,
    #[serde(default)]
    denied_users: Vec<Name>,
    #[serde(default)]
    admins: Vec<Name>,
    admin_group: Option<Name>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_body_bytes: Option<NonZeroU64>,
    max_record_bytes: Option<NonZeroU64>,
    max_page_size: Option<NonZeroU64>,
    requests_per_second: Option<NonZeroU64>,
    request_burst: Option<NonZeroU64>,
    #[serde(default)]
    per_user: BTreeMap<String, RawRate>,
    connections_per_account: Option<NonZeroU64>,
    connections_per_ineligible_uid: Option<NonZeroU64>,
    connections_total: Option<NonZeroU64>,
    connections_reserved: Option<toml::Spanned<u64>>,
    unauthenticated_connections: Option<NonZeroU64>,
    event_streams_per_account: Option<NonZeroU64>,
    idle_timeout: Option<HumanDuration>,
}

/// A path that must be absolute; relative ones are refused at parse time so
/// the error carries the line.
struct AbsolutePath(PathBuf);

impl<'de> Deserialize<'de> for AbsolutePath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let p = PathBuf::from(&s);
        if !p.is_absolute() {
            return Err(serde::de::Error::custom(format!(
                "{s:?} is not an absolute path; write it starting with /"
            )));
        }
        // Paths are compared as written (overlap), so `..` would hide
        // where one really is.
        if p.components().any(|c| c == std::path::Component::ParentDir) {
            return Err(serde::de::Error::custom(format!(
                "{s:?} contains `..`; write the path without it"
            )));
        }
        Ok(AbsolutePath(p))
    }
}

/// `listen`: a loopback socket address, or `""` to switch TCP off. A
/// non-loopback address is refused: the API trusts loopback only.
struct ListenAddr(Option<SocketAddr>);

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(ListenAddr(None));
        }
        let addr: SocketAddr = s.parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "{s:?} is not an address:port; write e.g. \"127.0.0.1:7733\" or \"[::1]:7733\""
            ))
        })?;
        if !addr.ip().is_loopback() {
            return Err(serde::de::Error::custom(format!(
                "{addr} is not a loopback address; profiled listens on 127.0.0.1 or ::1 only \
                 (put a reverse proxy in front for anything else)"
            )));
        }
        Ok(ListenAddr(Some(addr)))
    }
}

/// A duration written as a number and a unit: `90s`, `15m`, `8h`, `30d`.
struct HumanDuration(Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(HumanDuration).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{s:?} is not a duration; write a number and a unit, e.g. \"90s\", \"15m\", \"8h\", \"30d\""
            ))
        })
    }
}

/// Parses `90s`, `15m`, `8h`, `30d` (a positive whole number and a unit).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let n: u64 = s[..s.len() - unit.len_utf8()].trim().parse().ok()?;
    let secs = match unit {
        's' => n,
        'm' => n.checked_mul(60)?,
        'h' => n.checked_mul(3600)?,
        'd' => n.checked_mul(86_400)?,
        _ => return None,
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// An account or group name.
struct Name(String);

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if !accounts::is_valid_name(&s) {
            return Err(serde::de::Error::custom(format!(
                "{s:?} is not a valid account or group name"
            )));
        }
        Ok(Name(s))
    }
}

impl Config {
    /// Reads and validates the config at `path`.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            file: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Loads `path` when given; otherwise the default path if it exists,
    /// else the built-in defaults (a fresh install runs without a config).
    pub fn load_or_default(path: Option<&Path>) -> Result<Config, Error> {
        match path {
            Some(p) => Config::load(p),
            None if Path::new(DEFAULT_PATH).exists() => Config::load(Path::new(DEFAULT_PATH)),
            None => Config::parse("", Path::new("(built-in defaults)")),
        }
    }

    /// Validates `text`, naming `file` in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Config, Error> {
        let mut raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            invalid(file, text, span, e.message().to_owned())
        })?;
        let (login_min, login_max) = login_defs_uid_range();

        let rp = raw.paths;
        let span = |p: &Option<SpannedPath>| p.as_ref().map(toml::Spanned::span);
        let spans = [
            span(&rp.state_dir),
            span(&rp.profiles_dir),
            span(&rp.runtime_dir),
            span(&rp.socket),
            span(&rp.agents_dir),
            span(&rp.lock_dir),
            span(&raw.knowledge.dir),
        ];
        let path = |p: Option<SpannedPath>| p.map(|p| p.into_inner().0);
        let state_dir = path(rp.state_dir).unwrap_or_else(|| PathBuf::from("/var/lib/profiled"));
        let runtime_dir = path(rp.runtime_dir).unwrap_or_else(|| PathBuf::from("/run/profiled"));
        let paths = Paths {
            profiles_dir: path(rp.profiles_dir).unwrap_or_else(|| state_dir.join("profiles")),
            socket: path(rp.socket).unwrap_or_else(|| runtime_dir.join("api.sock")),
            agents_dir: path(rp.agents_dir)
                .unwrap_or_else(|| PathBuf::from("/etc/profiled/agents.d")),
            lock_dir: path(rp.lock_dir).unwrap_or_else(|| runtime_dir.join("locks")),
            state_dir,
            runtime_dir,
        };
        let knowledge = Knowledge {
            dir: path(raw.knowledge.dir).unwrap_or_else(|| paths.state_dir.join("knowledge")),
            group: raw.knowledge.group.map(|n| n.0),
        };
        check_overlap(&paths, &knowledge, spans)
            .map_err(|c| invalid(file, text, c.span.unwrap_or(0..0), c.reason))?;

        let uid_max_span = raw.accounts.uid_max.as_ref().map(toml::Spanned::span);
        let uid_max = raw
            .accounts
            .uid_max
            .map_or(login_max, toml::Spanned::into_inner);
        let uid_min = match raw.accounts.uid_min {
            Some(spanned) => {
                let span = spanned.span();
                let v = spanned.into_inner();
                if v > uid_max {
                    return Err(invalid(
                        file,
                        text,
                        span,
                        format!("uid_min ({v}) is greater than uid_max ({uid_max})"),
                    ));
                }
                v
            }
            None if login_min > uid_max => {
                return Err(invalid(
                    file,
                    text,
                    uid_max_span.unwrap_or(0..0),
                    format!(
                        "uid_max ({uid_max}) is below the default uid_min ({login_min}, from /etc/login.defs); set uid_min too"
                    ),
                ));
            }
            None => login_min,
        };
        let names = |v: Vec<Name>| v.into_iter().map(|n| n.0).collect::<Vec<_>>();
        let policy = Policy {
            uid_min,
            uid_max,
            allowed_groups: names(raw.accounts.allowed_groups),
            denied_users: names(raw.accounts.denied_users),
            admins: names(raw.accounts.admins),
            admin_group: raw
                .accounts
                .admin_group
                .map(|n| n.0)
                .unwrap_or_else(|| "profiled-admin".to_owned()),
        };

        let connections = connections_of(&mut raw.limits, file, text)?;
        let mib = 1024 * 1024;
        let rate = |per_second: Option<NonZeroU64>, burst: Option<NonZeroU64>| Rate {
            per_second: u32_of(per_second, 50),
            burst: u32_of(burst, 200),
        };
        let limits = Limits {
            max_body_bytes: usize_of(raw.limits.max_body_bytes, mib),
            max_record_bytes: raw.limits.max_record_bytes.map_or(mib, NonZeroU64::get),
            max_page_size: usize_of(raw.limits.max_page_size, 200),
            rate: rate(raw.limits.requests_per_second, raw.limits.request_burst),
            rate_overrides: raw
                .limits
                .per_user
                .into_iter()
                .map(|(user, r)| {
                    (
                        user,
                        rate(Some(r.requests_per_second), Some(r.request_burst)),
                    )
                })
                .collect(),
            connections,
        };
        let default_listen = SocketAddr::from(([127, 0, 0, 1], 7733));
        let tcp = Tcp {
            listen: raw.tcp.listen.map_or(Some(default_listen), |l| l.0),
        };
        let dur = |d: Option<HumanDuration>, default: u64| {
            d.map_or(Duration::from_secs(default), |d| d.0)
        };
        let a = raw.auth;
        let auth = Auth {
            pam_service: a.pam_service.map_or_else(|| "profiled".to_owned(), |n| n.0),
            max_concurrent_logins: usize_of(a.max_concurrent_logins, 4),
            session_idle: dur(a.session_idle_timeout, 8 * 3600),
            session_max: dur(a.session_max_lifetime, 7 * 86_400),
            token_max: dur(a.token_max_lifetime, 365 * 86_400),
            login_free_attempts: a.login_free_attempts.unwrap_or(5),
            client_free_attempts: a.client_free_attempts.unwrap_or(20),
            login_max_delay: dur(a.login_max_delay, 15 * 60),
        };

        let credentials = raw
            .credentials
            .validate()
            .map_err(|(span, reason)| invalid(file, text, span, reason))?;

        Ok(Config {
            source: Some(file.to_owned()),
            paths,
            policy,
            limits,
            tcp,
            auth,
            credentials,
            watch: Watch {
                mode: raw.watch.mode.unwrap_or(WatchMode::Auto),
                poll_interval: dur(raw.watch.poll_interval, 2),
                max_watches_per_profile: raw
                    .watch
                    .max_watches_per_profile
                    .map_or(DEFAULT_WATCHES_PER_PROFILE, std::num::NonZeroUsize::get),
            },
            agents: agents_of(raw.agents),
            knowledge,
        })
    }
}

/// Refuses a layout where an account could be given one of the daemon's
/// own directories (see [`overlap`]). `spans` are those of state_dir,
/// profiles_dir, runtime_dir, socket, agents_dir, lock_dir and
/// knowledge.dir, in that order.
fn check_overlap(
    p: &Paths,
    knowledge: &Knowledge,
    spans: [Option<Range<usize>>; 7],
) -> Result<(), overlap::Clash> {
    let [state, profiles, runtime, socket, agents, lock, kn] = spans;
    overlap::check(
        &[
            Place::new("paths.profiles_dir", &p.profiles_dir, profiles),
            Place::new("knowledge.dir", &knowledge.dir, kn),
        ],
        &Place::new("paths.state_dir", &p.state_dir, state),
        &Place::new("paths.runtime_dir", &p.runtime_dir, runtime),
        &[
            Place::new("paths.lock_dir", &p.lock_dir, lock),
            Place::new("paths.socket", &p.socket, socket),
            Place::new("paths.agents_dir", &p.agents_dir, agents),
        ],
    )
}

/// The `[limits]` connection keys, with their defaults; the reserve must
/// leave room for everyone else.
fn connections_of(l: &mut RawLimits, file: &Path, text: &str) -> Result<Connections, Error> {
    let total = usize_of(l.connections_total, 1024);
    let reserved = match l.connections_reserved.take() {
        None => (total / 16).max(1),
        Some(spanned) => {
            let span = spanned.span();
            let v = usize::try_from(spanned.into_inner()).unwrap_or(usize::MAX);
            if v >= total {
                return Err(invalid(
                    file,
                    text,
                    span,
                    format!(
                        "connections_reserved ({v}) must be below connections_total ({total}), \
                         or nobody but root and admins could connect"
                    ),
                ));
            }
            v
        }
    };
    Ok(Connections {
        per_account: usize_of(l.connections_per_account, 32),
        per_ineligible_uid: usize_of(l.connections_per_ineligible_uid, 4),
        total,
        reserved,
        unauthenticated: usize_of(l.unauthenticated_connections, 32),
        event_streams_per_account: usize_of(l.event_streams_per_account, 8),
        idle_timeout: l
            .idle_timeout
            .take()
            .map_or(Duration::from_secs(30), |d| d.0),
    })
}

fn agents_of(a: RawAgents) -> Agents {
    let dur =
        |d: Option<HumanDuration>, default: u64| d.map_or(Duration::from_secs(default), |d| d.0);
    Agents {
        max_parallel_agents: usize_of(a.max_parallel_agents, 2),
        cycle_parallel: usize_of(a.cycle_parallel, 4),
        default_timeout: dur(a.default_timeout, 15 * 60),
        max_user_timeout: dur(a.max_user_timeout, 60 * 60),
        kill_grace: dur(a.kill_grace, 5),
        shutdown_grace: dur(a.shutdown_grace, 10),
        lock_wait: dur(a.lock_wait, 5 * 60),
        debounce: dur(a.debounce, 2),
        output_limit: usize_of(a.output_limit, 64 * 1024),
    }
}

fn u32_of(v: Option<NonZeroU64>, default: u32) -> u32 {
    v.map_or(default, |v| u32::try_from(v.get()).unwrap_or(u32::MAX))
}

fn usize_of(v: Option<NonZeroU64>, default: u64) -> usize {
    usize::try_from(v.map_or(default, NonZeroU64::get)).unwrap_or(usize::MAX)
}

/// Builds an `Invalid` error for the byte range `span` of `text`, prefixing
/// the reason with the dotted key found there.
pub(crate) fn invalid(file: &Path, text: &str, span: Range<usize>, reason: String) -> Error {
    let start = span.start.min(text.len());
    let line = text[..start].matches('\n').count() + 1;
    let reason = match key_at(text, start) {
        Some(key) if !reason.contains(&key) => format!("{key}: {reason}"),
        _ => reason,
    };
    Error::Invalid {
        file: file.to_owned(),
        line,
        reason,
    }
}

/// The dotted key (`section.key`) on the line containing byte `pos`, found
/// from the nearest `[section]` header above it.
fn key_at(text: &str, pos: usize) -> Option<String> {
    let line_start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line.split_once('=')?.0.trim();
    if key.is_empty() || key.starts_with('[') {
        return None;
    }
    let section = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    Some(match section {
        Some(s) => format!("{s}.{key}"),
        None => key.to_owned(),
    })
}

/// `UID_MIN`/`UID_MAX` from /etc/login.defs, or 1000..60000 where absent.
fn login_defs_uid_range() -> (u32, u32) {
    let text = std::fs::read_to_string("/etc/login.defs").unwrap_or_default();
    let value = |key: &str| {
        text.lines().find_map(|l| {
            let mut parts = l.split_whitespace();
            (parts.next() == Some(key))
                .then(|| parts.next()?.parse::<u32>().ok())
                .flatten()
        })
    };
    (
        value("UID_MIN").unwrap_or(1000),
        value("UID_MAX").unwrap_or(60000),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, Error> {
        Config::parse(text, Path::new("/etc/profiled/profiled.toml"))
    }

    #[test]
    fn empty_file_gives_defaults() -> Result<(), Error> {
        let c = parse("")?;
        assert_eq!(
            c.paths.profiles_dir,
            PathBuf::from("/var/lib/profiled/profiles")
        );
        assert_eq!(c.paths.socket, PathBuf::from("/run/profiled/api.sock"));
        assert_eq!(c.policy.admin_group, "profiled-admin");
        assert!(c.policy.uid_min <= c.policy.uid_max);
        Ok(())
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err = parse("[paths]\nstate_dir = \"/srv\"\n\n[accounts]\nadmin_grup = \"x\"\n")
            .err()
            .map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(err.starts_with("/etc/profiled/profiled.toml:5: "), "{err}");
        assert!(err.contains("admin_grup"), "{err}");
    }

    #[test]
    fn tcp_listens_on_loopback_only() -> Result<(), Error> {
        assert_eq!(
            parse("")?.tcp.listen.map(|a| a.to_string()),
            Some("127.0.0.1:7733".to_owned())
        );
        assert_eq!(parse("[tcp]\nlisten = \"\"\n")?.tcp.listen, None);
        assert!(
            parse("[tcp]\nlisten = \"[::1]:9000\"\n")?
                .tcp
                .listen
                .is_some()
        );
        let err = parse("[tcp]\nlisten = \"0.0.0.0:7733\"\n")
            .err()
            .map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(
            err.contains(":2: tcp.listen:") && err.contains("not a loopback"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn durations_and_rates_parse_with_their_units() -> Result<(), Error> {
        let c = parse(
            "[auth]\nsession_idle_timeout = \"30m\"\n[limits]\nrequests_per_second = 5\nrequest_burst = 10\n[limits.per_user.bot]\nrequests_per_second = 100\nrequest_burst = 500\n",
        )?;
        assert_eq!(c.auth.session_idle, Duration::from_secs(1800));
        assert_eq!(
            c.limits.rate_of("alice"),
            Rate {
                per_second: 5,
                burst: 10
            }
        );
        assert_eq!(
            c.limits.rate_of("bot"),
            Rate {
                per_second: 100,
                burst: 500
            }
        );
        let err = parse("[auth]\nsession_max_lifetime = \"7 weeks\"\n")
            .err()
            .map(|e| e.to_string());
        assert!(
            err.unwrap_or_default()
                .contains("auth.session_max_lifetime")
        );
        Ok(())
    }

    #[test]
    fn connection_budgets_parse_and_keep_room_outside_the_reserve() -> Result<(), Error> {
        let c = parse("")?.limits.connections;
        assert_eq!(
            (c.per_account, c.per_ineligible_uid, c.total, c.reserved),
            (32, 4, 1024, 64)
        );
        assert_eq!(
            (
                c.unauthenticated,
                c.event_streams_per_account,
                c.idle_timeout
            ),
            (32, 8, Duration::from_secs(30))
        );
        let c = parse(
            "[limits]\nconnections_total = 100\nconnections_reserved = 0\nidle_timeout = \"5s\"\n",
        )?
        .limits
        .connections;
        assert_eq!((c.total, c.reserved, c.idle_timeout.as_secs()), (100, 0, 5));
        let err = parse("[limits]\nconnections_total = 10\nconnections_reserved = 10\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains(":3: limits.connections_reserved:") && err.contains("below"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn watch_mode_and_interval_parse() -> Result<(), Error> {
        let c = parse("")?;
        assert_eq!(c.watch.mode, WatchMode::Auto);
        assert_eq!(c.watch.poll_interval, Duration::from_secs(2));
        let c = parse("[watch]\nmode = \"poll\"\npoll_interval = \"5s\"\n")?;
        assert_eq!(c.watch.mode, WatchMode::Poll);
        assert_eq!(c.watch.poll_interval, Duration::from_secs(5));
        let err = parse("[watch]\nmode = \"fanotify\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains(":2: watch.mode:") && err.contains("inotify"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn knowledge_defaults_under_the_state_dir() -> Result<(), Error> {
        let c = parse("[paths]\nstate_dir = \"/srv/pd\"\n")?;
        assert_eq!(c.knowledge.dir, PathBuf::from("/srv/pd/knowledge"));
        assert_eq!(c.knowledge.group, None);
        let c = parse("[knowledge]\ndir = \"/srv/kb\"\ngroup = \"team\"\n")?;
        assert_eq!(c.knowledge.dir, PathBuf::from("/srv/kb"));
        assert_eq!(c.knowledge.group.as_deref(), Some("team"));
        let err = parse("[knowledge]\ndir = \"kb\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(":2: knowledge.dir:"), "{err}");
        Ok(())
    }

    #[test]
    fn overlapping_paths_name_the_file_line_and_key() {
        let err = |text: &str| parse(text).err().map(|e| e.to_string()).unwrap_or_default();
        let e = err("[paths]\nstate_dir = \"/srv/pd\"\nprofiles_dir = \"/srv/pd\"\n");
        assert!(
            e.starts_with("/etc/profiled/profiled.toml:3: paths.profiles_dir")
                && e.contains("is also paths.state_dir")
                && e.contains("/srv/pd/profiles"),
            "{e}"
        );
        // A default profiles_dir: the line of the key that makes the clash.
        let e =
            err("[paths]\nstate_dir = \"/srv/pd\"\n\n[knowledge]\ndir = \"/srv/pd/profiles/kb\"\n");
        assert!(e.contains(":5: knowledge.dir"), "{e}");
        let e = err("[paths]\nprofiles_dir = \"/var/lib\"\n");
        assert!(e.contains(":2: ") && e.contains("\"profiled\""), "{e}");
        let e = err("[paths]\nprofiles_dir = \"/var/lib/profiled/../profiled/keys\"\n");
        assert!(
            e.contains(":2: paths.profiles_dir") && e.contains(".."),
            "{e}"
        );
        assert!(parse("[paths]\nprofiles_dir = \"/home/profiles\"\n").is_ok());
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = parse("[limits]\nmax_body_bytes = 0\n")
            .err()
            .map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(err.contains(":2: limits.max_body_bytes:"), "{err}");

        let err = parse("[paths]\nsocket = \"run/api.sock\"\n")
            .err()
            .map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(
            err.contains(":2: paths.socket:") && err.contains("absolute"),
            "{err}"
        );

        let err = parse("[accounts]\nuid_min = 5000\nuid_max = 2000\n")
            .err()
            .map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(
            err.contains(":2: ") && err.contains("greater than uid_max"),
            "{err}"
        );
    }
}
