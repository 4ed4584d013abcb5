//! The pure game rules of ButtonParty (SPEC §3): which press scores, how streaks grow and break,
//! how many points a press is worth, and what a powerup costs and does.
//!
//! Everything here is deterministic: no I/O, no clock reads, no async, no logging. Times are epoch
//! milliseconds ([`Millis`]); the caller passes the SQS `SentTimestamp` of a message as its time,
//! and the "now" of a read. Fractional levels (the 1.5 extender) are handled exactly by working in
//! *halves* of a level (1.5 is 3 halves, ×1 is 2 halves), so no float ever enters a rule.
//! Scores use saturating integer arithmetic: a press never overflows a score nor makes it negative.

use std::collections::BTreeSet;
use std::fmt;

/// An instant or a duration in milliseconds (instants are milliseconds since the Unix epoch).
pub type Millis = i64;

/// One second in milliseconds.
pub const SECOND_MS: Millis = 1_000;

/// One hour in milliseconds.
pub const HOUR_MS: Millis = 3_600 * SECOND_MS;

/// How long a MULTIPLIER or an EXTENDER lasts (a FREEZE lasts its level in hours).
pub const BOOST_DURATION_MS: Millis = 6 * HOUR_MS;

/// The longest any powerup lasts (a tier-4 freeze: 48 hours).
pub const MAX_POWERUP_DURATION_MS: Millis = 48 * HOUR_MS;

/// Powerup price by tier (index 0 is tier 1).
pub const PRICES: [i64; 4] = [60, 150, 330, 700];

/// A level of ×1 in halves: the multiplier or extender that applies when none is active.
pub const UNIT_LEVEL_HALVES: u32 = 2;

/// From this streak on, a press is worth the square of the streak instead of the streak.
pub const SQUARE_FROM_STREAK: u32 = 10;

/// Levels in halves, by kind (in [`PowerupKind::ALL`] order) and tier.
const LEVEL_HALVES: [[u32; 4]; 3] = [
    // FREEZE: 6, 12, 24, 48 hours.
    [12, 24, 48, 96],
    // MULTIPLIER: ×2, ×3, ×5, ×10.
    [4, 6, 10, 20],
    // EXTENDER: ×1.5, ×2, ×3, ×5.
    [3, 4, 6, 10],
];

/// A round as the rules see it: it opens at `opens_at`, and a press without extender scores until
/// `closes_at` (the base window plus the time the push needs to reach every phone, SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// When the round opened (epoch ms). Rounds are totally ordered by this instant.
    pub opens_at: Millis,
    /// The last instant a press without extender scores (epoch ms): `opens_at + window +
    /// fan-out`.
    pub closes_at: Millis,
    /// The base press window in ms, what an extender stretches: a press with extender `e` scores
    /// until `closes_at + (e − 1) × window`. At most `closes_at − opens_at`.
    pub window: Millis,
}

impl Round {
    /// A round opening at `opens_at` with a press window of `window` ms and no fan-out time.
    pub fn new(opens_at: Millis, window: Millis) -> Self {
        Self {
            opens_at,
            closes_at: opens_at.saturating_add(window),
            window,
        }
    }

    /// A round as announced: opening at `opens_at`, closing at `closes_at`, with base window
    /// `window` (`None`: `closes_at − opens_at`, what messages without `window_ms` mean). The
    /// window is clamped to `[0, closes_at − opens_at]`.
    pub fn announced(opens_at: Millis, closes_at: Millis, window: Option<Millis>) -> Self {
        let whole = closes_at.saturating_sub(opens_at).max(0);
        Self {
            opens_at,
            closes_at,
            window: window.unwrap_or(whole).clamp(0, whole),
        }
    }

    /// The time from opening to close in ms (`closes_at - opens_at`): the base window plus the
    /// fan-out time.
    pub fn length(&self) -> Millis {
        self.closes_at.saturating_sub(self.opens_at)
    }

    /// The last instant a press scores in this round for a player whose extender level is
    /// `extender_halves` halves (2 = no extender): `closes_at + window × (halves − 2) / 2`,
    /// computed exactly with integers (rounded down to the millisecond) and clamped to the `i64`
    /// range.
    pub fn deadline(&self, extender_halves: u32) -> Millis {
        let extra = i128::from(extender_halves) - i128::from(UNIT_LEVEL_HALVES);
        let stretched = (i128::from(self.window) * extra).div_euclid(2);
        let deadline = i128::from(self.closes_at) + stretched;
        i64::try_from(deadline).unwrap_or(if deadline < 0 { i64::MIN } else { i64::MAX })
    }
}

/// The type of a powerup (`powerUpType` in a purchase message).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PowerupKind {
    /// Rounds opening while it is active don't break the streak; lasts its level in hours.
    Freeze,
    /// The points of each scoring press are multiplied by its level; lasts 6 h.
    Multiplier,
    /// The player's press window is multiplied by its level; lasts 6 h.
    Extender,
}

impl PowerupKind {
    /// Every kind, in catalogue order.
    pub const ALL: [PowerupKind; 3] = [Self::Freeze, Self::Multiplier, Self::Extender];

    /// The wire name: `"FREEZE"`, `"MULTIPLIER"` or `"EXTENDER"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Freeze => "FREEZE",
            Self::Multiplier => "MULTIPLIER",
            Self::Extender => "EXTENDER",
        }
    }

    /// Parses a wire name, ASCII case-insensitively (`"freeze"`, `"Freeze"`, ...). No trimming.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str().eq_ignore_ascii_case(s))
    }

    fn index(self) -> usize {
        match self {
            Self::Freeze => 0,
            Self::Multiplier => 1,
            Self::Extender => 2,
        }
    }
}

impl fmt::Display for PowerupKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tier (1 to 4) of a powerup: it sets both the level and the price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tier(u8);

impl Tier {
    /// The lowest tier.
    pub const MIN: Tier = Tier(1);
    /// The highest tier.
    pub const MAX: Tier = Tier(4);

    /// The tier `n`, if `1 <= n <= 4`.
    pub const fn new(n: u8) -> Option<Self> {
        if n >= Self::MIN.0 && n <= Self::MAX.0 {
            Some(Self(n))
        } else {
            None
        }
    }

    /// The tier number, 1 to 4.
    pub const fn get(self) -> u8 {
        self.0
    }

    /// Every tier, lowest first.
    pub fn all() -> impl Iterator<Item = Tier> {
        (Self::MIN.0..=Self::MAX.0).map(Self)
    }

    fn index(self) -> usize {
        usize::from(self.0 - 1)
    }
}

/// A powerup of a kind at a tier. Levels: FREEZE 6, 12, 24, 48 (hours); MULTIPLIER 2, 3, 5, 10;
/// EXTENDER 1.5, 2, 3, 5. Prices by tier: 60, 150, 330, 700.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Powerup {
    /// The type of powerup.
    pub kind: PowerupKind,
    /// Its tier, which sets its level and price.
    pub tier: Tier,
}

impl Powerup {
    /// The powerup of `kind` at `tier`.
    pub const fn new(kind: PowerupKind, tier: Tier) -> Self {
        Self { kind, tier }
    }

    /// From a level as the client sends it (`quantity`/`level`), e.g. (Extender, 1.5) -> tier 1.
    /// Exact match only (1.5 yes, 1.49 no; 2.0 == 2 yes). `None` for an unknown level, NaN or an
    /// infinity.
    pub fn from_level(kind: PowerupKind, level: f64) -> Option<Self> {
        if !level.is_finite() {
            return None;
        }
        // Doubling a finite f64 is exact (or overflows to infinity, which matches nothing).
        let doubled = level * 2.0;
        Tier::all()
            .map(|tier| Self::new(kind, tier))
            .find(|powerup| f64::from(powerup.level_halves()) == doubled)
    }

    /// From a level in halves (e.g. (Extender, 3) -> tier 1). `None` for an unknown level.
    pub fn from_level_halves(kind: PowerupKind, halves: u32) -> Option<Self> {
        Tier::all()
            .map(|tier| Self::new(kind, tier))
            .find(|powerup| powerup.level_halves() == halves)
    }

    /// The price in points: 60, 150, 330 or 700 by tier.
    pub fn price(&self) -> i64 {
        PRICES[self.tier.index()]
    }

    /// How long the powerup lasts once bought: FREEZE its level in hours, the others 6 h.
    pub fn duration(&self) -> Millis {
        match self.kind {
            // Level hours = halves × 30 min.
            PowerupKind::Freeze => Millis::from(self.level_halves()) * (HOUR_MS / 2),
            PowerupKind::Multiplier | PowerupKind::Extender => BOOST_DURATION_MS,
        }
    }

    /// The level in halves (EXTENDER 1.5 -> 3, MULTIPLIER 5 -> 10, FREEZE 6 -> 12), for exact
    /// integer math.
    pub fn level_halves(&self) -> u32 {
        LEVEL_HALVES[self.kind.index()][self.tier.index()]
    }

    /// For display / JSON: the level as `f64` (1.5, 2.0, ...). Exact for every catalogue level.
    pub fn level(&self) -> f64 {
        f64::from(self.level_halves()) / 2.0
    }

    /// The catalogue: the 12 powerups, by kind ([`PowerupKind::ALL`] order) then tier.
    pub fn all() -> impl Iterator<Item = Powerup> {
        PowerupKind::ALL
            .into_iter()
            .flat_map(|kind| Tier::all().map(move |tier| Self::new(kind, tier)))
    }
}

impl fmt::Display for Powerup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.level())
    }
}

/// One purchase that took effect: the powerup is active over `[starts_at, expires_at)` unless a
/// later grant of the same kind replaced it (then it ends at that grant's start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// What was bought.
    pub powerup: Powerup,
    /// When the purchase took effect (its message's `SentTimestamp`).
    pub starts_at: Millis,
    /// `starts_at + powerup.duration()`: the first instant it is no longer active.
    pub expires_at: Millis,
}

impl Grant {
    /// The grant of `powerup` bought at `starts_at`, lasting the powerup's duration.
    pub fn new(powerup: Powerup, starts_at: Millis) -> Self {
        Self {
            powerup,
            starts_at,
            expires_at: starts_at.saturating_add(powerup.duration()),
        }
    }
}

/// What the rules need to know about one registered player (a view loaded by the caller).
/// `Player::default()` is a newly registered player (score 0, streak 0, nothing bought).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Player {
    /// Points: both the ranking and the currency.
    pub score: i64,
    /// Streak as of `last_scored` (the stored value, not the effective one; see
    /// [`effective_streak`]).
    pub streak: u32,
    /// `opens_at` of the latest round the player scored in.
    pub last_scored: Option<Millis>,
    /// `opens_at` of every round the player scored in that the caller loaded (must at least
    /// include every round at or after the earliest round the presses being judged can belong
    /// to). Used for "already scored in that round".
    pub scored_rounds: BTreeSet<Millis>,
    /// The player's grants (any order), at least those that can matter for the presses being
    /// judged and for freezes since `last_scored`. Of two grants of the same kind with the same
    /// `starts_at`, the one later in the vector is the newer (push grants in the order they were
    /// applied).
    pub grants: Vec<Grant>,
}

impl Player {
    /// The grant of `kind` active at instant `t`: the grant with the latest `starts_at <= t` of
    /// that kind, if `t < its expires_at` (a newer grant replaces an older one).
    pub fn active(&self, kind: PowerupKind, t: Millis) -> Option<Grant> {
        self.grants
            .iter()
            .filter(|grant| grant.powerup.kind == kind && grant.starts_at <= t)
            // `max_by_key` keeps the last of equal keys: the later-applied grant.
            .max_by_key(|grant| grant.starts_at)
            .filter(|grant| t < grant.expires_at)
            .copied()
    }

    /// Whether a freeze is active at instant `t`.
    pub fn freeze_active_at(&self, t: Millis) -> bool {
        self.active(PowerupKind::Freeze, t).is_some()
    }

    /// The multiplier level in halves at instant `t` ([`UNIT_LEVEL_HALVES`] when none is active).
    pub fn multiplier_halves_at(&self, t: Millis) -> u32 {
        self.level_halves_at(PowerupKind::Multiplier, t)
    }

    /// The extender level in halves at instant `t` ([`UNIT_LEVEL_HALVES`] when none is active).
    pub fn extender_halves_at(&self, t: Millis) -> u32 {
        self.level_halves_at(PowerupKind::Extender, t)
    }

    fn level_halves_at(&self, kind: PowerupKind, t: Millis) -> u32 {
        self.active(kind, t)
            .map_or(UNIT_LEVEL_HALVES, |grant| grant.powerup.level_halves())
    }

    /// Applies a purchase of `powerup` taking effect at `at` (see [`judge_purchase`]): on success
    /// the price is deducted and the grant is pushed onto `grants` (replacing, from `at`, any
    /// active powerup of the same kind). A rejected purchase changes nothing.
    pub fn apply_purchase(
        &mut self,
        powerup: Powerup,
        at: Millis,
    ) -> Result<Purchase, PurchaseReject> {
        let purchase = judge_purchase(self.score, powerup, at)?;
        self.score = purchase.new_score;
        self.grants.push(purchase.grant);
        Ok(purchase)
    }
}

/// History of rounds, sorted by `opens_at` ascending, without two rounds opening at the same
/// instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rounds(Vec<Round>);

impl Rounds {
    /// Sorts the rounds by `opens_at` and keeps the first of rounds opening at the same instant.
    pub fn new(mut v: Vec<Round>) -> Self {
        v.sort_by_key(|round| round.opens_at);
        v.dedup_by_key(|round| round.opens_at);
        Self(v)
    }

    /// Adds a round in order. Returns `false` (and changes nothing) when a round opening at the
    /// same instant is already known.
    pub fn insert(&mut self, round: Round) -> bool {
        match self.0.binary_search_by_key(&round.opens_at, |r| r.opens_at) {
            Ok(_) => false,
            Err(i) => {
                self.0.insert(i, round);
                true
            }
        }
    }

    /// The latest round with `opens_at <= t`.
    pub fn round_at(&self, t: Millis) -> Option<Round> {
        let end = self.count_opened_by(t);
        end.checked_sub(1).map(|i| self.0[i])
    }

    /// Rounds with `a < opens_at < b` (strictly between), as a slice.
    pub fn between(&self, a: Millis, b: Millis) -> &[Round] {
        let start = self.count_opened_by(a);
        let end = self.0.partition_point(|round| round.opens_at < b);
        self.0.get(start..end).unwrap_or_default()
    }

    /// Rounds with `after < opens_at <= up_to` (every round up to `up_to` when `after` is
    /// `None`), as a slice.
    pub fn opened_after_until(&self, after: Option<Millis>, up_to: Millis) -> &[Round] {
        let start = after.map_or(0, |a| self.count_opened_by(a));
        let end = self.count_opened_by(up_to);
        self.0.get(start..end).unwrap_or_default()
    }

    /// The latest round.
    pub fn latest(&self) -> Option<Round> {
        self.0.last().copied()
    }

    /// All rounds, by `opens_at` ascending.
    pub fn as_slice(&self) -> &[Round] {
        &self.0
    }

    /// The number of rounds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no round is known.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The number of rounds with `opens_at <= t`.
    fn count_opened_by(&self, t: Millis) -> usize {
        self.0.partition_point(|round| round.opens_at <= t)
    }
}

impl From<Vec<Round>> for Rounds {
    fn from(v: Vec<Round>) -> Self {
        Self::new(v)
    }
}

/// Why a press did not score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// The user is not registered.
    UnknownUser,
    /// No round opened at or before the press time.
    NoRound,
    /// The press came after `opens_at + window × extender` of its round.
    TooLate,
    /// The user already scored in that round.
    AlreadyScored,
}

impl RejectReason {
    /// A stable snake_case name for logs and counters: `"unknown_user"`, `"no_round"`,
    /// `"too_late"` or `"already_scored"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::UnknownUser => "unknown_user",
            Self::NoRound => "no_round",
            Self::TooLate => "too_late",
            Self::AlreadyScored => "already_scored",
        }
    }

    /// NoRound and TooLate may be caused by a round the caller has not learnt of yet (a press
    /// can reach the handler before the round's timestamp message does).
    pub fn may_depend_on_unknown_round(&self) -> bool {
        matches!(self, Self::NoRound | Self::TooLate)
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for RejectReason {}

/// A press that scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scored {
    /// The round the press scored in.
    pub round: Round,
    /// The player's streak with this press.
    pub new_streak: u32,
    /// The points the press earned (already added, saturating, to the score).
    pub points: i64,
}

/// Judges a press at `press_at` (the SQS `SentTimestamp`) and, when it scores, UPDATES `player`
/// (score saturating-added, streak, `last_scored`, `scored_rounds`) so a batch can judge the next
/// press of the same player against the new state. `player` `None` = unregistered.
///
/// The press belongs to the latest round that opened at or before `press_at`. Checks, in order:
/// registered ([`RejectReason::UnknownUser`]), a round exists ([`RejectReason::NoRound`]), within
/// `opens_at + window × extender` ([`RejectReason::TooLate`]; the extender active at `press_at`),
/// not already scored in that round ([`RejectReason::AlreadyScored`]). A rejected press changes
/// nothing.
///
/// The new streak is `streak + 1` when every round strictly between the last scored round and this
/// one opened while a freeze was active (or the player never scored), else 1. A press in a round
/// earlier than `last_scored` (out-of-order redelivery) scores as a first press (streak 1) and
/// leaves `streak` and `last_scored` as they are. Points: see [`points`], with the multiplier
/// active at `press_at`.
pub fn judge_press(
    player: Option<&mut Player>,
    rounds: &Rounds,
    press_at: Millis,
) -> Result<Scored, RejectReason> {
    let player = player.ok_or(RejectReason::UnknownUser)?;
    let round = rounds.round_at(press_at).ok_or(RejectReason::NoRound)?;
    if press_at > round.deadline(player.extender_halves_at(press_at)) {
        return Err(RejectReason::TooLate);
    }
    if player.scored_rounds.contains(&round.opens_at) || player.last_scored == Some(round.opens_at)
    {
        return Err(RejectReason::AlreadyScored);
    }

    let in_order = player.last_scored.is_none_or(|last| last < round.opens_at);
    let new_streak = if in_order && streak_survives_until(player, rounds, round.opens_at) {
        player.streak.saturating_add(1)
    } else {
        1
    };
    let points = points(new_streak, player.multiplier_halves_at(press_at));

    player.score = player.score.saturating_add(points);
    player.scored_rounds.insert(round.opens_at);
    if in_order {
        player.streak = new_streak;
        player.last_scored = Some(round.opens_at);
    }
    Ok(Scored {
        round,
        new_streak,
        points,
    })
}

/// Whether every round strictly between the player's last scored round and `opens_at` opened
/// while the player's freeze was active (true when the player never scored).
fn streak_survives_until(player: &Player, rounds: &Rounds, opens_at: Millis) -> bool {
    player.last_scored.is_none_or(|last| {
        rounds
            .between(last, opens_at)
            .iter()
            .all(|round| player.freeze_active_at(round.opens_at))
    })
}

/// Points for a scoring press with new streak `streak`: `streak` if below 10, else `streak²`;
/// times the multiplier level given in halves (`multiplier_halves` 2 = ×1), rounded down.
/// Exact integer arithmetic, saturating at `i64::MAX`; never negative.
pub fn points(streak: u32, multiplier_halves: u32) -> i64 {
    let streak = u128::from(streak);
    let base = if streak < u128::from(SQUARE_FROM_STREAK) {
        streak
    } else {
        streak * streak
    };
    // At most (2^32)^2 × 2^32 < 2^96: no overflow in u128.
    let total = base * u128::from(multiplier_halves) / 2;
    i64::try_from(total).unwrap_or(i64::MAX)
}

/// The streak a read shows at `now` (SPEC §3): a round the player did not score in, and that was
/// not excused by a freeze, breaks the streak from the moment the next round opens.
///
/// Let R be the rounds with `last_scored < opens_at <= now` (every round up to `now` when the
/// player never scored). If every round of R except the latest one (which has not been followed
/// by a next round yet) opened while a freeze was active, the stored streak; otherwise 0.
pub fn effective_streak(player: &Player, rounds: &Rounds, now: Millis) -> u32 {
    let since = rounds.opened_after_until(player.last_scored, now);
    let broken = since.split_last().is_some_and(|(_latest, earlier)| {
        earlier
            .iter()
            .any(|round| !player.freeze_active_at(round.opens_at))
    });
    if broken { 0 } else { player.streak }
}

/// A purchase that succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purchase {
    /// The price paid.
    pub price: i64,
    /// The score after paying.
    pub new_score: i64,
    /// The powerup granted: from the purchase's time for the powerup's duration.
    pub grant: Grant,
}

/// Why a purchase was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PurchaseReject {
    /// The score is below the price.
    InsufficientPoints {
        /// The player's score.
        score: i64,
        /// The powerup's price.
        price: i64,
    },
}

impl PurchaseReject {
    /// A stable snake_case name for logs and counters: `"insufficient_points"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::InsufficientPoints { .. } => "insufficient_points",
        }
    }
}

impl fmt::Display for PurchaseReject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InsufficientPoints { score, price } => {
                write!(f, "insufficient_points: score {score} < price {price}")
            }
        }
    }
}

impl std::error::Error for PurchaseReject {}

/// Judges a purchase of `powerup` by a player with `score`, taking effect at `at` (its message's
/// `SentTimestamp`). It succeeds only when `score >= price`: then the price is deducted and the
/// powerup is granted over `[at, at + duration)`, replacing any active one of the same kind (see
/// [`Player::active`]). A rejected purchase changes nothing.
pub fn judge_purchase(
    score: i64,
    powerup: Powerup,
    at: Millis,
) -> Result<Purchase, PurchaseReject> {
    let price = powerup.price();
    if score < price {
        return Err(PurchaseReject::InsufficientPoints { score, price });
    }
    Ok(Purchase {
        price,
        // score >= price > 0: no overflow, never negative.
        new_score: score - price,
        grant: Grant::new(powerup, at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MINUTE_MS: Millis = 60 * SECOND_MS;
    const WINDOW: Millis = 60 * SECOND_MS;
    /// An arbitrary epoch instant (2023-11-14).
    const T0: Millis = 1_700_000_000_000;

    use super::PowerupKind::{Extender, Freeze, Multiplier};

    /// The instant `h` hours after T0.
    fn hour(h: i64) -> Millis {
        T0 + h * HOUR_MS
    }

    fn round(opens_at: Millis) -> Round {
        Round::new(opens_at, WINDOW)
    }

    fn rounds(opens: &[Millis]) -> Rounds {
        Rounds::new(opens.iter().map(|&o| round(o)).collect())
    }

    fn powerup(kind: PowerupKind, level: f64) -> Powerup {
        Powerup::from_level(kind, level).expect("a catalogue level")
    }

    fn grant(kind: PowerupKind, level: f64, starts_at: Millis) -> Grant {
        Grant::new(powerup(kind, level), starts_at)
    }

    fn with_grants(grants: &[Grant]) -> Player {
        Player {
            grants: grants.to_vec(),
            ..Player::default()
        }
    }

    /// A player who last scored in the round opening at `last`, with `streak`.
    fn scored_at(last: Millis, streak: u32, grants: &[Grant]) -> Player {
        Player {
            score: 100,
            streak,
            last_scored: Some(last),
            scored_rounds: BTreeSet::from([last]),
            grants: grants.to_vec(),
        }
    }

    /// Judges a press and checks that a rejection left the player unchanged.
    fn press(player: &mut Player, rounds: &Rounds, at: Millis) -> Result<Scored, RejectReason> {
        let before = player.clone();
        let result = judge_press(Some(player), rounds, at);
        if result.is_err() {
            assert_eq!(*player, before, "a rejected press changed the player");
        }
        result
    }

    // ---- Who can score, and in which round ----

    #[test]
    fn press_by_unregistered_user_is_rejected() {
        let history = rounds(&[hour(0), hour(1)]);
        for (name, at) in [
            ("before any round", hour(-1)),
            ("inside a window", hour(1) + SECOND_MS),
            ("after a window", hour(1) + 2 * WINDOW),
        ] {
            assert_eq!(
                judge_press(None, &history, at),
                Err(RejectReason::UnknownUser),
                "{name}"
            );
        }
    }

    #[test]
    fn press_before_any_round_is_rejected() {
        for (name, history, at) in [
            ("no round at all", rounds(&[]), hour(0)),
            (
                "just before the first round",
                rounds(&[hour(0)]),
                hour(0) - 1,
            ),
            ("long before the first round", rounds(&[hour(5)]), hour(0)),
        ] {
            let mut player = Player::default();
            assert_eq!(
                press(&mut player, &history, at),
                Err(RejectReason::NoRound),
                "{name}"
            );
        }
    }

    #[test]
    fn press_belongs_to_latest_round_opened_at_or_before_press_time() {
        // Two overlapping rounds (an `open-round` ignores the minimum gap) at 1 h and 1 h + 30 s.
        let history = rounds(&[hour(0), hour(1), hour(1) + 30 * SECOND_MS, hour(2)]);
        for (name, at, expected) in [
            ("at the opening instant", hour(1), Ok(hour(1))),
            ("inside the window", hour(0) + 10 * SECOND_MS, Ok(hour(0))),
            (
                "the later overlapping round wins",
                hour(1) + 40 * SECOND_MS,
                Ok(hour(1) + 30 * SECOND_MS),
            ),
            (
                "1 ms before a round belongs to the previous one",
                hour(2) - 1,
                Err(RejectReason::TooLate),
            ),
            ("after the last round", hour(2) + WINDOW, Ok(hour(2))),
        ] {
            let mut player = Player::default();
            let result = press(&mut player, &history, at).map(|s| s.round.opens_at);
            assert_eq!(result, expected, "{name}");
            if let Ok(opens_at) = expected {
                assert_eq!(history.round_at(at), Some(round(opens_at)), "{name}");
            }
        }
        assert_eq!(
            history.round_at(hour(2) - 1).map(|r| r.opens_at),
            Some(hour(1) + 30 * SECOND_MS)
        );
    }

    #[test]
    fn press_after_window_is_rejected() {
        let history = rounds(&[hour(0), hour(1)]);
        for (name, at) in [
            ("1 ms after the window", hour(0) + WINDOW + 1),
            ("a second after the window", hour(0) + WINDOW + SECOND_MS),
            ("just before the next round", hour(1) - 1),
            ("after the last round's window", hour(1) + WINDOW + 1),
        ] {
            let mut player = scored_at(hour(-1), 3, &[]);
            assert_eq!(
                press(&mut player, &history, at),
                Err(RejectReason::TooLate),
                "{name}"
            );
        }
    }

    #[test]
    fn press_exactly_at_window_end_scores() {
        for (name, window, offset) in [
            ("at the opening", WINDOW, 0),
            ("1 ms before the end", WINDOW, WINDOW - 1),
            ("exactly at the end", WINDOW, WINDOW),
            ("end of a 10 s window", 10 * SECOND_MS, 10 * SECOND_MS),
            ("end of a 2 min window", 2 * MINUTE_MS, 2 * MINUTE_MS),
        ] {
            let history = Rounds::new(vec![Round::new(hour(0), window)]);
            let mut player = Player::default();
            let scored = press(&mut player, &history, hour(0) + offset);
            assert!(scored.is_ok(), "{name}: {scored:?}");
            assert_eq!(
                press(&mut Player::default(), &history, hour(0) + window + 1),
                Err(RejectReason::TooLate),
                "{name}: 1 ms later"
            );
        }
    }

    #[test]
    fn extender_stretches_window() {
        for (level, window, last_ok_offset) in [
            (1.5, WINDOW, 90 * SECOND_MS),
            (2.0, WINDOW, 120 * SECOND_MS),
            (3.0, WINDOW, 180 * SECOND_MS),
            (5.0, WINDOW, 300 * SECOND_MS),
            // 1001 ms × 1.5 = 1501.5 ms: exact integer math rounds down.
            (1.5, 1_001, 1_501),
            (5.0, 1_001, 5_005),
        ] {
            let history = Rounds::new(vec![Round::new(hour(0), window)]);
            let grants = [grant(Extender, level, hour(-1))];
            let mut player = with_grants(&grants);
            assert!(
                press(&mut player, &history, hour(0) + last_ok_offset).is_ok(),
                "×{level} of {window} ms: last instant scores"
            );
            let mut player = with_grants(&grants);
            assert_eq!(
                press(&mut player, &history, hour(0) + last_ok_offset + 1),
                Err(RejectReason::TooLate),
                "×{level} of {window} ms: 1 ms later is too late"
            );
        }
    }

    #[test]
    fn fan_out_time_is_not_stretched_by_an_extender() {
        // Opens at 0, base window 60 s, 40 s of fan-out: closes at 100 s.
        let r = Round::announced(hour(0), hour(0) + 100 * SECOND_MS, Some(WINDOW));
        assert_eq!(r.length(), 100 * SECOND_MS);
        for (halves, deadline) in [
            (2, 100 * SECOND_MS),
            (3, 130 * SECOND_MS),
            (4, 160 * SECOND_MS),
            (6, 220 * SECOND_MS),
            (10, 340 * SECOND_MS),
        ] {
            assert_eq!(
                r.deadline(halves),
                hour(0) + deadline,
                "×{}",
                halves as f64 / 2.0
            );
        }
        // Without a window in the message, the whole round is the window.
        let old = Round::announced(hour(0), hour(0) + WINDOW, None);
        assert_eq!(old, Round::new(hour(0), WINDOW));
        assert_eq!(old.deadline(3), hour(0) + 90 * SECOND_MS);
        // A window longer than the round is clamped to it.
        assert_eq!(Round::announced(hour(0), hour(0) + 10, Some(20)).window, 10);
        let history = Rounds::new(vec![r]);
        let mut player = Player::default();
        assert!(press(&mut player, &history, hour(0) + 100 * SECOND_MS).is_ok());
        assert_eq!(
            press(
                &mut Player::default(),
                &history,
                hour(0) + 100 * SECOND_MS + 1
            ),
            Err(RejectReason::TooLate)
        );
    }

    #[test]
    fn extender_counts_only_while_active_at_press_time() {
        let history = rounds(&[hour(0)]);
        let late = hour(0) + 80 * SECOND_MS; // inside ×1.5 (90 s), outside ×1 (60 s)
        for (name, grants, expected_ok) in [
            ("no extender", vec![], false),
            (
                "bought within 6 h before",
                vec![grant(Extender, 1.5, hour(-5))],
                true,
            ),
            (
                "expired just before the press",
                vec![grant(Extender, 1.5, late - BOOST_DURATION_MS)],
                false,
            ),
            (
                "bought after the opening, before the press",
                vec![grant(Extender, 1.5, hour(0) + 30 * SECOND_MS)],
                true,
            ),
            (
                "bought exactly at the press",
                vec![grant(Extender, 1.5, late)],
                true,
            ),
            (
                "bought after the press",
                vec![grant(Extender, 5.0, late + 1)],
                false,
            ),
            (
                "a multiplier is no extender",
                vec![grant(Multiplier, 10.0, hour(-1))],
                false,
            ),
        ] {
            let mut player = with_grants(&grants);
            let result = press(&mut player, &history, late);
            if expected_ok {
                assert!(result.is_ok(), "{name}: {result:?}");
            } else {
                assert_eq!(result, Err(RejectReason::TooLate), "{name}");
            }
        }
    }

    #[test]
    fn second_press_in_same_round_is_rejected() {
        let history = rounds(&[hour(0), hour(1), hour(2)]);
        for (name, first, second) in [
            ("twice in the window", hour(1), hour(1) + SECOND_MS),
            ("same instant", hour(1) + 5, hour(1) + 5),
            ("at the window's end", hour(1), hour(1) + WINDOW),
        ] {
            let mut player = Player::default();
            assert!(press(&mut player, &history, first).is_ok(), "{name}");
            assert_eq!(
                press(&mut player, &history, second),
                Err(RejectReason::AlreadyScored),
                "{name}"
            );
        }
        // The scored rounds as loaded from storage, including an earlier round scored out of order.
        let mut player = scored_at(hour(2), 4, &[]);
        player.scored_rounds.insert(hour(0));
        for at in [hour(0) + 1, hour(2) + 1] {
            assert_eq!(
                press(&mut player, &history, at),
                Err(RejectReason::AlreadyScored)
            );
        }
        // `last_scored` alone is enough, even if the caller did not load it into `scored_rounds`.
        let mut player = Player {
            last_scored: Some(hour(1)),
            streak: 2,
            ..Player::default()
        };
        assert_eq!(
            press(&mut player, &history, hour(1) + 1),
            Err(RejectReason::AlreadyScored)
        );
    }

    #[test]
    fn too_late_is_reported_before_already_scored() {
        // After the window of a round already scored in, the press may belong to a round the
        // caller has not learnt of yet: report the retryable reason.
        let history = rounds(&[hour(0)]);
        let mut player = scored_at(hour(0), 1, &[]);
        let rejected = press(&mut player, &history, hour(0) + WINDOW + 1);
        assert_eq!(rejected, Err(RejectReason::TooLate));
        assert!(RejectReason::TooLate.may_depend_on_unknown_round());
    }

    // ---- Streaks ----

    #[test]
    fn streak_continues_when_no_round_between() {
        for stored in [0, 1, 5, 9, 100, u32::MAX - 1] {
            let history = rounds(&[hour(0), hour(1)]);
            let mut player = scored_at(hour(0), stored, &[]);
            let scored = press(&mut player, &history, hour(1) + SECOND_MS).unwrap();
            assert_eq!(scored.new_streak, stored + 1, "from {stored}");
            assert_eq!(player.streak, stored + 1);
            assert_eq!(player.last_scored, Some(hour(1)));
            assert!(player.scored_rounds.contains(&hour(1)));
        }
        // The streak saturates instead of wrapping.
        let history = rounds(&[hour(0), hour(1)]);
        let mut player = scored_at(hour(0), u32::MAX, &[]);
        assert_eq!(
            press(&mut player, &history, hour(1)).unwrap().new_streak,
            u32::MAX
        );
    }

    #[test]
    fn first_press_of_a_new_player_starts_streak_at_one() {
        // Rounds the player was not registered for don't matter: the stored streak is 0.
        for history in [rounds(&[hour(0)]), rounds(&[hour(-3), hour(-2), hour(0)])] {
            let mut player = Player::default();
            let scored = press(&mut player, &history, hour(0) + 1).unwrap();
            assert_eq!((scored.new_streak, scored.points), (1, 1));
            assert_eq!(
                (player.score, player.streak, player.last_scored),
                (1, 1, Some(hour(0)))
            );
        }
    }

    #[test]
    fn missed_round_resets_streak_to_one() {
        for (name, opens) in [
            ("one missed round", vec![hour(0), hour(1), hour(2)]),
            (
                "three missed rounds",
                vec![hour(0), hour(1), hour(2), hour(3), hour(4)],
            ),
            (
                "a missed overlapping round",
                vec![hour(0), hour(0) + 30 * SECOND_MS, hour(1)],
            ),
        ] {
            let history = rounds(&opens);
            let last = *opens.last().unwrap();
            let mut player = scored_at(hour(0), 7, &[]);
            let scored = press(&mut player, &history, last + 1).unwrap();
            assert_eq!((scored.new_streak, scored.points), (1, 1), "{name}");
            assert_eq!(player.streak, 1, "{name}");
            assert_eq!(player.score, 101, "{name}");
        }
    }

    #[test]
    fn freeze_excuses_missed_rounds() {
        // Scored at 0 h with streak 4, missed 1 h and 2 h, presses at 3 h.
        let history = rounds(&[hour(0), hour(1), hour(2), hour(3)]);
        for (name, grants, expected) in [
            ("no freeze", vec![], 1),
            (
                "a 6 h freeze covering both",
                vec![grant(Freeze, 6.0, hour(0) + MINUTE_MS)],
                5,
            ),
            (
                "a freeze starting exactly at the missed round",
                vec![grant(Freeze, 6.0, hour(1))],
                5,
            ),
            (
                "a freeze covering only the first",
                vec![grant(Freeze, 6.0, hour(1) - BOOST_DURATION_MS + 1)],
                1,
            ),
            (
                "a freeze bought after the first missed round opened",
                vec![grant(Freeze, 6.0, hour(1) + 1)],
                1,
            ),
            (
                "two freezes in a row",
                vec![
                    grant(Freeze, 6.0, hour(2) - HOUR_MS / 2),
                    grant(Freeze, 6.0, hour(1) - BOOST_DURATION_MS + 1),
                ],
                5,
            ),
            (
                "a freeze only over the scored rounds",
                vec![grant(Freeze, 6.0, hour(-6))],
                1,
            ),
        ] {
            let mut player = scored_at(hour(0), 4, &grants);
            let scored = press(&mut player, &history, hour(3) + 1).unwrap();
            assert_eq!(scored.new_streak, expected, "{name}");
        }
    }

    #[test]
    fn freeze_expired_before_round_does_not_excuse() {
        for (name, level, missed_at, expected) in [
            ("expires exactly at the opening", 6.0, hour(6), 1),
            ("expires 1 ms after the opening", 6.0, hour(6) - 1, 3),
            ("a 12 h freeze lasts 12 h", 12.0, hour(12) - 1, 3),
            ("a 12 h freeze ends at 12 h", 12.0, hour(12), 1),
            ("a 48 h freeze lasts 48 h", 48.0, hour(48) - 1, 3),
        ] {
            // Freeze bought at 0 h; the player scored at -1 h, missed `missed_at`, presses after.
            let next = missed_at + HOUR_MS;
            let history = rounds(&[hour(-1), missed_at, next]);
            let mut player = scored_at(hour(-1), 2, &[grant(Freeze, level, hour(0))]);
            let scored = press(&mut player, &history, next).unwrap();
            assert_eq!(scored.new_streak, expected, "{name}");
        }
    }

    #[test]
    fn replaced_freeze_ends_at_replacement() {
        // A 48 h freeze at 0 h replaced by a 6 h freeze at 1 h (which ends at 7 h).
        let grants = [grant(Freeze, 48.0, hour(0)), grant(Freeze, 6.0, hour(1))];
        let player = with_grants(&grants);
        assert_eq!(player.active(Freeze, hour(0) + 1), Some(grants[0]));
        assert_eq!(player.active(Freeze, hour(1)), Some(grants[1]));
        assert_eq!(player.active(Freeze, hour(7) - 1), Some(grants[1]));
        assert_eq!(player.active(Freeze, hour(7)), None);
        assert_eq!(player.active(Freeze, hour(20)), None);
        for (name, missed_at, expected) in [
            ("missed under the replacement", hour(5), 3),
            ("missed after the replacement ended", hour(8), 1),
            ("missed under the original", hour(0) + HOUR_MS / 2, 3),
        ] {
            let history = rounds(&[hour(-1), missed_at, hour(30)]);
            let mut player = scored_at(hour(-1), 2, &grants);
            let scored = press(&mut player, &history, hour(30)).unwrap();
            assert_eq!(scored.new_streak, expected, "{name}");
        }
    }

    #[test]
    fn out_of_order_press_scores_as_first_press() {
        // A press of 0 h judged after the player already scored at 2 h (redelivered late).
        let history = rounds(&[hour(0), hour(1), hour(2)]);
        for (name, grants, points) in [
            ("no multiplier", vec![], 1),
            (
                "with a ×3 multiplier",
                vec![grant(Multiplier, 3.0, hour(-1))],
                3,
            ),
        ] {
            let mut player = scored_at(hour(2), 4, &grants);
            let scored = press(&mut player, &history, hour(0) + SECOND_MS).unwrap();
            assert_eq!((scored.new_streak, scored.points), (1, points), "{name}");
            assert_eq!(scored.round, round(hour(0)));
            assert_eq!(player.streak, 4, "{name}: streak kept");
            assert_eq!(
                player.last_scored,
                Some(hour(2)),
                "{name}: last_scored kept"
            );
            assert_eq!(player.score, 100 + points, "{name}");
            assert!(player.scored_rounds.contains(&hour(0)), "{name}");
            assert_eq!(
                press(&mut player, &history, hour(0) + 2 * SECOND_MS),
                Err(RejectReason::AlreadyScored),
                "{name}: once only"
            );
        }
    }

    #[test]
    fn effective_streak_zero_after_next_round_opens() {
        // Scored at 0 h (streak 7), missed 1 h; 2 h opens.
        let history = rounds(&[hour(0), hour(1), hour(2), hour(3)]);
        let player = scored_at(hour(0), 7, &[]);
        for (name, now) in [
            ("as the next round opens", hour(2)),
            ("during the next round", hour(2) + SECOND_MS),
            ("much later", hour(100)),
        ] {
            assert_eq!(effective_streak(&player, &history, now), 0, "{name}");
        }
        // A player who never scored shows 0 whatever happens.
        assert_eq!(effective_streak(&Player::default(), &history, hour(5)), 0);
    }

    #[test]
    fn effective_streak_kept_while_latest_round_is_open() {
        let history = rounds(&[hour(0), hour(1), hour(2)]);
        let player = scored_at(hour(0), 7, &[]);
        for (name, now) in [
            ("right after scoring", hour(0) + SECOND_MS),
            ("just before the next round", hour(1) - 1),
            ("as the next round opens", hour(1)),
            ("after the next round's window", hour(1) + WINDOW + 1),
            ("1 ms before the round after", hour(2) - 1),
        ] {
            assert_eq!(effective_streak(&player, &history, now), 7, "{name}");
        }
        // A read taken before the last scored round (clock skew) shows the stored streak.
        assert_eq!(effective_streak(&player, &history, hour(-1)), 7);
    }

    #[test]
    fn effective_streak_kept_when_freeze_excuses_missed_rounds() {
        let history = rounds(&[hour(0), hour(1), hour(2), hour(3), hour(10)]);
        let grants = [grant(Freeze, 6.0, hour(0) + MINUTE_MS)];
        let player = scored_at(hour(0), 7, &grants);
        for (name, now, expected) in [
            ("two excused rounds, third open", hour(3) + 1, 7),
            ("the third was excused too", hour(9), 7),
            (
                "every missed round before the latest was excused",
                hour(10),
                7,
            ),
        ] {
            assert_eq!(effective_streak(&player, &history, now), expected, "{name}");
        }
        let history = rounds(&[hour(0), hour(1), hour(7), hour(8)]);
        assert_eq!(effective_streak(&player, &history, hour(8)), 0);
    }

    // ---- Points ----

    #[test]
    fn points_are_streak_below_ten() {
        for streak in 0..10 {
            assert_eq!(points(streak, UNIT_LEVEL_HALVES), i64::from(streak));
        }
    }

    #[test]
    fn points_are_square_from_ten() {
        for (streak, expected) in [
            (10, 100),
            (11, 121),
            (20, 400),
            (100, 10_000),
            (3_037_000_499, 9_223_372_030_926_249_001),
        ] {
            assert_eq!(
                points(streak, UNIT_LEVEL_HALVES),
                expected,
                "streak {streak}"
            );
        }
    }

    #[test]
    fn multiplier_multiplies_points() {
        for (streak, level, expected) in
            [(1, 2.0, 2), (9, 3.0, 27), (10, 5.0, 500), (12, 10.0, 1_440)]
        {
            let halves = powerup(Multiplier, level).level_halves();
            assert_eq!(points(streak, halves), expected, "{streak} × {level}");
        }
        // Through a press: the multiplier active at the press time counts.
        let history = rounds(&[hour(0), hour(1)]);
        for (name, grants, expected) in [
            ("none", vec![], 100),
            ("×5", vec![grant(Multiplier, 5.0, hour(-4))], 500),
            (
                "expired",
                vec![grant(Multiplier, 10.0, hour(1) - BOOST_DURATION_MS)],
                100,
            ),
            (
                "replaced by ×2",
                vec![
                    grant(Multiplier, 10.0, hour(-2)),
                    grant(Multiplier, 2.0, hour(-1)),
                ],
                200,
            ),
            (
                "an extender is no multiplier",
                vec![grant(Extender, 5.0, hour(0))],
                100,
            ),
        ] {
            // Scored at 0 h with streak 9: the press at 1 h makes streak 10.
            let mut player = scored_at(hour(0), 9, &grants);
            let scored = press(&mut player, &history, hour(1) + 1).unwrap();
            assert_eq!(scored.points, expected, "{name}");
            assert_eq!(player.score, 100 + expected, "{name}");
        }
    }

    #[test]
    fn points_saturate_instead_of_overflowing() {
        for (streak, halves) in [
            (u32::MAX, UNIT_LEVEL_HALVES),
            (u32::MAX, 20),
            (3_037_000_500, UNIT_LEVEL_HALVES),
            (3_037_000_499, 4),
        ] {
            assert_eq!(points(streak, halves), i64::MAX, "{streak} × {halves}/2");
        }
    }

    #[test]
    fn score_saturates_instead_of_overflowing() {
        let history = rounds(&[hour(0), hour(1)]);
        for start in [i64::MAX - 5, i64::MAX - 1, i64::MAX] {
            let mut player = scored_at(hour(0), 20, &[grant(Multiplier, 10.0, hour(0))]);
            player.score = start;
            let scored = press(&mut player, &history, hour(1)).unwrap();
            assert_eq!(scored.points, 4_410);
            assert_eq!(player.score, i64::MAX, "from {start}");
        }
    }

    // ---- Purchases and the catalogue ----

    #[test]
    fn purchase_needs_score_at_least_price() {
        for (score, tier, ok) in [
            (i64::MIN, 1, false),
            (-1, 1, false),
            (0, 1, false),
            (59, 1, false),
            (60, 1, true),
            (149, 2, false),
            (150, 2, true),
            (329, 3, false),
            (330, 3, true),
            (699, 4, false),
            (700, 4, true),
            (i64::MAX, 4, true),
        ] {
            for kind in PowerupKind::ALL {
                let powerup = Powerup::new(kind, Tier::new(tier).unwrap());
                let result = judge_purchase(score, powerup, T0);
                assert_eq!(result.is_ok(), ok, "{score} for {powerup}");
                if !ok {
                    let price = powerup.price();
                    assert_eq!(
                        result,
                        Err(PurchaseReject::InsufficientPoints { score, price })
                    );
                }
            }
        }
        assert_eq!(
            PurchaseReject::InsufficientPoints {
                score: 1,
                price: 60
            }
            .as_str(),
            "insufficient_points"
        );
    }

    #[test]
    fn purchase_deducts_price() {
        for (score, kind, level, new_score) in [
            (60, Freeze, 6.0, 0),
            (1_000, Multiplier, 3.0, 850),
            (1_000, Extender, 3.0, 670),
            (700, Extender, 5.0, 0),
            (i64::MAX, Freeze, 48.0, i64::MAX - 700),
        ] {
            let powerup = powerup(kind, level);
            let purchase = judge_purchase(score, powerup, hour(0)).unwrap();
            assert_eq!(purchase.price, powerup.price());
            assert_eq!(purchase.new_score, new_score, "{powerup}");
            assert_eq!(
                purchase.grant,
                Grant {
                    powerup,
                    starts_at: hour(0),
                    expires_at: hour(0) + powerup.duration()
                }
            );
            let mut player = Player {
                score,
                ..Player::default()
            };
            assert_eq!(player.apply_purchase(powerup, hour(0)), Ok(purchase));
            assert_eq!(player.score, new_score);
            assert_eq!(player.grants, vec![purchase.grant]);
        }
    }

    #[test]
    fn purchase_replaces_active_powerup_of_same_type() {
        let mut player = Player {
            score: 10_000,
            ..Player::default()
        };
        let freeze = player
            .apply_purchase(powerup(Freeze, 24.0), hour(0))
            .unwrap();
        let first = player
            .apply_purchase(powerup(Multiplier, 10.0), hour(0))
            .unwrap();
        let second = player
            .apply_purchase(powerup(Multiplier, 2.0), hour(1))
            .unwrap();
        assert_eq!(player.score, 10_000 - 330 - 700 - 60);
        for (name, kind, at, expected) in [
            ("before the purchase", Multiplier, hour(0) - 1, None),
            ("the first", Multiplier, hour(1) - 1, Some(first.grant)),
            (
                "replaced from its start",
                Multiplier,
                hour(1),
                Some(second.grant),
            ),
            (
                "restarted: lasts 6 h from the replacement",
                Multiplier,
                hour(7) - 1,
                Some(second.grant),
            ),
            ("then over", Multiplier, hour(7), None),
            (
                "other kinds untouched",
                Freeze,
                hour(23),
                Some(freeze.grant),
            ),
            ("never bought", Extender, hour(1), None),
        ] {
            assert_eq!(player.active(kind, at), expected, "{name}");
        }
        assert_eq!(player.multiplier_halves_at(hour(1)), 4);
        assert_eq!(player.extender_halves_at(hour(1)), UNIT_LEVEL_HALVES);
        // Same instant: the later-applied grant wins.
        let again = player
            .apply_purchase(powerup(Multiplier, 5.0), hour(1))
            .unwrap();
        assert_eq!(player.active(Multiplier, hour(1)), Some(again.grant));
    }

    #[test]
    fn active_powerup_is_latest_started_grant() {
        // Grants in any order.
        let grants = [
            grant(Extender, 3.0, hour(2)),
            grant(Extender, 1.5, hour(0)),
            grant(Freeze, 6.0, hour(1)),
        ];
        let player = with_grants(&grants);
        for (name, at, expected) in [
            ("before any", hour(0) - 1, None),
            ("the older", hour(1), Some(grants[1])),
            ("the newer from its start", hour(2), Some(grants[0])),
            ("the newer until its end", hour(8) - 1, Some(grants[0])),
            ("none after", hour(8), None),
        ] {
            assert_eq!(player.active(Extender, at), expected, "{name}");
        }
        assert!(player.freeze_active_at(hour(1)));
        assert!(!player.freeze_active_at(hour(7)));
    }

    #[test]
    fn powerup_prices_by_tier() {
        for kind in PowerupKind::ALL {
            for (tier, price) in [(1, 60), (2, 150), (3, 330), (4, 700)] {
                let powerup = Powerup::new(kind, Tier::new(tier).unwrap());
                assert_eq!(powerup.price(), price, "{powerup}");
            }
        }
    }

    #[test]
    fn powerup_levels_and_durations_by_tier() {
        for (kind, level, tier, halves, duration) in [
            (Freeze, 6.0, 1, 12, 6 * HOUR_MS),
            (Freeze, 12.0, 2, 24, 12 * HOUR_MS),
            (Freeze, 24.0, 3, 48, 24 * HOUR_MS),
            (Freeze, 48.0, 4, 96, 48 * HOUR_MS),
            (Multiplier, 2.0, 1, 4, 6 * HOUR_MS),
            (Multiplier, 3.0, 2, 6, 6 * HOUR_MS),
            (Multiplier, 5.0, 3, 10, 6 * HOUR_MS),
            (Multiplier, 10.0, 4, 20, 6 * HOUR_MS),
            (Extender, 1.5, 1, 3, 6 * HOUR_MS),
            (Extender, 2.0, 2, 4, 6 * HOUR_MS),
            (Extender, 3.0, 3, 6, 6 * HOUR_MS),
            (Extender, 5.0, 4, 10, 6 * HOUR_MS),
        ] {
            let powerup = powerup(kind, level);
            assert_eq!(powerup.tier.get(), tier, "{powerup}");
            assert_eq!(powerup.level_halves(), halves, "{powerup}");
            assert_eq!(powerup.level(), level, "{powerup}");
            assert_eq!(powerup.duration(), duration, "{powerup}");
            assert_eq!(Powerup::from_level_halves(kind, halves), Some(powerup));
        }
    }

    #[test]
    fn extender_levels_parse_exactly() {
        for (level, tier) in [
            (1.5, Some(1)),
            (2.0, Some(2)),
            (3.0, Some(3)),
            (5.0, Some(4)),
            (1.49, None),
            (1.51, None),
            (1.5 + f64::EPSILON, None),
            (2.5, None),
            (1.0, None),
            (0.0, None),
            (-1.5, None),
            (6.0, None),
            (10.0, None),
            (f64::NAN, None),
            (f64::INFINITY, None),
            (f64::MAX, None),
        ] {
            assert_eq!(
                Powerup::from_level(Extender, level).map(|p| p.tier.get()),
                tier,
                "{level}"
            );
        }
    }

    #[test]
    fn powerup_levels_parse_only_for_their_kind() {
        for powerup in Powerup::all() {
            assert_eq!(
                Powerup::from_level(powerup.kind, powerup.level()),
                Some(powerup)
            );
        }
        for (kind, level) in [
            (Freeze, 2.0),
            (Freeze, 1.5),
            (Multiplier, 1.5),
            (Multiplier, 6.0),
            (Extender, 10.0),
            (Freeze, 36.0),
        ] {
            assert_eq!(Powerup::from_level(kind, level), None, "{kind} {level}");
        }
    }

    #[test]
    fn no_powerup_outlasts_the_longest_duration() {
        let longest = Powerup::all().map(|p| p.duration()).max().unwrap();
        assert_eq!(longest, MAX_POWERUP_DURATION_MS);
    }

    #[test]
    fn catalogue_has_twelve_powerups() {
        let all: Vec<Powerup> = Powerup::all().collect();
        assert_eq!(all.len(), 12);
        let distinct: std::collections::HashSet<Powerup> = all.iter().copied().collect();
        assert_eq!(distinct.len(), 12);
        assert_eq!(all[0], powerup(Freeze, 6.0));
        assert_eq!(all[11], powerup(Extender, 5.0));
        assert_eq!(all[8].to_string(), "EXTENDER 1.5");
    }

    #[test]
    fn tier_is_one_to_four() {
        for (n, ok) in [
            (0, false),
            (1, true),
            (2, true),
            (3, true),
            (4, true),
            (5, false),
            (255, false),
        ] {
            assert_eq!(Tier::new(n).map(Tier::get), ok.then_some(n), "{n}");
        }
        assert_eq!(Tier::all().map(Tier::get).collect::<Vec<_>>(), [1, 2, 3, 4]);
    }

    #[test]
    fn powerup_type_parses_case_insensitively() {
        for (text, expected) in [
            ("FREEZE", Some(Freeze)),
            ("freeze", Some(Freeze)),
            ("Freeze", Some(Freeze)),
            ("mUlTiPlIeR", Some(Multiplier)),
            ("extender", Some(Extender)),
            ("", None),
            ("freez", None),
            (" FREEZE", None),
            ("FREEZES", None),
            ("double", None),
        ] {
            assert_eq!(PowerupKind::parse(text), expected, "{text:?}");
        }
        for kind in PowerupKind::ALL {
            assert_eq!(PowerupKind::parse(kind.as_str()), Some(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(serde_json::from_str::<PowerupKind>(&json).unwrap(), kind);
        }
    }

    #[test]
    fn rounds_are_sorted_and_deduplicated() {
        let mut history = Rounds::new(vec![
            round(hour(2)),
            round(hour(0)),
            round(hour(1)),
            Round::new(hour(0), 5 * WINDOW),
        ]);
        let opens: Vec<Millis> = history.as_slice().iter().map(|r| r.opens_at).collect();
        assert_eq!(opens, [hour(0), hour(1), hour(2)]);
        assert_eq!(history.len(), 3);
        assert!(!history.insert(round(hour(1))));
        assert!(history.insert(round(hour(1) + 1)));
        assert_eq!(history.as_slice()[2], round(hour(1) + 1));
        assert_eq!(history.latest(), Some(round(hour(2))));
        assert!(Rounds::default().is_empty());
    }

    #[test]
    fn rounds_between_is_strict() {
        let history = rounds(&[hour(0), hour(1), hour(2), hour(3)]);
        for (name, a, b, expected) in [
            (
                "excludes both ends",
                hour(0),
                hour(3),
                vec![hour(1), hour(2)],
            ),
            ("adjacent rounds", hour(0), hour(1), vec![]),
            (
                "between instants",
                hour(0) + 1,
                hour(2) + 1,
                vec![hour(1), hour(2)],
            ),
            ("reversed bounds", hour(3), hour(0), vec![]),
            (
                "everything",
                i64::MIN,
                i64::MAX,
                vec![hour(0), hour(1), hour(2), hour(3)],
            ),
        ] {
            let got: Vec<Millis> = history.between(a, b).iter().map(|r| r.opens_at).collect();
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn reject_reasons_have_stable_names() {
        for (reason, name, may_depend) in [
            (RejectReason::UnknownUser, "unknown_user", false),
            (RejectReason::NoRound, "no_round", true),
            (RejectReason::TooLate, "too_late", true),
            (RejectReason::AlreadyScored, "already_scored", false),
        ] {
            assert_eq!(reason.as_str(), name);
            assert_eq!(reason.to_string(), name);
            assert_eq!(reason.may_depend_on_unknown_round(), may_depend, "{name}");
        }
    }

    // ---- Properties ----

    /// A random history: rounds, grants, presses and a starting score.
    #[derive(Debug, Clone)]
    struct Scenario {
        rounds: Rounds,
        grants: Vec<Grant>,
        presses: Vec<Millis>,
        start_score: i64,
    }

    fn arb_powerup() -> impl Strategy<Value = Powerup> {
        prop::sample::select(Powerup::all().collect::<Vec<_>>())
    }

    fn arb_score() -> impl Strategy<Value = i64> {
        prop_oneof![0i64..5_000, (i64::MAX - 5_000)..=i64::MAX]
    }

    fn arb_scenario() -> impl Strategy<Value = Scenario> {
        (
            // (minutes since the previous round, window in seconds)
            prop::collection::vec((0i64..=600, 1i64..=300), 0..12),
            // (powerup, start in minutes from T0)
            prop::collection::vec((arb_powerup(), -600i64..=7_200), 0..8),
            // (round index, ms from its opening) in any order
            prop::collection::vec(
                (any::<prop::sample::Index>(), -60_000i64..=1_600_000),
                0..30,
            ),
            arb_score(),
        )
            .prop_map(|(round_gaps, grants, presses, start_score)| {
                let mut opens_at = T0;
                let mut list = Vec::new();
                for (gap, window) in round_gaps {
                    opens_at += gap * MINUTE_MS + 1;
                    list.push(Round::new(opens_at, window * SECOND_MS));
                }
                let rounds = Rounds::new(list);
                let presses = presses
                    .into_iter()
                    .map(|(index, offset)| {
                        let base = if rounds.is_empty() {
                            T0
                        } else {
                            rounds.as_slice()[index.index(rounds.len())].opens_at
                        };
                        base + offset
                    })
                    .collect();
                let grants = grants
                    .into_iter()
                    .map(|(powerup, start)| Grant::new(powerup, T0 + start * MINUTE_MS))
                    .collect();
                Scenario {
                    rounds,
                    grants,
                    presses,
                    start_score,
                }
            })
    }

    impl Scenario {
        fn player(&self) -> Player {
            Player {
                score: self.start_score,
                grants: self.grants.clone(),
                ..Player::default()
            }
        }
    }

    proptest! {
        #[test]
        fn prop_presses_never_lower_score_nor_overflow(scenario in arb_scenario()) {
            let mut player = scenario.player();
            for &at in &scenario.presses {
                let before = player.score;
                match judge_press(Some(&mut player), &scenario.rounds, at) {
                    Ok(scored) => {
                        prop_assert!(scored.points >= 1);
                        prop_assert!(scored.new_streak >= 1);
                        prop_assert_eq!(player.score, before.saturating_add(scored.points));
                    }
                    Err(_) => prop_assert_eq!(player.score, before),
                }
                prop_assert!(player.score >= before);
                prop_assert!(player.score >= 0);
            }
        }

        #[test]
        fn prop_rejected_press_leaves_player_unchanged(scenario in arb_scenario()) {
            let mut player = scenario.player();
            for &at in &scenario.presses {
                let before = player.clone();
                if judge_press(Some(&mut player), &scenario.rounds, at).is_err() {
                    prop_assert_eq!(&player, &before);
                }
            }
        }

        #[test]
        fn prop_effective_streak_at_most_stored_streak(
            scenario in arb_scenario(),
            reads in prop::collection::vec(-600i64..=8_000, 1..8),
        ) {
            let mut player = scenario.player();
            for &at in &scenario.presses {
                let _ = judge_press(Some(&mut player), &scenario.rounds, at);
                for &minute in &reads {
                    let shown = effective_streak(&player, &scenario.rounds, T0 + minute * MINUTE_MS);
                    prop_assert!(shown <= player.streak);
                    prop_assert!(shown == 0 || shown == player.streak);
                }
            }
        }

        #[test]
        fn prop_in_order_press_extends_the_effective_streak(scenario in arb_scenario()) {
            let mut presses = scenario.presses.clone();
            presses.sort_unstable();
            let mut player = scenario.player();
            for at in presses {
                let shown = effective_streak(&player, &scenario.rounds, at);
                if let Ok(scored) = judge_press(Some(&mut player), &scenario.rounds, at) {
                    prop_assert_eq!(scored.new_streak, shown + 1);
                    prop_assert_eq!(effective_streak(&player, &scenario.rounds, at), scored.new_streak);
                }
            }
        }

        #[test]
        fn prop_rejected_purchase_changes_nothing(
            score in any::<i64>(),
            powerup in arb_powerup(),
            at in 0i64..=4_102_444_800_000,
            grants in prop::collection::vec((arb_powerup(), any::<i64>()), 0..4),
        ) {
            let mut player = Player {
                score,
                grants: grants.into_iter().map(|(p, s)| Grant::new(p, s)).collect(),
                ..Player::default()
            };
            let before = player.clone();
            match player.apply_purchase(powerup, at) {
                Err(reject) => {
                    prop_assert!(score < powerup.price());
                    prop_assert_eq!(reject, PurchaseReject::InsufficientPoints { score, price: powerup.price() });
                    prop_assert_eq!(&player, &before);
                }
                Ok(purchase) => {
                    prop_assert!(score >= powerup.price());
                    prop_assert_eq!(purchase.new_score, score - powerup.price());
                    prop_assert!(purchase.new_score >= 0);
                    prop_assert_eq!(player.score, purchase.new_score);
                    prop_assert_eq!(player.active(powerup.kind, at), Some(purchase.grant));
                }
            }
        }

        #[test]
        fn prop_points_are_streak_below_ten_else_square(streak in 0u32..=3_037_000_499) {
            let expected = if streak < 10 { i64::from(streak) } else { i64::from(streak) * i64::from(streak) };
            prop_assert_eq!(points(streak, UNIT_LEVEL_HALVES), expected);
        }

        #[test]
        fn prop_points_never_negative_and_grow_with_streak(
            streak in any::<u32>(),
            halves in prop::sample::select(vec![2u32, 3, 4, 6, 10, 20]),
        ) {
            let here = points(streak, halves);
            prop_assert!(here >= 0);
            prop_assert!(points(streak.saturating_add(1), halves) >= here);
        }
    }
}
