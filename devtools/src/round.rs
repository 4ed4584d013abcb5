//! The round the simulated players press in: the JSON line `outgoing-handler open-round` prints
//! (given literally, as a file, or on stdin), or the next round the fetch API shows as open.

use std::time::Duration;

use anyhow::{Context as _, bail};
use buttonparty::messages::{RoundAnnouncement, parse_round};
use serde::{Deserialize, Serialize};
use std::io::BufRead as _;

use crate::fetch::FetchClient;
use crate::progress::Progress;

/// A round: id, opening and close (epoch ms), and the base window an extender stretches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundInfo {
    /// The round's id.
    pub round_id: String,
    /// When it opens, epoch ms.
    pub opens_at_ms: i64,
    /// When its window closes, epoch ms: the base window plus the push's fan-out time.
    pub closes_at_ms: i64,
    /// The base press window, ms (absent in older round messages: then the whole round).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<i64>,
}

impl RoundInfo {
    /// From opening to close, ms (the base window plus the fan-out time).
    pub fn length_ms(&self) -> i64 {
        self.closes_at_ms - self.opens_at_ms
    }

    /// The base press window, ms: `window_ms`, or the whole round without it (clamped to it).
    pub fn base_window_ms(&self) -> i64 {
        let length = self.length_ms().max(0);
        self.window_ms.unwrap_or(length).clamp(0, length)
    }

    /// The round as the rules see it.
    pub fn rules_round(&self) -> buttonparty::rules::Round {
        buttonparty::rules::Round::announced(self.opens_at_ms, self.closes_at_ms, self.window_ms)
    }
}

impl From<RoundAnnouncement> for RoundInfo {
    fn from(r: RoundAnnouncement) -> Self {
        Self {
            round_id: r.round_id,
            opens_at_ms: r.opens_at_ms,
            closes_at_ms: r.closes_at_ms,
            window_ms: r.window_ms,
        }
    }
}

/// Parses the JSON the outgoing handler prints
/// (`{"round_id","opens_at_ms","closes_at_ms","window_ms"}`),
/// with the incoming handler's own parser.
pub fn parse_round_json(text: &str) -> anyhow::Result<RoundInfo> {
    parse_round(text.trim().as_bytes())
        .map(RoundInfo::from)
        .map_err(|e| anyhow::anyhow!("not a round: {e}"))
}

/// Reads the round from `source`: a JSON object (starting with `{`), `-` for the first non-empty
/// line of stdin (waiting up to `timeout` for it), or the path of a file holding the JSON.
pub async fn load_round(source: &str, timeout: Duration) -> anyhow::Result<RoundInfo> {
    let source = source.trim();
    if source.starts_with('{') {
        return parse_round_json(source).context("--round-json");
    }
    if source == "-" {
        // A plain thread (not the blocking pool): if nothing comes, it must not hold up the exit.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut found = Err(anyhow::anyhow!("stdin ended without a round"));
            for line in std::io::stdin().lock().lines() {
                match line {
                    Ok(line) if line.trim().is_empty() => continue,
                    Ok(line) => found = parse_round_json(&line).context("the round on stdin"),
                    Err(e) => found = Err(anyhow::Error::new(e).context("reading stdin")),
                }
                break;
            }
            let _ = tx.send(found);
        });
        return tokio::time::timeout(timeout, rx)
            .await
            .with_context(|| format!("no round on stdin within {} s", timeout.as_secs()))?
            .context("the stdin reader stopped")?;
    }
    let text = tokio::fs::read_to_string(source)
        .await
        .with_context(|| format!("reading the round from {source}"))?;
    parse_round_json(&text).with_context(|| format!("the round in {source}"))
}

/// Waits until the fetch API shows an open round (in `GET /fetch/self` of `username`, which must
/// be or become registered), or `timeout`.
pub async fn wait_for_open_round(
    fetch: &FetchClient,
    username: &str,
    timeout: Duration,
    progress: &Progress,
) -> anyhow::Result<RoundInfo> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match fetch.player(username).await {
            Ok(Some(view)) => {
                if let Some(r) = view.current_round {
                    return Ok(RoundInfo {
                        round_id: r.round_id,
                        opens_at_ms: r.opens_at_ms,
                        closes_at_ms: r.closes_at_ms,
                        window_ms: None,
                    });
                }
                progress.set_message(format!("no round open yet ({})", fetch.base()));
            }
            Ok(None) => progress.set_message(format!("{username} is not registered yet")),
            Err(e) => progress.set_message(format!("{e:#}")),
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "no round opened within {} s (watched GET {}/fetch/self?username={username})",
                timeout.as_secs(),
                fetch.base()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_open_round_prints() {
        let r = parse_round_json(r#"{"round_id":"r-1","opens_at_ms":1000,"closes_at_ms":21000}"#)
            .unwrap();
        assert_eq!(r.length_ms(), 20_000);
        assert_eq!(r.base_window_ms(), 20_000);
        assert_eq!(r.round_id, "r-1");
        let r = parse_round_json(
            r#"{"round_id":"r-2","opens_at_ms":1000,"closes_at_ms":7000,"window_ms":5000}"#,
        )
        .unwrap();
        assert_eq!((r.length_ms(), r.base_window_ms()), (6_000, 5_000));
        assert_eq!(r.rules_round().deadline(3), 7_000 + 2_500);
        assert!(parse_round_json(r#"{"round_id":"r","opens_at_ms":5,"closes_at_ms":5}"#).is_err());
        assert!(parse_round_json("hello").is_err());
    }

    #[tokio::test]
    async fn loads_a_literal_or_a_file() {
        let json = r#"{"round_id":"r-2","opens_at_ms":1,"closes_at_ms":2}"#;
        assert_eq!(
            load_round(json, Duration::from_secs(1))
                .await
                .unwrap()
                .round_id,
            "r-2"
        );
        let path = std::env::temp_dir().join(format!("bp-dev-round-{}.json", std::process::id()));
        std::fs::write(&path, format!("{json}\n")).unwrap();
        let r = load_round(path.to_str().unwrap(), Duration::from_secs(1)).await;
        std::fs::remove_file(&path).unwrap();
        assert_eq!(r.unwrap().closes_at_ms, 2);
        assert!(
            load_round("/nonexistent/round.json", Duration::from_secs(1))
                .await
                .is_err()
        );
    }
}
