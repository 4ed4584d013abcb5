//! The `bp-dev` command line and what each subcommand does.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use futures::StreamExt as _;

use crate::fetch::FetchClient;
use crate::plan::{PlanSettings, default_margin_ms, plan};
use crate::players::Players;
use crate::progress::{Progress, ProgressMode};
use crate::queues::{NamedQueue, wait_drained};
use crate::round::{RoundInfo, load_round, wait_for_open_round};
use crate::send::{SendOptions, now_ms};
use crate::simulate::{Report, Simulator, render_report};
use crate::summary;

/// ButtonParty developer tools: simulated players (the demo and the benchmark's load generator)
/// and the demo's waits and summary.
#[derive(Debug, Parser)]
#[command(name = "bp-dev", version, about, long_about = None)]
pub struct Cli {
    /// Log filter for bp-dev's own diagnostics (tracing EnvFilter syntax).
    #[arg(
        long = "log",
        env = "BP_DEV_LOG",
        value_name = "BP_DEV_LOG",
        default_value = "warn",
        global = true
    )]
    pub log: String,
    /// Progress display on stderr: a bar on a terminal and plain lines otherwise (auto), or forced.
    #[arg(long, env = "BP_DEV_PROGRESS", value_enum, default_value_t = ProgressMode::Auto, global = true)]
    pub progress: ProgressMode,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Simulated players: register them (--register), play one round (--press), or enqueue
    /// presses as fast as possible (--burst N), through the queues exactly as API Gateway does.
    Simulate(Box<SimulateArgs>),
    /// Print the outcome of a simulated round (from the simulate --report file) and the top 10,
    /// read from the fetch API.
    Summary(SummaryArgs),
    /// Wait until every simulated player is registered (GET /fetch/self answers 200 for each).
    WaitRegistered(WaitRegisteredArgs),
    /// Wait until the queues are empty: the incoming handler has applied everything.
    WaitDrained(WaitDrainedArgs),
    /// Wait until the fetch API answers GET /fetch/lb.
    WaitFetchApi(WaitFetchArgs),
    /// The demo's game: rounds opened with `outgoing-handler open-round`, players who press and
    /// buy through the queues with delivery disorder on purpose, every read checked against
    /// the fold of what they sent (scripts/demo runs it).
    Demo(Box<crate::demo::DemoArgs>),
    /// Fresh queues and database for the demo; prints their settings as `export` lines.
    DemoSetup(crate::demo_setup::DemoSetupArgs),
    /// The benchmark (issue 7): queue and database ceilings, the handler end to end, round
    /// opening and reads at scale, on resources of its own. Run it through scripts/bench.
    Bench(Box<crate::bench::BenchArgs>),
    /// Capacity model (issue 13): simulate one round at N players (no AWS, no database) and
    /// print its timeline and verdicts; or, with --from-bench FILE, replay a benchmark run and
    /// compare the simulated drain time with the measured one.
    Capacity(Box<crate::capacity::CapacityArgs>),
}

/// The simulated players.
#[derive(Debug, Clone, Args)]
pub struct PlayerArgs {
    /// Number of players.
    #[arg(long, default_value_t = 300)]
    pub players: usize,
    /// Name prefix: players are <prefix>0001, <prefix>0002, ...
    #[arg(long, default_value = "sim-")]
    pub prefix: String,
}

impl PlayerArgs {
    fn players(&self) -> anyhow::Result<Players> {
        let players = Players::new(self.prefix.clone(), self.players);
        if self.players > 0 {
            // The longest name must be a valid username.
            buttonparty::messages::Username::parse(players.name(self.players - 1))
                .map_err(|e| anyhow::anyhow!("--prefix: {e}"))?;
        }
        Ok(players)
    }
}

/// The fetch API.
#[derive(Debug, Clone, Args)]
pub struct FetchArgs {
    /// Base URL of the fetch API.
    #[arg(
        long,
        env = "BUTTONPARTY_FETCH_URL",
        value_name = "BUTTONPARTY_FETCH_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub fetch_url: String,
}

/// The queues the players send to.
#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    /// URL of the add-user queue.
    #[arg(
        long,
        env = "BUTTONPARTY_ADD_USER_QUEUE_URL",
        value_name = "BUTTONPARTY_ADD_USER_QUEUE_URL"
    )]
    pub add_user_queue_url: Option<String>,
    /// URL of the press queue.
    #[arg(
        long,
        env = "BUTTONPARTY_PRESS_QUEUE_URL",
        value_name = "BUTTONPARTY_PRESS_QUEUE_URL"
    )]
    pub press_queue_url: Option<String>,
    /// URL of the powerup queue.
    #[arg(
        long,
        env = "BUTTONPARTY_POWERUP_QUEUE_URL",
        value_name = "BUTTONPARTY_POWERUP_QUEUE_URL"
    )]
    pub powerup_queue_url: Option<String>,
}

fn need(value: &Option<String>, var: &str, flag: &str) -> anyhow::Result<String> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v.clone()),
        _ => bail!("missing setting {var} (flag --{flag})"),
    }
}

/// Settings of `simulate`.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// The players.
    #[command(flatten)]
    pub players: PlayerArgs,
    /// The queues.
    #[command(flatten)]
    pub queues: QueueArgs,
    /// Send one add-user message per player, with a fake push token (fake-fcm-token-<uuid>,
    /// stable per name).
    #[arg(long)]
    pub register: bool,
    /// Play the current round: press at random moments of its window (some late, some twice,
    /// some not at all) and buy powerups.
    #[arg(long)]
    pub press: bool,
    /// Enqueue N press messages as fast as possible (cycling through the players), for load
    /// tests.
    #[arg(long, value_name = "N")]
    pub burst: Option<usize>,
    /// The round to play: the JSON line `outgoing-handler open-round` printed, a file holding
    /// it, or `-` to read it from stdin. Without it, --press waits until the fetch API shows an
    /// open round.
    #[arg(long, value_name = "JSON|FILE|-")]
    pub round_json: Option<String>,
    /// Longest wait for the round (on stdin or from the fetch API), seconds.
    #[arg(long, default_value_t = 300)]
    pub round_timeout_secs: u64,
    /// The fetch API (to wait for a round when --round-json is not given).
    #[command(flatten)]
    pub fetch: FetchArgs,
    /// RNG seed of the round's schedule (default: random, printed so that a run can be replayed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// On-time presses fall in this first fraction of the window (0 < spread <= 1).
    #[arg(long, default_value_t = 0.8)]
    pub spread: f64,
    /// Share of players who press only after the window.
    #[arg(long, default_value_t = 0.1)]
    pub late: f64,
    /// Late presses fall up to this many seconds after the close (plus the margin).
    #[arg(long, default_value_t = 5.0)]
    pub late_by_secs: f64,
    /// Share of the pressing players who press twice.
    #[arg(long, default_value_t = 0.1)]
    pub twice: f64,
    /// Share of players who do not press.
    #[arg(long, default_value_t = 0.05)]
    pub absent: f64,
    /// Share of players who buy a powerup during the round.
    #[arg(long, default_value_t = 0.05)]
    pub powerups: f64,
    /// Safety gap kept around the close so that latency never changes which side a press is
    /// on, ms (default: a tenth of the window, 200 ms to 1 s).
    #[arg(long)]
    pub margin_ms: Option<i64>,
    /// SendMessageBatch calls in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,
    /// Also write what was sent as JSON to this file (read by `bp-dev summary`).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

/// Settings of `summary`.
#[derive(Debug, Clone, Args)]
pub struct SummaryArgs {
    /// The fetch API.
    #[command(flatten)]
    pub fetch: FetchArgs,
    /// The report `simulate --press --report FILE` wrote (without it: the leaderboard only).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// How many players to show with GET /fetch/self.
    #[arg(long, default_value_t = 6)]
    pub show: usize,
}

/// Settings of `wait-registered`.
#[derive(Debug, Clone, Args)]
pub struct WaitRegisteredArgs {
    /// The players.
    #[command(flatten)]
    pub players: PlayerArgs,
    /// The fetch API.
    #[command(flatten)]
    pub fetch: FetchArgs,
    /// Longest wait, seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
}

/// Settings of `wait-drained`.
#[derive(Debug, Clone, Args)]
pub struct WaitDrainedArgs {
    /// The queues.
    #[command(flatten)]
    pub queues: QueueArgs,
    /// URL of the timestamp queue (watched too when given).
    #[arg(
        long,
        env = "BUTTONPARTY_TIMESTAMP_QUEUE_URL",
        value_name = "BUTTONPARTY_TIMESTAMP_QUEUE_URL"
    )]
    pub timestamp_queue_url: Option<String>,
    /// Longest wait, seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
    /// Consecutive empty polls (one second apart) that count as drained.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=60))]
    pub settle: u32,
}

/// Settings of `wait-fetch-api`.
#[derive(Debug, Clone, Args)]
pub struct WaitFetchArgs {
    /// The fetch API.
    #[command(flatten)]
    pub fetch: FetchArgs,
    /// Longest wait, seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout_secs: u64,
}

/// Runs a subcommand.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Simulate(args) => simulate(*args, cli.progress).await,
        Command::Summary(args) => summary_cmd(args).await,
        Command::WaitRegistered(args) => wait_registered(args, cli.progress).await,
        Command::WaitDrained(args) => wait_drained_cmd(args, cli.progress).await,
        Command::Bench(args) => crate::bench::run(*args, cli.progress).await,
        Command::Demo(args) => crate::demo::run(*args, cli.progress).await,
        Command::DemoSetup(args) => crate::demo_setup::run(args).await,
        Command::Capacity(args) => crate::capacity::run(*args),
        Command::WaitFetchApi(args) => {
            let fetch = FetchClient::new(&args.fetch.fetch_url)?;
            fetch
                .wait_ready(Duration::from_secs(args.timeout_secs))
                .await?;
            eprintln!("bp-dev: the fetch API answers at {}", fetch.base());
            Ok(())
        }
    }
}

async fn simulate(args: SimulateArgs, progress: ProgressMode) -> anyhow::Result<()> {
    if !args.register && !args.press && args.burst.is_none() {
        bail!("nothing to do: give --register, --press and/or --burst N");
    }
    let players = args.players.players()?;
    // Settings first, so that nothing is sent when one is wrong.
    let add_user_url = args
        .register
        .then(|| {
            need(
                &args.queues.add_user_queue_url,
                "BUTTONPARTY_ADD_USER_QUEUE_URL",
                "add-user-queue-url",
            )
        })
        .transpose()?;
    let press_url = (args.press || args.burst.is_some())
        .then(|| {
            need(
                &args.queues.press_queue_url,
                "BUTTONPARTY_PRESS_QUEUE_URL",
                "press-queue-url",
            )
        })
        .transpose()?;
    let powerup_url = args
        .press
        .then(|| {
            need(
                &args.queues.powerup_queue_url,
                "BUTTONPARTY_POWERUP_QUEUE_URL",
                "powerup-queue-url",
            )
        })
        .transpose()?;
    if !(args.late_by_secs > 0.0 && args.late_by_secs.is_finite()) {
        bail!("--late-by-secs must be positive");
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut settings = PlanSettings {
        players: players.len(),
        seed,
        window_ms: 60_000,
        margin_ms: 0,
        spread: args.spread,
        late_share: args.late,
        late_by_ms: (args.late_by_secs * 1000.0).round() as i64,
        absent_share: args.absent,
        duplicate_share: args.twice,
        powerup_share: args.powerups,
        request_id_prefix: String::new(),
    };
    settings.margin_ms = args
        .margin_ms
        .unwrap_or_else(|| default_margin_ms(settings.window_ms));
    if args.press {
        settings.validate().map_err(|e| anyhow::anyhow!(e))?;
    }

    let sdk = buttonparty::aws::sdk_config().await;
    let sim = Simulator {
        sqs: aws_sdk_sqs::Client::new(&sdk),
        players: players.clone(),
        send: SendOptions {
            concurrency: args.concurrency as usize,
            ..SendOptions::default()
        },
        progress,
    };
    let mut report = Report {
        prefix: players.prefix().to_owned(),
        players: players.len(),
        seed,
        ..Report::default()
    };

    let mut failed = false;
    if let Some(url) = &add_user_url {
        let stats = sim.register(url).await;
        failed |= stats.failed > 0;
        report.register = Some(stats);
    }
    if let (Some(press_url), Some(powerup_url)) = (&press_url, &powerup_url) {
        let round = match &args.round_json {
            Some(src) => load_round(src, Duration::from_secs(args.round_timeout_secs)).await?,
            None => {
                let fetch = FetchClient::new(&args.fetch.fetch_url)?;
                let p = Progress::new("round", 0, progress);
                let r = wait_for_open_round(
                    &fetch,
                    &players.name(0),
                    Duration::from_secs(args.round_timeout_secs),
                    &p,
                )
                .await?;
                p.finish(format!("round {} is open", r.round_id));
                r
            }
        };
        let settings = round_settings(&settings, &round, args.margin_ms)?;
        let now = now_ms();
        if now > round.closes_at_ms {
            bail!(
                "round {} closed {:.1} s ago: open a new one (outgoing-handler open-round)",
                round.round_id,
                (now - round.closes_at_ms) as f64 / 1000.0
            );
        }
        let plan = plan(&settings);
        let r = sim
            .play_round(press_url, powerup_url, &round, &settings, &plan)
            .await;
        failed |= r.presses_failed + r.powerups_failed > 0;
        report.round = Some(r);
    }
    if let (Some(n), Some(url)) = (args.burst, &press_url) {
        let stats = sim.burst(url, n).await;
        failed |= stats.failed > 0;
        report.burst = Some(stats);
    }

    print!("{}", render_report(&report));
    if args.seed.is_none() && args.press {
        println!("  (replay this schedule with --seed {seed})");
    }
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&report).context("encoding the report")?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("writing the report to {}", path.display()))?;
    }
    if failed {
        bail!("some messages could not be sent (see above)");
    }
    Ok(())
}

/// The plan settings for a given round: its window, a margin that fits it, request ids unique to
/// it.
fn round_settings(
    base: &PlanSettings,
    round: &RoundInfo,
    margin_ms: Option<i64>,
) -> anyhow::Result<PlanSettings> {
    let mut s = base.clone();
    s.window_ms = round.length_ms();
    s.margin_ms = margin_ms.unwrap_or_else(|| default_margin_ms(s.window_ms));
    s.request_id_prefix = format!("sim-{}", round.round_id);
    s.validate()
        .map_err(|e| anyhow::anyhow!("round {}: {e}", round.round_id))?;
    Ok(s)
}

async fn summary_cmd(args: SummaryArgs) -> anyhow::Result<()> {
    let report = match &args.report {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the report {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a simulate report", path.display()))?
        }
        None => Report::default(),
    };
    let fetch = FetchClient::new(&args.fetch.fetch_url)?;
    let data = summary::gather(&fetch, report, args.show).await?;
    print!("{}", summary::render(&data));
    Ok(())
}

async fn wait_registered(args: WaitRegisteredArgs, mode: ProgressMode) -> anyhow::Result<()> {
    let players = args.players.players()?;
    let fetch = FetchClient::new(&args.fetch.fetch_url)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_secs);
    let progress = Progress::new("registered", players.len() as u64, mode);
    let mut missing: Vec<String> = players.names().collect();
    loop {
        let checks: Vec<(String, anyhow::Result<bool>)> = futures::stream::iter(missing)
            .map(|name| {
                let fetch = &fetch;
                async move {
                    let known = fetch.player(&name).await.map(|v| v.is_some());
                    (name, known)
                }
            })
            .buffered(16)
            .collect()
            .await;
        let mut last_error = None;
        missing = Vec::new();
        for (name, known) in checks {
            match known {
                Ok(true) => progress.inc(1),
                Ok(false) => missing.push(name),
                Err(e) => {
                    last_error = Some(e);
                    missing.push(name);
                }
            }
        }
        if missing.is_empty() {
            progress.finish("all registered");
            return Ok(());
        }
        progress.set_message(format!(
            "waiting for {} (e.g. {})",
            missing.len(),
            missing[0]
        ));
        if tokio::time::Instant::now() >= deadline {
            let why = last_error.map_or(String::new(), |e| format!("; last error: {e:#}"));
            bail!(
                "{} of {} players not registered within {} s (e.g. {}){why}: is the incoming handler running?",
                missing.len(),
                players.len(),
                args.timeout_secs,
                missing[0]
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn wait_drained_cmd(args: WaitDrainedArgs, mode: ProgressMode) -> anyhow::Result<()> {
    let mut queues = Vec::new();
    for (name, url) in [
        ("add-user", &args.queues.add_user_queue_url),
        ("press", &args.queues.press_queue_url),
        ("powerup", &args.queues.powerup_queue_url),
        ("timestamp", &args.timestamp_queue_url),
    ] {
        if let Some(url) = url.as_ref().filter(|u| !u.is_empty()) {
            queues.push(NamedQueue {
                name: name.to_owned(),
                url: url.clone(),
            });
        }
    }
    if queues.is_empty() {
        bail!("no queue to watch: set BUTTONPARTY_*_QUEUE_URL (or the --*-queue-url flags)");
    }
    let sdk = buttonparty::aws::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let progress = Progress::new("drain", 0, mode);
    wait_drained(
        &sqs,
        &queues,
        Duration::from_secs(args.timeout_secs),
        args.settle,
        &progress,
    )
    .await?;
    progress.finish("queues empty");
    // Malformed input lands in the dead-letter queues: say so when there is any.
    for q in &queues {
        if let Ok(Some(dlq)) = crate::queues::dead_letter_queue(&sqs, &q.url).await
            && let Ok(d) = crate::queues::depth(&sqs, &dlq).await
            && d.total() > 0
        {
            eprintln!(
                "bp-dev: note: the {} dead-letter queue holds {} messages (malformed input, from any run)",
                q.name,
                d.total()
            );
        }
    }
    Ok(())
}
