//! The readable outcome of a simulated round: what the players sent (from the `simulate` report),
//! what the backend made of it (read back through the fetch API), and the top 10.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use futures::StreamExt as _;

use crate::fetch::{FetchClient, LeaderboardEntry, SelfView};
use crate::simulate::{Report, RoundReport};

/// A sampled player: what they did, and what `GET /fetch/self` says.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Username.
    pub username: String,
    /// What they did in the round.
    pub did: String,
    /// The API's view (`None`: 404, not registered).
    pub view: Option<SelfView>,
}

/// Everything the summary shows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SummaryData {
    /// The simulate report.
    pub report: Report,
    /// `GET /fetch/lb`.
    pub leaderboard: Vec<LeaderboardEntry>,
    /// A few players.
    pub samples: Vec<Sample>,
    /// In-time players whose `GET /fetch/self` shows a streak of at least 1, of those asked.
    pub in_time_with_streak: Option<(usize, usize)>,
    /// Buyers with an active powerup, of those asked.
    pub buyers_with_powerup: Option<(usize, usize)>,
}

/// Reads the leaderboard, a few players and the per-player checks from the fetch API.
pub async fn gather(
    fetch: &FetchClient,
    report: Report,
    show: usize,
) -> anyhow::Result<SummaryData> {
    let leaderboard = fetch.leaderboard().await?;
    let mut data = SummaryData {
        report,
        leaderboard,
        ..SummaryData::default()
    };
    let Some(round) = data.report.round.clone() else {
        return Ok(data);
    };

    let views = |names: Vec<String>| async move {
        let results: Vec<(String, anyhow::Result<Option<SelfView>>)> = futures::stream::iter(names)
            .map(|n| async move {
                let v = fetch.player(&n).await;
                (n, v)
            })
            .buffered(16)
            .collect()
            .await;
        results
            .into_iter()
            .map(|(n, v)| v.map(|v| (n, v)))
            .collect::<anyhow::Result<Vec<_>>>()
    };

    let in_time = views(round.in_time.clone()).await?;
    let with_streak = in_time
        .iter()
        .filter(|(_, v)| v.as_ref().is_some_and(|v| v.streak >= 1 && v.score >= 1))
        .count();
    data.in_time_with_streak = Some((with_streak, in_time.len()));
    let buyers = views(round.buyers.iter().map(|(n, _)| n.clone()).collect()).await?;
    let with_powerup = buyers
        .iter()
        .filter(|(_, v)| v.as_ref().is_some_and(|v| !v.powerups.is_empty()))
        .count();
    data.buyers_with_powerup = Some((with_powerup, buyers.len()));

    let picks = sample_players(&round, show);
    let names = picks.iter().map(|(n, _)| n.clone()).collect();
    for ((username, did), (_, view)) in picks.into_iter().zip(views(names).await?) {
        data.samples.push(Sample {
            username,
            did,
            view,
        });
    }
    Ok(data)
}

/// Up to `n` players showing each kind of behaviour: in time, twice, late, bought, absent.
pub fn sample_players(round: &RoundReport, n: usize) -> Vec<(String, String)> {
    let twice: BTreeSet<&String> = round.twice.iter().collect();
    let mut groups: Vec<Vec<(String, String)>> = vec![
        round
            .in_time
            .iter()
            .filter(|p| !twice.contains(p))
            .map(|p| (p.clone(), "pressed in time".to_owned()))
            .collect(),
        round
            .in_time
            .iter()
            .filter(|p| twice.contains(p))
            .map(|p| (p.clone(), "pressed twice in time".to_owned()))
            .collect(),
        round
            .late
            .iter()
            .map(|p| (p.clone(), "pressed late".to_owned()))
            .collect(),
        round
            .buyers
            .iter()
            .map(|(p, what)| (p.clone(), format!("bought {what}")))
            .collect(),
        round
            .absent
            .iter()
            .map(|p| (p.clone(), "did not press".to_owned()))
            .collect(),
    ];
    let mut picked = Vec::new();
    let mut seen = BTreeSet::new();
    // Round-robin over the groups, first of each group first.
    for depth in 0.. {
        let mut any = false;
        for g in &mut groups {
            if let Some(item) = g.get(depth) {
                any = true;
                if picked.len() < n && seen.insert(item.0.clone()) {
                    picked.push(item.clone());
                }
            }
        }
        if !any || picked.len() >= n {
            break;
        }
    }
    picked
}

/// `HH:MM:SS UTC` of an epoch-ms time.
pub fn utc_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The summary text.
pub fn render(data: &SummaryData) -> String {
    let mut s = String::new();
    if let Some(r) = &data.report.round {
        render_round(&mut s, data, r);
    } else {
        let _ = writeln!(
            s,
            "(no round in the report: showing the leaderboard only)\n"
        );
    }
    render_leaderboard(&mut s, &data.leaderboard);
    if !data.samples.is_empty() {
        render_samples(&mut s, &data.samples);
    }
    s
}

fn render_round(s: &mut String, data: &SummaryData, r: &RoundReport) {
    let round = &r.round;
    let _ = writeln!(s, "Round {}", round.round_id);
    let _ = writeln!(
        s,
        "  opened {}, {:.0} s window (closed {}), {} simulated players",
        utc_time(round.opens_at_ms),
        round.length_ms() as f64 / 1000.0,
        utc_time(round.closes_at_ms),
        data.report.players
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "  What the players did                 What the backend made of it"
    );
    let scored = match data.in_time_with_streak {
        Some((n, of)) => format!("{n} of {of} show score and streak ≥ 1"),
        None => String::new(),
    };
    let mut line = |what: String, outcome: &str| {
        let text = format!("  {what:<36} {outcome}");
        let _ = writeln!(s, "{}", text.trim_end());
    };
    line(
        format!("pressed in time    {:>5} players", r.in_time.len()),
        &scored,
    );
    let late_outcome = "rejected: after the window".to_owned();
    line(
        format!("pressed late       {:>5} players", r.late.len()),
        &late_outcome,
    );
    if !r.at_the_close.is_empty() {
        line(
            format!("pressed at close   {:>5} players", r.at_the_close.len()),
            "either way",
        );
    }
    line(
        format!("pressed twice      {:>5} players", r.twice.len()),
        "second press ignored (one score per round)",
    );
    line(
        format!("did not press      {:>5} players", r.absent.len()),
        "",
    );
    let powerups = match data.buyers_with_powerup {
        Some((0, n)) if n > 0 => {
            "none active: each costs 60+ points, new players have less".to_owned()
        }
        Some((k, n)) => format!("{k} of {n} have an active powerup"),
        None => String::new(),
    };
    line(
        format!("bought a powerup   {:>5} players", r.buyers.len()),
        &powerups,
    );
    if r.presses_failed + r.powerups_failed > 0 {
        let _ = writeln!(
            s,
            "  ({} messages could not be sent)",
            r.presses_failed + r.powerups_failed
        );
    }
    if !(r.late.is_empty() && r.absent.is_empty()) {
        let _ = writeln!(
            s,
            "  (a missed round resets a player's streak only once the next round opens)"
        );
    }
    let _ = writeln!(s);
}

fn render_leaderboard(s: &mut String, lb: &[LeaderboardEntry]) {
    let _ = writeln!(s, "Top 10 (GET /fetch/lb)");
    if lb.is_empty() {
        let _ = writeln!(s, "  (nobody has scored yet)\n");
        return;
    }
    let w = lb
        .iter()
        .map(|e| e.username.chars().count())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = writeln!(s, "  rank  {:<w$}  score", "player");
    let _ = writeln!(s, "  ----  {:-<w$}  -----", "");
    for e in lb {
        let _ = writeln!(
            s,
            "  {:>4}  {:<w$}  {:>5}",
            e.rank.unwrap_or(0),
            e.username,
            e.score
        );
    }
    let _ = writeln!(s);
}

fn render_samples(s: &mut String, samples: &[Sample]) {
    let _ = writeln!(s, "A few players (GET /fetch/self)");
    let w = samples
        .iter()
        .map(|p| p.username.chars().count())
        .max()
        .unwrap_or(6)
        .max(6);
    let dw = samples
        .iter()
        .map(|p| p.did.chars().count())
        .max()
        .unwrap_or(3)
        .max(3);
    let _ = writeln!(
        s,
        "  {:<w$}  {:<dw$}  score  streak   rank  powerups",
        "player", "did"
    );
    for p in samples {
        match &p.view {
            Some(v) => {
                let powerups = if v.powerups.is_empty() {
                    "-".to_owned()
                } else {
                    v.powerups
                        .iter()
                        .map(|p| format!("{} {}", p.kind, p.level))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let _ = writeln!(
                    s,
                    "  {:<w$}  {:<dw$}  {:>5}  {:>6}  {:>5}  {}",
                    p.username,
                    p.did,
                    v.score,
                    v.streak,
                    v.rank.map_or("-".to_owned(), |r| r.to_string()),
                    powerups
                );
            }
            None => {
                let _ = writeln!(s, "  {:<w$}  {:<dw$}  (not registered)", p.username, p.did);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round::RoundInfo;

    fn round() -> RoundReport {
        RoundReport {
            round: RoundInfo {
                round_id: "r-1".into(),
                opens_at_ms: 3_600_000 + 61_000,
                closes_at_ms: 3_600_000 + 81_000,
                window_ms: None,
            },
            in_time: vec!["p-0001".into(), "p-0002".into(), "p-0003".into()],
            late: vec!["p-0004".into()],
            twice: vec!["p-0002".into()],
            absent: vec!["p-0005".into()],
            buyers: vec![("p-0001".into(), "FREEZE 6".into())],
            ..RoundReport::default()
        }
    }

    #[test]
    fn utc_times() {
        assert_eq!(utc_time(3_600_000 + 61_000), "01:01:01 UTC");
        assert_eq!(utc_time(86_400_000 * 3 + 999), "00:00:00 UTC");
    }

    #[test]
    fn samples_cover_each_behaviour_once() {
        let picks = sample_players(&round(), 10);
        let did: Vec<&str> = picks.iter().map(|(_, d)| d.as_str()).collect();
        assert_eq!(
            did,
            [
                "pressed in time",
                "pressed twice in time",
                "pressed late",
                "did not press",
                "pressed in time"
            ]
        );
        let names: BTreeSet<_> = picks.iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), picks.len());
        assert_eq!(sample_players(&round(), 2).len(), 2);
    }

    #[test]
    fn renders_the_outcome() {
        let data = SummaryData {
            report: Report {
                prefix: "p-".into(),
                players: 5,
                round: Some(round()),
                ..Report::default()
            },
            leaderboard: vec![LeaderboardEntry {
                rank: Some(1),
                username: "p-0002".into(),
                score: 1,
            }],
            in_time_with_streak: Some((3, 3)),
            buyers_with_powerup: Some((0, 1)),
            ..SummaryData::default()
        };
        let text = render(&data);
        assert!(text.contains("Round r-1"), "{text}");
        assert!(text.contains("opened 01:01:01 UTC, 20 s window"), "{text}");
        assert!(text.contains("3 of 3 show score and streak ≥ 1"), "{text}");
        assert!(
            text.contains("pressed late           1 players     rejected: after the window"),
            "{text}"
        );
        assert!(text.lines().all(|l| l == l.trim_end()), "{text}");
        assert!(text.contains("   1  p-0002      1"), "{text}");
    }
}
