//! Resolution against the store: incremental steps, full rebuilds, and stable profile ids.
//!
//! An incremental step takes the records changed since the last step (the store's change sequence), finds
//! every profile they could touch (their old profiles, profiles holding their identifiers, and so on
//! through shared identifiers until nothing new is reached), resolves that closed set of records from scratch
//! and writes the result in one transaction. Because resolution of a closed set does not depend on anything
//! outside it, a step gives exactly what a full rebuild would (the property tests of `resolve` check the
//! underlying fact).
//!
//! Profile ids survive: a resolved cluster keeps the old id that covers most of its records (ties: the
//! smaller id); other old ids are retired and aliased to the cluster that took most of their records, so
//! `profile 17` keeps answering after 17 was merged into 12. New clusters get new ids.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use regex::Regex;
use spindle_config::{IdentityConfig, ProfilesConfig};
use spindle_model::{RecordKey, StoredRecord};
use spindle_store::{IdentityStore, ProfileStore, ProfileWrite, ResolutionWrite, StoreError};

use crate::normalize::Normalizer;
use crate::profile::{self, LinkEvidence, ProfileIdentifier, RejectedIdentifier, key_of};
use crate::resolve::{Cluster, Node, Rules, resolve};

/// Why resolution failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The store failed; nothing of the step was written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blocked pattern does not compile (configuration validation normally catches this).
    #[error("invalid blocked pattern `{pattern}`: {reason}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// Why.
        reason: String,
    },
    /// A stored document could not be encoded.
    #[error("cannot encode a profile: {0}")]
    Encode(#[from] serde_json::Error),
}

/// What a resolution step or rebuild changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ResolveReport {
    /// Records resolved.
    pub records: u64,
    /// Profiles written (new or changed).
    pub profiles_written: u64,
    /// New profile ids given.
    pub created: u64,
    /// Old profiles merged into another.
    pub merged: u64,
    /// Old profiles whose records now form several profiles.
    pub split: u64,
    /// Old profiles with exactly the same records as before.
    pub unchanged: u64,
}

impl ResolveReport {
    fn absorb(&mut self, other: ResolveReport) {
        self.records += other.records;
        self.profiles_written += other.profiles_written;
        self.created += other.created;
        self.merged += other.merged;
        self.split += other.split;
        self.unchanged += other.unchanged;
    }
}

/// One record as seen by identity: its linking pairs and every identifier, normalised or refused.
#[derive(Debug, Clone)]
pub(crate) struct Analysed {
    pub links: Vec<(String, String)>,
    /// `(type, normalised, raw)`.
    pub identifiers: Vec<(String, String, String)>,
    pub rejected: Vec<RejectedIdentifier>,
}

/// Resolves records into profiles with the configured rules.
pub struct IdentityEngine<'a, S> {
    store: &'a S,
    identity: &'a IdentityConfig,
    profiles: &'a ProfilesConfig,
    rules: Rules,
    link_on: HashSet<String>,
    blocked: HashSet<String>,
    patterns: Vec<Regex>,
}

impl<S> std::fmt::Debug for IdentityEngine<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityEngine")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// Records read per incremental step.
const STEP: u32 = 5_000;
/// Records read per page during a rebuild.
const PAGE: u32 = 20_000;

fn compound_value(record: &StoredRecord, field: &str) -> Option<String> {
    let text = |name: &str| -> Option<String> {
        let value = record.record.traits.get(name)?;
        let raw = match value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => return None,
            other => other.to_string(),
        };
        let folded = raw
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        (!folded.is_empty()).then_some(folded)
    };
    if field == "first_initial" {
        return text("first_name")
            .and_then(|name| name.chars().next())
            .map(|c| c.to_string());
    }
    text(field)
}

impl<'a, S: ProfileStore + IdentityStore> IdentityEngine<'a, S> {
    /// An engine over `store` with the `[identity]` and `[profiles]` rules.
    pub fn new(
        store: &'a S,
        identity: &'a IdentityConfig,
        profiles: &'a ProfilesConfig,
    ) -> Result<Self, IdentityError> {
        let patterns = identity
            .blocked_patterns
            .iter()
            .map(|p| {
                Regex::new(p).map_err(|err| IdentityError::Pattern {
                    pattern: p.clone(),
                    reason: err.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rules = Rules {
            priority: identity.priority.clone(),
            limits: identity
                .limits
                .iter()
                .map(|(k, v)| (k.clone(), *v as usize))
                .collect(),
        };
        Ok(Self {
            store,
            identity,
            profiles,
            rules,
            link_on: identity.link_on.iter().cloned().collect(),
            blocked: identity
                .blocked
                .iter()
                .map(|b| b.trim().to_lowercase())
                .collect(),
            patterns,
        })
    }

    /// True when a normalised value never links.
    pub fn is_blocked(&self, value: &str) -> bool {
        self.blocked.contains(&value.to_lowercase())
            || self.patterns.iter().any(|p| p.is_match(value))
    }

    pub(crate) fn analyse(&self, normalizer: &mut Normalizer, record: &StoredRecord) -> Analysed {
        let mut links = Vec::new();
        let mut identifiers = Vec::new();
        let mut rejected = Vec::new();
        for identifier in &record.record.identifiers {
            match normalizer.normalize(&identifier.kind, &identifier.value) {
                Ok(value) => {
                    if self.link_on.contains(&identifier.kind) && !self.is_blocked(&value) {
                        links.push((identifier.kind.clone(), value.clone()));
                    }
                    identifiers.push((identifier.kind.clone(), value, identifier.value.clone()));
                }
                Err(reason) => rejected.push(RejectedIdentifier {
                    kind: identifier.kind.clone(),
                    raw: identifier.value.clone(),
                    reason,
                    record: key_of(record),
                }),
            }
        }
        for rule in &self.identity.compound {
            let values: Option<Vec<String>> = rule
                .fields
                .iter()
                .map(|f| compound_value(record, f))
                .collect();
            if let Some(values) = values {
                links.push((format!("compound:{}", rule.name), values.join("|")));
            }
        }
        links.sort();
        links.dedup();
        Analysed {
            links,
            identifiers,
            rejected,
        }
    }

    /// Resolves every record changed since the last step; returns what changed.
    pub async fn resolve_pending(&self) -> Result<ResolveReport, IdentityError> {
        let mut report = ResolveReport::default();
        loop {
            let high_water = self.store.identity_high_water().await?;
            let changed = self.store.records_since(high_water, STEP).await?;
            let Some(last) = changed.last().map(|r| r.seq) else {
                break;
            };
            report.absorb(self.step(changed, last).await?);
        }
        Ok(report)
    }

    async fn step(
        &self,
        changed: Vec<StoredRecord>,
        high_water: i64,
    ) -> Result<ResolveReport, IdentityError> {
        let mut normalizer = Normalizer::new(self.identity.default_region.as_deref());
        let changed_keys: Vec<RecordKey> = changed.iter().map(key_of).collect();
        let mut frontier: BTreeSet<(String, String)> = BTreeSet::new();
        for record in &changed {
            frontier.extend(self.analyse(&mut normalizer, record).links);
        }
        let mut visited: BTreeSet<i64> = self
            .store
            .profiles_of_records(&changed_keys)
            .await?
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        let mut to_expand: Vec<i64> = visited.iter().copied().collect();
        let mut seen_values: HashSet<(String, String)> = HashSet::new();
        loop {
            // Identifiers of profiles reached in the last round may lead to further profiles.
            for (_, kind, value) in self.store.profile_identifiers(&to_expand).await? {
                let linkable = kind.starts_with("compound:")
                    || (self.link_on.contains(&kind) && !self.is_blocked(&value));
                if linkable {
                    frontier.insert((kind, value));
                }
            }
            let fresh: Vec<(String, String)> = frontier
                .iter()
                .filter(|v| !seen_values.contains(*v))
                .cloned()
                .collect();
            seen_values.extend(fresh.iter().cloned());
            frontier.clear();
            if fresh.is_empty() {
                break;
            }
            to_expand = self
                .store
                .profiles_with_identifiers(&fresh)
                .await?
                .into_iter()
                .map(|(_, _, id)| id)
                .filter(|id| visited.insert(*id))
                .collect();
            if to_expand.is_empty() {
                break;
            }
        }
        let visited: Vec<i64> = visited.into_iter().collect();
        let old_members = self.store.profile_members(&visited).await?;
        let mut keys: BTreeSet<RecordKey> = changed_keys.into_iter().collect();
        keys.extend(old_members.iter().map(|(_, k)| k.clone()));
        let keys: Vec<RecordKey> = keys.into_iter().collect();
        let records = self.store.records_by_keys(&keys).await?;
        let old: HashMap<RecordKey, i64> = old_members.into_iter().map(|(id, k)| (k, id)).collect();
        let write = self
            .resolve_set(records, &old, &visited, Some(high_water), false)
            .await?;
        Ok(write)
    }

    /// Resolves every record from scratch, keeping ids where profiles survive; returns what changed.
    pub async fn rebuild(&self) -> Result<ResolveReport, IdentityError> {
        let mut records = Vec::new();
        let mut after = 0;
        loop {
            let page = self.store.records_since(after, PAGE).await?;
            let Some(last) = page.last().map(|r| r.seq) else {
                break;
            };
            after = last;
            records.extend(page);
        }
        let high_water = records
            .iter()
            .map(|r| r.seq)
            .max()
            .unwrap_or(0)
            .max(self.store.identity_high_water().await?);
        let old: HashMap<RecordKey, i64> = self
            .store
            .all_memberships()
            .await?
            .into_iter()
            .map(|(id, k)| (k, id))
            .collect();
        let visited: Vec<i64> = old
            .values()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        self.resolve_set(records, &old, &visited, Some(high_water), true)
            .await
    }

    async fn resolve_set(
        &self,
        records: Vec<StoredRecord>,
        old: &HashMap<RecordKey, i64>,
        old_profiles: &[i64],
        high_water: Option<i64>,
        replace_all: bool,
    ) -> Result<ResolveReport, IdentityError> {
        let mut normalizer = Normalizer::new(self.identity.default_region.as_deref());
        let analysed: Vec<Analysed> = records
            .iter()
            .map(|r| self.analyse(&mut normalizer, r))
            .collect();
        // Keys sort like record keys (resolution orders by them); the index leads back to the record.
        let nodes: Vec<Node<(RecordKey, usize)>> = analysed
            .iter()
            .enumerate()
            .map(|(i, a)| Node {
                key: (key_of(&records[i]), i),
                links: a.links.clone(),
            })
            .collect();
        let clusters: Vec<Cluster<usize>> = resolve(&nodes, &self.rules)
            .into_iter()
            .map(|c| Cluster {
                members: c.members.into_iter().map(|(_, i)| i).collect(),
                links: c
                    .links
                    .into_iter()
                    .map(|l| crate::resolve::Link {
                        rule: l.rule,
                        value: l.value,
                        a: l.a.1,
                        b: l.b.1,
                    })
                    .collect(),
            })
            .collect();

        let (ids, report) = self
            .assign_ids(&records, &clusters, old, old_profiles)
            .await?;
        let now = Utc::now();
        let mut profiles = Vec::with_capacity(clusters.len());
        for (cluster, id) in clusters.iter().zip(&ids) {
            profiles.push(self.profile_write(*id, cluster, &records, &analysed, now)?);
        }
        let assigned: HashSet<i64> = ids.iter().copied().collect();
        let mut removed = Vec::new();
        let mut aliases = Vec::new();
        for old_id in old_profiles.iter().filter(|id| !assigned.contains(id)) {
            removed.push(*old_id);
            // The cluster that took most of its records inherits the id.
            let mut takers: BTreeMap<i64, usize> = BTreeMap::new();
            for (cluster, id) in clusters.iter().zip(&ids) {
                let taken = cluster
                    .members
                    .iter()
                    .filter(|m| old.get(&key_of(&records[**m])) == Some(old_id))
                    .count();
                if taken > 0 {
                    *takers.entry(*id).or_default() += taken;
                }
            }
            if let Some((heir, _)) = takers
                .into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
            {
                aliases.push((*old_id, heir));
            }
        }
        let report = ResolveReport {
            records: records.len() as u64,
            profiles_written: profiles.len() as u64,
            ..report
        };
        self.store
            .write_resolution(ResolutionWrite {
                removed,
                profiles,
                aliases,
                high_water,
                replace_all,
            })
            .await?;
        tracing::debug!(
            records = report.records,
            profiles = report.profiles_written,
            created = report.created,
            merged = report.merged,
            split = report.split,
            "identity resolved"
        );
        Ok(report)
    }

    async fn assign_ids(
        &self,
        records: &[StoredRecord],
        clusters: &[Cluster<usize>],
        old: &HashMap<RecordKey, i64>,
        old_profiles: &[i64],
    ) -> Result<(Vec<i64>, ResolveReport), IdentityError> {
        let mut candidates: Vec<(usize, i64, usize)> = Vec::new();
        let mut clusters_of_old: HashMap<i64, BTreeSet<usize>> = HashMap::new();
        let mut old_sizes: HashMap<i64, usize> = HashMap::new();
        for id in old.values() {
            *old_sizes.entry(*id).or_default() += 1;
        }
        for (index, cluster) in clusters.iter().enumerate() {
            let mut overlap: BTreeMap<i64, usize> = BTreeMap::new();
            for member in &cluster.members {
                if let Some(id) = old.get(&key_of(&records[*member])) {
                    *overlap.entry(*id).or_default() += 1;
                    clusters_of_old.entry(*id).or_default().insert(index);
                }
            }
            candidates.extend(overlap.into_iter().map(|(id, n)| (index, id, n)));
        }
        candidates.sort_by(|x, y| {
            y.2.cmp(&x.2)
                .then_with(|| x.1.cmp(&y.1))
                .then_with(|| x.0.cmp(&y.0))
        });
        let mut ids: Vec<Option<i64>> = vec![None; clusters.len()];
        let mut taken: HashSet<i64> = HashSet::new();
        for (index, id, _) in candidates {
            if ids[index].is_none() && !taken.contains(&id) {
                ids[index] = Some(id);
                taken.insert(id);
            }
        }
        let fresh = ids.iter().filter(|i| i.is_none()).count() as u64;
        let mut next = if fresh > 0 {
            self.store.reserve_profile_ids(fresh).await?
        } else {
            0
        };
        let ids: Vec<i64> = ids
            .into_iter()
            .map(|id| {
                id.unwrap_or_else(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        let mut report = ResolveReport {
            created: fresh,
            ..ResolveReport::default()
        };
        for old_id in old_profiles {
            let spread = clusters_of_old.get(old_id).map_or(0, BTreeSet::len);
            if spread > 1 {
                report.split += 1;
            }
            if !taken.contains(old_id) && spread > 0 {
                report.merged += 1;
            }
            if let Some(index) = ids.iter().position(|id| id == old_id) {
                let same = clusters[index].members.len()
                    == old_sizes.get(old_id).copied().unwrap_or(0)
                    && clusters[index]
                        .members
                        .iter()
                        .all(|m| old.get(&key_of(&records[*m])) == Some(old_id));
                if same {
                    report.unchanged += 1;
                }
            }
        }
        Ok((ids, report))
    }

    fn profile_write(
        &self,
        id: i64,
        cluster: &Cluster<usize>,
        records: &[StoredRecord],
        analysed: &[Analysed],
        now: DateTime<Utc>,
    ) -> Result<ProfileWrite, IdentityError> {
        let members: Vec<&StoredRecord> = cluster.members.iter().map(|m| &records[*m]).collect();
        let mut identifiers: BTreeMap<(String, String), (BTreeSet<String>, BTreeSet<String>)> =
            BTreeMap::new();
        let mut rejected = Vec::new();
        let mut index_values: BTreeSet<(String, String)> = BTreeSet::new();
        for member in &cluster.members {
            let record = &records[*member];
            for (kind, value, raw) in &analysed[*member].identifiers {
                let entry = identifiers
                    .entry((kind.clone(), value.clone()))
                    .or_default();
                entry.0.insert(raw.clone());
                entry.1.insert(record.source.clone());
                index_values.insert((kind.clone(), value.clone()));
            }
            index_values.extend(
                analysed[*member]
                    .links
                    .iter()
                    .filter(|(k, _)| k.starts_with("compound:"))
                    .cloned(),
            );
            rejected.extend(analysed[*member].rejected.iter().cloned());
        }
        let identifiers: Vec<ProfileIdentifier> = identifiers
            .into_iter()
            .map(|((kind, value), (raw, sources))| ProfileIdentifier {
                kind,
                value,
                raw: raw.into_iter().collect(),
                sources: sources.into_iter().collect(),
            })
            .collect();
        let links: Vec<LinkEvidence> = cluster
            .links
            .iter()
            .map(|l| LinkEvidence {
                rule: l.rule.clone(),
                value: l.value.clone(),
                a: key_of(&records[l.a]),
                b: key_of(&records[l.b]),
            })
            .collect();
        let document = profile::build(self.profiles, &members, identifiers, rejected, links, now);
        let mut search = vec![id.to_string()];
        search.extend(document.identifiers.iter().map(|i| i.value.to_lowercase()));
        for name in ["first_name", "last_name", "company", "name"] {
            if let Some(value) = document.traits.get(name).and_then(|t| t.value.as_str()) {
                search.push(value.to_lowercase());
            }
        }
        Ok(ProfileWrite {
            id,
            search_text: search.join(" "),
            members: document.records.clone(),
            identifiers: index_values.into_iter().collect(),
            document: serde_json::to_value(&document)?,
        })
    }
}
