//! Per-account request rates: a token bucket per uid.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::accounts::UserId;
use crate::config::Rate;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The buckets of every account seen.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<UserId, Bucket>>,
}

impl RateLimiter {
    /// Takes one token from `uid`'s bucket; `Err(retry_after)` when empty.
    pub fn take(&self, uid: UserId, rate: Rate, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let burst = f64::from(rate.burst);
        let per_second = f64::from(rate.per_second);
        let b = buckets.entry(uid).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_second).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_refill_rate() {
        let rl = RateLimiter::default();
        let rate = Rate {
            per_second: 2,
            burst: 3,
        };
        let now = Instant::now();
        for _ in 0..3 {
            assert!(rl.take(UserId(1000), rate, now).is_ok());
        }
        let wait = rl.take(UserId(1000), rate, now).err();
        assert_eq!(wait, Some(Duration::from_millis(500)));
        // Other accounts have their own bucket.
        assert!(rl.take(UserId(1001), rate, now).is_ok());
        assert!(
            rl.take(UserId(1000), rate, now + Duration::from_millis(500))
                .is_ok()
        );
    }
}
