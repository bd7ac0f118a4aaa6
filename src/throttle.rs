//! Rate-limited warnings for failures that repeat while Redis is away or refusing (a worker retries every few
//! hundred milliseconds; its log should say so once, then now and then with a count, not thousands of times).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Longest silence of a repeating warning.
const EVERY: Duration = Duration::from_secs(30);

/// The state of one call site's warning.
pub(crate) struct Throttle {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Throttle {
    pub(crate) const fn new() -> Self {
        Throttle {
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` if this occurrence is to be logged (`n` were suppressed since the last one), `None` if not.
    pub(crate) fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut last = self.last.lock().expect("throttle lock");
        if last.is_some_and(|t| now.duration_since(t) < EVERY) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

/// `tracing::warn!`, at most once per 30 s from this call site, with a `suppressed` count of the ones left out.
macro_rules! warn_throttled {
    ($($arg:tt)+) => {{
        static THROTTLE: $crate::throttle::Throttle = $crate::throttle::Throttle::new();
        if let Some(suppressed) = THROTTLE.allow() {
            tracing::warn!(suppressed, $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_logged_then_one_per_period_with_a_count() {
        let t = Throttle::new();
        let t0 = Instant::now();
        assert_eq!(t.allow_at(t0), Some(0));
        assert_eq!(t.allow_at(t0 + Duration::from_secs(1)), None);
        assert_eq!(t.allow_at(t0 + Duration::from_secs(2)), None);
        assert_eq!(t.allow_at(t0 + EVERY + Duration::from_secs(1)), Some(2));
        assert_eq!(t.allow_at(t0 + EVERY + Duration::from_secs(2)), None);
    }
}
