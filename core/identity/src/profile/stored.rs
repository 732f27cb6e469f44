//! How a [`ProfileDocument`] is stored: the JSON of its `Serialize`, except that each trait's source
//! record (`traits.<name>.from`) and each link's two records (`links[].a`, `links[].b`) are written as
//! their index in the document's own `records` (sorted), instead of as full `{source, stream,
//! external_id}` keys. Those keys were about a third of a typical document, and a full pass of a million
//! records writes 700 MB of documents.
//!
//! Contract:
//! - [`ProfileDocument::to_stored_json`] writes the stored form; a key missing from `records` (never
//!   the case for documents the engine builds) is written in full.
//! - `computed_at`, the one field that changes with every build of a profile, is written last, so that
//!   [`StoredJson::content`], the text before it, is the same for two builds of a profile from the same
//!   records and rules (computed traits included): the engine fingerprints profiles by it.
//! - `Deserialize` for [`ProfileDocument`] reads both forms, so documents stored before the compact
//!   form still read; an index out of range is an error. `Serialize` writes the full form: what the
//!   admin API and the CLI show does not change.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use spindle_model::RecordKey;

use super::{LinkEvidence, ProfileDocument, ProfileIdentifier, RejectedIdentifier, TraitValue};

/// A document's stored form ([`ProfileDocument::to_stored_json`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredJson {
    /// The JSON text.
    pub text: String,
    /// How many bytes at the start of `text` are its [`content`](Self::content).
    content_len: usize,
}

impl StoredJson {
    /// What the document says about the customer: the text without when its computed traits were
    /// evaluated (`computed_at`, which ends the text). Equal for two builds of a profile from the same
    /// records and rules.
    pub fn content(&self) -> &str {
        &self.text[..self.content_len]
    }
}

impl ProfileDocument {
    /// The document as stored (see the module doc).
    pub fn to_stored_json(&self) -> serde_json::Result<StoredJson> {
        let mut text = serde_json::to_string(&Compact(self))?;
        // `Compact` writes an object with at least one field and no `computed_at`: it goes in place of
        // the closing brace.
        text.pop();
        let content_len = text.len();
        text.push_str(",\"computed_at\":");
        text.push_str(&serde_json::to_string(&StoredTime(&self.computed_at))?);
        text.push('}');
        Ok(StoredJson { text, content_len })
    }

    /// Where `key` is in `records`, if it is there.
    fn index_of(&self, key: &RecordKey) -> Option<usize> {
        self.records.binary_search(key).ok()
    }
}

/// A record of a stored document: its index in `records`, or its key.
#[derive(Deserialize)]
#[serde(untagged)]
enum StoredKey {
    Index(usize),
    Key(RecordKey),
}

impl StoredKey {
    fn resolve(self, records: &[RecordKey]) -> Result<RecordKey, String> {
        match self {
            StoredKey::Key(key) => Ok(key),
            StoredKey::Index(at) => records.get(at).cloned().ok_or_else(|| {
                format!(
                    "record index {at} is out of range: the document lists {} records",
                    records.len()
                )
            }),
        }
    }
}

/// A [`ProfileDocument`] as read, in either form.
#[derive(Deserialize)]
struct StoredDocument {
    traits: BTreeMap<String, StoredTrait>,
    computed: BTreeMap<String, Value>,
    computed_at: DateTime<Utc>,
    consent: BTreeMap<String, bool>,
    identifiers: Vec<ProfileIdentifier>,
    rejected_identifiers: Vec<RejectedIdentifier>,
    sources: Vec<String>,
    records: Vec<RecordKey>,
    links: Vec<StoredLink>,
    first_seen_at: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
    event_count: u64,
}

#[derive(Deserialize)]
struct StoredTrait {
    value: Value,
    from: StoredKey,
}

#[derive(Deserialize)]
struct StoredLink {
    rule: String,
    value: String,
    a: StoredKey,
    b: StoredKey,
}

impl<'de> Deserialize<'de> for ProfileDocument {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = StoredDocument::deserialize(deserializer)?;
        let records = stored.records;
        let resolve = |key: StoredKey| key.resolve(&records).map_err(serde::de::Error::custom);
        let mut traits = BTreeMap::new();
        for (name, stored) in stored.traits {
            let value = TraitValue {
                value: stored.value,
                from: resolve(stored.from)?,
            };
            traits.insert(name, value);
        }
        let links = stored
            .links
            .into_iter()
            .map(|link| {
                Ok(LinkEvidence {
                    rule: link.rule,
                    value: link.value,
                    a: resolve(link.a)?,
                    b: resolve(link.b)?,
                })
            })
            .collect::<Result<_, D::Error>>()?;
        Ok(ProfileDocument {
            traits,
            computed: stored.computed,
            computed_at: stored.computed_at,
            consent: stored.consent,
            identifiers: stored.identifiers,
            rejected_identifiers: stored.rejected_identifiers,
            sources: stored.sources,
            records,
            links,
            first_seen_at: stored.first_seen_at,
            last_seen_at: stored.last_seen_at,
            event_count: stored.event_count,
        })
    }
}

/// Serialises a document in its stored form, but for `computed_at` (which
/// [`ProfileDocument::to_stored_json`] appends).
struct Compact<'a>(&'a ProfileDocument);

/// A record of `doc` as stored: its index, else its key.
struct CompactKey<'a>(&'a ProfileDocument, &'a RecordKey);

impl Serialize for CompactKey<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.index_of(self.1) {
            Some(at) => serializer.serialize_u64(at as u64),
            None => self.1.serialize(serializer),
        }
    }
}

struct CompactTraits<'a>(&'a ProfileDocument);

impl Serialize for CompactTraits<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let doc = self.0;
        let mut map = serializer.serialize_map(Some(doc.traits.len()))?;
        for (name, value) in &doc.traits {
            map.serialize_entry(name, &CompactTrait(doc, value))?;
        }
        map.end()
    }
}

struct CompactTrait<'a>(&'a ProfileDocument, &'a TraitValue);

impl Serialize for CompactTrait<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("TraitValue", 2)?;
        out.serialize_field("value", &self.1.value)?;
        out.serialize_field("from", &CompactKey(self.0, &self.1.from))?;
        out.end()
    }
}

struct CompactLinks<'a>(&'a ProfileDocument);

impl Serialize for CompactLinks<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let doc = self.0;
        serializer.collect_seq(doc.links.iter().map(|link| CompactLink(doc, link)))
    }
}

struct CompactLink<'a>(&'a ProfileDocument, &'a LinkEvidence);

impl Serialize for CompactLink<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (doc, link) = (self.0, self.1);
        let mut out = serializer.serialize_struct("LinkEvidence", 4)?;
        out.serialize_field("rule", &link.rule)?;
        out.serialize_field("value", &link.value)?;
        out.serialize_field("a", &CompactKey(doc, &link.a))?;
        out.serialize_field("b", &CompactKey(doc, &link.b))?;
        out.end()
    }
}

/// A time written exactly as chrono's `Serialize` writes it (`2024-05-01T09:30:00Z`, with a fraction of 3,
/// 6 or 9 digits when there is one), without going through `fmt`: chrono formats piece by piece through
/// `Display`, which cost about 2,400 instructions a time, three times a document. Years outside
/// 0..=9999 and leap seconds, which chrono writes in forms of their own, are left to chrono.
struct StoredTime<'a>(&'a DateTime<Utc>);

impl Serialize for StoredTime<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use chrono::{Datelike, Timelike};
        let time = self.0;
        let (year, nanos) = (time.year(), time.nanosecond());
        let Ok(year) = u32::try_from(year) else {
            return time.serialize(serializer);
        };
        if year > 9999 || nanos >= 1_000_000_000 {
            return time.serialize(serializer);
        }
        let mut text = TimeText::default();
        text.digits(year, 4);
        for (separator, part) in [
            (b'-', time.month()),
            (b'-', time.day()),
            (b'T', time.hour()),
            (b':', time.minute()),
            (b':', time.second()),
        ] {
            text.byte(separator);
            text.digits(part, 2);
        }
        if nanos != 0 {
            text.byte(b'.');
            if nanos % 1_000_000 == 0 {
                text.digits(nanos / 1_000_000, 3);
            } else if nanos % 1_000 == 0 {
                text.digits(nanos / 1_000, 6);
            } else {
                text.digits(nanos, 9);
            }
        }
        text.byte(b'Z');
        serializer.serialize_str(text.as_str())
    }
}

/// The text of a [`StoredTime`]: at most `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`, 30 bytes of ASCII.
#[derive(Default)]
struct TimeText {
    bytes: [u8; 30],
    len: usize,
}

impl TimeText {
    fn byte(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    /// `value` in decimal, zero-padded to `width` digits (`value` has no more).
    fn digits(&mut self, value: u32, width: u32) {
        for place in (0..width).rev() {
            self.byte(b'0' + (value / 10u32.pow(place) % 10) as u8);
        }
    }

    fn as_str(&self) -> &str {
        // Only ASCII digits and separators were written.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl Serialize for Compact<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let doc = self.0;
        let mut out = serializer.serialize_struct("ProfileDocument", 12)?;
        out.serialize_field("traits", &CompactTraits(doc))?;
        out.serialize_field("computed", &doc.computed)?;
        out.serialize_field("consent", &doc.consent)?;
        out.serialize_field("identifiers", &doc.identifiers)?;
        out.serialize_field("rejected_identifiers", &doc.rejected_identifiers)?;
        out.serialize_field("sources", &doc.sources)?;
        out.serialize_field("records", &doc.records)?;
        out.serialize_field("links", &CompactLinks(doc))?;
        out.serialize_field("first_seen_at", &StoredTime(&doc.first_seen_at))?;
        out.serialize_field("last_seen_at", &StoredTime(&doc.last_seen_at))?;
        out.serialize_field("event_count", &doc.event_count)?;
        out.end()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn key(id: &str) -> RecordKey {
        RecordKey {
            source: "crm".into(),
            stream: "contacts".into(),
            external_id: id.into(),
        }
    }

    fn document() -> ProfileDocument {
        let at = Utc.timestamp_millis_opt(1_700_000_000_000).unwrap();
        ProfileDocument {
            traits: BTreeMap::from([
                (
                    "first_name".to_owned(),
                    TraitValue {
                        value: json!("Ada"),
                        from: key("2"),
                    },
                ),
                (
                    "plan".to_owned(),
                    TraitValue {
                        value: json!({"tier": "pro"}),
                        from: key("1"),
                    },
                ),
            ]),
            computed: BTreeMap::from([("orders".to_owned(), json!(3))]),
            computed_at: at,
            consent: BTreeMap::from([("email".to_owned(), true)]),
            identifiers: vec![ProfileIdentifier {
                kind: "email".into(),
                value: "ada@example.com".into(),
                raw: vec!["Ada@Example.com".into()],
                sources: vec!["crm".into()],
            }],
            rejected_identifiers: vec![RejectedIdentifier {
                kind: "phone".into(),
                raw: "12".into(),
                reason: "too short".into(),
                record: key("1"),
            }],
            sources: vec!["crm".into()],
            records: vec![key("1"), key("2")],
            links: vec![LinkEvidence {
                rule: "email".into(),
                value: "ada@example.com".into(),
                a: key("1"),
                b: key("2"),
            }],
            first_seen_at: at,
            last_seen_at: at,
            event_count: 3,
        }
    }

    #[test]
    fn the_stored_form_names_records_by_index_and_reads_back_whole() {
        let doc = document();
        let stored = doc.to_stored_json().unwrap().text;
        let value: Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(
            value["traits"]["first_name"],
            json!({"value": "Ada", "from": 1})
        );
        assert_eq!(value["traits"]["plan"]["from"], json!(0));
        assert_eq!(value["links"][0]["a"], json!(0));
        assert_eq!(value["links"][0]["b"], json!(1));
        assert!(stored.len() < serde_json::to_string(&doc).unwrap().len());

        let read: ProfileDocument = serde_json::from_str(&stored).unwrap();
        assert_eq!(read, doc);
        let from_value: ProfileDocument = serde_json::from_value(value).unwrap();
        assert_eq!(from_value, doc);
    }

    #[test]
    fn the_content_is_the_same_for_builds_that_differ_only_in_when_they_were_computed() {
        let doc = document();
        let stored = doc.to_stored_json().unwrap();
        let mut later = doc.clone();
        later.computed_at += chrono::Duration::days(1);
        let later = later.to_stored_json().unwrap();
        assert_ne!(stored.text, later.text);
        assert_eq!(stored.content(), later.content());
        assert!(stored.text.starts_with(stored.content()));
        assert!(!stored.content().contains("computed_at"));
        assert_eq!(
            serde_json::from_str::<ProfileDocument>(&later.text)
                .unwrap()
                .computed_at,
            doc.computed_at + chrono::Duration::days(1)
        );

        let mut recomputed = doc.clone();
        recomputed.computed.insert("orders".into(), json!(4));
        assert_ne!(
            recomputed.to_stored_json().unwrap().content(),
            stored.content()
        );
    }

    #[test]
    fn the_full_form_still_reads_and_is_what_serialize_writes() {
        let doc = document();
        let full = serde_json::to_value(&doc).unwrap();
        assert_eq!(
            full["traits"]["first_name"]["from"],
            json!({"source": "crm", "stream": "contacts", "external_id": "2"})
        );
        let read: ProfileDocument = serde_json::from_value(full).unwrap();
        assert_eq!(read, doc);
    }

    #[test]
    fn a_key_missing_from_the_records_is_stored_whole_and_an_index_out_of_range_is_refused() {
        let mut doc = document();
        doc.links[0].b = key("9");
        let stored = doc.to_stored_json().unwrap().text;
        let value: Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(value["links"][0]["b"]["external_id"], json!("9"));
        assert_eq!(
            serde_json::from_str::<ProfileDocument>(&stored).unwrap(),
            doc
        );

        let mut broken = value;
        broken["traits"]["plan"]["from"] = json!(5);
        let err = serde_json::from_value::<ProfileDocument>(broken).unwrap_err();
        assert!(
            err.to_string().contains("record index 5 is out of range"),
            "{err}"
        );
    }

    fn chrono_and_stored(time: &DateTime<Utc>) -> (String, String) {
        (
            serde_json::to_string(time).unwrap(),
            serde_json::to_string(&StoredTime(time)).unwrap(),
        )
    }

    #[test]
    fn times_are_written_as_chrono_writes_them_at_every_precision_and_edge() {
        let base = Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 59).unwrap();
        for nanos in [
            0,
            1,
            999,
            1_000,
            120_000,
            1_000_000,
            5_000_000,
            123_456_789,
            999_999_999,
        ] {
            let time = base + chrono::Duration::nanoseconds(nanos);
            let (chrono, stored) = chrono_and_stored(&time);
            assert_eq!(stored, chrono, "{nanos} ns");
        }
        // Outside 0..=9999 and on a leap second chrono's own forms are kept.
        let far = Utc.with_ymd_and_hms(12_345, 1, 1, 0, 0, 0).unwrap();
        let before = Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).unwrap();
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .unwrap()
            .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
            .unwrap()
            .and_utc();
        for time in [
            far,
            before,
            leap,
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
        ] {
            let (chrono, stored) = chrono_and_stored(&time);
            assert_eq!(stored, chrono);
        }
        assert_eq!(chrono_and_stored(&base).1, "\"2024-02-29T23:59:59Z\"");
    }

    proptest! {
        #[test]
        fn any_time_is_written_as_chrono_writes_it(
            seconds in -62_135_596_800i64..253_402_300_799,
            nanos in prop_oneof![
                Just(0u32),
                (0u32..1_000).prop_map(|ms| ms * 1_000_000),
                (0u32..1_000_000).prop_map(|us| us * 1_000),
                0u32..1_000_000_000,
            ],
        ) {
            let time = DateTime::<Utc>::from_timestamp(seconds, nanos).unwrap();
            let (chrono, stored) = chrono_and_stored(&time);
            prop_assert_eq!(stored, chrono);
        }
    }
}
