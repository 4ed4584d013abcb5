//! The demo's expected outcome, computed without the backend (pure): what the players sent (with
//! the MessageIds SQS returned and the local clock around each send) and the rounds (from
//! `outgoing-handler open-round`) are folded in send order with [`buttonparty::fold`], and
//! compared with what the fetch API shows.
//!
//! SQS assigns `SentTimestamp` during the send call, so a message's send time is only known to
//! lie in `[before, after]`. The players keep their own messages apart and away from every round
//! boundary and deadline, so any time in that interval gives the same fold; [`ambiguous`] names
//! the players for whom a slow send made that untrue (they are then left out of the comparison).

use std::collections::{BTreeMap, HashMap, HashSet};

use buttonparty::fold::{self, Action, Event, EventId, Message, PlayerOutcome, Verdict};
use buttonparty::rules::{self, Millis, Player, Powerup, PowerupKind, Rounds};

use crate::fetch::{LeaderboardEntry, SelfView};
use crate::round::RoundInfo;

/// What a message was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SentKind {
    /// An add-user message.
    Register,
    /// A press.
    Press {
        /// Planned after the close.
        late: bool,
        /// The player's second press of the round.
        second: bool,
    },
    /// A purchase.
    Purchase {
        /// What.
        powerup: Powerup,
        /// Its `request_id`.
        request_id: String,
        /// A retry of the one before (same request id).
        retry: bool,
    },
    /// A malformed message (for the dead-letter queue).
    Malformed {
        /// Which queue.
        queue: String,
    },
}

/// One message SQS accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMsg {
    /// The player (the name in the body).
    pub who: String,
    /// The round it was sent in (1-based; 0 before the first round).
    pub round: usize,
    /// What.
    pub kind: SentKind,
    /// `DelaySeconds` it was sent with.
    pub delay_secs: i32,
    /// Local clock just before the send call that took it, epoch ms.
    pub before: Millis,
    /// Local clock just after it.
    pub after: Millis,
    /// The `MessageId` SQS returned.
    pub message_id: String,
}

impl SentMsg {
    /// The send time the expected fold uses: the middle of `[before, after]`.
    pub fn sent_at(&self) -> Millis {
        self.before + (self.after - self.before) / 2
    }

    /// Its position in send order, as the expected fold uses it.
    pub fn event_id(&self) -> EventId {
        EventId::new(self.sent_at(), self.message_id.clone())
    }
}

/// The fold messages of what was sent (malformed messages aside), leaving out the message ids in
/// `exclude` (held by a consumer, not delivered yet).
pub fn messages(sent: &[SentMsg], rounds: &[RoundInfo], exclude: &HashSet<String>) -> Vec<Message> {
    let mut out: Vec<Message> = rounds
        .iter()
        .map(|r| Message::Round(r.rules_round()))
        .collect();
    for m in sent.iter().filter(|m| !exclude.contains(&m.message_id)) {
        let id = m.event_id();
        let name = m.who.clone();
        let action = match &m.kind {
            SentKind::Register => {
                out.push(Message::Register { name, id });
                continue;
            }
            SentKind::Press { .. } => Action::Press,
            SentKind::Purchase {
                powerup,
                request_id,
                ..
            } => Action::Purchase {
                powerup: *powerup,
                request_key: fold::request_key(Some(request_id), &m.message_id),
            },
            SentKind::Malformed { .. } => continue,
        };
        out.push(Message::Player {
            name,
            event: Event { id, action },
        });
    }
    out
}

/// The rules' rounds of `rounds`.
pub fn rules_rounds(rounds: &[RoundInfo]) -> Rounds {
    Rounds::new(rounds.iter().map(RoundInfo::rules_round).collect())
}

/// Players whose outcome could depend on where in its `[before, after]` SQS stamped one of
/// their messages: two of their messages overlap, or a message straddles a round's opening or a
/// press deadline (any extender level). Name → why.
pub fn ambiguous(sent: &[SentMsg], rounds: &[RoundInfo]) -> BTreeMap<String, String> {
    let rs = rules_rounds(rounds);
    let mut by_player: BTreeMap<&str, Vec<&SentMsg>> = BTreeMap::new();
    for m in sent {
        if !matches!(m.kind, SentKind::Malformed { .. }) {
            by_player.entry(&m.who).or_default().push(m);
        }
    }
    let mut out = BTreeMap::new();
    for (name, mut mine) in by_player {
        mine.sort_by_key(|m| (m.before, m.after));
        let why = mine
            .windows(2)
            .find(|w| w[1].before <= w[0].after)
            .map(|w| {
                format!(
                    "two of its messages were sent in overlapping calls ({}–{} and {}–{})",
                    w[0].before, w[0].after, w[1].before, w[1].after
                )
            })
            .or_else(|| {
                mine.iter().find_map(|m| {
                    let opening = rs
                        .as_slice()
                        .iter()
                        .find(|r| m.before < r.opens_at && r.opens_at <= m.after);
                    if let Some(r) = opening {
                        return Some(format!(
                            "a message sent during {}–{} straddles a round opening at {}",
                            m.before, m.after, r.opens_at
                        ));
                    }
                    if !matches!(m.kind, SentKind::Press { .. }) {
                        return None;
                    }
                    let round = rs.round_at(m.before)?;
                    [2, 3, 4, 6, 10]
                        .into_iter()
                        .map(|h| round.deadline(h))
                        .find(|&d| m.before <= d && d < m.after)
                        .map(|d| {
                            format!(
                                "a press sent during {}–{} straddles a deadline at {d}",
                                m.before, m.after
                            )
                        })
                })
            });
        if let Some(why) = why {
            out.insert(name.to_owned(), why);
        }
    }
    out
}

/// A powerup `GET /fetch/self` should show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedPowerup {
    /// Type.
    pub kind: PowerupKind,
    /// Level, in halves.
    pub level_halves: u32,
    /// `expires_at_ms` lies in this interval (the purchase's send interval plus its duration).
    pub expires: (Millis, Millis),
}

/// What `GET /fetch/self` should show for a player.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expected {
    /// Registered (else 404).
    pub registered: bool,
    /// Score.
    pub score: i64,
    /// Effective streak at the read time.
    pub streak: u32,
    /// Active powerups at the read time, by type.
    pub powerups: Vec<ExpectedPowerup>,
}

/// The rules' view of a player's outcome.
pub fn player_of(o: &PlayerOutcome) -> Player {
    Player {
        score: o.state.score,
        streak: o.state.streak,
        last_scored: o.state.last_scored,
        scored_rounds: o.state.last_scored.into_iter().collect(),
        grants: o.grants.clone(),
    }
}

/// The expected reads of every player of `outcomes` at `now`. `sent` gives each purchase's send
/// interval (for `expires_at_ms`).
pub fn expected_views(
    outcomes: &BTreeMap<String, PlayerOutcome>,
    rounds: &Rounds,
    sent: &[SentMsg],
    now: Millis,
) -> BTreeMap<String, Expected> {
    let intervals: HashMap<(&str, Millis), (Millis, Millis)> = sent
        .iter()
        .filter(|m| matches!(m.kind, SentKind::Purchase { .. }))
        .map(|m| ((m.who.as_str(), m.sent_at()), (m.before, m.after)))
        .collect();
    outcomes
        .iter()
        .map(|(name, o)| {
            let player = player_of(o);
            let powerups = PowerupKind::ALL
                .into_iter()
                .filter_map(|kind| {
                    let g = player.active(kind, now)?;
                    let (b, a) = intervals
                        .get(&(name.as_str(), g.starts_at))
                        .copied()
                        .unwrap_or((g.starts_at, g.starts_at));
                    let d = g.powerup.duration();
                    Some(ExpectedPowerup {
                        kind,
                        level_halves: g.powerup.level_halves(),
                        expires: (b + d, a + d),
                    })
                })
                .collect();
            let e = Expected {
                registered: o.registered,
                score: o.state.score,
                streak: rules::effective_streak(&player, rounds, now),
                powerups,
            };
            (name.clone(), e)
        })
        .collect()
}

/// How a powerup reads: `MULTIPLIER 2`, `EXTENDER 1.5`.
pub fn powerup_text(kind: PowerupKind, level_halves: u32) -> String {
    let level = if level_halves.is_multiple_of(2) {
        (level_halves / 2).to_string()
    } else {
        format!("{}", f64::from(level_halves) / 2.0)
    };
    format!("{} {level}", kind.as_str())
}

/// The differences between what `GET /fetch/self` showed (`None`: 404) and what was expected.
pub fn differences(expected: &Expected, got: Option<&SelfView>) -> Vec<String> {
    let Some(v) = got else {
        return if expected.registered {
            vec!["GET /fetch/self answers 404, but the player registered".into()]
        } else {
            Vec::new()
        };
    };
    if !expected.registered {
        return vec![format!(
            "GET /fetch/self knows the player (score {}), who never registered",
            v.score
        )];
    }
    let mut out = Vec::new();
    if v.score != expected.score {
        out.push(format!("score {} (expected {})", v.score, expected.score));
    }
    if v.streak != expected.streak {
        out.push(format!(
            "streak {} (expected {})",
            v.streak, expected.streak
        ));
    }
    let got: BTreeMap<String, (u32, Option<Millis>)> = v
        .powerups
        .iter()
        .map(|p| {
            (
                p.kind.to_ascii_uppercase(),
                ((p.level * 2.0).round() as u32, p.expires_at_ms),
            )
        })
        .collect();
    let want: BTreeMap<String, &ExpectedPowerup> = expected
        .powerups
        .iter()
        .map(|p| (p.kind.as_str().to_owned(), p))
        .collect();
    for (kind, p) in &want {
        match got.get(kind) {
            None => out.push(format!(
                "no {} (expected one active)",
                powerup_text(p.kind, p.level_halves)
            )),
            Some(&(halves, _)) if halves != p.level_halves => out.push(format!(
                "{kind} level {} (expected {})",
                f64::from(halves) / 2.0,
                f64::from(p.level_halves) / 2.0
            )),
            Some(&(_, Some(exp))) if exp < p.expires.0 || exp > p.expires.1 => out.push(format!(
                "{kind} expires at {exp} (expected {}..={})",
                p.expires.0, p.expires.1
            )),
            Some(_) => {}
        }
    }
    for (kind, (halves, _)) in &got {
        if !want.contains_key(kind) {
            out.push(format!(
                "{kind} {} active (expected none)",
                f64::from(*halves) / 2.0
            ));
        }
    }
    out
}

/// The expected top 10: registered players by score descending, then username (byte order).
pub fn expected_top(expected: &BTreeMap<String, Expected>, n: usize) -> Vec<(String, i64)> {
    let mut all: Vec<(String, i64)> = expected
        .iter()
        .filter(|(_, e)| e.registered)
        .map(|(n, e)| (n.clone(), e.score))
        .collect();
    all.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then_with(|| a.0.as_bytes().cmp(b.0.as_bytes()))
    });
    all.truncate(n);
    all
}

/// The differences between `GET /fetch/lb` and the expected top 10.
pub fn leaderboard_differences(want: &[(String, i64)], got: &[LeaderboardEntry]) -> Vec<String> {
    let got: Vec<(String, i64)> = got.iter().map(|e| (e.username.clone(), e.score)).collect();
    if got == want {
        return Vec::new();
    }
    let show = |v: &[(String, i64)]| {
        v.iter()
            .map(|(n, s)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![format!(
        "GET /fetch/lb shows [{}], expected [{}]",
        show(&got),
        show(want)
    )]
}

/// The verdict of each sent message in `outcomes` (by message id).
pub fn verdicts<'a>(
    sent: &'a [SentMsg],
    outcomes: &BTreeMap<String, PlayerOutcome>,
) -> HashMap<&'a str, Verdict> {
    sent.iter()
        .filter_map(|m| {
            let v = outcomes.get(&m.who)?.verdicts.get(&m.event_id())?;
            Some((m.message_id.as_str(), *v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use buttonparty::rules::Tier;

    use super::*;
    use crate::fetch::ActivePowerup;

    const T0: Millis = 1_800_000_000_000;

    fn round(n: i64) -> RoundInfo {
        RoundInfo {
            round_id: format!("r{n}"),
            opens_at_ms: T0 + n * 20_000,
            closes_at_ms: T0 + n * 20_000 + 5_000,
            window_ms: Some(5_000),
        }
    }

    fn msg(who: &str, round: usize, kind: SentKind, at: Millis, id: &str) -> SentMsg {
        SentMsg {
            who: who.into(),
            round,
            kind,
            delay_secs: 0,
            before: at - 5,
            after: at + 5,
            message_id: id.into(),
        }
    }

    fn press(who: &str, at: Millis, id: &str) -> SentMsg {
        msg(
            who,
            1,
            SentKind::Press {
                late: false,
                second: false,
            },
            at,
            id,
        )
    }

    fn buy(who: &str, kind: PowerupKind, at: Millis, id: &str) -> SentMsg {
        msg(
            who,
            1,
            SentKind::Purchase {
                powerup: Powerup::new(kind, Tier::MIN),
                request_id: id.into(),
                retry: false,
            },
            at,
            id,
        )
    }

    /// Ten rounds of presses, then a multiplier bought before the eleventh press.
    fn history() -> (Vec<SentMsg>, Vec<RoundInfo>) {
        let rounds: Vec<RoundInfo> = (1..=11).map(round).collect();
        let mut sent = vec![msg("a", 0, SentKind::Register, T0, "reg-a")];
        for (i, r) in rounds.iter().enumerate() {
            sent.push(press("a", r.opens_at_ms + 1_000, &format!("p{i}")));
        }
        sent.push(buy(
            "a",
            PowerupKind::Multiplier,
            rounds[10].opens_at_ms + 400,
            "m",
        ));
        // The press of round 11 is after the purchase.
        sent.last_mut().unwrap().round = 11;
        (sent, rounds)
    }

    #[test]
    fn the_fold_of_what_was_sent() {
        let (sent, rounds) = history();
        let outcomes = fold::fold_history(&messages(&sent, &rounds, &HashSet::new()));
        let a = &outcomes["a"];
        // 1..9, then 10² = 100, then the multiplier (−60) doubles 11² = 121.
        assert_eq!(a.state.score, 45 + 100 - 60 + 242);
        assert_eq!(a.state.streak, 11);
        let rs = rules_rounds(&rounds);
        let now = rounds[10].closes_at_ms + 10_000;
        let views = expected_views(&outcomes, &rs, &sent, now);
        let e = &views["a"];
        assert_eq!((e.score, e.streak), (327, 11));
        let start = rounds[10].opens_at_ms + 400;
        let six_hours = 6 * 3_600_000;
        assert_eq!(
            e.powerups,
            vec![ExpectedPowerup {
                kind: PowerupKind::Multiplier,
                level_halves: 4,
                expires: (start - 5 + six_hours, start + 5 + six_hours),
            }]
        );
        // Held back, the purchase is not in the fold: the press scores 121.
        let held: HashSet<String> = ["m".to_owned()].into();
        let without = fold::fold_history(&messages(&sent, &rounds, &held));
        assert_eq!(without["a"].state.score, 45 + 100 + 121);
    }

    #[test]
    fn reads_are_compared_field_by_field() {
        let want = Expected {
            registered: true,
            score: 327,
            streak: 11,
            powerups: vec![ExpectedPowerup {
                kind: PowerupKind::Multiplier,
                level_halves: 4,
                expires: (100, 110),
            }],
        };
        let mut got = SelfView {
            username: "a".into(),
            score: 327,
            streak: 11,
            rank: Some(1),
            scored_in_current_round: false,
            powerups: vec![ActivePowerup {
                kind: "MULTIPLIER".into(),
                level: 2.0,
                expires_at_ms: Some(105),
            }],
            current_round: None,
        };
        assert!(differences(&want, Some(&got)).is_empty());
        got.score = 326;
        got.streak = 0;
        got.powerups[0].expires_at_ms = Some(111);
        got.powerups.push(ActivePowerup {
            kind: "FREEZE".into(),
            level: 6.0,
            expires_at_ms: None,
        });
        let d = differences(&want, Some(&got));
        assert_eq!(d.len(), 4, "{d:?}");
        assert!(d[0].contains("score 326 (expected 327)"));
        assert_eq!(differences(&want, None).len(), 1);
        let stranger = Expected::default();
        assert!(differences(&stranger, None).is_empty());
        assert_eq!(differences(&stranger, Some(&got)).len(), 1);
    }

    #[test]
    fn straddling_sends_are_named() {
        let (mut sent, rounds) = history();
        assert!(ambiguous(&sent, &rounds).is_empty());
        // A press whose call spans the close of round 1.
        let close = rounds[0].closes_at_ms;
        let mut late = press("b", close, "pb");
        late.before = close - 2;
        late.after = close + 2;
        sent.push(late);
        // A purchase overlapping a press of the same player.
        let mut c1 = press("c", rounds[1].opens_at_ms + 1_000, "pc");
        c1.after += 50;
        let c2 = buy(
            "c",
            PowerupKind::Freeze,
            rounds[1].opens_at_ms + 1_040,
            "bc",
        );
        sent.extend([c1, c2]);
        // A registration spanning a round's opening.
        let mut d = msg("d", 0, SentKind::Register, rounds[2].opens_at_ms, "rd");
        d.before -= 1;
        sent.push(d);
        let amb = ambiguous(&sent, &rounds);
        assert_eq!(
            amb.keys().map(String::as_str).collect::<Vec<_>>(),
            ["b", "c", "d"]
        );
        assert!(amb["b"].contains("deadline"), "{amb:?}");
        assert!(amb["c"].contains("overlapping"), "{amb:?}");
        assert!(amb["d"].contains("opening"), "{amb:?}");
    }

    #[test]
    fn the_expected_top_breaks_ties_by_name() {
        let e = |score| Expected {
            registered: true,
            score,
            ..Expected::default()
        };
        let all: BTreeMap<String, Expected> = [("b", e(5)), ("a", e(5)), ("c", e(9))]
            .into_iter()
            .map(|(n, e)| (n.to_owned(), e))
            .collect();
        let top = expected_top(&all, 2);
        assert_eq!(top, [("c".to_owned(), 9), ("a".to_owned(), 5)]);
        let lb = |v: &[(&str, i64)]| {
            v.iter()
                .map(|(n, s)| LeaderboardEntry {
                    rank: None,
                    username: (*n).into(),
                    score: *s,
                })
                .collect::<Vec<_>>()
        };
        assert!(leaderboard_differences(&top, &lb(&[("c", 9), ("a", 5)])).is_empty());
        assert_eq!(
            leaderboard_differences(&top, &lb(&[("c", 9), ("b", 5)])).len(),
            1
        );
        assert_eq!(powerup_text(PowerupKind::Extender, 3), "EXTENDER 1.5");
        assert_eq!(powerup_text(PowerupKind::Freeze, 12), "FREEZE 6");
    }
}
