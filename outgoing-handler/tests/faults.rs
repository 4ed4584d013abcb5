//! Fault scenario 10 of the fault suite (run by `scripts/faults`): a disabled push endpoint never
//! stops pushes to the others.

mod common;

use std::io::Write as _;
use std::time::Duration;

use common::{Stack, check_endpoint_message};

#[tokio::test]
async fn s10_a_disabled_endpoint_never_stops_pushes_to_the_others() {
    let stack = Stack::new("og-fault").await;
    let endpoints = stack.subscribe_endpoints(3).await;
    // The second phone uninstalled the app: FCM reported it and SNS disabled its endpoint.
    stack
        .clients
        .sns
        .set_endpoint_attributes()
        .endpoint_arn(&endpoints[1])
        .attributes("Enabled", "false")
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = stack.config(dir.path(), 60);
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let opened = outgoing_handler::open_round(&config, &stack.clients)
            .await
            .expect("every round is announced");
        rounds.push(opened.round.round_id);
    }
    let mut delivered = 0;
    for endpoint in [&endpoints[0], &endpoints[2]] {
        let messages = stack.wait_endpoint_messages(endpoint, 3).await;
        assert_eq!(messages.len(), 3, "{endpoint}");
        for m in &messages {
            assert!(rounds.contains(&check_endpoint_message(m, 60)));
        }
        delivered += messages.len();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let to_disabled = stack.endpoint_messages(&endpoints[1]).await.len();
    let line = serde_json::json!({
        "scenario": "10. publishing with a disabled SNS endpoint among the subscribers",
        "sent": 3, "applied": 3, "dead_lettered": 0, "lost": 0, "double": 0,
        // LocalStack records topic fan-out to a disabled endpoint too; AWS skips it.
        "figure": format!("3 rounds announced, every publish accepted; {delivered}/6 pushes reached the enabled endpoints (the emulator also recorded {to_disabled} for the disabled one; AWS drops those)"),
    })
    .to_string();
    println!("FAULT {line}");
    let path = std::env::var("BUTTONPARTY_FAULT_REPORT")
        .unwrap_or_else(|_| format!("{}/fault-report.jsonl", env!("CARGO_TARGET_TMPDIR")));
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
    assert_eq!(delivered, 6, "the enabled endpoints got every round");
    stack.cleanup(&[]).await;
}
