//! Gathers items from a channel into batches: up to `max` items, or whatever arrived within
//! `linger` of the first one — or less, once nothing has arrived for [`QUIET`]: while a burst
//! keeps the channel busy a batch grows to `max` or `linger`, and when it stops (the queue is
//! drained, or a lone press came) the batch goes at once instead of waiting out the linger.

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

/// Within a batch's linger, the batch goes early once no item has arrived for this long. Under a
/// burst the receivers hand over ten messages every few milliseconds; a pause this long means
/// the queue has (for now) nothing more.
pub const QUIET: Duration = Duration::from_millis(50);

/// Waits for the first item, then collects more until `max`, `linger` or [`QUIET`]. `None` when
/// the channel is closed and empty.
pub async fn next_batch<T>(rx: &mut mpsc::Receiver<T>, limits: BatchLimits) -> Option<Vec<T>> {
    let first = rx.recv().await?;
    let mut batch = Vec::with_capacity(limits.max.min(1024));
    batch.push(first);
    fill(rx, &mut batch, limits, || true).await;
    Some(batch)
}

/// Adds to `batch` what arrives within `linger`, up to `max` items, stopping early when nothing
/// arrived for [`QUIET`], or at once when nothing is queued and `more_can_come` says nothing
/// more can arrive (every message the handler may hold is held: waiting would only delay the
/// batch that frees them).
pub async fn fill<T>(
    rx: &mut mpsc::Receiver<T>,
    batch: &mut Vec<T>,
    limits: BatchLimits,
    more_can_come: impl Fn() -> bool,
) {
    let deadline = tokio::time::Instant::now() + limits.linger;
    while batch.len() < limits.max {
        if rx.is_empty() && !more_can_come() {
            break;
        }
        let room = limits.max - batch.len();
        let until = deadline.min(tokio::time::Instant::now() + QUIET);
        // Returns at once with what is queued, else waits for the next item (or the deadline).
        match tokio::time::timeout_at(until, rx.recv_many(batch, room)).await {
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
    async fn a_batch_grows_while_items_keep_coming_and_goes_when_they_stop() {
        let limits = BatchLimits {
            max: 1000,
            linger: Duration::from_millis(255),
        };
        let (tx, mut rx) = mpsc::channel(1000);
        // A burst: an item every 10 ms for 400 ms, then a lone item 100 ms later.
        let sender = tokio::spawn(async move {
            for i in 0..40 {
                tx.send(i).await.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            tx.send(99).await.unwrap();
            // Still open: only the quiet gap may end the last batch.
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        let start = tokio::time::Instant::now();
        // The linger ends the first batch...
        let first = next_batch(&mut rx, limits).await.unwrap();
        assert_eq!(start.elapsed(), limits.linger);
        assert_eq!(first, (0..=25).collect::<Vec<_>>());
        // ...the pause after the burst ends the second...
        let second = next_batch(&mut rx, limits).await.unwrap();
        assert_eq!(second, (26..40).collect::<Vec<_>>());
        assert_eq!(start.elapsed(), Duration::from_millis(390) + QUIET);
        // ...and a lone item goes after the quiet gap, not the whole linger.
        let lone = next_batch(&mut rx, limits).await.unwrap();
        assert_eq!(lone, vec![99]);
        assert_eq!(start.elapsed(), Duration::from_millis(500) + QUIET);
        sender.await.unwrap();
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
