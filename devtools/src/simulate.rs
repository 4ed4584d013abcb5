//! The simulated players at work: registering, playing one round on a schedule, and the burst of
//! the benchmark. Each returns what it sent; [`Report`] gathers it (printed and, on request,
//! written as JSON for `bp-dev summary` and for scripts).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::plan::{ActionKind, Plan, PlanCounts, PlanSettings};
use crate::players::{Players, add_user_body, fake_token, powerup_body, press_body};
use crate::progress::{Progress, ProgressMode};
use crate::round::RoundInfo;
use crate::send::{
    EntryOutcome, MAX_BATCH, SendOptions, SendStats, now_ms, send_batch, send_bodies,
};

/// Everything a simulation run sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Name prefix of the players.
    pub prefix: String,
    /// Number of players.
    pub players: usize,
    /// RNG seed of the round's plan.
    pub seed: u64,
    /// The add-user messages, when `--register` ran.
    pub register: Option<SendStats>,
    /// The round played, when `--press` ran.
    pub round: Option<RoundReport>,
    /// The burst, when `--burst` ran.
    pub burst: Option<SendStats>,
}

/// What the players sent in one round, and when SQS took it relative to the close.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundReport {
    /// The round.
    pub round: RoundInfo,
    /// What the plan held.
    pub planned: PlanCounts,
    /// Spread, margin and late-by of the plan (for the record).
    pub spread: f64,
    /// Safety margin around the close, ms.
    pub margin_ms: i64,
    /// Late presses fell up to this long after close + margin, ms.
    pub late_by_ms: i64,
    /// Press messages accepted by SQS.
    pub presses_sent: usize,
    /// Press messages that failed.
    pub presses_failed: usize,
    /// Powerup purchases accepted by SQS.
    pub powerups_sent: usize,
    /// Powerup purchases that failed.
    pub powerups_failed: usize,
    /// Purchases by powerup, e.g. `"FREEZE 6": 3`.
    pub powerups_by_kind: BTreeMap<String, usize>,
    /// Players whose first press SQS accepted before the close (they should score).
    pub in_time: Vec<String>,
    /// Players whose every press SQS accepted after the close (they should not score).
    pub late: Vec<String>,
    /// Players whose press was sent right at the close (before/after unknown).
    pub at_the_close: Vec<String>,
    /// Players who pressed twice (both presses accepted).
    pub twice: Vec<String>,
    /// Players who did not press.
    pub absent: Vec<String>,
    /// Players none of whose presses SQS accepted.
    pub failed: Vec<String>,
    /// Buyers and what they bought (`"MULTIPLIER 2"`), purchase accepted by SQS.
    pub buyers: Vec<(String, String)>,
    /// Planned on-time presses that SQS only took after the close (the sender fell behind or
    /// started after the round had closed).
    pub slipped_late: usize,
}

/// Common equipment of the runs.
#[derive(Debug, Clone)]
pub struct Simulator {
    /// SQS client.
    pub sqs: aws_sdk_sqs::Client,
    /// The players.
    pub players: Players,
    /// Sending options.
    pub send: SendOptions,
    /// How progress is shown.
    pub progress: ProgressMode,
}

impl Simulator {
    /// Sends one add-user message per player (fake push tokens), as fast as allowed.
    pub async fn register(&self, queue_url: &str) -> SendStats {
        let bodies: Vec<String> = self
            .players
            .names()
            .map(|name| add_user_body(&name, &fake_token(&name)))
            .collect();
        let progress = Progress::new("register", bodies.len() as u64, self.progress);
        let stats = send_bodies(&self.sqs, queue_url, bodies, self.send, &progress).await;
        progress.finish(format!("{} sent, {} failed", stats.sent, stats.failed));
        stats
    }

    /// Sends `count` press messages as fast as allowed, cycling through the players.
    pub async fn burst(&self, queue_url: &str, count: usize) -> SendStats {
        let n = self.players.len().max(1);
        let bodies: Vec<String> = (0..count)
            .map(|k| press_body(&self.players.name(k % n)))
            .collect();
        let progress = Progress::new("burst", count as u64, self.progress);
        let stats = send_bodies(&self.sqs, queue_url, bodies, self.send, &progress).await;
        progress.finish(format!(
            "{:.0} msg/s, {} failed",
            stats.per_sec(),
            stats.failed
        ));
        stats
    }

    /// Plays `round` on the schedule `plan` (drawn with `settings`): each press and purchase is
    /// sent at its moment, so that its `SentTimestamp` falls where planned.
    pub async fn play_round(
        &self,
        press_url: &str,
        powerup_url: &str,
        round: &RoundInfo,
        settings: &PlanSettings,
        plan: &Plan,
    ) -> RoundReport {
        let outcomes = self
            .send_on_schedule(press_url, powerup_url, round, plan)
            .await;
        round_report(&self.players, round, settings, plan, &outcomes)
    }

    async fn send_on_schedule(
        &self,
        press_url: &str,
        powerup_url: &str,
        round: &RoundInfo,
        plan: &Plan,
    ) -> Vec<Option<EntryOutcome>> {
        let actions = &plan.actions;
        let progress = Progress::new("round", actions.len() as u64, self.progress);
        let permits = Arc::new(Semaphore::new(self.send.concurrency.max(1)));
        let mut tasks: JoinSet<Vec<(usize, EntryOutcome)>> = JoinSet::new();
        let mut outcomes: Vec<Option<EntryOutcome>> = vec![None; actions.len()];
        let collect = |done: Vec<(usize, EntryOutcome)>,
                       outcomes: &mut Vec<Option<EntryOutcome>>| {
            for (i, o) in done {
                outcomes[i] = Some(o);
            }
        };
        let mut next = 0;
        while next < actions.len() {
            while let Some(done) = tasks.try_join_next() {
                collect(done.expect("send task"), &mut outcomes);
            }
            let now = now_ms();
            let due = round.opens_at_ms + actions[next].offset_ms;
            if due > now {
                progress.set_message(clock_text(round, now));
                tokio::time::sleep(Duration::from_millis((due - now).min(250) as u64)).await;
                continue;
            }
            // Everything due by now, in batches per queue.
            let mut presses: Vec<(usize, String)> = Vec::new();
            let mut buys: Vec<(usize, String)> = Vec::new();
            while next < actions.len() && round.opens_at_ms + actions[next].offset_ms <= now {
                let a = &actions[next];
                let name = self.players.name(a.player);
                match &a.kind {
                    ActionKind::Press { .. } => presses.push((next, press_body(&name))),
                    ActionKind::Powerup {
                        powerup,
                        request_id,
                    } => buys.push((next, powerup_body(&name, *powerup, request_id))),
                }
                next += 1;
            }
            for (url, items) in [(press_url, presses), (powerup_url, buys)] {
                for chunk in items.chunks(MAX_BATCH) {
                    let permit = permits
                        .clone()
                        .acquire_owned()
                        .await
                        .expect("open semaphore");
                    let (indices, bodies): (Vec<usize>, Vec<String>) =
                        chunk.iter().cloned().unzip();
                    let (sqs, url, attempts, progress) = (
                        self.sqs.clone(),
                        url.to_owned(),
                        self.send.attempts,
                        progress.clone(),
                    );
                    tasks.spawn(async move {
                        let (result, _calls) = send_batch(&sqs, &url, &bodies, attempts).await;
                        drop(permit);
                        progress.inc(result.len() as u64);
                        indices.into_iter().zip(result).collect()
                    });
                }
            }
        }
        while let Some(done) = tasks.join_next().await {
            collect(done.expect("send task"), &mut outcomes);
        }
        let failed = outcomes
            .iter()
            .filter(|o| !o.as_ref().is_some_and(|o| o.ok))
            .count();
        progress.finish(format!("{} sent, {failed} failed", actions.len() - failed));
        outcomes
    }
}

/// "t+12.3 s of a 20 s window" (or "closed 2.1 s ago").
fn clock_text(round: &RoundInfo, now: i64) -> String {
    let since = (now - round.opens_at_ms) as f64 / 1000.0;
    let window = round.length_ms() as f64 / 1000.0;
    if now <= round.closes_at_ms {
        format!("t+{since:.1} s of a {window:.0} s window")
    } else {
        format!(
            "window closed {:.1} s ago",
            (now - round.closes_at_ms) as f64 / 1000.0
        )
    }
}

/// Builds the report of a round from the plan and the outcome of each action (same order).
pub fn round_report(
    players: &Players,
    round: &RoundInfo,
    settings: &PlanSettings,
    plan: &Plan,
    outcomes: &[Option<EntryOutcome>],
) -> RoundReport {
    #[derive(Default)]
    struct PlayerPresses {
        accepted: Vec<(i64, i64)>,
        planned_on_time: bool,
        attempts: usize,
    }
    let mut by_player: BTreeMap<usize, PlayerPresses> = BTreeMap::new();
    let mut r = RoundReport {
        round: round.clone(),
        planned: plan.counts,
        spread: settings.spread,
        margin_ms: settings.margin_ms,
        late_by_ms: settings.late_by_ms,
        ..RoundReport::default()
    };
    for (action, outcome) in plan.actions.iter().zip(outcomes) {
        let ok = outcome.as_ref().filter(|o| o.ok);
        match &action.kind {
            ActionKind::Press { late, .. } => {
                let p = by_player.entry(action.player).or_default();
                p.attempts += 1;
                p.planned_on_time = !late;
                match ok {
                    Some(o) => {
                        r.presses_sent += 1;
                        p.accepted.push((o.before_ms, o.after_ms));
                    }
                    None => r.presses_failed += 1,
                }
            }
            ActionKind::Powerup { powerup, .. } => match ok {
                Some(_) => {
                    r.powerups_sent += 1;
                    *r.powerups_by_kind.entry(powerup.to_string()).or_default() += 1;
                    r.buyers
                        .push((players.name(action.player), powerup.to_string()));
                }
                None => r.powerups_failed += 1,
            },
        }
    }
    let close = round.closes_at_ms;
    for (&player, p) in &by_player {
        let name = players.name(player);
        if p.accepted.is_empty() {
            r.failed.push(name);
            continue;
        }
        if p.accepted.len() >= 2 {
            r.twice.push(name.clone());
        }
        let first = p.accepted.iter().min().copied().expect("not empty");
        if first.1 <= close {
            r.in_time.push(name);
        } else if p.accepted.iter().all(|&(before, _)| before > close) {
            if p.planned_on_time {
                r.slipped_late += 1;
            }
            r.late.push(name);
        } else {
            r.at_the_close.push(name);
        }
    }
    r.absent = (0..players.len())
        .filter(|i| !by_player.contains_key(i))
        .map(|i| players.name(i))
        .collect();
    r
}

/// The human summary of a report, as `simulate` prints it at the end.
pub fn render_report(report: &Report) -> String {
    let mut s = String::new();
    let seed = if report.round.is_some() {
        format!(", seed {}", report.seed)
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        "simulated players: {} (names {}…){seed}",
        report.players, report.prefix
    );
    if let Some(reg) = &report.register {
        let _ = writeln!(
            s,
            "  registered      {:>6} add-user messages sent{}",
            reg.sent,
            failed_text(reg.failed)
        );
    }
    if let Some(r) = &report.round {
        let _ = writeln!(
            s,
            "  round {} (window {:.0} s)",
            r.round.round_id,
            r.round.length_ms() as f64 / 1000.0
        );
        let _ = writeln!(
            s,
            "    presses sent  {:>6}{}",
            r.presses_sent,
            failed_text(r.presses_failed as u64)
        );
        let _ = writeln!(s, "    in time       {:>6} players", r.in_time.len());
        let _ = writeln!(
            s,
            "    late          {:>6} players ({:.1} to {:.1} s after the close)",
            r.late.len(),
            r.margin_ms as f64 / 1000.0,
            (r.margin_ms + r.late_by_ms) as f64 / 1000.0
        );
        if !r.at_the_close.is_empty() {
            let _ = writeln!(
                s,
                "    at the close  {:>6} players (sent right at the close)",
                r.at_the_close.len()
            );
        }
        let _ = writeln!(
            s,
            "    twice         {:>6} players (duplicates)",
            r.twice.len()
        );
        let _ = writeln!(s, "    no press      {:>6} players", r.absent.len());
        let kinds: Vec<String> = r
            .powerups_by_kind
            .iter()
            .map(|(k, n)| format!("{n}× {k}"))
            .collect();
        let _ = writeln!(
            s,
            "    powerups      {:>6} purchases{}{}",
            r.powerups_sent,
            if kinds.is_empty() {
                String::new()
            } else {
                format!(": {}", kinds.join(", "))
            },
            failed_text(r.powerups_failed as u64)
        );
        if r.slipped_late > 0 {
            let _ = writeln!(
                s,
                "    note: {} planned on-time presses reached SQS only after the close",
                r.slipped_late
            );
        }
        if !r.failed.is_empty() {
            let _ = writeln!(
                s,
                "    note: {} players' presses all failed to send",
                r.failed.len()
            );
        }
    }
    if let Some(b) = &report.burst {
        let _ = writeln!(
            s,
            "  burst           {:>6} presses in {:.2} s = {:.0} msg/s ({} SendMessageBatch calls){}",
            b.sent,
            b.elapsed_ms as f64 / 1000.0,
            b.per_sec(),
            b.calls,
            failed_text(b.failed)
        );
    }
    s
}

fn failed_text(failed: u64) -> String {
    if failed == 0 {
        String::new()
    } else {
        format!(", {failed} FAILED")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::plan;

    fn ok(before_ms: i64, after_ms: i64) -> Option<EntryOutcome> {
        Some(EntryOutcome {
            ok: true,
            before_ms,
            after_ms,
            error: None,
            message_id: None,
        })
    }

    #[test]
    fn a_report_follows_the_send_times() {
        let players = Players::new("t-", 100);
        let round = RoundInfo {
            round_id: "r".into(),
            opens_at_ms: 1_000_000,
            closes_at_ms: 1_020_000,
            window_ms: None,
        };
        let settings = PlanSettings {
            seed: 4,
            ..PlanSettings::new(100, round.length_ms())
        };
        let p = plan(&settings);
        // Every message sent exactly when planned, taking 5 ms.
        let outcomes: Vec<_> = p
            .actions
            .iter()
            .map(|a| {
                ok(
                    round.opens_at_ms + a.offset_ms,
                    round.opens_at_ms + a.offset_ms + 5,
                )
            })
            .collect();
        let r = round_report(&players, &round, &settings, &p, &outcomes);
        assert_eq!(r.in_time.len(), p.counts.on_time_players);
        assert_eq!(r.late.len(), p.counts.late_players);
        assert_eq!(r.absent.len(), p.counts.absent_players);
        assert_eq!(r.twice.len(), p.counts.duplicate_players);
        assert_eq!(r.presses_sent, p.counts.presses);
        assert_eq!(r.powerups_sent, p.counts.powerups);
        assert_eq!(
            r.powerups_by_kind.values().sum::<usize>(),
            p.counts.powerups
        );
        assert!(r.at_the_close.is_empty() && r.failed.is_empty());
        assert_eq!(r.slipped_late, 0);

        // Everything sent a minute late: every presser is late, and the on-time ones slipped.
        let outcomes: Vec<_> = p
            .actions
            .iter()
            .map(|_| ok(round.closes_at_ms + 60_000, round.closes_at_ms + 60_010))
            .collect();
        let r = round_report(&players, &round, &settings, &p, &outcomes);
        assert!(r.in_time.is_empty());
        assert_eq!(
            r.late.len(),
            p.counts.on_time_players + p.counts.late_players
        );
        assert_eq!(r.slipped_late, p.counts.on_time_players);

        // Nothing accepted.
        let r = round_report(
            &players,
            &round,
            &settings,
            &p,
            &vec![None; p.actions.len()],
        );
        assert_eq!(r.failed.len(), 100 - p.counts.absent_players);
        assert_eq!(r.presses_failed, p.counts.presses);
        let text = render_report(&Report {
            prefix: "t-".into(),
            players: 100,
            seed: 4,
            round: Some(r),
            ..Report::default()
        });
        assert!(text.contains("FAILED"), "{text}");
    }

    #[test]
    fn a_press_straddling_the_close_is_at_the_close() {
        let players = Players::new("t-", 1);
        let round = RoundInfo {
            round_id: "r".into(),
            opens_at_ms: 0,
            closes_at_ms: 1_000,
            window_ms: None,
        };
        let settings = PlanSettings {
            absent_share: 0.0,
            late_share: 0.0,
            duplicate_share: 0.0,
            powerup_share: 0.0,
            ..PlanSettings::new(1, 1_000)
        };
        let p = plan(&settings);
        let r = round_report(&players, &round, &settings, &p, &[ok(999, 1_001)]);
        assert_eq!(r.at_the_close, ["t-0001"]);
        let r = round_report(&players, &round, &settings, &p, &[ok(990, 1_000)]);
        assert_eq!(r.in_time, ["t-0001"]);
    }
}
