//! The database side of the fold ([`buttonparty::fold`]): every press and purchase is stored as
//! an event with its verdict and a checkpoint, and each player's `users` row is the fold of its
//! events in send order.
//!
//! One transaction per batch ([`apply`]), for any mix of new events, registrations and players
//! to re-fold:
//!
//! 1. lock the batch's players (`SELECT … FOR UPDATE`, in username order, so that concurrent
//!    handlers cannot deadlock each other; a name with no row gets a gap lock, which holds off
//!    its registration until this batch commits);
//! 2. register new players and move earlier registrations;
//! 3. decide per player ([`fold::plan`]): continue from its state (events in order, the common
//!    case), or re-fold from the checkpoint before the earliest event that landed behind, the
//!    instant a late round opened, or an earlier registration;
//! 4. read what the folds need: the rounds (with a shared lock, so that a round recorded
//!    meanwhile waits for this batch and then marks its players), the checkpoints and stored
//!    events of re-folded players, the powerups and request keys bought before;
//! 5. fold each player with [`fold::run`] and write the new events, the re-judged ones and the
//!    players with a few multi-row statements.
//!
//! Names not registered keep their events pending (no verdict) until they register; nothing
//! waits in memory or in flight. A redelivered message is recognised by its stored event.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use buttonparty::fold::{
    self, Action, Event, EventId, Judged, Outcome, Profile, PurchaseRefusal, RequestKey, Start,
    State, Stored, Verdict,
};
use buttonparty::rules::{
    self, Grant, Millis, Powerup, PowerupKind, RejectReason, Round, Rounds, Tier,
};
use sqlx::mysql::{MySqlPool, MySqlRow};
use sqlx::query_builder::Separated;
use sqlx::{MySql, MySqlConnection, QueryBuilder, Row};

/// Rows per multi-row statement (well under the 65,535 bind parameters limit).
const ROWS_PER_STATEMENT: usize = 500;

/// A press or purchase just received.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Who.
    pub username: String,
    /// What and when.
    pub event: Event,
    /// When this handler received it (epoch ms; not part of the game).
    pub received_at_ms: Millis,
}

/// An add-user message just received (the game part and its push token).
#[derive(Debug, Clone)]
pub struct NewRegistration {
    /// Who.
    pub username: String,
    /// Its position in send order.
    pub id: EventId,
    /// The push token it carries (stored if it is the latest-sent one).
    pub token: String,
}

/// What became of one new event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventResult {
    /// Judged and stored.
    Judged(Verdict),
    /// A second press in a round the player already scored in: judged, not kept.
    Dropped,
    /// Stored without a verdict: the name is not registered (yet).
    Pending,
    /// Already stored (a redelivery, or another handler got it first).
    Duplicate,
}

/// What one batch did.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// Per new event, in input order.
    pub results: Vec<EventResult>,
    /// Per registration, in input order: whether it created the player.
    pub created: Vec<bool>,
    /// Players whose fold restarted from a checkpoint.
    pub refolded: usize,
    /// Stored events whose verdict or checkpoint changed in those re-folds.
    pub rejudged: usize,
    /// Stored events no longer kept (second presses in a round).
    pub dropped_stored: usize,
}

/// A player's `users` row as the fold sees it.
#[derive(Debug, Clone)]
struct Loaded {
    profile: Profile,
    changed: bool,
    /// The registration moved earlier (written by its own statement: rare).
    registration_moved: bool,
}

fn state_of(row: &MySqlRow, score: usize) -> Result<State, sqlx::Error> {
    Ok(State {
        score: row.try_get(score)?,
        streak: row.try_get(score + 1)?,
        last_scored: row.try_get(score + 2)?,
    })
}

fn text(bytes: Vec<u8>) -> Result<String, sqlx::Error> {
    String::from_utf8(bytes).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn push_names<'a>(q: &mut QueryBuilder<MySql>, names: impl IntoIterator<Item = &'a str>) {
    let mut sep = q.separated(", ");
    for n in names {
        sep.push_bind(n.as_bytes());
    }
}

const USER_COLUMNS: &str = "username, score, streak, last_scored_opens_at_ms, registered_at_ms, \
     registered_msg_id, folded_to_ms, folded_to_msg, refold_from_ms";

fn profile_of(row: &MySqlRow) -> Result<(String, Profile), sqlx::Error> {
    let name = text(row.try_get(0)?)?;
    let folded_ms: Option<Millis> = row.try_get(6)?;
    let folded_msg: Option<Vec<u8>> = row.try_get(7)?;
    let profile = Profile {
        state: state_of(row, 1)?,
        registered: EventId::new(row.try_get(4)?, text(row.try_get(5)?)?),
        folded_to: match (folded_ms, folded_msg) {
            (Some(ms), Some(msg)) => Some(EventId::new(ms, text(msg)?)),
            _ => None,
        },
        refold_from: row.try_get(8)?,
    };
    Ok((name, profile))
}

/// Locks the players of `names` (sorted) and returns the registered ones.
async fn lock_players(
    conn: &mut MySqlConnection,
    names: &BTreeSet<&str>,
) -> Result<HashMap<String, Loaded>, sqlx::Error> {
    let mut players = HashMap::with_capacity(names.len());
    for chunk in names
        .iter()
        .copied()
        .collect::<Vec<_>>()
        .chunks(ROWS_PER_STATEMENT)
    {
        let mut q = QueryBuilder::<MySql>::new(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE username IN ("
        ));
        push_names(&mut q, chunk.iter().copied());
        q.push(") ORDER BY username FOR UPDATE");
        for row in q.build().fetch_all(&mut *conn).await? {
            let (name, profile) = profile_of(&row)?;
            players.insert(
                name,
                Loaded {
                    profile,
                    changed: false,
                    registration_moved: false,
                },
            );
        }
    }
    Ok(players)
}

/// Applies one batch in one transaction: new `events`, `registrations`, and `refold` (players
/// to re-fold, with an optional instant to re-fold from: the earliest of their events still
/// without a verdict). See the module documentation.
pub async fn apply(
    pool: &MySqlPool,
    events: &[NewEvent],
    registrations: &[NewRegistration],
    refold: &[(String, Option<Millis>)],
    now_ms: Millis,
) -> Result<Applied, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let names: BTreeSet<&str> = events
        .iter()
        .map(|e| e.username.as_str())
        .chain(registrations.iter().map(|r| r.username.as_str()))
        .chain(refold.iter().map(|(n, _)| n.as_str()))
        .collect();
    let players = lock_players(&mut tx, &names).await?;
    let applied = fold_locked(&mut tx, players, events, registrations, refold, now_ms).await?;
    tx.commit().await?;
    Ok(applied)
}

/// Re-folds up to `limit` players marked by a late round or registration, skipping those another
/// transaction holds (they are being folded). Returns what it did (`None`: nobody was marked).
pub async fn refold_marked(
    pool: &MySqlPool,
    limit: usize,
    now_ms: Millis,
) -> Result<Option<Applied>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS} FROM users WHERE refold_from_ms IS NOT NULL \
         ORDER BY refold_from_ms LIMIT {limit} FOR UPDATE SKIP LOCKED"
    )))
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        tx.rollback().await?;
        return Ok(None);
    }
    let mut players = HashMap::with_capacity(rows.len());
    let mut refold = Vec::with_capacity(rows.len());
    for row in &rows {
        let (name, profile) = profile_of(row)?;
        refold.push((name.clone(), None));
        players.insert(
            name,
            Loaded {
                profile,
                changed: false,
                registration_moved: false,
            },
        );
    }
    let applied = fold_locked(&mut tx, players, &[], &[], &refold, now_ms).await?;
    tx.commit().await?;
    Ok(Some(applied))
}

/// Registered players that have events without a verdict (their registration and those events
/// crossed): a safety net, normally empty. Returns each with its earliest such event's time.
pub async fn unjudged(
    pool: &MySqlPool,
    limit: usize,
) -> Result<Vec<(String, Millis)>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT e.username, MIN(e.sent_at_ms) FROM player_events e \
         JOIN users u ON u.username = e.username \
         WHERE e.outcome IS NULL GROUP BY e.username LIMIT {limit}"
    )))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| Ok((text(r.try_get(0)?)?, r.try_get(1)?)))
        .collect()
}

/// Records a round (idempotent by `round_id`; a second round opening at the same instant is
/// ignored). Returns whether it was new.
pub async fn record_round(
    pool: &MySqlPool,
    round_id: &str,
    round: &Round,
    now_ms: Millis,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "INSERT IGNORE INTO rounds (round_id, opens_at_ms, closes_at_ms, window_ms, recorded_at_ms) \
         VALUES (?, ?, ?, ?, ?)",
    )
    .bind(round_id.as_bytes())
    .bind(round.opens_at)
    .bind(round.closes_at)
    .bind(round.window)
    .bind(now_ms)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Marks, `chunk` players per statement, every player with an event folded at or after
/// `opens_at` for a re-fold from there (a round learnt late changes which round their presses
/// belong to and what their streaks are). Returns how many were marked. Idempotent.
///
/// The statement scans `users_by_folded_to` (forced: on the `refold_from_ms` index it would skip
/// a player whose re-fold from an earlier instant is in progress without waiting for it, and that
/// re-fold may not have seen this round). On that index it locks every player folded at or after
/// the opening, waits for the transactions folding them, and then sees their committed state.
pub async fn mark_round(
    pool: &MySqlPool,
    opens_at: Millis,
    chunk: usize,
) -> Result<u64, sqlx::Error> {
    let mut marked = 0;
    loop {
        let n = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE users FORCE INDEX (users_by_folded_to) SET refold_from_ms = ? \
             WHERE folded_to_ms >= ? AND (refold_from_ms IS NULL OR refold_from_ms > ?) \
             LIMIT {chunk}"
        )))
        .bind(opens_at)
        .bind(opens_at)
        .bind(opens_at)
        .execute(pool)
        .await?
        .rows_affected();
        marked += n;
        if n < chunk as u64 {
            return Ok(marked);
        }
    }
}

/// Deletes up to `limit` events that can no longer change anything because everything sent
/// before them has either arrived or expired from the queues (sent before `before`): events of
/// names that never registered (returned count, to be counted as rejected) and rejected
/// events. Returns (pending events expired, rejected events removed).
pub async fn expire(
    pool: &MySqlPool,
    before: Millis,
    limit: usize,
) -> Result<(u64, u64), sqlx::Error> {
    let pending = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM player_events WHERE outcome IS NULL AND sent_at_ms < ? LIMIT {limit}"
    )))
    .bind(before)
    .execute(pool)
    .await?
    .rows_affected();
    let mut rejected = 0;
    for outcome in [
        "unknown_user",
        "no_round",
        "too_late",
        "already_scored",
        "insufficient_points",
        "duplicate_purchase",
    ] {
        rejected += sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM player_events WHERE outcome = ? AND sent_at_ms < ? LIMIT {limit}"
        )))
        .bind(outcome)
        .bind(before)
        .execute(pool)
        .await?
        .rows_affected();
    }
    Ok((pending, rejected))
}

/// The events of `names` stored with a send time in `[from, to]`, by player.
async fn stored_events(
    conn: &mut MySqlConnection,
    names: &BTreeSet<&str>,
    from: Millis,
    to: Option<Millis>,
    rounds: &HashMap<Millis, Round>,
) -> Result<HashMap<String, Vec<Stored>>, sqlx::Error> {
    let mut out: HashMap<String, Vec<Stored>> = HashMap::new();
    if names.is_empty() {
        return Ok(out);
    }
    for chunk in names
        .iter()
        .copied()
        .collect::<Vec<_>>()
        .chunks(ROWS_PER_STATEMENT)
    {
        let mut q = QueryBuilder::<MySql>::new(
            "SELECT username, sent_at_ms, message_id, kind, powerup_kind, tier, request_key, \
             outcome, round_opens_at_ms, streak, points, expires_at_ms, score_after, streak_after, \
             last_scored_after FROM player_events WHERE username IN (",
        );
        push_names(&mut q, chunk.iter().copied());
        q.push(") AND sent_at_ms >= ");
        q.push_bind(from);
        if let Some(to) = to {
            q.push(" AND sent_at_ms <= ");
            q.push_bind(to);
        }
        q.push(" ORDER BY username, sent_at_ms, message_id");
        for row in q.build().fetch_all(&mut *conn).await? {
            let name = text(row.try_get(0)?)?;
            let stored = stored_of(&row, rounds)?;
            out.entry(name).or_default().push(stored);
        }
    }
    Ok(out)
}

/// Decodes a `player_events` row from column 1 on (`sent_at_ms, message_id, kind, powerup_kind,
/// tier, request_key, outcome, round_opens_at_ms, streak, points, expires_at_ms, score_after,
/// streak_after, last_scored_after`).
fn stored_of(row: &MySqlRow, rounds: &HashMap<Millis, Round>) -> Result<Stored, sqlx::Error> {
    let id = EventId::new(row.try_get(1)?, text(row.try_get(2)?)?);
    let kind: String = row.try_get(3)?;
    let action = if kind == "PURCHASE" {
        let pk: Option<String> = row.try_get(4)?;
        let tier: Option<u8> = row.try_get(5)?;
        let key: Option<Vec<u8>> = row.try_get(6)?;
        let powerup = pk
            .as_deref()
            .and_then(PowerupKind::parse)
            .zip(tier.and_then(Tier::new))
            .map(|(k, t)| Powerup::new(k, t))
            .ok_or_else(|| decode_error("a purchase without a known powerup"))?;
        let request_key: RequestKey = key
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| decode_error("a purchase without a 32-byte request key"))?;
        Action::Purchase {
            powerup,
            request_key,
        }
    } else {
        Action::Press
    };
    let outcome: Option<String> = row.try_get(7)?;
    let judged = match outcome {
        None => None,
        Some(o) => {
            let after = state_of(row, 12)?;
            let verdict = match o.as_str() {
                "scored" => {
                    let opens: Millis = row.try_get::<Option<Millis>, _>(8)?.unwrap_or_default();
                    Verdict::Scored {
                        round: rounds
                            .get(&opens)
                            .copied()
                            .unwrap_or_else(|| Round::announced(opens, opens, None)),
                        streak: row.try_get::<Option<u32>, _>(9)?.unwrap_or_default(),
                        points: row.try_get::<Option<i64>, _>(10)?.unwrap_or_default(),
                    }
                }
                "bought" => {
                    let Action::Purchase { powerup, .. } = action else {
                        return Err(decode_error("a press stored as bought"));
                    };
                    Verdict::Bought {
                        grant: Grant {
                            powerup,
                            starts_at: id.sent_at,
                            expires_at: row.try_get::<Option<Millis>, _>(11)?.unwrap_or_default(),
                        },
                        price: row.try_get::<Option<i64>, _>(10)?.unwrap_or_default(),
                    }
                }
                other => verdict_of_reason(other, &action)?,
            };
            Some((verdict, after))
        }
    };
    Ok(Stored {
        event: Event { id, action },
        judged,
    })
}

fn verdict_of_reason(reason: &str, action: &Action) -> Result<Verdict, sqlx::Error> {
    let press = |r| Ok(Verdict::PressRejected(r));
    let purchase = |r| Ok(Verdict::PurchaseRefused(r));
    match (reason, action) {
        ("unknown_user", Action::Press) => press(RejectReason::UnknownUser),
        ("no_round", _) => press(RejectReason::NoRound),
        ("too_late", _) => press(RejectReason::TooLate),
        ("already_scored", _) => press(RejectReason::AlreadyScored),
        ("unknown_user", Action::Purchase { .. }) => purchase(PurchaseRefusal::UnknownUser),
        ("insufficient_points", _) => purchase(PurchaseRefusal::InsufficientPoints),
        ("duplicate_purchase", _) => purchase(PurchaseRefusal::DuplicateRequest),
        _ => Err(decode_error("an unknown outcome")),
    }
}

fn decode_error(what: &'static str) -> sqlx::Error {
    sqlx::Error::Decode(what.into())
}

/// Per player: where the fold starts and what it needs.
struct Work<'a> {
    name: &'a str,
    start: Start,
    new: Vec<Event>,
    /// The instant before which the prior (grants, keys, checkpoint) is read.
    since: Millis,
    checkpoint: State,
    stored: Vec<Stored>,
    grants: Vec<Grant>,
    used_keys: HashSet<RequestKey>,
}

/// Steps 2–5 on players already locked.
async fn fold_locked(
    conn: &mut MySqlConnection,
    mut players: HashMap<String, Loaded>,
    events: &[NewEvent],
    registrations: &[NewRegistration],
    refold: &[(String, Option<Millis>)],
    now_ms: Millis,
) -> Result<Applied, sqlx::Error> {
    let mut applied = Applied {
        results: vec![EventResult::Duplicate; events.len()],
        created: vec![false; registrations.len()],
        ..Applied::default()
    };

    // 2. Registrations: the earliest per name.
    let mut earliest: BTreeMap<&str, &EventId> = BTreeMap::new();
    for r in registrations {
        let e = earliest.entry(&r.username).or_insert(&r.id);
        if r.id < **e {
            *e = &r.id;
        }
    }
    let mut created = Vec::new();
    for (&name, &id) in &earliest {
        match players.get_mut(name) {
            Some(l) => {
                if l.profile.register(id) {
                    l.changed = true;
                    l.registration_moved = true;
                }
            }
            None => {
                created.push((name, id));
                players.insert(
                    name.to_owned(),
                    Loaded {
                        profile: Profile::new(id.clone()),
                        changed: true,
                        registration_moved: false,
                    },
                );
            }
        }
    }
    if !created.is_empty() {
        for chunk in created.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<MySql>::new(
                "INSERT INTO users (username, score, streak, created_at_ms, registered_at_ms, \
                 registered_msg_id, refold_from_ms) ",
            );
            q.push_values(chunk, |mut b, (name, id)| {
                b.push_bind(name.as_bytes())
                    .push_bind(0_i64)
                    .push_bind(0_u32)
                    .push_bind(now_ms)
                    .push_bind(id.sent_at)
                    .push_bind(id.message_id.as_bytes())
                    .push_bind(Millis::MIN);
            });
            q.build().execute(&mut *conn).await?;
        }
        let names: HashSet<&str> = created.iter().map(|(n, _)| *n).collect();
        for (i, r) in registrations.iter().enumerate() {
            applied.created[i] = names.contains(r.username.as_str())
                && earliest.get(r.username.as_str()) == Some(&&r.id);
        }
    }
    if !registrations.is_empty() {
        store_tokens(conn, registrations, now_ms).await?;
    }
    for (name, from) in refold {
        if let (Some(l), Some(from)) = (players.get_mut(name), from) {
            let f = *from;
            l.profile.refold_from = Some(l.profile.refold_from.map_or(f, |r| r.min(f)));
        }
    }

    // New events by player, distinct; redeliveries are found below.
    let mut by_player: BTreeMap<&str, Vec<(usize, &NewEvent)>> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        by_player.entry(&e.username).or_default().push((i, e));
    }
    // Players whose new events may already be stored: unregistered names, or an event at or
    // before what was folded. (In order, nothing can be stored after `folded_to`.)
    let (mut lo, mut hi) = (Millis::MAX, Millis::MIN);
    let mut check: BTreeSet<&str> = BTreeSet::new();
    for (&name, evs) in &by_player {
        let behind = match players.get(name) {
            None => true,
            Some(l) => match &l.profile.folded_to {
                None => l.profile.refold_from.is_some(),
                Some(f) => evs.iter().any(|(_, e)| e.event.id <= *f),
            },
        };
        if behind {
            check.insert(name);
            for (_, e) in evs {
                lo = lo.min(e.event.id.sent_at);
                hi = hi.max(e.event.id.sent_at);
            }
        }
    }
    let mut known: HashSet<(String, EventId)> = HashSet::new();
    if !check.is_empty() {
        let no_rounds = HashMap::new();
        for (name, list) in stored_events(conn, &check, lo, Some(hi), &no_rounds).await? {
            for s in list {
                known.insert((name.clone(), s.event.id));
            }
        }
    }
    let mut new_by_player: BTreeMap<&str, Vec<Event>> = BTreeMap::new();
    let mut pending_rows: Vec<&NewEvent> = Vec::new();
    let mut seen: HashSet<(&str, &EventId)> = HashSet::new();
    for (&name, evs) in &by_player {
        for &(i, e) in evs {
            if !seen.insert((name, &e.event.id))
                || known.contains(&(name.to_owned(), e.event.id.clone()))
            {
                continue; // EventResult::Duplicate
            }
            if players.contains_key(name) {
                new_by_player.entry(name).or_default().push(e.event.clone());
            } else {
                applied.results[i] = EventResult::Pending;
                pending_rows.push(e);
            }
        }
    }

    // 3. Plans.
    let mut work: Vec<Work<'_>> = Vec::new();
    let player_names: Vec<String> = players.keys().cloned().collect();
    for name in &player_names {
        let loaded = &players[name];
        let mut new = new_by_player.remove(name.as_str()).unwrap_or_default();
        new.sort_by(|a, b| a.id.cmp(&b.id));
        let start = fold::plan(&loaded.profile, &new);
        if new.is_empty() && start == Start::Continue && !loaded.changed {
            continue;
        }
        let since = match start {
            Start::Refold(from) => from,
            Start::Continue => new.first().map_or(Millis::MAX, |e| e.id.sent_at),
        };
        work.push(Work {
            name,
            start,
            new,
            since,
            checkpoint: loaded.profile.state,
            stored: Vec::new(),
            grants: Vec::new(),
            used_keys: HashSet::new(),
        });
    }

    // 4. Checkpoints of the re-folds: the state after each player's last judged event before
    // its re-fold instant.
    let refolds: Vec<usize> = (0..work.len())
        .filter(|&i| matches!(work[i].start, Start::Refold(from) if from > Millis::MIN))
        .collect();
    for chunk in refolds.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<MySql>::new("");
        for (k, &i) in chunk.iter().enumerate() {
            if k > 0 {
                q.push(" UNION ALL ");
            }
            q.push("(SELECT username, score_after, streak_after, last_scored_after FROM player_events WHERE username = ");
            q.push_bind(work[i].name.as_bytes());
            q.push(" AND sent_at_ms < ");
            q.push_bind(work[i].since);
            q.push(" AND outcome IS NOT NULL ORDER BY sent_at_ms DESC, message_id DESC LIMIT 1)");
        }
        let mut found: HashMap<String, State> = HashMap::new();
        for row in q.build().fetch_all(&mut *conn).await? {
            found.insert(text(row.try_get(0)?)?, state_of(&row, 1)?);
        }
        for &i in chunk {
            work[i].checkpoint = found.remove(work[i].name).unwrap_or_default();
        }
    }
    for w in &mut work {
        if w.start == Start::Refold(Millis::MIN) {
            w.checkpoint = State::default();
        }
    }

    // The rounds the folds can touch: from the earliest streak anchor or the round of the
    // earliest event, to the latest event. Locked for share: a round recorded meanwhile waits
    // for this batch, then marks these players if it changes them.
    let mut rounds_map: HashMap<Millis, Round> = HashMap::new();
    let mut rounds = Rounds::default();
    if !work.is_empty() {
        let earliest_event = work.iter().map(|w| w.since).min().unwrap_or(Millis::MAX);
        let anchor = work
            .iter()
            .filter_map(|w| w.checkpoint.last_scored)
            .min()
            .unwrap_or(Millis::MAX);
        let latest = work
            .iter()
            .flat_map(|w| w.new.last().map(|e| e.id.sent_at))
            .max()
            .unwrap_or(Millis::MIN)
            .max(
                if work.iter().any(|w| matches!(w.start, Start::Refold(_))) {
                    Millis::MAX
                } else {
                    Millis::MIN
                },
            );
        // From the streak anchor or the round the earliest event belongs to (the latest that
        // opened at or before it), whichever is earlier. The inner read locks too: a plain read
        // would see the transaction's snapshot (taken by an earlier read of this batch) and miss
        // a round committed since, judging these events "no round"; and `mark_round` would not
        // mark players folded for the first time by this batch. Locked, a round recorded
        // meanwhile is seen, or waits for this batch and then marks its players.
        let rows = sqlx::query(
            "SELECT opens_at_ms, closes_at_ms, window_ms FROM rounds \
             WHERE opens_at_ms >= LEAST(?, COALESCE( \
                 (SELECT MAX(r.opens_at_ms) FROM rounds r WHERE r.opens_at_ms <= ? \
                  LOCK IN SHARE MODE), ?)) \
             AND opens_at_ms <= ? ORDER BY opens_at_ms LOCK IN SHARE MODE",
        )
        .bind(anchor)
        .bind(earliest_event)
        .bind(earliest_event)
        .bind(latest)
        .fetch_all(&mut *conn)
        .await?;
        let mut list = Vec::with_capacity(rows.len());
        for row in rows {
            let r = Round::announced(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            rounds_map.insert(r.opens_at, r);
            list.push(r);
        }
        rounds = Rounds::new(list);
    }

    // The stored events the re-folds judge again.
    let refolding: BTreeSet<&str> = work
        .iter()
        .filter(|w| matches!(w.start, Start::Refold(_)))
        .map(|w| w.name)
        .collect();
    if !refolding.is_empty() {
        let from = work
            .iter()
            .filter(|w| matches!(w.start, Start::Refold(_)))
            .map(|w| w.since)
            .min()
            .unwrap_or(Millis::MIN);
        let mut slices = stored_events(conn, &refolding, from, None, &rounds_map).await?;
        for w in &mut work {
            if let Some(list) = slices.remove(w.name) {
                w.stored = list
                    .into_iter()
                    .filter(|s| s.event.id.sent_at >= w.since)
                    .collect();
            }
        }
    }

    // Powerups bought before each fold's start that can still matter.
    let grant_cutoff = |w: &Work<'_>| {
        let since = w.checkpoint.last_scored.map_or(w.since, |l| l.min(w.since));
        since.saturating_sub(rules::MAX_POWERUP_DURATION_MS)
    };
    let folding: Vec<&str> = work.iter().map(|w| w.name).collect();
    if !folding.is_empty() {
        let cutoff = work.iter().map(grant_cutoff).min().unwrap_or(Millis::MIN);
        let until = work.iter().map(|w| w.since).max().unwrap_or(Millis::MAX);
        let mut grants: HashMap<String, Vec<(Millis, Grant)>> = HashMap::new();
        for chunk in folding.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<MySql>::new(
                "SELECT username, sent_at_ms, powerup_kind, tier, expires_at_ms FROM player_events \
                 WHERE username IN (",
            );
            push_names(&mut q, chunk.iter().copied());
            q.push(") AND sent_at_ms > ");
            q.push_bind(cutoff);
            q.push(" AND sent_at_ms < ");
            q.push_bind(until);
            q.push(" AND outcome = 'bought' ORDER BY username, sent_at_ms, message_id");
            for row in q.build().fetch_all(&mut *conn).await? {
                let name = text(row.try_get(0)?)?;
                let starts_at: Millis = row.try_get(1)?;
                let kind: Option<String> = row.try_get(2)?;
                let tier: Option<u8> = row.try_get(3)?;
                let Some(powerup) = kind
                    .as_deref()
                    .and_then(PowerupKind::parse)
                    .zip(tier.and_then(Tier::new))
                    .map(|(k, t)| Powerup::new(k, t))
                else {
                    continue;
                };
                grants.entry(name).or_default().push((
                    starts_at,
                    Grant {
                        powerup,
                        starts_at,
                        expires_at: row.try_get::<Option<Millis>, _>(4)?.unwrap_or_default(),
                    },
                ));
            }
        }
        for w in &mut work {
            let cutoff = grant_cutoff(w);
            w.grants = grants
                .get(w.name)
                .map(|list| {
                    list.iter()
                        .filter(|(t, _)| *t > cutoff && *t < w.since)
                        .map(|(_, g)| *g)
                        .collect()
                })
                .unwrap_or_default();
        }
    }

    // Request keys of purchases judged on points before each fold's start, for the purchases
    // being folded.
    let mut wanted: BTreeMap<&str, HashSet<RequestKey>> = BTreeMap::new();
    for w in &work {
        for e in w.new.iter().chain(w.stored.iter().map(|s| &s.event)) {
            if let Action::Purchase { request_key, .. } = e.action {
                wanted.entry(w.name).or_default().insert(request_key);
            }
        }
    }
    if !wanted.is_empty() {
        let mut q = QueryBuilder::<MySql>::new(
            "SELECT username, sent_at_ms, request_key FROM player_events WHERE (username, request_key) IN (",
        );
        let mut sep = q.separated(", ");
        for (name, keys) in &wanted {
            for key in keys {
                sep.push("(");
                sep.push_bind_unseparated(name.as_bytes());
                sep.push_unseparated(", ");
                sep.push_bind_unseparated(key.as_slice());
                sep.push_unseparated(")");
            }
        }
        q.push(") AND outcome IN ('bought', 'insufficient_points')");
        let mut used: HashMap<String, Vec<(Millis, RequestKey)>> = HashMap::new();
        for row in q.build().fetch_all(&mut *conn).await? {
            let key: Vec<u8> = row.try_get(2)?;
            if let Ok(key) = RequestKey::try_from(key.as_slice()) {
                used.entry(text(row.try_get(0)?)?)
                    .or_default()
                    .push((row.try_get(1)?, key));
            }
        }
        for w in &mut work {
            if let Some(list) = used.get(w.name) {
                w.used_keys = list
                    .iter()
                    .filter(|(t, _)| *t < w.since)
                    .map(|(_, k)| *k)
                    .collect();
            }
        }
    }

    // 5. Fold and write.
    let mut new_rows: Vec<(&str, Judged)> = Vec::new();
    let mut changed_rows: Vec<(&str, Judged)> = Vec::new();
    let mut dropped: Vec<(&str, EventId)> = Vec::new();
    let mut outcomes: HashMap<String, Outcome> = HashMap::new();
    for w in work {
        let loaded = players.get_mut(w.name).expect("locked player");
        let stored_ids: HashSet<EventId> = w.stored.iter().map(|s| s.event.id.clone()).collect();
        let out = fold::run(
            &loaded.profile,
            w.start,
            w.checkpoint,
            &w.stored,
            &w.new,
            w.grants,
            w.used_keys,
            &rounds,
        );
        if matches!(w.start, Start::Refold(_)) {
            applied.refolded += 1;
            applied.rejudged += out.changed.len();
        }
        for id in &out.dropped {
            if stored_ids.contains(id) {
                applied.dropped_stored += 1;
                dropped.push((w.name, id.clone()));
            }
        }
        new_rows.extend(out.new.iter().map(|j| (w.name, j.clone())));
        changed_rows.extend(out.changed.iter().map(|j| (w.name, j.clone())));
        loaded.profile.state = out.state;
        loaded.profile.folded_to = out.folded_to.clone();
        loaded.profile.refold_from = None;
        loaded.changed = true;
        outcomes.insert(w.name.to_owned(), out);
    }
    // Results of the new events.
    for (i, e) in events.iter().enumerate() {
        if applied.results[i] != EventResult::Duplicate {
            continue;
        }
        let Some(out) = outcomes.get(&e.username) else {
            continue;
        };
        if let Some(j) = out.new.iter().find(|j| j.event.id == e.event.id) {
            applied.results[i] = EventResult::Judged(j.verdict);
        } else if out.dropped.contains(&e.event.id)
            && !known.contains(&(e.username.clone(), e.event.id.clone()))
        {
            applied.results[i] = EventResult::Dropped;
        }
    }
    // A batch can carry the same new event twice: only its first copy is judged.
    let mut first: HashSet<(&str, &EventId)> = HashSet::new();
    for (i, e) in events.iter().enumerate() {
        if !first.insert((&e.username, &e.event.id)) {
            applied.results[i] = EventResult::Duplicate;
        }
    }

    let received: HashMap<(&str, &EventId), Millis> = events
        .iter()
        .map(|e| ((e.username.as_str(), &e.event.id), e.received_at_ms))
        .collect();
    write_events(
        conn,
        &pending_rows,
        new_rows.iter().chain(changed_rows.iter()).map(|(n, j)| {
            let at = received.get(&(*n, &j.event.id)).copied().unwrap_or(now_ms);
            (*n, j, at)
        }),
    )
    .await?;
    if !dropped.is_empty() {
        for chunk in dropped.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<MySql>::new(
                "DELETE FROM player_events WHERE (username, sent_at_ms, message_id) IN (",
            );
            let mut sep = q.separated(", ");
            for (name, id) in chunk {
                sep.push("(");
                sep.push_bind_unseparated(name.as_bytes());
                sep.push_unseparated(", ");
                sep.push_bind_unseparated(id.sent_at);
                sep.push_unseparated(", ");
                sep.push_bind_unseparated(id.message_id.as_bytes());
                sep.push_unseparated(")");
            }
            q.push(")");
            q.build().execute(&mut *conn).await?;
        }
    }
    let changed: Vec<(&String, &Profile)> = players
        .iter()
        .filter(|(_, l)| l.changed)
        .map(|(n, l)| (n, &l.profile))
        .collect();
    for chunk in changed.chunks(ROWS_PER_STATEMENT) {
        // Every row exists and is locked: this upsert is a multi-row UPDATE.
        let mut q = QueryBuilder::<MySql>::new(
            "INSERT INTO users (username, score, streak, last_scored_opens_at_ms, created_at_ms, \
             folded_to_ms, folded_to_msg, refold_from_ms) ",
        );
        q.push_values(chunk, |mut b, (name, p)| {
            b.push_bind(name.as_bytes())
                .push_bind(p.state.score)
                .push_bind(p.state.streak)
                .push_bind(p.state.last_scored)
                .push_bind(now_ms)
                .push_bind(p.folded_to.as_ref().map(|f| f.sent_at))
                .push_bind(p.folded_to.as_ref().map(|f| f.message_id.as_bytes()))
                .push_bind(p.refold_from);
        });
        q.push(
            " ON DUPLICATE KEY UPDATE score = VALUES(score), streak = VALUES(streak), \
             last_scored_opens_at_ms = VALUES(last_scored_opens_at_ms), \
             folded_to_ms = VALUES(folded_to_ms), folded_to_msg = VALUES(folded_to_msg), \
             refold_from_ms = VALUES(refold_from_ms)",
        );
        q.build().execute(&mut *conn).await?;
    }
    // A registration sent earlier than the known one (rare): its own statement.
    for (name, l) in players.iter().filter(|(_, l)| l.registration_moved) {
        sqlx::query(
            "UPDATE users SET registered_at_ms = ?, registered_msg_id = ? WHERE username = ?",
        )
        .bind(l.profile.registered.sent_at)
        .bind(l.profile.registered.message_id.as_bytes())
        .bind(name.as_bytes())
        .execute(&mut *conn)
        .await?;
    }
    Ok(applied)
}

/// A verdict as columns: outcome, round, streak, points (or price), expiry.
type VerdictColumns<'a> = (
    Option<&'a str>,
    Option<Millis>,
    Option<u32>,
    Option<i64>,
    Option<Millis>,
);

/// A verdict's columns (`None`: pending).
fn verdict_columns(verdict: Option<&Verdict>) -> VerdictColumns<'static> {
    match verdict {
        None => (None, None, None, None, None),
        Some(
            v @ Verdict::Scored {
                round,
                streak,
                points,
            },
        ) => (
            Some(v.as_str()),
            Some(round.opens_at),
            Some(*streak),
            Some(*points),
            None,
        ),
        Some(v @ Verdict::Bought { grant, price }) => (
            Some(v.as_str()),
            None,
            None,
            Some(*price),
            Some(grant.expires_at),
        ),
        Some(v) => (Some(v.as_str()), None, None, None, None),
    }
}

/// One event row to write: pending (`verdict` `None`) or judged.
struct EventRow<'a> {
    name: &'a str,
    event: &'a Event,
    verdict: Option<&'a Verdict>,
    after: State,
    received_at: Millis,
}

/// Inserts pending events and upserts judged ones (new or re-judged), a few hundred per
/// statement. Presses and purchases have their own statements, each binding only its kind's
/// columns (the others keep their defaults).
async fn write_events<'a>(
    conn: &mut MySqlConnection,
    pending: &[&'a NewEvent],
    judged: impl Iterator<Item = (&'a str, &'a Judged, Millis)>,
) -> Result<(), sqlx::Error> {
    let (presses, purchases): (Vec<EventRow<'a>>, Vec<EventRow<'a>>) = pending
        .iter()
        .map(|e| EventRow {
            name: &e.username,
            event: &e.event,
            verdict: None,
            after: State::default(),
            received_at: e.received_at_ms,
        })
        .chain(judged.map(|(name, j, received_at)| EventRow {
            name,
            event: &j.event,
            verdict: Some(&j.verdict),
            after: j.after,
            received_at,
        }))
        .partition(|r| matches!(r.event.action, Action::Press));
    upsert_events(
        conn,
        &presses,
        "PRESS",
        "outcome, round_opens_at_ms, streak, points",
        "outcome = VALUES(outcome), round_opens_at_ms = VALUES(round_opens_at_ms), \
         streak = VALUES(streak), points = VALUES(points)",
        |b, r| {
            let (outcome, round, streak, points, _) = verdict_columns(r.verdict);
            b.push_bind(outcome)
                .push_bind(round)
                .push_bind(streak)
                .push_bind(points);
        },
    )
    .await?;
    upsert_events(
        conn,
        &purchases,
        "PURCHASE",
        "powerup_kind, tier, request_key, outcome, points, expires_at_ms",
        "outcome = VALUES(outcome), points = VALUES(points), \
         expires_at_ms = VALUES(expires_at_ms)",
        |b, r| {
            let Action::Purchase {
                powerup,
                request_key,
            } = &r.event.action
            else {
                unreachable!("partitioned above");
            };
            let (outcome, _, _, points, expires) = verdict_columns(r.verdict);
            b.push_bind(powerup.kind.as_str())
                .push_bind(powerup.tier.get())
                .push_bind(request_key.as_slice())
                .push_bind(outcome)
                .push_bind(points)
                .push_bind(expires);
        },
    )
    .await
}

/// Upserts `rows` of one `kind`, a few hundred per statement: the event's key and kind, the
/// kind's `columns` (bound by `bind`), then the checkpoint after it and when it was received.
/// A pending row written twice (two handlers, a name with no row to lock) stays pending; a
/// judged row takes its new verdict (`updates`) and checkpoint.
async fn upsert_events(
    conn: &mut MySqlConnection,
    rows: &[EventRow<'_>],
    kind: &'static str,
    columns: &str,
    updates: &str,
    mut bind: impl FnMut(&mut Separated<'_, MySql, &'static str>, &EventRow<'_>),
) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<MySql>::new(format!(
            "INSERT INTO player_events (username, sent_at_ms, message_id, kind, {columns}, \
             score_after, streak_after, last_scored_after, received_at_ms) "
        ));
        q.push_values(chunk, |mut b, r| {
            b.push_bind(r.name.as_bytes())
                .push_bind(r.event.id.sent_at)
                .push_bind(r.event.id.message_id.as_bytes())
                .push(format_args!("'{kind}'"));
            bind(&mut b, r);
            b.push_bind(r.after.score)
                .push_bind(r.after.streak)
                .push_bind(r.after.last_scored)
                .push_bind(r.received_at);
        });
        q.push(format_args!(
            " ON DUPLICATE KEY UPDATE {updates}, score_after = VALUES(score_after), \
             streak_after = VALUES(streak_after), last_scored_after = VALUES(last_scored_after)"
        ));
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Stores the push token of each registration that was sent after the stored one (the endpoint
/// must end with the token of the latest-sent registration, whatever the delivery order).
async fn store_tokens(
    conn: &mut MySqlConnection,
    registrations: &[NewRegistration],
    now_ms: Millis,
) -> Result<(), sqlx::Error> {
    // The latest-sent registration per name in this batch.
    let mut latest: BTreeMap<&str, &NewRegistration> = BTreeMap::new();
    for r in registrations {
        let e = latest.entry(&r.username).or_insert(r);
        if r.id > e.id {
            *e = r;
        }
    }
    let list: Vec<&NewRegistration> = latest.into_values().collect();
    for chunk in list.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<MySql>::new(
            "INSERT INTO push_endpoints (username, token, token_sent_at_ms, token_msg_id, updated_at_ms) ",
        );
        q.push_values(chunk, |mut b, r| {
            b.push_bind(r.username.as_bytes())
                .push_bind(r.token.as_bytes())
                .push_bind(r.id.sent_at)
                .push_bind(r.id.message_id.as_bytes())
                .push_bind(now_ms);
        });
        // Only a later-sent registration replaces the token (compared before any column is
        // assigned: MySQL evaluates the assignments left to right).
        q.push(
            " ON DUPLICATE KEY UPDATE \
             token = IF((VALUES(token_sent_at_ms), VALUES(token_msg_id)) > (token_sent_at_ms, token_msg_id), VALUES(token), token), \
             updated_at_ms = IF((VALUES(token_sent_at_ms), VALUES(token_msg_id)) > (token_sent_at_ms, token_msg_id), VALUES(updated_at_ms), updated_at_ms), \
             token_msg_id = IF((VALUES(token_sent_at_ms), VALUES(token_msg_id)) > (token_sent_at_ms, token_msg_id), VALUES(token_msg_id), token_msg_id), \
             token_sent_at_ms = IF(VALUES(token_sent_at_ms) > token_sent_at_ms OR (VALUES(token_sent_at_ms) = token_sent_at_ms AND VALUES(token_msg_id) >= token_msg_id), VALUES(token_sent_at_ms), token_sent_at_ms)",
        );
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}
