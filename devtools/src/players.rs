//! Simulated players: their names, their fake push tokens and the queue message bodies they send,
//! exactly the JSON objects API Gateway enqueues (SPEC §4).

use buttonparty::rules::Powerup;
use serde_json::json;

/// The simulated players `1..=count`, named `<prefix><number>` with the number zero-padded to at
/// least four digits (`sim-0001`, `sim-0002`, ...), so that names sort in numeric order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Players {
    prefix: String,
    count: usize,
    width: usize,
}

impl Players {
    /// `count` players named with `prefix`.
    pub fn new(prefix: impl Into<String>, count: usize) -> Self {
        let width = count.to_string().len().max(4);
        Self {
            prefix: prefix.into(),
            count,
            width,
        }
    }

    /// How many players there are.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are no players.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The name prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The name of player `index` (0-based; player 0 is `<prefix>0001`).
    pub fn name(&self, index: usize) -> String {
        format!("{}{:0width$}", self.prefix, index + 1, width = self.width)
    }

    /// Every name, in order.
    pub fn names(&self) -> impl Iterator<Item = String> + '_ {
        (0..self.count).map(|i| self.name(i))
    }
}

/// A fake FCM push token for `username`, shaped like `fake-fcm-token-<uuid>`. It is derived from
/// the name, so re-registering a player sends the same token (and changes nothing, SPEC §4).
pub fn fake_token(username: &str) -> String {
    let a = fnv1a64(username.as_bytes(), 0xcbf2_9ce4_8422_2325);
    let b = fnv1a64(username.as_bytes(), a ^ 0x9e37_79b9_7f4a_7c15);
    format!(
        "fake-fcm-token-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// FNV-1a, 64 bits, from a given basis.
fn fnv1a64(bytes: &[u8], basis: u64) -> u64 {
    bytes.iter().fold(basis, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Body of an add-user message: `{"username": S, "token": T}`.
pub fn add_user_body(username: &str, token: &str) -> String {
    json!({ "username": username, "token": token }).to_string()
}

/// Body of a press message: `{"username": S}`.
pub fn press_body(username: &str) -> String {
    json!({ "username": username }).to_string()
}

/// Body of a powerup purchase:
/// `{"username": S, "powerUpType": P, "quantity": Q, "request_id": R}`. Whole levels are sent as
/// JSON integers (`6`), the extender's 1.5 as a decimal, as the app does.
pub fn powerup_body(username: &str, powerup: Powerup, request_id: &str) -> String {
    let halves = powerup.level_halves();
    let quantity = if halves.is_multiple_of(2) {
        json!(halves / 2)
    } else {
        json!(powerup.level())
    };
    json!({
        "username": username,
        "powerUpType": powerup.kind.as_str(),
        "quantity": quantity,
        "request_id": request_id,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use buttonparty::messages::{parse_add_user, parse_powerup, parse_press};

    use super::*;

    #[test]
    fn names_are_padded_unique_and_sorted() {
        let p = Players::new("sim-", 300);
        assert_eq!(p.name(0), "sim-0001");
        assert_eq!(p.name(299), "sim-0300");
        let names: Vec<_> = p.names().collect();
        assert_eq!(names.len(), 300);
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, names);
        assert_eq!(Players::new("p", 12_345).name(6), "p00007");
    }

    #[test]
    fn tokens_are_stable_distinct_and_uuid_shaped() {
        assert_eq!(fake_token("sim-0001"), fake_token("sim-0001"));
        let tokens: HashSet<_> = Players::new("sim-", 2000)
            .names()
            .map(|n| fake_token(&n))
            .collect();
        assert_eq!(tokens.len(), 2000);
        let t = fake_token("x");
        let uuid = t.strip_prefix("fake-fcm-token-").unwrap();
        let groups: Vec<_> = uuid.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{t}");
    }

    #[test]
    fn bodies_parse_with_the_handlers_parsers() {
        let name = "'; DROP TABLE users; -- ☃";
        let add = parse_add_user(add_user_body(name, &fake_token(name)).as_bytes()).unwrap();
        assert_eq!(add.username.as_str(), name);
        assert_eq!(add.token.expose(), fake_token(name));
        assert_eq!(
            parse_press(press_body(name).as_bytes())
                .unwrap()
                .username
                .as_str(),
            name
        );
        for powerup in Powerup::all() {
            let body = powerup_body(name, powerup, "r-1");
            let parsed = parse_powerup(body.as_bytes()).unwrap();
            assert_eq!(parsed.powerup, powerup, "{body}");
            assert_eq!(parsed.request_id.unwrap().as_str(), "r-1");
        }
        assert!(powerup_body("a", Powerup::all().next().unwrap(), "r").contains("\"quantity\":6"));
    }
}
