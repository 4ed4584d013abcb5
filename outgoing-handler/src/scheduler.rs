//! The round scheduler (SPEC §3): once a second it decides whether a round opens.
//!
//! # The rule, precisely
//!
//! The scheduler ticks every second on Tokio's clock. After a round opens at tick `T`, the ticks
//! `T + 1 s … T + min_gap` are inside the minimum gap and never open a round. Each later tick
//! (`T + min_gap + 1 s`, `T + min_gap + 2 s`, …) is one independent trial that opens a round
//! with probability `p` (`BUTTONPARTY_ROUND_CHANCE_PER_SEC`). So the first second a round may open
//! is `min_gap + 1` seconds after the previous one, the gap between two openings is
//! `min_gap + K` seconds with `K` geometric on {1, 2, …}, and the mean gap is exactly
//! `min_gap + 1/p` (with the defaults 3600 + 10000 s ≈ 3 h 47 min).
//!
//! # Restarts
//!
//! The last opening is persisted (see [`crate::state`]) *before* the round is announced, so a
//! crash at any instant leaves a state that keeps the gap. At start-up, [`Scheduler::resume`]
//! reads it:
//! - no state file: the first start; every tick is a trial;
//! - a recorded opening at `L`: the ticks up to wall time `L + min_gap` are inside the gap;
//! - a corrupt or unreadable file: it behaves as if a round opened at start-up, so the gap can
//!   never be violated whatever the file held.
//!
//! On every trial tick the state is read again, so a round opened meanwhile by another process
//! (`outgoing-handler open-round`) restarts the gap too. Independently of Tokio's clock, a round
//! only opens when the wall clock is at least `min_gap` past the last opening and later than it,
//! so opening times stay strictly increasing even if the wall clock is stepped back.

use std::future::Future;
use std::time::Duration;

use buttonparty::messages::RoundAnnouncement;
use rand::Rng;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::announce::new_round;
use crate::clock::Clock;
use crate::fanout::{DEFAULT_PUSH_RATE_PER_SEC, FanOut};
use crate::state::{LastOpening, Store};

const SECOND: Duration = Duration::from_secs(1);

/// What the scheduler needs to know.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// Probability that a round opens in one trial second (0 < p <= 1).
    pub chance_per_sec: f64,
    /// Minimum time between two openings.
    pub min_gap: Duration,
    /// A round's base press window (`closes_at = opens_at + window + fan-out`).
    pub window: Duration,
    /// How long an announcement in progress may go on after shutdown was requested.
    pub shutdown_grace: Duration,
    /// How often to send `WATCHDOG=1` to systemd; `None` when the watchdog is off.
    pub watchdog: Option<Duration>,
}

/// Announces a round the scheduler opened (already recorded in the state). The production
/// implementation sends the timestamp message and the push and logs the outcome; tests record
/// the rounds.
pub trait Announce {
    /// The fan-out of the round about to open (how many phones the push reaches, how fast),
    /// asked just before its opening time is taken; the round's close covers it. The default:
    /// no fan-out time.
    fn fan_out(&mut self) -> impl Future<Output = FanOut> + Send {
        std::future::ready(FanOut::none(DEFAULT_PUSH_RATE_PER_SEC))
    }

    /// Announces `round` (its close covers the fan-out [`Announce::fan_out`] just returned). The
    /// scheduler waits for it (sending watchdog pings meanwhile), except that after a shutdown
    /// request it waits at most [`SchedulerSettings::shutdown_grace`].
    fn announce(&mut self, round: RoundAnnouncement) -> impl Future<Output = ()> + Send;
}

/// The per-second decision loop, with an injectable random source `R`, wall clock `C` and state
/// store `S`.
#[derive(Debug)]
pub struct Scheduler<R, C, S> {
    settings: SchedulerSettings,
    rng: R,
    clock: C,
    store: S,
    /// The last opening known (from the state or opened here).
    last: Option<LastOpening>,
    /// Trials happen only at ticks strictly after this instant.
    gap_ends: Option<Instant>,
    /// The last error seen when re-reading the state, to log each new problem once.
    reread_error: Option<String>,
}

impl<R: Rng + Send, C: Clock, S: Store> Scheduler<R, C, S> {
    /// Reads the state from `store` and prepares the schedule from it (logging what it found).
    /// Must be called inside a Tokio runtime: the gap is anchored to Tokio's clock now.
    pub fn resume(settings: SchedulerSettings, rng: R, clock: C, store: S) -> Self {
        let start = Instant::now();
        let now_ms = clock.now_ms();
        let gap_ms = duration_ms(settings.min_gap);
        let mut scheduler = Self {
            settings,
            rng,
            clock,
            store,
            last: None,
            gap_ends: None,
            reread_error: None,
        };
        match scheduler.store.load() {
            Ok(None) => {
                tracing::info!(
                    state_file = %scheduler.store.location().display(),
                    "no schedule state: first start, a round may open at any second"
                );
            }
            Ok(Some(last)) => {
                let wait_ms = last
                    .opens_at_ms
                    .saturating_add(gap_ms)
                    .saturating_sub(now_ms);
                if last.opens_at_ms > now_ms {
                    tracing::warn!(
                        last_round_id = %last.round_id,
                        last_opens_at_ms = last.opens_at_ms,
                        now_ms,
                        state_file = %scheduler.store.location().display(),
                        "the last opening recorded is in the future (was the clock stepped back?): no round opens until the minimum gap after it has passed; remove the state file to reset"
                    );
                }
                if wait_ms > 0 {
                    tracing::info!(
                        last_round_id = %last.round_id,
                        last_opens_at_ms = last.opens_at_ms,
                        wait_secs = wait_ms.unsigned_abs().div_ceil(1000),
                        "resuming: waiting out the minimum gap after the last round"
                    );
                } else {
                    tracing::info!(
                        last_round_id = %last.round_id,
                        last_opens_at_ms = last.opens_at_ms,
                        "resuming: the minimum gap after the last round has passed"
                    );
                }
                scheduler.gap_ends = Some(start + millis(wait_ms));
                scheduler.last = Some(last);
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    min_gap_secs = scheduler.settings.min_gap.as_secs(),
                    "schedule state unusable: behaving as if a round opened now, so no round opens within the minimum gap"
                );
                scheduler.gap_ends = Some(start + scheduler.settings.min_gap);
                // Reported once: re-reading the same broken file is not news.
                scheduler.reread_error = Some(e.to_string());
                scheduler.last = Some(LastOpening {
                    round_id: "(unknown)".into(),
                    opens_at_ms: now_ms,
                });
            }
        }
        scheduler
    }

    /// The last opening known to the scheduler.
    pub fn last_opening(&self) -> Option<&LastOpening> {
        self.last.as_ref()
    }

    /// Ticks every second until `shutdown` is cancelled, opening rounds and handing them to
    /// `announcer`.
    pub async fn run<A: Announce>(&mut self, announcer: &mut A, shutdown: &CancellationToken) {
        let mut ticks = tokio::time::interval_at(Instant::now() + SECOND, SECOND);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut last_ping: Option<Instant> = None;
        loop {
            let tick = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                tick = ticks.tick() => tick,
            };
            if let Some(every) = self.settings.watchdog
                && last_ping.is_none_or(|at| tick.duration_since(at) >= every)
            {
                buttonparty::notify::watchdog();
                last_ping = Some(tick);
            }
            if !self.trial_due(tick) || !self.rng.random_bool(self.settings.chance_per_sec) {
                continue;
            }
            self.open(tick, announcer, shutdown).await;
        }
    }

    /// Whether the tick at `tick` is a trial: past the gap, by Tokio's clock and by the wall clock,
    /// also counting an opening recorded in the state by another process.
    fn trial_due(&mut self, tick: Instant) -> bool {
        if self.gap_ends.is_some_and(|end| tick <= end) {
            return false;
        }
        let now_ms = self.clock.now_ms();
        let gap_ms = duration_ms(self.settings.min_gap);
        self.adopt_external_opening(tick, now_ms, gap_ms);
        if self.gap_ends.is_some_and(|end| tick <= end) {
            return false;
        }
        match &self.last {
            Some(last)
                if now_ms <= last.opens_at_ms
                    || now_ms < last.opens_at_ms.saturating_add(gap_ms) =>
            {
                tracing::debug!(
                    now_ms,
                    last_opens_at_ms = last.opens_at_ms,
                    "wall clock still inside the minimum gap; no trial"
                );
                false
            }
            _ => true,
        }
    }

    /// Re-reads the state; a later opening than the one known (from `open-round`) restarts the gap.
    fn adopt_external_opening(&mut self, tick: Instant, now_ms: i64, gap_ms: i64) {
        match self.store.load() {
            Ok(Some(found)) => {
                if self.reread_error.take().is_some() {
                    tracing::info!("schedule state readable again");
                }
                if self
                    .last
                    .as_ref()
                    .is_none_or(|l| found.opens_at_ms > l.opens_at_ms)
                {
                    let wait_ms = found
                        .opens_at_ms
                        .saturating_add(gap_ms)
                        .saturating_sub(now_ms);
                    tracing::info!(
                        last_round_id = %found.round_id,
                        last_opens_at_ms = found.opens_at_ms,
                        wait_secs = wait_ms.max(0).unsigned_abs().div_ceil(1000),
                        "a round opened by another process (open-round) is in the schedule state: the minimum gap restarts from it"
                    );
                    if wait_ms >= 0 {
                        self.gap_ends = Some(tick + millis(wait_ms));
                    }
                    self.last = Some(found);
                }
            }
            Ok(None) => {}
            Err(e) => {
                let text = e.to_string();
                if self.reread_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(error = %text, "cannot re-read the schedule state; keeping the last opening known in memory");
                    self.reread_error = Some(text);
                }
            }
        }
    }

    /// Opens a round at this tick: learn its fan-out, record it, then announce it.
    async fn open<A: Announce>(
        &mut self,
        tick: Instant,
        announcer: &mut A,
        shutdown: &CancellationToken,
    ) {
        // Asked before the opening time is taken, so the time the answer takes is not taken from
        // the round's window.
        let fan_out = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            f = announcer.fan_out() => f,
        };
        let opens_at_ms = self.clock.now_ms();
        let round = new_round(
            opens_at_ms,
            self.settings.window,
            fan_out.ms(),
            &mut self.rng,
        );
        let last = LastOpening {
            round_id: round.round_id.clone(),
            opens_at_ms,
        };
        if let Err(e) = self.store.save(&last) {
            // Without a durable record a restart could open a round inside the gap: skip it.
            tracing::error!(round_id = %round.round_id, error = %e, retry_helps = e.retry_helps(), "cannot record the round opening; the round is not opened");
            return;
        }
        self.last = Some(last);
        self.gap_ends = Some(tick + self.settings.min_gap);

        let round_id = round.round_id.clone();
        let announcing = announcer.announce(round);
        tokio::pin!(announcing);
        let grace = self.settings.shutdown_grace;
        let deadline = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::pin!(deadline);
        let mut pings = tokio::time::interval(self.settings.watchdog.unwrap_or(SECOND));
        loop {
            tokio::select! {
                () = &mut announcing => return,
                () = &mut deadline => {
                    tracing::warn!(round_id = %round_id, grace_secs = grace.as_secs(), "shutdown: abandoning the announcement still in progress");
                    return;
                }
                _ = pings.tick() => {
                    if self.settings.watchdog.is_some() {
                        buttonparty::notify::watchdog();
                    }
                }
            }
        }
    }
}

/// `d` in whole milliseconds, saturating.
fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `ms` (>= 0) as a duration; negative is zero.
fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;
    use crate::clock::TokioClock;
    use crate::state::{MemoryStore, StateFile};

    /// An arbitrary wall-clock start for simulations (2023-11-14).
    const EPOCH_MS: i64 = 1_700_000_000_000;

    /// Records the rounds and stops the scheduler after `stop_after` of them.
    #[derive(Debug, Clone)]
    struct Recorder {
        rounds: Arc<Mutex<Vec<RoundAnnouncement>>>,
        stop_after: usize,
        shutdown: CancellationToken,
    }

    impl Recorder {
        fn new(stop_after: usize, shutdown: &CancellationToken) -> Self {
            Self {
                rounds: Arc::default(),
                stop_after,
                shutdown: shutdown.clone(),
            }
        }
        fn opening_times(&self) -> Vec<i64> {
            self.rounds
                .lock()
                .unwrap()
                .iter()
                .map(|r| r.opens_at_ms)
                .collect()
        }
    }

    impl Announce for Recorder {
        fn announce(&mut self, round: RoundAnnouncement) -> impl Future<Output = ()> + Send {
            let mut rounds = self.rounds.lock().unwrap();
            rounds.push(round);
            if rounds.len() >= self.stop_after {
                self.shutdown.cancel();
            }
            std::future::ready(())
        }
    }

    fn settings(min_gap_secs: u64, p: f64) -> SchedulerSettings {
        SchedulerSettings {
            chance_per_sec: p,
            min_gap: Duration::from_secs(min_gap_secs),
            window: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            watchdog: None,
        }
    }

    fn opening(ms: i64) -> LastOpening {
        LastOpening {
            round_id: format!("{ms:013}-00000000"),
            opens_at_ms: ms,
        }
    }

    /// Runs a scheduler until `rounds` rounds opened (or, so that a bug fails rather than hangs,
    /// until 1000 simulated seconds per round passed); returns their opening times.
    async fn simulate<S: Store>(
        settings: SchedulerSettings,
        store: S,
        seed: u64,
        rounds: usize,
    ) -> Vec<i64> {
        let shutdown = CancellationToken::new();
        let mut recorder = Recorder::new(rounds, &shutdown);
        let clock = TokioClock::starting_at(EPOCH_MS);
        let mut scheduler =
            Scheduler::resume(settings, SmallRng::seed_from_u64(seed), clock, store);
        let horizon = Duration::from_secs(1000 * rounds as u64);
        tokio::select! {
            () = scheduler.run(&mut recorder, &shutdown) => {}
            () = tokio::time::sleep(horizon) => {}
        }
        recorder.opening_times()
    }

    #[tokio::test(start_paused = true)]
    async fn mean_gap_is_min_gap_plus_one_over_p_and_never_below_min_gap() {
        const ROUNDS: usize = 10_000;
        let (min_gap, p) = (30_u64, 0.05);
        let times = simulate(settings(min_gap, p), MemoryStore::default(), 7, ROUNDS + 1).await;
        assert_eq!(times.len(), ROUNDS + 1);
        let gaps: Vec<i64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        // Every gap is a whole number of seconds, and the first eligible second is min_gap + 1.
        assert!(
            gaps.iter().all(|g| g % 1000 == 0),
            "gaps off the one-second grid"
        );
        let min = *gaps.iter().min().unwrap();
        assert_eq!(
            min,
            (min_gap as i64 + 1) * 1000,
            "the shortest gap is min_gap + 1 s"
        );
        // Mean gap = min_gap + 1/p exactly in expectation (50 s here); the sample mean of 10,000
        // gaps has a standard deviation of sqrt(1-p)/p/100 ≈ 0.19 s, so 2 % (1 s) is > 5 sigma.
        let mean = gaps.iter().sum::<i64>() as f64 / gaps.len() as f64 / 1000.0;
        let expected = min_gap as f64 + 1.0 / p;
        assert!(
            (mean - expected).abs() <= 0.02 * expected,
            "mean gap {mean} s, expected {expected} s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_round_closes_after_the_window_plus_the_fan_out_asked_before_it_opens() {
        /// Answers the fan-out after 2 s (a slow topic read) with 1,000,000 phones at 10,000/s.
        struct Wide(Vec<RoundAnnouncement>, CancellationToken);
        impl Announce for Wide {
            async fn fan_out(&mut self) -> FanOut {
                tokio::time::sleep(Duration::from_secs(2)).await;
                FanOut {
                    audience: 1_000_000,
                    source: crate::fanout::AudienceSource::Topic,
                    rate_per_sec: 10_000,
                }
            }
            async fn announce(&mut self, round: RoundAnnouncement) {
                self.0.push(round);
                self.1.cancel();
            }
        }
        let shutdown = CancellationToken::new();
        let clock = TokioClock::starting_at(EPOCH_MS);
        let mut scheduler = Scheduler::resume(
            settings(30, 1.0),
            SmallRng::seed_from_u64(1),
            clock,
            MemoryStore::default(),
        );
        let mut wide = Wide(Vec::new(), shutdown.clone());
        scheduler.run(&mut wide, &shutdown).await;
        let round = &wide.0[0];
        // The tick at 1 s, then the 2 s read: the round opens when the answer is in.
        assert_eq!(round.opens_at_ms, EPOCH_MS + 3_000);
        assert_eq!(round.closes_at_ms, round.opens_at_ms + 10_000 + 100_000);
        assert_eq!(round.window_ms, Some(10_000));
        assert_eq!(
            scheduler.last_opening().unwrap().opens_at_ms,
            round.opens_at_ms
        );
    }

    #[tokio::test(start_paused = true)]
    async fn first_start_opens_at_the_first_second_when_p_is_one() {
        let times = simulate(settings(30, 1.0), MemoryStore::default(), 1, 3).await;
        assert_eq!(
            times,
            vec![EPOCH_MS + 1_000, EPOCH_MS + 32_000, EPOCH_MS + 63_000]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn restart_with_a_recent_state_file_waits_out_the_gap() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::new(dir.path());
        // The previous process opened a round 10 s before this one starts; the gap is 30 s.
        state.save(&opening(EPOCH_MS - 10_000)).unwrap();
        let times = simulate(settings(30, 1.0), state.clone(), 1, 1).await;
        // The gap ends 20 s after the start; the first trial is the second after it.
        assert_eq!(times, vec![EPOCH_MS + 21_000]);
        // And the new opening is recorded.
        assert_eq!(
            state.load().unwrap().unwrap().opens_at_ms,
            EPOCH_MS + 21_000
        );
    }

    #[tokio::test(start_paused = true)]
    async fn restart_long_after_the_last_round_opens_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::new(dir.path());
        state.save(&opening(EPOCH_MS - 3_600_000)).unwrap();
        let times = simulate(settings(30, 1.0), state, 1, 1).await;
        assert_eq!(times, vec![EPOCH_MS + 1_000]);
    }

    #[tokio::test(start_paused = true)]
    async fn corrupt_state_behaves_as_if_a_round_opened_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::new(dir.path());
        std::fs::write(state.path(), b"{not json").unwrap();
        let times = simulate(settings(30, 1.0), state.clone(), 1, 1).await;
        assert_eq!(times, vec![EPOCH_MS + 31_000]);
        // The opening repaired the file.
        assert_eq!(
            state.load().unwrap().unwrap().opens_at_ms,
            EPOCH_MS + 31_000
        );
    }

    #[tokio::test(start_paused = true)]
    async fn missing_state_is_a_first_start() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::new(dir.path().join("fresh"));
        let times = simulate(settings(30, 1.0), state.clone(), 1, 1).await;
        assert_eq!(times, vec![EPOCH_MS + 1_000]);
        assert!(state.path().exists());
    }

    #[tokio::test(start_paused = true)]
    async fn future_state_waits_until_the_gap_after_it() {
        // The wall clock was stepped back 60 s since the last opening was recorded.
        let store = MemoryStore::with(Some(opening(EPOCH_MS + 60_000)));
        let times = simulate(settings(30, 1.0), store, 1, 1).await;
        assert_eq!(times, vec![EPOCH_MS + 91_000]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_opening_by_another_process_restarts_the_gap() {
        let shutdown = CancellationToken::new();
        let store = Arc::new(MemoryStore::default());
        let mut recorder = Recorder::new(3, &shutdown);
        let clock = TokioClock::starting_at(EPOCH_MS);
        let mut scheduler = Scheduler::resume(
            settings(30, 1.0),
            SmallRng::seed_from_u64(1),
            clock,
            store.clone(),
        );
        let open_round = async {
            // `open-round` runs 40.5 s after the start, between two of the scheduler's ticks.
            tokio::time::sleep(Duration::from_millis(40_500)).await;
            store.save(&opening(EPOCH_MS + 40_500)).unwrap();
        };
        tokio::join!(scheduler.run(&mut recorder, &shutdown), open_round);
        // Rounds at 1 s and 32 s; the third would open at 63 s, but the gap restarts from 40.5 s:
        // it ends at 70.5 s and the first trial after it is at 71 s.
        assert_eq!(
            recorder.opening_times(),
            vec![EPOCH_MS + 1_000, EPOCH_MS + 32_000, EPOCH_MS + 71_000]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_save_does_not_open_the_round() {
        #[derive(Debug)]
        struct Broken(std::path::PathBuf);
        impl Store for Broken {
            fn load(&self) -> Result<Option<LastOpening>, crate::state::StateError> {
                Ok(None)
            }
            fn save(&self, _: &LastOpening) -> Result<(), crate::state::StateError> {
                Err(crate::state::StateError::Io {
                    path: self.0.clone(),
                    op: "write",
                    error: std::io::Error::other("disk on fire"),
                })
            }
            fn location(&self) -> &std::path::Path {
                &self.0
            }
        }
        let shutdown = CancellationToken::new();
        let mut recorder = Recorder::new(1, &shutdown);
        let clock = TokioClock::starting_at(EPOCH_MS);
        let mut scheduler = Scheduler::resume(
            settings(30, 1.0),
            SmallRng::seed_from_u64(1),
            clock,
            Broken("/nowhere".into()),
        );
        let stop = async {
            tokio::time::sleep(Duration::from_secs(100)).await;
            shutdown.cancel();
        };
        tokio::join!(scheduler.run(&mut recorder, &shutdown), stop);
        assert!(recorder.opening_times().is_empty());
        assert!(scheduler.last_opening().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_abandons_a_stuck_announcement_after_the_grace() {
        struct Stuck;
        impl Announce for Stuck {
            fn announce(&mut self, _: RoundAnnouncement) -> impl Future<Output = ()> + Send {
                std::future::pending()
            }
        }
        let shutdown = CancellationToken::new();
        let clock = TokioClock::starting_at(EPOCH_MS);
        let mut scheduler = Scheduler::resume(
            settings(30, 1.0),
            SmallRng::seed_from_u64(1),
            clock,
            MemoryStore::default(),
        );
        let started = Instant::now();
        let stop = async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            shutdown.cancel();
        };
        let mut stuck = Stuck;
        tokio::join!(scheduler.run(&mut stuck, &shutdown), stop);
        // Stopped 3 s + the 5 s grace after the start.
        assert_eq!(started.elapsed(), Duration::from_secs(8));
    }
}
