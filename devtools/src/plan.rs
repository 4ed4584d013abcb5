//! The press schedule of one round (pure): who presses when, who is late, who presses twice, who
//! stays away and who buys a powerup. Every choice comes from one seeded RNG, so a seed gives the
//! same plan on every run.
//!
//! Times are offsets in milliseconds from the round's opening. With `window` the round's window
//! and `margin` a safety gap around its close (so that network latency never turns a planned
//! on-time press into a late one, or the reverse):
//!
//! - on-time players press first at a uniform moment of `[0, spread × (window − margin)]`;
//! - late players press first in `(window + margin, window + margin + late_by]`;
//! - a player who presses twice presses again later in the same interval (on time stays on time);
//! - a powerup purchase happens at a uniform moment of `[0, window − margin]`.
//!
//! Shares are turned into exact counts (rounded), so the counts of a plan depend only on the
//! settings, and the seed decides who and when.

use buttonparty::rules::{Powerup, PowerupKind, Tier};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// How to draw a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanSettings {
    /// Number of players.
    pub players: usize,
    /// RNG seed.
    pub seed: u64,
    /// The round's window, ms.
    pub window_ms: i64,
    /// Safety gap around the close, ms (must be less than the window).
    pub margin_ms: i64,
    /// On-time presses fall in the first `spread` of `[0, window − margin]` (0 < spread ≤ 1).
    pub spread: f64,
    /// Share of players who press only after the window.
    pub late_share: f64,
    /// Late presses fall up to this long after `window + margin`, ms (> 0).
    pub late_by_ms: i64,
    /// Share of players who do not press at all.
    pub absent_share: f64,
    /// Share of the pressing players who press twice.
    pub duplicate_share: f64,
    /// Share of players who buy a powerup during the round.
    pub powerup_share: f64,
    /// Prefix of the purchases' `request_id`s (make it unique per round, e.g. the round id, or a
    /// purchase would be taken as a retry of an earlier one).
    pub request_id_prefix: String,
}

impl PlanSettings {
    /// Demo defaults for `players` players and a window of `window_ms`.
    pub fn new(players: usize, window_ms: i64) -> Self {
        Self {
            players,
            seed: 1,
            window_ms,
            margin_ms: default_margin_ms(window_ms),
            spread: 0.8,
            late_share: 0.1,
            late_by_ms: 5_000,
            absent_share: 0.05,
            duplicate_share: 0.1,
            powerup_share: 0.05,
            request_id_prefix: "sim".into(),
        }
    }

    /// Checks the settings; the error says which one is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let share = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name} must be between 0 and 1, got {v}"))
            }
        };
        share("late share", self.late_share)?;
        share("absent share", self.absent_share)?;
        share("duplicate share", self.duplicate_share)?;
        share("powerup share", self.powerup_share)?;
        if !(self.spread > 0.0 && self.spread <= 1.0) {
            return Err(format!(
                "spread must be greater than 0 and at most 1, got {}",
                self.spread
            ));
        }
        if self.window_ms <= 0 {
            return Err(format!(
                "the window must be positive, got {} ms",
                self.window_ms
            ));
        }
        if self.margin_ms < 0 || self.margin_ms >= self.window_ms {
            return Err(format!(
                "the margin ({} ms) must be at least 0 and less than the window ({} ms)",
                self.margin_ms, self.window_ms
            ));
        }
        if self.late_by_ms <= 0 {
            return Err(format!(
                "late-by must be positive, got {} ms",
                self.late_by_ms
            ));
        }
        if self.late_share + self.absent_share > 1.0 + 1e-9 {
            return Err(format!(
                "late share ({}) + absent share ({}) is more than 1",
                self.late_share, self.absent_share
            ));
        }
        Ok(())
    }

    /// Last offset of an on-time press, ms.
    pub fn on_time_end_ms(&self) -> i64 {
        self.window_ms - self.margin_ms
    }

    /// Offsets of late presses are greater than this, ms.
    pub fn late_start_ms(&self) -> i64 {
        self.window_ms + self.margin_ms
    }

    /// Last offset of a late press, ms.
    pub fn late_end_ms(&self) -> i64 {
        self.late_start_ms() + self.late_by_ms
    }
}

/// The default safety margin: a tenth of the window, between 200 ms and 1 s.
pub fn default_margin_ms(window_ms: i64) -> i64 {
    (window_ms / 10).clamp(200, 1_000).min(window_ms / 2)
}

/// What a player does at a moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionKind {
    /// A press (to the press queue).
    Press {
        /// Planned after the window.
        late: bool,
        /// The player's second press.
        duplicate: bool,
    },
    /// A powerup purchase (to the powerup queue).
    Powerup {
        /// What is bought.
        powerup: Powerup,
        /// The purchase's `request_id`.
        request_id: String,
    },
}

/// One message a player sends, `offset_ms` after the round opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// When, ms after the opening.
    pub offset_ms: i64,
    /// Which player (0-based index).
    pub player: usize,
    /// What.
    pub kind: ActionKind,
}

/// What a plan holds, counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct PlanCounts {
    /// Players.
    pub players: usize,
    /// Players whose presses are planned inside the window.
    pub on_time_players: usize,
    /// Players whose presses are planned after the window.
    pub late_players: usize,
    /// Players who do not press.
    pub absent_players: usize,
    /// Players who press twice (= duplicate presses).
    pub duplicate_players: usize,
    /// All press messages.
    pub presses: usize,
    /// Powerup purchases.
    pub powerups: usize,
}

/// A round's schedule: the actions in time order (ties by player, first press before second).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The actions, sorted by `offset_ms`.
    pub actions: Vec<Action>,
    /// Their counts.
    pub counts: PlanCounts,
}

fn share_of(n: usize, share: f64) -> usize {
    ((n as f64) * share).round().clamp(0.0, n as f64) as usize
}

/// Draws the plan. Panics on invalid settings: call [`PlanSettings::validate`] first.
pub fn plan(settings: &PlanSettings) -> Plan {
    if let Err(e) = settings.validate() {
        panic!("invalid plan settings: {e}");
    }
    let s = settings;
    let n = s.players;
    let mut rng = StdRng::seed_from_u64(s.seed);

    let late = share_of(n, s.late_share);
    let absent = share_of(n, s.absent_share).min(n - late);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    let (absent_players, rest) = order.split_at(absent);
    let (late_players, on_time_players) = rest.split_at(late);

    let mut pressing: Vec<(usize, bool)> = on_time_players
        .iter()
        .map(|&p| (p, false))
        .chain(late_players.iter().map(|&p| (p, true)))
        .collect();
    pressing.sort_unstable();
    let mut twice: Vec<usize> = pressing.iter().map(|&(p, _)| p).collect();
    twice.shuffle(&mut rng);
    twice.truncate(share_of(pressing.len(), s.duplicate_share));
    twice.sort_unstable();

    let mut actions = Vec::with_capacity(n * 2);
    let on_time_first_end = ((s.on_time_end_ms() as f64) * s.spread).floor() as i64;
    for &(player, is_late) in &pressing {
        let (first, end) = if is_late {
            (
                rng.random_range(s.late_start_ms() + 1..=s.late_end_ms()),
                s.late_end_ms(),
            )
        } else {
            (rng.random_range(0..=on_time_first_end), s.on_time_end_ms())
        };
        actions.push(Action {
            offset_ms: first,
            player,
            kind: ActionKind::Press {
                late: is_late,
                duplicate: false,
            },
        });
        if twice.binary_search(&player).is_ok() {
            actions.push(Action {
                offset_ms: rng.random_range(first..=end),
                player,
                kind: ActionKind::Press {
                    late: is_late,
                    duplicate: true,
                },
            });
        }
    }

    let mut buyers: Vec<usize> = (0..n).collect();
    buyers.shuffle(&mut rng);
    buyers.truncate(share_of(n, s.powerup_share));
    buyers.sort_unstable();
    for &player in &buyers {
        let kind = PowerupKind::ALL[rng.random_range(0..PowerupKind::ALL.len())];
        // Mostly the cheapest tier: that is what a new player could afford first.
        let tier = if rng.random_bool(0.75) {
            1
        } else {
            rng.random_range(2..=4)
        };
        let powerup = Powerup::new(kind, Tier::new(tier).expect("tier 1..=4"));
        actions.push(Action {
            offset_ms: rng.random_range(0..=s.on_time_end_ms()),
            player,
            kind: ActionKind::Powerup {
                powerup,
                request_id: format!("{}-{}", s.request_id_prefix, player + 1),
            },
        });
    }

    // Stable: a second press drawn at the same moment as the first stays after it.
    actions.sort_by_key(|a| (a.offset_ms, a.player));
    let counts = PlanCounts {
        players: n,
        on_time_players: on_time_players.len(),
        late_players: late_players.len(),
        absent_players: absent_players.len(),
        duplicate_players: twice.len(),
        presses: pressing.len() + twice.len(),
        powerups: buyers.len(),
    };
    Plan { actions, counts }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn settings(players: usize, seed: u64) -> PlanSettings {
        PlanSettings {
            seed,
            ..PlanSettings::new(players, 20_000)
        }
    }

    fn presses_by_player(p: &Plan) -> BTreeMap<usize, Vec<(i64, bool, bool)>> {
        let mut m: BTreeMap<usize, Vec<_>> = BTreeMap::new();
        for a in &p.actions {
            if let ActionKind::Press { late, duplicate } = a.kind {
                m.entry(a.player)
                    .or_default()
                    .push((a.offset_ms, late, duplicate));
            }
        }
        m
    }

    #[test]
    fn counts_for_the_default_shares() {
        let p = plan(&settings(300, 42));
        assert_eq!(
            p.counts,
            PlanCounts {
                players: 300,
                on_time_players: 255,
                late_players: 30,
                absent_players: 15,
                duplicate_players: 29, // 10 % of the 285 pressing players, rounded
                presses: 285 + 29,
                powerups: 15,
            }
        );
        // The counts are those of the actions.
        let presses = p
            .actions
            .iter()
            .filter(|a| matches!(a.kind, ActionKind::Press { .. }));
        assert_eq!(presses.clone().count(), p.counts.presses);
        let late = presses
            .clone()
            .filter(|a| {
                matches!(
                    a.kind,
                    ActionKind::Press {
                        late: true,
                        duplicate: false
                    }
                )
            })
            .count();
        assert_eq!(late, 30);
        let dups = presses
            .filter(|a| {
                matches!(
                    a.kind,
                    ActionKind::Press {
                        duplicate: true,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(dups, 29);
    }

    #[test]
    fn the_same_seed_gives_the_same_plan_and_another_seed_another() {
        assert_eq!(plan(&settings(300, 7)), plan(&settings(300, 7)));
        let (a, b) = (plan(&settings(300, 7)), plan(&settings(300, 8)));
        assert_eq!(a.counts, b.counts);
        assert_ne!(a.actions, b.actions);
    }

    #[test]
    fn actions_are_in_time_order() {
        let p = plan(&settings(300, 11));
        assert!(
            p.actions
                .windows(2)
                .all(|w| (w[0].offset_ms, w[0].player) <= (w[1].offset_ms, w[1].player))
        );
    }

    #[test]
    fn on_time_presses_are_inside_the_window_and_late_ones_after_it() {
        for seed in 0..50 {
            let s = settings(200, seed);
            let p = plan(&s);
            for a in &p.actions {
                match a.kind {
                    ActionKind::Press {
                        late: false,
                        duplicate,
                    } => {
                        assert!(
                            a.offset_ms >= 0 && a.offset_ms <= s.window_ms - s.margin_ms,
                            "{a:?}"
                        );
                        if !duplicate {
                            assert!(
                                a.offset_ms as f64 <= (s.window_ms - s.margin_ms) as f64 * s.spread
                            );
                        }
                    }
                    ActionKind::Press { late: true, .. } => {
                        assert!(a.offset_ms > s.window_ms + s.margin_ms, "{a:?}");
                        assert!(
                            a.offset_ms <= s.window_ms + s.margin_ms + s.late_by_ms,
                            "{a:?}"
                        );
                    }
                    ActionKind::Powerup { .. } => {
                        assert!((0..=s.window_ms - s.margin_ms).contains(&a.offset_ms));
                    }
                }
            }
        }
    }

    #[test]
    fn a_second_press_follows_the_first_in_the_same_class() {
        let p = plan(&settings(500, 3));
        for (player, presses) in presses_by_player(&p) {
            match presses.as_slice() {
                [(_, _, false)] => {}
                [(t1, late1, false), (t2, late2, true)] => {
                    assert!(t1 <= t2, "player {player}: {presses:?}");
                    assert_eq!(late1, late2, "player {player}");
                }
                other => panic!("player {player}: {other:?}"),
            }
        }
    }

    #[test]
    fn absent_players_never_press_and_every_other_player_does() {
        let p = plan(&settings(300, 9));
        let pressing: BTreeSet<usize> = presses_by_player(&p).into_keys().collect();
        assert_eq!(pressing.len(), 300 - p.counts.absent_players);
    }

    #[test]
    fn purchases_are_unique_per_player_and_mostly_tier_one() {
        let s = PlanSettings {
            powerup_share: 1.0,
            request_id_prefix: "round-9".into(),
            ..settings(400, 5)
        };
        let p = plan(&s);
        let buys: Vec<_> = p
            .actions
            .iter()
            .filter_map(|a| match &a.kind {
                ActionKind::Powerup {
                    powerup,
                    request_id,
                } => Some((a.player, *powerup, request_id.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(buys.len(), 400);
        let ids: BTreeSet<_> = buys.iter().map(|b| b.2.clone()).collect();
        assert_eq!(ids.len(), 400);
        assert!(ids.iter().all(|id| id.starts_with("round-9-")));
        let tier1 = buys.iter().filter(|b| b.1.tier.get() == 1).count();
        assert!((250..350).contains(&tier1), "{tier1}");
    }

    #[test]
    fn extreme_shares() {
        let everyone_late = PlanSettings {
            late_share: 1.0,
            absent_share: 0.0,
            ..settings(50, 1)
        };
        assert_eq!(plan(&everyone_late).counts.late_players, 50);
        let nobody = PlanSettings {
            absent_share: 1.0,
            late_share: 0.0,
            ..settings(50, 1)
        };
        let p = plan(&nobody);
        assert_eq!(p.counts.presses, 0);
        assert_eq!(p.counts.duplicate_players, 0);
        let empty = plan(&settings(0, 1));
        assert!(empty.actions.is_empty());
        let all_twice = PlanSettings {
            duplicate_share: 1.0,
            ..settings(10, 2)
        };
        let p = plan(&all_twice);
        assert_eq!(p.counts.presses, 2 * (10 - p.counts.absent_players));
    }

    #[test]
    fn invalid_settings_are_named() {
        let bad = |f: fn(&mut PlanSettings)| {
            let mut s = settings(10, 1);
            f(&mut s);
            s.validate().unwrap_err()
        };
        assert!(bad(|s| s.late_share = 1.5).contains("late share"));
        assert!(bad(|s| s.spread = 0.0).contains("spread"));
        assert!(bad(|s| s.margin_ms = 20_000).contains("margin"));
        assert!(
            bad(|s| {
                s.late_share = 0.6;
                s.absent_share = 0.6;
            })
            .contains("more than 1")
        );
        assert!(bad(|s| s.late_by_ms = 0).contains("late-by"));
    }

    #[test]
    fn default_margin_is_a_tenth_of_the_window_within_bounds() {
        assert_eq!(default_margin_ms(20_000), 1_000);
        assert_eq!(default_margin_ms(5_000), 500);
        assert_eq!(default_margin_ms(1_000), 200);
        assert_eq!(default_margin_ms(300), 150);
        assert_eq!(default_margin_ms(60_000), 1_000);
    }
}
