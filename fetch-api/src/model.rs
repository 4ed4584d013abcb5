//! The JSON answers of the API and the pure logic that builds them from database rows: the
//! effective streak, the active powerups, the current round, ranks and username validation.
//! Nothing here reads a clock or the database; `now` is always a parameter.

use buttonparty::rules::{self, Grant, Millis, Player, PowerupKind, Round, Rounds};
use serde::{Serialize, Serializer};

/// The most entries `GET /fetch/lb` returns.
pub const LEADERBOARD_SIZE: usize = 10;

/// The longest username, in characters (SPEC §4).
pub const MAX_USERNAME_CHARS: usize = 128;

/// `GET /fetch/self`: one player's view of the game.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SelfView {
    /// The username exactly as registered.
    pub username: String,
    /// Points: both the ranking and the currency.
    pub score: i64,
    /// The effective streak at the time of the request (SPEC §3): 0 once a round the player
    /// missed, without an active freeze, has been followed by another round.
    pub streak: u32,
    /// 1-based place on the whole leaderboard (score descending, ties by username ascending in
    /// byte order).
    pub rank: u64,
    /// Whether the player has already scored in the round that is open now (false when none is).
    pub scored_in_current_round: bool,
    /// The powerups active now, one per type at most, in catalogue order (FREEZE, MULTIPLIER,
    /// EXTENDER).
    pub powerups: Vec<ActivePowerup>,
    /// The round open now (`opens_at_ms <= now < closes_at_ms`), or `null`.
    pub current_round: Option<CurrentRound>,
}

/// A powerup active at the time of the request.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ActivePowerup {
    /// `"FREEZE"`, `"MULTIPLIER"` or `"EXTENDER"`.
    #[serde(rename = "type")]
    pub kind: PowerupKind,
    /// The level as bought: hours of freeze, or the factor (6, 12, 24, 48; 2, 3, 5, 10; 1.5, 2,
    /// 3, 5).
    pub level: Level,
    /// When it stops being active (epoch ms).
    pub expires_at_ms: Millis,
}

/// A powerup level, kept in halves so that it is exact; serialized as an integer when whole
/// (`6`, `2`) and as a decimal otherwise (`1.5`), the way clients send `quantity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    /// The level times two.
    pub halves: u32,
}

impl Serialize for Level {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.halves.is_multiple_of(2) {
            serializer.serialize_u32(self.halves / 2)
        } else {
            serializer.serialize_f64(f64::from(self.halves) / 2.0)
        }
    }
}

/// The round that is open now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CurrentRound {
    /// The round's id, as the outgoing handler announced it.
    pub round_id: String,
    /// When it opened (epoch ms).
    pub opens_at_ms: Millis,
    /// When its (unextended) press window ends (epoch ms).
    pub closes_at_ms: Millis,
}

/// A round as stored, with its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundRow {
    /// The round's id.
    pub round_id: String,
    /// When it opened (epoch ms).
    pub opens_at_ms: Millis,
    /// When its press window ends (epoch ms).
    pub closes_at_ms: Millis,
}

/// One line of `GET /fetch/lb`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaderboardEntry {
    /// 1-based place.
    pub rank: u64,
    /// The username exactly as registered.
    pub username: String,
    /// Points.
    pub score: i64,
}

/// A player's stored row, as far as the view needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    /// Points.
    pub score: i64,
    /// Streak as of `last_scored_opens_at_ms` (not the effective one).
    pub streak: u32,
    /// `opens_at_ms` of the latest round the player scored in.
    pub last_scored_opens_at_ms: Option<Millis>,
}

/// Why a `username` query parameter is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    /// No `username` parameter.
    #[error("missing query parameter: username")]
    Missing,
    /// More than one `username` parameter.
    #[error("query parameter username given more than once")]
    Repeated,
    /// `username=` with nothing.
    #[error("empty username")]
    Empty,
    /// Longer than [`MAX_USERNAME_CHARS`] characters.
    #[error("username longer than 128 characters")]
    TooLong,
    /// Contains a control character.
    #[error("username contains a control character")]
    ControlCharacter,
}

/// Picks the single `username` out of decoded query pairs and checks it against SPEC §4
/// (1–128 characters, no control characters; anything else, SQL metacharacters included, is a
/// valid name).
pub fn username_from_query(pairs: &[(String, String)]) -> Result<&str, UsernameError> {
    let mut names = pairs
        .iter()
        .filter(|(key, _)| key == "username")
        .map(|(_, value)| value.as_str());
    let name = names.next().ok_or(UsernameError::Missing)?;
    if names.next().is_some() {
        return Err(UsernameError::Repeated);
    }
    validate_username(name)?;
    Ok(name)
}

/// Checks a username against SPEC §4: 1–128 characters, no control characters.
pub fn validate_username(name: &str) -> Result<(), UsernameError> {
    if name.is_empty() {
        return Err(UsernameError::Empty);
    }
    if name.chars().count() > MAX_USERNAME_CHARS {
        return Err(UsernameError::TooLong);
    }
    if name.chars().any(char::is_control) {
        return Err(UsernameError::ControlCharacter);
    }
    Ok(())
}

/// A rank from the number of players placed before the player.
pub fn rank_from_ahead(ahead: i64) -> u64 {
    u64::try_from(ahead).unwrap_or(0).saturating_add(1)
}

/// The shifts of the radix-256 score histogram `score_prefix_counts` (migration
/// `20261128000002_score_prefix_counts.sql`): row (shift, prefix) counts the players whose
/// `score >> shift == prefix`.
pub const PREFIX_SHIFTS: [u32; 8] = [0, 8, 16, 24, 32, 40, 48, 56];

/// A range of prefixes, at one shift of [`PREFIX_SHIFTS`], whose histogram rows to add up.
/// Empty when `first > last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixRange {
    /// The shift, in bits.
    pub shift_bits: u32,
    /// The first prefix of the range.
    pub first: i64,
    /// The last prefix of the range (inclusive).
    pub last: i64,
}

/// The histogram ranges whose counts add up to the number of players with a score above
/// `score` (scores are never negative; a negative `score` is treated as 0).
///
/// A score `x` is above `s` exactly when, at the highest shift `k` where their prefixes differ,
/// `x >> k > s >> k` while `x >> (k + 8) == s >> (k + 8)`: that is, `x >> k` lies in
/// `(p, p | 0xFF]` with `p = s >> k` (the prefixes above `p` under the same parent). Every such
/// prefix is at least 1, which is why the histogram keeps no row for prefix 0. At most
/// 8 × 255 rows are read, whatever the number of players.
pub fn prefix_ranges_above(score: i64) -> [PrefixRange; 8] {
    let score = score.max(0);
    PREFIX_SHIFTS.map(|shift_bits| {
        let prefix = score >> shift_bits;
        if prefix & 0xFF == 0xFF {
            PrefixRange {
                shift_bits,
                first: 1,
                last: 0,
            }
        } else {
            PrefixRange {
                shift_bits,
                first: prefix + 1,
                last: prefix | 0xFF,
            }
        }
    })
}

/// Builds the rules' view of a player from the stored row and grants (in the order they were
/// loaded, oldest first).
pub fn player(user: &UserRow, grants: Vec<Grant>) -> Player {
    Player {
        score: user.score,
        streak: user.streak,
        last_scored: user.last_scored_opens_at_ms,
        scored_rounds: Default::default(),
        grants,
    }
}

/// The effective streak at `now` ([`rules::effective_streak`]): `rounds` must hold at least
/// every round with `last_scored < opens_at <= now`.
pub fn effective_streak(player: &Player, rounds: Vec<Round>, now: Millis) -> u32 {
    rules::effective_streak(player, &Rounds::new(rounds), now)
}

/// The powerups active at `now`: per type, the latest grant started at or before `now`, if it
/// has not expired (a newer grant replaces an older one), in catalogue order.
pub fn active_powerups(player: &Player, now: Millis) -> Vec<ActivePowerup> {
    PowerupKind::ALL
        .into_iter()
        .filter_map(|kind| player.active(kind, now))
        .map(|grant| ActivePowerup {
            kind: grant.powerup.kind,
            level: Level {
                halves: grant.powerup.level_halves(),
            },
            expires_at_ms: grant.expires_at,
        })
        .collect()
}

/// The round open at `now` given the latest round opened at or before `now`: open while
/// `opens_at_ms <= now < closes_at_ms`.
pub fn current_round(latest: Option<RoundRow>, now: Millis) -> Option<CurrentRound> {
    latest
        .filter(|round| round.opens_at_ms <= now && now < round.closes_at_ms)
        .map(|round| CurrentRound {
            round_id: round.round_id,
            opens_at_ms: round.opens_at_ms,
            closes_at_ms: round.closes_at_ms,
        })
}

/// Numbers leaderboard rows (already sorted best first) from 1.
pub fn leaderboard(rows: Vec<(String, i64)>) -> Vec<LeaderboardEntry> {
    (1u64..)
        .zip(rows)
        .map(|(rank, (username, score))| LeaderboardEntry {
            rank,
            username,
            score,
        })
        .collect()
}

/// Decodes a stored VARBINARY name or id as text. Names are stored as the UTF-8 the client sent;
/// anything else is shown with replacement characters rather than failing the whole answer.
pub fn text_from_bytes(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use buttonparty::rules::{HOUR_MS, Powerup, Tier};
    use serde_json::json;

    const T0: Millis = 1_800_000_000_000;

    fn grant(kind: PowerupKind, tier: u8, starts_at: Millis) -> Grant {
        Grant::new(Powerup::new(kind, Tier::new(tier).unwrap()), starts_at)
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn user(streak: u32, last: Option<Millis>) -> UserRow {
        UserRow {
            score: 10,
            streak,
            last_scored_opens_at_ms: last,
        }
    }

    #[test]
    fn username_is_taken_from_the_query() {
        assert_eq!(
            username_from_query(&pairs(&[("x", "1"), ("username", "ann")])),
            Ok("ann")
        );
        assert_eq!(
            username_from_query(&pairs(&[("username", "'; DROP TABLE users; --")])),
            Ok("'; DROP TABLE users; --")
        );
        assert_eq!(
            username_from_query(&pairs(&[("user", "ann")])),
            Err(UsernameError::Missing)
        );
        assert_eq!(
            username_from_query(&pairs(&[("username", "")])),
            Err(UsernameError::Empty)
        );
        assert_eq!(
            username_from_query(&pairs(&[("username", "a"), ("username", "b")])),
            Err(UsernameError::Repeated)
        );
    }

    #[test]
    fn username_limits_count_characters_not_bytes() {
        assert_eq!(validate_username(&"é".repeat(128)), Ok(()));
        assert_eq!(validate_username("🎉 Zoë"), Ok(()));
        assert_eq!(
            validate_username(&"a".repeat(129)),
            Err(UsernameError::TooLong)
        );
        assert_eq!(
            validate_username("a\u{7}b"),
            Err(UsernameError::ControlCharacter)
        );
        assert_eq!(
            validate_username("a\nb"),
            Err(UsernameError::ControlCharacter)
        );
    }

    #[test]
    fn levels_serialize_like_client_quantities() {
        let json = |halves| serde_json::to_string(&Level { halves }).unwrap();
        assert_eq!(json(12), "6");
        assert_eq!(json(3), "1.5");
        assert_eq!(json(4), "2");
        assert_eq!(json(96), "48");
    }

    #[test]
    fn rank_counts_the_players_ahead() {
        assert_eq!(rank_from_ahead(0), 1);
        assert_eq!(rank_from_ahead(41), 42);
        assert_eq!(rank_from_ahead(-3), 1);
    }

    /// SplitMix64, for reproducible pseudo-random tests.
    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Adds up a brute-force histogram over `ranges`.
    fn count_in(scores: &[i64], ranges: &[PrefixRange]) -> usize {
        ranges
            .iter()
            .map(|r| {
                scores
                    .iter()
                    .filter(|&&x| {
                        let prefix = x >> r.shift_bits;
                        prefix > 0 && r.first <= prefix && prefix <= r.last
                    })
                    .count()
            })
            .sum()
    }

    #[test]
    fn prefix_ranges_count_exactly_the_higher_scores() {
        let mut state = 7;
        // Scores of every magnitude, many ties, and the edges of each byte.
        let mut scores: Vec<i64> = vec![0, 1, 254, 255, 256, 257, 65_535, 65_536, i64::MAX];
        for _ in 0..3_000 {
            let r = splitmix(&mut state);
            let bits = r % 64;
            let value = (splitmix(&mut state) >> (64 - bits.max(1))) as i64;
            scores.push(value.max(0));
            scores.push((r % 300) as i64);
        }
        let probes: Vec<i64> = scores
            .iter()
            .copied()
            .chain([0, 255, 256, 511, 0xFFFF, 0xFF_FFFF, i64::MAX - 1, i64::MAX])
            .step_by(7)
            .collect();
        for s in probes {
            let above = scores.iter().filter(|&&x| x > s).count();
            assert_eq!(
                count_in(&scores, &prefix_ranges_above(s)),
                above,
                "score {s}"
            );
        }
    }

    #[test]
    fn prefix_ranges_are_siblings_above_under_the_same_parent() {
        let ranges = prefix_ranges_above(0x01_02_FF);
        assert_eq!(
            ranges[0],
            PrefixRange {
                shift_bits: 0,
                first: 1,
                last: 0
            }
        );
        assert_eq!((ranges[1].first, ranges[1].last), (0x01_03, 0x01_FF));
        assert_eq!((ranges[2].first, ranges[2].last), (0x02, 0xFF));
        assert_eq!((ranges[7].first, ranges[7].last), (1, 0xFF));
        assert_eq!(prefix_ranges_above(-5), prefix_ranges_above(0));
    }

    #[test]
    fn active_powerups_latest_grant_per_kind_unexpired() {
        let now = T0 + 10 * HOUR_MS;
        let grants = vec![
            // A 48 h freeze replaced by a 6 h one that has expired: no freeze now.
            grant(PowerupKind::Freeze, 4, T0),
            grant(PowerupKind::Freeze, 1, T0 + HOUR_MS),
            // Expired multiplier.
            grant(PowerupKind::Multiplier, 4, T0),
            // Active extender 1.5, and one starting in the future (ignored).
            grant(PowerupKind::Extender, 1, now - HOUR_MS),
            grant(PowerupKind::Extender, 4, now + 1),
        ];
        let p = player(&user(0, None), grants);
        let active = active_powerups(&p, now);
        assert_eq!(
            serde_json::to_value(&active).unwrap(),
            json!([{"type": "EXTENDER", "level": 1.5, "expires_at_ms": now + 5 * HOUR_MS}])
        );
        // Catalogue order, expiry exclusive.
        let p = player(
            &user(0, None),
            vec![
                grant(PowerupKind::Extender, 2, T0),
                grant(PowerupKind::Freeze, 2, T0),
            ],
        );
        let kinds: Vec<PowerupKind> = active_powerups(&p, T0).iter().map(|a| a.kind).collect();
        assert_eq!(kinds, [PowerupKind::Freeze, PowerupKind::Extender]);
        // The 6 h extender ends first, then the 12 h freeze.
        let kinds: Vec<PowerupKind> = active_powerups(&p, T0 + 6 * HOUR_MS)
            .iter()
            .map(|a| a.kind)
            .collect();
        assert_eq!(kinds, [PowerupKind::Freeze]);
        assert!(active_powerups(&p, T0 + 12 * HOUR_MS).is_empty());
    }

    #[test]
    fn effective_streak_breaks_after_a_missed_round_unless_frozen() {
        let round = |h: i64| Round::new(T0 + h * HOUR_MS, 60_000);
        let p = player(&user(4, Some(T0)), vec![]);
        // Only the round just after the last scored one: not broken yet.
        assert_eq!(
            effective_streak(&p, vec![round(0), round(2)], T0 + 3 * HOUR_MS),
            4
        );
        // A second round opened: the missed one breaks the streak.
        assert_eq!(
            effective_streak(&p, vec![round(2), round(4)], T0 + 5 * HOUR_MS),
            0
        );
        // A freeze active when the missed round opened excuses it.
        let frozen = player(
            &user(4, Some(T0)),
            vec![grant(PowerupKind::Freeze, 1, T0 + HOUR_MS)],
        );
        assert_eq!(
            effective_streak(&frozen, vec![round(2), round(4)], T0 + 5 * HOUR_MS),
            4
        );
        // Never scored: stored streak 0.
        assert_eq!(
            effective_streak(&player(&user(0, None), vec![]), vec![], T0),
            0
        );
    }

    #[test]
    fn current_round_is_open_from_opening_until_before_closing() {
        let row = RoundRow {
            round_id: "r1".into(),
            opens_at_ms: T0,
            closes_at_ms: T0 + 60_000,
        };
        assert_eq!(current_round(Some(row.clone()), T0 - 1), None);
        assert_eq!(
            current_round(Some(row.clone()), T0).map(|r| r.round_id),
            Some("r1".to_string())
        );
        assert!(current_round(Some(row.clone()), T0 + 59_999).is_some());
        assert_eq!(current_round(Some(row), T0 + 60_000), None);
        assert_eq!(current_round(None, T0), None);
    }

    #[test]
    fn leaderboard_ranks_from_one() {
        let lb = leaderboard(vec![("b".into(), 5), ("a".into(), 3)]);
        assert_eq!(
            serde_json::to_value(&lb).unwrap(),
            json!([
                {"rank": 1, "username": "b", "score": 5},
                {"rank": 2, "username": "a", "score": 3},
            ])
        );
    }

    #[test]
    fn self_view_json_shape() {
        let view = SelfView {
            username: "ann".into(),
            score: 7,
            streak: 2,
            rank: 3,
            scored_in_current_round: false,
            powerups: vec![],
            current_round: None,
        };
        assert_eq!(
            serde_json::to_value(&view).unwrap(),
            json!({
                "username": "ann", "score": 7, "streak": 2, "rank": 3,
                "scored_in_current_round": false, "powerups": [], "current_round": null,
            })
        );
    }

    #[test]
    fn stored_bytes_decode_as_text() {
        assert_eq!(text_from_bytes("Zoë 🎉".as_bytes().to_vec()), "Zoë 🎉");
        assert_eq!(text_from_bytes(vec![b'a', 0xff]), "a\u{fffd}");
    }
}
