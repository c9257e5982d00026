//! Who may use the loopback TCP listener: PAM logins, hashed sessions and
//! personal tokens, failed-login throttling and per-account request rates
//! (docs/SECURITY.md, rules 5 and 6).

pub mod client;
pub mod pam;
pub mod ratelimit;
pub mod throttle;
pub mod tokens;
