//! The demo's text (pure): one line per round, and at the end the top 10, a few players'
//! histories, what the queues did and what came of it, and what the backend counted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use buttonparty::fold::{PlayerOutcome, PurchaseRefusal, Verdict};
use buttonparty::rules::{Millis, PowerupKind, RejectReason};

use crate::chaos::Held;
use crate::demo::LateRound;
use crate::demo_check::{self as check, SentKind, SentMsg};
use crate::fetch::{LeaderboardEntry, SelfView};
use crate::handler_stats::HandlerStats;
use crate::round::RoundInfo;
use crate::summary::utc_time;

/// One round's line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoundRow {
    /// 1-based number.
    pub number: usize,
    /// Rounds in the demo.
    pub total: usize,
    /// The round.
    pub round: RoundInfo,
    /// Presses that scored, sent by the close.
    pub in_time: usize,
    /// Presses that scored after the close (an extender's longer deadline).
    pub saved: usize,
    /// Presses too late.
    pub late: usize,
    /// Second presses (already scored).
    pub twice: usize,
    /// Registered players who did not press.
    pub missed: usize,
    /// Presses by a name never registered.
    pub unknown: usize,
    /// Purchases paid for (`MULTIPLIER 2`, ...).
    pub bought: Vec<String>,
    /// Purchases refused for lack of points.
    pub refused: usize,
    /// Retried purchases (same request id) ignored.
    pub retries: usize,
    /// Messages sent with a delay.
    pub delayed: usize,
    /// The round message's delay, s.
    pub late_round_secs: Option<i32>,
    /// Messages the crashing consumer took.
    pub held: usize,
    /// Of those, delivered again only in the next round.
    pub held_across: usize,
    /// `GET /fetch/lb`'s first three.
    pub top3: Vec<(String, i64)>,
    /// Newcomers to the top 3, with their rank before.
    pub moved: Vec<(String, Option<u64>)>,
    /// Names compared.
    pub checked: usize,
    /// Names (or the leaderboard) that differed.
    pub differing: usize,
}

/// The header of the round table.
pub fn row_header() -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "round   opened        in time  saved  late  twice  missed  bought  refused  disorder                                check   top 3 (GET /fetch/lb)"
    );
    s
}

/// What the columns mean, under the table.
pub fn row_legend() -> String {
    "  in time / saved / late / twice: presses by what they were worth (saved: after the close, \
     inside an EXTENDER's longer\n  deadline; twice: a second press, ignored); missed: registered \
     players who did not press; refused: not enough points,\n  or a client's retry of a purchase \
     already made; disorder: messages sent with SQS DelaySeconds, or held by a consumer\n  that \
     crashed and delivered again; check: names whose GET /fetch/self showed the fold of what had \
     been delivered\n"
        .to_owned()
}

fn dash(n: usize) -> String {
    if n == 0 { "·".into() } else { n.to_string() }
}

/// A round's line.
pub fn row(r: &RoundRow) -> String {
    let mut disorder = Vec::new();
    if r.delayed > 0 {
        disorder.push(format!("{} delayed", r.delayed));
    }
    if r.held > 0 {
        if r.held_across > 0 {
            disorder.push(format!(
                "{} held ({} past the round)",
                r.held, r.held_across
            ));
        } else {
            disorder.push(format!("{} held", r.held));
        }
    }
    if let Some(d) = r.late_round_secs {
        disorder.push(format!("round msg +{d} s"));
    }
    let disorder = if disorder.is_empty() {
        "·".to_owned()
    } else {
        disorder.join(", ")
    };
    let refused = dash(r.refused + r.retries);
    let check = if r.differing == 0 {
        format!("✓ {}", r.checked)
    } else {
        format!("✗ {}", r.differing)
    };
    let top: Vec<String> = r.top3.iter().map(|(n, s)| format!("{n} {s}")).collect();
    let mut top = top.join(" · ");
    if !r.moved.is_empty() && r.number > 1 {
        let moved: Vec<String> = r
            .moved
            .iter()
            .map(|(n, was)| match was {
                Some(w) => format!("{n} ↑ from {w}"),
                None => format!("{n} new"),
            })
            .collect();
        let _ = write!(top, "  ({})", moved.join(", "));
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>2}/{:<2}   {}  {:>7}  {:>5}  {:>4}  {:>5}  {:>6}  {:>6}  {:>7}  {:<38}  {:<6}  {}",
        r.number,
        r.total,
        utc_time(r.round.opens_at_ms),
        r.in_time,
        dash(r.saved),
        dash(r.late),
        dash(r.twice),
        dash(r.missed),
        dash(r.bought.len()),
        refused,
        disorder,
        check,
        top
    );
    s
}

/// Everything the end of the demo shows.
#[derive(Debug)]
pub struct Final<'a> {
    /// The rounds.
    pub rounds: &'a [RoundInfo],
    /// The players.
    pub names: &'a [String],
    /// The name that never registers.
    pub stranger: &'a str,
    /// Every message sent.
    pub sent: &'a [SentMsg],
    /// The fold of everything sent.
    pub outcomes: &'a BTreeMap<String, PlayerOutcome>,
    /// `GET /fetch/self` after each round, and at the end (last).
    pub reads: &'a [BTreeMap<String, Option<SelfView>>],
    /// The last `GET /fetch/lb`.
    pub leaderboard: &'a [LeaderboardEntry],
    /// What the crashing consumer took.
    pub held: Vec<Held>,
    /// The late round message.
    pub late_round: Option<LateRound>,
    /// The handler's stats lines, summed.
    pub stats: Option<&'a HandlerStats>,
    /// The handler's log.
    pub handler_log: Option<&'a Path>,
    /// Messages in each queue's dead-letter queue.
    pub dead_lettered: &'a [(String, u64)],
    /// Differences: (round, 0 = the end; who; what).
    pub diffs: &'a [(usize, String, String)],
    /// Players left out of the comparison, and why.
    pub ambiguous: &'a BTreeMap<String, String>,
    /// Histories to show.
    pub show: usize,
    /// Messages that could not be sent.
    pub failed_sends: usize,
}

fn short(kind: PowerupKind, halves: u32) -> String {
    let letter = match kind {
        PowerupKind::Freeze => "F",
        PowerupKind::Multiplier => "M",
        PowerupKind::Extender => "E",
    };
    let level = f64::from(halves) / 2.0;
    format!("{letter}{level}")
}

fn powerups_cell(v: &SelfView) -> String {
    if v.powerups.is_empty() {
        return "·".into();
    }
    let mut all: Vec<(PowerupKind, u32)> = v
        .powerups
        .iter()
        .filter_map(|p| Some((PowerupKind::parse(&p.kind)?, (p.level * 2.0).round() as u32)))
        .collect();
    all.sort();
    all.into_iter()
        .map(|(kind, halves)| short(kind, halves))
        .collect::<Vec<_>>()
        .join(" ")
}

fn secs(ms: Millis) -> String {
    format!("{:+.1} s", ms as f64 / 1000.0)
}

/// A player's messages and their verdicts, per round.
struct History<'a> {
    msgs: Vec<(&'a SentMsg, Option<Verdict>)>,
}

impl<'a> History<'a> {
    fn of(name: &str, data: &'a Final<'_>) -> Self {
        let outcome = data.outcomes.get(name);
        let mut msgs: Vec<(&SentMsg, Option<Verdict>)> = data
            .sent
            .iter()
            .filter(|m| m.who == name && !matches!(m.kind, SentKind::Malformed { .. }))
            .map(|m| {
                let v = outcome.and_then(|o| o.verdicts.get(&m.event_id()).copied());
                (m, v)
            })
            .collect();
        msgs.sort_by_key(|(m, _)| m.sent_at());
        Self { msgs }
    }

    fn in_round(&self, n: usize) -> impl Iterator<Item = &(&'a SentMsg, Option<Verdict>)> {
        self.msgs.iter().filter(move |(m, _)| m.round == n)
    }
}

/// Why a player is worth showing, and who.
fn picks(data: &Final<'_>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let take = |out: &mut Vec<(String, String)>, name: &str, why: String| {
        if !out.iter().any(|(n, _)| n == name) {
            out.push((name.to_owned(), why));
        }
    };
    let rounds = data.rounds;
    let opens = |n: usize| rounds.get(n.wrapping_sub(1)).map_or(0, |r| r.opens_at_ms);
    let closes = |n: usize| rounds.get(n.wrapping_sub(1)).map_or(0, |r| r.closes_at_ms);
    // A multiplier at work, best one whose purchase was delivered after the press it doubled.
    let mut best: Option<(bool, String, String)> = None;
    // An extender's late press; a freeze's carried streak.
    let mut extender = None;
    let mut freeze = None;
    let mut refused = None;
    for name in data.names {
        let h = History::of(name, data);
        let mut bought: Option<(&SentMsg, String)> = None;
        let mut scored_rounds = BTreeSet::new();
        for (m, v) in &h.msgs {
            match (&m.kind, v) {
                (SentKind::Purchase { .. }, Some(Verdict::Bought { grant, .. }))
                    if grant.powerup.kind == PowerupKind::Multiplier =>
                {
                    let text =
                        check::powerup_text(grant.powerup.kind, grant.powerup.level_halves());
                    bought = Some((m, text));
                }
                (
                    SentKind::Purchase { powerup, .. },
                    Some(Verdict::PurchaseRefused(PurchaseRefusal::InsufficientPoints)),
                ) if refused.is_none() => {
                    refused = Some((
                        name.clone(),
                        format!(
                            "tried to buy {} in round {} before affording it: refused, nothing changed",
                            check::powerup_text(powerup.kind, powerup.level_halves()),
                            m.round
                        ),
                    ));
                }
                (SentKind::Press { .. }, Some(Verdict::Scored { streak, points, .. })) => {
                    let base = buttonparty::rules::points(*streak, 2);
                    if *points > base
                        && let Some((b, text)) = &bought
                    {
                        let delivered_after = b.delay_secs > 0
                            && b.round == m.round
                            && b.sent_at() + i64::from(b.delay_secs) * 1000 > m.sent_at();
                        if best.as_ref().is_none_or(|x| !x.0 && delivered_after) {
                            let why = if delivered_after {
                                format!(
                                    "bought {text} in round {}; its message was delayed {} s and reached the handler after the press it doubled",
                                    b.round, b.delay_secs
                                )
                            } else {
                                format!(
                                    "bought {text} in round {}: its presses count {}×",
                                    b.round,
                                    points / base.max(1)
                                )
                            };
                            best = Some((delivered_after, name.clone(), why));
                        }
                    }
                    if m.sent_at() > closes(m.round) && extender.is_none() {
                        extender = Some((
                            name.clone(),
                            format!(
                                "with an EXTENDER, pressed {} after round {}'s close and still scored",
                                secs(m.sent_at() - closes(m.round)).trim_start_matches('+'),
                                m.round
                            ),
                        ));
                    }
                    if m.round >= 2
                        && *streak >= 2
                        && !scored_rounds.contains(&(m.round - 1))
                        && freeze.is_none()
                    {
                        freeze = Some((
                            name.clone(),
                            format!(
                                "bought a FREEZE, missed round {}, and its streak went on to {streak} in round {}",
                                m.round - 1,
                                m.round
                            ),
                        ));
                    }
                    scored_rounds.insert(m.round);
                }
                _ => {}
            }
        }
    }
    if let Some((_, n, why)) = best {
        take(&mut out, &n, why);
    }
    if let Some((n, why)) = extender {
        take(&mut out, &n, why);
    }
    if let Some((n, why)) = freeze {
        take(&mut out, &n, why);
    }
    if let Some(h) = data.held.iter().find(|h| h.across)
        && let Some(m) = data.sent.iter().find(|m| m.message_id == h.message_id)
    {
        take(
            &mut out,
            &m.who.clone(),
            format!(
                "its press at {} in round {} was held by a crashed consumer and delivered again in round {}",
                secs(m.sent_at() - opens(m.round)),
                m.round,
                m.round + 1
            ),
        );
    }
    if let Some(m) = data
        .sent
        .iter()
        .find(|m| m.kind == SentKind::Register && m.round == 1 && m.delay_secs > 0)
    {
        take(
            &mut out,
            &m.who.clone(),
            format!(
                "registered as round 1 opened; the registration was delayed {} s, past its first press",
                m.delay_secs
            ),
        );
    }
    if let Some(top) = data.leaderboard.first() {
        take(&mut out, &top.username, "the leader".into());
    }
    if let Some((n, why)) = refused {
        take(&mut out, &n, why);
    }
    out.truncate(data.show);
    out
}

fn render_history(s: &mut String, name: &str, why: &str, data: &Final<'_>) {
    let h = History::of(name, data);
    let n = data.rounds.len();
    let _ = writeln!(s, "  {name}: {why}");
    let cell = 7;
    let held_over: Vec<&str> = data
        .held
        .iter()
        .filter(|h| h.across)
        .map(|h| h.message_id.as_str())
        .collect();
    let mut footnote = None;
    let mut line = |label: &str, cells: Vec<String>| {
        let mut l = format!("    {label:<9}");
        for c in cells {
            let _ = write!(l, "{c:>cell$}");
        }
        let _ = writeln!(s, "{}", l.trim_end());
    };
    line("round", (1..=n).map(|r| r.to_string()).collect());
    let mut pressed = Vec::new();
    let mut bought = Vec::new();
    let mut points = Vec::new();
    for r in 1..=n {
        let closes = data.rounds[r - 1].closes_at_ms;
        let mut p = String::new();
        let mut b = Vec::new();
        let mut pts = 0;
        for (m, v) in h.in_round(r) {
            match (&m.kind, v) {
                (SentKind::Press { .. }, Some(Verdict::Scored { points, .. })) => {
                    pts += points;
                    p.push_str(if m.sent_at() > closes { "ext" } else { "✓" });
                    if held_over.contains(&m.message_id.as_str()) {
                        p.push('*');
                        footnote = Some(r);
                    }
                }
                (SentKind::Press { .. }, Some(Verdict::PressRejected(RejectReason::TooLate))) => {
                    p.push_str("late");
                }
                (
                    SentKind::Press { .. },
                    Some(Verdict::PressRejected(RejectReason::AlreadyScored)),
                ) => p.push('✓'),
                (SentKind::Purchase { .. }, Some(Verdict::Bought { grant, .. })) => {
                    b.push(short(grant.powerup.kind, grant.powerup.level_halves()));
                }
                (
                    SentKind::Purchase { powerup, .. },
                    Some(Verdict::PurchaseRefused(PurchaseRefusal::InsufficientPoints)),
                ) => b.push(format!("✗{}", short(powerup.kind, powerup.level_halves()))),
                _ => {}
            }
        }
        pressed.push(if p.is_empty() { "–".into() } else { p });
        bought.push(if b.is_empty() {
            "·".into()
        } else {
            b.join(",")
        });
        points.push(if pts == 0 {
            "·".into()
        } else {
            format!("+{pts}")
        });
    }
    line("pressed", pressed);
    line("bought", bought);
    line("points", points);
    let read = |r: usize| {
        data.reads
            .get(r - 1)
            .and_then(|m| m.get(name))
            .and_then(Option::as_ref)
    };
    line(
        "score",
        (1..=n)
            .map(|r| read(r).map_or("?".into(), |v| v.score.to_string()))
            .collect(),
    );
    line(
        "streak",
        (1..=n)
            .map(|r| read(r).map_or("?".into(), |v| v.streak.to_string()))
            .collect(),
    );
    line(
        "powerups",
        (1..=n)
            .map(|r| read(r).map_or("?".into(), powerups_cell))
            .collect(),
    );
    if let Some(r) = footnote {
        let _ = writeln!(
            s,
            "    * held by the crashed consumer until round {}: the read after round {r} does not have it yet",
            r + 1
        );
    }
    for (r, who, d) in data.diffs {
        if who == name {
            let when = if *r == 0 {
                "at the end".to_owned()
            } else {
                format!("after round {r}")
            };
            let _ = writeln!(s, "    ✗ {when}: {d}");
        }
    }
}

fn matched(name: &str, data: &Final<'_>) -> &'static str {
    if data.ambiguous.contains_key(name) {
        "(not checked)"
    } else if data.diffs.iter().any(|(_, w, _)| w == name) {
        "✗"
    } else {
        "✓"
    }
}

fn render_disorder(s: &mut String, data: &Final<'_>) {
    let mut delayed: BTreeMap<&str, usize> = BTreeMap::new();
    for m in data.sent.iter().filter(|m| m.delay_secs > 0) {
        let k = match m.kind {
            SentKind::Register => "registrations",
            SentKind::Press { .. } => "presses",
            SentKind::Purchase { .. } => "purchases",
            SentKind::Malformed { .. } => "malformed",
        };
        *delayed.entry(k).or_default() += 1;
    }
    if delayed.is_empty() && data.held.is_empty() && data.late_round.is_none() {
        let _ = writeln!(
            s,
            "What the queues did: no disorder (--disorder none): every message delivered once, at once\n"
        );
        return;
    }
    let _ = writeln!(s, "What the queues did, on purpose");
    let mut parts: Vec<String> = delayed.iter().map(|(k, n)| format!("{n} {k}")).collect();
    if let Some(l) = data.late_round {
        parts.push(format!("round {}'s message ({} s)", l.round, l.delay_secs));
    }
    let _ = writeln!(
        s,
        "  delayed with SQS DelaySeconds (sent now, delivered seconds later): {}",
        parts.join(", ")
    );
    if !data.held.is_empty() {
        let mut by_queue: BTreeMap<&str, usize> = BTreeMap::new();
        for h in &data.held {
            *by_queue.entry(&h.queue).or_default() += 1;
        }
        let across = data.held.iter().filter(|h| h.across).count();
        let q: Vec<String> = by_queue.iter().map(|(k, n)| format!("{n} {k}")).collect();
        let _ = writeln!(
            s,
            "  received and not deleted by a consumer that crashed, delivered again with the same MessageId: {}{}",
            q.join(", "),
            if across > 0 {
                format!(" ({across} only after the next round opened)")
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(s, "  and what came of it (the fold in send order):");
    let opens = |n: usize| {
        data.rounds
            .get(n.wrapping_sub(1))
            .map_or(0, |r| r.opens_at_ms)
    };
    let verdict = |m: &SentMsg| {
        data.outcomes
            .get(&m.who)
            .and_then(|o| o.verdicts.get(&m.event_id()))
            .copied()
    };
    let mut examples = 0;
    // A delayed purchase, and the press sent after it but delivered before it.
    let delayed_buy = data.sent.iter().find_map(|b| {
        let SentKind::Purchase { powerup, .. } = &b.kind else {
            return None;
        };
        if b.delay_secs == 0 || !matches!(verdict(b), Some(Verdict::Bought { .. })) {
            return None;
        }
        let press = data.sent.iter().find(|p| {
            p.who == b.who
                && p.round == b.round
                && matches!(p.kind, SentKind::Press { .. })
                && p.sent_at() > b.sent_at()
                && p.sent_at() < b.sent_at() + i64::from(b.delay_secs) * 1000
                && matches!(verdict(p), Some(Verdict::Scored { .. }))
        })?;
        Some((b, *powerup, press))
    });
    if let Some((b, powerup, p)) = delayed_buy
        && let Some(Verdict::Scored { streak, points, .. }) = verdict(p)
    {
        let effect = match powerup.kind {
            PowerupKind::Multiplier => format!(
                "the press counted ×{} ({points} points for streak {streak})",
                f64::from(powerup.level_halves()) / 2.0
            ),
            _ => format!("the press scored {points} (streak {streak})"),
        };
        let _ = writeln!(
            s,
            "    {}: bought {} at {} of round {} (delivered {} s later), pressed at {}: {effect}  {}",
            b.who,
            check::powerup_text(powerup.kind, powerup.level_halves()),
            secs(b.sent_at() - opens(b.round)),
            b.round,
            b.delay_secs,
            secs(p.sent_at() - opens(p.round)),
            matched(&b.who, data)
        );
        examples += 1;
    }
    // A press held into the next round.
    for h in data.held.iter().filter(|h| h.across) {
        let Some(m) = data.sent.iter().find(|m| m.message_id == h.message_id) else {
            continue;
        };
        let later = data.sent.iter().any(|x| {
            x.who == m.who && x.round == m.round + 1 && matches!(x.kind, SentKind::Press { .. })
        });
        let v = match verdict(m) {
            Some(Verdict::Scored { streak, .. }) => {
                format!("it counted for round {} (streak {streak})", m.round)
            }
            Some(v) => format!("judged in round {}: {}", m.round, v.as_str()),
            None => "?".into(),
        };
        let _ = writeln!(
            s,
            "    {}: its press at {} of round {} was held and delivered again {} into round {}{}: {v}  {}",
            m.who,
            secs(m.sent_at() - opens(m.round)),
            m.round,
            h.released_at
                .map_or("?".into(), |t| secs(t - opens(m.round + 1))
                    .trim_start_matches('+')
                    .to_owned()),
            m.round + 1,
            if later {
                ", after its press of that round"
            } else {
                ""
            },
            matched(&m.who, data)
        );
        examples += 1;
    }
    // The late round message.
    if let Some(l) = data.late_round
        && let Some(r) = data.rounds.get(l.round - 1)
    {
        let before: Vec<&SentMsg> = data
            .sent
            .iter()
            .filter(|m| {
                m.round == l.round
                    && matches!(m.kind, SentKind::Press { .. })
                    && m.sent_at() < r.opens_at_ms + i64::from(l.delay_secs) * 1000
            })
            .collect();
        let scored = before
            .iter()
            .filter(|m| matches!(verdict(m), Some(Verdict::Scored { .. })))
            .count();
        let ok = if before.iter().any(|m| matched(&m.who, data) == "✗") {
            "✗"
        } else {
            "✓"
        };
        let _ = writeln!(
            s,
            "    round {}: its message reached the handler {} s late; the {} presses sent before that were judged in round {} ({scored} scored)  {ok}",
            l.round,
            l.delay_secs,
            before.len(),
            l.round
        );
        examples += 1;
    }
    // A late registration.
    if let Some(reg) = data
        .sent
        .iter()
        .find(|m| m.kind == SentKind::Register && m.delay_secs > 0)
        && let Some(p) = data.sent.iter().find(|p| {
            p.who == reg.who && matches!(p.kind, SentKind::Press { .. }) && p.round == reg.round
        })
    {
        let v = verdict(p).map_or("?", |v| {
            if v.took_effect() {
                "scored"
            } else {
                v.as_str()
            }
        });
        let _ = writeln!(
            s,
            "    {}: registered at {} of round {} (delivered {} s later), pressed at {}: {v}  {}",
            reg.who,
            secs(reg.sent_at() - opens(reg.round)),
            reg.round,
            reg.delay_secs,
            secs(p.sent_at() - opens(p.round)),
            matched(&reg.who, data)
        );
        examples += 1;
    }
    if examples == 0 {
        let _ = writeln!(s, "    (no example this run)");
    }
    let _ = writeln!(s);
}

/// `parts` joined with ` · `, in lines of about 100 characters indented by 4.
fn wrapped(s: &mut String, parts: Vec<String>) {
    let mut line = String::new();
    for p in parts {
        if !line.is_empty() && line.chars().count() + p.chars().count() > 94 {
            let _ = writeln!(s, "    {line}");
            line.clear();
        }
        if !line.is_empty() {
            line.push_str(" · ");
        }
        line.push_str(&p);
    }
    let _ = writeln!(s, "    {line}");
}

fn render_backend(s: &mut String, data: &Final<'_>) {
    let Some(st) = data.stats else {
        return;
    };
    let log = data
        .handler_log
        .map_or(String::new(), |p| format!(" in {}", p.display()));
    let _ = writeln!(s, "What the backend did");
    // What the players' messages were worth, for comparison.
    let mut worth: BTreeMap<&str, usize> = BTreeMap::new();
    for m in data.sent {
        let v = data
            .outcomes
            .get(&m.who)
            .and_then(|o| o.verdicts.get(&m.event_id()));
        let key = match (&m.kind, v) {
            (SentKind::Register, _) => "registrations",
            (SentKind::Malformed { .. }, _) => "malformed",
            (_, Some(v)) => v.as_str(),
            (_, None) => continue,
        };
        *worth.entry(key).or_default() += 1;
    }
    let worth: Vec<String> = worth.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let _ = writeln!(
        s,
        "  the players' messages, judged by the fold in send order:"
    );
    wrapped(s, worth);
    let _ = writeln!(
        s,
        "  the incoming handler's counters (its {} stats lines{log}, summed):",
        st.lines
    );
    let mut parts = vec![
        format!("received {}", st.get("received")),
        format!("applied {}", st.get("applied")),
    ];
    let reasons: Vec<String> = st
        .rejected
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    parts.push(format!(
        "rejected {}{}",
        st.rejected_total(),
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        }
    ));
    // The other counters; the plumbing ones only when not 0.
    let plumbing = [
        "batches",
        "db_retries",
        "delete_failed",
        "heartbeats",
        "access_denied",
    ];
    for (k, v) in &st.counters {
        if k != "received"
            && k != "applied"
            && (*v > 0 && k != "batches" || !plumbing.contains(&k.as_str()))
        {
            parts.push(format!("{k} {v}"));
        }
    }
    wrapped(s, parts);
    let _ = writeln!(
        s,
        "    (a message judged again after a late round or registration may be counted twice)"
    );
    let dl: Vec<String> = data
        .dead_lettered
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(q, n)| format!("{q} {n}"))
        .collect();
    let _ = writeln!(
        s,
        "  dead-lettered: {}",
        if dl.is_empty() {
            "none".to_owned()
        } else {
            dl.join(", ")
        }
    );
    let _ = writeln!(s);
}

/// Everything after the round table.
pub fn render_final(data: &Final<'_>) -> String {
    let mut s = String::new();
    let last = data.reads.last();
    let _ = writeln!(
        s,
        "Top 10 after round {} (GET /fetch/lb; streak and powerups from GET /fetch/self)",
        data.rounds.len()
    );
    let w = data
        .leaderboard
        .iter()
        .map(|e| e.username.chars().count())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = writeln!(s, "  rank  {:<w$}  score  streak  powerups", "player");
    for e in data.leaderboard {
        let v = last
            .and_then(|m| m.get(&e.username))
            .and_then(Option::as_ref);
        let _ = writeln!(
            s,
            "  {:>4}  {:<w$}  {:>5}  {:>6}  {}",
            e.rank.unwrap_or(0),
            e.username,
            e.score,
            v.map_or("?".into(), |v| v.streak.to_string()),
            v.map_or("?".into(), |v| {
                let c = powerups_cell(v);
                if c == "·" { "-".into() } else { c }
            })
        );
    }
    let _ = writeln!(s);

    let picks = picks(data);
    if !picks.is_empty() {
        let _ = writeln!(
            s,
            "A few players, round by round (score, streak and powerups read back with GET /fetch/self after each round)"
        );
        for (name, why) in &picks {
            render_history(&mut s, name, why, data);
        }
        let _ = writeln!(
            s,
            "  pressed: ✓ in time (✓✓ twice: the second ignored), ext = after the close, saved by an EXTENDER, late = too late, – = no press"
        );
        let _ = writeln!(
            s,
            "  bought / powerups: M multiplier, E extender, F freeze, with the level; ✗ = refused (not enough points)\n"
        );
    }

    render_disorder(&mut s, data);
    render_backend(&mut s, data);

    let compared = data.names.len() + 1 - data.ambiguous.len();
    let _ = writeln!(
        s,
        "Checked after each of the {} rounds and at the end: {compared} names (the {} players and {}, who\n\
         never registered{}) with GET /fetch/self (score, effective streak, active powerups) and the\n\
         top 10 with GET /fetch/lb, against the fold of what the players sent, in send order\n\
         (buttonparty::fold::fold_history over their MessageIds and send times)",
        data.rounds.len(),
        data.names.len(),
        data.stranger,
        if data.ambiguous.is_empty() {
            String::new()
        } else {
            format!(", less {}", data.ambiguous.len())
        }
    );
    if !data.ambiguous.is_empty() {
        let _ = writeln!(
            s,
            "  not checked: {} player(s), one of whose sends took longer than the margins allow (where SQS\n  \
             stamped it decides the outcome):",
            data.ambiguous.len()
        );
        for (n, why) in data.ambiguous.iter().take(5) {
            let _ = writeln!(s, "    {n}: {why}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_reads_well() {
        let r = RoundRow {
            number: 3,
            total: 12,
            round: RoundInfo {
                round_id: "r".into(),
                opens_at_ms: 3_600_000 + 61_000,
                closes_at_ms: 3_600_000 + 66_000,
                window_ms: Some(5_000),
            },
            in_time: 271,
            late: 9,
            twice: 21,
            missed: 17,
            refused: 2,
            retries: 1,
            delayed: 4,
            held: 2,
            held_across: 1,
            late_round_secs: Some(3),
            top3: vec![
                ("demo-0001".into(), 6),
                ("demo-0002".into(), 6),
                ("demo-0004".into(), 6),
            ],
            moved: vec![("demo-0004".into(), Some(7))],
            checked: 301,
            ..RoundRow::default()
        };
        let line = row(&r);
        assert!(line.starts_with(" 3/12   01:01:01 UTC"), "{line}");
        assert!(
            line.contains("4 delayed, 2 held (1 past the round), round msg +3 s"),
            "{line}"
        );
        assert!(line.contains("✓ 301"), "{line}");
        assert!(line.contains("demo-0004 ↑ from 7"), "{line}");
        assert!(line.contains("  3  "), "{line}");
        assert!(row_header().contains("top 3"));
    }

    #[test]
    fn powerup_cells_are_short() {
        assert_eq!(short(PowerupKind::Extender, 3), "E1.5");
        assert_eq!(short(PowerupKind::Multiplier, 4), "M2");
        assert_eq!(short(PowerupKind::Freeze, 12), "F6");
    }
}
