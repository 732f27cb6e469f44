//! HubSpot objects to Spindle records.
//!
//! Contacts: identifiers `email`, `phone` (`phone` and `mobilephone`) and `<source>_id` (the HubSpot id);
//! traits from names, company, job, address, lifecycle stage and e-mail opt-out; company ids as
//! `hubspot_company_ids`. Companies: identifier `<source>_company_id`, traits name, domain, industry, address.
//! Every HubSpot property value is a string; empty strings are absent. The version is the object's
//! `updatedAt` in milliseconds. An object without an id or a readable `updatedAt` is quarantined.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde_json::Value;
use spindle_model::{Identifier, QuarantinedRecord, RawRecord};
use spindle_store::SourceBatch;

use super::json_id;

const CONTACT_PROPERTIES: &[&str] = &[
    "email",
    "firstname",
    "lastname",
    "phone",
    "mobilephone",
    "company",
    "jobtitle",
    "address",
    "city",
    "state",
    "zip",
    "country",
    "lifecyclestage",
    "hs_email_optout",
    "createdate",
    "lastmodifieddate",
    "hs_object_id",
];
const COMPANY_PROPERTIES: &[&str] = &[
    "name",
    "domain",
    "industry",
    "phone",
    "city",
    "state",
    "country",
    "createdate",
    "hs_lastmodifieddate",
    "hs_object_id",
];

/// Properties requested for an object type.
pub(super) fn properties(object: &str) -> &'static [&'static str] {
    if object == "contacts" {
        CONTACT_PROPERTIES
    } else {
        COMPANY_PROPERTIES
    }
}

/// Contact property → trait name.
const CONTACT_TRAITS: &[(&str, &str)] = &[
    ("firstname", "first_name"),
    ("lastname", "last_name"),
    ("company", "company"),
    ("jobtitle", "job_title"),
    ("address", "address"),
    ("city", "city"),
    ("state", "state"),
    ("zip", "postal_code"),
    ("country", "country"),
    ("lifecyclestage", "lifecycle_stage"),
    ("createdate", "created_at"),
];

const COMPANY_TRAITS: &[(&str, &str)] = &[
    ("name", "name"),
    ("domain", "domain"),
    ("industry", "industry"),
    ("phone", "phone"),
    ("city", "city"),
    ("state", "state"),
    ("country", "country"),
    ("createdate", "created_at"),
];

/// HubSpot timestamps: ISO-8601 (with or without fraction) or epoch milliseconds.
pub(crate) fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    text.parse::<i64>()
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
}

fn property<'a>(properties: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a str> {
    properties
        .get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Maps one page of objects into `batch`: records, or quarantine entries with the reason.
pub(super) fn map_page(
    source_id: &str,
    object: &str,
    results: &[Value],
    associations: Option<&HashMap<String, Vec<String>>>,
    archived: bool,
    batch: &mut SourceBatch,
) {
    for (index, raw) in results.iter().enumerate() {
        match map_object(source_id, object, raw, associations, archived) {
            Ok(record) => batch.records.push(record),
            Err(reason) => batch.quarantined.push(QuarantinedRecord {
                stream: object.to_owned(),
                location: match raw.get("id").and_then(json_id) {
                    Some(id) => format!("{object}/{id}"),
                    None => format!("{object} (page item {index})"),
                },
                reason,
                payload: raw.to_string(),
            }),
        }
    }
}

fn map_object(
    source_id: &str,
    object: &str,
    raw: &Value,
    associations: Option<&HashMap<String, Vec<String>>>,
    archived: bool,
) -> Result<RawRecord, String> {
    let id = raw.get("id").and_then(json_id).ok_or("object has no id")?;
    let properties = raw
        .get("properties")
        .and_then(Value::as_object)
        .ok_or("object has no `properties` object")?;
    let modified = raw
        .get("updatedAt")
        .and_then(Value::as_str)
        .or_else(|| property(properties, super::modified_property(object)))
        .ok_or("object has no `updatedAt`")?;
    let updated_at =
        parse_time(modified).ok_or_else(|| format!("unreadable `updatedAt` `{modified}`"))?;
    let archived_at = raw
        .get("archivedAt")
        .and_then(Value::as_str)
        .and_then(parse_time);
    let version_time = archived_at.map_or(updated_at, |at| at.max(updated_at));

    let mut identifiers = Vec::new();
    let mut traits = BTreeMap::new();
    if object == "contacts" {
        for (name, kind) in [
            ("email", "email"),
            ("phone", "phone"),
            ("mobilephone", "phone"),
        ] {
            if let Some(value) = property(properties, name) {
                identifiers.push(Identifier::new(kind, value));
            }
        }
        identifiers.push(Identifier::new(format!("{source_id}_id"), id.clone()));
        for (name, trait_name) in CONTACT_TRAITS {
            if let Some(value) = property(properties, name) {
                traits.insert((*trait_name).to_owned(), Value::String(value.to_owned()));
            }
        }
        if let Some(optout) = property(properties, "hs_email_optout") {
            traits.insert(
                "email_opt_out".into(),
                Value::Bool(optout.eq_ignore_ascii_case("true")),
            );
        }
        let inline = raw
            .pointer("/associations/companies/results")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|a| a.get("id").and_then(json_id))
                    .collect::<Vec<_>>()
            });
        let companies = inline.or_else(|| associations.and_then(|map| map.get(&id).cloned()));
        if let Some(mut companies) = companies.filter(|c| !c.is_empty()) {
            companies.sort();
            companies.dedup();
            traits.insert("hubspot_company_ids".into(), Value::from(companies));
        }
    } else {
        identifiers.push(Identifier::new(
            format!("{source_id}_company_id"),
            id.clone(),
        ));
        for (name, trait_name) in COMPANY_TRAITS {
            if let Some(value) = property(properties, name) {
                traits.insert((*trait_name).to_owned(), Value::String(value.to_owned()));
            }
        }
    }
    Ok(RawRecord {
        stream: object.to_owned(),
        external_id: id,
        version: version_time.timestamp_millis(),
        updated_at: Some(updated_at),
        deleted: archived
            || raw
                .get("archived")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        identifiers,
        traits,
        events: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contact_maps_identifiers_traits_and_companies() {
        let raw = serde_json::json!({
            "id": "512",
            "properties": {"email": "Ada@Example.com", "firstname": "Ada", "lastname": "", "mobilephone": "+44 20 7946 0958",
                           "hs_email_optout": "true", "lastmodifieddate": "2024-03-01T10:00:00.000Z"},
            "createdAt": "2024-01-01T00:00:00.000Z",
            "updatedAt": "2024-03-01T10:00:00.000Z",
            "archived": false,
            "associations": {"companies": {"results": [{"id": "9", "type": "contact_to_company"}]}}
        });
        let record = map_object("crm", "contacts", &raw, None, false).unwrap();
        assert_eq!(record.external_id, "512");
        assert_eq!(record.version, 1_709_287_200_000);
        assert_eq!(
            record.identifiers,
            vec![
                Identifier::new("email", "Ada@Example.com"),
                Identifier::new("phone", "+44 20 7946 0958"),
                Identifier::new("crm_id", "512")
            ]
        );
        assert_eq!(record.traits["first_name"], "Ada");
        assert!(
            !record.traits.contains_key("last_name"),
            "empty strings are absent"
        );
        assert_eq!(record.traits["email_opt_out"], true);
        assert_eq!(
            record.traits["hubspot_company_ids"],
            serde_json::json!(["9"])
        );
    }

    #[test]
    fn unreadable_objects_are_quarantined_with_the_reason() {
        let mut batch = SourceBatch::default();
        let page = vec![
            serde_json::json!({"properties": {}}),
            serde_json::json!({"id": "7", "properties": {}, "updatedAt": "yesterday"}),
            serde_json::json!({"id": "8", "properties": "oops", "updatedAt": "2024-03-01T10:00:00Z"}),
        ];
        map_page("crm", "contacts", &page, None, false, &mut batch);
        let reasons: Vec<&str> = batch
            .quarantined
            .iter()
            .map(|q| q.reason.as_str())
            .collect();
        assert_eq!(
            reasons,
            [
                "object has no id",
                "unreadable `updatedAt` `yesterday`",
                "object has no `properties` object"
            ]
        );
        assert_eq!(batch.quarantined[1].location, "contacts/7");
    }

    #[test]
    fn times_are_iso_or_epoch_milliseconds() {
        assert_eq!(
            parse_time("2024-03-01T10:00:00Z")
                .unwrap()
                .timestamp_millis(),
            1_709_287_200_000
        );
        assert_eq!(
            parse_time("1709287200000").unwrap().timestamp_millis(),
            1_709_287_200_000
        );
        assert!(parse_time("soon").is_none());
    }
}
