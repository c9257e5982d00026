//! Counters for `GET /v1/metrics`, in the Prometheus text format. No
//! account names appear: the metrics are readable by anyone on the host.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Request counts of one route: by method, then by status.
type ByMethod = BTreeMap<String, BTreeMap<u16, u64>>;

/// The daemon's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Route, then method, then status: nested so a request that was seen
    /// before is counted without allocating its key.
    requests: Mutex<BTreeMap<String, ByMethod>>,
    logins_ok: AtomicU64,
    logins_failed: AtomicU64,
    logins_throttled: AtomicU64,
}

/// The outcome of a login attempt.
#[derive(Clone, Copy, Debug)]
pub enum Login {
    /// Accepted.
    Ok,
    /// Refused by PAM or policy.
    Failed,
    /// Answered 429 without asking PAM.
    Throttled,
}

/// Gauges read at scrape time.
#[derive(Clone, Copy, Debug)]
pub struct Gauges {
    /// Live login sessions.
    pub sessions: usize,
    /// Directories in the profiles root.
    pub profiles: usize,
}

impl Metrics {
    /// Counts one request to `route` (the route template, not the path,
    /// so ids do not explode the label set).
    pub fn request(&self, method: &str, route: &str, status: u16) {
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let methods = match map.get_mut(route) {
            Some(m) => m,
            None => map.entry(route.to_owned()).or_default(),
        };
        let statuses = match methods.get_mut(method) {
            Some(s) => s,
            None => methods.entry(method.to_owned()).or_default(),
        };
        *statuses.entry(status).or_insert(0) += 1;
    }

    /// Counts a login attempt.
    pub fn login(&self, outcome: Login) {
        let counter = match outcome {
            Login::Ok => &self.logins_ok,
            Login::Failed => &self.logins_failed,
            Login::Throttled => &self.logins_throttled,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition.
    pub fn render(&self, gauges: Gauges) -> String {
        let mut out = String::new();
        out.push_str("# HELP profiled_requests_total API requests by route, method and status.\n");
        out.push_str("# TYPE profiled_requests_total counter\n");
        let map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        for (route, methods) in map.iter() {
            for (method, statuses) in methods {
                for (status, n) in statuses {
                    let _ = writeln!(
                        out,
                        "profiled_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
                    );
                }
            }
        }
        drop(map);
        out.push_str("# HELP profiled_logins_total Login attempts by result.\n");
        out.push_str("# TYPE profiled_logins_total counter\n");
        for (result, c) in [
            ("ok", &self.logins_ok),
            ("failed", &self.logins_failed),
            ("throttled", &self.logins_throttled),
        ] {
            let _ = writeln!(
                out,
                "profiled_logins_total{{result=\"{result}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP profiled_sessions Live login sessions.\n# TYPE profiled_sessions gauge\nprofiled_sessions {}",
            gauges.sessions
        );
        let _ = writeln!(
            out,
            "# HELP profiled_profiles Directories in the profiles root.\n# TYPE profiled_profiles gauge\nprofiled_profiles {}",
            gauges.profiles
        );
        out
    }
}
