//! The wall clock, read one way everywhere: log entries, checkpoints, approvals and schedules
//! all stamp time as the same integers. Here because this is the lowest crate that the vault,
//! the approval daemon and the kernel all depend on.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; 0 for a clock set before 1970.
#[must_use]
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Whole seconds since the Unix epoch; 0 for a clock set before 1970.
#[must_use]
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_after_2025_and_agrees_with_itself() {
        let (ms, secs) = (now_ms(), now_unix());
        assert!(secs > 1_735_689_600, "{secs}");
        assert!((ms / 1000 - secs).abs() <= 1, "{ms} {secs}");
    }
}
