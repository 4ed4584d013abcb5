//! Verified identity (`BUTTONPARTY_IDENTITY_ATTRIBUTE`): when set, the player is the value of that
//! SQS message attribute — which API Gateway fills from the JWT authorizer's verified claims —
//! and any username in the body is ignored. A message without the attribute is malformed.

use std::borrow::Cow;

use buttonparty::messages::{MAX_BODY_BYTES, Malformed, Username};

use crate::queue::Message;

/// The body to parse: the message's own, or, in identity mode, the body with `username` replaced
/// by the verified identity.
pub fn body<'m>(attribute: Option<&str>, msg: &'m Message) -> Result<Cow<'m, str>, Malformed> {
    let Some(attribute) = attribute else {
        return Ok(Cow::Borrowed(&msg.body));
    };
    if msg.body.len() > MAX_BODY_BYTES {
        return Err(Malformed::TooLarge {
            bytes: msg.body.len(),
        });
    }
    let identity = msg
        .attributes
        .get(attribute)
        .ok_or(Malformed::MissingField("identity message attribute"))?;
    let identity = Username::parse(identity.as_str())?;
    let mut value: serde_json::Value =
        serde_json::from_str(&msg.body).map_err(|e| Malformed::NotJson(truncate(e.to_string())))?;
    let obj = value.as_object_mut().ok_or(Malformed::NotObject)?;
    let name = serde_json::Value::String(identity.into_inner());
    if let Some(inner) = obj.get_mut("RequestBody").and_then(|v| v.as_object_mut()) {
        inner.insert("username".into(), name.clone());
    }
    obj.insert("username".into(), name);
    Ok(Cow::Owned(value.to_string()))
}

fn truncate(mut s: String) -> String {
    if s.len() > 200 {
        let mut cut = 200;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use buttonparty::messages::{parse_add_user, parse_press};
    use std::collections::HashMap;
    use tokio::time::Instant;

    fn msg(body: &str, attrs: &[(&str, &str)]) -> Message {
        Message {
            message_id: "m".into(),
            receipt_handle: "r".into(),
            body: body.into(),
            sent_at_ms: 0,
            received_at: Instant::now(),
            receive_count: 1,
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
        }
    }

    #[test]
    fn without_identity_mode_the_body_is_used_as_is() {
        let m = msg(r#"{"username":"alice"}"#, &[]);
        assert_eq!(body(None, &m).unwrap(), r#"{"username":"alice"}"#);
    }

    #[test]
    fn identity_attribute_replaces_the_body_username() {
        let m = msg(r#"{"username":"mallory"}"#, &[("sub", "alice-sub")]);
        let b = body(Some("sub"), &m).unwrap();
        assert_eq!(
            parse_press(b.as_bytes()).unwrap().username.as_str(),
            "alice-sub"
        );
        // A body without any username is fine in identity mode.
        let m = msg(r#"{"token":"t"}"#, &[("sub", "bob-sub")]);
        let b = body(Some("sub"), &m).unwrap();
        assert_eq!(
            parse_add_user(b.as_bytes()).unwrap().username.as_str(),
            "bob-sub"
        );
        // The original app's wrapper too.
        let m = msg(
            r#"{"RequestBody":{"username":"mallory","token":"t"}}"#,
            &[("sub", "carol")],
        );
        let b = body(Some("sub"), &m).unwrap();
        assert_eq!(
            parse_add_user(b.as_bytes()).unwrap().username.as_str(),
            "carol"
        );
    }

    #[test]
    fn a_message_without_the_attribute_is_malformed() {
        let m = msg(r#"{"username":"mallory"}"#, &[("other", "x")]);
        assert!(matches!(
            body(Some("sub"), &m),
            Err(Malformed::MissingField(_))
        ));
    }

    #[test]
    fn an_invalid_identity_is_malformed() {
        let m = msg(r#"{"username":"x"}"#, &[("sub", "")]);
        assert!(matches!(
            body(Some("sub"), &m),
            Err(Malformed::InvalidUsername(_))
        ));
        let m = msg("not json", &[("sub", "a")]);
        assert!(matches!(body(Some("sub"), &m), Err(Malformed::NotJson(_))));
    }
}
