//! The unified profile: what one customer looks like, built from their records.
//!
//! - Traits: per trait, the configured survivorship rule picks one value among the member records
//!   (`latest` by the source's update time, else when Spindle saw the change; `first_seen`; `max`/`min`; or
//!   `source_priority`, falling back to `latest`).
//! - Identifiers: each normalised value once, with the raw spellings and the sources that gave it; values
//!   that failed normalisation are listed apart with the reason.
//! - Consent: a trait `<purpose>_consent` (`subscribed`, `granted`, `yes`, `true`, `opted_in`, ... → true;
//!   `unsubscribed`, `denied`, `no`, `false`, ... → false) and `email_opt_out` give `consent.<purpose>`.
//! - Timeline: every event of every member record, oldest first.
//! - Computed traits: each `[profiles.computed]` expression evaluated over the timeline at a given time.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use spindle_config::{Aggregate, ComputedTrait, ProfilesConfig, Survivorship};
use spindle_model::{Event, RecordKey, StoredRecord};

/// One identifier of a profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileIdentifier {
    /// Type.
    pub kind: String,
    /// Normalised value.
    pub value: String,
    /// The spellings it arrived in.
    pub raw: Vec<String>,
    /// Sources that gave it.
    pub sources: Vec<String>,
}

/// A raw identifier that could not be normalised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedIdentifier {
    /// Type.
    pub kind: String,
    /// The value as received.
    pub raw: String,
    /// Why it was refused.
    pub reason: String,
    /// Its record.
    pub record: RecordKey,
}

/// Why two records are in one profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkEvidence {
    /// Identifier type, or `compound:<rule>`.
    pub rule: String,
    /// The shared normalised value.
    pub value: String,
    /// One record.
    pub a: RecordKey,
    /// The other.
    pub b: RecordKey,
}

/// A trait value and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraitValue {
    /// The value.
    pub value: Value,
    /// The record it was taken from.
    pub from: RecordKey,
}

/// Everything stored about one customer. Stored in a compact form ([`to_stored_json`](Self::to_stored_json),
/// module `stored`); `Deserialize` reads either form, `Serialize` writes the full one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProfileDocument {
    /// Traits chosen by survivorship.
    pub traits: BTreeMap<String, TraitValue>,
    /// Computed traits at `computed_at`.
    pub computed: BTreeMap<String, Value>,
    /// When computed traits were evaluated. A profile built again with the same content is not written
    /// again, so this is the time of the build that last changed the profile: its values still held at
    /// the last resolution that reached it.
    pub computed_at: DateTime<Utc>,
    /// Consent per purpose.
    pub consent: BTreeMap<String, bool>,
    /// Identifiers.
    pub identifiers: Vec<ProfileIdentifier>,
    /// Identifiers that failed normalisation.
    pub rejected_identifiers: Vec<RejectedIdentifier>,
    /// Sources with at least one record.
    pub sources: Vec<String>,
    /// Member records.
    pub records: Vec<RecordKey>,
    /// The links that joined them.
    pub links: Vec<LinkEvidence>,
    /// When the first member was first seen.
    pub first_seen_at: DateTime<Utc>,
    /// When a member last changed.
    pub last_seen_at: DateTime<Utc>,
    /// Events on the timeline.
    pub event_count: u64,
}

/// An event on a profile's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEvent {
    /// The event.
    pub event: Event,
    /// The record that carried it.
    pub record: RecordKey,
}

/// The key of a stored record.
pub fn key_of(record: &StoredRecord) -> RecordKey {
    RecordKey {
        source: record.source.clone(),
        stream: record.record.stream.clone(),
        external_id: record.record.external_id.clone(),
    }
}

/// All events of `records`, oldest first (ties by record key and name).
pub fn timeline(records: &[&StoredRecord]) -> Vec<TimelineEvent> {
    let mut events: Vec<TimelineEvent> = records
        .iter()
        .flat_map(|r| {
            r.record.events.iter().map(move |e| TimelineEvent {
                event: e.clone(),
                record: key_of(r),
            })
        })
        .collect();
    events.sort_by(|x, y| {
        x.event
            .occurred_at
            .cmp(&y.event.occurred_at)
            .then_with(|| x.record.cmp(&y.record))
            .then_with(|| x.event.name.cmp(&y.event.name))
    });
    events
}

/// The order of two records' keys, without building the keys (the same order as [`RecordKey`]'s).
fn key_order(a: &StoredRecord, b: &StoredRecord) -> std::cmp::Ordering {
    (&a.source, &a.record.stream, &a.record.external_id).cmp(&(
        &b.source,
        &b.record.stream,
        &b.record.external_id,
    ))
}

fn record_time(record: &StoredRecord) -> DateTime<Utc> {
    record.record.updated_at.unwrap_or(record.observed_at)
}

fn compare_values(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        _ => value_text(a).cmp(&value_text(b)),
    }
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Picks one value of `name` among `records` by `rule`.
fn survive(name: &str, rule: &Survivorship, records: &[&StoredRecord]) -> Option<TraitValue> {
    let candidates: Vec<(&StoredRecord, &Value)> = records
        .iter()
        .filter_map(|r| {
            r.record
                .traits
                .get(name)
                .filter(|v| !v.is_null())
                .map(|v| (*r, v))
        })
        .collect();
    let latest = || {
        candidates.iter().max_by(|(a, _), (b, _)| {
            record_time(a)
                .cmp(&record_time(b))
                .then_with(|| key_order(a, b))
        })
    };
    let chosen = match rule {
        Survivorship::Latest => latest(),
        Survivorship::FirstSeen => candidates.iter().min_by(|(a, _), (b, _)| {
            a.first_seen_at
                .cmp(&b.first_seen_at)
                .then_with(|| key_order(a, b))
        }),
        Survivorship::Max => candidates
            .iter()
            .max_by(|(a, x), (b, y)| compare_values(x, y).then_with(|| key_order(b, a))),
        Survivorship::Min => candidates
            .iter()
            .min_by(|(a, x), (b, y)| compare_values(x, y).then_with(|| key_order(a, b))),
        Survivorship::SourcePriority(order) => order
            .iter()
            .find_map(|source| {
                candidates
                    .iter()
                    .filter(|(r, _)| &r.source == source)
                    .max_by(|(a, _), (b, _)| {
                        record_time(a)
                            .cmp(&record_time(b))
                            .then_with(|| key_order(a, b))
                    })
            })
            .or_else(latest),
    };
    chosen.map(|(record, value)| TraitValue {
        value: (*value).clone(),
        from: key_of(record),
    })
}

/// `consent.<purpose>` from a trait value, when it says yes or no.
fn consent_of(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "subscribed" | "granted" | "yes" | "true" | "opted_in" | "opt_in" | "confirmed" => {
                Some(true)
            }
            "unsubscribed" | "denied" | "no" | "false" | "opted_out" | "opt_out" | "revoked"
            | "not_subscribed" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Evaluates computed traits over a timeline at `now`.
pub fn compute(
    traits: &[ComputedTrait],
    events: &[TimelineEvent],
    now: DateTime<Utc>,
) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for spec in traits {
        let matching: Vec<&Event> = events
            .iter()
            .map(|t| &t.event)
            .filter(|e| {
                e.name == spec.event
                    && spec
                        .within
                        .is_none_or(|w| e.occurred_at >= now - w && e.occurred_at <= now)
            })
            .collect();
        let property = |e: &Event| {
            spec.property
                .as_ref()
                .and_then(|p| e.properties.get(p))
                .filter(|v| !v.is_null())
                .cloned()
        };
        let numbers = || {
            matching
                .iter()
                .filter_map(|e| property(e))
                .filter_map(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()))
        };
        let value = match spec.aggregate {
            Aggregate::Count => Value::from(matching.len()),
            Aggregate::Sum => {
                // Rounded to cents. `Iterator::sum` of no floats is -0.0, and a sum rounding to
                // nothing may be too: `+ 0.0` writes either as 0.
                let sum: f64 = numbers().sum();
                Value::from((sum * 100.0).round() / 100.0 + 0.0)
            }
            Aggregate::Min => numbers()
                .min_by(f64::total_cmp)
                .map_or(Value::Null, Value::from),
            Aggregate::Max => numbers()
                .max_by(f64::total_cmp)
                .map_or(Value::Null, Value::from),
            Aggregate::First | Aggregate::Last => {
                let pick = if spec.aggregate == Aggregate::First {
                    matching.first()
                } else {
                    matching.last()
                };
                match (pick, &spec.property) {
                    (None, _) => Value::Null,
                    (Some(e), Some(_)) => property(e).unwrap_or(Value::Null),
                    (Some(e), None) => Value::String(e.occurred_at.to_rfc3339()),
                }
            }
            Aggregate::Distinct => {
                let distinct: BTreeSet<String> = matching
                    .iter()
                    .filter_map(|e| property(e))
                    .map(|v| value_text(&v))
                    .collect();
                Value::from(distinct.len())
            }
        };
        out.insert(spec.name.clone(), value);
    }
    out
}

/// Builds the document of a profile from its records, identifiers and links.
pub fn build(
    config: &ProfilesConfig,
    records: &[&StoredRecord],
    identifiers: Vec<ProfileIdentifier>,
    rejected_identifiers: Vec<RejectedIdentifier>,
    links: Vec<LinkEvidence>,
    now: DateTime<Utc>,
) -> ProfileDocument {
    let names: BTreeSet<&String> = records
        .iter()
        .flat_map(|r| r.record.traits.keys())
        .collect();
    let mut traits = BTreeMap::new();
    for name in names {
        let rule = config
            .survivorship
            .get(name.as_str())
            .unwrap_or(&config.default_survivorship);
        if let Some(value) = survive(name, rule, records) {
            traits.insert(name.clone(), value);
        }
    }
    let mut consent = BTreeMap::new();
    for (name, value) in &traits {
        if let Some(purpose) = name.strip_suffix("_consent")
            && let Some(granted) = consent_of(&value.value)
        {
            consent.insert(purpose.to_owned(), granted);
        }
    }
    if let Some(granted) = traits.get("email_opt_out").and_then(|v| v.value.as_bool()) {
        consent.entry("email".to_owned()).or_insert(!granted);
    }
    // The timeline itself is only needed to evaluate computed traits; without any, counting is enough.
    let (computed, event_count) = if config.computed.is_empty() {
        let count: usize = records.iter().map(|r| r.record.events.len()).sum();
        (BTreeMap::new(), count)
    } else {
        let events = timeline(records);
        (compute(&config.computed, &events, now), events.len())
    };
    let sources: BTreeSet<String> = records.iter().map(|r| r.source.clone()).collect();
    let mut keys: Vec<RecordKey> = records.iter().map(|r| key_of(r)).collect();
    keys.sort();
    ProfileDocument {
        traits,
        computed,
        computed_at: now,
        consent,
        identifiers,
        rejected_identifiers,
        sources: sources.into_iter().collect(),
        records: keys,
        links,
        first_seen_at: records.iter().map(|r| r.first_seen_at).min().unwrap_or(now),
        last_seen_at: records.iter().map(|r| r.observed_at).max().unwrap_or(now),
        event_count: event_count as u64,
    }
}

mod stored;

#[cfg(test)]
mod tests;
