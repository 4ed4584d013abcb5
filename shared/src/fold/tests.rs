use super::*;
use crate::rules::{HOUR_MS, PowerupKind, SECOND_MS, Tier};
use proptest::prelude::*;

const T0: Millis = 1_700_000_000_000;
const MINUTE_MS: Millis = 60 * SECOND_MS;
const WINDOW: Millis = 60 * SECOND_MS;

fn id(at: Millis, mid: &str) -> EventId {
    EventId::new(at, mid)
}

fn press(name: &str, at: Millis, mid: &str) -> Message {
    Message::Player {
        name: name.into(),
        event: Event {
            id: id(at, mid),
            action: Action::Press,
        },
    }
}

fn buy(
    name: &str,
    at: Millis,
    mid: &str,
    kind: PowerupKind,
    tier: u8,
    req: Option<&str>,
) -> Message {
    Message::Player {
        name: name.into(),
        event: Event {
            id: id(at, mid),
            action: Action::Purchase {
                powerup: Powerup::new(kind, Tier::new(tier).unwrap()),
                request_key: request_key(req, mid),
            },
        },
    }
}

fn reg(name: &str, at: Millis, mid: &str) -> Message {
    Message::Register {
        name: name.into(),
        id: id(at, mid),
    }
}

fn round(opens: Millis) -> Message {
    Message::Round(Round::new(opens, WINDOW))
}

/// `n` rounds an hour apart from T0, and a press 1 s into each, by `name`.
fn streak_history(name: &str, n: i64) -> Vec<Message> {
    let mut h = vec![reg(name, T0 - HOUR_MS, "reg")];
    for i in 0..n {
        h.push(round(T0 + i * HOUR_MS));
        h.push(press(
            name,
            T0 + i * HOUR_MS + SECOND_MS,
            &format!("p{i:03}"),
        ));
    }
    h
}

/// Delivers `messages` to a ledger one at a time, in the given order, then re-folds what is marked.
fn deliver(messages: &[Message]) -> Ledger {
    let mut l = Ledger::new();
    for m in messages {
        l.apply(m);
    }
    l.refold_marked();
    l
}

fn assert_matches_reference(ledger: &Ledger, history: &[Message]) {
    let reference = fold_history(history);
    let rounds = rounds_in(history);
    assert!(ledger.settled(), "players left marked for a re-fold");
    for (name, want) in &reference {
        match ledger.outcome(name) {
            None => {
                assert!(
                    !want.registered,
                    "{name}: registered but unknown to the ledger"
                );
                assert_eq!(
                    ledger.stored(name),
                    want.verdicts.len(),
                    "{name}: pending events"
                );
            }
            Some(got) => {
                assert!(want.registered, "{name}");
                assert_eq!(got.state, want.state, "{name}: state");
                assert_eq!(got.grants, want.grants, "{name}: grants");
                let kept = want.kept(&rounds);
                assert_eq!(got.verdicts, kept, "{name}: verdicts");
            }
        }
    }
}

// ---- The four failures of the order-dependent design, as folds ----

#[test]
fn a_purchase_delivered_after_a_later_press_still_applies_to_it() {
    // 12 rounds of presses give 1+…+9 + 100 + 121 + 144 points; a MULTIPLIER 2 bought in the 12th
    // round 300 ms before its press doubles that press (144 → 288).
    let mut h = streak_history("ann", 12);
    let last = T0 + 11 * HOUR_MS;
    h.push(buy(
        "ann",
        last + 700,
        "buy",
        PowerupKind::Multiplier,
        1,
        None,
    ));
    let in_order = deliver(&h);
    let reference = fold_history(&h)["ann"].clone();
    assert_eq!(reference.state.score, 45 + 100 + 121 - 60 + 288);
    assert_eq!(in_order.outcome("ann").unwrap().state, reference.state);
    // The purchase delivered last, after the press sent 300 ms after it was applied.
    let buy_msg = h.pop().unwrap();
    h.push(buy_msg);
    let press_12 = h
        .iter()
        .position(|m| matches!(m, Message::Player { event, .. } if event.id.message_id == "p011"))
        .unwrap();
    let p = h.remove(press_12);
    h.insert(h.len() - 1, p);
    let late = deliver(&h);
    assert_eq!(late.outcome("ann").unwrap().state, reference.state);
    assert_matches_reference(&late, &h);
}

#[test]
fn a_purchase_paid_by_a_press_sent_just_before_it_is_not_refused() {
    // 11 presses: 45 + 100 + 121 = 266 points; then a 330-point purchase needs the 12th press.
    let mut h = streak_history("bob", 12);
    let last = T0 + 11 * HOUR_MS;
    h.push(buy(
        "bob",
        last + 2 * SECOND_MS,
        "buy",
        PowerupKind::Extender,
        3,
        Some("r1"),
    ));
    let reference = fold_history(&h)["bob"].clone();
    assert!(matches!(
        reference.verdicts[&id(last + 2 * SECOND_MS, "buy")],
        Verdict::Bought { price: 330, .. }
    ));
    // The purchase first, the press that paid for it afterwards.
    let n = h.len();
    h.swap(n - 1, n - 2);
    assert_matches_reference(&deliver(&h), &h);
}

#[test]
fn a_press_redelivered_after_the_next_rounds_press_keeps_the_streak() {
    let h = vec![
        reg("cy", T0 - 1, "reg"),
        round(T0),
        round(T0 + HOUR_MS),
        press("cy", T0 + HOUR_MS + 5, "r2"),
        press("cy", T0 + 5, "r1"),
        press("cy", T0 + 5, "r1"),
    ];
    let l = deliver(&h);
    let got = l.outcome("cy").unwrap();
    assert_eq!(got.state.score, 1 + 2);
    assert_eq!(got.state.streak, 2);
    assert_matches_reference(&l, &h);
}

#[test]
fn a_late_round_message_rejudges_the_presses_of_its_window() {
    let h = vec![
        reg("di", T0 - 10, "reg"),
        press("di", T0 + 10 * SECOND_MS, "p"),
        press("di", T0 - 5, "early"),
        round(T0),
    ];
    let mut l = Ledger::new();
    for m in &h[..3] {
        l.apply(m);
    }
    assert_eq!(
        l.outcome("di").unwrap().verdicts[&id(T0 + 10 * SECOND_MS, "p")],
        Verdict::PressRejected(RejectReason::NoRound)
    );
    l.apply(&h[3]);
    l.refold_marked();
    let got = l.outcome("di").unwrap();
    assert_eq!(got.state.score, 1);
    assert_eq!(
        got.verdicts[&id(T0 - 5, "early")],
        Verdict::PressRejected(RejectReason::NoRound)
    );
    assert_matches_reference(&l, &h);
}

#[test]
fn a_late_registration_rejudges_that_names_earlier_presses_and_purchases() {
    let mut h = streak_history("eve", 11);
    // Registration delivered last; a press before it stays rejected.
    let reg_msg = h.remove(0);
    h.insert(0, press("eve", T0 - 2 * HOUR_MS, "before"));
    h.push(buy(
        "eve",
        T0 + 10 * HOUR_MS + 30 * SECOND_MS,
        "buy",
        PowerupKind::Freeze,
        2,
        None,
    ));
    let mut l = Ledger::new();
    for m in &h {
        l.apply(m);
    }
    assert!(l.outcome("eve").is_none());
    assert_eq!(l.stored("eve"), 13, "kept while the name is unknown");
    l.apply(&reg_msg);
    h.push(reg_msg);
    assert_matches_reference(&l, &h);
    let got = l.outcome("eve").unwrap();
    assert_eq!(
        got.verdicts[&id(T0 - 2 * HOUR_MS, "before")],
        Verdict::PressRejected(RejectReason::UnknownUser)
    );
    assert_eq!(got.state.score, 45 + 100 + 121 - 150);
    // A registration sent even earlier, delivered later still: the first press now counts
    // (as a press before any round).
    l.apply(&reg("eve", T0 - 3 * HOUR_MS, "older"));
    h.push(reg("eve", T0 - 3 * HOUR_MS, "older"));
    l.refold_marked();
    assert_eq!(
        l.outcome("eve").unwrap().verdicts[&id(T0 - 2 * HOUR_MS, "before")],
        Verdict::PressRejected(RejectReason::NoRound)
    );
    assert_matches_reference(&l, &h);
}

// ---- Rules of the fold itself ----

#[test]
fn a_client_retry_applies_once_and_the_earliest_sent_counts() {
    let mut h = streak_history("fay", 11);
    let t = T0 + 10 * HOUR_MS + 10 * SECOND_MS;
    h.push(buy(
        "fay",
        t + 5,
        "retry",
        PowerupKind::Multiplier,
        1,
        Some("x"),
    ));
    h.push(buy(
        "fay",
        t,
        "first",
        PowerupKind::Multiplier,
        1,
        Some("x"),
    ));
    let l = deliver(&h);
    let got = l.outcome("fay").unwrap();
    assert!(matches!(
        got.verdicts[&id(t, "first")],
        Verdict::Bought { .. }
    ));
    assert_eq!(
        got.verdicts[&id(t + 5, "retry")],
        Verdict::PurchaseRefused(PurchaseRefusal::DuplicateRequest)
    );
    assert_eq!(got.grants.len(), 1);
    assert_matches_reference(&l, &h);
}

#[test]
fn a_purchase_refused_for_an_unknown_name_does_not_use_up_its_request_id() {
    let mut h = streak_history("gus", 11);
    h.push(buy(
        "gus",
        T0 - 2 * HOUR_MS,
        "early",
        PowerupKind::Freeze,
        1,
        Some("x"),
    ));
    h.push(buy(
        "gus",
        T0 + 10 * HOUR_MS + 5_000,
        "again",
        PowerupKind::Freeze,
        1,
        Some("x"),
    ));
    let got = deliver(&h).outcome("gus").unwrap();
    assert_eq!(
        got.verdicts[&id(T0 - 2 * HOUR_MS, "early")],
        Verdict::PurchaseRefused(PurchaseRefusal::UnknownUser)
    );
    assert!(matches!(
        got.verdicts[&id(T0 + 10 * HOUR_MS + 5_000, "again")],
        Verdict::Bought { .. }
    ));
}

#[test]
fn a_second_press_inside_the_close_is_not_kept_but_one_after_it_is() {
    let h = vec![
        reg("hal", T0 - 1, "reg"),
        round(T0),
        press("hal", T0 + 1_000, "a"),
        press("hal", T0 + 2_000, "b"),
        press("hal", T0 + WINDOW + 1, "late"),
    ];
    let l = deliver(&h);
    assert_eq!(l.stored("hal"), 2);
    let got = l.outcome("hal").unwrap();
    assert_eq!(
        got.verdicts[&id(T0 + WINDOW + 1, "late")],
        Verdict::PressRejected(RejectReason::TooLate)
    );
    // The earlier press arriving last replaces the one that scored.
    let h2 = vec![h[0].clone(), h[1].clone(), h[3].clone(), h[2].clone()];
    let l2 = deliver(&h2);
    assert_eq!(l2.stored("hal"), 1);
    assert!(
        l2.outcome("hal")
            .unwrap()
            .verdicts
            .contains_key(&id(T0 + 1_000, "a"))
    );
    assert_matches_reference(&l2, &h2);
}

#[test]
fn a_second_press_after_the_close_is_kept_for_a_round_announced_late() {
    // ann has an extender ×3 (a 60 s window reaches 180 s); she presses at 100 s (scores by the
    // extender) and at 170 s. A round opening at 150 s, announced late, owns the 170 s press.
    let mut h = streak_history("ann", 12);
    let t = T0 + 20 * HOUR_MS;
    h.push(buy(
        "ann",
        t - HOUR_MS,
        "ext",
        PowerupKind::Extender,
        3,
        None,
    ));
    h.push(round(t));
    h.push(press("ann", t + 100 * SECOND_MS, "a"));
    h.push(press("ann", t + 170 * SECOND_MS, "b"));
    let mut l = deliver(&h);
    assert_eq!(
        l.outcome("ann").unwrap().verdicts[&id(t + 170 * SECOND_MS, "b")],
        Verdict::PressRejected(RejectReason::AlreadyScored)
    );
    l.apply(&round(t + 150 * SECOND_MS));
    h.push(round(t + 150 * SECOND_MS));
    l.refold_marked();
    assert!(matches!(
        l.outcome("ann").unwrap().verdicts[&id(t + 170 * SECOND_MS, "b")],
        Verdict::Scored { .. }
    ));
    assert_matches_reference(&l, &h);
}

#[test]
fn events_in_send_order_never_refold() {
    let mut h = streak_history("ida", 15);
    h.push(buy(
        "ida",
        T0 + 14 * HOUR_MS + 10_000,
        "b",
        PowerupKind::Freeze,
        2,
        None,
    ));
    h.push(round(T0 + 15 * HOUR_MS));
    h.push(round(T0 + 16 * HOUR_MS));
    h.push(press("ida", T0 + 16 * HOUR_MS + 10, "after-freeze"));
    let mut l = Ledger::new();
    // The registration is the one message folded from the start (it creates the player).
    for m in &h {
        l.apply(m);
    }
    assert_eq!(l.refolds(), 1, "only the registration");
    let got = l.outcome("ida").unwrap();
    assert_eq!(
        got.state.streak, 16,
        "the freeze carried the streak over the missed round"
    );
    assert_matches_reference(&l, &h);
}

#[test]
fn request_keys_are_fixed_size_whatever_the_id() {
    let long = "é".repeat(128);
    assert_ne!(request_key(Some(&long), "m"), request_key(Some("é"), "m"));
    assert_eq!(request_key(Some("a"), "m1"), request_key(Some("a"), "m2"));
    assert_ne!(request_key(None, "m1"), request_key(None, "m2"));
    assert_ne!(request_key(Some("m1"), "x"), request_key(None, "m1"));
}

// ---- The invariant ----

/// A generated history: registrations, rounds (not overlapping), presses (most in time, some
/// before a round, late, or twice; some by names that never register) and purchases of every
/// type and level, with players diligent enough for streaks past 10 and purchases that succeed.
fn arb_history() -> impl Strategy<Value = Vec<Message>> {
    const PLAYERS: usize = 4;
    const ROUNDS: usize = 16;
    let names = ["ann", "bob", "cy", "di"];
    (
        // Rounds: (gap after the previous close in minutes, window s, fan-out s).
        prop_oneof![1 => 0..4usize, 4 => 10..=ROUNDS]
            .prop_flat_map(|n| prop::collection::vec((0i64..=300, 1i64..=120, 0i64..=30), n)),
        // Registrations: per player (registers?, minutes from T0, a second, later-sent one?).
        prop::collection::vec((0u8..10, -120i64..=300, any::<bool>()), PLAYERS),
        // Per player: how often they press (in 40ths).
        prop::collection::vec(prop_oneof![1 => 10u8..30, 3 => 36u8..=40], PLAYERS),
        // Per (player, round): (0: late, 1: early, the rest in time unless skipped by diligence;
        // where in the window; 0: twice).
        prop::collection::vec((0u8..40, 0.0f64..1.0, 0u8..10), PLAYERS * ROUNDS),
        // Purchases: (player, round index, ms from its opening, kind, tier, request id).
        prop::collection::vec(
            (
                0usize..PLAYERS,
                any::<prop::sample::Index>(),
                -600_000i64..=4 * HOUR_MS,
                0usize..3,
                1u8..=4,
                prop::option::of(0u8..3),
            ),
            0..12,
        ),
    )
        .prop_map(move |(round_specs, regs, diligence, presses, buys)| {
            let mut h = Vec::new();
            let mut opens = T0;
            let mut rounds = Vec::new();
            for (gap, window, fan) in round_specs {
                let r = Round::announced(
                    opens,
                    opens + (window + fan) * SECOND_MS,
                    Some(window * SECOND_MS),
                );
                rounds.push(r);
                h.push(Message::Round(r));
                opens = r.closes_at + 1 + gap * MINUTE_MS;
            }
            let mut n = 0u32;
            let mut mid = |prefix: &str| {
                n += 1;
                // Ids in an order unrelated to time.
                format!("{prefix}-{:08x}", n.wrapping_mul(2_654_435_761))
            };
            for (p, (registers, minutes, again)) in regs.into_iter().enumerate() {
                if registers < 9 {
                    let at = T0 + minutes * MINUTE_MS;
                    h.push(reg(names[p], at, &mid("reg")));
                    if again {
                        h.push(reg(names[p], at + HOUR_MS, &mid("reg")));
                    }
                }
            }
            for (k, (kind, where_, twice)) in presses.into_iter().enumerate() {
                let (p, r) = (k / ROUNDS, k % ROUNDS);
                let Some(round) = rounds.get(r) else { continue };
                if kind >= diligence[p] {
                    continue;
                }
                let length = round.closes_at - round.opens_at;
                let at = match kind {
                    0 => round.closes_at + 1 + (where_ * 3.0 * WINDOW as f64) as i64,
                    1 => round.opens_at - 1 - (where_ * 10_000.0) as i64,
                    _ => round.opens_at + (where_ * length as f64) as i64,
                };
                h.push(press(names[p], at, &mid("press")));
                if twice == 0 {
                    h.push(press(names[p], at + 1_500, &mid("press")));
                }
            }
            for (p, i, offset, kind, tier, req) in buys {
                // Mostly in the second half of the history, when players have points.
                let base = if rounds.is_empty() {
                    T0
                } else if tier % 2 == 0 || kind == 2 {
                    let half = rounds.len() / 2;
                    rounds[half + i.index(rounds.len() - half)].opens_at
                } else {
                    rounds[i.index(rounds.len())].opens_at
                };
                let req = req.map(|r| format!("req{r}"));
                h.push(buy(
                    names[p],
                    base + offset,
                    &mid("buy"),
                    PowerupKind::ALL[kind],
                    tier,
                    req.as_deref(),
                ));
            }
            h
        })
}

#[test]
fn generated_histories_cover_streaks_purchases_and_late_events() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut long_streaks, mut bought, mut freezes, mut pending) = (0, 0, 0, 0);
    let n = 400;
    for _ in 0..n {
        let h = arb_history().new_tree(&mut runner).unwrap().current();
        let r = fold_history(&h);
        long_streaks += usize::from(r.values().any(|p| {
            p.state.streak >= 10
                || p.verdicts
                    .values()
                    .any(|v| matches!(v, Verdict::Scored { streak, .. } if *streak >= 10))
        }));
        bought += usize::from(r.values().any(|p| !p.grants.is_empty()));
        freezes += usize::from(r.values().any(|p| {
            p.grants
                .iter()
                .any(|g| g.powerup.kind == PowerupKind::Freeze)
        }));
        pending += usize::from(r.values().any(|p| !p.registered && !p.verdicts.is_empty()));
    }
    assert!(long_streaks * 4 >= n, "streaks of 10+: {long_streaks}/{n}");
    assert!(bought * 10 >= n, "purchases that succeed: {bought}/{n}");
    assert!(freezes * 40 >= n, "freezes: {freezes}/{n}");
    assert!(
        pending * 20 >= n,
        "names that never register: {pending}/{n}"
    );
}

/// A delivery of a history: every message once or more, in any order, in batches, with re-folds
/// of marked players at random moments.
fn arb_delivery(
    history: Vec<Message>,
) -> impl Strategy<Value = (Vec<Message>, Vec<Vec<Message>>, Vec<bool>)> {
    let n = history.len();
    (
        prop::collection::vec(1usize..=3, n),
        Just(history),
        any::<u64>(),
        prop::collection::vec(1usize..=8, 1..=n.max(1)),
        prop::collection::vec(any::<bool>(), 1..=n.max(1)),
    )
        .prop_map(|(copies, history, seed, sizes, refolds)| {
            let mut all: Vec<Message> = history
                .iter()
                .zip(&copies)
                .flat_map(|(m, &c)| std::iter::repeat_n(m.clone(), c))
                .collect();
            // A deterministic shuffle from the seed.
            let mut s = seed | 1;
            for i in (1..all.len()).rev() {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                all.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let mut batches = Vec::new();
            let mut rest = &all[..];
            let mut k = 0;
            while !rest.is_empty() {
                let take = sizes[k % sizes.len()].min(rest.len());
                batches.push(rest[..take].to_vec());
                rest = &rest[take..];
                k += 1;
            }
            (history, batches, refolds)
        })
}

/// Applies one batch as the handler's consumers do: rounds and registrations one by one,
/// presses and purchases as one batch.
fn apply_batch(l: &mut Ledger, batch: &[Message]) {
    let mut events = Vec::new();
    for m in batch {
        match m {
            Message::Player { name, event } => events.push((name.clone(), event.clone())),
            other => l.apply(other),
        }
    }
    l.events(&events);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn any_delivery_folds_to_the_sorted_fold(
        (history, batches, refolds) in arb_history().prop_flat_map(arb_delivery)
    ) {
        let mut l = Ledger::new();
        for (i, batch) in batches.iter().enumerate() {
            apply_batch(&mut l, batch);
            if refolds[i % refolds.len()] {
                l.refold_marked();
            }
        }
        l.refold_marked();
        assert_matches_reference(&l, &history);
    }

    #[test]
    fn the_sorted_fold_in_batches_matches_one_fold(history in arb_history()) {
        // Events folded one batch at a time, in send order, from the state each batch left:
        // the incremental path alone.
        let mut l = Ledger::new();
        let mut sorted = history.clone();
        let key = |m: &Message| match m {
            Message::Round(r) => (r.opens_at, String::new()),
            Message::Register { id, .. } => (id.sent_at, id.message_id.clone()),
            Message::Player { event, .. } => (event.id.sent_at, event.id.message_id.clone()),
        };
        sorted.sort_by_key(key);
        for chunk in sorted.chunks(3) {
            apply_batch(&mut l, chunk);
        }
        l.refold_marked();
        assert_matches_reference(&l, &history);
    }

    #[test]
    fn scores_never_go_negative(history in arb_history()) {
        for (_, p) in fold_history(&history) {
            prop_assert!(p.state.score >= 0);
        }
    }
}
