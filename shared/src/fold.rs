//! The game as a fold of events in send order (SPEC §3 "Order of events").
//!
//! Four unordered queues deliver registrations, presses, purchases and rounds in any order, late
//! and twice. The state of a player is nevertheless defined by the messages in the order they were
//! *sent* — `(SentTimestamp, MessageId)`, [`EventId`] — and this module computes it:
//!
//! - [`fold`] folds one player's events, in send order, from a known starting point ([`Prior`]),
//!   judging each with the [`rules`](crate::rules) functions: it is both the reference (fold
//!   everything from the start) and the step the incoming handler runs on a slice of a player's
//!   history (from a checkpoint).
//! - [`plan`] decides, for a player and the events that just arrived, whether the fold can go on
//!   from the player's current state (the common case: events arrive in order) or must restart
//!   from a checkpoint before the earliest event that landed behind what was already folded.
//! - [`Ledger`] is the whole algorithm on an in-memory store, exactly as the handler runs it on
//!   the database (ingest, late rounds and registrations marking players for a re-fold, re-folds
//!   from checkpoints, dropped duplicate presses); the property tests check that any delivery of a
//!   history — any order, duplicates, any split into batches — ends in the state of the sorted
//!   fold ([`fold_history`]).
//!
//! Nothing here does I/O or reads a clock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use crate::rules::{
    self, Grant, Millis, Player, Powerup, PurchaseReject, RejectReason, Round, Rounds,
};

/// The position of a message in send order: its SQS `SentTimestamp`, then its `MessageId`.
/// Ordered by `(sent_at, message_id)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId {
    /// The SQS `SentTimestamp`, epoch ms.
    pub sent_at: Millis,
    /// The SQS `MessageId`.
    pub message_id: String,
}

impl EventId {
    /// The position of a message sent at `sent_at` with id `message_id`.
    pub fn new(sent_at: Millis, message_id: impl Into<String>) -> Self {
        Self {
            sent_at,
            message_id: message_id.into(),
        }
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.sent_at, self.message_id)
    }
}

/// What identifies a purchase for "applies once": a fixed-size digest of the client's
/// `request_id` (or of the message id without one), see [`request_key`].
pub type RequestKey = [u8; 32];

/// The key of a purchase: SHA-256 of `req:<request_id>`, or of `msg:<message_id>` when the client
/// sent no request id. Fixed size whatever the length of the id.
pub fn request_key(request_id: Option<&str>, message_id: &str) -> RequestKey {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    match request_id {
        Some(id) => {
            h.update(b"req:");
            h.update(id.as_bytes());
        }
        None => {
            h.update(b"msg:");
            h.update(message_id.as_bytes());
        }
    }
    h.finalize().into()
}

/// What a player did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Pressed the button.
    Press,
    /// Bought a powerup.
    Purchase {
        /// What.
        powerup: Powerup,
        /// The purchase's identity (a client's retry has the same key).
        request_key: RequestKey,
    },
}

/// One press or purchase of a player, at its position in send order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its position (its time is `id.sent_at`).
    pub id: EventId,
    /// What the player did.
    pub action: Action,
}

/// Why a purchase changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PurchaseRefusal {
    /// The name was not registered when the purchase was sent.
    UnknownUser,
    /// The score was below the price.
    InsufficientPoints,
    /// A purchase with the same key was sent earlier (a client's retry).
    DuplicateRequest,
}

impl PurchaseRefusal {
    /// A stable snake_case name: `"unknown_user"`, `"insufficient_points"` or
    /// `"duplicate_purchase"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::UnknownUser => "unknown_user",
            Self::InsufficientPoints => "insufficient_points",
            Self::DuplicateRequest => "duplicate_purchase",
        }
    }
}

/// What an event did, judged at its place in the fold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A press that scored.
    Scored {
        /// The round it scored in.
        round: Round,
        /// The streak it made.
        streak: u32,
        /// The points it earned.
        points: i64,
    },
    /// A press that did not.
    PressRejected(RejectReason),
    /// A purchase that was paid for.
    Bought {
        /// What it granted, from its send time.
        grant: Grant,
        /// What it cost.
        price: i64,
    },
    /// A purchase that changed nothing.
    PurchaseRefused(PurchaseRefusal),
}

impl Verdict {
    /// A stable snake_case name for storage, logs and counters: `"scored"`, `"bought"`, or the
    /// reason of a rejection (`"unknown_user"`, `"no_round"`, `"too_late"`, `"already_scored"`,
    /// `"insufficient_points"`, `"duplicate_purchase"`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Scored { .. } => "scored",
            Self::PressRejected(r) => r.as_str(),
            Self::Bought { .. } => "bought",
            Self::PurchaseRefused(r) => r.as_str(),
        }
    }

    /// Whether the event changed the player's state.
    pub fn took_effect(&self) -> bool {
        matches!(self, Self::Scored { .. } | Self::Bought { .. })
    }
}

/// A player's state between two events: what a checkpoint stores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct State {
    /// Points.
    pub score: i64,
    /// The streak as of `last_scored` (the stored value; reads derive the effective one).
    pub streak: u32,
    /// `opens_at` of the latest round the player scored in.
    pub last_scored: Option<Millis>,
}

/// One event as judged by the fold, and the player's state right after it (its checkpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    /// The event.
    pub event: Event,
    /// What it did.
    pub verdict: Verdict,
    /// The player's state after it.
    pub after: State,
}

/// What the fold needs to know of the player's history before its first event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prior {
    /// The state after the last earlier event (the checkpoint), or the new player's state.
    pub state: State,
    /// Powerups bought earlier, in send order: at least every one that can be active at or
    /// after `min(state.last_scored, first event)` (those bought less than
    /// [`rules::MAX_POWERUP_DURATION_MS`] before it, and every later one).
    pub grants: Vec<Grant>,
    /// Keys of earlier purchases that were judged on points (bought or refused for lack of
    /// points): a later purchase with the same key is a [`PurchaseRefusal::DuplicateRequest`].
    /// At least the keys of the purchases being folded.
    pub used_keys: HashSet<RequestKey>,
}

/// The player as the rules see it, from a state and grants.
fn player_at(state: &State, grants: &[Grant]) -> Player {
    Player {
        score: state.score,
        streak: state.streak,
        last_scored: state.last_scored,
        scored_rounds: state.last_scored.into_iter().collect(),
        grants: grants.to_vec(),
    }
}

/// Folds a player's `events`, which must be sorted by [`EventId`] and distinct, starting from
/// `prior`. `registered` is the position of the player's earliest registration (`None`: not
/// registered): an event sent before it is rejected as from an unknown user. Returns each event
/// judged, with the state after it, and the prior of whatever would follow.
///
/// In a fold in send order presses come in time order, so their rounds never go backwards: the
/// "already scored" check needs only the last scored round.
pub fn fold(
    registered: Option<&EventId>,
    rounds: &Rounds,
    prior: Prior,
    events: &[Event],
) -> (Vec<Judged>, Prior) {
    debug_assert!(events.windows(2).all(|w| w[0].id < w[1].id), "sorted");
    let Prior {
        mut state,
        mut grants,
        mut used_keys,
    } = prior;
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        let known = registered.is_some_and(|r| *r <= event.id);
        let at = event.id.sent_at;
        let verdict = match event.action {
            Action::Press if !known => Verdict::PressRejected(RejectReason::UnknownUser),
            Action::Press => {
                let mut player = player_at(&state, &grants);
                match rules::judge_press(Some(&mut player), rounds, at) {
                    Ok(scored) => {
                        state = State {
                            score: player.score,
                            streak: player.streak,
                            last_scored: player.last_scored,
                        };
                        Verdict::Scored {
                            round: scored.round,
                            streak: scored.new_streak,
                            points: scored.points,
                        }
                    }
                    Err(reason) => Verdict::PressRejected(reason),
                }
            }
            Action::Purchase { .. } if !known => {
                Verdict::PurchaseRefused(PurchaseRefusal::UnknownUser)
            }
            Action::Purchase {
                powerup,
                request_key,
            } => {
                if !used_keys.insert(request_key) {
                    Verdict::PurchaseRefused(PurchaseRefusal::DuplicateRequest)
                } else {
                    match rules::judge_purchase(state.score, powerup, at) {
                        Ok(p) => {
                            state.score = p.new_score;
                            grants.push(p.grant);
                            Verdict::Bought {
                                grant: p.grant,
                                price: p.price,
                            }
                        }
                        Err(PurchaseReject::InsufficientPoints { .. }) => {
                            Verdict::PurchaseRefused(PurchaseRefusal::InsufficientPoints)
                        }
                    }
                }
            }
        };
        out.push(Judged {
            event: event.clone(),
            verdict,
            after: state,
        });
    }
    (
        out,
        Prior {
            state,
            grants,
            used_keys,
        },
    )
}

/// Whether a judged press need not be kept: it is a second press in a round the player already
/// scored in, inside that round's unextended close. Such a press can never take effect, whatever
/// arrives later (the earlier press that scored stays scored: a registration only moves earlier,
/// and inside the close no extender is needed), except when a round opening inside that close is
/// announced late — rounds overlap only when opened by hand with `open-round` inside another's
/// window.
pub fn droppable(id: &EventId, verdict: &Verdict, rounds: &Rounds) -> bool {
    matches!(verdict, Verdict::PressRejected(RejectReason::AlreadyScored))
        && rounds
            .round_at(id.sent_at)
            .is_some_and(|round| id.sent_at <= round.closes_at)
}

/// The rounds among `messages`.
pub fn rounds_in(messages: &[Message]) -> Rounds {
    Rounds::new(
        messages
            .iter()
            .filter_map(|m| match m {
                Message::Round(r) => Some(*r),
                _ => None,
            })
            .collect(),
    )
}

/// What the store knows of a registered player (the handler's `users` row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The earliest registration's position.
    pub registered: EventId,
    /// The state after `folded_to`.
    pub state: State,
    /// The latest event folded into `state` (`None`: none yet).
    pub folded_to: Option<EventId>,
    /// Set when something landed behind `folded_to` (a late round or registration): the events
    /// sent at or after this instant must be judged again.
    pub refold_from: Option<Millis>,
}

impl Profile {
    /// A player whose earliest known registration is `registered`: nothing folded yet, every
    /// stored event (sent while the name was unknown) to be judged.
    pub fn new(registered: EventId) -> Self {
        Self {
            registered,
            state: State::default(),
            folded_to: None,
            refold_from: Some(Millis::MIN),
        }
    }

    /// A registration at `id`: moves the registration earlier if it is, and marks the events
    /// since for a re-fold. Returns whether anything changed.
    pub fn register(&mut self, id: &EventId) -> bool {
        if *id >= self.registered {
            return false;
        }
        self.registered = id.clone();
        self.mark(id.sent_at);
        true
    }

    /// A round opening at `opens_at` was learnt: if the player has folded events sent at or
    /// after it, they must be judged again. Returns whether the player was marked.
    pub fn round_learnt(&mut self, opens_at: Millis) -> bool {
        if self
            .folded_to
            .as_ref()
            .is_some_and(|f| f.sent_at >= opens_at)
        {
            self.mark(opens_at);
            true
        } else {
            false
        }
    }

    fn mark(&mut self, from: Millis) {
        self.refold_from = Some(self.refold_from.map_or(from, |r| r.min(from)));
    }
}

/// Where the fold of a player's new events starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// From the player's current state: every new event comes after everything folded.
    Continue,
    /// From the checkpoint before this instant: events sent at or after it are judged again.
    Refold(Millis),
}

/// Decides how to fold `new` (events not stored yet) into a registered player.
pub fn plan(profile: &Profile, new: &[Event]) -> Start {
    let earliest_new = new.iter().map(|e| &e.id).min();
    let behind = match (earliest_new, &profile.folded_to) {
        (Some(e), Some(f)) => e <= f,
        _ => false,
    };
    let from = [
        profile.refold_from,
        behind.then(|| earliest_new.map(|e| e.sent_at)).flatten(),
    ]
    .into_iter()
    .flatten()
    .min();
    match from {
        Some(from) => Start::Refold(from),
        None => Start::Continue,
    }
}

/// One player's stored event: the event and, once judged, its verdict and checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The event.
    pub event: Event,
    /// Its verdict and the state after it; `None` while the name is not registered.
    pub judged: Option<(Verdict, State)>,
}

/// The grants a fold starting after `state` at `from` needs (see [`Prior::grants`]), out of a
/// player's grants in send order.
pub fn grants_needed(all: &[Grant], state: &State, from: Millis) -> Vec<Grant> {
    let since = state.last_scored.map_or(from, |l| l.min(from));
    let cutoff = since.saturating_sub(rules::MAX_POWERUP_DURATION_MS);
    all.iter()
        .filter(|g| g.starts_at > cutoff)
        .copied()
        .collect()
}

/// What happened to a player's stored events in one fold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Newly arrived events, judged (those not dropped are to be stored).
    pub new: Vec<Judged>,
    /// Stored events judged again whose verdict or checkpoint changed.
    pub changed: Vec<Judged>,
    /// Events (new or stored) not kept: see [`droppable`].
    pub dropped: Vec<EventId>,
    /// The player's state and last folded event afterwards.
    pub state: State,
    /// The latest event folded.
    pub folded_to: Option<EventId>,
}

/// Runs one fold for a registered player over a slice of its history, as the handler does with
/// the rows it loaded: `checkpoint` is the state after the last judged event before the slice
/// (ignored with [`Start::Continue`], where the profile's state is used), `stored` the stored
/// events the slice re-judges (sent at or after the refold instant, sorted), `new` the newly
/// arrived events (sorted, none already stored), `grants` and `used_keys` as in [`Prior`].
#[allow(clippy::too_many_arguments)]
pub fn run(
    profile: &Profile,
    start: Start,
    checkpoint: State,
    stored: &[Stored],
    new: &[Event],
    grants: Vec<Grant>,
    used_keys: HashSet<RequestKey>,
    rounds: &Rounds,
) -> Outcome {
    let state = match start {
        Start::Continue => profile.state,
        Start::Refold(_) => checkpoint,
    };
    let mut all: Vec<(Event, Option<&Stored>)> = stored
        .iter()
        .map(|s| (s.event.clone(), Some(s)))
        .chain(new.iter().map(|e| (e.clone(), None)))
        .collect();
    all.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    let events: Vec<Event> = all.iter().map(|(e, _)| e.clone()).collect();
    let (judged, prior) = fold(
        Some(&profile.registered),
        rounds,
        Prior {
            state,
            grants,
            used_keys,
        },
        &events,
    );
    let mut out = Outcome {
        state: prior.state,
        folded_to: [
            profile.folded_to.clone(),
            events.last().map(|e| e.id.clone()),
        ]
        .into_iter()
        .flatten()
        .max(),
        ..Outcome::default()
    };
    for (j, (_, was)) in judged.into_iter().zip(all) {
        let drop = droppable(&j.event.id, &j.verdict, rounds);
        match was {
            None if drop => out.dropped.push(j.event.id.clone()),
            None => out.new.push(j),
            Some(_) if drop => out.dropped.push(j.event.id.clone()),
            Some(s) => {
                if s.judged != Some((j.verdict, j.after)) {
                    out.changed.push(j);
                }
            }
        }
    }
    out
}

/// Everything the handler receives, for the in-memory [`Ledger`] and the reference fold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// An add-user message: registers `name` (if new) from its send time.
    Register {
        /// Who.
        name: String,
        /// Its position.
        id: EventId,
    },
    /// A timestamp message.
    Round(Round),
    /// A press or purchase by `name`.
    Player {
        /// Who.
        name: String,
        /// What and when.
        event: Event,
    },
}

/// A player's final state and every event's verdict, as the fold in send order gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlayerOutcome {
    /// Whether the name ever registered.
    pub registered: bool,
    /// The state after the last event.
    pub state: State,
    /// Powerups bought, in send order.
    pub grants: Vec<Grant>,
    /// Every distinct event and its verdict, in send order.
    pub verdicts: BTreeMap<EventId, Verdict>,
}

impl PlayerOutcome {
    /// The verdicts a store keeps: all but the [`droppable`] ones.
    pub fn kept(&self, rounds: &Rounds) -> BTreeMap<EventId, Verdict> {
        self.verdicts
            .iter()
            .filter(|(id, v)| !droppable(id, v, rounds))
            .map(|(id, v)| (id.clone(), *v))
            .collect()
    }
}

/// The reference: folds a whole history (any order, duplicates allowed) in send order, from
/// scratch, player by player.
pub fn fold_history(messages: &[Message]) -> BTreeMap<String, PlayerOutcome> {
    let mut rounds = Vec::new();
    let mut registered: HashMap<&str, EventId> = HashMap::new();
    let mut events: HashMap<&str, BTreeMap<EventId, Event>> = HashMap::new();
    for m in messages {
        match m {
            Message::Round(r) => rounds.push(*r),
            Message::Register { name, id } => {
                let e = registered.entry(name).or_insert_with(|| id.clone());
                if id < e {
                    *e = id.clone();
                }
            }
            Message::Player { name, event } => {
                events
                    .entry(name)
                    .or_default()
                    .insert(event.id.clone(), event.clone());
            }
        }
    }
    let rounds = Rounds::new(rounds);
    let names: HashSet<&str> = registered.keys().chain(events.keys()).copied().collect();
    names
        .into_iter()
        .map(|name| {
            let evs: Vec<Event> = events
                .get(name)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default();
            let reg = registered.get(name);
            let (judged, prior) = fold(reg, &rounds, Prior::default(), &evs);
            let outcome = PlayerOutcome {
                registered: reg.is_some(),
                state: prior.state,
                grants: prior.grants,
                verdicts: judged
                    .into_iter()
                    .map(|j| (j.event.id, j.verdict))
                    .collect(),
            };
            (name.to_owned(), outcome)
        })
        .collect()
}

/// One player in the [`Ledger`]: what the handler keeps in its `users` row (when registered)
/// and in its event table.
#[derive(Debug, Clone, Default)]
struct Entry {
    profile: Option<Profile>,
    events: BTreeMap<EventId, Stored>,
}

/// The incoming handler's algorithm on an in-memory store: the model the property tests check
/// against [`fold_history`], and a description of what the database writer does.
///
/// - [`Ledger::events`]: a batch of presses and purchases. Each is stored once (by id); a name
///   not registered keeps its events pending; a registered player's fold continues from its
///   state, or re-folds from the checkpoint before the earliest event that landed behind.
/// - [`Ledger::register`]: creates the player (and judges its pending events) or moves its
///   registration earlier (re-folding from there).
/// - [`Ledger::round`]: records a round and marks every player with an event folded at or after
///   its opening for a re-fold from there; [`Ledger::refold_marked`] does those re-folds (the
///   handler's re-fold worker).
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    rounds: Rounds,
    players: HashMap<String, Entry>,
    refolds: usize,
}

impl Ledger {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The rounds known.
    pub fn rounds(&self) -> &Rounds {
        &self.rounds
    }

    /// Applies any message.
    pub fn apply(&mut self, m: &Message) {
        match m {
            Message::Round(r) => self.round(*r),
            Message::Register { name, id } => self.register(name, id),
            Message::Player { name, event } => self.events(&[(name.clone(), event.clone())]),
        }
    }

    /// A round message.
    pub fn round(&mut self, round: Round) {
        if !self.rounds.insert(round) {
            return;
        }
        for entry in self.players.values_mut() {
            if let Some(p) = entry.profile.as_mut() {
                p.round_learnt(round.opens_at);
            }
        }
    }

    /// An add-user message (the game part: the push token is not modelled).
    pub fn register(&mut self, name: &str, id: &EventId) {
        let entry = self.players.entry(name.to_owned()).or_default();
        match entry.profile.as_mut() {
            None => entry.profile = Some(Profile::new(id.clone())),
            Some(p) => {
                p.register(id);
            }
        }
        self.fold_player(name, Vec::new());
    }

    /// A batch of presses and purchases.
    pub fn events(&mut self, batch: &[(String, Event)]) {
        let mut by_player: BTreeMap<&str, Vec<Event>> = BTreeMap::new();
        for (name, event) in batch {
            by_player.entry(name).or_default().push(event.clone());
        }
        for (name, mut new) in by_player {
            new.sort_by(|a, b| a.id.cmp(&b.id));
            new.dedup_by(|a, b| a.id == b.id);
            let entry = self.players.entry(name.to_owned()).or_default();
            // Redeliveries: already stored.
            new.retain(|e| !entry.events.contains_key(&e.id));
            if entry.profile.is_none() {
                for e in new {
                    entry.events.insert(
                        e.id.clone(),
                        Stored {
                            event: e,
                            judged: None,
                        },
                    );
                }
                continue;
            }
            self.fold_player(name, new);
        }
    }

    /// Re-folds every player marked by a late round or registration.
    pub fn refold_marked(&mut self) {
        let marked: Vec<String> = self
            .players
            .iter()
            .filter(|(_, e)| e.profile.as_ref().is_some_and(|p| p.refold_from.is_some()))
            .map(|(n, _)| n.clone())
            .collect();
        for name in marked {
            self.fold_player(&name, Vec::new());
        }
    }

    /// Folds `new` (not stored yet) into a registered player, as the database writer does.
    fn fold_player(&mut self, name: &str, new: Vec<Event>) {
        let rounds = &self.rounds;
        let entry = self.players.get_mut(name).expect("player entry");
        let profile = entry.profile.as_ref().expect("registered");
        let start = plan(profile, &new);
        if matches!(start, Start::Refold(_)) {
            self.refolds += 1;
        }
        let (checkpoint, stored, since) = match start {
            Start::Continue => (
                profile.state,
                Vec::new(),
                new.first().map_or(Millis::MAX, |e| e.id.sent_at),
            ),
            Start::Refold(from) => {
                let checkpoint = entry
                    .events
                    .values()
                    .rev()
                    .filter(|s| s.event.id.sent_at < from)
                    .find_map(|s| s.judged.map(|(_, after)| after))
                    .unwrap_or_default();
                let stored: Vec<Stored> = entry
                    .events
                    .values()
                    .filter(|s| s.event.id.sent_at >= from)
                    .cloned()
                    .collect();
                (checkpoint, stored, from)
            }
        };
        let from_id = EventId::new(since, "");
        let before = |s: &&Stored| s.event.id < from_id;
        let all_grants: Vec<Grant> = entry
            .events
            .values()
            .filter(before)
            .filter_map(|s| match s.judged {
                Some((Verdict::Bought { grant, .. }, _)) => Some(grant),
                _ => None,
            })
            .collect();
        let grants = grants_needed(&all_grants, &checkpoint, since);
        let used_keys: HashSet<RequestKey> = entry
            .events
            .values()
            .filter(before)
            .filter_map(|s| match (s.event.action, s.judged) {
                (
                    Action::Purchase { request_key, .. },
                    Some((
                        Verdict::Bought { .. }
                        | Verdict::PurchaseRefused(PurchaseRefusal::InsufficientPoints),
                        _,
                    )),
                ) => Some(request_key),
                _ => None,
            })
            .collect();
        let out = run(
            profile, start, checkpoint, &stored, &new, grants, used_keys, rounds,
        );
        for j in out.new.into_iter().chain(out.changed) {
            entry.events.insert(
                j.event.id.clone(),
                Stored {
                    event: j.event,
                    judged: Some((j.verdict, j.after)),
                },
            );
        }
        for id in &out.dropped {
            entry.events.remove(id);
        }
        let profile = entry.profile.as_mut().expect("registered");
        profile.state = out.state;
        profile.folded_to = out.folded_to;
        profile.refold_from = None;
    }

    /// What a reader sees of `name` now: `None` for a name never registered.
    pub fn outcome(&self, name: &str) -> Option<PlayerOutcome> {
        let entry = self.players.get(name)?;
        let profile = entry.profile.as_ref()?;
        Some(PlayerOutcome {
            registered: true,
            state: profile.state,
            grants: entry
                .events
                .values()
                .filter_map(|s| match s.judged {
                    Some((Verdict::Bought { grant, .. }, _)) => Some(grant),
                    _ => None,
                })
                .collect(),
            verdicts: entry
                .events
                .iter()
                .filter_map(|(id, s)| Some((id.clone(), s.judged?.0)))
                .collect(),
        })
    }

    /// Every name seen (registered or not).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.players.keys().map(String::as_str)
    }

    /// The number of events stored for `name` (pending ones included).
    pub fn stored(&self, name: &str) -> usize {
        self.players.get(name).map_or(0, |e| e.events.len())
    }

    /// How many folds restarted from a checkpoint (the others continued from the current state).
    pub fn refolds(&self) -> usize {
        self.refolds
    }

    /// Whether every registered player is folded up to date (nothing marked).
    pub fn settled(&self) -> bool {
        self.players
            .values()
            .all(|e| e.profile.as_ref().is_none_or(|p| p.refold_from.is_none()))
    }
}

#[cfg(test)]
mod tests;
