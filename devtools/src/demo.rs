//! `bp-dev demo`: the game played by simulated players through the real queues, round after
//! round, with delivery disorder on purpose, and checked against what the players did.
//!
//! Each round: `outgoing-handler open-round` opens it (its JSON is the round); every player
//! decides from their own history what to send ([`crate::demo_plan`]) and sends it at its moment,
//! exactly as API Gateway enqueues the app's requests; with disorder, some messages carry an SQS
//! `DelaySeconds`, a consumer that "crashes" ([`crate::chaos`]) holds a few and lets SQS deliver
//! them again, one round message reaches the handler late and a few registrations too. Once the
//! queues are drained, every player is read back with `GET /fetch/self` and the leaderboard with
//! `GET /fetch/lb`, and compared with the fold of what the players sent, in send order
//! ([`crate::demo_check`]). One line per round; at the end the top 10, a few players' histories,
//! what the queues did, what the backend counted, and the verdict.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use buttonparty::fold::{self, PlayerOutcome, Verdict};
use buttonparty::rules::{Millis, RejectReason};
use clap::Args;
use futures::StreamExt as _;
use tokio::task::JoinSet;

use crate::chaos::{Chaos, SHORT_HOLD_MS};
use crate::cli::{FetchArgs, QueueArgs};
use crate::demo_check::{self as check, Expected, SentKind, SentMsg};
use crate::demo_plan::{self as plan, Act, Disorder, Knowledge, Memory, Persona, Planned, Timing};
use crate::demo_report::{self as report, RoundRow};
use crate::fetch::{FetchClient, LeaderboardEntry, SelfView};
use crate::handler_stats::{self, HandlerStats};
use crate::players::{Players, add_user_body, fake_token, powerup_body, press_body};
use crate::progress::{Progress, ProgressMode};
use crate::queues::depth;
use crate::round::{RoundInfo, parse_round_json};
use crate::send::{EntryOutcome, MAX_BATCH, now_ms, send_batch_delayed};

/// Settings of `demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Number of players.
    #[arg(long, default_value_t = 300)]
    pub players: usize,
    /// Name prefix: players are <prefix>0001, <prefix>0002, ...
    #[arg(long, default_value = "demo-")]
    pub prefix: String,
    /// Rounds to play.
    #[arg(long, default_value_t = 12)]
    pub rounds: usize,
    /// Seed of the players' behaviour.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Delivery disorder: `some` (delayed, redelivered and late messages) or `none`.
    #[arg(long, value_enum, default_value_t = Disorder::Some)]
    pub disorder: Disorder,
    /// The outgoing handler's binary: rounds are opened with `<it> open-round`.
    #[arg(long, value_name = "PATH")]
    pub outgoing_handler: PathBuf,
    /// Where `open-round` logs go (appended).
    #[arg(long, value_name = "FILE")]
    pub open_round_log: Option<PathBuf>,
    /// The incoming handler's log: its `stats` lines are summed at the end.
    #[arg(long, value_name = "FILE")]
    pub handler_log: Option<PathBuf>,
    /// Players whose history is shown at the end.
    #[arg(long, default_value_t = 6)]
    pub show: usize,
    /// Longest wait for the queues to drain after a round, seconds.
    #[arg(long, default_value_t = 90)]
    pub drain_timeout_secs: u64,
    /// Longest wait for a read to show what is expected, seconds (the handler may still be
    /// committing).
    #[arg(long, default_value_t = 10)]
    pub read_timeout_secs: u64,
    /// The queues.
    #[command(flatten)]
    pub queues: QueueArgs,
    /// URL of the timestamp queue.
    #[arg(
        long,
        env = "BUTTONPARTY_TIMESTAMP_QUEUE_URL",
        value_name = "BUTTONPARTY_TIMESTAMP_QUEUE_URL"
    )]
    pub timestamp_queue_url: Option<String>,
    /// A queue where the round message to be delivered late waits before it is sent on.
    #[arg(
        long,
        env = "BUTTONPARTY_DEMO_ROUND_HOLD_QUEUE_URL",
        value_name = "BUTTONPARTY_DEMO_ROUND_HOLD_QUEUE_URL"
    )]
    pub round_hold_queue_url: Option<String>,
    /// The fetch API.
    #[command(flatten)]
    pub fetch: FetchArgs,
}

/// The four player-facing queues and the round queues.
#[derive(Debug, Clone)]
struct Urls {
    add_user: String,
    press: String,
    powerup: String,
    timestamp: String,
    hold: Option<String>,
}

impl Urls {
    fn named(&self) -> [(&'static str, &str); 4] {
        [
            ("add-user", &self.add_user),
            ("press", &self.press),
            ("powerup", &self.powerup),
            ("timestamp", &self.timestamp),
        ]
    }
}

fn need(value: &Option<String>, var: &str) -> anyhow::Result<String> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v.clone()),
        _ => bail!("missing setting {var}"),
    }
}

/// Which queue a message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Q {
    AddUser,
    Press,
    Powerup,
}

/// A message to send at a moment of the round.
#[derive(Debug, Clone)]
struct Item {
    offset: Millis,
    queue: Q,
    body: String,
    delay_secs: i32,
    who: String,
    kind: SentKind,
}

/// A delayed round message (the round, how late).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LateRound {
    /// The round's number.
    pub round: usize,
    /// `DelaySeconds` of its message.
    pub delay_secs: i32,
}

/// The demo in progress.
struct Game {
    args: DemoArgs,
    sqs: aws_sdk_sqs::Client,
    fetch: FetchClient,
    chaos: Chaos,
    urls: Urls,
    names: Vec<String>,
    stranger: String,
    personas: Vec<Persona>,
    memory: Vec<Memory>,
    sent: Vec<SentMsg>,
    failed_sends: usize,
    rounds: Vec<RoundInfo>,
    late_round: Option<LateRound>,
    /// Reads after each round (index 0: round 1) and at the end (last).
    reads: Vec<BTreeMap<String, Option<SelfView>>>,
    leaderboards: Vec<Vec<LeaderboardEntry>>,
    rows: Vec<RoundRow>,
    /// (round number, 0 = the end; player or "leaderboard"; what differs).
    diffs: Vec<(usize, String, String)>,
    ambiguous: BTreeMap<String, String>,
}

/// Runs the demo; fails (after printing the differences) when the backend disagrees.
pub async fn run(args: DemoArgs, progress: ProgressMode) -> anyhow::Result<()> {
    if args.rounds == 0 || args.players == 0 {
        bail!("--rounds and --players must be at least 1");
    }
    let urls = Urls {
        add_user: need(
            &args.queues.add_user_queue_url,
            "BUTTONPARTY_ADD_USER_QUEUE_URL",
        )?,
        press: need(&args.queues.press_queue_url, "BUTTONPARTY_PRESS_QUEUE_URL")?,
        powerup: need(
            &args.queues.powerup_queue_url,
            "BUTTONPARTY_POWERUP_QUEUE_URL",
        )?,
        timestamp: need(&args.timestamp_queue_url, "BUTTONPARTY_TIMESTAMP_QUEUE_URL")?,
        hold: args.round_hold_queue_url.clone().filter(|u| !u.is_empty()),
    };
    let players = Players::new(args.prefix.clone(), args.players);
    let stranger = format!("{}stranger", args.prefix);
    for name in [players.name(args.players.max(1) - 1), stranger.clone()] {
        buttonparty::messages::Username::parse(name)
            .map_err(|e| anyhow::anyhow!("--prefix: {e}"))?;
    }
    let sdk = buttonparty::aws::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let late_round = (args.disorder.on() && urls.hold.is_some()).then(|| LateRound {
        round: args.rounds.min(3),
        delay_secs: 3,
    });
    let mut game = Game {
        fetch: FetchClient::new(&args.fetch.fetch_url)?,
        chaos: Chaos::new(sqs.clone()),
        sqs,
        urls,
        names: players.names().collect(),
        personas: plan::cast(args.players, args.seed, args.disorder),
        memory: vec![Memory::default(); args.players],
        stranger,
        sent: Vec::new(),
        failed_sends: 0,
        rounds: Vec::new(),
        late_round,
        reads: Vec::new(),
        leaderboards: Vec::new(),
        rows: Vec::new(),
        diffs: Vec::new(),
        ambiguous: BTreeMap::new(),
        args,
    };
    let releaser = game.chaos.spawn_releaser();
    let result = game.play(progress).await;
    releaser.abort();
    if let Err(e) = game.chaos.release_all().await {
        eprintln!("bp-dev: could not release held messages: {e:#}");
    }
    result
}

impl Game {
    async fn play(&mut self, progress: ProgressMode) -> anyhow::Result<()> {
        let a = &self.args;
        println!(
            "{} players, {} rounds, seed {}, disorder {}",
            a.players,
            a.rounds,
            a.seed,
            match a.disorder {
                Disorder::Some => "on (delayed, redelivered and late messages)",
                Disorder::None => "off",
            }
        );
        self.register(progress).await?;
        println!();
        print!("{}", report::row_header());
        for number in 1..=self.args.rounds {
            self.play_round(number).await?;
            print!("{}", report::row(self.rows.last().expect("a row")));
        }
        print!("{}", report::row_legend());
        println!();
        self.finish().await
    }

    /// Registers every player who registers before the first round, and waits until the fetch
    /// API knows them.
    async fn register(&mut self, progress: ProgressMode) -> anyhow::Result<()> {
        let early: Vec<usize> = (0..self.names.len())
            .filter(|&i| !self.personas[i].registers_late)
            .collect();
        let items: Vec<Item> = early
            .iter()
            .map(|&i| {
                let name = &self.names[i];
                Item {
                    offset: 0,
                    queue: Q::AddUser,
                    body: add_user_body(name, &fake_token(name)),
                    delay_secs: 0,
                    who: name.clone(),
                    kind: SentKind::Register,
                }
            })
            .collect();
        let p = Progress::new("register", items.len() as u64, progress);
        let sent = self.send_items(items, 0, Some(&p)).await;
        p.finish(format!("{} add-user messages sent", sent));
        let late = self.names.len() - early.len();
        let names: Vec<String> = early.iter().map(|&i| self.names[i].clone()).collect();
        let wait = Progress::new("registered", names.len() as u64, progress);
        let deadline = now_ms() + 180_000 + names.len() as i64 * 200;
        let mut missing = names;
        while !missing.is_empty() {
            let known = self.read(&missing).await?;
            missing.retain(|n| known.get(n).is_none_or(Option::is_none));
            wait.inc((known.len() - missing.len()) as u64);
            if missing.is_empty() {
                break;
            }
            if now_ms() > deadline {
                bail!(
                    "{} players not registered in time (e.g. {}): is the incoming handler running?",
                    missing.len(),
                    missing[0]
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        wait.finish("all registered");
        print!(
            "registered {} players through the add-user queue",
            early.len()
        );
        if late > 0 {
            print!(
                "; {late} more register as round 1 opens, their message delayed past their first press"
            );
        }
        println!();
        Ok(())
    }

    /// Sends the items (sorted by offset) each at `opens_at + offset`, batched per queue and
    /// delay, and records what SQS accepted. Returns the number accepted.
    async fn send_items(
        &mut self,
        mut items: Vec<Item>,
        round: usize,
        progress: Option<&Progress>,
    ) -> usize {
        items.sort_by_key(|i| i.offset);
        let opens_at = self.rounds.last().map_or(now_ms(), |r| r.opens_at_ms);
        let mut tasks: JoinSet<Vec<(usize, EntryOutcome)>> = JoinSet::new();
        let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
        // A player's next message goes out only once the call that took the previous one has
        // returned (a phone waits for its request too), in a later millisecond: so the order of
        // a player's messages is the order of their send intervals, whatever the latency.
        let busy: std::sync::Arc<std::sync::Mutex<HashMap<String, Option<Millis>>>> =
            std::sync::Arc::default();
        let mut next = 0;
        let mut waiting: Vec<usize> = Vec::new();
        while next < items.len() || !waiting.is_empty() {
            let now = now_ms();
            while next < items.len() && (round == 0 || opens_at + items[next].offset <= now) {
                waiting.push(next);
                next += 1;
            }
            let mut groups: BTreeMap<(Q, i32), Vec<usize>> = BTreeMap::new();
            {
                let mut busy = busy.lock().unwrap_or_else(|e| e.into_inner());
                waiting.retain(|&i| {
                    let who = &items[i].who;
                    let free = match busy.get(who) {
                        None => true,
                        Some(Some(done)) => now > *done,
                        Some(None) => false,
                    };
                    if free {
                        busy.insert(who.clone(), None);
                        groups
                            .entry((items[i].queue, items[i].delay_secs))
                            .or_default()
                            .push(i);
                    }
                    !free
                });
            }
            for ((queue, _), indices) in groups {
                let url = match queue {
                    Q::AddUser => self.urls.add_user.clone(),
                    Q::Press => self.urls.press.clone(),
                    Q::Powerup => self.urls.powerup.clone(),
                };
                for chunk in indices.chunks(MAX_BATCH) {
                    let entries: Vec<(String, i32)> = chunk
                        .iter()
                        .map(|&i| (items[i].body.clone(), items[i].delay_secs))
                        .collect();
                    let who: Vec<String> = chunk.iter().map(|&i| items[i].who.clone()).collect();
                    let chunk = chunk.to_vec();
                    let (sqs, url) = (self.sqs.clone(), url.clone());
                    let permit = limit.clone().acquire_owned().await.expect("open semaphore");
                    let progress = progress.cloned();
                    let busy = busy.clone();
                    tasks.spawn(async move {
                        let (out, _) = send_batch_delayed(&sqs, &url, &entries, 4).await;
                        drop(permit);
                        let done = out.iter().map(|o| o.after_ms).max().unwrap_or(0);
                        let mut busy = busy.lock().unwrap_or_else(|e| e.into_inner());
                        for w in who {
                            busy.insert(w, Some(done.max(now_ms())));
                        }
                        drop(busy);
                        if let Some(p) = progress {
                            p.inc(out.len() as u64);
                        }
                        chunk.into_iter().zip(out).collect()
                    });
                }
            }
            let until_next = items
                .get(next)
                .map_or(50, |i| (opens_at + i.offset - now_ms()).clamp(0, 50));
            let pause = if waiting.is_empty() {
                until_next
            } else {
                until_next.min(2)
            };
            if pause > 0 {
                tokio::time::sleep(Duration::from_millis(pause as u64)).await;
            } else {
                tokio::task::yield_now().await;
            }
        }
        let mut accepted = 0;
        while let Some(done) = tasks.join_next().await {
            for (i, o) in done.expect("send task") {
                let item = &items[i];
                match (o.ok, o.message_id) {
                    (true, Some(message_id)) => {
                        accepted += 1;
                        self.sent.push(SentMsg {
                            who: item.who.clone(),
                            round,
                            kind: item.kind.clone(),
                            delay_secs: item.delay_secs,
                            before: o.before_ms,
                            after: o.after_ms,
                            message_id,
                        });
                    }
                    _ => {
                        self.failed_sends += 1;
                        eprintln!(
                            "bp-dev: a message of {} could not be sent: {}",
                            item.who,
                            o.error.as_deref().unwrap_or("unknown error")
                        );
                    }
                }
            }
        }
        accepted
    }

    /// `outgoing-handler open-round`, its message sent to the holding queue when it is to be
    /// delivered late.
    async fn open_round(&self, hold: bool) -> anyhow::Result<RoundInfo> {
        let mut cmd = tokio::process::Command::new(&self.args.outgoing_handler);
        cmd.arg("open-round")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if hold {
            cmd.env(
                "BUTTONPARTY_TIMESTAMP_QUEUE_URL",
                self.urls.hold.as_deref().unwrap_or_default(),
            );
        }
        // `output` captures both streams; the log lines are appended to the log afterwards.
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .context("outgoing-handler open-round took more than 60 s")?
            .with_context(|| format!("running {}", self.args.outgoing_handler.display()))?;
        if let Some(path) = &self.args.open_round_log {
            use std::io::Write as _;
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            log.write_all(&out.stderr)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().last().unwrap_or("no output");
            bail!(
                "outgoing-handler open-round failed ({}): {last}",
                out.status
            );
        }
        let line = stdout
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .context("outgoing-handler open-round printed no round")?;
        parse_round_json(line)
    }

    /// Moves the held round message to the timestamp queue with a delay.
    async fn forward_late_round(&self, delay_secs: i32) -> anyhow::Result<()> {
        let hold = self.urls.hold.as_deref().context("no holding queue")?;
        let deadline = now_ms() + 20_000;
        loop {
            let resp = self
                .sqs
                .receive_message()
                .queue_url(hold)
                .max_number_of_messages(1)
                .wait_time_seconds(1)
                .send()
                .await
                .map_err(|e| anyhow::anyhow!(buttonparty::aws::error_text(&e)))?;
            if let Some(m) = resp.messages.unwrap_or_default().into_iter().next() {
                self.sqs
                    .send_message()
                    .queue_url(&self.urls.timestamp)
                    .message_body(m.body.unwrap_or_default())
                    .delay_seconds(delay_secs)
                    .send()
                    .await
                    .map_err(|e| anyhow::anyhow!(buttonparty::aws::error_text(&e)))
                    .context("sending the round message on")?;
                if let Some(r) = m.receipt_handle {
                    let _ = self
                        .sqs
                        .delete_message()
                        .queue_url(hold)
                        .receipt_handle(r)
                        .send()
                        .await;
                }
                return Ok(());
            }
            if now_ms() > deadline {
                bail!("the round message never reached the holding queue");
            }
        }
    }

    /// What each player knows of themself: the fold of everything they sent.
    fn own_fold(&self) -> BTreeMap<String, PlayerOutcome> {
        fold::fold_history(&check::messages(&self.sent, &self.rounds, &HashSet::new()))
    }

    /// The messages of round `number`.
    fn round_items(&mut self, number: usize, timing: Timing) -> Vec<Item> {
        let round = self.rounds.last().expect("the round is open").clone();
        let rounds = check::rules_rounds(&self.rounds);
        let own = self.own_fold();
        let request_prefix = format!("demo-{}", round.round_id);
        let ctx = plan::RoundCtx {
            number,
            total: self.args.rounds,
            opens_at: round.opens_at_ms,
            timing,
            rounds: &rounds,
            disorder: self.args.disorder,
            seed: self.args.seed,
            request_prefix: &request_prefix,
        };
        let mut items = Vec::new();
        for i in 0..self.names.len() {
            let name = &self.names[i];
            let know = own
                .get(name)
                .map_or_else(Knowledge::default, |o| Knowledge {
                    registered: o.registered,
                    player: check::player_of(o),
                });
            for p in plan::player_round(&ctx, i, &self.personas[i], &mut self.memory[i], &know) {
                items.push(item_of(name, &p));
            }
        }
        if number == 1 {
            // Someone who never registered presses; two messages are malformed.
            let mid = timing.length / 2;
            items.push(Item {
                offset: mid,
                queue: Q::Press,
                body: press_body(&self.stranger),
                delay_secs: 0,
                who: self.stranger.clone(),
                kind: SentKind::Press {
                    late: false,
                    second: false,
                },
            });
            let someone = self.names.first().cloned().unwrap_or_default();
            items.push(Item {
                offset: mid + 50,
                queue: Q::Press,
                body: serde_json::json!({ "user": someone }).to_string(),
                delay_secs: 0,
                who: someone.clone(),
                kind: SentKind::Malformed {
                    queue: "press".into(),
                },
            });
            items.push(Item {
                offset: mid + 100,
                queue: Q::Powerup,
                body: serde_json::json!({
                    "username": someone,
                    "powerUpType": "TELEPORT",
                    "quantity": 1,
                })
                .to_string(),
                delay_secs: 0,
                who: someone,
                kind: SentKind::Malformed {
                    queue: "powerup".into(),
                },
            });
        }
        items
    }

    async fn play_round(&mut self, number: usize) -> anyhow::Result<()> {
        let late = self.late_round.filter(|l| l.round == number);
        let round = self.open_round(late.is_some()).await?;
        if let Some(l) = late {
            self.forward_late_round(l.delay_secs).await?;
        }
        let timing = Timing::new(round.length_ms(), round.base_window_ms());
        timing
            .check()
            .map_err(|e| anyhow::anyhow!("round {}: {e}", round.round_id))?;
        // A message held across the previous round comes back 1.5 s into this one.
        self.chaos
            .release_at(number.saturating_sub(1), round.opens_at_ms + 1_500);
        self.rounds.push(round.clone());
        let items = self.round_items(number, timing);
        let buys = items.iter().any(|i| i.queue == Q::Powerup);
        // Held into the next round: preferably the only press of a player in this round, late
        // in the window, with nothing after it.
        let mut last_of: BTreeMap<&str, (usize, Millis, bool)> = BTreeMap::new();
        for i in &items {
            let e = last_of.entry(&i.who).or_insert((0, 0, false));
            if i.queue == Q::Press {
                e.0 += 1;
                e.1 = i.offset;
                e.2 = false;
            } else {
                e.2 = true;
            }
        }
        let across_candidates: HashSet<String> = last_of
            .into_iter()
            .filter(|(_, (presses, at, after))| {
                *presses == 1 && !after && *at >= timing.length / 2 && *at <= timing.on_time_end()
            })
            .map(|(who, _)| who.to_owned())
            .collect();

        // The crashing consumer, during the window.
        let mut chaos_tasks: JoinSet<anyhow::Result<usize>> = JoinSet::new();
        if self.args.disorder.on() {
            let o = round.opens_at_ms;
            let end = o + timing.on_time_end();
            let across = self.args.rounds >= 3 && number == self.args.rounds / 2;
            let short = Some(SHORT_HOLD_MS);
            let press = self.urls.press.clone();
            let powerup = self.urls.powerup.clone();
            type Plan = (&'static str, String, usize, Millis, Option<Millis>, bool);
            let plans: Vec<Plan> = [
                Some(("press", press.clone(), 2, o + 300, short, false)),
                across.then(|| ("press", press, 1, o + timing.length / 2, None, true)),
                buys.then(|| ("powerup", powerup, 1, o + 200, short, false)),
            ]
            .into_iter()
            .flatten()
            .collect();
            let candidates = std::sync::Arc::new(across_candidates);
            for (queue, url, n, from, hold, prefer) in plans {
                let chaos = self.chaos.clone();
                let candidates = candidates.clone();
                chaos_tasks.spawn(async move {
                    let wait = from - now_ms();
                    if wait > 0 {
                        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                    }
                    let prefer = prefer.then_some(&*candidates);
                    chaos.take(queue, &url, number, n, end, hold, prefer).await
                });
            }
        }
        self.send_items(items, number, None).await;
        while let Some(r) = chaos_tasks.join_next().await {
            r.context("chaos task")??;
        }
        // Everything sent; the short holds released.
        let end = round.opens_at_ms + timing.end();
        let releases = self
            .chaos
            .unreleased()
            .iter()
            .map(|h| h.release_at)
            .filter(|&t| t != Millis::MAX)
            .max()
            .unwrap_or(0);
        let until = end.max(releases + 100);
        let wait = until - now_ms();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        self.wait_drained().await?;
        self.read_and_compare(number).await?;
        let row = self.round_row(number);
        self.rows.push(row);
        Ok(())
    }

    /// Waits until no queue holds anything but the messages the crashing consumer still holds.
    async fn wait_drained(&self) -> anyhow::Result<()> {
        let deadline = now_ms() + self.args.drain_timeout_secs as i64 * 1000;
        let mut quiet = 0;
        loop {
            let held = self.chaos.unreleased();
            let mut left = Vec::new();
            for (name, url) in self.urls.named() {
                let d = depth(&self.sqs, url).await?;
                let mine = held.iter().filter(|h| h.queue == name).count() as u64;
                if d.visible + d.delayed > 0 || d.in_flight != mine {
                    left.push(format!(
                        "{name}: {} waiting, {} in flight",
                        d.visible + d.delayed,
                        d.in_flight.saturating_sub(mine)
                    ));
                }
            }
            if left.is_empty() {
                quiet += 1;
                if quiet >= 2 {
                    return Ok(());
                }
            } else {
                quiet = 0;
            }
            if now_ms() > deadline {
                bail!(
                    "the queues were not drained within {} s ({}): is the incoming handler running?",
                    self.args.drain_timeout_secs,
                    left.join("; ")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `GET /fetch/self` of each name.
    async fn read(&self, names: &[String]) -> anyhow::Result<BTreeMap<String, Option<SelfView>>> {
        let results: Vec<(String, anyhow::Result<Option<SelfView>>)> =
            futures::stream::iter(names.to_vec())
                .map(|n| async move {
                    let v = self.fetch.player(&n).await;
                    (n, v)
                })
                .buffer_unordered(16)
                .collect()
                .await;
        results
            .into_iter()
            .map(|(n, v)| v.map(|v| (n, v)))
            .collect()
    }

    /// Everyone the demo knows: the players and the stranger.
    fn everyone(&self) -> Vec<String> {
        let mut v = self.names.clone();
        v.push(self.stranger.clone());
        v
    }

    /// The expected reads now: the fold of everything delivered (all but what is still held).
    fn expected_now(&self, now: Millis) -> BTreeMap<String, Expected> {
        let held: HashSet<String> = self
            .chaos
            .unreleased()
            .into_iter()
            .map(|h| h.message_id)
            .collect();
        let outcomes = fold::fold_history(&check::messages(&self.sent, &self.rounds, &held));
        let mut views = check::expected_views(
            &outcomes,
            &check::rules_rounds(&self.rounds),
            &self.sent,
            now,
        );
        for n in self.everyone() {
            views.entry(n).or_default();
        }
        views
    }

    /// Reads every player and the leaderboard until they show what is expected (or the read
    /// timeout passes), and records the reads and any difference.
    async fn read_and_compare(&mut self, number: usize) -> anyhow::Result<()> {
        self.ambiguous = check::ambiguous(&self.sent, &self.rounds);
        let everyone = self.everyone();
        let mut reads = self.read(&everyone).await?;
        let mut lb = self.fetch.leaderboard().await?;
        let deadline = now_ms() + self.args.read_timeout_secs as i64 * 1000;
        let diffs = loop {
            let expected = self.expected_now(now_ms());
            let mut diffs: Vec<(String, String)> = Vec::new();
            for (name, e) in &expected {
                if self.ambiguous.contains_key(name) {
                    continue;
                }
                let got = reads.get(name).and_then(Option::as_ref);
                for d in check::differences(e, got) {
                    diffs.push((name.clone(), d));
                }
            }
            let top = check::expected_top(&expected, 10);
            let lb_diffs = if self.ambiguous.is_empty() {
                check::leaderboard_differences(&top, &lb)
            } else {
                Vec::new()
            };
            for d in lb_diffs {
                diffs.push(("leaderboard".into(), d));
            }
            if diffs.is_empty() || now_ms() > deadline {
                break diffs;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let again: Vec<String> = diffs
                .iter()
                .map(|(n, _)| n.clone())
                .filter(|n| n != "leaderboard")
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            reads.extend(self.read(&again).await?);
            lb = self.fetch.leaderboard().await?;
        };
        for (name, d) in diffs {
            self.diffs.push((number, name, d));
        }
        self.reads.push(reads);
        self.leaderboards.push(lb);
        Ok(())
    }

    /// The line of round `number`: what the players did and what it was worth (the fold of
    /// everything they sent), the disorder, the top 3 and the check.
    fn round_row(&self, number: usize) -> RoundRow {
        let round = &self.rounds[number - 1];
        let own = self.own_fold();
        let verdicts = check::verdicts(&self.sent, &own);
        let mut row = RoundRow {
            number,
            total: self.args.rounds,
            round: round.clone(),
            ..RoundRow::default()
        };
        let mut pressed: HashSet<&str> = HashSet::new();
        for m in self.sent.iter().filter(|m| m.round == number) {
            if m.delay_secs > 0 {
                row.delayed += 1;
            }
            let v = verdicts.get(m.message_id.as_str());
            match (&m.kind, v) {
                (SentKind::Press { .. }, Some(v)) => {
                    pressed.insert(&m.who);
                    match v {
                        Verdict::Scored { .. } if m.sent_at() > round.closes_at_ms => {
                            row.saved += 1;
                        }
                        Verdict::Scored { .. } => row.in_time += 1,
                        Verdict::PressRejected(RejectReason::TooLate) => row.late += 1,
                        Verdict::PressRejected(RejectReason::AlreadyScored) => row.twice += 1,
                        Verdict::PressRejected(_) => row.unknown += 1,
                        _ => {}
                    }
                }
                (SentKind::Purchase { .. }, Some(Verdict::Bought { grant, .. })) => {
                    row.bought.push(check::powerup_text(
                        grant.powerup.kind,
                        grant.powerup.level_halves(),
                    ));
                }
                (SentKind::Purchase { .. }, Some(Verdict::PurchaseRefused(r))) => match r {
                    fold::PurchaseRefusal::DuplicateRequest => row.retries += 1,
                    _ => row.refused += 1,
                },
                _ => {}
            }
        }
        row.missed = self
            .names
            .iter()
            .filter(|n| own.get(*n).is_some_and(|o| o.registered) && !pressed.contains(n.as_str()))
            .count();
        if self.late_round.is_some_and(|l| l.round == number) {
            row.late_round_secs = self.late_round.map(|l| l.delay_secs);
        }
        let held = self.chaos.held();
        row.held = held.iter().filter(|h| h.round == number).count();
        row.held_across = held
            .iter()
            .filter(|h| h.round == number && h.across)
            .count();
        let lb = &self.leaderboards[number - 1];
        row.top3 = lb
            .iter()
            .take(3)
            .map(|e| (e.username.clone(), e.score))
            .collect();
        if number >= 2 {
            let before: Vec<&String> = self.leaderboards[number - 2]
                .iter()
                .take(3)
                .map(|e| &e.username)
                .collect();
            let ranks = &self.reads[number - 2];
            for (name, _) in &row.top3 {
                if !before.contains(&name) {
                    let was = ranks
                        .get(name)
                        .and_then(Option::as_ref)
                        .and_then(|v| v.rank);
                    row.moved.push((name.clone(), was));
                }
            }
        }
        row.checked = self.everyone().len() - self.ambiguous.len();
        row.differing = self
            .diffs
            .iter()
            .filter(|(r, _, _)| *r == number)
            .map(|(_, n, _)| n.as_str())
            .collect::<BTreeSet<_>>()
            .len();
        row
    }

    /// After the last round: everything released, drained, read and compared; the report.
    async fn finish(&mut self) -> anyhow::Result<()> {
        self.chaos.release_all().await?;
        self.wait_drained().await?;
        let stats_lines_before =
            self.args.handler_log.as_ref().map(|p| {
                handler_stats::parse(&std::fs::read_to_string(p).unwrap_or_default()).lines
            });
        let n = self.args.rounds + 1;
        self.read_and_compare(n).await?;
        // The end's differences are the verdict's; a round's only while it lasted.
        for d in &mut self.diffs {
            if d.0 == n {
                d.0 = 0;
            }
        }
        let stats = match (&self.args.handler_log, stats_lines_before) {
            (Some(path), Some(before)) => Some(wait_stats(path, before).await),
            _ => None,
        };
        let dead_lettered = self.dead_lettered().await;
        let own = self.own_fold();
        let data = report::Final {
            rounds: &self.rounds,
            names: &self.names,
            stranger: &self.stranger,
            sent: &self.sent,
            outcomes: &own,
            reads: &self.reads,
            leaderboard: self.leaderboards.last().map_or(&[][..], Vec::as_slice),
            held: self.chaos.held(),
            late_round: self.late_round,
            stats: stats.as_ref(),
            handler_log: self.args.handler_log.as_deref(),
            dead_lettered: &dead_lettered,
            diffs: &self.diffs,
            ambiguous: &self.ambiguous,
            show: self.args.show,
            failed_sends: self.failed_sends,
        };
        print!("{}", report::render_final(&data));
        let mut problems: Vec<String> = self
            .diffs
            .iter()
            .map(|(r, who, d)| {
                if *r == 0 {
                    format!("{who}: {d}")
                } else {
                    format!("after round {r}: {who}: {d}")
                }
            })
            .collect();
        let malformed = self
            .sent
            .iter()
            .filter(|m| matches!(m.kind, SentKind::Malformed { .. }))
            .count() as u64;
        let dlq: u64 = dead_lettered.iter().map(|(_, n)| n).sum();
        if dlq != malformed {
            problems.push(format!(
                "the dead-letter queues hold {dlq} messages; {malformed} malformed ones were sent"
            ));
        }
        if self.ambiguous.len() * 4 > self.names.len() {
            problems.push(format!(
                "{} of {} players could not be checked: sends were too slow to tell their order \
                 or round (an overloaded machine?)",
                self.ambiguous.len(),
                self.names.len()
            ));
        }
        if self.failed_sends > 0 {
            problems.push(format!("{} messages could not be sent", self.failed_sends));
        }
        if problems.is_empty() {
            println!("every player's score, streak and powerups match what they did");
            Ok(())
        } else {
            let mut s = String::new();
            let _ = writeln!(s, "{} differences:", problems.len());
            for p in problems.iter().take(50) {
                let _ = writeln!(s, "  {p}");
            }
            if problems.len() > 50 {
                let _ = writeln!(s, "  … and {} more", problems.len() - 50);
            }
            print!("{s}");
            bail!(
                "the backend's state differs from what the players did ({} differences)",
                problems.len()
            )
        }
    }

    /// Messages in each demo queue's dead-letter queue.
    async fn dead_lettered(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for (name, url) in self.urls.named() {
            if let Ok(Some(dlq)) = crate::queues::dead_letter_queue(&self.sqs, url).await
                && let Ok(d) = depth(&self.sqs, &dlq).await
            {
                out.push((name.to_owned(), d.total()));
            }
        }
        out
    }
}

/// Waits (up to 20 s) for a stats line after the `before` first ones, then sums them all.
async fn wait_stats(path: &std::path::Path, before: usize) -> HandlerStats {
    let deadline = now_ms() + 20_000;
    loop {
        let s = handler_stats::parse(&std::fs::read_to_string(path).unwrap_or_default());
        if s.lines > before || now_ms() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn item_of(name: &str, p: &Planned) -> Item {
    let (queue, body, kind) = match &p.act {
        Act::Register => (
            Q::AddUser,
            add_user_body(name, &fake_token(name)),
            SentKind::Register,
        ),
        Act::Press { late, second } => (
            Q::Press,
            press_body(name),
            SentKind::Press {
                late: *late,
                second: *second,
            },
        ),
        Act::Purchase {
            powerup,
            request_id,
            retry,
            ..
        } => (
            Q::Powerup,
            powerup_body(name, *powerup, request_id),
            SentKind::Purchase {
                powerup: *powerup,
                request_id: request_id.clone(),
                retry: *retry,
            },
        ),
    };
    Item {
        offset: p.offset,
        queue,
        body,
        delay_secs: p.delay_secs,
        who: name.to_owned(),
        kind,
    }
}
