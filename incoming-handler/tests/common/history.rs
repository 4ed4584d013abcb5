//! Random game histories for the model tests, and how to compare a database with the fold of a
//! history in send order (`buttonparty::fold::fold_history`).

use std::collections::BTreeMap;

use buttonparty::fold::{self, Action, Event, EventId, Message, PlayerOutcome, Verdict};
use buttonparty::rules::{Powerup, PowerupKind, Round, Tier};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sqlx::{MySqlPool, Row};

/// What a history's messages say, for sending them through the queues.
#[derive(Debug, Clone)]
pub enum Body {
    /// `{"username", "token"}` to the add-user queue.
    AddUser { username: String, token: String },
    /// `{"username"}` to the press queue.
    Press { username: String },
    /// A purchase to the powerup queue.
    Purchase {
        username: String,
        kind: PowerupKind,
        level: f64,
        request_id: Option<String>,
    },
    /// A round to the timestamp queue.
    Round { round_id: String, round: Round },
}

impl Body {
    /// The JSON body.
    pub fn json(&self) -> String {
        match self {
            Body::AddUser { username, token } => {
                serde_json::json!({"username": username, "token": token}).to_string()
            }
            Body::Press { username } => serde_json::json!({"username": username}).to_string(),
            Body::Purchase {
                username,
                kind,
                level,
                request_id,
            } => {
                let mut v = serde_json::json!({"username": username, "powerUpType": kind.as_str(), "quantity": level});
                if let Some(r) = request_id {
                    v["request_id"] = serde_json::json!(r);
                }
                v.to_string()
            }
            Body::Round { round_id, round } => serde_json::json!({
                "round_id": round_id,
                "opens_at_ms": round.opens_at,
                "closes_at_ms": round.closes_at,
                "window_ms": round.window,
            })
            .to_string(),
        }
    }
}

/// One planned message: when it is sent and what it says.
#[derive(Debug, Clone)]
pub struct Planned {
    /// When it is sent (epoch ms).
    pub at: i64,
    /// The body.
    pub body: Body,
}

/// A random history over `names` starting at `start` (epoch ms): `rounds` rounds of `window_ms` (plus up to `fan_ms` of
/// fan-out) separated by `gap_ms`, registrations (one name never registers, some register twice
/// or late), presses (mostly in time; some late, early or twice) and purchases of every type and
/// level (some retried with the same request id).
pub fn plan(
    seed: u64,
    start: i64,
    names: &[String],
    rounds: usize,
    window_ms: i64,
    fan_ms: i64,
    gap_ms: i64,
) -> Vec<Planned> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut opens = start;
    let mut list = Vec::new();
    for i in 0..rounds {
        let fan = if fan_ms > 0 {
            rng.random_range(0..=fan_ms)
        } else {
            0
        };
        let round = Round::announced(opens, opens + window_ms + fan, Some(window_ms));
        list.push(round);
        out.push(Planned {
            at: opens,
            body: Body::Round {
                round_id: format!("r{seed}-{i:03}"),
                round,
            },
        });
        opens = round.closes_at + gap_ms + rng.random_range(0..=gap_ms / 2);
    }
    let end = opens;
    for (p, name) in names.iter().enumerate() {
        if p + 1 == names.len() && names.len() > 2 {
            // The last name never registers.
        } else {
            // Most register before the first round; some a little later (their early presses
            // are rejected); some twice (a token refresh).
            let at = if rng.random_bool(0.75) {
                start - 1_000
            } else {
                start + rng.random_range(0..(end - start).max(3) / 3)
            };
            out.push(Planned {
                at,
                body: Body::AddUser {
                    username: name.clone(),
                    token: format!("tok-{name}-1"),
                },
            });
            if rng.random_bool(0.3) {
                out.push(Planned {
                    at: at + rng.random_range(1..(end - start).max(2)),
                    body: Body::AddUser {
                        username: name.clone(),
                        token: format!("tok-{name}-2"),
                    },
                });
            }
        }
        let diligence = if rng.random_bool(0.7) {
            rng.random_range(0.93..=1.0)
        } else {
            rng.random_range(0.5..=0.9)
        };
        for r in &list {
            if !rng.random_bool(diligence) {
                continue;
            }
            let length = r.closes_at - r.opens_at;
            let at = match rng.random_range(0..40) {
                0 => r.closes_at + 1 + rng.random_range(0..window_ms.max(1)),
                1 => r.opens_at - 1 - rng.random_range(0..200),
                _ => r.opens_at + rng.random_range(0..=length),
            };
            out.push(Planned {
                at,
                body: Body::Press {
                    username: name.clone(),
                },
            });
            if rng.random_bool(0.1) {
                out.push(Planned {
                    at: at + 20,
                    body: Body::Press {
                        username: name.clone(),
                    },
                });
            }
        }
        for _ in 0..rng.random_range(0..5) {
            let kind = PowerupKind::ALL[rng.random_range(0..3)];
            let tier = Tier::new(rng.random_range(1..=4)).unwrap();
            let level = Powerup::new(kind, tier).level();
            let at = if list.is_empty() {
                start
            } else {
                let r = &list[rng.random_range(list.len() / 2..list.len())];
                r.opens_at - rng.random_range(0..2 * gap_ms.max(1))
            };
            let request_id = rng
                .random_bool(0.5)
                .then(|| format!("q{}", rng.random_range(0..3)));
            out.push(Planned {
                at,
                body: Body::Purchase {
                    username: name.clone(),
                    kind,
                    level,
                    request_id: request_id.clone(),
                },
            });
            if request_id.is_some() && rng.random_bool(0.3) {
                out.push(Planned {
                    at: at + 30,
                    body: Body::Purchase {
                        username: name.clone(),
                        kind,
                        level,
                        request_id,
                    },
                });
            }
        }
    }
    out.sort_by_key(|p| p.at);
    out
}

/// The fold's view of a message sent at `sent_at` with id `message_id`.
pub fn to_fold(body: &Body, sent_at: i64, message_id: &str) -> Message {
    let id = EventId::new(sent_at, message_id);
    match body {
        Body::AddUser { username, .. } => Message::Register {
            name: username.clone(),
            id,
        },
        Body::Press { username } => Message::Player {
            name: username.clone(),
            event: Event {
                id,
                action: Action::Press,
            },
        },
        Body::Purchase {
            username,
            kind,
            level,
            request_id,
        } => Message::Player {
            name: username.clone(),
            event: Event {
                id,
                action: Action::Purchase {
                    powerup: Powerup::from_level(*kind, *level).unwrap(),
                    request_key: fold::request_key(request_id.as_deref(), message_id),
                },
            },
        },
        Body::Round { round, .. } => Message::Round(*round),
    }
}

/// A stored event's outcome, streak and points.
type StoredVerdict = (Option<String>, Option<u32>, Option<i64>);

/// Compares the database with the fold of `history` in send order: every registered player's
/// score, stored streak, last scored round and powerups, and every kept event's verdict; names
/// that never registered have no row and only pending events. Returns the differences.
pub async fn differences(pool: &MySqlPool, history: &[Message]) -> Vec<String> {
    let reference: BTreeMap<String, PlayerOutcome> = fold::fold_history(history);
    let rounds = fold::rounds_in(history);
    let mut diffs = Vec::new();
    for (name, want) in &reference {
        let row = sqlx::query(
            "SELECT score, streak, last_scored_opens_at_ms, refold_from_ms FROM users WHERE username = ?",
        )
        .bind(name.as_bytes())
        .fetch_optional(pool)
        .await
        .unwrap();
        let events: Vec<(i64, String, StoredVerdict)> = sqlx::query(
            "SELECT sent_at_ms, message_id, outcome, streak, points FROM player_events WHERE username = ? \
             ORDER BY sent_at_ms, message_id",
        )
        .bind(name.as_bytes())
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.get(0),
                String::from_utf8(r.get::<Vec<u8>, _>(1)).unwrap(),
                (r.get(2), r.get(3), r.get(4)),
            )
        })
        .collect();
        match (want.registered, row) {
            (false, None) => {
                if events.len() != want.verdicts.len() || events.iter().any(|e| e.2.0.is_some()) {
                    diffs.push(format!(
                        "{name}: never registered: {} events stored (want {} pending)",
                        events.len(),
                        want.verdicts.len()
                    ));
                }
            }
            (false, Some(_)) => diffs.push(format!("{name}: has a row but never registered")),
            (true, None) => diffs.push(format!("{name}: registered but has no row")),
            (true, Some(row)) => {
                let got = (
                    row.get::<i64, _>(0),
                    row.get::<u32, _>(1),
                    row.get::<Option<i64>, _>(2),
                );
                let w = (want.state.score, want.state.streak, want.state.last_scored);
                if got != w {
                    diffs.push(format!(
                        "{name}: (score, streak, last scored) {got:?}, want {w:?}"
                    ));
                }
                if let Some(r) = row.get::<Option<i64>, _>(3) {
                    diffs.push(format!("{name}: still marked for a re-fold from {r}"));
                }
                let kept: BTreeMap<(i64, String), Verdict> = want
                    .kept(&rounds)
                    .into_iter()
                    .map(|(id, v)| ((id.sent_at, id.message_id), v))
                    .collect();
                let stored: BTreeMap<(i64, String), StoredVerdict> =
                    events.into_iter().map(|(t, m, v)| ((t, m), v)).collect();
                for (k, v) in &kept {
                    match stored.get(k) {
                        None => {
                            diffs.push(format!("{name}: event {k:?} ({}) not stored", v.as_str()))
                        }
                        Some((o, s, p)) => {
                            let ok = o.as_deref() == Some(v.as_str())
                                && match v {
                                    Verdict::Scored { streak, points, .. } => {
                                        *s == Some(*streak) && *p == Some(*points)
                                    }
                                    Verdict::Bought { price, .. } => *p == Some(*price),
                                    _ => true,
                                };
                            if !ok {
                                diffs.push(format!(
                                    "{name}: event {k:?} stored as {o:?} {s:?} {p:?}, want {v:?}"
                                ));
                            }
                        }
                    }
                }
                for k in stored.keys() {
                    if !kept.contains_key(k) {
                        diffs.push(format!(
                            "{name}: event {k:?} stored but not kept by the fold"
                        ));
                    }
                }
                let grants: Vec<(i64, String, u8, i64)> = sqlx::query(
                    "SELECT starts_at_ms, kind, tier, expires_at_ms FROM powerups WHERE username = ? \
                     ORDER BY starts_at_ms, message_id",
                )
                .bind(name.as_bytes())
                .fetch_all(pool)
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                .collect();
                let want_grants: Vec<(i64, String, u8, i64)> = want
                    .grants
                    .iter()
                    .map(|g| {
                        (
                            g.starts_at,
                            g.powerup.kind.as_str().to_owned(),
                            g.powerup.tier.get(),
                            g.expires_at,
                        )
                    })
                    .collect();
                if grants != want_grants {
                    diffs.push(format!("{name}: powerups {grants:?}, want {want_grants:?}"));
                }
            }
        }
    }
    diffs
}
