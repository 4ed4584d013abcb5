//! The benchmark's figures, the issue-7 targets they are checked against, the table and the one
//! JSON line `bp-dev bench` prints (pure: no I/O, unit-tested).

use std::fmt::Write as _;

use serde::Serialize;

/// Latency percentiles of one route, milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Latency {
    /// Requests timed.
    pub requests: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

impl Latency {
    /// Percentiles (nearest rank) of `samples_ms`.
    pub fn of(samples_ms: &[f64]) -> Self {
        let mut s: Vec<f64> = samples_ms
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        s.sort_by(f64::total_cmp);
        Self {
            requests: s.len(),
            p50_ms: percentile(&s, 50.0),
            p99_ms: percentile(&s, 99.0),
            max_ms: s.last().copied().unwrap_or(0.0),
        }
    }
}

/// Nearest-rank percentile of sorted samples (0 when there are none).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of samples (0 when there are none).
pub fn median(samples: &[f64]) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    percentile(&s, 50.0)
}

/// d: round opening at one number of registered players.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct RoundOpening {
    /// Registered players.
    pub players: u64,
    /// Median of the trials, ms.
    pub median_ms: f64,
    /// Every trial, ms (after one untimed warm-up round).
    pub trials_ms: Vec<f64>,
    /// Median time `open-round` took (start, timestamp message, push), ms: the part of each
    /// trial before the press was sent.
    pub announce_median_ms: f64,
}

/// a: one drain of N presses by the bare drainer.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct DrainRun {
    /// Seconds.
    pub secs: f64,
    /// Presses per second.
    pub per_sec: f64,
    /// CPU seconds of the drainer (the benchmark process) meanwhile.
    pub cpu_secs: f64,
}

/// c: the handler end to end.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct HandlerRun {
    /// From the process start until the last press was in the database, seconds.
    pub secs: f64,
    /// Presses per second.
    pub per_sec: f64,
    /// User + system CPU of the handler process over `secs`.
    pub cpu_secs: f64,
    /// The system (kernel: sockets, scheduling) part of it.
    pub cpu_system_secs: f64,
    /// Peak resident set (VmHWM), bytes.
    pub peak_rss_bytes: u64,
    /// Statements the server executed while it ran (`Questions` delta, less the benchmark's own).
    pub statements: u64,
    /// From the process start to its "ready" log line (queues and database checked), seconds.
    pub startup_secs: f64,
    /// CPU seconds it had used by then.
    pub startup_cpu_secs: f64,
    /// Press batches the handler committed (from its final stats line), if it printed them.
    pub batches: Option<u64>,
    /// Their average size.
    pub batch_avg: Option<u64>,
}

/// Everything one run measured.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Figures {
    /// Presses per part.
    pub n: u64,
    /// Receive concurrency of the drainer and of the handler.
    pub receivers: u32,
    /// a: the drains (one before c and one after, so that a drift of the queue service over the
    /// run is averaged out rather than charged to c or to a).
    pub a_runs: Vec<DrainRun>,
    /// b: plain batched upsert, seconds.
    pub b_secs: f64,
    /// b: presses per second.
    pub b_per_sec: f64,
    /// c.
    pub c: HandlerRun,
    /// d at the small size.
    pub d_small: Option<RoundOpening>,
    /// d at the large size (`--million`).
    pub d_large: Option<RoundOpening>,
    /// e: `GET /fetch/lb` at the large size.
    pub e_lb: Option<Latency>,
    /// e: `GET /fetch/self` (with rank) at the large size.
    pub e_self: Option<Latency>,
    /// Whether every `/fetch/self` answer carried a rank.
    pub e_self_has_rank: Option<bool>,
    /// c2: the handler restarted behind a backlog.
    pub c_restart: Option<crate::bench_order::DisorderRun>,
    /// c3: the burst with 10 % of its presses out of order.
    pub c_disorder: Option<crate::bench_order::DisorderRun>,
    /// r: a burst of registrations.
    pub r: Option<crate::bench_order::RegistrationRun>,
}

/// One target of issue 7 and whether it is met.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    /// What is checked, as the issue says it.
    pub name: &'static str,
    /// The figure.
    pub value: f64,
    /// The limit.
    pub limit: f64,
    /// Whether the figure must be at least (true) or at most (false) the limit.
    pub at_least: bool,
    /// Met?
    pub met: bool,
}

fn target(name: &'static str, value: f64, limit: f64, at_least: bool) -> Target {
    let met = if at_least {
        value >= limit
    } else {
        value <= limit
    };
    Target {
        name,
        value,
        limit,
        at_least,
        met,
    }
}

const MIB: f64 = 1024.0 * 1024.0;

impl Figures {
    /// a: presses per second over all the drains.
    pub fn a_per_sec(&self) -> f64 {
        let secs: f64 = self.a_runs.iter().map(|r| r.secs).sum();
        if secs > 0.0 {
            self.n as f64 * self.a_runs.len() as f64 / secs
        } else {
            0.0
        }
    }

    /// The drainer's CPU seconds per 10,000 presses, over all the drains.
    pub fn a_cpu_per_10k(&self) -> f64 {
        let cpu: f64 = self.a_runs.iter().map(|r| r.cpu_secs).sum();
        self.per_10k(cpu / self.a_runs.len().max(1) as f64)
    }

    /// c ÷ min(a, b).
    pub fn c_ratio(&self) -> f64 {
        let ceiling = self.a_per_sec().min(self.b_per_sec);
        if ceiling > 0.0 {
            self.c.per_sec / ceiling
        } else {
            0.0
        }
    }

    /// Which of a and b is the lower ceiling.
    pub fn limiting(&self) -> &'static str {
        if self.a_per_sec() <= self.b_per_sec {
            "a (queue)"
        } else {
            "b (database)"
        }
    }

    /// Handler CPU seconds per 10,000 presses.
    pub fn cpu_per_10k(&self) -> f64 {
        self.per_10k(self.c.cpu_secs)
    }

    fn per_10k(&self, secs: f64) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            secs * 10_000.0 / self.n as f64
        }
    }

    /// Database statements per press during c.
    pub fn statements_per_press(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.c.statements as f64 / self.n as f64
        }
    }

    /// Handler peak RSS, MiB.
    pub fn rss_mib(&self) -> f64 {
        self.c.peak_rss_bytes as f64 / MIB
    }

    /// A rate as a share of c's.
    fn of_c(&self, per_sec: f64) -> f64 {
        if self.c.per_sec > 0.0 {
            per_sec / self.c.per_sec
        } else {
            0.0
        }
    }

    /// d(large) ÷ d(small).
    pub fn d_ratio(&self) -> Option<f64> {
        match (&self.d_small, &self.d_large) {
            (Some(s), Some(l)) if s.median_ms > 0.0 => Some(l.median_ms / s.median_ms),
            _ => None,
        }
    }

    /// The targets this run can check.
    pub fn targets(&self) -> Vec<Target> {
        let mut t = vec![
            target("c >= 0.9 x min(a, b)", self.c_ratio(), 0.9, true),
            target(
                "statements per press <= 0.05",
                self.statements_per_press(),
                0.05,
                false,
            ),
            target(
                "handler CPU s per 10,000 presses <= 1",
                self.cpu_per_10k(),
                1.0,
                false,
            ),
            target("handler peak RSS <= 64 MiB", self.rss_mib(), 64.0, false),
        ];
        if let Some(c2) = &self.c_restart {
            t.push(target(
                "c2 (restart with a backlog) >= 0.8 x c",
                self.of_c(c2.per_sec),
                0.8,
                true,
            ));
        }
        if let Some(c3) = &self.c_disorder {
            t.push(target(
                "c3 (10 % out of order) >= 0.8 x c",
                self.of_c(c3.per_sec),
                0.8,
                true,
            ));
        }
        if let Some(r) = &self.r
            && r.bare_per_sec > 0.0
        {
            t.push(target(
                "r (registrations) >= 0.8 x bare client",
                r.handler_per_sec / r.bare_per_sec,
                0.8,
                true,
            ));
        }
        if let Some(r) = self.d_ratio() {
            t.push(target("d(large) <= 2 x d(small)", r, 2.0, false));
        }
        if let Some(lb) = &self.e_lb {
            t.push(target("GET /fetch/lb p99 <= 20 ms", lb.p99_ms, 20.0, false));
        }
        if let Some(s) = &self.e_self {
            t.push(target(
                "GET /fetch/self p99 <= 20 ms",
                s.p99_ms,
                20.0,
                false,
            ));
        }
        t
    }

    /// The table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let n = self.n;
        let mut row = |what: String, value: String| {
            let _ = writeln!(out, "| {what} | {value} |");
        };
        row("figure".into(), "value".into());
        row("---".into(), "---:".into());
        row("N (presses per part)".into(), group(n));
        row(
            format!(
                "a. queue ceiling: bare drainer, {} receivers",
                self.receivers
            ),
            format!(
                "{} presses/s (runs before / after c: {}; drainer CPU {:.2} s per 10,000)",
                group_f(self.a_per_sec()),
                self.a_runs
                    .iter()
                    .map(|r| group_f(r.per_sec))
                    .collect::<Vec<_>>()
                    .join(" / "),
                self.a_cpu_per_10k()
            ),
        );
        row(
            "b. database ceiling: multi-row upsert, 500-row transactions".into(),
            format!(
                "{} presses/s ({:.1} s)",
                group_f(self.b_per_sec),
                self.b_secs
            ),
        );
        row(
            "c. incoming handler end to end".into(),
            format!(
                "{} presses/s ({:.1} s)",
                group_f(self.c.per_sec),
                self.c.secs
            ),
        );
        row(
            "c ÷ min(a, b)".into(),
            format!("{:.2} (limit: {})", self.c_ratio(), self.limiting()),
        );
        row(
            "handler CPU per 10,000 presses".into(),
            format!(
                "{:.2} s ({:.2} s in all: {:.2} s kernel; {:.2} s of it start-up)",
                self.cpu_per_10k(),
                self.c.cpu_secs,
                self.c.cpu_system_secs,
                self.c.startup_cpu_secs
            ),
        );
        let drainer = self.a_cpu_per_10k();
        if drainer > 0.0 {
            row(
                "handler CPU ÷ bare drainer CPU (same SQS calls)".into(),
                format!("{:.2}", self.cpu_per_10k() / drainer),
            );
        }
        let batches = match (self.c.batches, self.c.batch_avg) {
            (Some(b), Some(avg)) => format!("; {b} batches, {avg} presses on average"),
            _ => String::new(),
        };
        row(
            "database statements per press".into(),
            format!(
                "{:.3} ({} statements{batches})",
                self.statements_per_press(),
                group(self.c.statements)
            ),
        );
        row(
            "handler peak RSS".into(),
            format!("{:.1} MiB", self.rss_mib()),
        );
        for (what, run) in [
            (
                "c2. restart with a backlog: 10,000 presses (5,000 players, twice) behind their round",
                &self.c_restart,
            ),
            (
                "c3. the burst, 10 % out of order (a late round message, late first-round presses)",
                &self.c_disorder,
            ),
        ] {
            if let Some(r) = run {
                row(
                    what.into(),
                    format!(
                        "{} presses/s ({:.2} × c; {:.1} s; {:.2} CPU-s per 10,000; {:.1} MiB; {} players re-folded, {} heartbeats, {} redeliveries)",
                        group_f(r.per_sec),
                        self.of_c(r.per_sec),
                        r.secs,
                        r.cpu_secs * 10_000.0 / r.presses.max(1) as f64,
                        r.peak_rss_bytes as f64 / MIB,
                        r.refolded.map_or("?".into(), group),
                        r.heartbeats.map_or("?".into(), group),
                        r.redelivered.map_or("?".into(), group),
                    ),
                );
            }
        }
        if let Some(r) = &self.r {
            row(
                format!(
                    "r. {} registrations: handler / bare client ({} receivers × {} at once)",
                    group(r.registrations),
                    r.receivers,
                    r.concurrency
                ),
                format!(
                    "{} / {} per s ({:.2})",
                    group_f(r.handler_per_sec),
                    group_f(r.bare_per_sec),
                    if r.bare_per_sec > 0.0 {
                        r.handler_per_sec / r.bare_per_sec
                    } else {
                        0.0
                    }
                ),
            );
        }
        for d in [&self.d_small, &self.d_large].into_iter().flatten() {
            row(
                format!(
                    "d. round opening → first press scored, {} players",
                    group(d.players)
                ),
                format!(
                    "{:.0} ms, of which open-round {:.0} ms (median of {}: {})",
                    d.median_ms,
                    d.announce_median_ms,
                    d.trials_ms.len(),
                    d.trials_ms
                        .iter()
                        .map(|t| format!("{t:.0}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        if let Some(r) = self.d_ratio() {
            row("d ratio (large ÷ small)".into(), format!("{r:.2}"));
        }
        let players = self
            .d_large
            .as_ref()
            .map_or(String::new(), |d| format!(", {} players", group(d.players)));
        for (route, l) in [
            ("/fetch/lb", &self.e_lb),
            ("/fetch/self (rank)", &self.e_self),
        ] {
            if let Some(l) = l {
                row(
                    format!("e. GET {route} p50 / p99{players}"),
                    format!(
                        "{:.1} / {:.1} ms ({} requests, max {:.1} ms)",
                        l.p50_ms, l.p99_ms, l.requests, l.max_ms
                    ),
                );
            }
        }
        out.push('\n');
        out.push_str("| target | figure | met |\n| --- | ---: | --- |\n");
        for t in self.targets() {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                t.name,
                fmt_num(t.value),
                if t.met { "yes" } else { "**no**" }
            );
        }
        out
    }

    /// The JSON line.
    pub fn json_line(&self) -> String {
        let round = |v: f64, places: i32| {
            let f = 10f64.powi(places);
            (v * f).round() / f
        };
        let lat = |l: &Option<Latency>, p99: bool| {
            l.as_ref()
                .map(|l| round(if p99 { l.p99_ms } else { l.p50_ms }, 2))
        };
        let v = serde_json::json!({
            "n": self.n,
            "receivers": self.receivers,
            "a_presses_per_s": round(self.a_per_sec(), 0),
            "b_presses_per_s": round(self.b_per_sec, 0),
            "c_presses_per_s": round(self.c.per_sec, 0),
            "c_over_min_ab": round(self.c_ratio(), 3),
            "handler_cpu_s_per_10k": round(self.cpu_per_10k(), 3),
            "statements_per_press": round(self.statements_per_press(), 4),
            "handler_peak_rss_mib": round(self.rss_mib(), 1),
            "d_small_players": self.d_small.as_ref().map(|d| d.players),
            "d_small_ms": self.d_small.as_ref().map(|d| round(d.median_ms, 1)),
            "d_large_players": self.d_large.as_ref().map(|d| d.players),
            "d_large_ms": self.d_large.as_ref().map(|d| round(d.median_ms, 1)),
            "d_ratio": self.d_ratio().map(|r| round(r, 3)),
            "c2_restart_presses_per_s": self.c_restart.as_ref().map(|r| round(r.per_sec, 0)),
            "c3_disorder_presses_per_s": self.c_disorder.as_ref().map(|r| round(r.per_sec, 0)),
            "r_handler_per_s": self.r.as_ref().map(|r| round(r.handler_per_sec, 1)),
            "r_bare_per_s": self.r.as_ref().map(|r| round(r.bare_per_sec, 1)),
            "fetch_lb_p50_ms": lat(&self.e_lb, false),
            "fetch_lb_p99_ms": lat(&self.e_lb, true),
            "fetch_self_p50_ms": lat(&self.e_self, false),
            "fetch_self_p99_ms": lat(&self.e_self, true),
            "targets_met": self.targets().iter().all(|t| t.met),
            "detail": {
                "a_runs": self.a_runs,
                "a_drainer_cpu_s_per_10k": round(self.a_cpu_per_10k(), 3),
                "b_secs": round(self.b_secs, 3),
                "c": self.c,
                "d_small": self.d_small,
                "d_large": self.d_large,
                "fetch_lb": self.e_lb,
                "fetch_self": self.e_self,
                "fetch_self_has_rank": self.e_self_has_rank,
                "c2": self.c_restart,
                "c3": self.c_disorder,
                "r": self.r,
                "targets": self.targets(),
            },
        });
        v.to_string()
    }
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// 20000 → "20,000".
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn group_f(v: f64) -> String {
    group(v.max(0.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Figures {
        Figures {
            n: 20_000,
            receivers: 8,
            a_runs: vec![
                DrainRun {
                    secs: 18.0,
                    per_sec: 1111.1,
                    cpu_secs: 2.0,
                },
                DrainRun {
                    secs: 22.0,
                    per_sec: 909.1,
                    cpu_secs: 2.4,
                },
            ],
            b_secs: 0.25,
            b_per_sec: 80_000.0,
            c: HandlerRun {
                secs: 21.0,
                per_sec: 952.0,
                cpu_secs: 1.2,
                cpu_system_secs: 0.4,
                peak_rss_bytes: 30 * 1024 * 1024,
                statements: 600,
                startup_secs: 0.2,
                startup_cpu_secs: 0.05,
                batches: Some(75),
                batch_avg: Some(266),
            },
            d_small: Some(RoundOpening {
                players: 1000,
                median_ms: 200.0,
                trials_ms: vec![190.0, 200.0, 210.0],
                announce_median_ms: 60.0,
            }),
            d_large: Some(RoundOpening {
                players: 1_000_000,
                median_ms: 500.0,
                trials_ms: vec![500.0],
                announce_median_ms: 60.0,
            }),
            e_lb: Some(Latency::of(&[1.0, 2.0, 3.0])),
            e_self: Some(Latency::of(&[5.0; 100])),
            e_self_has_rank: Some(true),
            c_restart: Some(crate::bench_order::DisorderRun {
                presses: 10_000,
                secs: 12.5,
                per_sec: 800.0,
                cpu_secs: 1.0,
                peak_rss_bytes: 20 * 1024 * 1024,
                refolded: Some(5000),
                heartbeats: Some(0),
                redelivered: Some(0),
            }),
            c_disorder: Some(crate::bench_order::DisorderRun {
                presses: 20_000,
                secs: 40.0,
                per_sec: 500.0,
                ..Default::default()
            }),
            r: Some(crate::bench_order::RegistrationRun {
                registrations: 5000,
                handler_per_sec: 90.0,
                bare_per_sec: 100.0,
                receivers: 4,
                concurrency: 10,
            }),
        }
    }

    #[test]
    fn disorder_and_registration_rows_are_checked_against_c_and_the_bare_client() {
        let f = sample();
        let t = f.targets();
        let get = |name: &str| t.iter().find(|t| t.name.starts_with(name)).unwrap().clone();
        let c2 = get("c2");
        assert!((c2.value - 800.0 / 952.0).abs() < 1e-9 && c2.met);
        let c3 = get("c3");
        assert!((c3.value - 500.0 / 952.0).abs() < 1e-9 && !c3.met);
        let r = get("r (registrations)");
        assert!((r.value - 0.9).abs() < 1e-9 && r.met);
        let table = f.table();
        assert!(table.contains("c2. restart with a backlog"), "{table}");
        assert!(table.contains("90 / 100 per s (0.90)"), "{table}");
        assert!(f.json_line().contains("\"c2_restart_presses_per_s\":800"));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), 50.0);
        assert_eq!(percentile(&s, 99.0), 99.0);
        assert_eq!(percentile(&s, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        let l = Latency::of(&[4.0, f64::NAN, 1.0]);
        assert_eq!((l.requests, l.p50_ms, l.max_ms), (2, 1.0, 4.0));
    }

    #[test]
    fn ratios_and_targets() {
        let f = sample();
        assert!((f.c_ratio() - 0.952).abs() < 1e-9);
        assert_eq!(f.limiting(), "a (queue)");
        assert!((f.cpu_per_10k() - 0.6).abs() < 1e-9);
        assert!((f.statements_per_press() - 0.03).abs() < 1e-9);
        assert_eq!(f.d_ratio(), Some(2.5));
        let missed: Vec<_> = f
            .targets()
            .into_iter()
            .filter(|t| !t.met)
            .map(|t| t.name)
            .collect();
        assert_eq!(
            missed,
            vec![
                "c3 (10 % out of order) >= 0.8 x c",
                "d(large) <= 2 x d(small)"
            ]
        );
    }

    #[test]
    fn without_the_million_part_only_the_handler_targets_are_checked() {
        let f = Figures {
            d_large: None,
            e_lb: None,
            e_self: None,
            c_restart: None,
            c_disorder: None,
            r: None,
            ..sample()
        };
        assert_eq!(f.targets().len(), 4);
        assert!(f.table().contains("1,000 players"));
        let v: serde_json::Value = serde_json::from_str(&f.json_line()).unwrap();
        assert_eq!(v["d_ratio"], serde_json::Value::Null);
        assert_eq!(v["targets_met"], true);
    }

    #[test]
    fn the_json_line_is_one_line_with_the_issue_figures() {
        let line = sample().json_line();
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        for key in [
            "n",
            "a_presses_per_s",
            "b_presses_per_s",
            "c_presses_per_s",
            "c_over_min_ab",
            "handler_cpu_s_per_10k",
            "statements_per_press",
            "handler_peak_rss_mib",
            "d_small_ms",
            "d_large_ms",
            "d_ratio",
            "fetch_lb_p50_ms",
            "fetch_lb_p99_ms",
            "fetch_self_p50_ms",
            "fetch_self_p99_ms",
        ] {
            assert!(!v[key].is_null(), "{key} missing in {line}");
        }
        assert_eq!(v["n"], 20_000);
        assert_eq!(v["targets_met"], false);
    }

    #[test]
    fn table_lists_every_figure_and_target() {
        let t = sample().table();
        for needle in [
            "20,000",
            "a. queue ceiling",
            "1,000 presses/s (runs before / after c: 1,111 / 909; drainer CPU 1.10 s per 10,000)",
            "80,000 presses/s",
            "c ÷ min(a, b) | 0.95",
            "0.030",
            "30.0 MiB",
            "1,000,000 players",
            "d ratio (large ÷ small) | 2.50",
            "GET /fetch/self (rank) p50 / p99",
            "| d(large) <= 2 x d(small) | 2.50 | **no** |",
        ] {
            assert!(t.contains(needle), "{needle:?} not in\n{t}");
        }
        assert_eq!(group(1_000_000), "1,000,000");
        assert_eq!(group(999), "999");
    }
}
