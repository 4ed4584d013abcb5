//! The press batch writer: judges a batch of presses with the game rules and writes the result in
//! one transaction.
//!
//! 1. lock the batch's players (`SELECT … FOR UPDATE`, in username order, so that concurrent
//!    handlers lock in the same order and cannot deadlock each other);
//! 2. read the rounds the presses and streaks depend on, the players' ledger entries for those
//!    rounds and their powerups;
//! 3. judge every press in press-time order with [`rules::judge_press`];
//! 4. write the ledger rows and the players' new score/streak with two multi-row statements.
//!
//! The ledger's primary key (player, round) makes a redelivered press a rejected duplicate: a
//! press applies at most once however often it is delivered or by however many handlers.

use std::collections::{BTreeSet, HashMap};

use buttonparty::rules::{
    self, Grant, Millis, Player, Powerup, PowerupKind, RejectReason, Round, Rounds, Scored,
};
use sqlx::mysql::MySqlPool;
use sqlx::{MySql, QueryBuilder, Row};

/// How far before a batch's earliest press rounds are read (a press can only belong to a round
/// that opened before it, and windows are far shorter than this).
const ROUND_LOOKBACK_MS: Millis = 7 * 24 * 3_600_000;

/// Rows per multi-row statement (well under the 65,535 bind parameters limit).
const ROWS_PER_STATEMENT: usize = 1000;

/// One press to judge.
#[derive(Debug, Clone, Copy)]
pub struct PressInput<'a> {
    /// Who pressed.
    pub username: &'a str,
    /// SQS SentTimestamp of the press, epoch ms.
    pub press_at: Millis,
    /// SQS message id (recorded in the ledger).
    pub message_id: &'a str,
}

/// The judgment of one press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It scored.
    Scored(Scored),
    /// It did not; nothing changed.
    Rejected(RejectReason),
}

/// Loaded state of one player.
struct Loaded {
    player: Player,
    changed: bool,
}

/// Judges and writes a batch of presses in one transaction. Verdicts are in input order.
pub async fn apply_presses(
    pool: &MySqlPool,
    presses: &[PressInput<'_>],
) -> Result<Vec<Verdict>, sqlx::Error> {
    if presses.is_empty() {
        return Ok(Vec::new());
    }
    let names: BTreeSet<&str> = presses.iter().map(|p| p.username).collect();
    let min_press = presses.iter().map(|p| p.press_at).min().unwrap_or(0);
    let max_press = presses.iter().map(|p| p.press_at).max().unwrap_or(0);

    let mut tx = pool.begin().await?;

    // 1. Lock the players, in key order.
    let mut players: HashMap<String, Loaded> = HashMap::with_capacity(names.len());
    let mut q = QueryBuilder::<MySql>::new(
        "SELECT username, score, streak, last_scored_opens_at_ms FROM users WHERE username IN (",
    );
    push_names(&mut q, &names);
    q.push(") ORDER BY username FOR UPDATE");
    for row in q.build().fetch_all(&mut *tx).await? {
        let name = String::from_utf8(row.try_get::<Vec<u8>, _>(0)?)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        let player = Player {
            score: row.try_get(1)?,
            streak: row.try_get(2)?,
            last_scored: row.try_get(3)?,
            ..Player::default()
        };
        players.insert(
            name,
            Loaded {
                player,
                changed: false,
            },
        );
    }

    let mut verdicts = vec![Verdict::Rejected(RejectReason::UnknownUser); presses.len()];
    if !players.is_empty() {
        // 2. Rounds from the earliest streak anchor or press to the latest press.
        let earliest_anchor = players
            .values()
            .filter_map(|l| l.player.last_scored)
            .min()
            .unwrap_or(Millis::MAX);
        let rounds_from = earliest_anchor.min(min_press.saturating_sub(ROUND_LOOKBACK_MS));
        let round_rows = sqlx::query(
            "SELECT round_id, opens_at_ms, closes_at_ms FROM rounds \
             WHERE opens_at_ms >= ? AND opens_at_ms <= ? ORDER BY opens_at_ms",
        )
        .bind(rounds_from)
        .bind(max_press)
        .fetch_all(&mut *tx)
        .await?;
        let mut round_ids: HashMap<Millis, Vec<u8>> = HashMap::with_capacity(round_rows.len());
        let mut list = Vec::with_capacity(round_rows.len());
        for row in round_rows {
            let opens_at: Millis = row.try_get(1)?;
            let closes_at: Millis = row.try_get(2)?;
            round_ids.insert(opens_at, row.try_get(0)?);
            list.push(Round::announced(opens_at, closes_at, None));
        }
        let rounds = Rounds::new(list);

        if let Some(first_round) = rounds.round_at(min_press) {
            // The ledger entries the presses can collide with.
            let mut q = QueryBuilder::<MySql>::new(
                "SELECT username, round_opens_at_ms FROM scores WHERE round_opens_at_ms >= ",
            );
            q.push_bind(first_round.opens_at);
            q.push(" AND username IN (");
            push_names(&mut q, &names);
            q.push(")");
            for row in q.build().fetch_all(&mut *tx).await? {
                let name = String::from_utf8_lossy(&row.try_get::<Vec<u8>, _>(0)?).into_owned();
                if let Some(l) = players.get_mut(&name) {
                    l.player.scored_rounds.insert(row.try_get(1)?);
                }
            }
        }

        // Powerups that can be active at a press or at a round since a streak anchor: those
        // that started at most the longest duration before it, and every later one (a later
        // grant of the same kind ends an earlier one, even after it has itself expired).
        let grants_from = earliest_anchor
            .min(min_press)
            .saturating_sub(rules::MAX_POWERUP_DURATION_MS);
        let mut q = QueryBuilder::<MySql>::new(
            "SELECT username, kind, tier, starts_at_ms, expires_at_ms FROM powerups WHERE starts_at_ms > ",
        );
        q.push_bind(grants_from);
        q.push(" AND username IN (");
        push_names(&mut q, &names);
        q.push(") ORDER BY starts_at_ms");
        for row in q.build().fetch_all(&mut *tx).await? {
            let name = String::from_utf8_lossy(&row.try_get::<Vec<u8>, _>(0)?).into_owned();
            let kind: String = row.try_get(1)?;
            let tier: u8 = row.try_get(2)?;
            let powerup = PowerupKind::parse(&kind)
                .and_then(|k| Some(Powerup::new(k, rules::Tier::new(tier)?)));
            if let (Some(l), Some(powerup)) = (players.get_mut(&name), powerup) {
                l.player.grants.push(Grant {
                    powerup,
                    starts_at: row.try_get(3)?,
                    expires_at: row.try_get(4)?,
                });
            }
        }

        // 3. Judge in press-time order (message id breaks ties, for determinism).
        let mut order: Vec<usize> = (0..presses.len()).collect();
        order.sort_by(|&a, &b| {
            (presses[a].press_at, presses[a].message_id)
                .cmp(&(presses[b].press_at, presses[b].message_id))
        });
        let mut ledger: Vec<(usize, Scored)> = Vec::new();
        for i in order {
            let p = &presses[i];
            let loaded = players.get_mut(p.username);
            let verdict = match loaded {
                None => Verdict::Rejected(RejectReason::UnknownUser),
                Some(l) => match rules::judge_press(Some(&mut l.player), &rounds, p.press_at) {
                    Ok(s) => {
                        l.changed = true;
                        ledger.push((i, s));
                        Verdict::Scored(s)
                    }
                    Err(r) => Verdict::Rejected(r),
                },
            };
            verdicts[i] = verdict;
        }

        // 4. Write.
        for chunk in ledger.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<MySql>::new(
                "INSERT INTO scores (username, round_opens_at_ms, round_id, pressed_at_ms, streak, points, message_id) ",
            );
            q.push_values(chunk, |mut b, (i, s)| {
                let p = &presses[*i];
                let round_id = round_ids
                    .get(&s.round.opens_at)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                b.push_bind(p.username.as_bytes())
                    .push_bind(s.round.opens_at)
                    .push_bind(round_id)
                    .push_bind(p.press_at)
                    .push_bind(s.new_streak)
                    .push_bind(s.points)
                    .push_bind(p.message_id.as_bytes());
            });
            q.build().execute(&mut *tx).await?;
        }
        let changed: Vec<(&String, &Player)> = players
            .iter()
            .filter(|(_, l)| l.changed)
            .map(|(n, l)| (n, &l.player))
            .collect();
        for chunk in changed.chunks(ROWS_PER_STATEMENT) {
            // Every row exists and is locked: this upsert is a multi-row UPDATE.
            let mut q = QueryBuilder::<MySql>::new(
                "INSERT INTO users (username, score, streak, last_scored_opens_at_ms, created_at_ms) ",
            );
            q.push_values(chunk, |mut b, (name, player)| {
                b.push_bind(name.as_bytes())
                    .push_bind(player.score)
                    .push_bind(player.streak)
                    .push_bind(player.last_scored)
                    .push_bind(0_i64);
            });
            q.push(
                " ON DUPLICATE KEY UPDATE score = VALUES(score), streak = VALUES(streak), \
                 last_scored_opens_at_ms = VALUES(last_scored_opens_at_ms)",
            );
            q.build().execute(&mut *tx).await?;
        }
    }
    tx.commit().await?;
    Ok(verdicts)
}

fn push_names(q: &mut QueryBuilder<MySql>, names: &BTreeSet<&str>) {
    let mut sep = q.separated(", ");
    for n in names {
        sep.push_bind(n.as_bytes());
    }
}
