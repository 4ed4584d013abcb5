//! `bp-dev capacity` (issue 13): a discrete-event simulation of one round, from the push fan-out
//! to the last press applied — no AWS, no database: each stage of the real pipeline is a service
//! with a measured (or stated) rate.
//!
//! The stages, as the incoming handler runs them:
//!
//! 1. **Push.** The round opens at t = 0; the push reaches phone `i` at `i / push_rate` plus a
//!    delivery latency. `closes_at = window + ceil(players / push_rate)` (SPEC §3).
//! 2. **Press.** A player presses a reaction time after their push (exponential); each press is
//!    a `SendMessage` through API Gateway, optionally throttled by a token bucket (rate, burst):
//!    a throttled press is refused (HTTP 429) and counted.
//! 3. **Queue.** The press queue (oldest first). Each SQS call (receive or delete) takes a round
//!    trip; with `--sqs-calls-per-sec` the queue service itself is a shared server of that many
//!    calls per second (what limits LocalStack here; real SQS standard queues have no such limit).
//! 4. **Receivers.** Each handler runs `receivers` long-polling receivers. A receiver first takes
//!    10 in-flight permits (at most `max_in_flight` messages held per handler), receives up to 10,
//!    parses them on the handler's CPU (`cpu_ms_per_press` each, `cores` in parallel), hands them
//!    to the processor and receives again.
//! 5. **Batches.** One processor per handler gathers presses into a batch — up to `batch_size`,
//!    closed `linger` after its first press or `quiet` after the last one — and writes it in one
//!    transaction: `db_txn_ms + size × db_row_ms` (with `--db-rows-per-sec`, the database's rows
//!    per second are shared by all handlers).
//! 6. **Deletes.** After the commit, the batch's messages are deleted in `DeleteMessageBatch`
//!    calls of 10, `delete_concurrency` at a time, with at most `pending_deletes` batches deleting
//!    at once (the processor waits for room); each call returns its 10 permits.
//!
//! The simulation is deterministic for a seed (its own SplitMix64 generator). [`simulate`] is
//! pure; [`run`] prints the timeline and the verdicts, and writes the SVG plot and the JSON.
//!
//! `--from-bench FILE` replays a `bp-dev bench` run instead (the JSON line `scripts/bench
//! --json FILE` writes): its N presses preloaded in the queue, one handler, the queue ceiling (a),
//! the database ceiling (b) and the handler's CPU (c) as the stage rates, and compares the
//! simulated drain time with the measured one (c).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;
use serde::Serialize;

/// CPU per press of the release handler: 0.99 s per 10,000 presses (`scripts/bench --million`,
/// README "Performance": "handler CPU per 10,000 presses").
pub const MEASURED_CPU_MS_PER_PRESS: f64 = 0.099;
/// Database time per row: `scripts/bench` part b, 25,928 presses/s as 500-row multi-row upserts
/// (README "Performance"), i.e. 1000 / 25,928 ms.
pub const MEASURED_DB_ROW_MS: f64 = 1000.0 / 25_928.0;
/// FCM's default quota, 600,000 messages a minute.
pub const FCM_DEFAULT_PUSH_RATE: f64 = 10_000.0;
/// Arrival histogram resolution, ms.
const BUCKET_MS: f64 = 10.0;
/// Messages per receive and per delete call (the SQS maximum).
const TEN: u32 = 10;

/// Settings of `capacity`.
#[derive(Debug, Clone, Args)]
pub struct CapacityArgs {
    /// Players (subscribed phones). Required unless --from-bench or --preloaded.
    #[arg(long)]
    pub players: Option<u64>,
    /// Incoming handlers (default: enough for the peak arrival rate at --target-utilisation).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub handlers: Option<u32>,
    /// Pushes delivered per second (FCM's default quota: 10,000).
    #[arg(long, default_value_t = FCM_DEFAULT_PUSH_RATE)]
    pub push_rate: f64,
    /// Base press window, seconds.
    #[arg(long, default_value_t = 60.0)]
    pub window_secs: f64,
    /// Presses per player (1 = every player presses once; 1.1 = one in ten twice).
    #[arg(long, default_value_t = 1.0)]
    pub press_share: f64,
    /// Mean push delivery latency after the push leaves, ms (uniform on 0..2×mean). An
    /// assumption: FCM publishes no latency figure.
    #[arg(long, default_value_t = 1000.0)]
    pub push_latency_ms: f64,
    /// Mean reaction time from notification to press, seconds (exponential). An assumption.
    #[arg(long, default_value_t = 10.0)]
    pub reaction_mean_secs: f64,
    /// API Gateway throttling: steady requests per second (unset: no throttling).
    #[arg(long)]
    pub api_rate: Option<f64>,
    /// API Gateway throttling: burst (default: the rate, one second's worth).
    #[arg(long)]
    pub api_burst: Option<f64>,
    /// Press receivers per handler (BUTTONPARTY_PRESS_RECEIVERS).
    #[arg(long, default_value_t = 8)]
    pub receivers: u32,
    /// Most messages a handler holds at once (BUTTONPARTY_MAX_IN_FLIGHT).
    #[arg(long, default_value_t = 2000)]
    pub max_in_flight: u32,
    /// Largest press batch (BUTTONPARTY_BATCH_SIZE).
    #[arg(long, default_value_t = 500)]
    pub batch_size: u32,
    /// A batch closes this long after its first press (BUTTONPARTY_BATCH_LINGER_MS).
    #[arg(long, default_value_t = 250.0)]
    pub linger_ms: f64,
    /// ... or this long after its last one (the handler's quiet gap).
    #[arg(long, default_value_t = 50.0)]
    pub quiet_ms: f64,
    /// DeleteMessageBatch calls in flight per batch.
    #[arg(long, default_value_t = 4)]
    pub delete_concurrency: u32,
    /// Batches deleting at once before the processor waits.
    #[arg(long, default_value_t = 4)]
    pub pending_deletes: u32,
    /// Handler CPU per press, ms (measured: 0.99 s per 10,000 presses).
    #[arg(long, default_value_t = MEASURED_CPU_MS_PER_PRESS)]
    pub cpu_ms_per_press: f64,
    /// CPU cores per handler instance.
    #[arg(long, default_value_t = 2.0)]
    pub cores: f64,
    /// Handler count sizing: the busiest resource of a handler at most this share busy at the
    /// peak arrival rate.
    #[arg(long, default_value_t = 0.7)]
    pub target_utilisation: f64,
    /// Round trip of one SQS call (receive or delete), ms. An assumption for AWS; the local
    /// figures come from --from-bench.
    #[arg(long, default_value_t = 20.0)]
    pub sqs_call_ms: f64,
    /// The queue service as a shared server of this many calls per second (unset: unlimited,
    /// as SQS standard queues are).
    #[arg(long)]
    pub sqs_calls_per_sec: Option<f64>,
    /// Fixed time of one batch transaction (locks, reads, two writes, commit), ms. An
    /// assumption for Aurora.
    #[arg(long, default_value_t = 10.0)]
    pub db_txn_ms: f64,
    /// Database time per press in a batch, ms (measured: bench part b).
    #[arg(long, default_value_t = MEASURED_DB_ROW_MS)]
    pub db_row_ms: f64,
    /// The database's rows per second, shared by all handlers (unset: unlimited).
    #[arg(long)]
    pub db_rows_per_sec: Option<f64>,
    /// Instead of a round: this many presses already in the queue at t = 0.
    #[arg(long)]
    pub preloaded: Option<u64>,
    /// Time from t = 0 until the handlers' first receive, ms.
    #[arg(long, default_value_t = 0.0)]
    pub startup_ms: f64,
    /// Seed of the random draws (push latency, reaction time).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Timeline step, seconds (default: about 20 rows).
    #[arg(long)]
    pub step_secs: Option<f64>,
    /// Write the plot (rates and queue depth over time) as SVG to FILE.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Write the outcome (verdicts and per-second series) as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Cross-check: replay the `bp-dev bench` run whose JSON line is in FILE (`scripts/bench
    /// --json FILE`) and compare the simulated drain time with the measured one.
    #[arg(long, value_name = "FILE")]
    pub from_bench: Option<PathBuf>,
    /// Cross-check tolerance: simulated vs measured drain time.
    #[arg(long, default_value_t = 0.2)]
    pub tolerance: f64,
}

/// Everything a simulation needs (times in ms).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Params {
    /// Players (phones the push reaches).
    pub players: u64,
    /// Presses per player.
    pub press_share: f64,
    /// Base window.
    pub window_ms: f64,
    /// Pushes per second.
    pub push_rate: f64,
    /// Mean push delivery latency.
    pub push_latency_ms: f64,
    /// Mean reaction time.
    pub reaction_mean_ms: f64,
    /// API Gateway steady rate, per second.
    pub api_rate: Option<f64>,
    /// API Gateway burst.
    pub api_burst: f64,
    /// Presses in the queue at t = 0 (instead of a round).
    pub preloaded: Option<u64>,
    /// Handlers.
    pub handlers: u32,
    /// Receivers per handler.
    pub receivers: u32,
    /// In-flight bound per handler.
    pub max_in_flight: u32,
    /// Largest batch.
    pub batch_size: u32,
    /// Batch linger.
    pub linger_ms: f64,
    /// Batch quiet gap.
    pub quiet_ms: f64,
    /// Delete calls in flight per batch.
    pub delete_concurrency: u32,
    /// Batches deleting at once.
    pub pending_deletes: u32,
    /// CPU per press.
    pub cpu_ms_per_press: f64,
    /// Cores per handler.
    pub cores: f64,
    /// SQS call round trip.
    pub sqs_call_ms: f64,
    /// Shared queue service capacity, calls per second.
    pub sqs_calls_per_sec: Option<f64>,
    /// Fixed transaction time.
    pub db_txn_ms: f64,
    /// Time per row.
    pub db_row_ms: f64,
    /// Shared database capacity, rows per second.
    pub db_rows_per_sec: Option<f64>,
    /// Handlers' start.
    pub startup_ms: f64,
    /// Seed.
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            players: 10_000,
            press_share: 1.0,
            window_ms: 60_000.0,
            push_rate: FCM_DEFAULT_PUSH_RATE,
            push_latency_ms: 1000.0,
            reaction_mean_ms: 10_000.0,
            api_rate: None,
            api_burst: 0.0,
            preloaded: None,
            handlers: 1,
            receivers: 8,
            max_in_flight: 2000,
            batch_size: 500,
            linger_ms: 250.0,
            quiet_ms: 50.0,
            delete_concurrency: 4,
            pending_deletes: 4,
            cpu_ms_per_press: MEASURED_CPU_MS_PER_PRESS,
            cores: 2.0,
            sqs_call_ms: 20.0,
            sqs_calls_per_sec: None,
            db_txn_ms: 10.0,
            db_row_ms: MEASURED_DB_ROW_MS,
            db_rows_per_sec: None,
            startup_ms: 0.0,
            seed: 1,
        }
    }
}

impl Params {
    /// Checks the values a simulation cannot run with.
    pub fn validate(&self) -> anyhow::Result<()> {
        let positive = [
            ("--push-rate", self.push_rate),
            ("--window-secs", self.window_ms),
            ("--cores", self.cores),
            ("--linger-ms", self.linger_ms),
            ("--quiet-ms", self.quiet_ms),
        ];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                bail!("{name} must be a positive number");
            }
        }
        let non_negative = [
            ("--press-share", self.press_share),
            ("--push-latency-ms", self.push_latency_ms),
            ("--reaction-mean-secs", self.reaction_mean_ms),
            ("--cpu-ms-per-press", self.cpu_ms_per_press),
            ("--sqs-call-ms", self.sqs_call_ms),
            ("--db-txn-ms", self.db_txn_ms),
            ("--db-row-ms", self.db_row_ms),
            ("--startup-ms", self.startup_ms),
            ("--api-burst", self.api_burst),
        ];
        for (name, v) in non_negative {
            if !(v.is_finite() && v >= 0.0) {
                bail!("{name} must be a number >= 0");
            }
        }
        for (name, v) in [
            ("--api-rate", self.api_rate),
            ("--sqs-calls-per-sec", self.sqs_calls_per_sec),
            ("--db-rows-per-sec", self.db_rows_per_sec),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v > 0.0)
            {
                bail!("{name} must be a positive number");
            }
        }
        if self.press_share > 10.0 {
            bail!("--press-share must be at most 10");
        }
        for (name, v) in [
            ("--handlers", self.handlers),
            ("--receivers", self.receivers),
            ("--batch-size", self.batch_size),
            ("--delete-concurrency", self.delete_concurrency),
            ("--pending-deletes", self.pending_deletes),
        ] {
            if v == 0 {
                bail!("{name} must be at least 1");
            }
        }
        if self.max_in_flight < TEN {
            bail!("--max-in-flight must be at least 10");
        }
        Ok(())
    }

    /// The round's fan-out: `ceil(players × 1000 / push_rate)` ms (the outgoing handler's
    /// formula, with the rate rounded to a whole number per second).
    pub fn fan_out_ms(&self) -> f64 {
        if self.preloaded.is_some() {
            return 0.0;
        }
        let rate = self.push_rate.round().max(1.0) as u128;
        (u128::from(self.players) * 1000).div_ceil(rate) as f64
    }

    /// When the round closes, ms after it opened.
    pub fn closes_at_ms(&self) -> f64 {
        self.window_ms + self.fan_out_ms()
    }

    /// The time one batch of `n` presses takes in the database when it is not shared.
    pub fn batch_ms(&self, n: u32) -> f64 {
        self.db_txn_ms + f64::from(n) * self.db_row_ms
    }

    /// What one handler can sustain, per stage (presses per second).
    pub fn handler_capacity(&self) -> HandlerCapacity {
        let per_sec = |presses: f64, ms: f64| {
            if ms > 0.0 {
                presses * 1000.0 / ms
            } else {
                f64::INFINITY
            }
        };
        let ten = f64::from(TEN);
        let cpu = per_sec(self.cores, self.cpu_ms_per_press);
        let receive = per_sec(
            f64::from(self.receivers) * ten,
            self.sqs_call_ms + ten * self.cpu_ms_per_press,
        );
        let delete = per_sec(
            f64::from(self.delete_concurrency * self.pending_deletes) * ten,
            self.sqs_call_ms,
        );
        let writer = per_sec(f64::from(self.batch_size), self.batch_ms(self.batch_size));
        let stages = [
            ("CPU", cpu),
            ("receivers", receive),
            ("deletes", delete),
            ("batch writer", writer),
        ];
        let (limit, presses_per_sec) = stages
            .iter()
            .copied()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("four stages");
        HandlerCapacity {
            cpu,
            receive,
            delete,
            writer,
            presses_per_sec,
            limit,
        }
    }
}

/// What one handler sustains, per stage, presses per second.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HandlerCapacity {
    /// Cores ÷ CPU per press.
    pub cpu: f64,
    /// Receivers × 10 ÷ (SQS round trip + parsing 10).
    pub receive: f64,
    /// Delete calls in flight × 10 ÷ SQS round trip.
    pub delete: f64,
    /// Batch size ÷ batch transaction time.
    pub writer: f64,
    /// The least of them.
    pub presses_per_sec: f64,
    /// Which stage that is.
    pub limit: &'static str,
}

/// SplitMix64: a small, fast generator whose sequence never changes with a crate version.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform on [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponential with the given mean.
    fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
}

/// The presses arriving at the queue, per [`BUCKET_MS`] bucket, after API Gateway.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Arrivals {
    /// Presses accepted per bucket (bucket `i` covers `[i, i+1) × 10 ms`).
    pub accepted: Vec<u64>,
    /// Presses refused by the throttle per bucket.
    pub throttled: Vec<u64>,
    /// When the last push reaches its phone, ms.
    pub last_push_ms: f64,
    /// Presses sent after the round closed.
    pub after_close: u64,
}

impl Arrivals {
    /// Every press accepted.
    pub fn total(&self) -> u64 {
        self.accepted.iter().sum()
    }

    /// Every press refused.
    pub fn total_throttled(&self) -> u64 {
        self.throttled.iter().sum()
    }

    /// The largest number of presses sent within one second (accepted and throttled).
    pub fn peak_per_sec(&self) -> f64 {
        let per = (1000.0 / BUCKET_MS) as usize;
        let sent: Vec<u64> = self
            .accepted
            .iter()
            .zip(&self.throttled)
            .map(|(a, t)| a + t)
            .collect();
        let mut window: u64 = 0;
        let mut best: u64 = 0;
        for (i, n) in sent.iter().enumerate() {
            window += n;
            if i >= per {
                window -= sent[i - per];
            }
            best = best.max(window);
        }
        best as f64
    }
}

/// Draws the round's presses: phone `i` is told at `i / push_rate` plus a latency, its player
/// presses a reaction time later; then API Gateway's token bucket.
pub fn arrivals(p: &Params) -> Arrivals {
    let mut out = Arrivals::default();
    if let Some(n) = p.preloaded {
        out.accepted = vec![n];
        out.throttled = vec![0];
        return out;
    }
    let mut rng = Rng(p.seed);
    let closes = p.closes_at_ms();
    let whole = p.press_share.floor() as u64;
    let frac = p.press_share - p.press_share.floor();
    let add = |t: f64, out: &mut Arrivals| {
        let i = (t / BUCKET_MS) as usize;
        if out.accepted.len() <= i {
            out.accepted.resize(i + 1, 0);
        }
        out.accepted[i] += 1;
        if t > closes {
            out.after_close += 1;
        }
    };
    for i in 0..p.players {
        let told = i as f64 * 1000.0 / p.push_rate + 2.0 * p.push_latency_ms * rng.unit();
        out.last_push_ms = out.last_push_ms.max(told);
        let presses = whole + u64::from(rng.unit() < frac);
        for _ in 0..presses {
            add(told + rng.exp(p.reaction_mean_ms), &mut out);
        }
    }
    out.throttled = vec![0; out.accepted.len()];
    if let Some(rate) = p.api_rate {
        let burst = if p.api_burst > 0.0 { p.api_burst } else { rate };
        let mut tokens = burst;
        for (a, t) in out.accepted.iter_mut().zip(out.throttled.iter_mut()) {
            tokens = (tokens + rate * BUCKET_MS / 1000.0).min(burst);
            let take = (*a).min(tokens.floor() as u64);
            tokens -= take as f64;
            *t = *a - take;
            *a = take;
        }
    }
    out
}

/// One second of the simulated round.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Second {
    /// Pushes that left in this second.
    pub pushes: u64,
    /// Presses that reached the queue.
    pub arrived: u64,
    /// Presses refused by API Gateway.
    pub throttled: u64,
    /// Presses applied (committed).
    pub applied: u64,
    /// Queue depth (visible messages) at the end of the second.
    pub depth: u64,
    /// Age of the oldest visible message at the end of the second, ms.
    pub oldest_ms: f64,
    /// Messages held by the handlers (received, not yet deleted) at the end of the second.
    pub in_flight: u64,
    /// CPU busy, ms (all handlers).
    pub cpu_ms: f64,
    /// Batch transactions busy, ms (all handlers).
    pub db_ms: f64,
    /// Batches committed.
    pub batches: u64,
    /// Largest batch committed.
    pub batch_max: u32,
}

/// What the simulation found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// The inputs.
    pub params: Params,
    /// Per handler, per stage.
    pub capacity: HandlerCapacity,
    /// Presses sent (accepted + throttled).
    pub presses: u64,
    /// Presses refused by API Gateway.
    pub throttled: u64,
    /// Presses applied.
    pub applied: u64,
    /// Presses sent after the round closed (they are judged late).
    pub after_close: u64,
    /// The round's fan-out, ms.
    pub fan_out_ms: f64,
    /// The round's close, ms after it opened.
    pub closes_at_ms: f64,
    /// When the last push reached its phone, ms.
    pub last_push_ms: f64,
    /// Peak presses sent in one second.
    pub peak_arrivals_per_sec: f64,
    /// Largest queue depth, and when.
    pub peak_depth: u64,
    /// When the peak depth was reached, ms.
    pub peak_depth_at_ms: f64,
    /// Longest a press waited in the queue before it was received, ms.
    pub peak_age_ms: f64,
    /// When the last press was applied, ms after the opening (a late straggler's arrival
    /// usually sets it).
    pub all_applied_ms: f64,
    /// When as many presses were applied as had reached the queue by the round's close: the
    /// round's backlog is cleared.
    pub backlog_cleared_ms: f64,
    /// When the handlers started receiving, ms.
    pub startup_ms: f64,
    /// Batches.
    pub batches: u64,
    /// Average batch size.
    pub batch_avg: f64,
    /// Largest batch.
    pub batch_max: u32,
    /// Highest CPU share of one second (all handlers' cores).
    pub peak_cpu_utilisation: f64,
    /// Highest share of one second the batch writers spent in transactions.
    pub peak_db_utilisation: f64,
    /// Highest presses applied in one second.
    pub peak_applied_per_sec: u64,
    /// Receive calls made.
    pub receive_calls: u64,
    /// Delete calls made.
    pub delete_calls: u64,
    /// Per second.
    pub seconds: Vec<Second>,
}

impl Outcome {
    /// The slowest phone's time left to press after its push arrived, ms (negative: the round
    /// closed before it was told).
    pub fn slowest_phone_left_ms(&self) -> f64 {
        self.closes_at_ms - self.last_push_ms
    }

    /// The same with a close at the base window only (the rule before issue 13).
    pub fn slowest_phone_left_fixed_ms(&self) -> f64 {
        self.params.window_ms - self.last_push_ms
    }

    /// From the handlers' first receive to the last press applied, ms.
    pub fn drain_ms(&self) -> f64 {
        self.all_applied_ms - self.startup_ms
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Presses of bucket `i` reach the queue.
    Arrive(usize),
    /// A receiver asks for messages.
    ReceiveStart { h: usize },
    /// The queue service handles a receive.
    ReceiveServe { h: usize },
    /// A receive's messages reach the handler.
    ReceiveDone { h: usize, n: u32 },
    /// Parsing done: presses go to the processor; the receiver receives again.
    Parsed { h: usize, n: u32 },
    /// The batch's linger or quiet gap ended.
    BatchTimer { h: usize, generation: u64 },
    /// A batch transaction committed.
    Committed { h: usize, n: u32 },
    /// One delete call of `n` messages returned.
    Deleted { h: usize, set: u64, n: u32 },
}

#[derive(Debug, Clone, Copy)]
struct Event {
    at: f64,
    seq: u64,
    kind: Kind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    /// Earliest first (reversed for the max-heap), then in scheduling order.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .at
            .total_cmp(&self.at)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Processor {
    /// Waiting for a first press.
    Idle,
    /// Gathering a batch.
    Filling {
        since: f64,
        count: u32,
        generation: u64,
    },
    /// A transaction is running.
    Writing,
    /// Committed, waiting for room among the deleting batches.
    WaitingDeletes { n: u32 },
}

#[derive(Debug, Clone)]
struct DeleteSet {
    id: u64,
    remaining: u32,
    in_flight: u32,
    outstanding: u32,
}

#[derive(Debug, Clone)]
struct Handler {
    /// Permits taken: messages held plus receives in progress (10 each).
    held: u32,
    /// Messages received and not yet deleted.
    messages: u32,
    /// Receivers waiting for permits.
    waiting_permits: u32,
    /// Each core's next free time.
    cores: Vec<f64>,
    /// Presses parsed, not yet in a batch.
    channel: u32,
    processor: Processor,
    deletes: Vec<DeleteSet>,
}

struct Sim<'a> {
    p: &'a Params,
    now: f64,
    seq: u64,
    heap: BinaryHeap<Event>,
    /// Visible messages: (arrival ms, count), oldest first.
    queue: VecDeque<(f64, u64)>,
    depth: u64,
    /// Receives parked on an empty queue (long poll), by handler.
    pollers: VecDeque<usize>,
    sqs_free: f64,
    db_free: f64,
    handlers: Vec<Handler>,
    next_set: u64,
    seconds: Vec<Second>,
    applied: u64,
    total: u64,
    peak_depth: u64,
    peak_depth_at: f64,
    peak_age: f64,
    last_applied: f64,
    /// Presses that reached the queue by the round's close.
    by_close: u64,
    /// When as many presses were applied as had arrived by the close.
    cleared: Option<f64>,
    batches: u64,
    batch_max: u32,
    receive_calls: u64,
    delete_calls: u64,
    generation: u64,
}

impl Sim<'_> {
    fn schedule(&mut self, at: f64, kind: Kind) {
        self.seq += 1;
        self.heap.push(Event {
            at,
            seq: self.seq,
            kind,
        });
    }

    fn second(&mut self, at: f64) -> &mut Second {
        let i = (at.max(0.0) / 1000.0) as usize;
        if self.seconds.len() <= i {
            self.seconds.resize(i + 1, Second::default());
        }
        &mut self.seconds[i]
    }

    /// Spreads `ms` of busy time starting at `start` over the seconds it covers.
    fn busy(&mut self, start: f64, ms: f64, cpu: bool) {
        let mut t = start;
        let end = start + ms;
        while t < end {
            let boundary = ((t / 1000.0).floor() + 1.0) * 1000.0;
            let slice = end.min(boundary) - t;
            let s = self.second(t);
            if cpu {
                s.cpu_ms += slice;
            } else {
                s.db_ms += slice;
            }
            t += slice;
        }
    }

    /// One SQS call issued now: returns when the service handles it and when its answer is back.
    fn sqs_call(&mut self) -> (f64, f64) {
        let half = self.p.sqs_call_ms / 2.0;
        let reach = self.now + half;
        let served = match self.p.sqs_calls_per_sec {
            Some(rate) => {
                let start = reach.max(self.sqs_free);
                self.sqs_free = start + 1000.0 / rate;
                self.sqs_free
            }
            None => reach,
        };
        (served, served + half)
    }

    /// Takes up to 10 visible messages, oldest first.
    fn take(&mut self) -> u32 {
        let mut got = 0u32;
        while got < TEN {
            let Some(front) = self.queue.front_mut() else {
                break;
            };
            self.peak_age = self.peak_age.max(self.now - front.0);
            let n = u64::from(TEN - got).min(front.1);
            front.1 -= n;
            got += n as u32;
            if front.1 == 0 {
                self.queue.pop_front();
            }
        }
        self.depth -= u64::from(got);
        got
    }

    fn start_receive(&mut self, h: usize) {
        let handler = &mut self.handlers[h];
        if handler.held + TEN > self.p.max_in_flight {
            handler.waiting_permits += 1;
            return;
        }
        handler.held += TEN;
        self.receive_calls += 1;
        let (served, _) = self.sqs_call();
        self.schedule(served, Kind::ReceiveServe { h });
    }

    fn serve_receive(&mut self, h: usize) {
        let got = self.take();
        if got == 0 {
            self.pollers.push_back(h);
            return;
        }
        self.handlers[h].messages += got;
        let at = self.now + self.p.sqs_call_ms / 2.0;
        self.schedule(at, Kind::ReceiveDone { h, n: got });
    }

    fn receive_done(&mut self, h: usize, n: u32) {
        // Unused permits go back at once.
        self.release(h, TEN - n);
        let work = f64::from(n) * self.p.cpu_ms_per_press;
        let cores = &mut self.handlers[h].cores;
        let (core, free) = cores
            .iter()
            .copied()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("at least one core");
        let start = free.max(self.now);
        cores[core] = start + work;
        self.busy(start, work, true);
        self.schedule(start + work, Kind::Parsed { h, n });
    }

    fn release(&mut self, h: usize, n: u32) {
        self.handlers[h].held -= n;
        while self.handlers[h].waiting_permits > 0
            && self.handlers[h].held + TEN <= self.p.max_in_flight
        {
            self.handlers[h].waiting_permits -= 1;
            self.start_receive(h);
        }
    }

    fn parsed(&mut self, h: usize, n: u32) {
        self.handlers[h].channel += n;
        self.feed(h);
        self.start_receive(h);
    }

    /// Moves presses from the channel into the batch being filled (or starts one).
    fn feed(&mut self, h: usize) {
        let max = self.p.batch_size;
        let now = self.now;
        let handler = &mut self.handlers[h];
        if handler.channel == 0 {
            return;
        }
        let (since, count) = match handler.processor {
            Processor::Idle => (now, 0),
            Processor::Filling { since, count, .. } => (since, count),
            Processor::Writing | Processor::WaitingDeletes { .. } => return,
        };
        let take = handler.channel.min(max - count);
        handler.channel -= take;
        let count = count + take;
        if count >= max {
            self.commit(h, count);
            return;
        }
        self.generation += 1;
        let generation = self.generation;
        self.handlers[h].processor = Processor::Filling {
            since,
            count,
            generation,
        };
        let at = (since + self.p.linger_ms).min(now + self.p.quiet_ms);
        self.schedule(at, Kind::BatchTimer { h, generation });
    }

    fn timer(&mut self, h: usize, generation: u64) {
        if let Processor::Filling {
            count,
            generation: g,
            ..
        } = self.handlers[h].processor
            && g == generation
        {
            self.commit(h, count);
        }
    }

    /// Starts the batch's transaction.
    fn commit(&mut self, h: usize, n: u32) {
        self.handlers[h].processor = Processor::Writing;
        let own = self.p.batch_ms(n);
        let done = match self.p.db_rows_per_sec {
            Some(rate) => {
                let start = self.now.max(self.db_free);
                self.db_free = start + f64::from(n) * 1000.0 / rate;
                (self.now + own).max(self.db_free)
            }
            None => self.now + own,
        };
        self.busy(self.now, done - self.now, false);
        self.schedule(done, Kind::Committed { h, n });
    }

    fn committed(&mut self, h: usize, n: u32) {
        self.applied += u64::from(n);
        self.last_applied = self.now;
        if self.cleared.is_none() && self.applied >= self.by_close {
            self.cleared = Some(self.now);
        }
        self.batches += 1;
        self.batch_max = self.batch_max.max(n);
        let now = self.now;
        let s = self.second(now);
        s.applied += u64::from(n);
        s.batches += 1;
        s.batch_max = s.batch_max.max(n);
        if self.handlers[h].deletes.len() >= self.p.pending_deletes as usize {
            self.handlers[h].processor = Processor::WaitingDeletes { n };
            return;
        }
        self.start_deletes(h, n);
        self.handlers[h].processor = Processor::Idle;
        self.feed(h);
    }

    fn start_deletes(&mut self, h: usize, n: u32) {
        self.next_set += 1;
        let set = DeleteSet {
            id: self.next_set,
            remaining: n,
            in_flight: 0,
            outstanding: n.div_ceil(TEN),
        };
        let id = set.id;
        self.handlers[h].deletes.push(set);
        self.pump_deletes(h, id);
    }

    fn pump_deletes(&mut self, h: usize, id: u64) {
        loop {
            let concurrency = self.p.delete_concurrency;
            let Some(set) = self.handlers[h].deletes.iter_mut().find(|s| s.id == id) else {
                return;
            };
            if set.remaining == 0 || set.in_flight >= concurrency {
                return;
            }
            let n = set.remaining.min(TEN);
            set.remaining -= n;
            set.in_flight += 1;
            self.delete_calls += 1;
            let (_, back) = self.sqs_call();
            self.schedule(back, Kind::Deleted { h, set: id, n });
        }
    }

    fn deleted(&mut self, h: usize, id: u64, n: u32) {
        self.handlers[h].messages -= n;
        self.release(h, n);
        let handler = &mut self.handlers[h];
        let pos = handler
            .deletes
            .iter()
            .position(|s| s.id == id)
            .expect("a delete belongs to a set");
        let set = &mut handler.deletes[pos];
        set.in_flight -= 1;
        set.outstanding -= 1;
        if set.outstanding > 0 {
            self.pump_deletes(h, id);
            return;
        }
        handler.deletes.remove(pos);
        if let Processor::WaitingDeletes { n } = self.handlers[h].processor {
            self.start_deletes(h, n);
            self.handlers[h].processor = Processor::Idle;
            self.feed(h);
        }
    }

    fn arrive(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.queue.push_back((self.now, n));
        self.depth += n;
        if self.depth > self.peak_depth {
            self.peak_depth = self.depth;
            self.peak_depth_at = self.now;
        }
        while self.depth > 0 {
            let Some(h) = self.pollers.pop_front() else {
                break;
            };
            let got = self.take();
            self.handlers[h].messages += got;
            let at = self.now + self.p.sqs_call_ms / 2.0;
            self.schedule(at, Kind::ReceiveDone { h, n: got });
        }
    }

    /// Records the end-of-second state for every second up to `until`.
    fn snapshot_until(&mut self, until: f64, recorded: &mut usize) {
        while ((*recorded + 1) as f64) * 1000.0 <= until {
            let end = (*recorded + 1) as f64 * 1000.0;
            let oldest = self.queue.front().map_or(0.0, |f| end - f.0);
            let held: u64 = self.handlers.iter().map(|h| u64::from(h.messages)).sum();
            let depth = self.depth;
            let s = self.second(end - 1.0);
            s.depth = depth;
            s.oldest_ms = oldest;
            s.in_flight = held;
            *recorded += 1;
        }
    }
}

/// Runs the round (or the preloaded drain) until every accepted press is applied.
pub fn simulate(p: &Params) -> Outcome {
    let arr = arrivals(p);
    simulate_arrivals(p, &arr)
}

/// [`simulate`] with the arrivals already drawn.
pub fn simulate_arrivals(p: &Params, arr: &Arrivals) -> Outcome {
    let handlers = (0..p.handlers)
        .map(|_| Handler {
            held: 0,
            messages: 0,
            waiting_permits: 0,
            cores: vec![0.0; p.cores.ceil().max(1.0) as usize],
            channel: 0,
            processor: Processor::Idle,
            deletes: Vec::new(),
        })
        .collect();
    let mut sim = Sim {
        p,
        now: 0.0,
        seq: 0,
        heap: BinaryHeap::new(),
        queue: VecDeque::new(),
        depth: 0,
        pollers: VecDeque::new(),
        sqs_free: 0.0,
        db_free: 0.0,
        handlers,
        next_set: 0,
        seconds: Vec::new(),
        applied: 0,
        total: arr.total(),
        peak_depth: 0,
        peak_depth_at: 0.0,
        peak_age: 0.0,
        last_applied: 0.0,
        by_close: arr
            .accepted
            .iter()
            .enumerate()
            .filter(|(i, _)| *i as f64 * BUCKET_MS <= p.closes_at_ms())
            .map(|(_, n)| n)
            .sum(),
        cleared: None,
        batches: 0,
        batch_max: 0,
        receive_calls: 0,
        delete_calls: 0,
        generation: 0,
    };
    for (i, (&a, &t)) in arr.accepted.iter().zip(&arr.throttled).enumerate() {
        let at = i as f64 * BUCKET_MS;
        let s = sim.second(at);
        s.arrived += a;
        s.throttled += t;
        if a > 0 {
            sim.schedule(at, Kind::Arrive(i));
        }
    }
    if p.preloaded.is_none() {
        // Pushes leave at push_rate from t = 0 (the sequence of sends, not their arrival).
        let mut sent = 0u64;
        let mut second = 0usize;
        while sent < p.players {
            let upto = (((second + 1) as f64 * p.push_rate).floor() as u64).min(p.players);
            sim.second(second as f64 * 1000.0).pushes = upto - sent;
            sent = upto;
            second += 1;
        }
    }
    for h in 0..p.handlers as usize {
        for _ in 0..p.receivers {
            sim.schedule(p.startup_ms, Kind::ReceiveStart { h });
        }
    }
    let mut recorded = 0usize;
    // Until every press is applied and every applied message deleted.
    while sim.applied < sim.total || sim.handlers.iter().any(|h| h.messages > 0) {
        let Some(e) = sim.heap.pop() else {
            break;
        };
        sim.snapshot_until(e.at, &mut recorded);
        sim.now = e.at;
        match e.kind {
            Kind::Arrive(i) => sim.arrive(arr.accepted[i]),
            Kind::ReceiveStart { h } => sim.start_receive(h),
            Kind::ReceiveServe { h } => sim.serve_receive(h),
            Kind::ReceiveDone { h, n } => sim.receive_done(h, n),
            Kind::Parsed { h, n } => sim.parsed(h, n),
            Kind::BatchTimer { h, generation } => sim.timer(h, generation),
            Kind::Committed { h, n } => sim.committed(h, n),
            Kind::Deleted { h, set, n } => sim.deleted(h, set, n),
        }
    }
    let end = sim.now.max(p.closes_at_ms());
    sim.snapshot_until(((end / 1000.0).ceil()) * 1000.0, &mut recorded);

    let cores_ms = p.cores * f64::from(p.handlers) * 1000.0;
    let writers_ms = f64::from(p.handlers) * 1000.0;
    let peak_cpu = sim
        .seconds
        .iter()
        .map(|s| s.cpu_ms / cores_ms)
        .fold(0.0, f64::max);
    let peak_db = sim
        .seconds
        .iter()
        .map(|s| s.db_ms / writers_ms)
        .fold(0.0, f64::max);
    let peak_applied = sim.seconds.iter().map(|s| s.applied).max().unwrap_or(0);
    Outcome {
        params: p.clone(),
        capacity: p.handler_capacity(),
        presses: arr.total() + arr.total_throttled(),
        throttled: arr.total_throttled(),
        applied: sim.applied,
        after_close: arr.after_close,
        fan_out_ms: p.fan_out_ms(),
        closes_at_ms: p.closes_at_ms(),
        last_push_ms: arr.last_push_ms,
        peak_arrivals_per_sec: arr.peak_per_sec(),
        peak_depth: sim.peak_depth,
        peak_depth_at_ms: sim.peak_depth_at,
        peak_age_ms: sim.peak_age,
        all_applied_ms: sim.last_applied,
        backlog_cleared_ms: sim.cleared.unwrap_or(sim.last_applied),
        startup_ms: p.startup_ms,
        batches: sim.batches,
        batch_avg: if sim.batches > 0 {
            sim.applied as f64 / sim.batches as f64
        } else {
            0.0
        },
        batch_max: sim.batch_max,
        peak_cpu_utilisation: peak_cpu,
        peak_db_utilisation: peak_db,
        peak_applied_per_sec: peak_applied,
        receive_calls: sim.receive_calls,
        delete_calls: sim.delete_calls,
        seconds: sim.seconds,
    }
}

/// The handlers needed so that the busiest stage of each is at most `target` busy at the peak
/// arrival rate.
pub fn handlers_needed(p: &Params, peak_per_sec: f64, target: f64) -> u32 {
    let per = p.handler_capacity().presses_per_sec * target;
    if per <= 0.0 || !per.is_finite() {
        return 1;
    }
    ((peak_per_sec / per).ceil() as u32).max(1)
}

/// `n` with thousands separators.
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn group_f(v: f64) -> String {
    if v.is_finite() {
        group(v.round().max(0.0) as u64)
    } else {
        "∞".into()
    }
}

fn secs(ms: f64) -> String {
    let v = ms / 1000.0;
    // No "-0.0".
    if v.abs() < 0.05 {
        "0.0".into()
    } else {
        format!("{v:.1}")
    }
}

/// A wait: in ms below 10 s, else in s.
fn wait(ms: f64) -> String {
    if ms < 10_000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{} s", secs(ms))
    }
}

/// A step giving about 20 rows over `span_ms`.
fn auto_step_secs(span_ms: f64) -> f64 {
    let span = span_ms / 1000.0;
    [1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0]
        .into_iter()
        .find(|s| span / s <= 24.0)
        .unwrap_or(1200.0)
}

/// The timeline as a Markdown table, one row per `step_secs`.
pub fn timeline(o: &Outcome, step_secs: Option<f64>) -> String {
    let span = (o.seconds.len() as f64) * 1000.0;
    let step = step_secs.unwrap_or_else(|| auto_step_secs(span)).max(1.0) as usize;
    let mut out = String::new();
    out.push_str(
        "| t (s) | pushes sent | presses arrived | arrivals /s | throttled | queue depth | oldest (s) | in flight | applied | applied /s | handler CPU | batch writer busy | batches | batch avg / max |\n",
    );
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let (mut pushes, mut arrived, mut applied) = (0u64, 0u64, 0u64);
    let cores_ms = o.params.cores * f64::from(o.params.handlers) * 1000.0;
    let writers_ms = f64::from(o.params.handlers) * 1000.0;
    for chunk_start in (0..o.seconds.len()).step_by(step) {
        let chunk = &o.seconds[chunk_start..(chunk_start + step).min(o.seconds.len())];
        let n = chunk.len() as f64;
        let sum = |f: &dyn Fn(&Second) -> u64| chunk.iter().map(f).sum::<u64>();
        let got = sum(&|s| s.arrived);
        let done = sum(&|s| s.applied);
        pushes += sum(&|s| s.pushes);
        arrived += got;
        applied += done;
        let batches = sum(&|s| s.batches);
        let last = chunk.last().expect("non-empty chunk");
        let cpu: f64 = chunk.iter().map(|s| s.cpu_ms).sum::<f64>() / (cores_ms * n);
        let db: f64 = chunk.iter().map(|s| s.db_ms).sum::<f64>() / (writers_ms * n);
        let bmax = chunk.iter().map(|s| s.batch_max).max().unwrap_or(0);
        let bavg = if batches > 0 {
            format!("{:.0} / {bmax}", done as f64 / batches as f64)
        } else {
            "–".into()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.1} | {} | {} | {} | {:.0} % | {:.0} % | {} | {} |",
            chunk_start + chunk.len(),
            group(pushes),
            group(arrived),
            group_f(got as f64 / n),
            group(sum(&|s| s.throttled)),
            group(last.depth),
            last.oldest_ms / 1000.0,
            group(last.in_flight),
            group(applied),
            group_f(done as f64 / n),
            cpu * 100.0,
            db * 100.0,
            group(batches),
            bavg,
        );
    }
    out
}

/// The verdicts, as a Markdown list.
pub fn verdicts(o: &Outcome) -> String {
    let p = &o.params;
    let c = &o.capacity;
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str("- ");
        out.push_str(&s);
        out.push('\n');
    };
    if p.preloaded.is_none() {
        line(format!(
            "round: {} players, push fan-out {} s at {} pushes/s, closes {} s after opening (window {} s)",
            group(p.players),
            secs(o.fan_out_ms),
            group_f(p.push_rate),
            secs(o.closes_at_ms),
            secs(p.window_ms),
        ));
        line(format!(
            "slowest phone's remaining window: {} s (told {} s after opening); with a fixed {} s close it would be {} s",
            secs(o.slowest_phone_left_ms()),
            secs(o.last_push_ms),
            secs(p.window_ms),
            secs(o.slowest_phone_left_fixed_ms()),
        ));
    }
    line(format!(
        "presses: {} sent, peak {} /s; {} throttled by API Gateway{}; {} after the close",
        group(o.presses),
        group_f(o.peak_arrivals_per_sec),
        group(o.throttled),
        p.api_rate.map_or(" (no throttle set)".into(), |r| format!(
            " (rate {} /s, burst {})",
            group_f(r),
            group_f(if p.api_burst > 0.0 { p.api_burst } else { r })
        )),
        group(o.after_close),
    ));
    line(format!(
        "handlers: {} × {} receivers; one handler sustains {} presses/s (limit: {}; CPU {}, receivers {}, deletes {}, batch writer {})",
        p.handlers,
        p.receivers,
        group_f(c.presses_per_sec),
        c.limit,
        group_f(c.cpu),
        group_f(c.receive),
        group_f(c.delete),
        group_f(c.writer),
    ));
    line(format!(
        "peak handler CPU {:.0} %, peak batch-writer busy {:.0} %",
        o.peak_cpu_utilisation * 100.0,
        o.peak_db_utilisation * 100.0
    ));
    line(format!(
        "peak queue depth {} at {} s; longest wait in the queue {}",
        group(o.peak_depth),
        secs(o.peak_depth_at_ms),
        wait(o.peak_age_ms),
    ));
    if p.preloaded.is_none() {
        line(format!(
            "the round's backlog (every press that reached the queue by the close) applied {} s after opening ({})",
            secs(o.backlog_cleared_ms),
            if o.backlog_cleared_ms <= o.closes_at_ms + 50.0 {
                "by the close".to_owned()
            } else {
                format!(
                    "{} s after the close",
                    secs(o.backlog_cleared_ms - o.closes_at_ms)
                )
            },
        ));
    }
    line(format!(
        "every press applied {} s after opening (the last straggler); {} of {} applied",
        secs(o.all_applied_ms),
        group(o.applied),
        group(o.presses - o.throttled),
    ));
    line(format!(
        "database: {} batches, {:.0} presses on average, largest {}; peak {} presses applied /s ({:.1} transactions/s)",
        group(o.batches),
        o.batch_avg,
        o.batch_max,
        group(o.peak_applied_per_sec),
        if o.batch_avg > 0.0 {
            o.peak_applied_per_sec as f64 / o.batch_avg
        } else {
            0.0
        },
    ));
    line(format!(
        "SQS: {} receive and {} delete calls",
        group(o.receive_calls),
        group(o.delete_calls)
    ));
    out
}

/// Nice axis ticks for `[0, max]`: (step, top).
fn ticks(max: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 1.0);
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    (step, (max / step).ceil() * step)
}

fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The plot: pushes, arrivals and presses applied per second (top), queue depth (bottom), with
/// the round's close marked.
pub fn svg(o: &Outcome, title: &str) -> String {
    const W: f64 = 960.0;
    const LEFT: f64 = 80.0;
    const RIGHT: f64 = 20.0;
    let plot_w = W - LEFT - RIGHT;
    let n = o.seconds.len().max(1);
    let x = |sec: f64| LEFT + plot_w * sec / n as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="560" viewBox="0 0 {W} 560" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="560" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    let panels: [Panel<'_>; 2] = [
        (
            "per second",
            40.0,
            250.0,
            vec![
                (
                    "presses arriving",
                    "#1f77b4",
                    o.seconds.iter().map(|s| s.arrived as f64).collect(),
                ),
                (
                    "presses applied",
                    "#2ca02c",
                    o.seconds.iter().map(|s| s.applied as f64).collect(),
                ),
                (
                    "pushes sent",
                    "#555555",
                    o.seconds.iter().map(|s| s.pushes as f64).collect(),
                ),
            ],
        ),
        (
            "messages in the queue",
            330.0,
            180.0,
            vec![
                (
                    "waiting (visible)",
                    "#d62728",
                    o.seconds.iter().map(|s| s.depth as f64).collect(),
                ),
                (
                    "held by the handlers",
                    "#9467bd",
                    o.seconds.iter().map(|s| s.in_flight as f64).collect(),
                ),
            ],
        ),
    ];
    for (label, top, height, series) in &panels {
        let max = series
            .iter()
            .flat_map(|(_, _, v)| v.iter().copied())
            .fold(0.0, f64::max);
        // Headroom above the data for the legend.
        let (step, ymax) = ticks(max * 1.2);
        let y = |v: f64| top + height - height * v / ymax;
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{height}" fill="none" stroke="#444"/>"##
        );
        let mut v = 0.0;
        while v <= ymax + step / 2.0 {
            let yy = y(v);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + plot_w,
                LEFT - 6.0,
                yy + 4.0,
                short(v)
            );
            v += step;
        }
        let _ = writeln!(
            s,
            r#"<text x="18" y="{:.1}" transform="rotate(-90 18 {:.1})" text-anchor="middle">{label}</text>"#,
            top + height / 2.0,
            top + height / 2.0
        );
        let close = o.closes_at_ms / 1000.0;
        if o.params.preloaded.is_none() && close <= n as f64 {
            let xc = x(close);
            let _ = writeln!(
                s,
                r##"<line x1="{xc:.1}" y1="{top}" x2="{xc:.1}" y2="{:.1}" stroke="#ff7f0e" stroke-dasharray="5,4"/>"##,
                top + height
            );
        }
        for (i, (name, colour, values)) in series.iter().enumerate() {
            let mut pts = String::new();
            for (sec, v) in values.iter().enumerate() {
                let _ = write!(pts, "{:.1},{:.1} ", x(sec as f64 + 0.5), y(*v));
            }
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="1.6"{} points="{}"/>"#,
                if *name == "pushes sent" {
                    r#" stroke-dasharray="6,3""#
                } else {
                    ""
                },
                pts.trim_end()
            );
            let lx = LEFT + 12.0 + 170.0 * i as f64;
            let ly = top + 16.0;
            let _ = writeln!(
                s,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="3"/><text x="{}" y="{}">{name}</text>"#,
                lx + 18.0,
                lx + 23.0,
                ly + 4.0
            );
        }
        if o.params.preloaded.is_none() {
            let lx = LEFT + plot_w - 150.0;
            let ly = top + 16.0;
            let _ = writeln!(
                s,
                r##"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="#ff7f0e" stroke-dasharray="5,4" stroke-width="2"/><text x="{}" y="{}">round closes</text>"##,
                lx + 18.0,
                lx + 23.0,
                ly + 4.0
            );
        }
    }
    // Time axis.
    let (step, tmax) = ticks(n as f64);
    let mut t = 0.0;
    while t <= tmax.min(n as f64) + 1e-9 {
        let xx = x(t);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="510" x2="{xx:.1}" y2="515" stroke="#444"/><text x="{xx:.1}" y="528" text-anchor="middle">{}</text>"##,
            short(t)
        );
        t += step;
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="550" text-anchor="middle">seconds after the round opened</text>"#,
        LEFT + plot_w / 2.0
    );
    s.push_str("</svg>\n");
    s
}

/// One panel of the plot: its label, top, height, and its series (name, colour, values).
type Panel<'a> = (&'a str, f64, f64, Vec<(&'a str, &'a str, Vec<f64>)>);

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The figures of a `bp-dev bench` run the cross-check needs (from its JSON line).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchRun {
    /// Presses per part.
    pub n: u64,
    /// Receivers of the drainer and the handler.
    pub receivers: u32,
    /// a: queue ceiling, presses per second.
    pub a_per_sec: f64,
    /// b: database ceiling, presses per second.
    pub b_per_sec: f64,
    /// c: from the handler's start to the last press in the database, seconds.
    pub c_secs: f64,
    /// c: from the start to the handler's ready line, seconds.
    pub c_startup_secs: f64,
    /// c: the handler's CPU, seconds.
    pub c_cpu_secs: f64,
    /// c: the CPU it had used at ready.
    pub c_startup_cpu_secs: f64,
    /// c: batches, if reported.
    pub c_batches: Option<u64>,
    /// c: average batch size, if reported.
    pub c_batch_avg: Option<f64>,
}

impl BenchRun {
    /// Reads the JSON line `bp-dev bench` prints (and writes with `--json`).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let line = text
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .context("no JSON line")?;
        let v: serde_json::Value = serde_json::from_str(line).context("not JSON")?;
        let num = |path: &[&str]| -> Option<f64> {
            let mut cur = &v;
            for k in path {
                cur = cur.get(k)?;
            }
            cur.as_f64()
        };
        let need = |path: &[&str]| {
            num(path).with_context(|| format!("the bench JSON has no {}", path.join(".")))
        };
        Ok(Self {
            n: need(&["n"])? as u64,
            receivers: need(&["receivers"])? as u32,
            a_per_sec: need(&["a_presses_per_s"])?,
            b_per_sec: need(&["b_presses_per_s"])?,
            c_secs: need(&["detail", "c", "secs"])?,
            c_startup_secs: num(&["detail", "c", "startup_secs"]).unwrap_or(0.0),
            c_cpu_secs: need(&["detail", "c", "cpu_secs"])?,
            c_startup_cpu_secs: num(&["detail", "c", "startup_cpu_secs"]).unwrap_or(0.0),
            c_batches: num(&["detail", "c", "batches"]).map(|b| b as u64),
            c_batch_avg: num(&["detail", "c", "batch_avg"]),
        })
    }

    /// The measured drain: from the handler's ready line to the last press in the database, ms.
    pub fn drain_ms(&self) -> f64 {
        (self.c_secs - self.c_startup_secs) * 1000.0
    }

    /// The simulation of this run: its presses preloaded, one handler with its receivers, the
    /// queue service at the ceiling a measured (each 10 presses cost one receive and one delete
    /// call), the database at b's time per press, the handler's CPU per press from c (start-up
    /// excluded); everything else as `base`.
    pub fn params(&self, base: &Params) -> Params {
        Params {
            players: self.n,
            preloaded: Some(self.n),
            handlers: 1,
            receivers: self.receivers,
            sqs_calls_per_sec: Some(self.a_per_sec * 2.0 / f64::from(TEN)),
            db_txn_ms: 0.0,
            db_row_ms: 1000.0 / self.b_per_sec,
            db_rows_per_sec: None,
            cpu_ms_per_press: ((self.c_cpu_secs - self.c_startup_cpu_secs).max(0.0) * 1000.0)
                / self.n as f64,
            startup_ms: self.c_startup_secs * 1000.0,
            api_rate: None,
            ..base.clone()
        }
    }
}

/// The cross-check's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CrossCheck {
    /// The bench run.
    pub bench: BenchRun,
    /// Simulated drain, ms.
    pub simulated_drain_ms: f64,
    /// Measured drain, ms.
    pub measured_drain_ms: f64,
    /// Simulated ÷ measured.
    pub ratio: f64,
    /// Allowed deviation.
    pub tolerance: f64,
    /// Within it?
    pub within: bool,
    /// Simulated batches.
    pub simulated_batches: u64,
    /// Simulated average batch.
    pub simulated_batch_avg: f64,
}

/// Replays `bench` in the simulator.
pub fn cross_check(bench: &BenchRun, base: &Params, tolerance: f64) -> (CrossCheck, Outcome) {
    let o = simulate(&bench.params(base));
    let measured = bench.drain_ms();
    let simulated = o.drain_ms();
    let ratio = if measured > 0.0 {
        simulated / measured
    } else {
        f64::INFINITY
    };
    (
        CrossCheck {
            bench: bench.clone(),
            simulated_drain_ms: simulated,
            measured_drain_ms: measured,
            ratio,
            tolerance,
            within: (ratio - 1.0).abs() <= tolerance,
            simulated_batches: o.batches,
            simulated_batch_avg: o.batch_avg,
        },
        o,
    )
}

/// The cross-check as a Markdown table.
pub fn render_cross_check(c: &CrossCheck) -> String {
    let b = &c.bench;
    let mut out = String::new();
    out.push_str("| figure | measured (scripts/bench) | simulated |\n|---|---:|---:|\n");
    let _ = writeln!(
        out,
        "| inputs: N presses preloaded, receivers | {} presses, {} receivers | same |",
        group(b.n),
        b.receivers
    );
    let _ = writeln!(
        out,
        "| inputs: queue ceiling a → queue service | {} presses/s | {} calls/s (receive + delete per 10) |",
        group_f(b.a_per_sec),
        group_f(b.a_per_sec * 2.0 / 10.0)
    );
    let _ = writeln!(
        out,
        "| inputs: database ceiling b → time per press | {} presses/s | {:.4} ms |",
        group_f(b.b_per_sec),
        1000.0 / b.b_per_sec
    );
    let _ = writeln!(
        out,
        "| inputs: handler CPU per press (c, start-up excluded) | {:.3} ms | same |",
        (b.c_cpu_secs - b.c_startup_cpu_secs).max(0.0) * 1000.0 / b.n as f64
    );
    let _ = writeln!(
        out,
        "| handler start-up (to its ready line) | {:.2} s | input |",
        b.c_startup_secs
    );
    let _ = writeln!(
        out,
        "| **drain: ready → every press in the database** | **{:.2} s** | **{:.2} s** |",
        c.measured_drain_ms / 1000.0,
        c.simulated_drain_ms / 1000.0
    );
    let _ = writeln!(
        out,
        "| batches (average size) | {} | {} ({:.0}) |",
        match (b.c_batches, b.c_batch_avg) {
            (Some(n), Some(avg)) => format!("{n} ({avg:.0})"),
            _ => "not reported".into(),
        },
        c.simulated_batches,
        c.simulated_batch_avg
    );
    let _ = writeln!(
        out,
        "| simulated ÷ measured drain | | {:.2} ({} ±{:.0} %) |",
        c.ratio,
        if c.within { "within" } else { "**outside**" },
        c.tolerance * 100.0
    );
    out
}

fn params_from(args: &CapacityArgs) -> Params {
    Params {
        players: args.players.or(args.preloaded).unwrap_or(0),
        press_share: args.press_share,
        window_ms: args.window_secs * 1000.0,
        push_rate: args.push_rate,
        push_latency_ms: args.push_latency_ms,
        reaction_mean_ms: args.reaction_mean_secs * 1000.0,
        api_rate: args.api_rate,
        api_burst: args.api_burst.unwrap_or(0.0),
        preloaded: args.preloaded,
        handlers: args.handlers.unwrap_or(1),
        receivers: args.receivers,
        max_in_flight: args.max_in_flight,
        batch_size: args.batch_size,
        linger_ms: args.linger_ms,
        quiet_ms: args.quiet_ms,
        delete_concurrency: args.delete_concurrency,
        pending_deletes: args.pending_deletes,
        cpu_ms_per_press: args.cpu_ms_per_press,
        cores: args.cores,
        sqs_call_ms: args.sqs_call_ms,
        sqs_calls_per_sec: args.sqs_calls_per_sec,
        db_txn_ms: args.db_txn_ms,
        db_row_ms: args.db_row_ms,
        db_rows_per_sec: args.db_rows_per_sec,
        startup_ms: args.startup_ms,
        seed: args.seed,
    }
}

/// Runs `bp-dev capacity`.
pub fn run(args: CapacityArgs) -> anyhow::Result<()> {
    let mut p = params_from(&args);
    if let Some(path) = &args.from_bench {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the bench JSON {}", path.display()))?;
        let bench = BenchRun::parse(&text).with_context(|| format!("{}", path.display()))?;
        let bp = bench.params(&p);
        bp.validate()?;
        let (check, o) = cross_check(&bench, &p, args.tolerance);
        println!(
            "## Cross-check: the simulator against `bp-dev bench` ({})\n",
            path.display()
        );
        print!("{}", render_cross_check(&check));
        println!("\n### Simulated drain\n");
        print!("{}", verdicts(&o));
        println!();
        print!("{}", timeline(&o, args.step_secs));
        write_outputs(
            &args,
            &o,
            &format!("bench replay: {} presses", group(bench.n)),
        )?;
        if let Some(json) = &args.json {
            let v = serde_json::json!({"cross_check": check, "outcome": o});
            std::fs::write(json, serde_json::to_string(&v)? + "\n")
                .with_context(|| format!("writing {}", json.display()))?;
        }
        if !check.within {
            bail!(
                "simulated drain {:.2} s is {:.0} % off the measured {:.2} s (tolerance {:.0} %)",
                check.simulated_drain_ms / 1000.0,
                (check.ratio - 1.0) * 100.0,
                check.measured_drain_ms / 1000.0,
                args.tolerance * 100.0
            );
        }
        return Ok(());
    }
    if args.players.is_none() && args.preloaded.is_none() {
        bail!("give --players N (or --preloaded N, or --from-bench FILE)");
    }
    p.validate()?;
    let arr = arrivals(&p);
    let auto = args.handlers.is_none();
    if auto {
        p.handlers = handlers_needed(&p, arr.peak_per_sec(), args.target_utilisation);
    }
    let o = simulate_arrivals(&p, &arr);
    let title = match p.preloaded {
        Some(n) => format!("{} presses preloaded, {} handler(s)", group(n), p.handlers),
        None => format!(
            "One round: {} players, {} pushes/s, {} handler(s)",
            group(p.players),
            group_f(p.push_rate),
            p.handlers
        ),
    };
    println!("## {title}\n");
    if auto {
        println!(
            "(handlers: the peak of {} presses/s at {:.0} % of one handler's {} presses/s)\n",
            group_f(o.peak_arrivals_per_sec),
            args.target_utilisation * 100.0,
            group_f(o.capacity.presses_per_sec)
        );
    }
    print!("{}", verdicts(&o));
    println!();
    print!("{}", timeline(&o, args.step_secs));
    write_outputs(&args, &o, &title)?;
    if let Some(json) = &args.json {
        std::fs::write(json, serde_json::to_string(&o)? + "\n")
            .with_context(|| format!("writing {}", json.display()))?;
    }
    Ok(())
}

fn write_outputs(args: &CapacityArgs, o: &Outcome, title: &str) -> anyhow::Result<()> {
    if let Some(path) = &args.svg {
        std::fs::write(path, svg(o, title))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bp-dev: plot written to {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(players: u64) -> Params {
        Params {
            players,
            ..Params::default()
        }
    }

    #[test]
    fn every_press_is_applied_exactly_once() {
        for (players, handlers, share) in [(1, 1, 1.0), (2_000, 1, 1.0), (30_000, 3, 1.3)] {
            let p = Params {
                handlers,
                press_share: share,
                ..round(players)
            };
            let arr = arrivals(&p);
            let o = simulate_arrivals(&p, &arr);
            assert_eq!(o.applied, arr.total(), "{players} players");
            assert_eq!(o.seconds.iter().map(|s| s.applied).sum::<u64>(), o.applied);
            assert_eq!(
                o.seconds.iter().map(|s| s.arrived).sum::<u64>(),
                arr.total()
            );
            assert_eq!(
                o.seconds.iter().map(|s| s.pushes).sum::<u64>(),
                players,
                "every phone is pushed once"
            );
            // Every message received was deleted: the last second holds nothing.
            let last = o.seconds.last().unwrap();
            assert_eq!((last.depth, last.in_flight), (0, 0), "{players}");
            assert!(o.delete_calls * 10 >= o.applied);
        }
        // Presses per player: 1.3 means about 30 % press twice.
        let p = Params {
            press_share: 1.3,
            ..round(10_000)
        };
        let n = arrivals(&p).total();
        assert!((12_800..=13_200).contains(&n), "{n}");
    }

    #[test]
    fn the_same_seed_gives_the_same_round_and_another_seed_another() {
        let p = round(20_000);
        let a = simulate(&p);
        assert_eq!(a, simulate(&p));
        let b = simulate(&Params { seed: 2, ..p });
        assert_ne!(a.seconds, b.seconds);
        assert_eq!(a.applied, b.applied);
    }

    #[test]
    fn a_preloaded_queue_drains_at_the_queue_service_rate() {
        // Closed form: the queue service is the only bottleneck (no CPU, no database time,
        // no round trip): every 10 presses cost one receive and one delete call, so N presses
        // take N / 10 × 2 calls ÷ the rate, plus the last batch's quiet gap at most.
        let n = 50_000;
        let calls_per_sec = 400.0;
        let p = Params {
            players: n,
            preloaded: Some(n),
            cpu_ms_per_press: 0.0,
            sqs_call_ms: 0.0,
            sqs_calls_per_sec: Some(calls_per_sec),
            db_txn_ms: 0.0,
            db_row_ms: 0.0,
            ..Params::default()
        };
        let o = simulate(&p);
        assert_eq!(o.applied, n);
        let expected_ms = (n as f64 / 10.0) * 2.0 / calls_per_sec * 1000.0;
        let got = o.drain_ms();
        assert!(
            (got - expected_ms).abs() <= 0.01 * expected_ms + p.quiet_ms,
            "drain {got} ms, closed form {expected_ms} ms"
        );
        // Plus one empty receive per receiver at the end (they then wait on the empty queue).
        assert!(
            (n / 10..=n / 10 + 8).contains(&o.receive_calls),
            "{}",
            o.receive_calls
        );
        assert_eq!(o.delete_calls, n / 10);
        assert_eq!(o.peak_depth, n);
        assert_eq!(o.fan_out_ms, 0.0);
    }

    #[test]
    fn a_lone_press_waits_out_the_quiet_gap_and_one_transaction() {
        // One press, everything else instant but the database: applied after quiet + T(1).
        let p = Params {
            players: 1,
            preloaded: Some(1),
            cpu_ms_per_press: 0.0,
            sqs_call_ms: 0.0,
            db_txn_ms: 7.0,
            db_row_ms: 3.0,
            ..Params::default()
        };
        let o = simulate(&p);
        assert_eq!(o.applied, 1);
        assert_eq!(o.all_applied_ms, 50.0 + 7.0 + 3.0);
        assert_eq!((o.batches, o.batch_max), (1, 1));
    }

    #[test]
    fn the_fan_out_sets_the_close_and_shapes_the_arrivals() {
        let p = round(1_000_000);
        assert_eq!(p.fan_out_ms(), 100_000.0);
        assert_eq!(p.closes_at_ms(), 160_000.0);
        let arr = arrivals(&p);
        // The last phone is told at the end of the fan-out plus its latency (< 2 × the mean).
        assert!(arr.last_push_ms >= 99_000.0 && arr.last_push_ms < 102_000.0);
        // Arrivals cannot outrun the pushes: at most the push rate plus the reaction spread.
        let peak = arr.peak_per_sec();
        assert!(peak > 9_000.0 && peak <= 10_500.0, "peak {peak}");
        assert_eq!(arr.total(), 1_000_000);
        // Nearly nobody is late: the close covers the fan-out.
        assert!(arr.after_close < 1_000, "{}", arr.after_close);
        let small = round(10_000);
        assert_eq!(small.fan_out_ms(), 1_000.0);
        assert_eq!(
            Params {
                push_rate: 3.0,
                ..round(7)
            }
            .fan_out_ms(),
            2_334.0
        );
    }

    #[test]
    fn the_throttle_refuses_what_exceeds_the_bucket() {
        let p = Params {
            api_rate: Some(500.0),
            api_burst: 500.0,
            ..round(20_000)
        };
        let arr = arrivals(&p);
        assert_eq!(arr.total() + arr.total_throttled(), 20_000);
        assert!(arr.total_throttled() > 5_000);
        // What gets through stays within rate × time + burst in every second.
        let per = 100;
        for w in arr.accepted.windows(per) {
            assert!(w.iter().sum::<u64>() <= 500 + 500 + 5);
        }
        let o = simulate_arrivals(&p, &arr);
        assert_eq!(o.applied, arr.total());
        assert_eq!(o.throttled, arr.total_throttled());
    }

    #[test]
    fn too_few_handlers_build_a_queue_and_enough_keep_it_short() {
        let p = round(200_000);
        let arr = arrivals(&p);
        // One handler with 2 receivers: about 950 presses/s, far below the 9,000/s peak.
        let one = simulate_arrivals(
            &Params {
                handlers: 1,
                receivers: 2,
                ..p.clone()
            },
            &arr,
        );
        let h = handlers_needed(&p, arr.peak_per_sec(), 0.7);
        let enough = simulate_arrivals(
            &Params {
                handlers: h,
                ..p.clone()
            },
            &arr,
        );
        assert!(h > 1);
        assert!(one.peak_depth > 10 * enough.peak_depth.max(1));
        assert!(one.peak_age_ms > 10.0 * enough.peak_age_ms);
        assert!(enough.peak_age_ms < 2_000.0, "{}", enough.peak_age_ms);
        assert!(enough.backlog_cleared_ms < enough.closes_at_ms + 5_000.0);
        assert!(one.backlog_cleared_ms > enough.backlog_cleared_ms + 10_000.0);
    }

    #[test]
    fn the_in_flight_bound_is_never_exceeded() {
        let p = Params {
            max_in_flight: 100,
            receivers: 32,
            ..round(20_000)
        };
        let o = simulate(&p);
        assert!(o.seconds.iter().all(|s| s.in_flight <= 100));
        assert_eq!(o.applied, 20_000);
    }

    #[test]
    fn handler_capacity_names_its_limit() {
        let p = Params::default();
        let c = p.handler_capacity();
        // 8 receivers × 10 per (20 ms + 10 × 0.099 ms): the receivers, not the CPU (20,202/s).
        assert_eq!(c.limit, "receivers");
        assert!((c.receive - 80.0 * 1000.0 / 20.99).abs() < 1e-6);
        assert!((c.cpu - 2.0 * 1000.0 / 0.099).abs() < 1e-6);
        // More receivers: then the deletes (16 calls in flight × 10 per 20 ms = 8,000/s).
        let more = Params {
            receivers: 64,
            ..p.clone()
        };
        assert_eq!(more.handler_capacity().limit, "deletes");
        // Then the batch writer (500 presses per 10 + 500 × 0.0386 ms = 17,074/s).
        let wider = Params {
            receivers: 64,
            delete_concurrency: 16,
            ..p.clone()
        };
        assert_eq!(wider.handler_capacity().limit, "batch writer");
        // And with a faster transaction, the CPU.
        let faster = Params {
            db_txn_ms: 1.0,
            ..wider
        };
        assert_eq!(faster.handler_capacity().limit, "CPU");
        assert_eq!(handlers_needed(&Params::default(), 0.0, 0.7), 1);
    }

    #[test]
    fn a_bench_run_is_read_from_its_json_line_and_replayed() {
        let json = r#"progress
{"n":20000,"receivers":8,"a_presses_per_s":1428.0,"b_presses_per_s":25928.0,"c_presses_per_s":1449.0,"detail":{"c":{"secs":14.4,"per_sec":1449.0,"cpu_secs":2.1,"cpu_system_secs":0.5,"peak_rss_bytes":1,"statements":380,"startup_secs":0.6,"startup_cpu_secs":0.12,"batches":47,"batch_avg":425}}}"#;
        let b = BenchRun::parse(json).unwrap();
        assert_eq!((b.n, b.receivers, b.c_batches), (20_000, 8, Some(47)));
        assert!((b.drain_ms() - 13_800.0).abs() < 1e-6);
        let p = b.params(&Params::default());
        assert_eq!(p.preloaded, Some(20_000));
        assert!((p.sqs_calls_per_sec.unwrap() - 285.6).abs() < 1e-9);
        assert!((p.cpu_ms_per_press - 0.099).abs() < 1e-9);
        let (check, o) = cross_check(&b, &Params::default(), 0.2);
        assert_eq!(o.applied, 20_000);
        // 20,000 presses at the queue's 1,428/s take 14 s; the measured drain was 13.8 s.
        assert!(check.within, "{check:?}");
        assert!(render_cross_check(&check).contains("within"));
        assert!(BenchRun::parse("{}").is_err());
        assert!(BenchRun::parse("no json").is_err());
    }

    #[test]
    fn the_report_and_the_plot_are_well_formed() {
        let o = simulate(&round(5_000));
        let t = timeline(&o, None);
        assert!(t.lines().count() >= 3);
        assert!(t.lines().all(|l| l.starts_with('|')));
        let v = verdicts(&o);
        assert!(v.contains("slowest phone's remaining window"));
        let s = svg(&o, "a <test> & more");
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("a &lt;test&gt; &amp; more"));
        assert_eq!(s.matches("<polyline").count(), 5);
        assert_eq!(ticks(95.0), (20.0, 100.0));
        assert_eq!(ticks(9_000.0), (2_000.0, 10_000.0));
        assert_eq!(short(1_500_000.0), "1.5M");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(auto_step_secs(1_100_000.0), 60.0);
    }

    #[test]
    fn invalid_settings_are_refused() {
        assert!(Params::default().validate().is_ok());
        for bad in [
            Params {
                push_rate: 0.0,
                ..Params::default()
            },
            Params {
                handlers: 0,
                ..Params::default()
            },
            Params {
                max_in_flight: 5,
                ..Params::default()
            },
            Params {
                sqs_calls_per_sec: Some(-1.0),
                ..Params::default()
            },
            Params {
                press_share: f64::NAN,
                ..Params::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
