//! CloudWatch Embedded Metric Format (EMF): one JSON log line from which CloudWatch Logs extracts
//! metrics, so a daemon can publish metrics by printing, without a metrics API call.
//!
//! ```text
//! {"_aws":{"Timestamp":1795904163319,"CloudWatchMetrics":[{"Namespace":"ButtonParty",
//!   "Dimensions":[["Service"]],"Metrics":[{"Name":"RoundsOpened","Unit":"Count"}]}]},
//!  "Service":"outgoing-handler","RoundsOpened":1}
//! ```
//!
//! (one line in reality). Specification:
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>.
//! [`line`] is pure: the caller passes the timestamp, nothing here reads a clock or writes.
//! [`MetricsSettings`] is the `BUTTONPARTY_METRICS` setting (`off` or `emf`) the daemons share.

use std::collections::BTreeSet;
use std::fmt;

use clap::{Args, ValueEnum};
use serde_json::{Map, Number, Value};

/// The namespace of every ButtonParty metric.
pub const NAMESPACE: &str = "ButtonParty";

/// Most metrics in one directive (EMF specification).
pub const MAX_METRICS: usize = 100;
/// Most dimensions in one dimension set (EMF specification).
pub const MAX_DIMENSIONS: usize = 30;
/// Longest namespace, in characters (CloudWatch limit).
pub const MAX_NAMESPACE_CHARS: usize = 255;
/// Longest metric or dimension name and dimension value, in characters.
pub const MAX_NAME_CHARS: usize = 1024;

/// A metric's unit: the CloudWatch standard units a counter or a latency needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A count of events.
    Count,
    /// A duration in milliseconds.
    Milliseconds,
    /// A duration in seconds.
    Seconds,
    /// A size in bytes.
    Bytes,
    /// A percentage.
    Percent,
    /// A rate, per second.
    CountPerSecond,
    /// No unit.
    None,
}

impl Unit {
    /// The unit's name in CloudWatch.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Seconds => "Seconds",
            Unit::Bytes => "Bytes",
            Unit::Percent => "Percent",
            Unit::CountPerSecond => "Count/Second",
            Unit::None => "None",
        }
    }
}

/// One metric value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric<'a> {
    /// Its name (1–1024 characters).
    pub name: &'a str,
    /// Its value (finite).
    pub value: f64,
    /// Its unit.
    pub unit: Unit,
}

impl<'a> Metric<'a> {
    /// A metric.
    pub fn new(name: &'a str, value: f64, unit: Unit) -> Self {
        Self { name, value, unit }
    }

    /// A count.
    pub fn count(name: &'a str, value: u64) -> Self {
        Self::new(name, value as f64, Unit::Count)
    }

    /// A duration in milliseconds.
    pub fn millis(name: &'a str, value: f64) -> Self {
        Self::new(name, value, Unit::Milliseconds)
    }
}

/// Why an EMF line could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmfError {
    /// The namespace is empty or longer than [`MAX_NAMESPACE_CHARS`].
    #[error("invalid namespace {0:?}")]
    Namespace(String),
    /// No metric, or more than [`MAX_METRICS`].
    #[error("{0} metrics: a line carries 1 to {MAX_METRICS}")]
    MetricCount(usize),
    /// More than [`MAX_DIMENSIONS`] dimensions.
    #[error("{0} dimensions: at most {MAX_DIMENSIONS}")]
    DimensionCount(usize),
    /// A name (metric, dimension or property) is empty, too long, or `_aws`.
    #[error("invalid name {0:?}")]
    Name(String),
    /// A dimension value is empty or too long.
    #[error("invalid value of dimension {0:?}")]
    DimensionValue(String),
    /// Two members of the line have the same name.
    #[error("{0:?} appears twice")]
    Duplicate(String),
    /// A metric value is NaN or infinite.
    #[error("metric {0:?} is not a finite number")]
    NotFinite(String),
}

/// One EMF line (without a newline): `namespace`, one dimension set made of `dimensions` (name,
/// value), the `metrics`, extra `properties` (searchable in CloudWatch Logs Insights, not
/// metrics), and the timestamp in epoch ms. Whole values are written as JSON integers.
pub fn line(
    namespace: &str,
    dimensions: &[(&str, &str)],
    metrics: &[Metric<'_>],
    properties: &[(&str, Value)],
    timestamp_ms: i64,
) -> Result<String, EmfError> {
    if namespace.is_empty() || namespace.chars().count() > MAX_NAMESPACE_CHARS {
        return Err(EmfError::Namespace(namespace.to_owned()));
    }
    if metrics.is_empty() || metrics.len() > MAX_METRICS {
        return Err(EmfError::MetricCount(metrics.len()));
    }
    if dimensions.len() > MAX_DIMENSIONS {
        return Err(EmfError::DimensionCount(dimensions.len()));
    }
    let mut names = BTreeSet::new();
    let mut claim = |name: &str| -> Result<(), EmfError> {
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name == "_aws" {
            return Err(EmfError::Name(name.to_owned()));
        }
        if !names.insert(name.to_owned()) {
            return Err(EmfError::Duplicate(name.to_owned()));
        }
        Ok(())
    };

    let mut root = Map::new();
    for (name, value) in dimensions {
        claim(name)?;
        if value.is_empty() || value.chars().count() > MAX_NAME_CHARS {
            return Err(EmfError::DimensionValue((*name).to_owned()));
        }
        root.insert((*name).to_owned(), Value::String((*value).to_owned()));
    }
    let mut definitions = Vec::with_capacity(metrics.len());
    for m in metrics {
        claim(m.name)?;
        root.insert(m.name.to_owned(), number(m)?);
        definitions.push(serde_json::json!({"Name": m.name, "Unit": m.unit.as_str()}));
    }
    for (name, value) in properties {
        claim(name)?;
        root.insert((*name).to_owned(), value.clone());
    }
    let dimension_set: Vec<&str> = dimensions.iter().map(|(n, _)| *n).collect();
    root.insert(
        "_aws".to_owned(),
        serde_json::json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [dimension_set],
                "Metrics": definitions,
            }],
        }),
    );
    Ok(Value::Object(root).to_string())
}

/// The metric's value as a JSON number: an integer when it is whole and exactly representable.
fn number(m: &Metric<'_>) -> Result<Value, EmfError> {
    let v = m.value;
    if !v.is_finite() {
        return Err(EmfError::NotFinite(m.name.to_owned()));
    }
    // ±2^53: every whole f64 in this range is an exact integer.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if v.fract() == 0.0 && v.abs() <= EXACT {
        return Ok(Value::Number(Number::from(v as i64)));
    }
    Number::from_f64(v)
        .map(Value::Number)
        .ok_or_else(|| EmfError::NotFinite(m.name.to_owned()))
}

/// Whether a daemon prints metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum MetricsMode {
    /// No metric lines.
    #[default]
    Off,
    /// CloudWatch Embedded Metric Format lines on stdout.
    Emf,
}

impl fmt::Display for MetricsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MetricsMode::Off => "off",
            MetricsMode::Emf => "emf",
        })
    }
}

/// `BUTTONPARTY_METRICS`: `emf` prints a CloudWatch Embedded Metric Format line per event
/// (namespace `ButtonParty`, dimension `Service`), `off` (the default) prints none.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct MetricsSettings {
    /// Metrics output: `emf` prints CloudWatch Embedded Metric Format JSON lines on stdout.
    #[arg(long = "metrics", env = "BUTTONPARTY_METRICS", value_name = "BUTTONPARTY_METRICS", value_enum, default_value_t = MetricsMode::Off)]
    pub metrics: MetricsMode,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const T: i64 = 1_795_904_163_319;

    fn parse(line: &str) -> Value {
        assert!(!line.contains('\n'), "{line}");
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn a_line_declares_its_metrics_and_carries_their_values() {
        let l = line(
            NAMESPACE,
            &[("Service", "outgoing-handler")],
            &[
                Metric::count("RoundsOpened", 1),
                Metric::count("PushesPublished", 1_000_000),
            ],
            &[("round_id", json!("1795904163319-9af690be"))],
            T,
        )
        .unwrap();
        let v = parse(&l);
        assert_eq!(
            v,
            json!({
                "_aws": {
                    "Timestamp": T,
                    "CloudWatchMetrics": [{
                        "Namespace": "ButtonParty",
                        "Dimensions": [["Service"]],
                        "Metrics": [
                            {"Name": "RoundsOpened", "Unit": "Count"},
                            {"Name": "PushesPublished", "Unit": "Count"},
                        ],
                    }],
                },
                "Service": "outgoing-handler",
                "RoundsOpened": 1,
                "PushesPublished": 1_000_000,
                "round_id": "1795904163319-9af690be",
            })
        );
        // Whole values are integers in the text, not 1.0.
        assert!(
            l.contains("\"RoundsOpened\":1,") || l.contains("\"RoundsOpened\":1}"),
            "{l}"
        );
    }

    #[test]
    fn the_incoming_stats_line_fits_with_mixed_units() {
        let metrics = [
            Metric::count("Received", 5210),
            Metric::count("Applied", 4890),
            Metric::count("Rejected", 320),
            Metric::count("Malformed", 2),
            Metric::count("Pending", 0),
            Metric::count("Refolded", 0),
            Metric::count("Batches", 14),
            Metric::new("BatchSizeAvg", 372.5, Unit::Count),
            Metric::count("BatchSizeMax", 500),
            Metric::millis("DbLatencyAvg", 38.25),
            Metric::millis("DbLatencyMax", 91.0),
            Metric::count("Heartbeats", 0),
            Metric::count("Held", 37),
        ];
        let v = parse(
            &line(
                NAMESPACE,
                &[("Service", "incoming-handler")],
                &metrics,
                &[],
                T,
            )
            .unwrap(),
        );
        let defs = v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap();
        assert_eq!(defs.len(), 13);
        assert_eq!(
            defs[9],
            json!({"Name": "DbLatencyAvg", "Unit": "Milliseconds"})
        );
        assert_eq!(v["BatchSizeAvg"], json!(372.5));
        assert_eq!(v["DbLatencyMax"], json!(91));
        assert_eq!(v["Held"], json!(37));
    }

    #[test]
    fn several_dimensions_make_one_set_and_none_is_allowed() {
        let v = parse(
            &line(
                "NS",
                &[("Service", "a"), ("Queue", "press")],
                &[Metric::new("X", -2.5, Unit::None)],
                &[],
                0,
            )
            .unwrap(),
        );
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Service", "Queue"]])
        );
        assert_eq!(v["Queue"], "press");
        let v = parse(&line("NS", &[], &[Metric::count("X", 3)], &[], 0).unwrap());
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([[]]));
    }

    #[test]
    fn invalid_input_is_refused_not_printed() {
        let one = [Metric::count("X", 1)];
        assert!(matches!(
            line("", &[], &one, &[], T),
            Err(EmfError::Namespace(_))
        ));
        assert!(matches!(
            line(&"n".repeat(256), &[], &one, &[], T),
            Err(EmfError::Namespace(_))
        ));
        assert_eq!(line("NS", &[], &[], &[], T), Err(EmfError::MetricCount(0)));
        let names: Vec<String> = (0..101).map(|i| format!("m{i}")).collect();
        let many: Vec<Metric<'_>> = names.iter().map(|n| Metric::count(n, 1)).collect();
        assert_eq!(
            line("NS", &[], &many, &[], T),
            Err(EmfError::MetricCount(101))
        );
        assert_eq!(line("NS", &[], &many[..100], &[], T).map(|_| ()), Ok(()));
        assert_eq!(
            line(
                "NS",
                &[("Service", "a")],
                &[Metric::count("Service", 1)],
                &[],
                T
            ),
            Err(EmfError::Duplicate("Service".into()))
        );
        assert_eq!(
            line(
                "NS",
                &[],
                &[Metric::count("X", 1), Metric::count("X", 2)],
                &[],
                T
            ),
            Err(EmfError::Duplicate("X".into()))
        );
        assert_eq!(
            line("NS", &[], &one, &[("X", json!(1))], T),
            Err(EmfError::Duplicate("X".into()))
        );
        assert_eq!(
            line("NS", &[], &[Metric::count("_aws", 1)], &[], T),
            Err(EmfError::Name("_aws".into()))
        );
        assert_eq!(
            line("NS", &[], &[Metric::count("", 1)], &[], T),
            Err(EmfError::Name(String::new()))
        );
        assert_eq!(
            line("NS", &[("Service", "")], &one, &[], T),
            Err(EmfError::DimensionValue("Service".into()))
        );
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(
                line("NS", &[], &[Metric::millis("L", bad)], &[], T),
                Err(EmfError::NotFinite("L".into()))
            );
        }
        let dims: Vec<(String, String)> = (0..31).map(|i| (format!("d{i}"), "v".into())).collect();
        let dims: Vec<(&str, &str)> = dims.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(
            line("NS", &dims, &one, &[], T),
            Err(EmfError::DimensionCount(31))
        );
    }

    #[test]
    fn large_and_fractional_values_stay_numbers() {
        let v = parse(
            &line(
                "NS",
                &[],
                &[
                    Metric::count("Big", u64::MAX),
                    Metric::new("Frac", 0.125, Unit::Seconds),
                    Metric::new("Neg", -3.0, Unit::None),
                ],
                &[],
                T,
            )
            .unwrap(),
        );
        assert!(v["Big"].as_f64().unwrap() > 1.8e19);
        assert_eq!(v["Frac"], json!(0.125));
        assert_eq!(v["Neg"], json!(-3));
        assert_eq!(Unit::CountPerSecond.as_str(), "Count/Second");
    }

    #[test]
    fn the_setting_is_off_unless_emf() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            m: MetricsSettings,
        }
        let c = Cli::try_parse_from(["x", "--metrics", "emf"]).unwrap();
        assert_eq!(c.m.metrics, MetricsMode::Emf);
        let c = Cli::try_parse_from(["x", "--metrics", "off"]).unwrap();
        assert_eq!(c.m.metrics, MetricsMode::Off);
        assert!(Cli::try_parse_from(["x", "--metrics", "statsd"]).is_err());
        assert_eq!(MetricsMode::default(), MetricsMode::Off);
        assert_eq!(MetricsMode::Emf.to_string(), "emf");
    }
}
