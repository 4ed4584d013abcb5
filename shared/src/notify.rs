//! systemd service notifications (`Type=notify`): READY, WATCHDOG, STOPPING and STATUS.
//! Every call is a no-op outside systemd (no `NOTIFY_SOCKET`).

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Start-up is finished: dependencies answered and work can begin.
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// Shutdown has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// The service is alive and making progress.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// A free-form status line shown by `systemctl status`.
pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// How often to send WATCHDOG=1: half the configured `WatchdogSec`, or `None` when the watchdog is
/// off.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}
