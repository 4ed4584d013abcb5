//! Gathers items from a channel into batches: up to `max` items, or whatever arrived within
//! `linger` of the first one.

use std::time::Duration;

use tokio::sync::mpsc;

/// Batch limits.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Largest batch.
    pub max: usize,
    /// How long to wait for more items after the first.
    pub linger: Duration,
}

/// Waits for the first item, then collects more until `max` or `linger`. `None` when the channel
/// is closed and empty.
pub async fn next_batch<T>(rx: &mut mpsc::Receiver<T>, limits: BatchLimits) -> Option<Vec<T>> {
    let first = rx.recv().await?;
    let mut batch = Vec::with_capacity(limits.max.min(1024));
    batch.push(first);
    fill(rx, &mut batch, limits).await;
    Some(batch)
}

/// Adds to `batch` what arrives within `linger`, up to `max` items.
pub async fn fill<T>(rx: &mut mpsc::Receiver<T>, batch: &mut Vec<T>, limits: BatchLimits) {
    let deadline = tokio::time::Instant::now() + limits.linger;
    while batch.len() < limits.max {
        let room = limits.max - batch.len();
        // Returns at once with what is queued, else waits for the next item (or the deadline).
        match tokio::time::timeout_at(deadline, rx.recv_many(batch, room)).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: BatchLimits = BatchLimits {
        max: 5,
        linger: Duration::from_millis(20),
    };

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_goes_without_waiting() {
        let (tx, mut rx) = mpsc::channel(100);
        for i in 0..12 {
            tx.send(i).await.unwrap();
        }
        let start = tokio::time::Instant::now();
        assert_eq!(
            next_batch(&mut rx, LIMITS).await.unwrap(),
            vec![0, 1, 2, 3, 4]
        );
        assert_eq!(
            next_batch(&mut rx, LIMITS).await.unwrap(),
            vec![5, 6, 7, 8, 9]
        );
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_batch_goes_after_the_linger() {
        let (tx, mut rx) = mpsc::channel(100);
        tx.send(1).await.unwrap();
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            tx.send(2).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.send(3).await.unwrap();
        });
        let start = tokio::time::Instant::now();
        assert_eq!(next_batch(&mut rx, LIMITS).await.unwrap(), vec![1, 2]);
        assert_eq!(start.elapsed(), LIMITS.linger);
        assert_eq!(next_batch(&mut rx, LIMITS).await.unwrap(), vec![3]);
        sender.await.unwrap();
        assert_eq!(next_batch(&mut rx, LIMITS).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn closed_channel_flushes_what_is_left() {
        let (tx, mut rx) = mpsc::channel(100);
        tx.send(1).await.unwrap();
        drop(tx);
        assert_eq!(next_batch(&mut rx, LIMITS).await.unwrap(), vec![1]);
        assert_eq!(next_batch(&mut rx, LIMITS).await, None);
    }
}
