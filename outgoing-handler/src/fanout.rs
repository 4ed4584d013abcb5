//! How long a round stays open (SPEC §3, issue 13): the base window plus the time the push needs
//! to reach every subscribed phone at the push service's rate,
//!
//! ```text
//! closes_at_ms = opens_at_ms + window_ms + fan_out_ms
//! fan_out_ms   = ceil(audience × 1000 / push_rate_per_sec)
//! ```
//!
//! so the last phone told still has the whole window after its push could arrive. The audience
//! is the topic's `SubscriptionsConfirmed` (read before each round), or
//! `BUTTONPARTY_PUSH_AUDIENCE` when set; when the topic cannot be read, the last audience read
//! (see [`AudienceTracker`]). Everything here is pure integer arithmetic: no clock, no I/O.

use std::fmt;
use std::time::Duration;

/// FCM's default quota: 600,000 messages per minute per project, i.e. 10,000 per second.
pub const DEFAULT_PUSH_RATE_PER_SEC: u64 = 10_000;

/// Where a round's audience came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudienceSource {
    /// The topic's `SubscriptionsConfirmed`, read for this round.
    Topic,
    /// `BUTTONPARTY_PUSH_AUDIENCE`.
    Override,
    /// The topic could not be read: the last value read from it.
    LastKnown,
    /// The topic could not be read and was never read before: 0, so the round gets the base
    /// window only.
    Unknown,
}

impl AudienceSource {
    /// The word logged in the `audience_source` field.
    pub fn as_str(self) -> &'static str {
        match self {
            AudienceSource::Topic => "topic",
            AudienceSource::Override => "override",
            AudienceSource::LastKnown => "last_known",
            AudienceSource::Unknown => "unknown",
        }
    }
}

impl fmt::Display for AudienceSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The inputs of a round's fan-out: how many phones the push reaches and how fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanOut {
    /// Endpoints the push reaches.
    pub audience: u64,
    /// Where `audience` came from.
    pub source: AudienceSource,
    /// Pushes per second the push service delivers (at least 1).
    pub rate_per_sec: u64,
}

impl FanOut {
    /// No fan-out time: an audience of 0 (what tests and emulators without subscribers get).
    pub fn none(rate_per_sec: u64) -> Self {
        Self {
            audience: 0,
            source: AudienceSource::Unknown,
            rate_per_sec,
        }
    }

    /// The fan-out time in ms: see [`fan_out_ms`].
    pub fn ms(&self) -> i64 {
        fan_out_ms(self.audience, self.rate_per_sec)
    }
}

/// `ceil(audience × 1000 / rate_per_sec)` ms, exactly (128-bit arithmetic), saturating at
/// `i64::MAX`. A rate of 0 is treated as 1 per second (the configuration refuses 0).
pub fn fan_out_ms(audience: u64, rate_per_sec: u64) -> i64 {
    let rate = u128::from(rate_per_sec.max(1));
    let ms = (u128::from(audience) * 1000).div_ceil(rate);
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// `opens_at_ms + window_ms + fan_out_ms`, saturating; never before `opens_at_ms + window_ms`
/// (negative inputs count as 0).
pub fn closes_at_ms(opens_at_ms: i64, window_ms: i64, fan_out_ms: i64) -> i64 {
    opens_at_ms
        .saturating_add(window_ms.max(0))
        .saturating_add(fan_out_ms.max(0))
}

/// `d` in whole milliseconds, saturating.
pub fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The formula as logged, with its inputs filled in.
pub fn formula_text(window_ms: i64, fan_out: &FanOut) -> String {
    format!(
        "closes_at = opens_at + window {window_ms} ms + ceil({} × 1000 / {}) = {} ms",
        fan_out.audience,
        fan_out.rate_per_sec,
        window_ms.saturating_add(fan_out.ms())
    )
}

/// Decides each round's audience from the override, the topic read, and what was read before.
#[derive(Debug, Clone, Default)]
pub struct AudienceTracker {
    last_known: Option<u64>,
}

impl AudienceTracker {
    /// A tracker that has read nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last audience read from the topic, if any.
    pub fn last_known(&self) -> Option<u64> {
        self.last_known
    }

    /// Records a successful read of the topic (e.g. at start-up) without opening a round.
    pub fn observe(&mut self, audience: u64) {
        self.last_known = Some(audience);
    }

    /// The audience of a round: the override when set (the topic is then not needed); else the
    /// topic's count (remembered); else, when the read failed, the last count read, or 0 if there
    /// never was one.
    pub fn resolve<E>(
        &mut self,
        override_audience: Option<u64>,
        read: Result<u64, E>,
    ) -> (u64, AudienceSource) {
        if let Some(n) = override_audience {
            return (n, AudienceSource::Override);
        }
        match read {
            Ok(n) => {
                self.last_known = Some(n);
                (n, AudienceSource::Topic)
            }
            Err(_) => match self.last_known {
                Some(n) => (n, AudienceSource::LastKnown),
                None => (0, AudienceSource::Unknown),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fan_out_is_the_ceiling_of_audience_over_rate_in_ms() {
        assert_eq!(fan_out_ms(0, 10_000), 0);
        assert_eq!(fan_out_ms(1, 10_000), 1); // 0.1 ms rounds up
        assert_eq!(fan_out_ms(10, 10_000), 1);
        assert_eq!(fan_out_ms(11, 10_000), 2); // 1.1 ms
        assert_eq!(fan_out_ms(10_000, 10_000), 1_000);
        assert_eq!(fan_out_ms(10_001, 10_000), 1_001); // 1000.1 ms
        assert_eq!(fan_out_ms(1_000_000, 10_000), 100_000);
        assert_eq!(fan_out_ms(10_000_000, 10_000), 1_000_000); // 16 min 40 s
        assert_eq!(fan_out_ms(12_500_000, 10_000), 1_250_000);
        assert_eq!(fan_out_ms(7, 3), 2_334); // 2333.33… ms
        assert_eq!(fan_out_ms(1, 1), 1_000);
        assert_eq!(fan_out_ms(5, 0), 5_000); // a rate of 0 counts as 1/s
        // No overflow: u64::MAX × 1000 needs 74 bits.
        assert_eq!(fan_out_ms(u64::MAX, u64::MAX), 1_000);
        assert_eq!(fan_out_ms(u64::MAX, 1), i64::MAX);
    }

    #[test]
    fn a_round_closes_after_window_plus_fan_out_never_before_the_window() {
        let opens = 1_700_000_000_000;
        assert_eq!(closes_at_ms(opens, 60_000, 0), opens + 60_000);
        assert_eq!(
            closes_at_ms(opens, 60_000, fan_out_ms(1_000_000, 10_000)),
            opens + 160_000
        );
        assert_eq!(closes_at_ms(opens, 60_000, -5), opens + 60_000);
        assert_eq!(closes_at_ms(i64::MAX - 1, 60_000, 9), i64::MAX);
    }

    proptest::proptest! {
        #[test]
        fn every_phone_gets_at_least_the_window(
            audience in 0u64..100_000_000,
            rate in 1u64..1_000_000,
            window_ms in 1_000i64..=86_400_000,
            opens in 0i64..10_000_000_000_000,
        ) {
            let f = fan_out_ms(audience, rate);
            let closes = closes_at_ms(opens, window_ms, f);
            proptest::prop_assert!(closes >= opens + window_ms);
            // The last push goes out at opens + audience / rate (exactly, in real numbers); it
            // still has the whole window: closes − that ≥ window, i.e. f × rate ≥ audience × 1000.
            proptest::prop_assert!(f as u128 * rate as u128 >= audience as u128 * 1000);
            // And it is the least such whole number of milliseconds.
            if f > 0 {
                let below = (f as u128 - 1) * u128::from(rate);
                proptest::prop_assert!(below < u128::from(audience) * 1000);
            }
        }
    }

    #[test]
    fn the_override_wins_and_needs_no_topic() {
        let mut t = AudienceTracker::new();
        assert_eq!(
            t.resolve(Some(42), Err::<u64, _>("no topic")),
            (42, AudienceSource::Override)
        );
        assert_eq!(
            t.resolve(Some(7), Ok::<_, ()>(9)),
            (7, AudienceSource::Override)
        );
        // An override does not count as a topic read.
        assert_eq!(t.last_known(), None);
    }

    #[test]
    fn a_failed_read_uses_the_last_count_read_or_zero() {
        let mut t = AudienceTracker::new();
        assert_eq!(
            t.resolve(None, Err::<u64, _>("down")),
            (0, AudienceSource::Unknown)
        );
        assert_eq!(
            t.resolve(None, Ok::<_, ()>(1_234)),
            (1_234, AudienceSource::Topic)
        );
        assert_eq!(
            t.resolve(None, Err::<u64, _>("down")),
            (1_234, AudienceSource::LastKnown)
        );
        assert_eq!(
            t.resolve(None, Ok::<_, ()>(2_000)),
            (2_000, AudienceSource::Topic)
        );
        assert_eq!(
            t.resolve(None, Err::<u64, _>("down")),
            (2_000, AudienceSource::LastKnown)
        );
        let mut t = AudienceTracker::new();
        t.observe(99);
        assert_eq!(
            t.resolve(None, Err::<u64, _>("down")),
            (99, AudienceSource::LastKnown)
        );
    }

    #[test]
    fn the_formula_text_shows_the_inputs() {
        let f = FanOut {
            audience: 1_000_000,
            source: AudienceSource::Topic,
            rate_per_sec: 10_000,
        };
        assert_eq!(
            formula_text(60_000, &f),
            "closes_at = opens_at + window 60000 ms + ceil(1000000 × 1000 / 10000) = 160000 ms"
        );
        assert_eq!(FanOut::none(10_000).ms(), 0);
        assert_eq!(AudienceSource::LastKnown.to_string(), "last_known");
    }
}
