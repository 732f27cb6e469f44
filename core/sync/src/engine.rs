//! One audience sync run: diff, outbox, send, settle.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use sha2::{Digest, Sha256};
use spindle_config::{DestinationConfig, SyncConfig, SyncMode};
use spindle_plugin_host::{
    Batch, BatchError, CallLimits, Identifier, LoadedPlugin, Outcome, PluginHost, Removal, Upsert,
};
use spindle_store::{IdentityStore, OutboxItem, OutboxRow, Settlement, SyncStore, rejected_marker};

use crate::SyncError;

/// Attempts of one change before it becomes a dead letter, when the destination keeps asking to retry that
/// record. Failures of the whole batch (unreachable destination, rate limit, plugin failure) never make dead
/// letters: the changes wait in the outbox, with backoff, until the destination is back.
pub const MAX_ATTEMPTS: u32 = 8;
/// A retry due within this wait is waited for in the same run; a later one is left for the next run.
const WAIT_IN_RUN: Duration = Duration::from_secs(30);
/// Batches in a row that found the destination unreachable before a run stops trying (about 4 s of backoff);
/// the changes wait in the outbox for the next run.
const UNAVAILABLE_IN_A_ROW: u32 = 4;

/// What a run did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    /// New members sent.
    pub added: u64,
    /// Members whose payload changed.
    pub updated: u64,
    /// Members who left the segment (mirror mode).
    pub removed: u64,
    /// Changes the destination accepted.
    pub delivered: u64,
    /// Changes the destination refused (now dead letters).
    pub rejected: u64,
    /// Retries scheduled.
    pub retried: u64,
    /// Changes still waiting at the end of the run.
    pub pending: u64,
    /// Why the last batch failed as a whole, when it did (and no later batch went through).
    pub unavailable: Option<String>,
}

/// One change of a dry run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlannedChange {
    /// `add`, `update` or `remove`.
    pub action: &'static str,
    /// The profile.
    pub profile_id: i64,
    /// The payload that would be sent.
    pub payload: String,
}

/// The parts of a stored profile document a sync maps, decoded straight from the stored text: the rest of
/// the document (timeline, member records, link evidence) is skipped, not built.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
pub struct MappedProfile {
    /// Trait values by name.
    #[serde(default)]
    traits: BTreeMap<String, MappedTrait>,
    /// Computed traits by name.
    #[serde(default)]
    computed: BTreeMap<String, serde_json::Value>,
    /// Identifiers, in the document's order.
    #[serde(default)]
    identifiers: Vec<MappedIdentifier>,
    /// Consent per purpose.
    #[serde(default)]
    consent: BTreeMap<String, bool>,
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
struct MappedTrait {
    value: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
struct MappedIdentifier {
    kind: String,
    value: String,
}

impl MappedProfile {
    /// Decodes the mapped parts of a stored profile document.
    pub fn from_document(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Whether the profile granted consent for `purpose` (`None`: no consent needed).
    fn consents(&self, purpose: Option<&String>) -> bool {
        purpose.is_none_or(|purpose| self.consent.get(purpose) == Some(&true))
    }
}

/// The payload of a member: the sync's field mapping applied to its profile (destination field →
/// trait, computed trait, or identifier type), missing values left out.
pub fn payload(
    fields: &BTreeMap<String, String>,
    id: i64,
    profile: &MappedProfile,
) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    for (destination_field, source) in fields {
        let value = if source == "profile_id" {
            Some(serde_json::Value::from(id))
        } else if let Some(t) = profile.traits.get(source) {
            Some(t.value.clone())
        } else if let Some(c) = profile.computed.get(source) {
            Some(c.clone())
        } else {
            profile
                .identifiers
                .iter()
                .find(|i| &i.kind == source)
                .map(|i| serde_json::Value::String(i.value.clone()))
        };
        if let Some(value) = value.filter(|v| !v.is_null()) {
            out.insert(destination_field.clone(), value);
        }
    }
    out
}

fn item(
    op: &str,
    id: i64,
    profile: Option<&MappedProfile>,
    fields: &BTreeMap<String, String>,
) -> OutboxItem {
    let payload = profile
        .map(|p| serde_json::Value::Object(payload(fields, id, p)).to_string())
        .unwrap_or_else(|| "{}".into());
    let identifiers: Vec<(&str, &str)> = profile
        .map(|p| {
            p.identifiers
                .iter()
                .map(|i| (i.kind.as_str(), i.value.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let identifiers = serde_json::to_string(&identifiers).unwrap_or_else(|_| "[]".into());
    let hash = hex::encode(Sha256::digest(
        format!("{payload}\n{identifiers}").as_bytes(),
    ));
    OutboxItem {
        profile_id: id,
        op: op.to_owned(),
        payload,
        payload_hash: hash,
        identifiers,
        profile_version: None,
    }
}

/// The mapped parts of these profiles with their versions (profiles that do not exist, or whose document
/// cannot be read, are left out).
async fn mapped_profiles<S: SyncStore>(
    store: &S,
    ids: &[i64],
) -> Result<BTreeMap<i64, (MappedProfile, i64)>, SyncError> {
    let mut profiles = BTreeMap::new();
    for (id, version, text) in store.member_documents(ids).await? {
        match MappedProfile::from_document(&text) {
            Ok(profile) => {
                profiles.insert(id, (profile, version));
            }
            Err(err) => {
                tracing::warn!(profile = id, error = %err, "unreadable profile document skipped")
            }
        }
    }
    Ok(profiles)
}

/// A sync's diff: the changes to send, and the members whose payload is what the destination holds.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Changes for the outbox.
    pub items: Vec<OutboxItem>,
    /// The same changes, for people (dry runs).
    pub changes: Vec<PlannedChange>,
    /// `(profile, version)` of members re-read whose payload did not change (or that `add_only` does not
    /// update): the destination's copy is current as of that version.
    pub confirmed: Vec<(i64, i64)>,
    /// The hash of the sync's mapping (fields, consent purpose, mode) this plan used.
    pub mapping_hash: String,
    /// True when only the members whose profile changed since the last delivery were read.
    pub incremental: bool,
}

/// What decides a member's payload and whether it is sent: when it changes, every member is diffed again.
fn mapping_hash(sync: &SyncConfig) -> String {
    let mapping = serde_json::json!({
        "fields": sync.fields,
        "consent": sync.consent,
        "mode": format!("{:?}", sync.mode),
    });
    hex::encode(Sha256::digest(mapping.to_string().as_bytes()))
}

/// Computes the changes between the segment's current members and what the destination holds, as
/// `(outbox items, changes for people)`.
pub async fn plan<S: IdentityStore + SyncStore>(
    store: &S,
    sync: &SyncConfig,
) -> Result<(Vec<OutboxItem>, Vec<PlannedChange>), SyncError> {
    let plan = plan_changes(store, sync).await?;
    Ok((plan.items, plan.changes))
}

/// Computes a sync's diff. While the sync's mapping is the one it last ran with, only the members whose
/// profile changed since the destination got them (and those it never got) are read, and departed members
/// come from one query; otherwise every member is read and compared with every delivered hash.
pub async fn plan_changes<S: IdentityStore + SyncStore>(
    store: &S,
    sync: &SyncConfig,
) -> Result<Plan, SyncError> {
    let hash = mapping_hash(sync);
    let incremental = store.sync_mapping(&sync.id).await?.as_deref() == Some(hash.as_str());
    let (members, delivered, departed): (Vec<i64>, HashMap<i64, String>, Option<Vec<i64>>) =
        if incremental {
            let candidates = store.diff_candidates(&sync.id, &sync.segment).await?;
            let members = candidates.changed.iter().map(|(id, _)| *id).collect();
            let delivered = candidates
                .changed
                .into_iter()
                .filter_map(|(id, hash)| hash.map(|h| (id, h)))
                .collect();
            (members, delivered, Some(candidates.departed))
        } else {
            let members = store
                .segment_members(&sync.segment)
                .await?
                .into_iter()
                .collect();
            (members, store.delivered(&sync.id).await?, None)
        };
    let docs = mapped_profiles(store, &members).await?;
    let consenting = |profile: &MappedProfile| profile.consents(sync.consent.as_ref());
    let mut plan = Plan {
        mapping_hash: hash,
        incremental,
        ..Plan::default()
    };
    for (id, (doc, version)) in &docs {
        if !consenting(doc) {
            continue;
        }
        let mut candidate = item("upsert", *id, Some(doc), &sync.fields);
        candidate.profile_version = Some(*version);
        let action = match delivered.get(id) {
            None => "add",
            Some(hash)
                if *hash == candidate.payload_hash
                    || *hash == rejected_marker(&candidate.payload_hash) =>
            {
                plan.confirmed.push((*id, *version));
                continue;
            }
            Some(_) if sync.mode == SyncMode::AddOnly => {
                plan.confirmed.push((*id, *version));
                continue;
            }
            Some(_) => "update",
        };
        plan.changes.push(PlannedChange {
            action,
            profile_id: *id,
            payload: candidate.payload.clone(),
        });
        plan.items.push(candidate);
    }
    if sync.mode == SyncMode::Mirror {
        // Held by the destination but no longer members (or no longer granting the sync's purpose).
        let mut gone: Vec<i64> = delivered
            .keys()
            .copied()
            .filter(|id| docs.get(id).is_none_or(|(doc, _)| !consenting(doc)))
            .collect();
        if let Some(departed) = departed {
            gone.extend(departed);
        }
        gone.sort_unstable();
        gone.dedup();
        // The identifiers of a departed member: from its profile when it still exists.
        let unread: Vec<i64> = gone
            .iter()
            .copied()
            .filter(|id| !docs.contains_key(id))
            .collect();
        let departed_docs = mapped_profiles(store, &unread).await?;
        for id in gone {
            let doc = docs
                .get(&id)
                .or_else(|| departed_docs.get(&id))
                .map(|(d, _)| d);
            let removal = item("remove", id, doc, &BTreeMap::new());
            plan.changes.push(PlannedChange {
                action: "remove",
                profile_id: id,
                payload: removal.identifiers.clone(),
            });
            plan.items.push(removal);
        }
    }
    Ok(plan)
}

fn identifiers(text: &str) -> Vec<Identifier> {
    serde_json::from_str::<Vec<(String, String)>>(text)
        .unwrap_or_default()
        .into_iter()
        .map(|(kind, value)| Identifier { kind, value })
        .collect()
}

fn backoff(attempts: u32, retry_after: Option<u32>) -> Duration {
    let exponential = Duration::from_millis(500u64.saturating_mul(1 << attempts.min(10)))
        .min(Duration::from_secs(300));
    let jittered = exponential.mul_f64(rand::rng().random_range(0.5..1.0));
    jittered.max(Duration::from_secs(u64::from(retry_after.unwrap_or(0))))
}

/// Runs a sync: plans, enqueues, and drains the outbox through the plugin.
#[allow(clippy::too_many_arguments)]
pub async fn run_sync<S: IdentityStore + SyncStore>(
    store: &S,
    host: &PluginHost,
    plugin: &LoadedPlugin,
    sync: &SyncConfig,
    destination: &DestinationConfig,
    batch_size: usize,
) -> Result<SyncReport, SyncError> {
    let plan = plan_changes(store, sync).await?;
    let mut report = SyncReport::default();
    for change in &plan.changes {
        match change.action {
            "add" => report.added += 1,
            "update" => report.updated += 1,
            _ => report.removed += 1,
        }
    }
    store.enqueue(&sync.id, &plan.items, Utc::now()).await?;
    store.confirm_delivered(&sync.id, &plan.confirmed).await?;
    // Recorded once the diff is in the outbox: a crash before this only means a full diff next time.
    store.set_sync_mapping(&sync.id, &plan.mapping_hash).await?;
    let limits = CallLimits {
        limits: destination.limits,
        allow_hosts: destination.allow_hosts.clone(),
        secrets: destination.secrets.clone(),
    };
    let mode = match sync.mode {
        SyncMode::Upsert => spindle_plugin_host::SyncMode::Upsert,
        SyncMode::Mirror => spindle_plugin_host::SyncMode::Mirror,
        SyncMode::AddOnly => spindle_plugin_host::SyncMode::AddOnly,
    };
    let batch_size = u32::try_from(batch_size.max(1)).unwrap_or(u32::MAX);
    let mut unavailable_in_a_row = 0;
    loop {
        let now = Utc::now();
        let due: Vec<OutboxRow> = store.due(&sync.id, now, batch_size).await?;
        if due.is_empty() {
            // Wait for retries that are due soon; leave later ones for the next run.
            match next_due(store, &sync.id, now).await? {
                Some(wait) if wait <= WAIT_IN_RUN => {
                    tokio::time::sleep(wait).await;
                    continue;
                }
                _ => break,
            }
        }
        let batch = Batch {
            mode,
            config: destination.config.to_string(),
            upserts: due
                .iter()
                .filter(|r| r.item.op == "upsert")
                .map(|r| Upsert {
                    id: r.id.to_string(),
                    identifiers: identifiers(&r.item.identifiers),
                    fields: r.item.payload.clone(),
                })
                .collect(),
            removals: due
                .iter()
                .filter(|r| r.item.op == "remove")
                .map(|r| Removal {
                    id: r.id.to_string(),
                    identifiers: identifiers(&r.item.identifiers),
                })
                .collect(),
        };
        let retry_or_reject =
            |id: i64, attempts: u32, after: Option<u32>, error: String| -> Settlement {
                if attempts + 1 >= MAX_ATTEMPTS {
                    Settlement::Rejected {
                        id,
                        reason: format!("gave up after {MAX_ATTEMPTS} attempts: {error}"),
                    }
                } else {
                    let wait =
                        chrono::Duration::from_std(backoff(attempts, after)).unwrap_or_default();
                    Settlement::Retry {
                        id,
                        not_before: Utc::now() + wait,
                        error,
                    }
                }
            };
        let settlements: Vec<Settlement> = match host.sync_batch(plugin, &limits, &batch).await {
            Ok(Ok(outcomes)) => {
                report.unavailable = None;
                unavailable_in_a_row = 0;
                let mut by_row: HashMap<i64, Outcome> = outcomes
                    .into_iter()
                    .filter_map(|o| o.id.parse::<i64>().ok().map(|id| (id, o.outcome)))
                    .collect();
                due.iter()
                    .map(|row| match by_row.remove(&row.id) {
                        Some(Outcome::Delivered) => Settlement::Delivered { id: row.id },
                        Some(Outcome::Rejected(reason)) => {
                            Settlement::Rejected { id: row.id, reason }
                        }
                        Some(Outcome::Retry(after)) => retry_or_reject(
                            row.id,
                            row.attempts,
                            after,
                            "the destination asked to retry".into(),
                        ),
                        None => retry_or_reject(
                            row.id,
                            row.attempts,
                            None,
                            "the plugin reported no outcome for this record".into(),
                        ),
                    })
                    .collect()
            }
            Ok(Err(BatchError::RateLimited(after))) => {
                report.unavailable = Some("rate limited".into());
                retry_all(&due, after, "rate limited")
            }
            Ok(Err(BatchError::Unavailable(why))) => {
                unavailable_in_a_row += 1;
                let settlements = retry_all(&due, None, &why);
                report.unavailable = Some(why);
                settlements
            }
            Ok(Err(
                BatchError::Unauthorized(why)
                | BatchError::InvalidConfig(why)
                | BatchError::Fatal(why),
            )) => {
                return Err(SyncError::Destination {
                    destination: destination.id.clone(),
                    reason: why,
                });
            }
            Err(err) => {
                // A plugin failure (trap, limit) fails the batch; its records wait for the next attempt.
                let settlements = retry_all(&due, None, &err.to_string());
                store.settle(&sync.id, &settlements, Utc::now()).await?;
                return Err(SyncError::Plugin(err));
            }
        };
        for settlement in &settlements {
            match settlement {
                Settlement::Delivered { .. } => report.delivered += 1,
                Settlement::Rejected { .. } => report.rejected += 1,
                Settlement::Retry { .. } => report.retried += 1,
            }
        }
        store.settle(&sync.id, &settlements, Utc::now()).await?;
        if unavailable_in_a_row >= UNAVAILABLE_IN_A_ROW {
            break;
        }
    }
    report.pending = store.pending(&sync.id).await?;
    tracing::info!(sync = %sync.id, added = report.added, updated = report.updated, removed = report.removed, delivered = report.delivered, rejected = report.rejected, retried = report.retried, pending = report.pending, "sync run finished");
    Ok(report)
}

/// Every change of a batch that failed as a whole goes back to the outbox, due after a backoff.
fn retry_all(due: &[OutboxRow], retry_after: Option<u32>, error: &str) -> Vec<Settlement> {
    due.iter()
        .map(|row| Settlement::Retry {
            id: row.id,
            not_before: Utc::now()
                + chrono::Duration::from_std(backoff(row.attempts, retry_after))
                    .unwrap_or_default(),
            error: error.to_owned(),
        })
        .collect()
}

/// How long until the next pending change of a sync is due, if any is pending.
async fn next_due<S: SyncStore>(
    store: &S,
    sync: &str,
    now: DateTime<Utc>,
) -> Result<Option<Duration>, SyncError> {
    if store.pending(sync).await? == 0 {
        return Ok(None);
    }
    let horizon = now + chrono::Duration::seconds(WAIT_IN_RUN.as_secs() as i64 + 1);
    let soon = store.due(sync, horizon, 1).await?;
    Ok(Some(if soon.is_empty() {
        Duration::MAX
    } else {
        Duration::from_millis(250)
    }))
}
