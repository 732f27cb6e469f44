//! Segment memberships: evaluate segments over profiles and record entries and exits.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use spindle_config::Config;
use spindle_identity::profile::ProfileDocument;
use spindle_segments::{EventView, Expr, ProfileView};
use spindle_store::{IdentityStore, SyncStore};

use crate::SyncError;

/// The configured segments, parsed, in an order where every segment comes after those it refers to.
#[derive(Debug, Clone)]
pub struct Segments {
    ordered: Vec<(String, Expr)>,
}

/// Who entered and left each segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembershipReport {
    /// Profiles evaluated.
    pub profiles: u64,
    /// Per segment: (entered, exited).
    pub changes: BTreeMap<String, (u64, u64)>,
}

impl Segments {
    /// Parses and orders the segments of `config`.
    pub fn compile(config: &Config) -> Result<Self, SyncError> {
        let mut parsed = BTreeMap::new();
        for (id, segment) in &config.segments {
            let expr =
                spindle_segments::parse(&segment.expression).map_err(|err| SyncError::Segment {
                    segment: id.clone(),
                    message: err.to_string(),
                })?;
            parsed.insert(id.clone(), expr);
        }
        let mut ordered = Vec::new();
        let mut done: BTreeSet<String> = BTreeSet::new();
        while done.len() < parsed.len() {
            let ready: Vec<String> = parsed
                .iter()
                .filter(|(id, expr)| {
                    !done.contains(*id)
                        && spindle_segments::segment_refs(expr)
                            .iter()
                            .all(|r| done.contains(r))
                })
                .map(|(id, _)| id.clone())
                .collect();
            if ready.is_empty() {
                let stuck: Vec<String> = parsed
                    .keys()
                    .filter(|id| !done.contains(*id))
                    .cloned()
                    .collect();
                let missing: Vec<String> = stuck
                    .iter()
                    .flat_map(|id| spindle_segments::segment_refs(&parsed[id]))
                    .filter(|r| !parsed.contains_key(r))
                    .collect();
                let message = if missing.is_empty() {
                    format!(
                        "segments refer to each other in a cycle: {}",
                        stuck.join(", ")
                    )
                } else {
                    format!(
                        "in_segment() names segments that do not exist: {}",
                        missing.join(", ")
                    )
                };
                return Err(SyncError::Segment {
                    segment: stuck.join(", "),
                    message,
                });
            }
            for id in ready {
                ordered.push((id.clone(), parsed[&id].clone()));
                done.insert(id);
            }
        }
        Ok(Self { ordered })
    }

    /// Segment ids in evaluation order.
    pub fn ids(&self) -> Vec<&str> {
        self.ordered.iter().map(|(id, _)| id.as_str()).collect()
    }

    /// Which segments a profile belongs to at `now`.
    pub fn evaluate(&self, view: &ProfileView, now: DateTime<Utc>) -> BTreeSet<String> {
        let mut member = BTreeSet::new();
        for (id, expr) in &self.ordered {
            let inside = {
                let known = &member;
                spindle_segments::evaluate(expr, view, now, &|other: &str| known.contains(other))
            };
            if inside {
                member.insert(id.clone());
            }
        }
        member
    }
}

/// What segment expressions see of a profile: its document and the events of its records.
pub fn view(doc: &ProfileDocument, records: &[spindle_model::StoredRecord]) -> ProfileView {
    ProfileView {
        traits: doc
            .traits
            .iter()
            .map(|(k, v)| (k.clone(), v.value.clone()))
            .collect(),
        computed: doc.computed.clone(),
        identifiers: doc
            .identifiers
            .iter()
            .map(|i| (i.kind.clone(), i.value.clone()))
            .collect(),
        consent: doc.consent.clone(),
        events: records
            .iter()
            .flat_map(|r| r.record.events.iter())
            .map(|e| EventView {
                name: e.name.clone(),
                occurred_at: e.occurred_at,
                properties: e.properties.clone(),
            })
            .collect(),
    }
}

/// Which segments each stored profile belongs to at `now` (profiles whose document cannot be read are
/// skipped, so they belong to none).
async fn evaluate_rows<S: IdentityStore>(
    store: &S,
    segments: &Segments,
    rows: Vec<spindle_store::ProfileRow>,
    now: DateTime<Utc>,
) -> Result<Vec<(i64, BTreeSet<String>)>, SyncError> {
    let docs: Vec<(i64, ProfileDocument)> = rows
        .into_iter()
        .filter_map(|row| {
            serde_json::from_value::<ProfileDocument>(row.document)
                .ok()
                .map(|d| (row.id, d))
        })
        .collect();
    let keys: Vec<spindle_model::RecordKey> = docs
        .iter()
        .flat_map(|(_, d)| d.records.iter().cloned())
        .collect();
    let records = store.records_by_keys(&keys).await?;
    let by_key: BTreeMap<spindle_model::RecordKey, &spindle_model::StoredRecord> = records
        .iter()
        .map(|r| (spindle_identity::profile::key_of(r), r))
        .collect();
    Ok(docs
        .iter()
        .map(|(id, doc)| {
            let mine: Vec<spindle_model::StoredRecord> = doc
                .records
                .iter()
                .filter_map(|k| by_key.get(k).map(|r| (*r).clone()))
                .collect();
            (*id, segments.evaluate(&view(doc, &mine), now))
        })
        .collect())
}

/// Re-evaluates every segment for the given profiles only (those a resolution step wrote or removed) and
/// records who entered and left. Profiles that no longer exist leave every segment. Together with
/// [`evaluate_all`] before each sync (which also catches conditions that change with time alone), this keeps
/// memberships current as records and events arrive.
pub async fn evaluate_profiles<S: IdentityStore + SyncStore>(
    store: &S,
    segments: &Segments,
    profiles: &BTreeSet<i64>,
    now: DateTime<Utc>,
) -> Result<MembershipReport, SyncError> {
    let ids: Vec<i64> = profiles.iter().copied().collect();
    let mut report = MembershipReport::default();
    let mut wanted: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for chunk in ids.chunks(PAGE as usize) {
        let rows = store.profiles_by_ids(chunk).await?;
        for (id, inside) in evaluate_rows(store, segments, rows, now).await? {
            for segment in inside {
                wanted.entry(segment).or_default().insert(id);
            }
            report.profiles += 1;
        }
    }
    for segment in segments.ids() {
        let before = store.members_among(segment, &ids).await?;
        let members = wanted.remove(segment).unwrap_or_default();
        let mut changes: Vec<(i64, bool)> =
            members.difference(&before).map(|id| (*id, true)).collect();
        changes.extend(before.difference(&members).map(|id| (*id, false)));
        let counts = if changes.is_empty() {
            (0, 0)
        } else {
            store.change_segment_members(segment, &changes, now).await?
        };
        report.changes.insert(segment.to_owned(), counts);
    }
    Ok(report)
}

/// Profiles read per page during a full evaluation.
const PAGE: u32 = 2_000;

/// Evaluates every segment over every profile and records the changes; profiles that no longer exist leave
/// their segments.
pub async fn evaluate_all<S: IdentityStore + SyncStore>(
    store: &S,
    segments: &Segments,
    now: DateTime<Utc>,
) -> Result<MembershipReport, SyncError> {
    let mut current: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for id in segments.ids() {
        current.insert(id.to_owned(), store.segment_members(id).await?);
    }
    let mut wanted: BTreeMap<String, BTreeSet<i64>> = segments
        .ids()
        .into_iter()
        .map(|id| (id.to_owned(), BTreeSet::new()))
        .collect();
    let mut report = MembershipReport::default();
    let mut after = 0;
    loop {
        let page = store.profiles_page(after, PAGE).await?;
        let Some(last) = page.last().map(|p| p.id) else {
            break;
        };
        after = last;
        for (id, inside) in evaluate_rows(store, segments, page, now).await? {
            for segment in inside {
                wanted.entry(segment).or_default().insert(id);
            }
            report.profiles += 1;
        }
    }
    for (segment, members) in wanted {
        let before = current.remove(&segment).unwrap_or_default();
        let mut changes: Vec<(i64, bool)> =
            members.difference(&before).map(|id| (*id, true)).collect();
        changes.extend(before.difference(&members).map(|id| (*id, false)));
        let counts = store
            .change_segment_members(&segment, &changes, now)
            .await?;
        report.changes.insert(segment, counts);
    }
    Ok(report)
}
