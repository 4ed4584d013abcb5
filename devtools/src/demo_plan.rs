//! What the demo's players do (pure): each player has a persona drawn from the seed, and decides
//! each round from what they did before — their own fold — when to press, whether to press
//! again, and when they can afford a powerup. Nothing here reads a clock or a queue.
//!
//! Times are offsets in ms from the round's opening. With `length` the time from opening to
//! close (the base window plus the push's fan-out), `window` the base window and `margin` a
//! safety gap:
//!
//! - an on-time press is sent in `[margin, length − margin]`;
//! - a late press in `[length + margin, length + window / 2 − margin]`: too late without an
//!   extender, in time with an `EXTENDER 1.5` or more (deadline `length + (e − 1) × window`);
//! - a player's own messages are at least `gap` apart, so their order is never in doubt.
//!
//! Delivery disorder (with [`Disorder::Some`]) is decided here too: some purchases and presses
//! are sent with an SQS `DelaySeconds`, and a few players register with a delay at the first
//! round, so that their first press reaches the handler before their registration does.

use buttonparty::rules::{self, Millis, Player, Powerup, PowerupKind, Rounds, Tier};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// How much delivery disorder the demo causes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Disorder {
    /// Every message is delivered at once and only once, in about the order it was sent.
    None,
    /// Some messages are delayed (SQS `DelaySeconds`), some are taken by a consumer that
    /// "crashes" and are delivered again, one round message is late, a few registrations too.
    #[default]
    Some,
}

impl Disorder {
    /// Whether any disorder is caused.
    pub fn on(self) -> bool {
        self == Self::Some
    }
}

/// Who a player is.
#[derive(Debug, Clone, PartialEq)]
pub struct Persona {
    /// Chance to press in a round.
    pub press_rate: f64,
    /// Chance to press a second time in a round.
    pub twice_rate: f64,
    /// Chance to press only after the close (without an extender: too late).
    pub late_rate: f64,
    /// The powerup the player saves up for (presses every round until it is bought).
    pub saves_for: Option<PowerupKind>,
    /// Tries to buy a powerup early, before affording it.
    pub impatient: bool,
    /// Sends each purchase twice (a client's retry: the same `request_id`).
    pub retries: bool,
    /// Registers only when the first round opens, with a delayed message.
    pub registers_late: bool,
}

/// The personas of `players` players, drawn from `seed`: savers of each powerup type (at least
/// one of each when there are 6 players or more), a few impatient buyers, players who retry
/// their purchases, and (with disorder) a few late registrations; the rest press with a rate of
/// 0.98, 0.92 or 0.8.
pub fn cast(players: usize, seed: u64, disorder: Disorder) -> Vec<Persona> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6361_7374);
    let mut out: Vec<Persona> = (0..players)
        .map(|_| {
            let press_rate = match rng.random_range(0..100) {
                0..35 => 0.98,
                35..75 => 0.92,
                _ => 0.8,
            };
            Persona {
                press_rate,
                twice_rate: 0.08,
                late_rate: 0.04,
                saves_for: None,
                impatient: false,
                retries: false,
                registers_late: false,
            }
        })
        .collect();
    let mut order: Vec<usize> = (0..players).collect();
    order.shuffle(&mut rng);
    let share = |pct: usize, min: usize| (players * pct / 100).max(min).min(players);
    let savers = if players >= 6 { share(6, 1) } else { 0 };
    let mut next = order.into_iter();
    for kind in PowerupKind::ALL {
        for i in next.by_ref().take(savers) {
            let p = &mut out[i];
            p.saves_for = Some(kind);
            p.press_rate = 1.0;
            p.late_rate = 0.0;
            p.retries = rng.random_bool(0.3);
        }
    }
    let impatient = if players >= 10 { share(3, 1) } else { 0 };
    for i in next.by_ref().take(impatient) {
        out[i].impatient = true;
        out[i].retries = true;
    }
    let late = if disorder.on() && players >= 10 {
        share(1, 2)
    } else {
        0
    };
    for i in next.take(late) {
        out[i].registers_late = true;
    }
    out
}

/// The timing of one round, ms from its opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// From opening to close (base window + fan-out).
    pub length: Millis,
    /// The base window (what an extender stretches).
    pub window: Millis,
    /// Safety gap around every boundary.
    pub margin: Millis,
    /// Least time between two messages of one player.
    pub gap: Millis,
}

impl Timing {
    /// The timing of a round `length` long with base window `window`: margin `window / 8`
    /// between 150 and 400 ms, gap at least the margin and 300 ms.
    pub fn new(length: Millis, window: Millis) -> Self {
        let margin = (window / 8).clamp(150, 400);
        Self {
            length,
            window,
            margin,
            gap: margin.max(300),
        }
    }

    /// Last offset of an on-time send.
    pub fn on_time_end(&self) -> Millis {
        self.length - self.margin
    }

    /// First offset of a late press.
    pub fn late_start(&self) -> Millis {
        self.length + self.margin
    }

    /// Last offset of a late press: inside the deadline of an `EXTENDER 1.5`.
    pub fn late_end(&self) -> Millis {
        self.length + self.window / 2 - self.margin
    }

    /// When every message of the round has been sent.
    pub fn end(&self) -> Millis {
        self.length + self.window / 2
    }

    /// Whether the zones fit: a late zone after the on-time one, room for three own messages.
    pub fn check(&self) -> Result<(), String> {
        if self.window < 3_000 {
            return Err(format!(
                "the window must be at least 3 s, got {} ms",
                self.window
            ));
        }
        if self.late_end() - self.late_start() < self.gap {
            return Err("the window is too short for late presses".into());
        }
        Ok(())
    }
}

/// What a player sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Act {
    /// An add-user message.
    Register,
    /// A press.
    Press {
        /// Planned after the close.
        late: bool,
        /// The player's second press of the round.
        second: bool,
    },
    /// A powerup purchase.
    Purchase {
        /// What.
        powerup: Powerup,
        /// The purchase's `request_id`.
        request_id: String,
        /// A client's retry of the purchase before it (same request id).
        retry: bool,
        /// Sent knowing the score is below the price.
        hopeless: bool,
    },
}

/// One planned message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Player index.
    pub player: usize,
    /// When, ms after the opening.
    pub offset: Millis,
    /// What.
    pub act: Act,
    /// SQS `DelaySeconds` (0: delivered at once).
    pub delay_secs: i32,
}

/// What a player remembers between rounds (beyond their own fold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    /// A freeze was bought: skip the next round, to use it.
    pub skip_next: bool,
    /// The impatient purchase was tried.
    pub tried_early: bool,
}

/// One round as the players see it.
#[derive(Debug, Clone)]
pub struct RoundCtx<'a> {
    /// 1-based round number.
    pub number: usize,
    /// Rounds in the demo.
    pub total: usize,
    /// Opening, epoch ms.
    pub opens_at: Millis,
    /// Timing.
    pub timing: Timing,
    /// Every round opened so far, this one included.
    pub rounds: &'a Rounds,
    /// Disorder.
    pub disorder: Disorder,
    /// Seed of the demo.
    pub seed: u64,
    /// Prefix of request ids (unique to the demo run).
    pub request_prefix: &'a str,
}

/// What a player knows of themself before the round: whether registered (a registration was
/// sent), and their state as their own fold gives it.
#[derive(Debug, Clone, Default)]
pub struct Knowledge {
    /// A registration was sent.
    pub registered: bool,
    /// Score, streak, last scored round and grants.
    pub player: Player,
}

fn tier1(kind: PowerupKind) -> Powerup {
    Powerup::new(kind, Tier::MIN)
}

/// The next multiplier a player with `player` could upgrade to at `at`, if affordable.
fn multiplier_upgrade(player: &Player, at: Millis) -> Option<Powerup> {
    let current = player
        .active(PowerupKind::Multiplier, at)
        .map_or(0, |g| g.powerup.tier.get());
    let next = Tier::new(current + 1)?;
    let p = Powerup::new(PowerupKind::Multiplier, next);
    (player.score >= p.price()).then_some(p)
}

/// The messages player `index` sends in round `ctx`, in time order.
pub fn player_round(
    ctx: &RoundCtx<'_>,
    index: usize,
    persona: &Persona,
    memory: &mut Memory,
    know: &Knowledge,
) -> Vec<Planned> {
    let t = ctx.timing;
    let mut rng = StdRng::seed_from_u64(
        ctx.seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add((ctx.number as u64) << 32)
            .wrapping_add(index as u64),
    );
    let disorder = ctx.disorder.on();
    let mut out = Vec::new();
    let mut player = know.player.clone();
    let mut cursor = t.margin;
    let mut n_purchase = 0;
    let mut buy = |out: &mut Vec<Planned>,
                   player: &mut Player,
                   offset: Millis,
                   powerup: Powerup,
                   delay_secs: i32,
                   retry: bool,
                   rng: &mut StdRng| {
        n_purchase += 1;
        let request_id = format!(
            "{}-r{}-p{}-{}",
            ctx.request_prefix,
            ctx.number,
            index + 1,
            n_purchase
        );
        let hopeless = player.score < powerup.price();
        // What the player's own fold will say: the grant from the send time.
        let _ = player.apply_purchase(powerup, ctx.opens_at + offset);
        out.push(Planned {
            player: index,
            offset,
            act: Act::Purchase {
                powerup,
                request_id: request_id.clone(),
                retry: false,
                hopeless,
            },
            delay_secs,
        });
        let mut end = offset;
        if retry && rng.random_bool(0.7) {
            end = offset + t.gap;
            out.push(Planned {
                player: index,
                offset: end,
                act: Act::Purchase {
                    powerup,
                    request_id,
                    retry: true,
                    hopeless,
                },
                delay_secs: 0,
            });
        }
        end
    };

    // Set when a delayed message was just sent: the press follows it closely, so that it is
    // delivered before that message is.
    let mut hurry = false;
    if !know.registered {
        if !(persona.registers_late && ctx.number == 1) {
            return out;
        }
        hurry = disorder;
        // Registers as the first round opens; with disorder the registration is delivered
        // after the player's first press.
        out.push(Planned {
            player: index,
            offset: 100,
            act: Act::Register,
            delay_secs: if disorder { 4 } else { 0 },
        });
        cursor = 100 + t.gap;
    }

    // At the round's start: a multiplier or an extender, or a bigger multiplier.
    let at_start = ctx.opens_at + cursor;
    let start_buy = match persona.saves_for {
        Some(kind @ (PowerupKind::Multiplier | PowerupKind::Extender))
            if player.active(kind, at_start).is_none() && player.score >= tier1(kind).price() =>
        {
            Some(tier1(kind))
        }
        // Having bought one, a bigger multiplier, now and then.
        Some(_) if player.grants.iter().any(|g| g.starts_at <= at_start) => {
            multiplier_upgrade(&player, at_start).filter(|_| rng.random_bool(0.5))
        }
        _ => None,
    };
    if let Some(powerup) = start_buy {
        // With disorder, most of these are delivered after the press that follows them.
        let delay = if disorder && rng.random_bool(0.6) {
            3
        } else {
            0
        };
        hurry |= delay > 0;
        cursor = buy(
            &mut out,
            &mut player,
            cursor,
            powerup,
            delay,
            persona.retries,
            &mut rng,
        ) + t.gap;
    }

    // The press(es).
    let early_try = persona.impatient
        && !memory.tried_early
        && ctx.number >= (ctx.total / 4).max(2)
        && player.score < tier1(PowerupKind::Multiplier).price();
    let freeze_saver = persona.saves_for == Some(PowerupKind::Freeze)
        && player.active(PowerupKind::Freeze, ctx.opens_at).is_none()
        && !player
            .grants
            .iter()
            .any(|g| g.powerup.kind == PowerupKind::Freeze);
    let skip = std::mem::take(&mut memory.skip_next);
    let presses = !skip && rng.random_bool(persona.press_rate);
    if presses {
        let extended = player.extender_halves_at(ctx.opens_at + cursor) > 2;
        let late = (extended && rng.random_bool(0.7)) || rng.random_bool(persona.late_rate);
        let (lo, hi) = if late {
            (t.late_start(), t.late_end())
        } else if hurry {
            (cursor, (cursor + 1_200).min(t.on_time_end()))
        } else if freeze_saver || early_try {
            // Early, to leave room for a purchase after the press.
            (cursor, cursor + (t.on_time_end() - cursor) / 3)
        } else {
            (cursor, t.on_time_end())
        };
        let lo = lo.max(cursor);
        if lo <= hi {
            let first = rng.random_range(lo..=hi);
            let delay = if disorder && rng.random_bool(0.06) {
                rng.random_range(1..=2)
            } else {
                0
            };
            out.push(Planned {
                player: index,
                offset: first,
                act: Act::Press {
                    late,
                    second: false,
                },
                delay_secs: delay,
            });
            let _ = rules::judge_press(Some(&mut player), ctx.rounds, ctx.opens_at + first);
            cursor = first + t.gap;
            if rng.random_bool(persona.twice_rate) && first + t.gap <= hi {
                let second = rng.random_range(first + t.gap..=hi);
                out.push(Planned {
                    player: index,
                    offset: second,
                    act: Act::Press { late, second: true },
                    delay_secs: 0,
                });
                cursor = second + t.gap;
            }
        }
    }

    // After the press: a freeze (then the next round is skipped, to use it), or an early try.
    // The last moment for a purchase, leaving room for its retry.
    let last = t.on_time_end() - t.gap - rng.random_range(0..=t.margin / 2);
    if freeze_saver && player.score >= tier1(PowerupKind::Freeze).price() && cursor <= last {
        let delay = if disorder && rng.random_bool(0.5) {
            2
        } else {
            0
        };
        buy(
            &mut out,
            &mut player,
            last,
            tier1(PowerupKind::Freeze),
            delay,
            persona.retries,
            &mut rng,
        );
        memory.skip_next = true;
    } else if early_try && cursor <= last {
        memory.tried_early = true;
        let kind = PowerupKind::ALL[rng.random_range(0..PowerupKind::ALL.len())];
        buy(
            &mut out,
            &mut player,
            cursor.max(t.length / 2).min(last),
            tier1(kind),
            0,
            persona.retries,
            &mut rng,
        );
    }
    out.sort_by_key(|p| p.offset);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use buttonparty::rules::Round;

    use super::*;

    const T0: Millis = 1_800_000_000_000;

    fn play(players: usize, rounds: usize, seed: u64, disorder: Disorder) -> Vec<Vec<Planned>> {
        let personas = cast(players, seed, disorder);
        let timing = Timing::new(5_000, 5_000);
        let mut memory = vec![Memory::default(); players];
        let mut know: Vec<Knowledge> = personas
            .iter()
            .map(|p| Knowledge {
                registered: !p.registers_late,
                player: Player::default(),
            })
            .collect();
        let mut history = Vec::new();
        let mut all = Vec::new();
        for r in 1..=rounds {
            let opens = T0 + r as i64 * 20_000;
            history.push(Round::new(opens, 5_000));
            let rs = Rounds::new(history.clone());
            let ctx = RoundCtx {
                number: r,
                total: rounds,
                opens_at: opens,
                timing,
                rounds: &rs,
                disorder,
                seed,
                request_prefix: "t",
            };
            let mut round = Vec::new();
            for (i, p) in personas.iter().enumerate() {
                let acts = player_round(&ctx, i, p, &mut memory[i], &know[i]);
                // The players' own fold, as the demo keeps it.
                for a in &acts {
                    let at = opens + a.offset;
                    match &a.act {
                        Act::Register => know[i].registered = true,
                        Act::Press { .. } => {
                            let _ = rules::judge_press(Some(&mut know[i].player), &rs, at);
                        }
                        Act::Purchase {
                            powerup,
                            retry: false,
                            ..
                        } => {
                            let _ = know[i].player.apply_purchase(*powerup, at);
                        }
                        Act::Purchase { .. } => {}
                    }
                }
                round.extend(acts);
            }
            all.push(round);
        }
        all
    }

    #[test]
    fn twelve_rounds_show_every_powerup_and_long_streaks() {
        let rounds = play(300, 12, 1, Disorder::Some);
        let mut kinds = BTreeMap::new();
        for a in rounds.iter().flatten() {
            if let Act::Purchase {
                powerup,
                hopeless: false,
                retry: false,
                ..
            } = &a.act
            {
                *kinds.entry(powerup.kind).or_insert(0) += 1;
            }
        }
        assert_eq!(kinds.len(), 3, "{kinds:?}");
        // Impatient buyers try too early.
        assert!(
            rounds
                .iter()
                .flatten()
                .any(|a| matches!(a.act, Act::Purchase { hopeless: true, .. }))
        );
        // Late registrations in round 1 only, delayed.
        let regs: Vec<_> = rounds
            .iter()
            .enumerate()
            .flat_map(|(r, acts)| acts.iter().map(move |a| (r, a)))
            .filter(|(_, a)| a.act == Act::Register)
            .collect();
        assert!(!regs.is_empty());
        assert!(regs.iter().all(|(r, a)| *r == 0 && a.delay_secs == 4));
    }

    #[test]
    fn a_players_messages_are_apart_and_inside_their_zones() {
        let timing = Timing::new(5_000, 5_000);
        for disorder in [Disorder::None, Disorder::Some] {
            for acts in play(200, 12, 7, disorder) {
                let mut by_player: BTreeMap<usize, Vec<&Planned>> = BTreeMap::new();
                for a in &acts {
                    by_player.entry(a.player).or_default().push(a);
                    match a.act {
                        Act::Press { late: true, .. } => assert!(
                            (timing.late_start()..=timing.late_end()).contains(&a.offset),
                            "{a:?}"
                        ),
                        _ => assert!((100..=timing.on_time_end()).contains(&a.offset), "{a:?}"),
                    }
                    if disorder == Disorder::None {
                        assert_eq!(a.delay_secs, 0);
                    }
                }
                for (_, mine) in by_player {
                    for w in mine.windows(2) {
                        assert!(w[1].offset - w[0].offset >= timing.gap, "{w:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_game() {
        assert_eq!(
            play(50, 12, 3, Disorder::Some),
            play(50, 12, 3, Disorder::Some)
        );
        assert_ne!(
            play(50, 12, 3, Disorder::Some),
            play(50, 12, 4, Disorder::Some)
        );
    }

    #[test]
    fn timing_zones() {
        let t = Timing::new(5_000, 5_000);
        assert_eq!(
            (t.margin, t.on_time_end(), t.late_start(), t.late_end()),
            (400, 4_600, 5_400, 7_100)
        );
        // The late zone is inside an EXTENDER 1.5's deadline and after the close.
        let round = Round::new(0, 5_000);
        assert!(t.late_end() < round.deadline(3) && t.late_start() > round.closes_at);
        assert!(Timing::new(3_000, 3_000).check().is_ok());
        assert!(Timing::new(2_000, 2_000).check().is_err());
        // With a fan-out, the zones follow the close.
        let f = Timing::new(6_000, 5_000);
        assert_eq!((f.on_time_end(), f.late_end()), (5_600, 8_100));
    }
}
