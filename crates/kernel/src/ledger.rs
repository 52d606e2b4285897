//! Running totals the policy's `totals:` need: the calls the kernel let through.

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use p3ak_policy::TotalSpec;

/// Calls that ran (allowed, or approved), kept as long as the longest window needs them.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    calls: VecDeque<(Instant, String, serde_json::Value)>,
}

impl Ledger {
    /// Each total's value over its window before the call being decided.
    pub(crate) fn totals(&self, specs: &[TotalSpec], now: Instant) -> BTreeMap<String, i64> {
        specs
            .iter()
            .map(|spec| {
                let sum = self
                    .calls
                    .iter()
                    .filter(|(at, _, _)| now.saturating_duration_since(*at) < spec.window)
                    .filter_map(|(_, action, args)| spec.contribution(action, args))
                    .fold(0i64, i64::saturating_add);
                (spec.name.clone(), sum)
            })
            .collect()
    }

    /// Records a call that is about to run.
    pub(crate) fn record(&mut self, specs: &[TotalSpec], action: &str, args: &serde_json::Value) {
        let now = Instant::now();
        let keep = specs
            .iter()
            .map(|s| s.window)
            .max()
            .unwrap_or(Duration::ZERO);
        while self
            .calls
            .front()
            .is_some_and(|(at, _, _)| now.saturating_duration_since(*at) >= keep)
        {
            self.calls.pop_front();
        }
        if specs.iter().any(|s| s.contribution(action, args).is_some()) {
            self.calls.push_back((now, action.to_owned(), args.clone()));
        }
    }
}
