//! Rate limits: a token bucket (GCRA, `governor`) per caller and scope, sized by `[api.rates]`;
//! callers that fail to authenticate share the `unauthenticated` quota per peer, and `/mcp`'s
//! HTTP requests count against the `mcp` quota per caller.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use p3ak_kernel::config::{API_QUOTAS, API_SCOPES, ApiRate, ApiSettings};

/// The quota of callers that failed to authenticate, by peer.
pub const UNAUTHENTICATED: &str = "unauthenticated";
/// The quota of `/mcp`'s HTTP requests, by caller.
pub const MCP: &str = "mcp";

/// Every limiter.
pub struct RateLimits {
    by_scope: BTreeMap<&'static str, DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
    /// When each (scope, key) last had a limit hit audited.
    audited: Mutex<HashMap<(&'static str, String), Instant>>,
}

/// A caller over a limit is audited at most once per scope in this time; the metrics count
/// every hit. Otherwise a flood of refused requests would be a flood of audit entries.
const AUDIT_EVERY: Duration = Duration::from_secs(60);

fn quota(rate: ApiRate) -> Quota {
    let per_minute = NonZeroU32::new(rate.per_minute).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(per_minute).allow_burst(burst)
}

impl RateLimits {
    /// The limiters `settings` asks for.
    #[must_use]
    pub fn new(settings: &ApiSettings) -> Self {
        let by_scope = API_SCOPES
            .iter()
            .copied()
            .chain(API_QUOTAS.iter().copied())
            .map(|scope| (scope, RateLimiter::keyed(quota(settings.rate(scope)))))
            .collect();
        Self {
            by_scope,
            clock: DefaultClock::default(),
            audited: Mutex::new(HashMap::new()),
        }
    }

    /// Whether this hit of `key` on `scope` should be audited (the first in a minute).
    pub fn should_audit(&self, scope: &'static str, key: &str) -> bool {
        let Ok(mut audited) = self.audited.lock() else {
            return true;
        };
        let now = Instant::now();
        match audited.get(&(scope, key.to_owned())) {
            Some(last) if now.duration_since(*last) < AUDIT_EVERY => false,
            _ => {
                audited.insert((scope, key.to_owned()), now);
                true
            }
        }
    }

    /// Takes one request of `key` (a principal, or a peer for [`UNAUTHENTICATED`]) from
    /// `scope`'s bucket; `Err(seconds)` to wait when it is empty.
    pub fn check(&self, scope: &str, key: &str) -> Result<(), u64> {
        let Some(limiter) = self.by_scope.get(scope) else {
            return Ok(());
        };
        limiter.check_key(&key.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }

    /// Forgets callers whose buckets are full again, so the state stays bounded by the
    /// callers active in the last few minutes.
    pub fn prune(&self) {
        for limiter in self.by_scope.values() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Ok(mut audited) = self.audited.lock() {
            let now = Instant::now();
            audited.retain(|_, last| now.duration_since(*last) < AUDIT_EVERY);
            audited.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_caller_waits_and_others_do_not() {
        let mut settings = ApiSettings::default();
        settings.rates.insert(
            "chat".to_owned(),
            ApiRate {
                per_minute: 6,
                burst: 2,
            },
        );
        let limits = RateLimits::new(&settings);
        assert!(limits.check("chat", "token:a").is_ok());
        assert!(limits.check("chat", "token:a").is_ok());
        let wait = limits.check("chat", "token:a").unwrap_err();
        assert!((1..=10).contains(&wait), "{wait}");
        assert!(limits.check("chat", "token:b").is_ok());
        assert!(limits.check("vault:read", "token:a").is_ok());
    }
}
