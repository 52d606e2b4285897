//! What the host's audit subsystem reports of refused accesses by plugins, matched to the
//! plugin that made them and rate-limited before it reaches the kernel's audit log.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// At most [`DenialLimiter::BURST`] `sandbox.denied` entries per plugin in each
/// [`DenialLimiter::WINDOW`]; the rest are counted into the next entry, so that a plugin
/// hammering at a wall cannot flood the audit log.
#[derive(Default)]
pub(super) struct DenialLimiter {
    by_plugin: HashMap<String, (Instant, u32, u64)>,
}

impl DenialLimiter {
    pub(super) const BURST: u32 = 20;
    pub(super) const WINDOW: Duration = Duration::from_secs(10);

    /// `Some(suppressed since the last entry)` when an entry may be written at `now`.
    pub(super) fn admit(&mut self, plugin: &str, now: Instant) -> Option<u64> {
        let (start, count, suppressed) = self
            .by_plugin
            .entry(plugin.to_owned())
            .or_insert((now, 0, 0));
        if now.duration_since(*start) >= Self::WINDOW {
            *start = now;
            *count = 0;
        }
        if *count >= Self::BURST {
            *suppressed += 1;
            return None;
        }
        *count += 1;
        Some(std::mem::take(suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_admitted_then_counted_into_the_next_window() {
        let mut limiter = DenialLimiter::default();
        let start = Instant::now();
        for _ in 0..DenialLimiter::BURST {
            assert_eq!(limiter.admit("a", start), Some(0));
        }
        assert_eq!(limiter.admit("a", start), None);
        assert_eq!(limiter.admit("a", start), None);
        // Another plugin has its own budget.
        assert_eq!(limiter.admit("b", start), Some(0));
        let later = start + DenialLimiter::WINDOW;
        assert_eq!(limiter.admit("a", later), Some(2));
        assert_eq!(limiter.admit("a", later), Some(0));
    }
}
