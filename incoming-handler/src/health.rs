//! Whether the database is usable. Receivers stop taking new messages while it is not, and resume
//! by themselves once a transaction succeeds again.

use tokio::sync::watch;

/// A shared flag: database healthy or not.
#[derive(Debug, Clone)]
pub struct Health {
    tx: watch::Sender<bool>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// Starts healthy.
    pub fn new() -> Self {
        Self {
            tx: watch::Sender::new(true),
        }
    }

    /// Records the database's state; logs transitions.
    pub fn set(&self, healthy: bool) {
        let changed = self.tx.send_if_modified(|h| {
            let changed = *h != healthy;
            *h = healthy;
            changed
        });
        if changed {
            if healthy {
                tracing::info!("database reachable again: receiving resumes");
            } else {
                tracing::warn!(
                    "database unavailable: receiving paused, held messages kept invisible"
                );
            }
            buttonparty::notify::status(if healthy {
                "running"
            } else {
                "database unavailable, retrying"
            });
        }
    }

    /// Whether the database is healthy now.
    pub fn is_healthy(&self) -> bool {
        *self.tx.borrow()
    }

    /// Waits until the database is healthy.
    pub async fn wait_healthy(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|h| *h).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waiters_resume_when_healthy_again() {
        let h = Health::new();
        h.set(false);
        let waiter = tokio::spawn({
            let h = h.clone();
            async move { h.wait_healthy().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        h.set(true);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
