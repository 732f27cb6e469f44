//! From a Segment message to a Spindle record.
//!
//! Validation (a refused message gets one of these codes):
//! - `unknown_type`: in a batch, `type` is missing or not one of identify, track, page, screen, group, alias
//!   (a single call's type is its endpoint's);
//! - `missing_user_id`: neither `userId` nor `anonymousId` (null and empty count as missing); for `alias`,
//!   `userId` is required and `missing_previous_id` is given without `previousId`;
//! - `missing_event`: a `track` without a non-empty `event`; `missing_group_id`: a `group` without `groupId`;
//! - `invalid_timestamp`: `timestamp`, `originalTimestamp` or `sentAt` present but not an ISO-8601 string
//!   (one without a zone is taken as UTC);
//! - `invalid_field`: `traits`, `properties` or `context` present but not an object, or an id that is
//!   neither a string nor a number.
//!
//! Mapping (one record per message, in stream = the message type, keyed by `messageId`):
//! - identifiers: `userId` → `user_id`, `anonymousId` → `anonymous_id`; `identify` adds `email` and `phone`
//!   from its traits; `group` adds `group_id`; `alias` gives `userId` → `user_id` and `previousId` →
//!   `anonymous_id`, so the two resolve into one profile when `anonymous_id` is in `[identity] link_on`.
//! - traits: `identify` keeps `context.traits` overlaid by `traits` (RudderStack's Python library sends
//!   traits only in `context.traits`), keys in snake_case (`firstName` → `first_name`) to match the other
//!   sources; `group` gives `group_id` and `group` (the group's traits).
//! - events: `track` → the event named in snake_case (`Order Completed` → `order_completed`, matching
//!   Spindle's other sources); `page` → `page_viewed`, `screen` → `screen_viewed` with `name` and `category`
//!   added to the properties. A client-sent timestamp is kept as the `original_timestamp` property.
//! - time: `receivedAt` is when the request arrived. With `sentAt` (on the message or the batch) and a
//!   timestamp, the event time is `receivedAt − (sentAt − timestamp)` (Segment's clock-skew correction);
//!   with only a timestamp, the timestamp; otherwise `receivedAt`. The record's `updated_at` is that time,
//!   its `version` the receive time in milliseconds; times keep millisecond precision.
//! - a message without `messageId` gets `spindle-<receivedAt ms>-<random>`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use spindle_model::{Event, Identifier, RawRecord};

use super::body::{Endpoint, MessageType};

/// Why a message was refused: a stable code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Stable code.
    pub code: &'static str,
    /// For people.
    pub message: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// An id field: a non-empty string or a number, as text; `None` when absent, null or empty.
fn id_field(message: &Map<String, Value>, name: &str) -> Result<Option<String>, Refusal> {
    match message.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(refuse(
            "invalid_field",
            format!("`{name}` must be a string or a number"),
        )),
    }
}

/// Takes an object field out of the message; `None` when absent or null.
fn take_object(
    message: &mut Map<String, Value>,
    name: &str,
) -> Result<Option<Map<String, Value>>, Refusal> {
    match message.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(refuse(
            "invalid_field",
            format!("`{name}` must be an object"),
        )),
    }
}

/// Parses an ISO-8601 timestamp (`2025-01-02T03:04:05.000Z`, `+00:00`, any fraction); one without a zone
/// (`2025-01-02T03:04:05.123`) is taken as UTC.
fn timestamp(value: Option<&Value>, name: &str) -> Result<Option<DateTime<Utc>>, Refusal> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => {
            let text = text.trim();
            DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&Utc))
                .or_else(|_| {
                    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                        .map(|t| t.and_utc())
                })
                .map(Some)
                .map_err(|_| {
                    refuse(
                        "invalid_timestamp",
                        format!(
                            "`{name}` is not an ISO-8601 timestamp such as 2025-01-02T03:04:05.000Z"
                        ),
                    )
                })
        }
        Some(_) => Err(refuse(
            "invalid_timestamp",
            format!("`{name}` must be an ISO-8601 string"),
        )),
    }
}

/// `Order Completed` → `order_completed`, `firstName` → `first_name`.
pub fn snake_case(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    let mut previous_lower = false;
    for c in text.trim().chars() {
        if c.is_alphanumeric() {
            if c.is_uppercase() && previous_lower && !out.ends_with('_') {
                out.push('_');
            }
            previous_lower = c.is_lowercase() || c.is_ascii_digit();
            out.extend(c.to_lowercase());
        } else {
            previous_lower = false;
            if !out.is_empty() && !out.ends_with('_') {
                out.push('_');
            }
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

fn snake_keys(map: Map<String, Value>, into: &mut BTreeMap<String, Value>) {
    for (key, value) in map {
        let key = snake_case(&key);
        if !key.is_empty() {
            into.insert(key, value);
        }
    }
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The message's type: the endpoint's for a single call, its `type` field in a batch.
fn message_type(endpoint: Endpoint, message: &Map<String, Value>) -> Result<MessageType, Refusal> {
    match endpoint {
        Endpoint::Single(kind) => Ok(kind),
        Endpoint::Batch => match message.get("type") {
            Some(Value::String(text)) => MessageType::parse(text).ok_or_else(|| {
                refuse(
                    "unknown_type",
                    format!(
                        "unknown message type `{}`; expected identify, track, page, screen, group or alias",
                        text.chars().take(40).collect::<String>()
                    ),
                )
            }),
            _ => Err(refuse(
                "unknown_type",
                "a batch message needs a `type`: identify, track, page, screen, group or alias",
            )),
        },
    }
}

/// Validates one message and builds its record (moving its values); `received_at` is when the request
/// arrived.
pub fn to_record(
    endpoint: Endpoint,
    mut message: Map<String, Value>,
    batch_sent_at: Option<&Value>,
    received_at: DateTime<Utc>,
) -> Result<RawRecord, Refusal> {
    let message = &mut message;
    let kind = message_type(endpoint, message)?;
    let user_id = id_field(message, "userId")?;
    let anonymous_id = id_field(message, "anonymousId")?;
    let context = take_object(message, "context")?;
    let traits = take_object(message, "traits")?;
    let properties = take_object(message, "properties")?;

    // Time: Segment's clock-skew correction.
    let sent_at = match message.get("sentAt") {
        Some(value) if !value.is_null() => timestamp(Some(value), "sentAt")?,
        _ => timestamp(batch_sent_at, "sentAt")?,
    };
    let original = match timestamp(message.get("timestamp"), "timestamp")? {
        Some(t) => Some(t),
        None => timestamp(message.get("originalTimestamp"), "originalTimestamp")?,
    };
    let occurred_at = match (original, sent_at) {
        (Some(original), Some(sent)) => received_at
            .checked_sub_signed(sent.signed_duration_since(original))
            .unwrap_or(received_at),
        (Some(original), None) => original,
        (None, _) => received_at,
    };
    let occurred_at = chrono::SubsecRound::trunc_subsecs(occurred_at, 3);

    let mut identifiers = Vec::new();
    let mut record_traits = BTreeMap::new();
    let mut events = Vec::new();
    match kind {
        MessageType::Alias => {
            let user_id = user_id.clone().ok_or_else(|| {
                refuse(
                    "missing_user_id",
                    "an alias needs `userId` and `previousId`",
                )
            })?;
            let previous = id_field(message, "previousId")?.ok_or_else(|| {
                refuse(
                    "missing_previous_id",
                    "an alias needs `userId` and `previousId`",
                )
            })?;
            identifiers.push(Identifier::new("user_id", user_id));
            identifiers.push(Identifier::new("anonymous_id", previous));
        }
        _ => {
            if user_id.is_none() && anonymous_id.is_none() {
                return Err(refuse(
                    "missing_user_id",
                    "a message needs `userId` or `anonymousId`",
                ));
            }
            if let Some(id) = &user_id {
                identifiers.push(Identifier::new("user_id", id.clone()));
            }
            if let Some(id) = &anonymous_id {
                identifiers.push(Identifier::new("anonymous_id", id.clone()));
            }
        }
    }
    let event_properties = || {
        let mut props = BTreeMap::new();
        if let Some(properties) = properties {
            props.extend(properties);
        }
        if let Some(original) = original {
            props.insert(
                "original_timestamp".to_owned(),
                Value::String(original.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            );
        }
        props
    };
    match kind {
        MessageType::Identify => {
            if let Some(mut context) = context
                && let Some(context_traits) = take_object(&mut context, "traits")?
            {
                snake_keys(context_traits, &mut record_traits);
            }
            if let Some(traits) = traits {
                snake_keys(traits, &mut record_traits);
            }
            for kind in ["email", "phone"] {
                if let Some(value) = record_traits.get(kind).and_then(text_of) {
                    identifiers.push(Identifier::new(kind, value));
                }
            }
        }
        MessageType::Track => {
            let name = match message.get("event") {
                Some(Value::String(name)) => snake_case(name),
                _ => String::new(),
            };
            if name.is_empty() {
                return Err(refuse(
                    "missing_event",
                    "a track message needs an `event` name",
                ));
            }
            events.push(Event {
                name,
                occurred_at,
                properties: event_properties(),
            });
        }
        MessageType::Page | MessageType::Screen => {
            let mut props = event_properties();
            for field in ["name", "category"] {
                if let Some(value) = message.remove(field).filter(|v| !v.is_null()) {
                    props.insert(field.to_owned(), value);
                }
            }
            let name = if kind == MessageType::Page {
                "page_viewed"
            } else {
                "screen_viewed"
            };
            events.push(Event {
                name: name.to_owned(),
                occurred_at,
                properties: props,
            });
        }
        MessageType::Group => {
            let group_id = id_field(message, "groupId")?
                .ok_or_else(|| refuse("missing_group_id", "a group message needs `groupId`"))?;
            identifiers.push(Identifier::new("group_id", group_id.clone()));
            record_traits.insert("group_id".to_owned(), Value::String(group_id));
            if let Some(traits) = traits {
                record_traits.insert("group".to_owned(), Value::Object(traits));
            }
        }
        MessageType::Alias => {}
    }

    let received_ms = received_at.timestamp_millis();
    let external_id = match id_field(message, "messageId")? {
        Some(id) => id,
        None => format!("spindle-{received_ms}-{:032x}", rand::random::<u128>()),
    };
    Ok(RawRecord {
        stream: kind.as_str().to_owned(),
        external_id,
        version: received_ms,
        updated_at: Some(occurred_at),
        deleted: false,
        identifiers,
        traits: record_traits,
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn names_become_snake_case() {
        assert_eq!(snake_case("Order Completed"), "order_completed");
        assert_eq!(snake_case("firstName"), "first_name");
        assert_eq!(snake_case("  Signed-Up!  "), "signed_up");
        assert_eq!(snake_case("page_viewed"), "page_viewed");
        assert_eq!(snake_case("HTTPRequest"), "httprequest");
        assert_eq!(snake_case("!!!"), "");
    }

    #[test]
    fn skew_is_corrected_with_sent_at() {
        // The client's clock is 1 hour ahead; the event happened 5 s before it was sent.
        let message = object(json!({
            "type": "track", "userId": "u1", "event": "Clicked", "messageId": "m1",
            "timestamp": "2025-01-02T04:00:00.000Z", "sentAt": "2025-01-02T04:00:05.000Z"
        }));
        let received = at("2025-01-02T03:00:10Z");
        let record = to_record(Endpoint::Batch, message.clone(), None, received).unwrap();
        assert_eq!(record.events[0].occurred_at, at("2025-01-02T03:00:05Z"));
        assert_eq!(
            record.events[0].properties["original_timestamp"],
            json!("2025-01-02T04:00:00.000Z")
        );
        assert_eq!(record.version, received.timestamp_millis());
        // Without sentAt the timestamp is kept as sent; the batch's sentAt applies otherwise.
        let mut naive = message.clone();
        naive.insert("timestamp".into(), json!("2025-01-02T04:00:00.250"));
        naive.remove("sentAt");
        let record = to_record(Endpoint::Batch, naive, None, received).unwrap();
        assert_eq!(record.events[0].occurred_at, at("2025-01-02T04:00:00.250Z"));
        let mut no_sent = message.clone();
        no_sent.remove("sentAt");
        let record = to_record(Endpoint::Batch, no_sent.clone(), None, received).unwrap();
        assert_eq!(record.events[0].occurred_at, at("2025-01-02T04:00:00Z"));
        let batch_sent = json!("2025-01-02T04:00:05+00:00");
        let record = to_record(Endpoint::Batch, no_sent, Some(&batch_sent), received).unwrap();
        assert_eq!(record.events[0].occurred_at, at("2025-01-02T03:00:05Z"));
    }

    #[test]
    fn identify_maps_traits_and_identifiers() {
        let message = object(json!({
            "userId": "u1", "anonymousId": "a1",
            "context": {"traits": {"plan": "pro", "email": "old@example.com"}},
            "traits": {"email": "Ada@Example.com", "firstName": "Ada", "phone": "+33 6 12 34 56 78"}
        }));
        let record = to_record(
            Endpoint::Single(MessageType::Identify),
            message,
            None,
            Utc::now(),
        )
        .unwrap();
        assert_eq!(record.stream, "identify");
        assert!(record.external_id.starts_with("spindle-"));
        assert_eq!(record.traits["first_name"], json!("Ada"));
        assert_eq!(record.traits["plan"], json!("pro"));
        let ids: Vec<(&str, &str)> = record
            .identifiers
            .iter()
            .map(|i| (i.kind.as_str(), i.value.as_str()))
            .collect();
        assert_eq!(
            ids,
            vec![
                ("user_id", "u1"),
                ("anonymous_id", "a1"),
                ("email", "Ada@Example.com"),
                ("phone", "+33 6 12 34 56 78")
            ]
        );
    }

    #[test]
    fn refusals_have_codes() {
        let now = Utc::now();
        let code = |value: Value| {
            to_record(Endpoint::Batch, object(value), None, now)
                .unwrap_err()
                .code
        };
        assert_eq!(
            code(json!({"type": "bogus", "userId": "u"})),
            "unknown_type"
        );
        assert_eq!(code(json!({"userId": "u"})), "unknown_type");
        assert_eq!(
            code(json!({"type": "track", "event": "x", "userId": null, "anonymousId": ""})),
            "missing_user_id"
        );
        assert_eq!(
            code(json!({"type": "track", "userId": "u"})),
            "missing_event"
        );
        assert_eq!(
            code(json!({"type": "group", "userId": "u"})),
            "missing_group_id"
        );
        assert_eq!(
            code(json!({"type": "alias", "userId": "u"})),
            "missing_previous_id"
        );
        assert_eq!(
            code(json!({"type": "track", "event": "x", "userId": "u", "timestamp": "yesterday"})),
            "invalid_timestamp"
        );
        assert_eq!(
            code(json!({"type": "track", "event": "x", "userId": "u", "sentAt": 12})),
            "invalid_timestamp"
        );
        assert_eq!(
            code(json!({"type": "identify", "userId": "u", "traits": [1]})),
            "invalid_field"
        );
    }
}
