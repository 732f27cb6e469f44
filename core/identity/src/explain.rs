//! Text renderings of a profile for the command line: the 360° view (`show`) and the evidence (`explain`).
//! Plain text, stable order, no colours: snapshot tests hold their exact form.

use std::fmt::Write;

use spindle_model::RecordKey;

use crate::links::LinkRules;
use crate::profile::{ProfileDocument, TimelineEvent};

fn key(k: &RecordKey) -> String {
    format!("{}/{}/{}", k.source, k.stream, k.external_id)
}

fn value_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Why the records of profile `id` are one customer; identifiers that `rules` say never link are
/// marked with the reason.
pub fn explain(id: i64, doc: &ProfileDocument, rules: &LinkRules) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "profile {id}: {} record{} from {}, joined by {} link{}",
        doc.records.len(),
        if doc.records.len() == 1 { "" } else { "s" },
        doc.sources.join(", "),
        doc.links.len(),
        if doc.links.len() == 1 { "" } else { "s" }
    );
    let _ = writeln!(out, "\nrecords");
    for record in &doc.records {
        let _ = writeln!(out, "  {}", key(record));
    }
    if !doc.links.is_empty() {
        let _ = writeln!(
            out,
            "\nlinks (each joins two records that hold the same value)"
        );
        for link in &doc.links {
            let _ = writeln!(
                out,
                "  {} ── {} {} ── {}",
                key(&link.a),
                link.rule,
                link.value,
                key(&link.b)
            );
        }
    }
    let _ = writeln!(out, "\nidentifiers");
    for identifier in &doc.identifiers {
        let raw: Vec<String> = identifier.raw.iter().map(|r| format!("{r:?}")).collect();
        let never = rules
            .why_not(&identifier.kind, &identifier.value)
            .map(|why| format!("  (never links: {why})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<14} {:<32} raw {}  from {}{never}",
            identifier.kind,
            identifier.value,
            raw.join(", "),
            identifier.sources.join(", ")
        );
    }
    if !doc.rejected_identifiers.is_empty() {
        let _ = writeln!(out, "\nrefused identifiers (never link)");
        for rejected in &doc.rejected_identifiers {
            let _ = writeln!(
                out,
                "  {} {:?} on {}: {}",
                rejected.kind,
                rejected.raw,
                key(&rejected.record),
                rejected.reason
            );
        }
    }
    out
}

/// The 360° view of profile `id`: traits, computed traits, consent, identifiers, sources and timeline.
pub fn show(
    id: i64,
    doc: &ProfileDocument,
    computed: &std::collections::BTreeMap<String, serde_json::Value>,
    timeline: &[TimelineEvent],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "profile {id}: {} record{} from {}; first seen {}, last change {}",
        doc.records.len(),
        if doc.records.len() == 1 { "" } else { "s" },
        doc.sources.join(", "),
        doc.first_seen_at.format("%Y-%m-%d %H:%M:%S UTC"),
        doc.last_seen_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    let _ = writeln!(out, "\ntraits");
    for (name, value) in &doc.traits {
        let _ = writeln!(
            out,
            "  {:<26} {:<30} from {}",
            name,
            value_text(&value.value),
            key(&value.from)
        );
    }
    if !computed.is_empty() {
        let _ = writeln!(out, "\ncomputed traits");
        for (name, value) in computed {
            let _ = writeln!(out, "  {:<26} {}", name, value_text(value));
        }
    }
    if !doc.consent.is_empty() {
        let _ = writeln!(out, "\nconsent");
        for (purpose, granted) in &doc.consent {
            let _ = writeln!(
                out,
                "  {:<26} {}",
                purpose,
                if *granted { "granted" } else { "denied" }
            );
        }
    }
    let _ = writeln!(out, "\nidentifiers");
    for identifier in &doc.identifiers {
        let _ = writeln!(
            out,
            "  {:<14} {:<32} from {}",
            identifier.kind,
            identifier.value,
            identifier.sources.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "\ntimeline ({} event{})",
        timeline.len(),
        if timeline.len() == 1 { "" } else { "s" }
    );
    for entry in timeline {
        let properties: Vec<String> = entry
            .event
            .properties
            .iter()
            .map(|(k, v)| format!("{k}={}", value_text(v)))
            .collect();
        let _ = writeln!(
            out,
            "  {}  {:<20} {}  ({})",
            entry.event.occurred_at.format("%Y-%m-%d %H:%M:%S"),
            entry.event.name,
            properties.join(" "),
            key(&entry.record)
        );
    }
    out
}
