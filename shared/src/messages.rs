//! Queue messages (SPEC §4): typed bodies for the four queues and one parse function per queue.
//!
//! Every parser follows the same steps, in order:
//!
//! 1. size: a body larger than [`MAX_BODY_BYTES`] is [`Malformed::TooLarge`];
//! 2. encoding: the body must be UTF-8 ([`Malformed::NotUtf8`]);
//! 3. syntax: the body must be JSON ([`Malformed::NotJson`]) and a JSON object
//!    ([`Malformed::NotObject`]);
//! 4. wrapper: when the top-level object lacks a required field (absent or `null`) but has a
//!    `"RequestBody"` object (the original app's wrapper), that inner object is parsed instead;
//! 5. fields, in the order they are listed in the table of SPEC §4. Unknown fields are ignored,
//!    and a `null` for a required field counts as missing.
//!
//! A [`Malformed`] reason is meant for logs and for the dead-letter queue's message attribute: its
//! `Display` is short and never contains the push token nor the body.

use std::fmt;

use serde_json::{Map, Number, Value};

use crate::rules::{Powerup, PowerupKind};

/// The largest accepted body, in bytes (8 KiB). A larger body is [`Malformed::TooLarge`].
pub const MAX_BODY_BYTES: usize = 8 * 1024;

/// Most characters (Unicode scalar values) in a [`Username`].
const MAX_USERNAME_CHARS: usize = 128;
/// Most characters in a [`PushToken`].
const MAX_TOKEN_CHARS: usize = 4096;
/// Most characters in a [`RequestId`].
const MAX_REQUEST_ID_CHARS: usize = 128;
/// Most characters in a [`RoundAnnouncement::round_id`].
const MAX_ROUND_ID_CHARS: usize = 64;
/// Most characters of serde_json's error text kept in [`Malformed::NotJson`].
const MAX_JSON_ERROR_CHARS: usize = 200;
/// Most characters of the client's text kept in [`Malformed::UnknownPowerupType`] and
/// [`Malformed::UnknownPowerupLevel`].
const MAX_ECHO_CHARS: usize = 64;

/// The wrapper object of the original app: `{"RequestBody": {...}}`.
const WRAPPER_FIELD: &str = "RequestBody";

/// Why a message is malformed.
///
/// `Display` is a short human reason used in logs and as the dead-letter queue's message attribute;
/// it never contains the push token value nor the body (the only client text it may echo is an
/// unknown powerup type or level, truncated to 64 characters and escaped). [`Malformed::code`] is a
/// stable machine-readable code per variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("body is {bytes} bytes, more than the {max} allowed", max = MAX_BODY_BYTES)]
    TooLarge {
        /// The size of the body, in bytes.
        bytes: usize,
    },
    /// The body is not valid UTF-8.
    #[error("body is not valid UTF-8")]
    NotUtf8,
    /// The body is not valid JSON; holds serde_json's error text, truncated to 200 characters
    /// (it describes the position of the error, never the content).
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    /// The body is JSON but not a JSON object.
    #[error("body is not a JSON object")]
    NotObject,
    /// A required field is absent or `null`.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A field has the wrong JSON type.
    #[error("field `{field}` must be {expected}")]
    WrongType {
        /// The field's name as sent.
        field: &'static str,
        /// What it must be, e.g. "a string".
        expected: &'static str,
    },
    /// The username breaks a rule of [`Username`]: "empty", "longer than 128 characters" or
    /// "contains a control character".
    #[error("invalid username: {0}")]
    InvalidUsername(&'static str),
    /// The push token breaks a rule of [`PushToken`]: "empty" or "longer than 4096 characters".
    #[error("invalid push token: {0}")]
    InvalidToken(&'static str),
    /// The request id breaks a rule of [`RequestId`]: "empty", "longer than 128 characters" or
    /// "contains a control character".
    #[error("invalid request id: {0}")]
    InvalidRequestId(&'static str),
    /// The round id breaks a rule of [`RoundAnnouncement::round_id`]: "empty",
    /// "longer than 64 characters", "contains a control character" or "negative".
    #[error("invalid round id: {0}")]
    InvalidRoundId(&'static str),
    /// `powerUpType` is not FREEZE, MULTIPLIER or EXTENDER (in any case); holds the type as sent,
    /// truncated to 64 characters.
    #[error("unknown powerup type {0:?}")]
    UnknownPowerupType(String),
    /// The level (`quantity` or `level`) is not a level of that powerup type.
    #[error("unknown {} level {level}", .kind.as_str())]
    UnknownPowerupLevel {
        /// The (known) powerup type.
        kind: PowerupKind,
        /// The level as a JSON number, truncated to 64 characters.
        level: String,
    },
    /// The round's times are out of range or out of order: "negative time",
    /// "time out of range" or "closes_at_ms must be after opens_at_ms".
    #[error("invalid round times: {0}")]
    InvalidRoundTimes(&'static str),
}

impl Malformed {
    /// A stable snake_case code per variant (e.g. `"too_large"`, `"not_json"`,
    /// `"missing_field"`), for metrics and machine-readable attributes.
    pub fn code(&self) -> &'static str {
        match self {
            Malformed::TooLarge { .. } => "too_large",
            Malformed::NotUtf8 => "not_utf8",
            Malformed::NotJson(_) => "not_json",
            Malformed::NotObject => "not_object",
            Malformed::MissingField(_) => "missing_field",
            Malformed::WrongType { .. } => "wrong_type",
            Malformed::InvalidUsername(_) => "invalid_username",
            Malformed::InvalidToken(_) => "invalid_token",
            Malformed::InvalidRequestId(_) => "invalid_request_id",
            Malformed::InvalidRoundId(_) => "invalid_round_id",
            Malformed::UnknownPowerupType(_) => "unknown_powerup_type",
            Malformed::UnknownPowerupLevel { .. } => "unknown_powerup_level",
            Malformed::InvalidRoundTimes(_) => "invalid_round_times",
        }
    }
}

/// A player's name: 1–128 characters (Unicode scalar values), no control characters
/// ([`char::is_control`]); any other Unicode is allowed and stored exactly as sent (no trimming,
/// no normalisation). A name such as `'; DROP TABLE users; --` is just a name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(String);

impl Username {
    /// Validates a username; the error is always [`Malformed::InvalidUsername`].
    pub fn parse(s: impl Into<String>) -> Result<Self, Malformed> {
        let s = s.into();
        check_text(&s, MAX_USERNAME_CHARS)
            .map_err(|e| Malformed::InvalidUsername(e.reason("longer than 128 characters")))?;
        Ok(Self(s))
    }

    /// The username as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The username as an owned string.
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Username {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A device push token: 1–4096 characters. A secret: `Debug` and `Display` print `[redacted]`;
/// only [`PushToken::expose`] gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct PushToken(String);

impl PushToken {
    /// Validates a push token; the error is always [`Malformed::InvalidToken`] (and never contains
    /// the token).
    pub fn parse(s: impl Into<String>) -> Result<Self, Malformed> {
        let s = s.into();
        if s.is_empty() {
            return Err(Malformed::InvalidToken("empty"));
        }
        if s.chars().count() > MAX_TOKEN_CHARS {
            return Err(Malformed::InvalidToken("longer than 4096 characters"));
        }
        Ok(Self(s))
    }

    /// The token's value, for the push service. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PushToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for PushToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A client-chosen id of a powerup purchase: purchases with the same `(username, request_id)`
/// apply once. 1–128 characters, no control characters; sent as a JSON string or a JSON integer
/// (normalised to its decimal string, so `7` and `"7"` are the same id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    /// Validates a request id given as a string; the error is always
    /// [`Malformed::InvalidRequestId`].
    pub fn parse(s: impl Into<String>) -> Result<Self, Malformed> {
        let s = s.into();
        check_text(&s, MAX_REQUEST_ID_CHARS)
            .map_err(|e| Malformed::InvalidRequestId(e.reason("longer than 128 characters")))?;
        Ok(Self(s))
    }

    /// The request id (an integer id as its decimal string).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Body of the add-user queue: `{"username": S, "token": T}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddUser {
    /// The user to register (if new).
    pub username: Username,
    /// The user's push token, (re)registered.
    pub token: PushToken,
}

/// Body of the press queue: `{"username": S}`. Any `streak`, `score` or time field a client sends
/// is ignored; the press time is the message's `SentTimestamp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Press {
    /// The user who pressed.
    pub username: Username,
}

/// Body of the powerup queue:
/// `{"username": S, "powerUpType": P, "quantity": Q, "request_id"?: R}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerupPurchase {
    /// The buyer.
    pub username: Username,
    /// The powerup bought (type and tier, from `powerUpType` and `quantity`/`level`).
    pub powerup: Powerup,
    /// The client's id of the purchase (`request_id` or `requestId`), if sent.
    pub request_id: Option<RequestId>,
}

/// Body of the timestamp queue, written by the outgoing handler for the incoming handler:
/// `{"round_id": "...", "opens_at_ms": ..., "closes_at_ms": ..., "window_ms": ...}` (epoch
/// milliseconds; `window_ms` optional).
///
/// In input, `round_id` is a JSON string (1–64 characters, no control characters) or a
/// non-negative JSON integer (normalised to its decimal string); it is always serialised as a
/// string.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoundAnnouncement {
    /// The round's id.
    pub round_id: String,
    /// When the round opens, epoch ms (>= 0).
    pub opens_at_ms: i64,
    /// When the round's window closes, epoch ms (after `opens_at_ms`): the base window plus the
    /// time the push needs to reach every phone (SPEC §3).
    pub closes_at_ms: i64,
    /// The base press window in ms (what an extender multiplies: the deadline for extender `e`
    /// is `closes_at_ms + (e − 1) × window_ms`). Absent in messages of older senders: then the
    /// window is `closes_at_ms − opens_at_ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<i64>,
}

impl RoundAnnouncement {
    /// The base press window in ms: `window_ms`, or `closes_at_ms − opens_at_ms` without it.
    pub fn window(&self) -> i64 {
        self.window_ms
            .unwrap_or_else(|| self.closes_at_ms.saturating_sub(self.opens_at_ms))
    }

    /// The message body, as [`parse_round`] reads it back.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a struct of a string and integers always serialises")
    }
}

/// Parses an add-user body: `{"username": S, "token": T}`.
pub fn parse_add_user(body: &[u8]) -> Result<AddUser, Malformed> {
    let root = parse_object(body)?;
    let obj = unwrap_request_body(&root, &[&["username"], &["token"]]);
    let username = username_field(obj)?;
    let token = match required(obj, "token")? {
        Value::String(s) => PushToken::parse(s.as_str())?,
        _ => return Err(wrong_type("token", "a string")),
    };
    Ok(AddUser { username, token })
}

/// Parses a press body: `{"username": S}`; every other field is ignored.
pub fn parse_press(body: &[u8]) -> Result<Press, Malformed> {
    let root = parse_object(body)?;
    let obj = unwrap_request_body(&root, &[&["username"]]);
    let username = username_field(obj)?;
    Ok(Press { username })
}

/// Parses a powerup body:
/// `{"username": S, "powerUpType": P, "quantity": Q, "request_id"?: R}`.
///
/// `P` is a string, case-insensitive. `Q` is a JSON number (integer or float, e.g. `1.5` for the
/// extender); `level` is accepted in place of `quantity` (`quantity` wins when both are sent).
/// `R` is a string or an integer; `requestId` is accepted in place of `request_id`.
pub fn parse_powerup(body: &[u8]) -> Result<PowerupPurchase, Malformed> {
    let root = parse_object(body)?;
    let obj = unwrap_request_body(
        &root,
        &[&["username"], &["powerUpType"], &["quantity", "level"]],
    );
    let username = username_field(obj)?;

    let kind = match required(obj, "powerUpType")? {
        Value::String(s) => PowerupKind::parse(s)
            .ok_or_else(|| Malformed::UnknownPowerupType(truncate_chars(s, MAX_ECHO_CHARS)))?,
        _ => return Err(wrong_type("powerUpType", "a string")),
    };

    let (level_field, level) =
        first_present(obj, &["quantity", "level"]).ok_or(Malformed::MissingField("quantity"))?;
    let level = match level {
        Value::Number(n) => n,
        _ => return Err(wrong_type(level_field, "a number")),
    };
    let unknown_level = || Malformed::UnknownPowerupLevel {
        kind,
        level: truncate_chars(&level.to_string(), MAX_ECHO_CHARS),
    };
    let powerup = level
        .as_f64()
        .and_then(|l| Powerup::from_level(kind, l))
        .ok_or_else(unknown_level)?;

    let request_id = match first_present(obj, &["request_id", "requestId"]) {
        None => None,
        Some((_, Value::String(s))) => Some(RequestId::parse(s.as_str())?),
        Some((field, Value::Number(n))) => match integer_text(n) {
            Some(text) => Some(RequestId::parse(text)?),
            None => return Err(wrong_type(field, "a string or an integer")),
        },
        Some((field, _)) => return Err(wrong_type(field, "a string or an integer")),
    };

    Ok(PowerupPurchase {
        username,
        powerup,
        request_id,
    })
}

/// Parses a timestamp-queue body:
/// `{"round_id": R, "opens_at_ms": O, "closes_at_ms": C, "window_ms"?: W}`.
///
/// `R` is a string or a non-negative integer; `O` and `C` are JSON integers (floats are
/// [`Malformed::WrongType`]), both >= 0, with `C` after `O`. `W`, when present, is a JSON integer
/// with `0 < W <= C − O` (a round never closes before its base window has passed).
pub fn parse_round(body: &[u8]) -> Result<RoundAnnouncement, Malformed> {
    let root = parse_object(body)?;
    let obj = unwrap_request_body(&root, &[&["round_id"], &["opens_at_ms"], &["closes_at_ms"]]);

    let round_id = match required(obj, "round_id")? {
        Value::String(s) => {
            check_text(s, MAX_ROUND_ID_CHARS)
                .map_err(|e| Malformed::InvalidRoundId(e.reason("longer than 64 characters")))?;
            s.clone()
        }
        Value::Number(n) if n.is_u64() => n.to_string(),
        Value::Number(n) if n.is_i64() => return Err(Malformed::InvalidRoundId("negative")),
        _ => {
            return Err(wrong_type("round_id", "a string or a non-negative integer"));
        }
    };
    let opens_at_ms = time_field(obj, "opens_at_ms")?;
    let closes_at_ms = time_field(obj, "closes_at_ms")?;
    if opens_at_ms < 0 || closes_at_ms < 0 {
        return Err(Malformed::InvalidRoundTimes("negative time"));
    }
    if closes_at_ms <= opens_at_ms {
        return Err(Malformed::InvalidRoundTimes(
            "closes_at_ms must be after opens_at_ms",
        ));
    }
    let window_ms = match obj.get("window_ms") {
        None | Some(Value::Null) => None,
        Some(_) => {
            let w = time_field(obj, "window_ms")?;
            if w <= 0 || w > closes_at_ms - opens_at_ms {
                return Err(Malformed::InvalidRoundTimes(
                    "window_ms must be positive and at most closes_at_ms - opens_at_ms",
                ));
            }
            Some(w)
        }
    };
    Ok(RoundAnnouncement {
        round_id,
        opens_at_ms,
        closes_at_ms,
        window_ms,
    })
}

/// Steps 1–3 of every parser: size, UTF-8, JSON object.
fn parse_object(body: &[u8]) -> Result<Map<String, Value>, Malformed> {
    if body.len() > MAX_BODY_BYTES {
        return Err(Malformed::TooLarge { bytes: body.len() });
    }
    let text = std::str::from_utf8(body).map_err(|_| Malformed::NotUtf8)?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Malformed::NotJson(truncate_chars(&e.to_string(), MAX_JSON_ERROR_CHARS)))?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(Malformed::NotObject),
    }
}

/// Step 4: the inner `"RequestBody"` object when the top-level object lacks a required field
/// (each entry of `required` lists the names that can stand for one field) and has such an object.
fn unwrap_request_body<'a>(
    root: &'a Map<String, Value>,
    required: &[&[&'static str]],
) -> &'a Map<String, Value> {
    let lacks_one = required
        .iter()
        .any(|names| first_present(root, names).is_none());
    match root.get(WRAPPER_FIELD) {
        Some(Value::Object(inner)) if lacks_one => inner,
        _ => root,
    }
}

/// The first of `names` whose value is present and not `null`, with its name.
fn first_present<'a>(
    obj: &'a Map<String, Value>,
    names: &[&'static str],
) -> Option<(&'static str, &'a Value)> {
    names.iter().find_map(|&name| match obj.get(name) {
        None | Some(Value::Null) => None,
        Some(value) => Some((name, value)),
    })
}

/// A required field's value; absent or `null` is [`Malformed::MissingField`].
fn required<'a>(obj: &'a Map<String, Value>, field: &'static str) -> Result<&'a Value, Malformed> {
    first_present(obj, &[field])
        .map(|(_, value)| value)
        .ok_or(Malformed::MissingField(field))
}

/// The `username` field: a string that is a valid [`Username`].
fn username_field(obj: &Map<String, Value>) -> Result<Username, Malformed> {
    match required(obj, "username")? {
        Value::String(s) => Username::parse(s.as_str()),
        _ => Err(wrong_type("username", "a string")),
    }
}

/// A round time: a JSON integer that fits an `i64`.
fn time_field(obj: &Map<String, Value>, field: &'static str) -> Result<i64, Malformed> {
    match required(obj, field)? {
        Value::Number(n) => match n.as_i64() {
            Some(t) => Ok(t),
            None if n.is_u64() => Err(Malformed::InvalidRoundTimes("time out of range")),
            None => Err(wrong_type(field, "an integer")),
        },
        _ => Err(wrong_type(field, "an integer")),
    }
}

/// The decimal text of a JSON integer (`None` for a float).
fn integer_text(n: &Number) -> Option<String> {
    (n.is_i64() || n.is_u64()).then(|| n.to_string())
}

fn wrong_type(field: &'static str, expected: &'static str) -> Malformed {
    Malformed::WrongType { field, expected }
}

/// Why a text field breaks the common rules (1..=max characters, no control characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextError {
    Empty,
    TooLong,
    Control,
}

impl TextError {
    /// The reason text; `too_long` names the field's limit.
    fn reason(self, too_long: &'static str) -> &'static str {
        match self {
            TextError::Empty => "empty",
            TextError::TooLong => too_long,
            TextError::Control => "contains a control character",
        }
    }
}

/// Checks 1..=`max_chars` characters and no control character (in that order).
fn check_text(s: &str, max_chars: usize) -> Result<(), TextError> {
    if s.is_empty() {
        return Err(TextError::Empty);
    }
    if s.chars().count() > max_chars {
        return Err(TextError::TooLong);
    }
    if s.chars().any(char::is_control) {
        return Err(TextError::Control);
    }
    Ok(())
}

/// The first `max_chars` characters of `s`.
fn truncate_chars(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((end, _)) => s[..end].to_owned(),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    // ---------------------------------------------------------------- helpers

    fn user(s: &str) -> Username {
        Username::parse(s).expect("valid username")
    }

    fn token(s: &str) -> PushToken {
        PushToken::parse(s).expect("valid token")
    }

    fn powerup(kind: PowerupKind, level: f64) -> Powerup {
        Powerup::from_level(kind, level).expect("a catalogue level")
    }

    fn rid(s: &str) -> Option<RequestId> {
        Some(RequestId::parse(s).expect("valid request id"))
    }

    fn wrong(field: &'static str, expected: &'static str) -> Malformed {
        Malformed::WrongType { field, expected }
    }

    fn not_json() -> Malformed {
        // The text is serde_json's; `check` compares only the variant for NotJson.
        Malformed::NotJson(String::new())
    }

    /// A body of exactly `len` bytes: `value` (a JSON object) padded with an unknown field.
    fn padded(value: serde_json::Value, len: usize) -> Vec<u8> {
        let mut value = value;
        value["pad"] = json!("");
        let base = serde_json::to_vec(&value).unwrap().len();
        value["pad"] = json!("x".repeat(len - base));
        let body = serde_json::to_vec(&value).unwrap();
        assert_eq!(body.len(), len);
        body
    }

    fn body(v: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    /// Compares a parse result with the expected one (NotJson by variant only, since its text is
    /// serde_json's) and returns the error code, if any.
    fn check<T: PartialEq + fmt::Debug>(
        name: &str,
        got: Result<T, Malformed>,
        want: Result<T, Malformed>,
    ) -> Option<&'static str> {
        match (&got, &want) {
            (Err(Malformed::NotJson(text)), Err(Malformed::NotJson(_))) => {
                assert!(!text.is_empty(), "{name}: empty NotJson text");
                assert!(text.chars().count() <= 200, "{name}: NotJson text too long");
            }
            _ => assert_eq!(got, want, "case {name}"),
        }
        got.err().map(|e| e.code())
    }

    /// Bodies that every parser rejects before looking at fields.
    fn envelope_cases() -> Vec<(&'static str, Vec<u8>, Malformed)> {
        vec![
            (
                "8193 bytes",
                padded(json!({"username": "a"}), MAX_BODY_BYTES + 1),
                Malformed::TooLarge { bytes: 8193 },
            ),
            (
                "one megabyte",
                vec![b' '; 1 << 20],
                Malformed::TooLarge { bytes: 1 << 20 },
            ),
            (
                "invalid UTF-8",
                b"{\"username\": \"\xff\xfe\"}".to_vec(),
                Malformed::NotUtf8,
            ),
            (
                "lone surrogate bytes",
                b"\xed\xa0\x80".to_vec(),
                Malformed::NotUtf8,
            ),
            ("empty body", b"".to_vec(), not_json()),
            ("plain text", b"username=alice".to_vec(), not_json()),
            (
                "truncated object",
                b"{\"username\": \"al".to_vec(),
                not_json(),
            ),
            ("trailing garbage", b"{} x".to_vec(), not_json()),
            (
                "single quotes",
                b"{'username': 'alice'}".to_vec(),
                not_json(),
            ),
            (
                "array",
                b"[{\"username\": \"alice\"}]".to_vec(),
                Malformed::NotObject,
            ),
            ("string", b"\"alice\"".to_vec(), Malformed::NotObject),
            ("number", b"42".to_vec(), Malformed::NotObject),
            ("null", b"null".to_vec(), Malformed::NotObject),
            ("bool", b"true".to_vec(), Malformed::NotObject),
        ]
    }

    /// Username cases shared by every queue that reads `username`; `extra` holds the other
    /// (valid) fields of the queue.
    fn username_cases(
        extra: &serde_json::Value,
    ) -> Vec<(String, Vec<u8>, Result<String, Malformed>)> {
        let with = |name: serde_json::Value| {
            let mut v = extra.clone();
            v["username"] = name;
            body(v)
        };
        let control = Malformed::InvalidUsername("contains a control character");
        let too_long = Malformed::InvalidUsername("longer than 128 characters");
        let mut cases = vec![];
        for ok in [
            "alice".to_owned(),
            "'; DROP TABLE users; --".to_owned(),
            "Robert'); DROP TABLE Students;-- \" ` \\ % _ *".to_owned(),
            " spaced  name ".to_owned(),
            "e\u{301}t\u{e9}".to_owned(), // combining accent kept, not normalised
            "a".repeat(128),
            "é".repeat(128),
            "😀".repeat(128),
            "👩‍👩‍👧".to_owned(),
            "\u{200b}zero-width".to_owned(),
            "<script>alert(1)</script>".to_owned(),
        ] {
            cases.push((format!("username {ok:?}"), with(json!(ok)), Ok(ok)));
        }
        let bad: Vec<(&str, serde_json::Value, Malformed)> = vec![
            ("empty", json!(""), Malformed::InvalidUsername("empty")),
            ("129 ascii", json!("a".repeat(129)), too_long.clone()),
            ("129 é", json!("é".repeat(129)), too_long.clone()),
            ("129 emoji", json!("😀".repeat(129)), too_long.clone()),
            ("NUL", json!("ali\u{0}ce"), control.clone()),
            ("newline", json!("alice\n"), control.clone()),
            ("tab", json!("\talice"), control.clone()),
            ("escape", json!("\u{1b}[31mred"), control.clone()),
            ("DEL", json!("al\u{7f}"), control.clone()),
            ("C1 NEL", json!("al\u{85}"), control.clone()),
            ("only control", json!("\u{0}"), control),
            ("number", json!(42), wrong("username", "a string")),
            ("bool", json!(true), wrong("username", "a string")),
            ("array", json!(["alice"]), wrong("username", "a string")),
            (
                "object",
                json!({"name": "alice"}),
                wrong("username", "a string"),
            ),
            ("null", json!(null), Malformed::MissingField("username")),
        ];
        for (name, value, err) in bad {
            cases.push((format!("username {name}"), with(value), Err(err)));
        }
        let mut absent = extra.clone();
        absent.as_object_mut().unwrap().remove("username");
        cases.push((
            "username absent".to_owned(),
            body(absent),
            Err(Malformed::MissingField("username")),
        ));
        cases
    }

    // ---------------------------------------------------------------- add-user

    fn add_user_cases() -> Vec<(String, Vec<u8>, Result<AddUser, Malformed>)> {
        let ok = |u: &str, t: &str| {
            Ok(AddUser {
                username: user(u),
                token: token(t),
            })
        };
        let mut cases: Vec<(String, Vec<u8>, Result<AddUser, Malformed>)> = vec![
            (
                "basic".into(),
                br#"{"username":"alice","token":"tok-1"}"#.to_vec(),
                ok("alice", "tok-1"),
            ),
            (
                "unknown fields ignored".into(),
                body(
                    json!({"username": "alice", "token": "t", "platform": "ios", "streak": 9, "x": null}),
                ),
                ok("alice", "t"),
            ),
            (
                "RequestBody wrapper".into(),
                body(
                    json!({"RequestBody": {"username": "alice", "token": "t"}, "requestContext": {}}),
                ),
                ok("alice", "t"),
            ),
            (
                "RequestBody wrapper when top level lacks only the token".into(),
                body(
                    json!({"username": "outer", "RequestBody": {"username": "inner", "token": "t"}}),
                ),
                ok("inner", "t"),
            ),
            (
                "top level wins over RequestBody when complete".into(),
                body(
                    json!({"username": "outer", "token": "o", "RequestBody": {"username": "inner", "token": "i"}}),
                ),
                ok("outer", "o"),
            ),
            (
                "RequestBody that is not an object is ignored".into(),
                body(json!({"RequestBody": "{\"username\":\"alice\",\"token\":\"t\"}"})),
                Err(Malformed::MissingField("username")),
            ),
            (
                "RequestBody errors are reported".into(),
                body(json!({"RequestBody": {"username": "alice"}})),
                Err(Malformed::MissingField("token")),
            ),
            (
                "exactly 8192 bytes".into(),
                padded(json!({"username": "alice", "token": "t"}), MAX_BODY_BYTES),
                ok("alice", "t"),
            ),
            (
                "token 4096 chars".into(),
                body(json!({"username": "a", "token": "t".repeat(4096)})),
                ok("a", &"t".repeat(4096)),
            ),
            (
                "token 4096 multi-byte chars".into(),
                body(json!({"username": "a", "token": "é".repeat(1000)})),
                ok("a", &"é".repeat(1000)),
            ),
            (
                "token 4097 chars".into(),
                body(json!({"username": "a", "token": "t".repeat(4097)})),
                Err(Malformed::InvalidToken("longer than 4096 characters")),
            ),
            (
                "token empty".into(),
                body(json!({"username": "a", "token": ""})),
                Err(Malformed::InvalidToken("empty")),
            ),
            (
                "token number".into(),
                body(json!({"username": "a", "token": 7})),
                Err(wrong("token", "a string")),
            ),
            (
                "token object".into(),
                body(json!({"username": "a", "token": {}})),
                Err(wrong("token", "a string")),
            ),
            (
                "token null".into(),
                body(json!({"username": "a", "token": null})),
                Err(Malformed::MissingField("token")),
            ),
            (
                "token absent".into(),
                body(json!({"username": "a"})),
                Err(Malformed::MissingField("token")),
            ),
            (
                "username checked before token".into(),
                body(json!({"token": 1})),
                Err(Malformed::MissingField("username")),
            ),
        ];
        for (name, b, want) in username_cases(&json!({"token": "t"})) {
            let want = want.map(|u| AddUser {
                username: user(&u),
                token: token("t"),
            });
            cases.push((name, b, want));
        }
        for (name, b, err) in envelope_cases() {
            cases.push((name.into(), b, Err(err)));
        }
        cases
    }

    #[test]
    fn add_user_table() {
        for (name, b, want) in add_user_cases() {
            check(&name, parse_add_user(&b), want);
        }
    }

    // ---------------------------------------------------------------- press

    fn press_cases() -> Vec<(String, Vec<u8>, Result<Press, Malformed>)> {
        let ok = |u: &str| Ok(Press { username: user(u) });
        let mut cases: Vec<(String, Vec<u8>, Result<Press, Malformed>)> = vec![
            (
                "basic".into(),
                br#"{"username":"alice"}"#.to_vec(),
                ok("alice"),
            ),
            (
                "client streak, score and times ignored".into(),
                body(
                    json!({"username": "alice", "streak": 1000, "score": "lots", "time": 1, "timestamp": "x", "pressed_at_ms": -1}),
                ),
                ok("alice"),
            ),
            (
                "RequestBody wrapper".into(),
                body(json!({"RequestBody": {"username": "alice", "score": 5}})),
                ok("alice"),
            ),
            (
                "exactly 8192 bytes".into(),
                padded(json!({"username": "alice"}), MAX_BODY_BYTES),
                ok("alice"),
            ),
            (
                "exactly 8192 bytes of whitespace around the object".into(),
                {
                    let mut b = br#"{"username":"alice"}"#.to_vec();
                    b.resize(MAX_BODY_BYTES, b' ');
                    b
                },
                ok("alice"),
            ),
            (
                "empty object".into(),
                b"{}".to_vec(),
                Err(Malformed::MissingField("username")),
            ),
            (
                "escaped control character".into(),
                br#"{"username":"a\u0000b"}"#.to_vec(),
                Err(Malformed::InvalidUsername("contains a control character")),
            ),
            (
                "raw control character is not JSON".into(),
                b"{\"username\":\"a\x01b\"}".to_vec(),
                Err(not_json()),
            ),
        ];
        for (name, b, want) in username_cases(&json!({})) {
            cases.push((name, b, want.map(|u| Press { username: user(&u) })));
        }
        for (name, b, err) in envelope_cases() {
            cases.push((name.into(), b, Err(err)));
        }
        cases
    }

    #[test]
    fn press_table() {
        for (name, b, want) in press_cases() {
            check(&name, parse_press(&b), want);
        }
    }

    // ---------------------------------------------------------------- powerup

    fn powerup_cases() -> Vec<(String, Vec<u8>, Result<PowerupPurchase, Malformed>)> {
        use PowerupKind::{Extender, Freeze, Multiplier};
        let ok = |kind, level, request_id| {
            Ok(PowerupPurchase {
                username: user("alice"),
                powerup: powerup(kind, level),
                request_id,
            })
        };
        let buy = |extra: serde_json::Value| {
            let mut v = json!({"username": "alice", "powerUpType": "MULTIPLIER", "quantity": 2});
            for (k, val) in extra.as_object().unwrap() {
                if val.is_null() && k.starts_with('-') {
                    v.as_object_mut().unwrap().remove(&k[1..]);
                } else {
                    v[k] = val.clone();
                }
            }
            body(v)
        };
        let unknown_level = |kind, level: &str| {
            Err(Malformed::UnknownPowerupLevel {
                kind,
                level: level.into(),
            })
        };
        let mut cases: Vec<(String, Vec<u8>, Result<PowerupPurchase, Malformed>)> = vec![];
        for (t, kind, levels) in [
            (
                "FREEZE",
                Freeze,
                [json!(6), json!(12), json!(24), json!(48)],
            ),
            (
                "MULTIPLIER",
                Multiplier,
                [json!(2), json!(3), json!(5), json!(10)],
            ),
            (
                "EXTENDER",
                Extender,
                [json!(1.5), json!(2), json!(3), json!(5)],
            ),
        ] {
            for level in levels {
                let l = level.as_f64().unwrap();
                cases.push((
                    format!("{t} {level}"),
                    buy(json!({"powerUpType": t, "quantity": level})),
                    ok(kind, l, None),
                ));
            }
        }
        cases.extend([
            ("lowercase type".into(), buy(json!({"powerUpType": "freeze", "quantity": 6})), ok(Freeze, 6.0, None)),
            ("mixed-case type".into(), buy(json!({"powerUpType": "eXtEnDeR", "quantity": 1.5})), ok(Extender, 1.5, None)),
            ("level instead of quantity".into(), buy(json!({"-quantity": null, "level": 3})), ok(Multiplier, 3.0, None)),
            (
                "level when quantity is null".into(),
                buy(json!({"quantity": null, "level": 5})),
                ok(Multiplier, 5.0, None),
            ),
            ("quantity wins over level".into(), buy(json!({"quantity": 3, "level": 5})), ok(Multiplier, 3.0, None)),
            ("integer level as float".into(), buy(json!({"quantity": 2.0})), ok(Multiplier, 2.0, None)),
            ("exponent notation".into(), br#"{"username":"alice","powerUpType":"FREEZE","quantity":1.2e1}"#.to_vec(), ok(Freeze, 12.0, None)),
            (
                "unknown fields ignored".into(),
                buy(json!({"price": 1, "currency": "points", "expires": "never"})),
                ok(Multiplier, 2.0, None),
            ),
            (
                "RequestBody wrapper".into(),
                body(json!({"RequestBody": {"username": "alice", "powerUpType": "multiplier", "level": 2, "requestId": "r1"}})),
                ok(Multiplier, 2.0, rid("r1")),
            ),
            ("request_id string".into(), buy(json!({"request_id": "abc-1"})), ok(Multiplier, 2.0, rid("abc-1"))),
            ("requestId string".into(), buy(json!({"requestId": "abc-2"})), ok(Multiplier, 2.0, rid("abc-2"))),
            ("request_id integer".into(), buy(json!({"request_id": 42})), ok(Multiplier, 2.0, rid("42"))),
            ("request_id negative integer".into(), buy(json!({"request_id": -42})), ok(Multiplier, 2.0, rid("-42"))),
            ("request_id u64::MAX".into(), buy(json!({"request_id": u64::MAX})), ok(Multiplier, 2.0, rid("18446744073709551615"))),
            ("request_id null".into(), buy(json!({"request_id": null})), ok(Multiplier, 2.0, None)),
            ("request_id wins over requestId".into(), buy(json!({"request_id": "a", "requestId": "b"})), ok(Multiplier, 2.0, rid("a"))),
            ("requestId when request_id is null".into(), buy(json!({"request_id": null, "requestId": "b"})), ok(Multiplier, 2.0, rid("b"))),
            ("request_id 128 chars".into(), buy(json!({"request_id": "😀".repeat(128)})), ok(Multiplier, 2.0, rid(&"😀".repeat(128)))),
            (
                "request_id SQL metacharacters verbatim".into(),
                buy(json!({"request_id": "'; DROP TABLE purchases; --"})),
                ok(Multiplier, 2.0, rid("'; DROP TABLE purchases; --")),
            ),
            (
                "request_id 129 chars".into(),
                buy(json!({"request_id": "r".repeat(129)})),
                Err(Malformed::InvalidRequestId("longer than 128 characters")),
            ),
            ("request_id empty".into(), buy(json!({"request_id": ""})), Err(Malformed::InvalidRequestId("empty"))),
            (
                "request_id control".into(),
                buy(json!({"request_id": "r\u{0}"})),
                Err(Malformed::InvalidRequestId("contains a control character")),
            ),
            ("request_id float".into(), buy(json!({"request_id": 1.5})), Err(wrong("request_id", "a string or an integer"))),
            ("requestId bool".into(), buy(json!({"requestId": true})), Err(wrong("requestId", "a string or an integer"))),
            ("request_id object".into(), buy(json!({"request_id": {}})), Err(wrong("request_id", "a string or an integer"))),
            ("unknown type".into(), buy(json!({"powerUpType": "SHIELD"})), Err(Malformed::UnknownPowerupType("SHIELD".into()))),
            ("type with spaces".into(), buy(json!({"powerUpType": " FREEZE"})), Err(Malformed::UnknownPowerupType(" FREEZE".into()))),
            ("empty type".into(), buy(json!({"powerUpType": ""})), Err(Malformed::UnknownPowerupType(String::new()))),
            (
                "long unknown type truncated to 64 chars".into(),
                buy(json!({"powerUpType": "😀".repeat(100)})),
                Err(Malformed::UnknownPowerupType("😀".repeat(64))),
            ),
            ("type number".into(), buy(json!({"powerUpType": 1})), Err(wrong("powerUpType", "a string"))),
            ("type null".into(), buy(json!({"powerUpType": null})), Err(Malformed::MissingField("powerUpType"))),
            ("type absent".into(), buy(json!({"-powerUpType": null})), Err(Malformed::MissingField("powerUpType"))),
            ("quantity absent".into(), buy(json!({"-quantity": null})), Err(Malformed::MissingField("quantity"))),
            ("quantity and level null".into(), buy(json!({"quantity": null, "level": null})), Err(Malformed::MissingField("quantity"))),
            ("quantity string".into(), buy(json!({"quantity": "2"})), Err(wrong("quantity", "a number"))),
            ("quantity bool".into(), buy(json!({"quantity": true})), Err(wrong("quantity", "a number"))),
            ("level string".into(), buy(json!({"-quantity": null, "level": "3"})), Err(wrong("level", "a number"))),
            ("freeze 7".into(), buy(json!({"powerUpType": "FREEZE", "quantity": 7})), unknown_level(Freeze, "7")),
            ("multiplier 1.5".into(), buy(json!({"quantity": 1.5})), unknown_level(Multiplier, "1.5")),
            ("extender 1.49".into(), buy(json!({"powerUpType": "EXTENDER", "quantity": 1.49})), unknown_level(Extender, "1.49")),
            ("extender 1".into(), buy(json!({"powerUpType": "EXTENDER", "quantity": 1})), unknown_level(Extender, "1")),
            ("multiplier 0".into(), buy(json!({"quantity": 0})), unknown_level(Multiplier, "0")),
            ("multiplier -2".into(), buy(json!({"quantity": -2})), unknown_level(Multiplier, "-2")),
            ("multiplier 1e300".into(), buy(json!({"quantity": 1e300})), unknown_level(Multiplier, "1e+300")),
            ("multiplier u64::MAX".into(), buy(json!({"quantity": u64::MAX})), unknown_level(Multiplier, "18446744073709551615")),
            (
                "type checked before level".into(),
                buy(json!({"powerUpType": "SHIELD", "quantity": "x"})),
                Err(Malformed::UnknownPowerupType("SHIELD".into())),
            ),
            (
                "exactly 8192 bytes".into(),
                padded(json!({"username": "alice", "powerUpType": "MULTIPLIER", "quantity": 2}), MAX_BODY_BYTES),
                ok(Multiplier, 2.0, None),
            ),
        ]);
        for (name, b, want) in username_cases(&json!({"powerUpType": "MULTIPLIER", "quantity": 2}))
        {
            let want = want.map(|u| PowerupPurchase {
                username: user(&u),
                powerup: powerup(Multiplier, 2.0),
                request_id: None,
            });
            cases.push((name, b, want));
        }
        for (name, b, err) in envelope_cases() {
            cases.push((name.into(), b, Err(err)));
        }
        cases
    }

    #[test]
    fn powerup_table() {
        for (name, b, want) in powerup_cases() {
            check(&name, parse_powerup(&b), want);
        }
    }

    // ---------------------------------------------------------------- round

    fn round_cases() -> Vec<(String, Vec<u8>, Result<RoundAnnouncement, Malformed>)> {
        let ok = |id: &str, o: i64, c: i64| {
            Ok(RoundAnnouncement {
                round_id: id.into(),
                opens_at_ms: o,
                closes_at_ms: c,
                window_ms: None,
            })
        };
        let round = |extra: serde_json::Value| {
            let mut v = json!({"round_id": "r1", "opens_at_ms": 1000, "closes_at_ms": 61000});
            for (k, val) in extra.as_object().unwrap() {
                if val.is_null() && k.starts_with('-') {
                    v.as_object_mut().unwrap().remove(&k[1..]);
                } else {
                    v[k] = val.clone();
                }
            }
            body(v)
        };
        let times = |why| Err(Malformed::InvalidRoundTimes(why));
        let mut cases: Vec<(String, Vec<u8>, Result<RoundAnnouncement, Malformed>)> = vec![
            ("basic".into(), round(json!({})), ok("r1", 1000, 61000)),
            (
                "with its base window".into(),
                round(json!({"closes_at_ms": 91000, "window_ms": 60000})),
                Ok(RoundAnnouncement {
                    round_id: "r1".into(),
                    opens_at_ms: 1000,
                    closes_at_ms: 91000,
                    window_ms: Some(60000),
                }),
            ),
            (
                "window null is absent".into(),
                round(json!({"window_ms": null})),
                ok("r1", 1000, 61000),
            ),
            (
                "integer round_id".into(),
                round(json!({"round_id": 42})),
                ok("42", 1000, 61000),
            ),
            (
                "zero round_id".into(),
                round(json!({"round_id": 0})),
                ok("0", 1000, 61000),
            ),
            (
                "u64::MAX round_id".into(),
                round(json!({"round_id": u64::MAX})),
                ok("18446744073709551615", 1000, 61000),
            ),
            (
                "64-char round_id".into(),
                round(json!({"round_id": "é".repeat(64)})),
                ok(&"é".repeat(64), 1000, 61000),
            ),
            (
                "opens at zero".into(),
                round(json!({"opens_at_ms": 0})),
                ok("r1", 0, 61000),
            ),
            (
                "one ms window".into(),
                round(json!({"closes_at_ms": 1001})),
                ok("r1", 1000, 1001),
            ),
            (
                "i64::MAX close".into(),
                round(json!({"closes_at_ms": i64::MAX})),
                ok("r1", 1000, i64::MAX),
            ),
            (
                "unknown fields ignored".into(),
                round(json!({"fan_out_ms": 0, "seq": "x"})),
                ok("r1", 1000, 61000),
            ),
            (
                "RequestBody wrapper".into(),
                body(json!({"RequestBody": {"round_id": 7, "opens_at_ms": 5, "closes_at_ms": 6}})),
                ok("7", 5, 6),
            ),
            (
                "exactly 8192 bytes".into(),
                padded(
                    json!({"round_id": "r1", "opens_at_ms": 1000, "closes_at_ms": 61000}),
                    MAX_BODY_BYTES,
                ),
                ok("r1", 1000, 61000),
            ),
            (
                "round_id absent".into(),
                round(json!({"-round_id": null})),
                Err(Malformed::MissingField("round_id")),
            ),
            (
                "round_id null".into(),
                round(json!({"round_id": null})),
                Err(Malformed::MissingField("round_id")),
            ),
            (
                "round_id empty".into(),
                round(json!({"round_id": ""})),
                Err(Malformed::InvalidRoundId("empty")),
            ),
            (
                "round_id 65 chars".into(),
                round(json!({"round_id": "r".repeat(65)})),
                Err(Malformed::InvalidRoundId("longer than 64 characters")),
            ),
            (
                "round_id control".into(),
                round(json!({"round_id": "r\n1"})),
                Err(Malformed::InvalidRoundId("contains a control character")),
            ),
            (
                "round_id negative".into(),
                round(json!({"round_id": -1})),
                Err(Malformed::InvalidRoundId("negative")),
            ),
            (
                "round_id float".into(),
                round(json!({"round_id": 1.5})),
                Err(wrong("round_id", "a string or a non-negative integer")),
            ),
            (
                "round_id bool".into(),
                round(json!({"round_id": false})),
                Err(wrong("round_id", "a string or a non-negative integer")),
            ),
            (
                "opens absent".into(),
                round(json!({"-opens_at_ms": null})),
                Err(Malformed::MissingField("opens_at_ms")),
            ),
            (
                "closes null".into(),
                round(json!({"closes_at_ms": null})),
                Err(Malformed::MissingField("closes_at_ms")),
            ),
            (
                "window zero".into(),
                round(json!({"window_ms": 0})),
                times("window_ms must be positive and at most closes_at_ms - opens_at_ms"),
            ),
            (
                "window longer than the round".into(),
                round(json!({"window_ms": 60_001})),
                times("window_ms must be positive and at most closes_at_ms - opens_at_ms"),
            ),
            (
                "window float".into(),
                round(json!({"window_ms": 1.5})),
                Err(wrong("window_ms", "an integer")),
            ),
            (
                "opens float".into(),
                round(json!({"opens_at_ms": 1000.5})),
                Err(wrong("opens_at_ms", "an integer")),
            ),
            (
                "opens integral float".into(),
                br#"{"round_id":"r1","opens_at_ms":1000.0,"closes_at_ms":61000}"#.to_vec(),
                Err(wrong("opens_at_ms", "an integer")),
            ),
            (
                "closes exponent".into(),
                br#"{"round_id":"r1","opens_at_ms":1000,"closes_at_ms":6.1e4}"#.to_vec(),
                Err(wrong("closes_at_ms", "an integer")),
            ),
            (
                "opens string".into(),
                round(json!({"opens_at_ms": "1000"})),
                Err(wrong("opens_at_ms", "an integer")),
            ),
            (
                "opens negative".into(),
                round(json!({"opens_at_ms": -1})),
                times("negative time"),
            ),
            (
                "both negative".into(),
                round(json!({"opens_at_ms": -10, "closes_at_ms": -5})),
                times("negative time"),
            ),
            (
                "closes equals opens".into(),
                round(json!({"closes_at_ms": 1000})),
                times("closes_at_ms must be after opens_at_ms"),
            ),
            (
                "closes before opens".into(),
                round(json!({"closes_at_ms": 999})),
                times("closes_at_ms must be after opens_at_ms"),
            ),
            (
                "closes beyond i64".into(),
                round(json!({"closes_at_ms": i64::MAX as u64 + 1})),
                times("time out of range"),
            ),
        ];
        for (name, b, err) in envelope_cases() {
            cases.push((name.into(), b, Err(err)));
        }
        cases
    }

    #[test]
    fn round_table() {
        for (name, b, want) in round_cases() {
            check(&name, parse_round(&b), want);
        }
    }

    #[test]
    fn round_announcement_round_trips_through_json() {
        let round = RoundAnnouncement {
            round_id: "42".into(),
            opens_at_ms: 1_700_000_000_000,
            closes_at_ms: 1_700_000_060_000,
            window_ms: None,
        };
        let text = round.to_json();
        assert_eq!(
            text,
            r#"{"round_id":"42","opens_at_ms":1700000000000,"closes_at_ms":1700000060000}"#
        );
        assert_eq!(parse_round(text.as_bytes()), Ok(round));
    }

    // ---------------------------------------------------------------- across queues

    #[test]
    fn tables_cover_every_malformed_variant() {
        let mut codes = BTreeSet::new();
        for (name, b, want) in add_user_cases() {
            codes.extend(check(&name, parse_add_user(&b), want));
        }
        for (name, b, want) in press_cases() {
            codes.extend(check(&name, parse_press(&b), want));
        }
        for (name, b, want) in powerup_cases() {
            codes.extend(check(&name, parse_powerup(&b), want));
        }
        for (name, b, want) in round_cases() {
            codes.extend(check(&name, parse_round(&b), want));
        }
        let all: BTreeSet<&str> = [
            "too_large",
            "not_utf8",
            "not_json",
            "not_object",
            "missing_field",
            "wrong_type",
            "invalid_username",
            "invalid_token",
            "invalid_request_id",
            "invalid_round_id",
            "unknown_powerup_type",
            "unknown_powerup_level",
            "invalid_round_times",
        ]
        .into();
        assert_eq!(codes, all);
    }

    #[test]
    fn malformed_display_is_short_and_code_is_snake_case() {
        let samples = [
            Malformed::TooLarge { bytes: 9000 },
            Malformed::NotUtf8,
            Malformed::NotJson("EOF while parsing an object at line 1 column 1".into()),
            Malformed::NotObject,
            Malformed::MissingField("username"),
            wrong("quantity", "a number"),
            Malformed::InvalidUsername("empty"),
            Malformed::InvalidToken("empty"),
            Malformed::InvalidRequestId("empty"),
            Malformed::InvalidRoundId("empty"),
            Malformed::UnknownPowerupType("SHIELD\n".into()),
            Malformed::UnknownPowerupLevel {
                kind: PowerupKind::Freeze,
                level: "7".into(),
            },
            Malformed::InvalidRoundTimes("negative time"),
        ];
        for m in samples {
            let text = m.to_string();
            assert!(!text.is_empty() && text.chars().count() <= 300, "{text}");
            assert!(
                !text.chars().any(char::is_control),
                "control character in {text:?}"
            );
            assert!(
                m.code()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            );
        }
        assert_eq!(
            Malformed::UnknownPowerupLevel {
                kind: PowerupKind::Extender,
                level: "1.49".into()
            }
            .to_string(),
            "unknown EXTENDER level 1.49"
        );
        assert_eq!(
            Malformed::MissingField("token").to_string(),
            "missing field `token`"
        );
        assert_eq!(
            Malformed::TooLarge { bytes: 8193 }.to_string(),
            "body is 8193 bytes, more than the 8192 allowed"
        );
    }

    #[test]
    fn not_json_text_is_truncated_to_200_chars() {
        // serde_json's own messages are short; the cap holds for any error text.
        let long = "x".repeat(500);
        assert_eq!(truncate_chars(&long, MAX_JSON_ERROR_CHARS).len(), 200);
        assert_eq!(truncate_chars("😀😀😀", 2), "😀😀");
        assert_eq!(truncate_chars("ab", 5), "ab");
        for (name, b, _) in envelope_cases() {
            if let Err(Malformed::NotJson(text)) = parse_press(&b) {
                assert!(text.chars().count() <= 200, "{name}");
            }
        }
    }

    #[test]
    fn push_token_is_redacted_in_debug_and_display() {
        let secret = "SECRET-arn-token-0123456789abcdef";
        let t = token(secret);
        assert_eq!(t.expose(), secret);
        assert_eq!(format!("{t:?}"), "[redacted]");
        assert_eq!(format!("{t}"), "[redacted]");
        let msg = parse_add_user(&body(json!({"username": "alice", "token": secret}))).unwrap();
        assert_eq!(msg.token.expose(), secret);
        assert!(!format!("{msg:?}").contains(secret));
        assert!(!format!("{msg:#?}").contains("SECRET"));
    }

    #[test]
    fn no_malformed_display_contains_the_token() {
        let secret = "SECRETTOKEN0123456789abcdefSECRET";
        let long_secret = format!("{secret}{}", "z".repeat(4096));
        let bodies: Vec<Vec<u8>> = vec![
            body(json!({"username": "", "token": secret})),
            body(json!({"username": "a\u{0}", "token": secret})),
            body(json!({"username": 5, "token": secret})),
            body(json!({"token": secret})),
            body(json!({"username": "alice", "token": long_secret})),
            body(json!({"username": "alice", "token": [secret]})),
            body(json!({"username": "alice", "token": {"value": secret}})),
            body(json!({"RequestBody": {"token": secret}})),
            format!(r#"{{"username":"alice","token":"{secret}"#).into_bytes(),
            format!(r#"{{"username":"alice","token":"{secret}\q"}}"#).into_bytes(),
            format!(r#"{{"username":"alice","token":{secret}}}"#).into_bytes(),
            format!(r#"{{"username":"alice","token":"{secret}"}} trailing"#).into_bytes(),
            format!(r#"["{secret}"]"#).into_bytes(),
            [
                format!(r#"{{"username":"alice","token":"{secret}"#).as_bytes(),
                &b"\xff\"}"[..],
            ]
            .concat(),
            padded(
                json!({"username": "alice", "token": secret}),
                MAX_BODY_BYTES + 1,
            ),
        ];
        for b in bodies {
            let err = parse_add_user(&b).expect_err("malformed");
            for text in [err.to_string(), format!("{err:?}"), err.code().to_owned()] {
                assert!(!text.contains(secret), "token leaked: {text}");
                assert!(!text.contains("SECRETTOKEN"), "token prefix leaked: {text}");
            }
        }
    }

    #[test]
    fn username_accessors() {
        let u = user("'; DROP TABLE users; --");
        assert_eq!(u.as_str(), "'; DROP TABLE users; --");
        assert_eq!(u.to_string(), "'; DROP TABLE users; --");
        assert_eq!(AsRef::<str>::as_ref(&u), "'; DROP TABLE users; --");
        assert_eq!(u.clone().into_inner(), "'; DROP TABLE users; --");
        assert!(user("alice") < user("bob"));
        assert_eq!(
            Username::parse(String::new()),
            Err(Malformed::InvalidUsername("empty"))
        );
        assert_eq!(rid("7").unwrap().as_str(), "7");
        assert_eq!(rid("7").unwrap().to_string(), "7");
    }

    // ---------------------------------------------------------------- properties

    /// Strings of arbitrary Unicode scalar values, control characters included.
    fn any_string(max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(any::<char>(), 0..=max).prop_map(|v| v.into_iter().collect())
    }

    /// 1–128 characters, none of them control.
    fn valid_username() -> impl Strategy<Value = String> {
        prop::collection::vec(
            any::<char>().prop_filter("no control", |c| !c.is_control()),
            1..=128,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    /// Arbitrary JSON leaves and small containers, for fields of otherwise plausible bodies.
    fn any_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            prop::sample::select(vec![1.5, 2.0, 3.0, 5.0, 6.0, 10.0, 12.0, 24.0, 48.0])
                .prop_map(serde_json::Value::from),
            prop::sample::select(vec!["FREEZE", "multiplier", "Extender", "x", ""])
                .prop_map(serde_json::Value::from),
            any_string(140).prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(2, 8, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-z]{1,3}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    const FIELDS: [&str; 13] = [
        "username",
        "token",
        "powerUpType",
        "quantity",
        "level",
        "request_id",
        "requestId",
        "round_id",
        "opens_at_ms",
        "closes_at_ms",
        "RequestBody",
        "streak",
        "other",
    ];

    fn parse_all(b: &[u8]) {
        let _ = parse_add_user(b);
        let _ = parse_press(b);
        let _ = parse_powerup(b);
        let _ = parse_round(b);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..9000)) {
            parse_all(&b);
        }

        #[test]
        fn arbitrary_json_like_text_never_panics(s in r#"[{}\[\]":,0-9a-zA-Z_ .eE+\-\\]{0,300}"#) {
            parse_all(s.as_bytes());
        }

        #[test]
        fn arbitrary_objects_with_known_fields_never_panic(
            fields in prop::collection::btree_map(prop::sample::select(FIELDS.to_vec()), any_json(), 0..8),
            wrap in any::<bool>(),
        ) {
            let obj = serde_json::Value::Object(
                fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            );
            let v = if wrap { json!({"RequestBody": obj}) } else { obj };
            let b = body(v);
            parse_all(&b);
            if let Err(e) = parse_add_user(&b) {
                prop_assert!(!e.to_string().is_empty());
            }
        }

        #[test]
        fn valid_usernames_round_trip_exactly(name in valid_username()) {
            prop_assert_eq!(Username::parse(name.clone()).map(Username::into_inner), Ok(name.clone()));
            let press = parse_press(&body(json!({"username": name}))).unwrap();
            prop_assert_eq!(press.username.as_str(), name.as_str());
            let add = parse_add_user(&body(json!({"username": name, "token": "t"}))).unwrap();
            prop_assert_eq!(add.username.as_str(), name.as_str());
            let buy = parse_powerup(&body(json!({"username": name, "powerUpType": "FREEZE", "level": 6})))
                .unwrap();
            prop_assert_eq!(buy.username.into_inner(), name);
        }

        #[test]
        fn arbitrary_usernames_parse_to_themselves_or_are_invalid(name in any_string(140)) {
            let valid = (1..=128).contains(&name.chars().count()) && !name.chars().any(char::is_control);
            match Username::parse(name.clone()) {
                Ok(u) => {
                    prop_assert!(valid);
                    prop_assert_eq!(u.as_str(), name.as_str());
                }
                Err(e) => {
                    prop_assert!(!valid);
                    prop_assert!(matches!(e, Malformed::InvalidUsername(_)), "{:?}", e);
                }
            }
            match parse_press(&body(json!({"username": name}))) {
                Ok(p) => prop_assert_eq!(p.username.as_str(), name.as_str()),
                Err(e) => prop_assert!(matches!(e, Malformed::InvalidUsername(_)), "{:?}", e),
            }
        }

        #[test]
        fn tokens_never_appear_in_malformed_display(
            secret in "[A-Za-z0-9:/_-]{24,64}",
            username in any_json(),
            pad in 0usize..9000,
        ) {
            let secret = format!("tok{secret}");
            let b = body(json!({"username": username, "token": secret, "pad": "p".repeat(pad)}));
            if let Err(e) = parse_add_user(&b) {
                prop_assert!(!e.to_string().contains(&secret));
                let debug = format!("{e:?}");
                prop_assert!(!debug.contains(&secret));
            }
        }

        #[test]
        fn request_id_integer_and_string_forms_agree(n in any::<i64>()) {
            let as_int = parse_powerup(&body(json!({"username": "a", "powerUpType": "FREEZE", "quantity": 6, "request_id": n})));
            let as_str = parse_powerup(&body(json!({"username": "a", "powerUpType": "FREEZE", "quantity": 6, "request_id": n.to_string()})));
            prop_assert_eq!(as_int, as_str);
        }

        #[test]
        fn round_announcements_round_trip(
            id in "[a-zA-Z0-9-]{1,64}",
            opens in 0i64..i64::MAX,
            len in 1i64..1_000_000,
            window in prop::option::of(1i64..1_000_000),
        ) {
            let window_ms = window.map(|w| w.min(len));
            let round = RoundAnnouncement { round_id: id, opens_at_ms: opens, closes_at_ms: opens.saturating_add(len), window_ms };
            prop_assume!(round.closes_at_ms > round.opens_at_ms);
            prop_assert_eq!(parse_round(round.to_json().as_bytes()), Ok(round));
        }
    }
}
