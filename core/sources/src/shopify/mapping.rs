//! Shopify customers and orders to Spindle records.
//!
//! Customers: identifiers `email`, `phone`, `<source>_id` (the customer id); traits names, tags, state,
//! default address, and consent (`email_consent` from `email_marketing_consent.state`, its opt-in level and
//! time, `sms_consent`). Orders: identifiers the order's e-mail and the customer's `<source>_id`; one event,
//! `order_completed` (or `order_cancelled`) with `amount`, `currency`, `line_item_count`, `order_id` and
//! `financial_status`, at `processed_at` (else `created_at`). The version is `updated_at` in milliseconds.
//! A record without an id, a readable `updated_at` or any identifier is quarantined.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use spindle_model::{Event, Identifier, QuarantinedRecord, RawRecord};
use spindle_store::SourceBatch;

fn text<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn id(value: &Value, pointer: &str) -> Option<String> {
    match value.pointer(pointer)? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

fn time(value: &Value, pointer: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text(value, pointer)?)
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

/// Maps one page into `batch`.
pub(super) fn map_page(source_id: &str, stream: &str, items: &[Value], batch: &mut SourceBatch) {
    for (index, item) in items.iter().enumerate() {
        let mapped = if stream == "orders" {
            map_order(source_id, item)
        } else {
            map_customer(source_id, item)
        };
        match mapped {
            Ok(record) => batch.records.push(record),
            Err(reason) => batch.quarantined.push(QuarantinedRecord {
                stream: stream.to_owned(),
                location: match id(item, "/id") {
                    Some(id) => format!("{stream}/{id}"),
                    None => format!("{stream} (page item {index})"),
                },
                reason,
                payload: item.to_string(),
            }),
        }
    }
}

fn common(item: &Value) -> Result<(String, DateTime<Utc>), String> {
    let id = id(item, "/id").ok_or("record has no id")?;
    let updated_at = match item.get("updated_at") {
        None | Some(Value::Null) => return Err("record has no `updated_at`".into()),
        Some(_) => time(item, "/updated_at")
            .ok_or_else(|| format!("unreadable `updated_at` {}", item["updated_at"]))?,
    };
    Ok((id, updated_at))
}

fn map_customer(source_id: &str, item: &Value) -> Result<RawRecord, String> {
    let (external_id, updated_at) = common(item)?;
    let mut identifiers = Vec::new();
    if let Some(email) = text(item, "/email") {
        identifiers.push(Identifier::new("email", email));
    }
    if let Some(phone) = text(item, "/phone") {
        identifiers.push(Identifier::new("phone", phone));
    }
    identifiers.push(Identifier::new(
        format!("{source_id}_id"),
        external_id.clone(),
    ));
    let mut traits = BTreeMap::new();
    for (pointer, name) in [
        ("/first_name", "first_name"),
        ("/last_name", "last_name"),
        ("/tags", "tags"),
        ("/state", "customer_state"),
        ("/created_at", "created_at"),
        ("/default_address/city", "city"),
        ("/default_address/province", "state"),
        ("/default_address/zip", "postal_code"),
        ("/default_address/country_code", "country"),
        ("/default_address/company", "company"),
        ("/email_marketing_consent/state", "email_consent"),
        (
            "/email_marketing_consent/opt_in_level",
            "email_consent_opt_in_level",
        ),
        (
            "/email_marketing_consent/consent_updated_at",
            "email_consent_updated_at",
        ),
        ("/sms_marketing_consent/state", "sms_consent"),
    ] {
        if let Some(value) = text(item, pointer) {
            traits.insert(name.to_owned(), Value::String(value.to_owned()));
        }
    }
    if let Some(verified) = item.get("verified_email").and_then(Value::as_bool) {
        traits.insert("verified_email".into(), Value::Bool(verified));
    }
    Ok(RawRecord {
        stream: "customers".into(),
        external_id,
        version: updated_at.timestamp_millis(),
        updated_at: Some(updated_at),
        deleted: false,
        identifiers,
        traits,
        events: Vec::new(),
    })
}

fn map_order(source_id: &str, item: &Value) -> Result<RawRecord, String> {
    let (external_id, updated_at) = common(item)?;
    let mut identifiers = Vec::new();
    if let Some(email) = text(item, "/email").or_else(|| text(item, "/customer/email")) {
        identifiers.push(Identifier::new("email", email));
    }
    if let Some(customer) = id(item, "/customer/id") {
        identifiers.push(Identifier::new(format!("{source_id}_id"), customer));
    }
    if identifiers.is_empty() {
        return Err("order has no customer: no e-mail and no customer id".into());
    }
    let amount = match item.get("total_price") {
        Some(Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("unreadable `total_price` \"{s}\""))?,
        Some(Value::Number(n)) => n.as_f64().ok_or("unreadable `total_price`")?,
        _ => return Err("order has no `total_price`".into()),
    };
    let occurred_at = time(item, "/processed_at")
        .or_else(|| time(item, "/created_at"))
        .unwrap_or(updated_at);
    let cancelled = item.get("cancelled_at").is_some_and(|v| !v.is_null());
    let mut properties = BTreeMap::new();
    properties.insert("order_id".to_owned(), Value::String(external_id.clone()));
    properties.insert("amount".to_owned(), Value::from(amount));
    if let Some(currency) = text(item, "/currency") {
        properties.insert("currency".to_owned(), Value::String(currency.to_owned()));
    }
    let line_items = item
        .get("line_items")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    properties.insert("line_item_count".to_owned(), Value::from(line_items));
    if let Some(status) = text(item, "/financial_status") {
        properties.insert(
            "financial_status".to_owned(),
            Value::String(status.to_owned()),
        );
    }
    let name = if cancelled {
        "order_cancelled"
    } else {
        "order_completed"
    };
    Ok(RawRecord {
        stream: "orders".into(),
        external_id,
        version: updated_at.timestamp_millis(),
        updated_at: Some(updated_at),
        deleted: false,
        identifiers,
        traits: BTreeMap::new(),
        events: vec![Event {
            name: name.into(),
            occurred_at,
            properties,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_is_an_event_linked_to_its_customer() {
        let order = serde_json::json!({
            "id": 450789469, "email": "bob@example.com", "total_price": "199.65", "currency": "EUR",
            "line_items": [{}, {}], "financial_status": "paid", "customer": {"id": 207119551},
            "created_at": "2024-01-02T10:00:00-05:00", "processed_at": "2024-01-02T10:00:05-05:00",
            "updated_at": "2024-01-03T10:00:00-05:00", "cancelled_at": null
        });
        let record = map_order("shop", &order).unwrap();
        assert_eq!(
            record.identifiers,
            vec![
                Identifier::new("email", "bob@example.com"),
                Identifier::new("shop_id", "207119551")
            ]
        );
        let event = &record.events[0];
        assert_eq!(event.name, "order_completed");
        assert_eq!(event.properties["amount"], 199.65);
        assert_eq!(event.properties["line_item_count"], 2);
        assert_eq!(event.occurred_at.to_rfc3339(), "2024-01-02T15:00:05+00:00");
        assert_eq!(
            record.version,
            DateTime::parse_from_rfc3339("2024-01-03T15:00:00Z")
                .unwrap()
                .timestamp_millis()
        );
    }

    #[test]
    fn a_customer_carries_consent() {
        let customer = serde_json::json!({
            "id": 1, "email": "ada@example.com", "phone": null, "first_name": "Ada", "updated_at": "2024-01-03T10:00:00Z",
            "email_marketing_consent": {"state": "subscribed", "opt_in_level": "single_opt_in", "consent_updated_at": null},
            "default_address": {"country_code": "GB", "city": "London"}
        });
        let record = map_customer("shop", &customer).unwrap();
        assert_eq!(record.identifiers.len(), 2);
        assert_eq!(record.traits["email_consent"], "subscribed");
        assert_eq!(record.traits["country"], "GB");
        assert!(!record.traits.contains_key("email_consent_updated_at"));
    }

    #[test]
    fn unreadable_records_are_quarantined() {
        let mut batch = SourceBatch::default();
        let items = vec![
            serde_json::json!({"email": "x@example.com"}),
            serde_json::json!({"id": 2, "updated_at": "not a date"}),
            serde_json::json!({"id": 3, "updated_at": "2024-01-03T10:00:00Z", "total_price": "1.00"}),
            serde_json::json!({"id": 4, "updated_at": "2024-01-03T10:00:00Z", "email": "a@b.c", "total_price": "abc"}),
        ];
        map_page("shop", "orders", &items, &mut batch);
        let reasons: Vec<&str> = batch
            .quarantined
            .iter()
            .map(|q| q.reason.as_str())
            .collect();
        assert_eq!(
            reasons,
            [
                "record has no id",
                "unreadable `updated_at` \"not a date\"",
                "order has no customer: no e-mail and no customer id",
                "unreadable `total_price` \"abc\""
            ]
        );
    }
}
