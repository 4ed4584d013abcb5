//! The Lambda side: API Gateway HTTP API events (payload format 2.0, JSON fixtures in
//! `tests/fixtures/`) go through `lambda_http`'s own event conversion into the same router, and
//! the answers come back as the API Gateway responses `lambda_http` produces. One more test runs
//! the real binary against a fake Lambda Runtime API.
//!
//! Needs `BUTTONPARTY_TEST_DATABASE_URL` (exported by `scripts/test`).

mod common;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use buttonparty::rules::PowerupKind;
use buttonparty::testing::TestDb;
use common::{NOW, Seed, WINDOW_MS, hours};
use fetch_api::{AppState, Clock, router, server};
use lambda_http::request::LambdaRequest;
use lambda_http::{Context, LambdaEvent};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tower::ServiceExt;

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.json"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Seeds the players the fixtures ask about.
async fn seed(db: &TestDb) {
    let seed = Seed(&db.pool);
    seed.round("r1", hours(-2)).await;
    seed.round("r2", NOW - 5_000).await;
    seed.user("alice", 120, 3, Some(NOW - 5_000)).await;
    seed.scored("alice", "r2", NOW - 5_000, 3).await;
    seed.powerup("alice", PowerupKind::Extender, 1, hours(-1))
        .await;
    seed.user("bob", 300, 1, Some(hours(-2))).await;
    seed.user("'; DROP TABLE users; --", 120, 0, None).await;
    seed.user("Zoë 🎉", 5, 0, None).await;
}

/// An API Gateway response as `lambda_http` serializes it: (status, headers, JSON body).
async fn invoke(app: &axum::Router, name: &str) -> (u16, Value, Value) {
    let request: LambdaRequest = serde_json::from_str(&fixture(name))
        .unwrap_or_else(|e| panic!("{name} is not an API Gateway event: {e}"));
    assert!(
        matches!(request, LambdaRequest::ApiGatewayV2(_)),
        "{name} must be an HTTP API (payload 2.0) event"
    );
    // Exactly what `lambda_http::run` wraps the service in.
    let adapter = lambda_http::Adapter::from(server::lambda_service(app.clone()));
    let response = adapter
        .oneshot(LambdaEvent::new(request, Context::default()))
        .await
        .unwrap();
    let response = serde_json::to_value(&response).unwrap();
    decode_response(name, &response)
}

fn decode_response(name: &str, response: &Value) -> (u16, Value, Value) {
    let status = response["statusCode"]
        .as_u64()
        .unwrap_or_else(|| panic!("{name}: no statusCode in {response}"));
    assert_eq!(response["isBase64Encoded"], false, "{name}: {response}");
    let body_text = response["body"]
        .as_str()
        .unwrap_or_else(|| panic!("{name}: no text body in {response}"));
    let body: Value = serde_json::from_str(body_text)
        .unwrap_or_else(|e| panic!("{name}: body is not JSON ({e}): {body_text}"));
    (
        u16::try_from(status).unwrap(),
        response["headers"].clone(),
        body,
    )
}

#[tokio::test]
async fn api_gateway_events_through_the_lambda_handler() {
    let db = TestDb::new().await;
    seed(&db).await;
    let store = common::store(&db.settings(), 5_000).await;
    let app = router(AppState {
        store: store.clone(),
        clock: Clock::Fixed(NOW),
        identity_claim: None,
    });
    let verified = router(AppState {
        store,
        clock: Clock::Fixed(NOW),
        identity_claim: Some("sub".into()),
    });

    let alice = json!({
        "username": "alice",
        "score": 120,
        "streak": 3,
        // "'" (0x27) sorts before "a": the injection-looking name at 120 ranks ahead of alice.
        "rank": 3,
        "scored_in_current_round": true,
        "powerups": [{"type": "EXTENDER", "level": 1.5, "expires_at_ms": hours(5)}],
        "current_round": {"round_id": "r2", "opens_at_ms": NOW - 5_000, "closes_at_ms": NOW - 5_000 + WINDOW_MS},
    });
    let lb = json!([
        {"rank": 1, "username": "bob", "score": 300},
        {"rank": 2, "username": "'; DROP TABLE users; --", "score": 120},
        {"rank": 3, "username": "alice", "score": 120},
        {"rank": 4, "username": "Zoë 🎉", "score": 5},
    ]);

    let cases: Vec<(&str, u16, Value)> = vec![
        ("self-found", 200, alice.clone()),
        ("self-named-stage", 200, alice),
        (
            "self-missing-username",
            400,
            json!({"error": "missing query parameter: username"}),
        ),
        (
            "self-empty-username",
            400,
            json!({"error": "empty username"}),
        ),
        ("self-unknown", 404, json!({"error": "unknown user"})),
        ("lb", 200, lb.clone()),
        ("lb-named-stage", 200, lb),
        ("not-found", 404, json!({"error": "not found"})),
        ("wrong-method", 405, json!({"error": "method not allowed"})),
    ];
    for (name, status, body) in cases {
        let (got_status, headers, got_body) = invoke(&app, name).await;
        assert_eq!(got_status, status, "{name}: {got_body}");
        assert_eq!(got_body, body, "{name}");
        assert_eq!(
            headers["content-type"], "application/json",
            "{name}: {headers}"
        );
    }

    // Verified identity: the JWT claim names the player; the query string is ignored.
    let (status, _, body) = invoke(&verified, "self-verified-identity").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["username"], "alice");
    let (status, _, body) = invoke(&verified, "self-found").await;
    assert_eq!((status, body), (401, json!({"error": "sign-in required"})));
    let (status, _, body) = invoke(&verified, "lb").await;
    assert_eq!(status, 200, "the leaderboard stays public: {body}");

    let (status, _, body) = invoke(&app, "self-sql-metacharacters").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["username"], "'; DROP TABLE users; --");
    assert_eq!(body["rank"], 2);
    let (status, _, body) = invoke(&app, "self-unicode").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["username"], "Zoë 🎉");
    assert_eq!(body["rank"], 4);

    db.drop_db().await;
}

#[tokio::test]
async fn lambda_handler_answers_503_when_the_database_is_down() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let settings = buttonparty::settings::DatabaseSettings::from_url(&format!(
        "mysql://bp:sentinel-pw@127.0.0.1:{port}/buttonparty"
    ));
    let app = router(AppState {
        store: common::store(&settings, 500).await,
        clock: Clock::Fixed(NOW),
        identity_claim: None,
    });
    for name in ["self-found", "lb"] {
        let (status, headers, body) = invoke(&app, name).await;
        assert_eq!(status, 503, "{name}");
        assert_eq!(
            body,
            json!({"error": "database unavailable, try again later"})
        );
        assert_eq!(headers["retry-after"], "1");
    }
}

/// A fake Lambda Runtime API: hands out `events` one by one and records the answers.
#[derive(Debug, Default)]
struct FakeRuntime {
    events: Mutex<VecDeque<(String, String)>>,
    answers: Mutex<Vec<(String, String, Value)>>,
    answered: Notify,
}

async fn next_event(State(runtime): State<Arc<FakeRuntime>>) -> (HeaderMap, String) {
    loop {
        let next = runtime.events.lock().unwrap().pop_front();
        if let Some((id, body)) = next {
            let mut headers = HeaderMap::new();
            headers.insert("lambda-runtime-aws-request-id", id.parse().unwrap());
            let deadline = common::NOW + 600_000;
            headers.insert("lambda-runtime-deadline-ms", deadline.into());
            headers.insert(
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:123456789012:function:fetch-api"
                    .parse()
                    .unwrap(),
            );
            headers.insert("content-type", "application/json".parse().unwrap());
            return (headers, body);
        }
        // No more events: hold the long poll, as Lambda does between invocations.
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

async fn record(
    State(runtime): State<Arc<FakeRuntime>>,
    Path((id, kind)): Path<(String, String)>,
    body: String,
) -> StatusCode {
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    runtime.answers.lock().unwrap().push((id, kind, value));
    runtime.answered.notify_one();
    StatusCode::ACCEPTED
}

async fn init_error(State(runtime): State<Arc<FakeRuntime>>, body: String) -> StatusCode {
    runtime
        .answers
        .lock()
        .unwrap()
        .push(("init".into(), "error".into(), Value::String(body)));
    runtime.answered.notify_one();
    StatusCode::ACCEPTED
}

#[tokio::test]
async fn binary_runs_as_a_lambda_when_the_runtime_api_is_set() {
    let db = TestDb::new().await;
    seed(&db).await;
    let names = [
        "lb",
        "self-found",
        "self-unknown",
        "self-missing-username",
        "not-found",
    ];
    let runtime = Arc::new(FakeRuntime::default());
    runtime.events.lock().unwrap().extend(
        names
            .iter()
            .map(|name| (format!("req-{name}"), fixture(name))),
    );
    let api = axum::Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next_event))
        .route("/2018-06-01/runtime/invocation/{id}/{kind}", post(record))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(runtime.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = tokio::spawn(async move { axum::serve(listener, api).await });

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fetch-api"))
        .env_remove("BUTTONPARTY_DB_SECRET_ID")
        .env_remove("BUTTONPARTY_FETCH_LISTEN")
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "fetch-api")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("BUTTONPARTY_DATABASE_URL", &db.url)
        .env("BUTTONPARTY_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start fetch-api");

    let all_answered = async {
        while runtime.answers.lock().unwrap().len() < names.len() {
            runtime.answered.notified().await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), all_answered)
        .await
        .is_err()
    {
        panic!("answers so far: {:?}", runtime.answers.lock().unwrap());
    }
    child.kill().await.unwrap();
    fake.abort();

    let answers = runtime.answers.lock().unwrap().clone();
    let by_name = |name: &str| {
        let (_, kind, value) = answers
            .iter()
            .find(|(id, _, _)| *id == format!("req-{name}"))
            .unwrap_or_else(|| panic!("no answer to {name}: {answers:?}"));
        assert_eq!(kind, "response", "{name}: {value}");
        decode_response(name, value)
    };
    let (status, _, body) = by_name("lb");
    assert_eq!(status, 200);
    assert_eq!(body[0], json!({"rank": 1, "username": "bob", "score": 300}));
    assert_eq!(body.as_array().unwrap().len(), 4);
    // The binary reads the system clock: only time-independent fields are checked.
    let (status, _, body) = by_name("self-found");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["username"].clone(),
            body["score"].clone(),
            body["rank"].clone()
        ),
        (json!("alice"), json!(120), json!(3))
    );
    assert_eq!(by_name("self-unknown").0, 404);
    assert_eq!(by_name("self-missing-username").0, 400);
    assert_eq!(by_name("not-found").0, 404);

    db.drop_db().await;
}
