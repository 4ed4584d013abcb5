//! The SQL of the fetch API. Every value is a bound parameter (usernames are bound as bytes and
//! compared in byte order, like the VARBINARY columns they are stored in), and every function
//! takes the time of the request as `now` instead of reading a clock.
//!
//! Index use (see the tests in `tests/http.rs`, which check the plans with `EXPLAIN`):
//! - the leaderboard reads the first 10 entries of `users_by_score (score DESC, username)`;
//! - a rank adds up at most 8 × 255 rows of the `score_prefix_counts` histogram (the players with
//!   a higher score; kept exact by triggers on `users`, migration
//!   `20261128000002_score_prefix_counts.sql`) and counts, on `users_by_score`, the players with
//!   the same score and a smaller username;
//! - the user, their grants and the score ledger are read by primary-key prefix, rounds by
//!   `rounds_by_opening`.

use buttonparty::rules::{Grant, Millis, Powerup, PowerupKind, Round, Tier};
use sqlx::mysql::MySqlConnection;
use sqlx::{MySqlPool, Row};

use crate::model::{self, LeaderboardEntry, RoundRow, SelfView, UserRow};

/// The statement that opens the consistent, read-only snapshot of a `self` read.
pub const BEGIN_SQL: &str = "START TRANSACTION READ ONLY";

/// The player's row.
pub const USER_SQL: &str =
    "SELECT score, streak, last_scored_opens_at_ms FROM users WHERE username = ?";

/// The number of players ranked before a (score, username): the players with a higher score,
/// added up from at most 8 × 255 rows of the `score_prefix_counts` histogram (one primary-key
/// range per shift, bound from [`model::prefix_ranges_above`]), plus the players with the same
/// score and a smaller username (a range on `users_by_score`).
pub const RANK_SQL: &str = "SELECT CAST(\
     (SELECT COALESCE(SUM(players), 0) FROM score_prefix_counts WHERE \
        (shift_bits = 0 AND prefix BETWEEN ? AND ?) \
     OR (shift_bits = 8 AND prefix BETWEEN ? AND ?) \
     OR (shift_bits = 16 AND prefix BETWEEN ? AND ?) \
     OR (shift_bits = 24 AND prefix BETWEEN ? AND ?) \
     OR (shift_bits = 32 AND prefix BETWEEN ? AND ?) \
     OR (shift_bits = 40 AND prefix BETWEEN ? AND ?) \
     OR (shift_bits = 48 AND prefix BETWEEN ? AND ?) \
     OR (shift_bits = 56 AND prefix BETWEEN ? AND ?)) \
     + (SELECT COUNT(*) FROM users WHERE score = ? AND username < ?) \
     AS SIGNED)";

/// The same number counted one player at a time on `users_by_score`, O(rank): the reference
/// the histogram is checked against in the tests.
pub const RANK_BY_COUNTING_SQL: &str = "SELECT CAST((SELECT COUNT(*) FROM users WHERE score > ?) \
     + (SELECT COUNT(*) FROM users WHERE score = ? AND username < ?) AS SIGNED)";

/// The player's powerup grants that started by `now`, in send order (`SentTimestamp`, then
/// `MessageId`, as the incoming handler folds them).
pub const GRANTS_SQL: &str = "SELECT powerup_kind, tier, sent_at_ms, expires_at_ms \
     FROM player_events WHERE username = ? AND sent_at_ms <= ? AND outcome = 'bought' \
     ORDER BY sent_at_ms, message_id";

/// Rounds opened after the player's last scored round, up to `now`.
pub const ROUNDS_SINCE_SQL: &str = "SELECT opens_at_ms, closes_at_ms, window_ms FROM rounds \
     WHERE opens_at_ms > ? AND opens_at_ms <= ? ORDER BY opens_at_ms";

/// The latest round opened by `now`, and whether the player scored in it.
pub const LATEST_ROUND_SQL: &str = "SELECT r.round_id, r.opens_at_ms, r.closes_at_ms, \
     EXISTS(SELECT 1 FROM player_events e WHERE e.username = ? \
        AND e.round_opens_at_ms = r.opens_at_ms AND e.outcome = 'scored') AS scored \
     FROM rounds r WHERE r.opens_at_ms <= ? ORDER BY r.opens_at_ms DESC LIMIT 1";

/// The top of the leaderboard: the first entries of `users_by_score`.
pub const LEADERBOARD_SQL: &str =
    "SELECT username, score FROM users ORDER BY score DESC, username ASC LIMIT 10";

/// Reads one player's view at `now`, inside one read-only transaction so that score, rank,
/// streak, powerups and round come from the same snapshot. `Ok(None)`: no such player.
pub async fn load_self(
    pool: &MySqlPool,
    username: &str,
    now: Millis,
) -> Result<Option<SelfView>, sqlx::Error> {
    let mut tx = pool.begin_with(BEGIN_SQL).await?;
    let view = load_self_in(&mut tx, username, now).await?;
    tx.commit().await?;
    Ok(view)
}

/// [`load_self`] on a connection the caller manages (e.g. inside its own transaction).
pub async fn load_self_in(
    conn: &mut MySqlConnection,
    username: &str,
    now: Millis,
) -> Result<Option<SelfView>, sqlx::Error> {
    let name = username.as_bytes();
    let Some(row) = sqlx::query(USER_SQL)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let user = UserRow {
        score: row.try_get(0)?,
        streak: row.try_get(1)?,
        last_scored_opens_at_ms: row.try_get(2)?,
    };
    let rank = rank(conn, user.score, username).await?;

    let grants = load_grants(conn, name, now).await?;
    let player = model::player(&user, grants);

    // A stored streak of 0 shows as 0 whatever happened since: no need to read rounds then.
    let streak = if user.streak == 0 {
        0
    } else {
        let since = user.last_scored_opens_at_ms.unwrap_or(Millis::MIN);
        let rounds = load_rounds_since(conn, since, now).await?;
        model::effective_streak(&player, rounds, now)
    };

    let (latest, scored_in_latest) = match sqlx::query(LATEST_ROUND_SQL)
        .bind(name)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?
    {
        Some(row) => {
            let round = RoundRow {
                round_id: model::text_from_bytes(row.try_get(0)?),
                opens_at_ms: row.try_get(1)?,
                closes_at_ms: row.try_get(2)?,
            };
            let scored: i64 = row.try_get(3)?;
            (Some(round), scored != 0)
        }
        None => (None, false),
    };
    let current_round = model::current_round(latest, now);

    Ok(Some(SelfView {
        username: username.to_owned(),
        score: user.score,
        streak,
        rank,
        scored_in_current_round: current_round.is_some() && scored_in_latest,
        powerups: model::active_powerups(&player, now),
        current_round,
    }))
}

/// The rank of the player `(score, username)`: 1 + the players with a higher score + the
/// players with the same score and a smaller username (byte order). See [`RANK_SQL`]. Scores
/// are never negative (SPEC §3): the histogram does not count negative ones.
pub async fn rank(
    conn: &mut MySqlConnection,
    score: i64,
    username: &str,
) -> Result<u64, sqlx::Error> {
    let mut query = sqlx::query_scalar(RANK_SQL);
    for range in model::prefix_ranges_above(score) {
        query = query.bind(range.first).bind(range.last);
    }
    let ahead: i64 = query
        .bind(score)
        .bind(username.as_bytes())
        .fetch_one(conn)
        .await?;
    Ok(model::rank_from_ahead(ahead))
}

/// [`rank`] by counting the players ahead one by one ([`RANK_BY_COUNTING_SQL`]), for checks.
pub async fn rank_by_counting(
    conn: &mut MySqlConnection,
    score: i64,
    username: &str,
) -> Result<u64, sqlx::Error> {
    let ahead: i64 = sqlx::query_scalar(RANK_BY_COUNTING_SQL)
        .bind(score)
        .bind(score)
        .bind(username.as_bytes())
        .fetch_one(conn)
        .await?;
    Ok(model::rank_from_ahead(ahead))
}

/// The player's grants started by `now`, oldest first. Rows of an unknown kind or tier (a newer
/// schema) are skipped.
async fn load_grants(
    conn: &mut MySqlConnection,
    name: &[u8],
    now: Millis,
) -> Result<Vec<Grant>, sqlx::Error> {
    let rows = sqlx::query(GRANTS_SQL)
        .bind(name)
        .bind(now)
        .fetch_all(&mut *conn)
        .await?;
    let mut grants = Vec::with_capacity(rows.len());
    for row in rows {
        let kind: String = row.try_get(0)?;
        let tier: u8 = row.try_get(1)?;
        let Some(powerup) = PowerupKind::parse(&kind)
            .zip(Tier::new(tier))
            .map(|(kind, tier)| Powerup::new(kind, tier))
        else {
            tracing::warn!(
                kind,
                tier,
                "skipping a powerup grant of unknown kind or tier"
            );
            continue;
        };
        grants.push(Grant {
            powerup,
            starts_at: row.try_get(2)?,
            expires_at: row.try_get(3)?,
        });
    }
    Ok(grants)
}

/// Rounds with `last_scored < opens_at <= now`, by opening.
async fn load_rounds_since(
    conn: &mut MySqlConnection,
    last_scored: Millis,
    now: Millis,
) -> Result<Vec<Round>, sqlx::Error> {
    let rows = sqlx::query(ROUNDS_SINCE_SQL)
        .bind(last_scored)
        .bind(now)
        .fetch_all(&mut *conn)
        .await?;
    rows.into_iter()
        .map(|row| {
            Ok(Round::announced(
                row.try_get(0)?,
                row.try_get(1)?,
                row.try_get(2)?,
            ))
        })
        .collect()
}

/// The top 10, best first (score descending, ties by username ascending in byte order).
pub async fn load_leaderboard(pool: &MySqlPool) -> Result<Vec<LeaderboardEntry>, sqlx::Error> {
    let rows = sqlx::query(LEADERBOARD_SQL).fetch_all(pool).await?;
    let mut top = Vec::with_capacity(rows.len());
    for row in rows {
        top.push((model::text_from_bytes(row.try_get(0)?), row.try_get(1)?));
    }
    Ok(model::leaderboard(top))
}
