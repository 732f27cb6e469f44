//! Segment memberships: evaluate segments over profiles and record entries and exits.
//!
//! Contract:
//! - Evaluation runs on the profile table of [`crate::live`], brought up to date with the store first.
//!   [`evaluate_all`] evaluates every segment over every profile (column-wise); [`evaluate_changes`] only
//!   the profiles written or removed since their memberships were last evaluated. Both record each entry
//!   and exit with its time, one transaction per segment, and give the same memberships.
//! - Segments are evaluated in dependency order, so `in_segment()` sees current results.
//! - A profile that no longer exists leaves every segment.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use spindle_config::Config;
use spindle_identity::profile::ProfileDocument;
use spindle_segments::{EventView, Expr, MemberSet, ProfileTable, ProfileView};
use spindle_store::{IdentityStore, ProfileChangeStore, SyncStore};

use crate::SyncError;
use crate::live::{LiveProfiles, SharedProfiles, Unevaluated};

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

    /// The segments with their expressions, in evaluation order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Expr)> {
        self.ordered.iter().map(|(id, expr)| (id.as_str(), expr))
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
pub fn view<'r>(
    doc: &ProfileDocument,
    records: impl IntoIterator<Item = &'r spindle_model::StoredRecord>,
) -> ProfileView {
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
            .into_iter()
            .flat_map(|r| r.record.events.iter())
            .map(|e| EventView {
                name: e.name.clone(),
                occurred_at: e.occurred_at,
                properties: e.properties.clone(),
            })
            .collect(),
    }
}

/// The members of every segment over the whole table at `now`, evaluated column-wise in dependency order.
pub fn member_sets(
    segments: &Segments,
    table: &ProfileTable,
    now: DateTime<Utc>,
) -> BTreeMap<String, MemberSet> {
    let mut sets: BTreeMap<String, MemberSet> = BTreeMap::new();
    for (id, expr) in segments.iter() {
        let set = table.evaluate(expr, now, &|other: &str| sets.get(other));
        sets.insert(id.to_owned(), set);
    }
    sets
}

/// Above this share of the table (and this many profiles), changed profiles are evaluated column-wise
/// over the whole table rather than one by one.
const ONE_BY_ONE_MAX: usize = 2_000;

/// Evaluates every segment over every profile and records who entered and left.
pub async fn evaluate_all<S: IdentityStore + ProfileChangeStore + SyncStore>(
    store: &S,
    segments: &Segments,
    profiles: &SharedProfiles,
    now: DateTime<Utc>,
) -> Result<MembershipReport, SyncError> {
    let mut live = profiles.current(store).await?;
    let report = evaluate_whole(store, segments, &live, now, None).await?;
    live.mark_evaluated();
    Ok(report)
}

/// Re-evaluates every segment for the profiles written or removed since their memberships were last
/// evaluated (whoever wrote them), and records who entered and left.
pub async fn evaluate_changes<S: IdentityStore + ProfileChangeStore + SyncStore>(
    store: &S,
    segments: &Segments,
    profiles: &SharedProfiles,
    now: DateTime<Utc>,
) -> Result<MembershipReport, SyncError> {
    let mut live = profiles.current(store).await?;
    let report = match live.unevaluated() {
        Unevaluated::All => evaluate_whole(store, segments, &live, now, None).await?,
        Unevaluated::Some(ids) if ids.is_empty() => MembershipReport::default(),
        Unevaluated::Some(ids) if ids.len() > ONE_BY_ONE_MAX.max(live.table().len() / 20) => {
            evaluate_whole(store, segments, &live, now, Some(ids)).await?
        }
        Unevaluated::Some(ids) => evaluate_one_by_one(store, segments, &live, ids, now).await?,
    };
    live.mark_evaluated();
    Ok(report)
}

/// Column-wise evaluation over the whole table; with `only`, memberships change for those profiles only.
async fn evaluate_whole<S: SyncStore>(
    store: &S,
    segments: &Segments,
    live: &LiveProfiles,
    now: DateTime<Utc>,
    only: Option<&BTreeSet<i64>>,
) -> Result<MembershipReport, SyncError> {
    let table = live.table();
    let sets = member_sets(segments, table, now);
    let mut report = MembershipReport {
        profiles: only.map_or(table.len(), BTreeSet::len) as u64,
        ..MembershipReport::default()
    };
    let among: Option<Vec<i64>> = only.map(|ids| ids.iter().copied().collect());
    for (segment, set) in &sets {
        let (before, members): (BTreeSet<i64>, BTreeSet<i64>) = match &among {
            None => (
                store.segment_members(segment).await?,
                set.ids(table).collect(),
            ),
            Some(ids) => (
                store.members_among(segment, ids).await?,
                ids.iter()
                    .copied()
                    .filter(|id| set.contains(table, *id))
                    .collect(),
            ),
        };
        report.changes.insert(
            segment.clone(),
            apply(store, segment, &before, &members, now).await?,
        );
    }
    Ok(report)
}

/// Row-wise evaluation of a few profiles.
async fn evaluate_one_by_one<S: SyncStore>(
    store: &S,
    segments: &Segments,
    live: &LiveProfiles,
    ids: &BTreeSet<i64>,
    now: DateTime<Utc>,
) -> Result<MembershipReport, SyncError> {
    let table = live.table();
    let mut wanted: BTreeMap<&str, BTreeSet<i64>> = BTreeMap::new();
    for id in ids.iter().copied().filter(|id| table.contains(*id)) {
        let mut inside: BTreeSet<&str> = BTreeSet::new();
        for (segment, expr) in segments.iter() {
            if table.evaluate_one(id, expr, now, &|other: &str| inside.contains(other)) {
                inside.insert(segment);
                wanted.entry(segment).or_default().insert(id);
            }
        }
    }
    let ids: Vec<i64> = ids.iter().copied().collect();
    let mut report = MembershipReport {
        profiles: ids.len() as u64,
        ..MembershipReport::default()
    };
    for segment in segments.ids() {
        let before = store.members_among(segment, &ids).await?;
        let members = wanted.remove(segment).unwrap_or_default();
        report.changes.insert(
            segment.to_owned(),
            apply(store, segment, &before, &members, now).await?,
        );
    }
    Ok(report)
}

/// Records the entries and exits that take a segment from `before` to `members`; returns their counts.
async fn apply<S: SyncStore>(
    store: &S,
    segment: &str,
    before: &BTreeSet<i64>,
    members: &BTreeSet<i64>,
    now: DateTime<Utc>,
) -> Result<(u64, u64), SyncError> {
    let mut changes: Vec<(i64, bool)> = members.difference(before).map(|id| (*id, true)).collect();
    changes.extend(before.difference(members).map(|id| (*id, false)));
    if changes.is_empty() {
        return Ok((0, 0));
    }
    Ok(store.change_segment_members(segment, &changes, now).await?)
}
