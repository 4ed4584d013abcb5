//! `bp-dev bench` (issue 7): one run that measures the incoming handler against the limits of
//! its machine, on the local stack, on resources of its own (queues, topic, databases: the dev
//! stack's are never touched), and prints a table and one JSON line.
//!
//! - a. queue ceiling — a bare drainer with the handler's receive concurrency over N presses;
//! - b. database ceiling — the same N scoring writes as plain multi-row upserts, 500 per
//!   transaction;
//! - c. the release `incoming-handler run` over the same N presses, from its start until every
//!   press is in the ledger: presses/s, CPU seconds, peak RSS, statements per press;
//! - d. round opening (`outgoing-handler open-round` → round recorded and a press in it scored)
//!   with 1,000 and (`--million`) 1,000,000 registered players;
//! - e. (`--million`) `GET /fetch/lb` and `GET /fetch/self` latency at 1,000,000 players;
//! - c2, c3 and r ([`crate::bench_order`]): the handler restarted behind a backlog, the burst with
//!   10 % of its presses out of order, and a burst of registrations against a bare client.
//!
//! `scripts/bench` brings the dev stack up, builds the release binaries and runs this. Keep the
//! machine quiet meanwhile: every figure is a share of the same two cores, and the statement
//! count is the server-wide `Questions` counter.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::bench_env::{
    BenchDb, HandlerQueues, Resources, insert_players, insert_round, ranked_player, wait_flushed,
};
use crate::bench_parts::{
    EndToEnd, HANDLER_READY, NOT_INHERITED, OpeningSetup, count_rows, database_ceiling,
    enqueue_presses, handler_end_to_end, handler_env, open_round_now, queue_ceiling, read_latency,
    round_opening, wait_empty, wait_fetch_ready,
};
use crate::bench_proc::Child;
use crate::bench_report::{Figures, RoundOpening};
use crate::progress::{Progress, ProgressMode};
use crate::send::now_ms;

/// Settings of `bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Presses in each of a, b and c.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(100..=10_000_000))]
    pub n: u64,
    /// Also run the large parts: d with --large-players registered players, and e.
    #[arg(long)]
    pub million: bool,
    /// Registered players of the large d and of e.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1000..=100_000_000))]
    pub large_players: u64,
    /// Registered players of the small d.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=100_000_000))]
    pub small_players: u64,
    /// Timed rounds per size in d (after one warm-up round); the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub trials: u32,
    /// Sequential requests per route in e.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(10..=1_000_000))]
    pub requests: u64,
    /// Press receivers: the drainer's in a and the handler's in c and d.
    #[arg(
        long,
        env = "BUTTONPARTY_PRESS_RECEIVERS",
        value_name = "BUTTONPARTY_PRESS_RECEIVERS",
        default_value_t = 8,
        value_parser = clap::value_parser!(u32).range(1..=64)
    )]
    pub receivers: u32,
    /// Directory of the release binaries incoming-handler, outgoing-handler and fetch-api.
    #[arg(long, default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// The MariaDB server, as its admin user without a database (the run creates and drops
    /// databases of its own there).
    #[arg(
        long,
        env = "BUTTONPARTY_TEST_DATABASE_URL",
        value_name = "BUTTONPARTY_TEST_DATABASE_URL",
        hide_env_values = true
    )]
    pub admin_database_url: Option<String>,
    /// Also write the JSON line to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Longest wait, before each timed part, for the machine to be quiet (other processes
    /// using under 15% of its CPU); after it the part runs anyway, with a warning.
    #[arg(long, default_value_t = 300)]
    pub quiet_wait_secs: u64,
    /// Registrations in the registration burst (r).
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(10..=1_000_000))]
    pub registrations: u64,
    /// Skip c2, c3 and r.
    #[arg(long)]
    pub no_disorder: bool,
    /// Profile the handler during c with `perf record` (CPU-clock samples, DWARF call graphs)
    /// into FILE; read it with `perf report -i FILE`. The CPU figure then includes perf's
    /// own cost in the handler (unwinding), so take the figures from a run without it.
    #[arg(long, value_name = "FILE")]
    pub perf_record: Option<PathBuf>,
}

struct Bins {
    incoming: PathBuf,
    outgoing: PathBuf,
    fetch: PathBuf,
}

fn bins(dir: &Path, million: bool) -> anyhow::Result<Bins> {
    let b = Bins {
        incoming: dir.join("incoming-handler"),
        outgoing: dir.join("outgoing-handler"),
        fetch: dir.join("fetch-api"),
    };
    let mut need = vec![&b.incoming, &b.outgoing];
    if million {
        need.push(&b.fetch);
    }
    for p in need {
        if !p.is_file() {
            bail!(
                "{} not found: build the release binaries first (scripts/bench does)",
                p.display()
            );
        }
    }
    Ok(b)
}

/// Runs the benchmark and prints the table and the JSON line.
pub async fn run(args: BenchArgs, mode: ProgressMode) -> anyhow::Result<()> {
    let bins = bins(&args.bin_dir, args.million)?;
    let admin = args
        .admin_database_url
        .clone()
        .filter(|u| !u.trim().is_empty())
        .context("missing setting BUTTONPARTY_TEST_DATABASE_URL (flag --admin-database-url): run through scripts/bench")?;
    if std::env::var("AWS_ENDPOINT_URL").map_or(true, |v| v.is_empty()) {
        bail!(
            "AWS_ENDPOINT_URL is not set: the benchmark runs on the local stack only (scripts/bench sets it)"
        );
    }
    let sdk = buttonparty::aws::sdk_config().await;
    let res = Resources::new(
        aws_sdk_sqs::Client::new(&sdk),
        aws_sdk_sns::Client::new(&sdk),
        &admin,
    );
    eprintln!(
        "bench: run {}: N = {}, {} receivers{}",
        res.run_id,
        args.n,
        args.receivers,
        if args.million {
            format!(", large parts at {} players", args.large_players)
        } else {
            String::new()
        }
    );
    let result = tokio::select! {
        r = parts(&args, &bins, &res, mode) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    eprintln!("bench: removing the run's queues, topic and databases");
    res.cleanup().await;
    let figures = result?;
    println!();
    print!("{}", figures.table());
    println!();
    let line = figures.json_line();
    println!("{line}");
    if let Some(path) = &args.json {
        std::fs::write(path, format!("{line}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn parts(
    args: &BenchArgs,
    bins: &Bins,
    res: &Resources,
    mode: ProgressMode,
) -> anyhow::Result<Figures> {
    let n = args.n;
    let mut f = Figures {
        n,
        receivers: args.receivers,
        ..Figures::default()
    };

    // Set-up, untimed: queues, topic, the databases of b and c, the presses of a and c.
    step("set-up: queues, topic, databases");
    let queues = res.handler_queues().await?;
    let drain_url = res.queue("drain").await?;
    let (topic, app) = res.topic_and_app().await?;
    let (round_id, opens_at, closes_at) = open_round_now(&res.run_id);
    let db_b = res.database("b").await?;
    let db_c = res.database("c").await?;
    for db in [&db_b, &db_c] {
        insert_players(&db.pool, n, |_| (0, 0, None), |_| {}).await?;
        insert_round(&db.pool, &round_id, opens_at, closes_at).await?;
    }
    step(&format!(
        "set-up: enqueuing {n} presses for a, then {n} for c"
    ));
    enqueue_presses(&res.sqs, &drain_url, n, mode).await?;
    enqueue_presses(&res.sqs, &queues.press, n, mode).await?;

    step("a. queue ceiling");
    wait_quiet(Duration::from_secs(args.quiet_wait_secs)).await?;
    f.a_runs
        .push(queue_ceiling(&res.sqs, &drain_url, n, args.receivers, mode).await?);

    step("b. database ceiling");
    wait_quiet(Duration::from_secs(args.quiet_wait_secs)).await?;
    f.b_secs = database_ceiling(&db_b, n, &round_id, opens_at).await?;
    f.b_per_sec = n as f64 / f.b_secs;
    res.drop_database(db_b).await;

    step("c. incoming handler end to end");
    wait_quiet(Duration::from_secs(args.quiet_wait_secs)).await?;
    let mut env = handler_env(&queues, &topic, &app, &db_c);
    env.push((
        "BUTTONPARTY_PRESS_RECEIVERS".into(),
        args.receivers.to_string(),
    ));
    f.c = handler_end_to_end(EndToEnd {
        handler: &bins.incoming,
        env: &env,
        db: &db_c,
        admin_url: &res.admin_url,
        round_opens_at: opens_at,
        n,
        mode,
        perf_record: args.perf_record.as_deref(),
    })
    .await?;
    let scored = count_rows(&db_c.pool, "scores").await?;
    if scored as u64 != n {
        bail!("c: {scored} ledger rows for {n} presses");
    }
    wait_empty(&res.sqs, &queues.press, Duration::from_secs(30))
        .await
        .context("c: the handler left presses in the queue")?;
    res.drop_database(db_c).await;

    step(&format!(
        "a. queue ceiling, again after c: enqueuing {n} presses"
    ));
    enqueue_presses(&res.sqs, &drain_url, n, mode).await?;
    wait_quiet(Duration::from_secs(args.quiet_wait_secs)).await?;
    f.a_runs
        .push(queue_ceiling(&res.sqs, &drain_url, n, args.receivers, mode).await?);

    if !args.no_disorder {
        disorder(args, bins, res, &topic, &app, mode, &mut f).await?;
    }

    step("d. round opening");
    let state_dir = res.state_dir()?;
    let outgoing_env: Vec<(String, String)> = [
        ("BUTTONPARTY_TIMESTAMP_QUEUE_URL", queues.timestamp.as_str()),
        ("BUTTONPARTY_TOPIC_ARN", &topic),
        ("BUTTONPARTY_STATE_DIR", &state_dir.to_string_lossy()),
        ("BUTTONPARTY_LOG", "warn"),
        ("BUTTONPARTY_LOG_FORMAT", "text"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let setup = OpeningSetup {
        outgoing: &bins.outgoing,
        outgoing_env,
        press_url: &queues.press,
        trials: args.trials,
    };
    let ctx = Ctx {
        res,
        bins,
        queues: &queues,
        topic: &topic,
        app: &app,
        receivers: args.receivers,
        mode,
        quiet_wait: Duration::from_secs(args.quiet_wait_secs),
    };
    let (small, db) = ctx.opening(&setup, args.small_players).await?;
    res.drop_database(db).await;
    f.d_small = Some(small);

    if args.million {
        let (large, db) = ctx.opening(&setup, args.large_players).await?;
        f.d_large = Some(large);
        step(&format!(
            "e. reads at {} players: {} requests per route",
            args.large_players, args.requests
        ));
        let (lb, me, ranked) = ctx.reads(&db, args.large_players, args.requests).await?;
        f.e_lb = Some(lb);
        f.e_self = Some(me);
        f.e_self_has_rank = Some(ranked);
        res.drop_database(db).await;
    }
    Ok(f)
}

/// c2, c3 and r, each on queues and a database of its own.
async fn disorder(
    args: &BenchArgs,
    bins: &Bins,
    res: &Resources,
    topic: &str,
    app: &str,
    mode: ProgressMode,
    f: &mut Figures,
) -> anyhow::Result<()> {
    use crate::bench_order::{
        out_of_order, registrations_bare, registrations_through_handler, restart_with_backlog,
    };
    let env_for = |queues: &HandlerQueues, db: &BenchDb| {
        let mut env = handler_env(queues, topic, app, db);
        env.push((
            "BUTTONPARTY_PRESS_RECEIVERS".into(),
            args.receivers.to_string(),
        ));
        env
    };
    step("c2. restart with a backlog: 10,000 presses (5,000 players, twice) behind their round");
    let queues = res.handler_queues_for("c2").await?;
    let db = res.database("c2").await?;
    wait_quiet(Duration::from_secs(args.quiet_wait_secs)).await?;
    f.c_restart = Some(
        restart_with_backlog(
            &res.sqs,
            &bins.incoming,
            &env_for(&queues, &db),
            &queues,
            &db,
            5_000,
            mode,
        )
        .await?,
    );
    res.drop_database(db).await;

    step("c3. the burst with 10 % of its presses out of order");
    let queues = res.handler_queues_for("c3").await?;
    let db = res.database("c3").await?;
    wait_quiet(Duration::from_secs(args.quiet_wait_secs)).await?;
    f.c_disorder = Some(
        out_of_order(
            &res.sqs,
            &bins.incoming,
            &env_for(&queues, &db),
            &queues,
            &db,
            args.n,
            f.c.per_sec,
            mode,
        )
        .await?,
    );
    res.drop_database(db).await;

    let n = args.registrations;
    step(&format!(
        "r. {n} registrations: the handler, then a bare client"
    ));
    let receivers = 4;
    let concurrency = 10;
    let queues = res.handler_queues_for("r").await?;
    let db = res.database("r").await?;
    wait_quiet(Duration::from_secs(args.quiet_wait_secs)).await?;
    let handler = registrations_through_handler(
        &res.sqs,
        &bins.incoming,
        &env_for(&queues, &db),
        &queues,
        &db,
        n,
        mode,
    )
    .await?;
    res.drop_database(db).await;
    let bare_url = res.queue("r-bare").await?;
    wait_quiet(Duration::from_secs(args.quiet_wait_secs)).await?;
    let bare = registrations_bare(
        &res.sqs,
        &res.sns,
        &bare_url,
        topic,
        app,
        n,
        receivers,
        concurrency,
        mode,
    )
    .await?;
    f.r = Some(crate::bench_order::RegistrationRun {
        registrations: n,
        handler_per_sec: handler,
        bare_per_sec: bare,
        receivers,
        concurrency,
    });
    Ok(())
}

fn step(what: &str) {
    eprintln!("bench: {what}");
}

/// Machine busy share (all cores) above which a timed part waits: the dev stack idles at a few
/// percent.
const QUIET_BUSY: f64 = 0.15;

/// Before a timed part: waits (up to `patience`) until the machine is quiet, i.e. less than
/// [`QUIET_BUSY`] of its CPU time was busy over a second, so that other work does not take the
/// cores the figures are about. Returns the last busy share seen.
async fn wait_quiet(patience: Duration) -> anyhow::Result<f64> {
    let deadline = Instant::now() + patience;
    let mut warned = false;
    loop {
        let busy = crate::bench_proc::busy_share(Duration::from_secs(1)).await?;
        if busy < QUIET_BUSY {
            return Ok(busy);
        }
        if Instant::now() >= deadline {
            eprintln!(
                "bench: warning: the machine is still {:.0}% busy with other work; measuring anyway (figures will be low)",
                busy * 100.0
            );
            return Ok(busy);
        }
        if !warned {
            eprintln!(
                "bench: the machine is {:.0}% busy with other work; waiting up to {} s for it to be quiet",
                busy * 100.0,
                patience.as_secs()
            );
            warned = true;
        }
    }
}

struct Ctx<'a> {
    res: &'a Resources,
    bins: &'a Bins,
    queues: &'a HandlerQueues,
    topic: &'a str,
    app: &'a str,
    receivers: u32,
    mode: ProgressMode,
    quiet_wait: Duration,
}

impl Ctx<'_> {
    /// A database with `players` ranked players (inserted straight, multi-row), a handler on
    /// it, and d's trials. Returns the figures and the database (for e).
    async fn opening(
        &self,
        setup: &OpeningSetup<'_>,
        players: u64,
    ) -> anyhow::Result<(RoundOpening, BenchDb)> {
        let db = self.res.database(&format!("d{players}")).await?;
        let history = now_ms() - 2 * 3_600_000;
        insert_round(
            &db.pool,
            &format!("{history}-history"),
            history,
            history + 60_000,
        )
        .await?;
        let t = Instant::now();
        let progress = Progress::new("players", players, self.mode);
        insert_players(
            &db.pool,
            players,
            |i| ranked_player(i, history),
            |done| progress.inc(done.saturating_sub(progress.position())),
        )
        .await?;
        sqlx::query("ANALYZE TABLE users")
            .execute(&db.pool)
            .await
            .context("ANALYZE TABLE users")?;
        progress.finish(format!(
            "{players} players inserted in {:.1} s",
            t.elapsed().as_secs_f64()
        ));
        let waited = wait_flushed(&db.pool, Duration::from_secs(180)).await?;
        if waited >= 1.0 {
            eprintln!("bench: waited {waited:.0} s for the database to write back the set-up");
        }
        for url in [&self.queues.press, &self.queues.timestamp] {
            wait_empty(&self.res.sqs, url, Duration::from_secs(30)).await?;
        }
        let mut env = handler_env(self.queues, self.topic, self.app, &db);
        env.push((
            "BUTTONPARTY_PRESS_RECEIVERS".into(),
            self.receivers.to_string(),
        ));
        let mut handler = Child::spawn(
            "incoming-handler",
            &self.bins.incoming,
            &["run"],
            &env,
            NOT_INHERITED,
            Some(HANDLER_READY),
        )?;
        handler.wait_ready(Duration::from_secs(60)).await?;
        wait_quiet(self.quiet_wait).await?;
        step(&format!(
            "d. {} rounds opened with {players} players registered",
            setup.trials + 1
        ));
        let r = round_opening(&self.res.sqs, setup, &mut handler, &db, players).await;
        let status = handler.terminate(Duration::from_secs(60)).await;
        let r = r?;
        let status = status?;
        if !status.success() {
            bail!("the handler exited with {status}");
        }
        eprintln!(
            "bench: d at {players} players: median {:.0} ms ({:?})",
            r.median_ms, r.trials_ms
        );
        Ok((r, db))
    }

    /// e on `db`.
    async fn reads(
        &self,
        db: &BenchDb,
        players: u64,
        requests: u64,
    ) -> anyhow::Result<(
        crate::bench_report::Latency,
        crate::bench_report::Latency,
        bool,
    )> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let listen = format!("127.0.0.1:{port}");
        let env: Vec<(String, String)> = [
            ("BUTTONPARTY_DATABASE_URL", db.url.as_str()),
            ("BUTTONPARTY_LOG", "warn"),
            ("BUTTONPARTY_LOG_FORMAT", "json"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let mut server = Child::spawn(
            "fetch-api",
            &self.bins.fetch,
            &["serve", "--listen", &listen],
            &env,
            NOT_INHERITED,
            None,
        )?;
        let base = format!("http://{listen}");
        wait_fetch_ready(&base, &mut server, Duration::from_secs(30)).await?;
        wait_quiet(self.quiet_wait).await?;
        let r = read_latency(&base, players, requests as usize).await;
        let _ = server.terminate(Duration::from_secs(10)).await;
        r
    }
}
