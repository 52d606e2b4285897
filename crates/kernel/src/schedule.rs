//! Schedules: `[schedules.NAME]` in `config.toml` sends a message to an agent at set times —
//! a 5-field cron expression in the kernel's local time zone, or a heartbeat (`every`).
//!
//! A due run enters the same road as any inbound message: [`Kernel::turn`] with channel and
//! sender `schedule:NAME`, conversation `schedule-NAME` and the schedule's agent, so the
//! policy sees the channel (`channel: { like: 'schedule:*' }`). Its `schedule.fired` entry is
//! written first; the turn's own entries follow. One run at a time per schedule: a run that
//! falls due while the previous one still runs is skipped (`schedule.skipped`, `overlap`).
//! A failed turn is audited (`schedule.failed`) and the runner goes on.
//!
//! ## Times
//!
//! A cron schedule runs at the times its expression matches on the wall clock of the kernel's
//! time zone. Across a DST change (as Vixie cron does, through `croner`): a fixed time that
//! does not exist that day (02:30 when clocks jump from 02:00 to 03:00) runs at the first
//! minute after the gap; a fixed time that happens twice (clocks fall back) runs once, at the
//! first. A heartbeat runs every `every` of real time, counted from its previous due time
//! (from the start, the first time the kernel sees it).
//!
//! ## Missed runs
//!
//! What each schedule has handled is kept encrypted in the kernel's vault (object space
//! `schedules`): the last due time dealt with (run or skipped) and the last run with its
//! outcome. At start, for each enabled schedule:
//!
//! - never seen before (or disabled until now): nothing was missed; its first run is the
//!   next time after the start;
//! - otherwise the runs that fell due while the kernel was down are those after the last
//!   handled time, up to now. If there are none, nothing happens. If there are some, only
//!   the **latest** counts: with `missed = "once"` (the default) it runs once, at start, if
//!   it is no older than `catch_up` (default 12h): `schedule.fired` with `catch_up: true` and
//!   `late_ms` its age; older than that, it is skipped (`schedule.skipped`, `too_old`). With
//!   `missed = "skip"` it is skipped (`schedule.skipped`, `missed`). Earlier missed runs are
//!   never run. Either way the next run is the schedule's next time after now.
//!
//! While the kernel runs, a run that is late (the machine slept through it) runs once when
//! the kernel wakes, for the latest time due.
//!
//! The runner reads the time from a [`Clock`] and waits through a [`Sleeper`]; the kernel
//! uses the system's ([`SystemSleeper`] wakes at least once a minute to notice clock
//! changes), a test a [`ManualClock`], which is both and moves only when told.

use std::sync::Arc;
use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Zoned;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};

use crate::audit::{AuditEvent, BoxFuture};
use crate::config::{Missed, ScheduleConfig};
use crate::kernel::Kernel;
use crate::road::{Clock, SystemClock};

/// The vault's object space for schedules' state.
const SPACE: &str = "schedules";

/// The shortest heartbeat.
const MIN_EVERY: Duration = Duration::from_secs(60);

/// The longest the system sleeper waits before the runner looks at the clock again.
const RECHECK: Duration = Duration::from_secs(60);

/// When a schedule runs.
#[derive(Debug, Clone)]
pub(crate) enum Timing {
    /// At the times a cron expression matches, in the clock's time zone.
    Cron(Box<Cron>),
    /// Every so long, counted from the previous due time.
    Every(Duration),
}

impl Timing {
    /// Reads `cron` / `every` of schedule `name`; the error names `schedules.NAME.KEY`.
    pub(crate) fn parse(name: &str, config: &ScheduleConfig) -> Result<Self, String> {
        match (&config.cron, &config.every) {
            (Some(_), Some(_)) | (None, None) => Err(format!(
                "schedules.{name}: set exactly one of `cron` and `every`"
            )),
            (Some(cron), None) => {
                if cron.split_whitespace().count() != 5 && !cron.trim_start().starts_with('@') {
                    return Err(format!(
                        "schedules.{name}.cron `{cron}`: use 5 fields (minute hour day-of-month \
                         month day-of-week)"
                    ));
                }
                let parsed = CronParser::builder()
                    .seconds(Seconds::Disallowed)
                    .year(Year::Disallowed)
                    .build()
                    .parse(cron)
                    .map_err(|e| format!("schedules.{name}.cron `{cron}`: {e}"))?;
                // A pattern that never matches (`0 0 30 2 *`) is an error, not a silent no-op.
                let probe = Zoned::new(jiff::Timestamp::UNIX_EPOCH, TimeZone::UTC);
                parsed
                    .find_next_occurrence(&probe, false)
                    .map_err(|_| format!("schedules.{name}.cron `{cron}`: matches no time"))?;
                Ok(Self::Cron(Box::new(parsed)))
            }
            (None, Some(every)) => {
                let d = humantime::parse_duration(every)
                    .map_err(|e| format!("schedules.{name}.every `{every}`: {e}"))?;
                if d < MIN_EVERY {
                    return Err(format!(
                        "schedules.{name}.every `{every}` must be at least 1m"
                    ));
                }
                Ok(Self::Every(d))
            }
        }
    }

    /// How a person reads it.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Cron(cron) => format!("cron {}", cron.pattern.as_str()),
            Self::Every(d) => format!("every {}", humantime::format_duration(*d)),
        }
    }

    /// The first due time after `after` (ms since the epoch); `anchor_ms` is the last due
    /// time handled, which a heartbeat counts from.
    pub(crate) fn next_after(&self, after: &Zoned, anchor_ms: i64) -> Option<i64> {
        match self {
            Self::Cron(cron) => cron
                .find_next_occurrence(after, false)
                .ok()
                .map(|z| z.timestamp().as_millisecond()),
            Self::Every(every) => {
                let every = every_ms(*every);
                let after_ms = after.timestamp().as_millisecond();
                let k = after_ms
                    .saturating_sub(anchor_ms)
                    .div_euclid(every)
                    .saturating_add(1)
                    .max(1);
                Some(anchor_ms.saturating_add(k.saturating_mul(every)))
            }
        }
    }

    /// The latest due time after `anchor_ms` and no later than `now`, if any.
    pub(crate) fn latest_due(&self, now: &Zoned, anchor_ms: i64) -> Option<i64> {
        let now_ms = now.timestamp().as_millisecond();
        let due = match self {
            Self::Cron(cron) => cron
                .find_previous_occurrence(now, true)
                .ok()
                .map(|z| z.timestamp().as_millisecond())?,
            Self::Every(every) => {
                let every = every_ms(*every);
                let k = now_ms.saturating_sub(anchor_ms).div_euclid(every);
                anchor_ms.saturating_add(k.saturating_mul(every))
            }
        };
        (due > anchor_ms && due <= now_ms).then_some(due)
    }
}

fn every_ms(every: Duration) -> i64 {
    i64::try_from(every.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// What a schedule does at the kernel's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AtStart {
    /// First seen (or just enabled): nothing was missed.
    Fresh,
    /// Nothing fell due while the kernel was down.
    Nothing,
    /// Run once now for the latest missed time.
    CatchUp {
        /// That time.
        due_ms: i64,
    },
    /// Skip the missed runs; the latest was due then.
    Skip {
        /// That time.
        due_ms: i64,
        /// `missed` or `too_old`.
        reason: &'static str,
    },
}

/// The missed-run rule (see the module's documentation): `handled_ms` is the last due time
/// handled before the kernel stopped, `None` for a schedule not seen (or not enabled) before.
pub(crate) fn at_start(
    timing: &Timing,
    missed: Missed,
    catch_up: Duration,
    handled_ms: Option<i64>,
    now: &Zoned,
) -> AtStart {
    let Some(handled_ms) = handled_ms else {
        return AtStart::Fresh;
    };
    let Some(due_ms) = timing.latest_due(now, handled_ms) else {
        return AtStart::Nothing;
    };
    let age = now.timestamp().as_millisecond().saturating_sub(due_ms);
    if missed == Missed::Skip {
        AtStart::Skip {
            due_ms,
            reason: "missed",
        }
    } else if age > every_ms(catch_up) {
        AtStart::Skip {
            due_ms,
            reason: "too_old",
        }
    } else {
        AtStart::CatchUp { due_ms }
    }
}

/// Waits for a time on a [`Clock`].
pub trait Sleeper: Send + Sync {
    /// Resolves when `clock` reads `unix_ms` or later — or earlier: the runner looks at the
    /// clock again either way.
    fn sleep_until<'a>(&'a self, unix_ms: i64, clock: &'a dyn Clock) -> BoxFuture<'a, ()>;
}

/// Real waiting, at most a minute at a time (a clock set forward, or a machine that slept, is
/// noticed within a minute).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemSleeper;

impl Sleeper for SystemSleeper {
    fn sleep_until<'a>(&'a self, unix_ms: i64, clock: &'a dyn Clock) -> BoxFuture<'a, ()> {
        let wait = u64::try_from(unix_ms.saturating_sub(clock.unix_ms())).unwrap_or(0);
        let wait = Duration::from_millis(wait).min(RECHECK);
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that moves only when told, and the sleeper that goes with it: for tests and dry
/// runs of schedules ([`Kernel::run_schedules`]) without waiting for real time.
#[derive(Debug)]
pub struct ManualClock {
    zone: TimeZone,
    now_ms: watch::Sender<i64>,
    asleep: watch::Sender<Option<i64>>,
}

impl ManualClock {
    /// A clock reading `start`, in its time zone.
    #[must_use]
    pub fn new(start: &Zoned) -> Self {
        Self {
            zone: start.time_zone().clone(),
            now_ms: watch::Sender::new(start.timestamp().as_millisecond()),
            asleep: watch::Sender::new(None),
        }
    }

    /// Sets the time (forward or back); a sleeper waiting for it wakes.
    pub fn set(&self, time: &Zoned) {
        self.now_ms.send_replace(time.timestamp().as_millisecond());
    }

    /// Moves the time forward.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.now_ms.send_modify(|now| *now = now.saturating_add(by));
    }

    /// The time a sleeper waits for now, if one does.
    #[must_use]
    pub fn asleep(&self) -> Option<i64> {
        *self.asleep.borrow()
    }

    /// Waits (at most `timeout` of real time) until a sleeper waits for exactly `unix_ms`:
    /// the runner has done everything due before and computed that its next run is then.
    pub async fn asleep_until(&self, unix_ms: i64, timeout: Duration) -> bool {
        let mut asleep = self.asleep.subscribe();
        tokio::time::timeout(timeout, asleep.wait_for(|a| *a == Some(unix_ms)))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Zoned {
        let ms = *self.now_ms.borrow();
        jiff::Timestamp::from_millisecond(ms)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .to_zoned(self.zone.clone())
    }
}

impl Sleeper for ManualClock {
    fn sleep_until<'a>(&'a self, unix_ms: i64, _clock: &'a dyn Clock) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut now = self.now_ms.subscribe();
            self.asleep.send_replace(Some(unix_ms));
            let _ = now.wait_for(|now| *now >= unix_ms).await;
            self.asleep.send_replace(None);
        })
    }
}

/// The last due time a schedule handled, as stored.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Mark {
    handled_ms: i64,
    enabled: bool,
}

/// A schedule's last run, as stored and shown by `p3ak schedules`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun {
    /// When it was due (ms since the epoch).
    pub due_ms: i64,
    /// When it started.
    pub started_ms: i64,
    /// When it ended, if it did.
    #[serde(default)]
    pub finished_ms: Option<i64>,
    /// Whether it was the catch-up of a run missed while the kernel was down.
    #[serde(default)]
    pub catch_up: bool,
    /// `running`, `ok`, `error: …`, `interrupted` (the kernel stopped during it); `ok` may
    /// add why the reply was not delivered.
    pub outcome: String,
}

/// One schedule, for `p3ak schedules`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleStatus {
    /// Its name (`schedules.NAME`).
    pub name: String,
    /// The agent it messages.
    pub agent: String,
    /// `cron 0 7 * * *` or `every 30m`.
    pub timing: String,
    /// Whether it runs.
    pub enabled: bool,
    /// What it does about runs missed while the kernel was down.
    pub missed: Missed,
    /// Where the reply also goes.
    pub deliver: Option<String>,
    /// Its next run (ms since the epoch), if enabled.
    pub next_ms: Option<i64>,
    /// Its last run.
    pub last: Option<LastRun>,
}

fn mark_name(name: &str) -> String {
    format!("handled/{name}")
}

fn last_name(name: &str) -> String {
    format!("last/{name}")
}

/// One enabled schedule, as the runner keeps it.
struct Slot {
    plan: Arc<Plan>,
    timing: Timing,
    handled_ms: i64,
    next_ms: Option<i64>,
    running: Option<AbortHandle>,
}

/// What a run needs.
struct Plan {
    name: String,
    agent: String,
    message: String,
    crest: Option<String>,
    deliver: Option<String>,
}

impl Kernel {
    /// Runs the schedules of `config.toml` on `clock` until aborted (the kernel's `serve`
    /// starts it on the system clock). Applies the missed-run rule first.
    pub async fn run_schedules(self: Arc<Self>, clock: Arc<dyn Clock>, sleeper: Arc<dyn Sleeper>) {
        let mut tasks = JoinSet::new();
        let mut slots = Vec::new();
        let now = clock.now();
        let now_ms = now.timestamp().as_millisecond();
        for (name, config) in &self.config.schedules {
            let timing = match Timing::parse(name, config) {
                Ok(timing) => timing,
                Err(e) => {
                    tracing::error!("{e}");
                    continue;
                }
            };
            let mark = self.read_state::<Mark>(&mark_name(name)).await;
            if !config.enabled {
                self.write_mark(
                    name,
                    Mark {
                        handled_ms: now_ms,
                        enabled: false,
                    },
                )
                .await;
                continue;
            }
            if let Some(mut last) = self.read_state::<LastRun>(&last_name(name)).await
                && last.outcome == "running"
            {
                last.outcome = "interrupted".to_owned();
                self.write_last(name, &last).await;
            }
            let plan = Arc::new(Plan {
                name: name.clone(),
                agent: config.target(&self.config.kernel.default_agent),
                message: config.message.clone(),
                crest: config.crest.clone(),
                deliver: config.deliver.clone(),
            });
            let handled = mark.filter(|m| m.enabled).map(|m| m.handled_ms);
            let mut slot = Slot {
                plan,
                timing,
                handled_ms: handled.unwrap_or(now_ms),
                next_ms: None,
                running: None,
            };
            match at_start(&slot.timing, config.missed, config.catch_up, handled, &now) {
                AtStart::Fresh => self.write_mark(name, slot.mark()).await,
                AtStart::Nothing => {}
                AtStart::CatchUp { due_ms } => {
                    self.fire(&mut slot, due_ms, true, &clock, &mut tasks).await;
                }
                AtStart::Skip { due_ms, reason } => {
                    self.skip(&mut slot, due_ms, reason).await;
                }
            }
            slot.next_ms = slot.timing.next_after(&now, slot.handled_ms);
            slots.push(slot);
        }
        loop {
            while tasks.try_join_next().is_some() {}
            let now = clock.now();
            for slot in &mut slots {
                if slot
                    .next_ms
                    .is_none_or(|next| next > now.timestamp().as_millisecond())
                {
                    continue;
                }
                let due_ms = slot
                    .timing
                    .latest_due(&now, slot.handled_ms)
                    .or(slot.next_ms)
                    .unwrap_or_default();
                if slot.running.as_ref().is_some_and(|r| !r.is_finished()) {
                    self.skip(slot, due_ms, "overlap").await;
                } else {
                    self.fire(slot, due_ms, false, &clock, &mut tasks).await;
                }
                slot.next_ms = slot.timing.next_after(&now, slot.handled_ms);
            }
            let Some(earliest) = slots.iter().filter_map(|s| s.next_ms).min() else {
                // Nothing will fall due again: let the runs end, then stop.
                while tasks.join_next().await.is_some() {}
                return;
            };
            sleeper.sleep_until(earliest, clock.as_ref()).await;
        }
    }

    /// Starts a run: `schedule.fired` (durable first), the marks, then the turn in `tasks`.
    async fn fire(
        self: &Arc<Self>,
        slot: &mut Slot,
        due_ms: i64,
        catch_up: bool,
        clock: &Arc<dyn Clock>,
        tasks: &mut JoinSet<()>,
    ) {
        let plan = Arc::clone(&slot.plan);
        let started_ms = clock.unix_ms();
        slot.handled_ms = due_ms;
        let fired = self
            .audit
            .record(AuditEvent::ScheduleFired {
                name: plan.name.clone(),
                agent: plan.agent.clone(),
                due_ms,
                late_ms: started_ms.saturating_sub(due_ms).max(0),
                catch_up,
            })
            .await;
        self.write_mark(&plan.name, slot.mark()).await;
        if let Err(e) = fired {
            // The run does not happen unless its entry is durable.
            tracing::error!("schedule `{}` not run: {e}", plan.name);
            return;
        }
        let mut last = LastRun {
            due_ms,
            started_ms,
            finished_ms: None,
            catch_up,
            outcome: "running".to_owned(),
        };
        self.write_last(&plan.name, &last).await;
        let kernel = Arc::clone(self);
        let clock = Arc::clone(clock);
        let handle = tasks.spawn(async move {
            last.outcome = kernel.run_scheduled(&plan).await;
            last.finished_ms = Some(clock.unix_ms());
            kernel.write_last(&plan.name, &last).await;
        });
        slot.running = Some(handle);
    }

    /// One run's turn and delivery; its outcome in words.
    async fn run_scheduled(&self, plan: &Plan) -> String {
        let channel = format!("schedule:{}", plan.name);
        let mut inbound = p3ak_proto::Inbound::new(
            format!("schedule-{}", plan.name),
            channel.clone(),
            plan.message.clone(),
        );
        inbound.agent = Some(plan.agent.clone());
        // Escalations still reach the approval daemon (and the policy's push targets); a
        // schedule has no one at the other end to show notices to.
        let (events, _notices) = mpsc::unbounded_channel();
        let turn = async {
            match &plan.crest {
                None => self.turn(inbound, &channel, events).await,
                Some(goal) => {
                    let request = crate::crest::PhaseRequest {
                        id: goal,
                        phase: None,
                        note: Some(plan.message.as_str()),
                        by: &channel,
                    };
                    self.crest_next(request, events).await.map(|r| r.reply)
                }
            }
        };
        let reply = match turn.await {
            Ok(reply) => reply,
            Err(e) => {
                let error = self.broker.scrubber().scrub(&e.to_string());
                self.audit
                    .note(AuditEvent::ScheduleFailed {
                        name: plan.name.clone(),
                        error: error.clone(),
                    })
                    .await;
                return format!("error: {error}");
            }
        };
        let Some(identity) = &plan.deliver else {
            return "ok".to_owned();
        };
        match self.deliver_to(identity, &reply).await {
            Ok(()) => "ok".to_owned(),
            Err(reason) => {
                self.audit
                    .note(AuditEvent::ScheduleUndelivered {
                        name: plan.name.clone(),
                        deliver: identity.clone(),
                        reason: reason.clone(),
                    })
                    .await;
                format!("ok (not delivered: {reason})")
            }
        }
    }

    /// Skips a due run, audited.
    async fn skip(&self, slot: &mut Slot, due_ms: i64, reason: &str) {
        slot.handled_ms = due_ms;
        self.audit
            .note(AuditEvent::ScheduleSkipped {
                name: slot.plan.name.clone(),
                reason: reason.to_owned(),
                due_ms,
            })
            .await;
        self.write_mark(&slot.plan.name, slot.mark()).await;
    }

    /// Each configured schedule: its next run (by the system clock) and its last run.
    pub async fn schedule_status(&self) -> Vec<ScheduleStatus> {
        let now = SystemClock.now();
        let now_ms = now.timestamp().as_millisecond();
        let mut rows = Vec::new();
        for (name, config) in &self.config.schedules {
            let mark = self.read_state::<Mark>(&mark_name(name)).await;
            let last = self.read_state::<LastRun>(&last_name(name)).await;
            let timing = Timing::parse(name, config).ok();
            let anchor = mark.filter(|m| m.enabled).map_or(now_ms, |m| m.handled_ms);
            let next_ms = timing
                .as_ref()
                .filter(|_| config.enabled)
                .and_then(|t| t.next_after(&now, anchor));
            rows.push(ScheduleStatus {
                name: name.clone(),
                agent: config.target(&self.config.kernel.default_agent),
                timing: timing.map_or_else(|| "invalid".to_owned(), |t| t.describe()),
                enabled: config.enabled,
                missed: config.missed,
                deliver: config.deliver.clone(),
                next_ms,
                last,
            });
        }
        rows
    }

    /// A stored state object; `None` when absent or unreadable (then the schedule starts
    /// afresh, which the log says).
    async fn read_state<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        object: &str,
    ) -> Option<T> {
        let vault = Arc::clone(&self.vault);
        let object = object.to_owned();
        let read = tokio::task::spawn_blocking(move || {
            vault
                .read_object(SPACE, &object)
                .map(|b| b.map(|b| serde_json::from_slice::<T>(b.expose())))
        })
        .await;
        match read {
            Ok(Ok(Some(Ok(value)))) => Some(value),
            Ok(Ok(None)) => None,
            Ok(Ok(Some(Err(e)))) => {
                tracing::warn!("schedule state unreadable, starting afresh: {e}");
                None
            }
            Ok(Err(e)) => {
                tracing::warn!("schedule state unreadable, starting afresh: {e}");
                None
            }
            Err(e) => {
                tracing::warn!("schedule state task failed: {e}");
                None
            }
        }
    }

    async fn write_state<T: Serialize>(&self, object: String, value: &T) {
        let bytes = match serde_json::to_vec(value) {
            Ok(bytes) => zeroize::Zeroizing::new(bytes),
            Err(e) => {
                tracing::error!("cannot encode schedule state: {e}");
                return;
            }
        };
        let vault = Arc::clone(&self.vault);
        let written = tokio::task::spawn_blocking(move || {
            vault.transact(|tx| tx.put_object(SPACE, &object, &bytes))
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("cannot store schedule state: {e}"),
            Err(e) => tracing::error!("schedule state task failed: {e}"),
        }
    }

    async fn write_mark(&self, name: &str, mark: Mark) {
        self.write_state(mark_name(name), &mark).await;
    }

    async fn write_last(&self, name: &str, last: &LastRun) {
        self.write_state(last_name(name), last).await;
    }
}

impl Slot {
    fn mark(&self) -> Mark {
        Mark {
            handled_ms: self.handled_ms,
            enabled: true,
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests: a failed step should fail loudly"
)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    /// Central European time with its DST rules, without a time zone database.
    fn berlin() -> TimeZone {
        TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap()
    }

    fn at(zone: &TimeZone, civil: &str) -> Zoned {
        civil
            .parse::<jiff::civil::DateTime>()
            .unwrap()
            .to_zoned(zone.clone())
            .unwrap()
    }

    fn ms(z: &Zoned) -> i64 {
        z.timestamp().as_millisecond()
    }

    fn show(zone: &TimeZone, ms: i64) -> String {
        jiff::Timestamp::from_millisecond(ms)
            .unwrap()
            .to_zoned(zone.clone())
            .strftime("%Y-%m-%d %H:%M:%S %:z")
            .to_string()
    }

    fn schedule(body: &str) -> ScheduleConfig {
        let text = format!("[schedules.s]\nmessage = \"m\"\n{body}\n");
        Config::parse(&text, Path::new("c.toml"))
            .unwrap()
            .schedules
            .remove("s")
            .unwrap()
    }

    fn timing(body: &str) -> Timing {
        Timing::parse("s", &schedule(body)).unwrap()
    }

    #[test]
    fn next_run_of_a_daily_cron_crosses_midnight_and_the_year() {
        let z = berlin();
        let t = timing("cron = \"0 7 * * *\"");
        let next = |civil: &str| show(&z, t.next_after(&at(&z, civil), 0).unwrap());
        assert_eq!(next("2026-12-31T23:59:30"), "2027-01-01 07:00:00 +01:00");
        assert_eq!(next("2026-06-01T06:59:59"), "2026-06-01 07:00:00 +02:00");
        // Exactly at its time, the next one is tomorrow's.
        assert_eq!(next("2026-06-01T07:00:00"), "2026-06-02 07:00:00 +02:00");
        let midnight = timing("cron = \"0 0 * * *\"");
        assert_eq!(
            show(
                &z,
                midnight
                    .next_after(&at(&z, "2026-12-31T23:59:59.900"), 0)
                    .unwrap()
            ),
            "2027-01-01 00:00:00 +01:00"
        );
    }

    #[test]
    fn next_run_across_dst_keeps_the_wall_clock_time() {
        let z = berlin();
        let seven = timing("cron = \"0 7 * * *\"");
        // Clocks go forward on 2026-03-29: 07:00 is still 07:00, 23 real hours later.
        let before = at(&z, "2026-03-28T07:00:00");
        let next = seven.next_after(&before, 0).unwrap();
        assert_eq!(show(&z, next), "2026-03-29 07:00:00 +02:00");
        assert_eq!(next - ms(&before), 23 * 3600 * 1000);
        // Back on 2026-10-25: 25 hours.
        let before = at(&z, "2026-10-24T07:00:00");
        let next = seven.next_after(&before, 0).unwrap();
        assert_eq!(show(&z, next), "2026-10-25 07:00:00 +01:00");
        assert_eq!(next - ms(&before), 25 * 3600 * 1000);

        let half_two = timing("cron = \"30 2 * * *\"");
        // 02:30 does not exist on 2026-03-29: it runs at the first minute after the gap.
        let next = half_two
            .next_after(&at(&z, "2026-03-28T12:00:00"), 0)
            .unwrap();
        assert_eq!(show(&z, next), "2026-03-29 03:00:00 +02:00");
        // 02:30 happens twice on 2026-10-25: it runs once, at the first.
        let first = half_two
            .next_after(&at(&z, "2026-10-24T12:00:00"), 0)
            .unwrap();
        assert_eq!(show(&z, first), "2026-10-25 02:30:00 +02:00");
        let z_first = jiff::Timestamp::from_millisecond(first)
            .unwrap()
            .to_zoned(z.clone());
        let after = half_two.next_after(&z_first, 0).unwrap();
        assert_eq!(show(&z, after), "2026-10-26 02:30:00 +01:00");
    }

    #[test]
    fn a_heartbeat_counts_real_time_from_its_last_due_time() {
        let z = berlin();
        let t = timing("every = \"30m\"");
        // Across the night DST falls back: 30 real minutes, the wall clock repeats an hour.
        let anchor = at(&z, "2026-10-25T01:50:00");
        let next = t.next_after(&anchor, ms(&anchor)).unwrap();
        assert_eq!(next - ms(&anchor), 30 * 60 * 1000);
        assert_eq!(show(&z, next), "2026-10-25 02:20:00 +02:00");
        let later = t
            .next_after(&at(&z, "2026-10-25T23:59:00"), ms(&anchor))
            .unwrap();
        assert_eq!(show(&z, later), "2026-10-26 00:20:00 +01:00");
        // The latest due time, up to now, after the anchor.
        let now = at(&z, "2026-10-25T04:00:00");
        let due = t.latest_due(&now, ms(&anchor)).unwrap();
        assert_eq!(show(&z, due), "2026-10-25 03:50:00 +01:00");
        assert_eq!(t.latest_due(&anchor, ms(&anchor)), None);
    }

    #[test]
    fn the_missed_run_rule() {
        let z = berlin();
        let t = timing("cron = \"0 7 * * *\"");
        let twelve = Duration::from_secs(12 * 3600);
        let ran = ms(&at(&z, "2026-06-01T07:00:00"));
        // Never seen: nothing missed.
        let now = at(&z, "2026-06-03T08:00:00");
        assert_eq!(
            at_start(&t, Missed::Once, twelve, None, &now),
            AtStart::Fresh
        );
        // Down from before 07:00 on the 2nd to 08:00 on the 3rd: two runs missed, the latest
        // (the 3rd, 07:00, an hour ago) runs once.
        let latest = ms(&at(&z, "2026-06-03T07:00:00"));
        assert_eq!(
            at_start(&t, Missed::Once, twelve, Some(ran), &now),
            AtStart::CatchUp { due_ms: latest }
        );
        // With `skip`, it is skipped.
        assert_eq!(
            at_start(&t, Missed::Skip, twelve, Some(ran), &now),
            AtStart::Skip {
                due_ms: latest,
                reason: "missed"
            }
        );
        // Older than `catch_up`: skipped too.
        let late = at(&z, "2026-06-03T19:00:01");
        assert_eq!(
            at_start(&t, Missed::Once, twelve, Some(ran), &late),
            AtStart::Skip {
                due_ms: latest,
                reason: "too_old"
            }
        );
        // Exactly `catch_up` old still runs.
        let edge = at(&z, "2026-06-03T19:00:00");
        assert_eq!(
            at_start(&t, Missed::Once, twelve, Some(ran), &edge),
            AtStart::CatchUp { due_ms: latest }
        );
        // Down and up again before the next time: nothing missed.
        let soon = at(&z, "2026-06-02T06:59:00");
        assert_eq!(
            at_start(&t, Missed::Once, twelve, Some(ran), &soon),
            AtStart::Nothing
        );
        // A heartbeat: the latest missed beat.
        let beat = timing("every = \"1h\"");
        let up = at(&z, "2026-06-01T10:30:00");
        assert_eq!(
            at_start(&beat, Missed::Once, twelve, Some(ran), &up),
            AtStart::CatchUp {
                due_ms: ms(&at(&z, "2026-06-01T10:00:00"))
            }
        );
    }

    #[test]
    fn bad_schedules_are_config_errors_naming_the_key() {
        for (body, expect) in [
            (
                "cron = \"0 7 * *\"",
                "schedules.s.cron `0 7 * *`: use 5 fields",
            ),
            ("cron = \"0 0 7 * * *\"", "schedules.s.cron"),
            ("cron = \"61 7 * * *\"", "schedules.s.cron `61 7 * * *`"),
            ("cron = \"0 0 30 2 *\"", "matches no time"),
            ("cron = \"x y z a b\"", "schedules.s.cron"),
            (
                "cron = \"0 7 * * *\"\nevery = \"1h\"",
                "schedules.s: set exactly one of `cron` and `every`",
            ),
            ("", "schedules.s: set exactly one of `cron` and `every`"),
            (
                "every = \"30s\"",
                "schedules.s.every `30s` must be at least 1m",
            ),
            ("every = \"soon\"", "schedules.s.every `soon`"),
            ("every = \"1h\"\ncatch_up = \"0s\"", "schedules.s.catch_up"),
            ("every = \"1h\"\nmissed = \"always\"", "always"),
            (
                "every = \"1h\"\ndeliver = \"telegram\"",
                "schedules.s.deliver",
            ),
            ("every = \"1h\"\nagent = \"a b\"", "schedules.s.agent"),
            ("every = \"1h\"\ntypo = 1", "typo"),
            (
                "every = \"1h\"\ncrest = \"Big Goal\"",
                "schedules.s.crest: goal id `Big Goal`",
            ),
            (
                "every = \"1h\"\ncrest = \"g\"\nagent = \"ledger\"",
                "runs the goal's own agent",
            ),
        ] {
            let text = format!("[schedules.s]\nmessage = \"m\"\n{body}\n");
            let error = Config::parse(&text, Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(error.contains(expect), "{body}: {error}");
            assert!(!error.contains('\n'), "{error}");
        }
        let error = Config::parse(
            "[schedules.\"a b\"]\nmessage = \"m\"\nevery = \"1h\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("schedule name `a b`"), "{error}");
        let error = Config::parse("[schedules.s]\nevery = \"1h\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("message"), "{error}");
        let review = Config::parse(
            "[schedules.review]\nevery = \"1h\"\ncrest = \"costs\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(
            review.schedules["review"].target("assistant"),
            "crest:costs"
        );
        let ok = schedule("every = \"1m\"");
        assert_eq!(ok.missed, Missed::Once);
        assert_eq!(ok.catch_up, Duration::from_secs(12 * 3600));
        assert!(ok.enabled);
    }

    #[test]
    fn a_schedule_naming_an_agent_without_a_file_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let home = crate::home::Home::new(dir.path());
        let config = Config::parse(
            "[schedules.morning]\ncron = \"0 7 * * *\"\nagent = \"ghost\"\nmessage = \"m\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        let mut agents = BTreeMap::new();
        let file = dir.path().join("assistant.toml");
        std::fs::write(&file, "prompt = \"You help.\"\n").unwrap();
        agents.insert(
            "assistant".to_owned(),
            crate::agent::load_agent(&file).unwrap(),
        );
        let error = crate::kernel::check_agent_refs(&home, &config, &agents)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("schedules.morning.agent `ghost` has no file"),
            "{error}"
        );
    }
}
