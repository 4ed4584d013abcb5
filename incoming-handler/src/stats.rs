//! Counters, and the one info line a minute that reports them.
//!
//! `stats received=… applied=… rejected={…} malformed=… pending=… duplicates=… refolded=…
//! rejudged=… expired=… batches=… batch_avg=… batch_max=… db_ms_avg=… db_ms_max=… held=…`:
//! counts since the previous line.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::queue::QueueKind;

#[derive(Debug, Default, Clone)]
struct Counts {
    received: u64,
    applied: u64,
    rejected: BTreeMap<&'static str, u64>,
    malformed: u64,
    pending: u64,
    duplicates: u64,
    refolded: u64,
    rejudged: u64,
    expired: u64,
    batches: u64,
    batch_items: u64,
    batch_max: u64,
    db_calls: u64,
    db_total: Duration,
    db_max: Duration,
    delete_failed: u64,
    heartbeats: u64,
    db_retries: u64,
    redelivered: u64,
    access_denied: u64,
}

/// Counters shared by every task of the handler.
#[derive(Debug, Default)]
pub struct Stats {
    since_last: Mutex<Counts>,
    total: Mutex<Counts>,
}

/// A copy of the totals since start, for tests and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Messages received.
    pub received: u64,
    /// Messages applied (state changed).
    pub applied: u64,
    /// Messages judged and rejected, all reasons.
    pub rejected: u64,
    /// Malformed messages.
    pub malformed: u64,
    /// Events stored without a verdict because their name is not registered (yet).
    pub pending: u64,
    /// Messages already applied (redeliveries, or taken by another handler first).
    pub duplicates: u64,
    /// Players whose fold restarted from a checkpoint (an event, round or registration that
    /// arrived behind what was folded).
    pub refolded: u64,
    /// Stored events whose verdict or checkpoint changed in those re-folds.
    pub rejudged: u64,
    /// Pending events of names that never registered, expired (counted as rejected).
    pub expired: u64,
    /// Database batches committed.
    pub batches: u64,
    /// Delete entries the queue refused (stale receipt handles).
    pub delete_failed: u64,
    /// Database transactions retried.
    pub db_retries: u64,
    /// Messages received more than once (SQS redeliveries).
    pub redelivered: u64,
    /// Visibility extensions sent.
    pub heartbeats: u64,
    /// Access-denied (1045) errors from the database.
    pub access_denied: u64,
}

impl Stats {
    fn with(&self, f: impl Fn(&mut Counts)) {
        if let Ok(mut c) = self.since_last.lock() {
            f(&mut c);
        }
        if let Ok(mut c) = self.total.lock() {
            f(&mut c);
        }
    }

    /// Messages received from a queue.
    pub fn received(&self, _queue: QueueKind, n: usize) {
        self.with(|c| c.received += n as u64);
    }
    /// A message delivered again (its receive count is above 1).
    pub fn redelivered(&self) {
        self.with(|c| c.redelivered += 1);
    }
    /// Messages applied.
    pub fn applied(&self, n: usize) {
        self.with(|c| c.applied += n as u64);
    }
    /// A message judged and rejected for `reason`.
    pub fn rejected(&self, reason: &'static str) {
        self.with(|c| *c.rejected.entry(reason).or_default() += 1);
    }
    /// A malformed message.
    pub fn malformed(&self) {
        self.with(|c| c.malformed += 1);
    }
    /// Events stored pending their name's registration.
    pub fn pending(&self, n: usize) {
        self.with(|c| c.pending += n as u64);
    }
    /// A message already applied.
    pub fn duplicate(&self) {
        self.with(|c| c.duplicates += 1);
    }
    /// Players re-folded and stored events re-judged.
    pub fn refolded(&self, players: usize, rejudged: usize) {
        self.with(|c| {
            c.refolded += players as u64;
            c.rejudged += rejudged as u64;
        });
    }
    /// Pending events expired.
    pub fn expired(&self, n: usize) {
        self.with(|c| {
            c.expired += n as u64;
            *c.rejected.entry("unknown_user").or_default() += n as u64;
        });
    }
    /// A judged event: applied if it took effect, else rejected for its reason.
    pub fn verdict(&self, v: &buttonparty::fold::Verdict) {
        if v.took_effect() {
            self.applied(1);
        } else {
            self.rejected(v.as_str());
        }
    }
    /// A database batch of `items` committed after `took`.
    pub fn batch(&self, items: usize, took: Duration) {
        self.with(|c| {
            c.batches += 1;
            c.batch_items += items as u64;
            c.batch_max = c.batch_max.max(items as u64);
            c.db_calls += 1;
            c.db_total += took;
            c.db_max = c.db_max.max(took);
        });
    }
    /// Delete entries refused by the queue.
    pub fn delete_failed(&self, n: usize) {
        self.with(|c| c.delete_failed += n as u64);
    }
    /// Visibility extensions.
    pub fn heartbeats(&self, n: usize) {
        self.with(|c| c.heartbeats += n as u64);
    }
    /// The database refused the credentials.
    pub fn access_denied(&self) {
        self.with(|c| c.access_denied += 1);
    }
    /// A retried database transaction.
    pub fn db_retry(&self) {
        self.with(|c| c.db_retries += 1);
    }

    /// Totals since start.
    pub fn totals(&self) -> Totals {
        let c = self.total.lock().map(|c| c.clone()).unwrap_or_default();
        Totals {
            received: c.received,
            applied: c.applied,
            rejected: c.rejected.values().sum(),
            malformed: c.malformed,
            pending: c.pending,
            duplicates: c.duplicates,
            refolded: c.refolded,
            rejudged: c.rejudged,
            expired: c.expired,
            batches: c.batches,
            delete_failed: c.delete_failed,
            db_retries: c.db_retries,
            redelivered: c.redelivered,
            heartbeats: c.heartbeats,
            access_denied: c.access_denied,
        }
    }

    /// Logs the counts since the previous call at info level and resets them; with
    /// `metrics` at `emf`, also prints them as one CloudWatch Embedded Metric Format line on
    /// stdout ([`emf_line`]).
    pub fn log_and_reset(&self, held: usize, metrics: buttonparty::emf::MetricsMode) {
        let c = match self.since_last.lock() {
            Ok(mut c) => std::mem::take(&mut *c),
            Err(_) => return,
        };
        if metrics == buttonparty::emf::MetricsMode::Emf {
            let now = crate::queue::now_ms();
            println!("{}", emf_line(&c, held, now));
        }
        let rejected = c
            .rejected
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(",");
        let avg = |total: u64, n: u64| total.checked_div(n).unwrap_or(0);
        tracing::info!(
            received = c.received,
            applied = c.applied,
            rejected = %format!("{{{rejected}}}"),
            malformed = c.malformed,
            pending = c.pending,
            duplicates = c.duplicates,
            refolded = c.refolded,
            rejudged = c.rejudged,
            expired = c.expired,
            batches = c.batches,
            batch_avg = avg(c.batch_items, c.batches),
            batch_max = c.batch_max,
            db_ms_avg = avg(c.db_total.as_millis() as u64, c.db_calls),
            db_ms_max = c.db_max.as_millis() as u64,
            db_retries = c.db_retries,
            redelivered = c.redelivered,
            delete_failed = c.delete_failed,
            heartbeats = c.heartbeats,
            held,
            "stats"
        );
    }
}

/// The `Service` dimension of the incoming handler's metrics.
pub const METRICS_SERVICE: &str = "incoming-handler";

/// The counts of one interval as an EMF line: `Received`, `Applied`, `Rejected`, `Malformed`,
/// `Pending`, `Refolded`, `Batches`, `BatchSizeAvg`, `BatchSizeMax`, `DbLatencyAvg` and
/// `DbLatencyMax` (ms), `Heartbeats`, `Held`; the rejection reasons as properties.
fn emf_line(c: &Counts, held: usize, now_ms: i64) -> String {
    use buttonparty::emf::{self, Metric};
    let avg = |total: u64, n: u64| total.checked_div(n).unwrap_or(0);
    let rejected: u64 = c.rejected.values().sum();
    let reasons: serde_json::Map<String, serde_json::Value> = c
        .rejected
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).into()))
        .collect();
    emf::line(
        emf::NAMESPACE,
        &[("Service", METRICS_SERVICE)],
        &[
            Metric::count("Received", c.received),
            Metric::count("Applied", c.applied),
            Metric::count("Rejected", rejected),
            Metric::count("Malformed", c.malformed),
            Metric::count("Pending", c.pending),
            Metric::count("Refolded", c.refolded),
            Metric::count("Batches", c.batches),
            Metric::count("BatchSizeAvg", avg(c.batch_items, c.batches)),
            Metric::count("BatchSizeMax", c.batch_max),
            Metric::millis(
                "DbLatencyAvg",
                avg(c.db_total.as_millis() as u64, c.db_calls) as f64,
            ),
            Metric::millis("DbLatencyMax", c.db_max.as_millis() as f64),
            Metric::count("Heartbeats", c.heartbeats),
            Metric::count("Held", held as u64),
        ],
        &[("rejected_by_reason", serde_json::Value::Object(reasons))],
        now_ms,
    )
    .expect("fixed names and finite counts always make a line")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_accumulate_and_interval_counts_reset() {
        let s = Stats::default();
        s.received(QueueKind::Press, 3);
        s.applied(2);
        s.rejected("too_late");
        s.batch(2, Duration::from_millis(4));
        s.log_and_reset(0, buttonparty::emf::MetricsMode::Off);
        s.applied(1);
        let t = s.totals();
        assert_eq!(t.received, 3);
        assert_eq!(t.applied, 3);
        assert_eq!(t.rejected, 1);
        assert_eq!(t.batches, 1);
        assert_eq!(s.since_last.lock().unwrap().applied, 1);
    }

    #[test]
    fn the_emf_line_carries_every_counter_under_its_metric_name() {
        let s = Stats::default();
        s.received(QueueKind::Press, 10);
        s.applied(7);
        s.rejected("too_late");
        s.pending(2);
        s.refolded(3, 5);
        s.batch(10, Duration::from_millis(12));
        let c = s.since_last.lock().unwrap().clone();
        let v: serde_json::Value = serde_json::from_str(&emf_line(&c, 4, 1_000)).unwrap();
        for (k, want) in [
            ("Received", 10),
            ("Applied", 7),
            ("Rejected", 1),
            ("Pending", 2),
            ("Refolded", 3),
            ("Batches", 1),
            ("BatchSizeAvg", 10),
            ("DbLatencyMax", 12),
            ("Held", 4),
        ] {
            assert_eq!(v[k], want, "{k}");
        }
        assert_eq!(v["Service"], "incoming-handler");
        assert_eq!(v["rejected_by_reason"]["too_late"], 1);
        let names: Vec<&str> = v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), 13);
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "ButtonParty"
        );
    }
}
