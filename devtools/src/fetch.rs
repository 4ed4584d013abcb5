//! A small client of the fetch API (SPEC §7): `GET /fetch/self?username=` and `GET /fetch/lb`.

use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Deserialize;

/// `GET /fetch/self`: the fields the tools read (others are ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SelfView {
    /// The username.
    pub username: String,
    /// Points.
    pub score: i64,
    /// Effective streak.
    pub streak: u32,
    /// 1-based place on the whole leaderboard.
    #[serde(default)]
    pub rank: Option<u64>,
    /// Whether the player scored in the round open now.
    #[serde(default)]
    pub scored_in_current_round: bool,
    /// Active powerups.
    #[serde(default)]
    pub powerups: Vec<ActivePowerup>,
    /// The round open now.
    #[serde(default)]
    pub current_round: Option<CurrentRound>,
}

/// An active powerup.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ActivePowerup {
    /// FREEZE, MULTIPLIER or EXTENDER.
    #[serde(rename = "type")]
    pub kind: String,
    /// The level as bought.
    pub level: f64,
    /// When it stops, epoch ms.
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
}

/// The round open now.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CurrentRound {
    /// Its id.
    pub round_id: String,
    /// Opening, epoch ms.
    pub opens_at_ms: i64,
    /// Close, epoch ms.
    pub closes_at_ms: i64,
}

/// One line of `GET /fetch/lb`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LeaderboardEntry {
    /// 1-based place (computed from the position when the API omits it).
    #[serde(default)]
    pub rank: Option<u64>,
    /// The username.
    pub username: String,
    /// Points.
    pub score: i64,
}

/// The fetch API at a base URL such as `http://127.0.0.1:8080`.
#[derive(Debug, Clone)]
pub struct FetchClient {
    base: String,
    http: reqwest::Client,
}

impl FetchClient {
    /// A client of the API at `base` (with or without a trailing slash).
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /fetch/self?username=…`: `None` when the user is unknown (404).
    pub async fn player(&self, username: &str) -> anyhow::Result<Option<SelfView>> {
        let url = format!("{}/fetch/self", self.base);
        let resp = self
            .http
            .get(&url)
            .query(&[("username", username)])
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        match resp.status() {
            reqwest::StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                Ok(Some(resp.json().await.with_context(|| {
                    format!("reading GET {url}?username={username}")
                })?))
            }
            s => bail!(
                "GET {url}?username={username}: HTTP {s}: {}",
                body_text(resp).await
            ),
        }
    }

    /// `GET /fetch/lb`: the top 10, with ranks filled in.
    pub async fn leaderboard(&self) -> anyhow::Result<Vec<LeaderboardEntry>> {
        let url = format!("{}/fetch/lb", self.base);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        if !resp.status().is_success() {
            bail!(
                "GET {url}: HTTP {}: {}",
                resp.status(),
                body_text(resp).await
            );
        }
        let mut lb: Vec<LeaderboardEntry> = resp
            .json()
            .await
            .with_context(|| format!("reading GET {url}"))?;
        for (i, e) in lb.iter_mut().enumerate() {
            e.rank.get_or_insert(i as u64 + 1);
        }
        Ok(lb)
    }

    /// Waits until `GET /fetch/lb` answers 200, or `timeout`. The error holds the last failure.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let err = match self.leaderboard().await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(err.context(format!(
                    "the fetch API at {} did not answer within {} s",
                    self.base,
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

async fn body_text(resp: reqwest::Response) -> String {
    let text = resp.text().await.unwrap_or_default();
    text.chars().take(300).collect()
}
