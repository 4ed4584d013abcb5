//! The incoming handler's `stats` log lines, summed (pure). Each line counts what happened since
//! the one before (`stats received=… applied=… rejected={too_late:3,…} malformed=… …`), so the
//! sum of a run's lines is the run's total. Counters the handler adds later are summed too;
//! gauges (`held`, `pending`) and averages or maxima (`batch_avg`, `db_ms_max`, …) are not.

use std::collections::BTreeMap;

/// The sum of a log's stats lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandlerStats {
    /// Stats lines read.
    pub lines: usize,
    /// Every summed counter by name (`received`, `applied`, `malformed`, `redelivered`, ...).
    pub counters: BTreeMap<String, u64>,
    /// Rejections by reason (`too_late`, `already_scored`, ...), and any other `{k:v}` field as
    /// `field.k`.
    pub rejected: BTreeMap<String, u64>,
}

impl HandlerStats {
    /// A counter, 0 when the handler does not report it.
    pub fn get(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// Every rejection.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// Fields that are not counts since the previous line.
fn not_a_counter(key: &str) -> bool {
    key == "held"
        || key == "pending"
        || key == "in_flight"
        || key.ends_with("_avg")
        || key.ends_with("_max")
        || key.ends_with("_min")
        || key.ends_with("_ms")
        || key.ends_with("_p50")
        || key.ends_with("_p99")
}

/// Whether a log line is a stats line: its message is the word `stats`, followed by fields.
fn stats_fields(line: &str) -> Option<&str> {
    let i = line.find(" stats ")?;
    let rest = &line[i + " stats ".len()..];
    // Text format: `... INFO incoming_handler::stats: stats received=1 ...` or `... stats
    // received=1`; the fields follow the message.
    rest.contains('=').then_some(rest)
}

/// Sums the stats lines of a log.
pub fn parse(log: &str) -> HandlerStats {
    let mut out = HandlerStats::default();
    for line in log.lines() {
        let Some(fields) = stats_fields(line) else {
            continue;
        };
        out.lines += 1;
        for token in fields.split_whitespace() {
            let Some((key, value)) = token.split_once('=') else {
                continue;
            };
            if let Some(map) = value.strip_prefix('{').and_then(|v| v.strip_suffix('}')) {
                for pair in map.split(',').filter(|p| !p.is_empty()) {
                    let Some((k, v)) = pair.split_once(':') else {
                        continue;
                    };
                    let Ok(v) = v.trim().parse::<u64>() else {
                        continue;
                    };
                    let name = if key == "rejected" {
                        k.trim().to_owned()
                    } else {
                        format!("{key}.{}", k.trim())
                    };
                    *out.rejected.entry(name).or_default() += v;
                }
            } else if let Ok(v) = value.parse::<u64>()
                && !not_a_counter(key)
            {
                *out.counters.entry(key.to_owned()).or_default() += v;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_lines_of_a_run() {
        let log = "\
2026-12-01T19:00:00.000Z  INFO incoming_handler: incoming handler ready press_receivers=8
2026-12-01T19:00:02.000Z  INFO incoming_handler::stats: stats received=10 applied=8 rejected={already_scored:1,too_late:1} malformed=0 deferred=2 batches=2 batch_avg=4 batch_max=6 db_ms_avg=3 db_ms_max=5 db_retries=0 redelivered=1 delete_failed=0 heartbeats=0 held=3
2026-12-01T19:00:03.000Z  INFO incoming_handler: player registered username=stats message_id=x
2026-12-01T19:00:04.000Z  INFO incoming_handler::stats: stats received=5 applied=2 rejected={too_late:2} malformed=1 deferred=0 batches=1 batch_avg=2 batch_max=2 db_ms_avg=3 db_ms_max=5 db_retries=0 redelivered=0 delete_failed=0 heartbeats=0 held=0 duplicates=1
2026-12-01T19:00:06.000Z  INFO incoming_handler::stats: stats received=0 applied=0 rejected={} malformed=0 held=0
";
        let s = parse(log);
        assert_eq!(s.lines, 3);
        assert_eq!(s.get("received"), 15);
        assert_eq!(s.get("applied"), 10);
        assert_eq!(s.get("malformed"), 1);
        assert_eq!(s.get("redelivered"), 1);
        assert_eq!(s.get("duplicates"), 1);
        assert_eq!(s.get("held"), 0);
        assert_eq!(s.get("pending"), 0);
        assert_eq!(s.get("batch_max"), 0);
        assert_eq!(s.rejected["too_late"], 3);
        assert_eq!(s.rejected["already_scored"], 1);
        assert_eq!(s.rejected_total(), 4);
        assert_eq!(parse("no stats here").lines, 0);
    }
}
