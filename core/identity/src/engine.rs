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
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
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
    /// Ids of the profiles written or removed: what segment memberships must look at again.
    #[serde(skip)]
    pub touched: BTreeSet<i64>,
}

impl ResolveReport {
    fn absorb(&mut self, other: ResolveReport) {
        self.records += other.records;
        self.profiles_written += other.profiles_written;
        self.created += other.created;
        self.merged += other.merged;
        self.split += other.split;
        self.unchanged += other.unchanged;
        self.touched.extend(other.touched);
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

/// The raw spellings of one identifier in a profile and the sources that gave it.
type Spellings<'r> = (BTreeSet<&'r str>, BTreeSet<&'r str>);

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
        let listed = if value.chars().any(char::is_uppercase) {
            self.blocked.contains(&value.to_lowercase())
        } else {
            self.blocked.contains(value)
        };
        listed || self.patterns.iter().any(|p| p.is_match(value))
    }

    fn normalizer(&self) -> Normalizer {
        Normalizer::new(self.identity.default_region.as_deref())
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
        // One normaliser for every step: records of profiles touched again are not parsed again.
        let mut normalizer = self.normalizer();
        loop {
            let high_water = self.store.identity_high_water().await?;
            let changed = self.store.records_since(high_water, STEP).await?;
            let Some(last) = changed.last().map(|r| r.seq) else {
                break;
            };
            report.absorb(self.step(&mut normalizer, changed, last).await?);
        }
        Ok(report)
    }

    async fn step(
        &self,
        normalizer: &mut Normalizer,
        changed: Vec<StoredRecord>,
        high_water: i64,
    ) -> Result<ResolveReport, IdentityError> {
        let changed_keys: Vec<RecordKey> = changed.iter().map(key_of).collect();
        let mut analysed: Vec<Analysed> = changed
            .iter()
            .map(|record| self.analyse(normalizer, record))
            .collect();
        let mut frontier: BTreeSet<(String, String)> = analysed
            .iter()
            .flat_map(|a| a.links.iter().cloned())
            .collect();
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
            let reached = self.store.profile_identifiers(&to_expand).await?;
            for (_, kind, value) in reached {
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
        // The changed records are in hand (and analysed); only the other members of the profiles reached
        // are read.
        let in_hand: HashSet<&RecordKey> = changed_keys.iter().collect();
        let others: BTreeSet<&RecordKey> = old_members
            .iter()
            .map(|(_, k)| k)
            .filter(|k| !in_hand.contains(k))
            .collect();
        let others: Vec<RecordKey> = others.into_iter().cloned().collect();
        let fetched = self.store.records_by_keys(&others).await?;
        analysed.extend(
            fetched
                .iter()
                .map(|record| self.analyse(normalizer, record)),
        );
        let mut records = changed;
        records.extend(fetched);
        let old: HashMap<RecordKey, i64> = old_members.into_iter().map(|(id, k)| (k, id)).collect();
        self.resolve_set(records, analysed, &old, &visited, Some(high_water), false)
            .await
    }

    /// Resolves every record from scratch, keeping ids where profiles survive; returns what changed.
    pub async fn rebuild(&self) -> Result<ResolveReport, IdentityError> {
        let mut normalizer = self.normalizer();
        let mut records = Vec::new();
        let mut analysed = Vec::new();
        let mut after = 0;
        loop {
            let page = self.store.records_since(after, PAGE).await?;
            let Some(last) = page.last().map(|r| r.seq) else {
                break;
            };
            after = last;
            analysed.extend(page.iter().map(|r| self.analyse(&mut normalizer, r)));
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
        self.resolve_set(records, analysed, &old, &visited, Some(high_water), true)
            .await
    }

    /// Resolves `records` (with their analyses, in the same order) as a closed set and writes the result.
    #[allow(clippy::too_many_arguments)]
    async fn resolve_set(
        &self,
        records: Vec<StoredRecord>,
        analysed: Vec<Analysed>,
        old: &HashMap<RecordKey, i64>,
        old_profiles: &[i64],
        high_water: Option<i64>,
        replace_all: bool,
    ) -> Result<ResolveReport, IdentityError> {
        // A record deleted at its source no longer vouches for anyone: it leaves its profile, and a profile
        // left without records is removed.
        let (records, analysed): (Vec<StoredRecord>, Vec<Analysed>) = records
            .into_iter()
            .zip(analysed)
            .filter(|(record, _)| !record.record.deleted)
            .unzip();
        let mut analysed = analysed;
        let record_count = records.len() as u64;
        let keys: Vec<RecordKey> = records.iter().map(key_of).collect();
        // Resolution orders records by key: each record's node key is its rank in that order (a plain number,
        // cheap to clone and compare), and `order` leads from a rank back to the record.
        let mut order: Vec<usize> = (0..records.len()).collect();
        order.sort_by(|a, b| keys[*a].cmp(&keys[*b]));
        let mut rank = vec![0; records.len()];
        for (position, index) in order.iter().enumerate() {
            rank[*index] = position;
        }
        let nodes: Vec<Node<usize>> = analysed
            .iter_mut()
            .enumerate()
            .map(|(i, a)| Node {
                key: rank[i],
                links: std::mem::take(&mut a.links),
            })
            .collect();
        let clusters: Vec<Cluster<usize>> = resolve(&nodes, &self.rules)
            .into_iter()
            .map(|c| Cluster {
                members: c.members.into_iter().map(|r| order[r]).collect(),
                links: c
                    .links
                    .into_iter()
                    .map(|l| crate::resolve::Link {
                        rule: l.rule,
                        value: l.value,
                        a: order[l.a],
                        b: order[l.b],
                    })
                    .collect(),
            })
            .collect();
        drop((order, rank));

        // The profile each record had before, if any.
        let old_of: Vec<Option<i64>> = keys.iter().map(|k| old.get(k).copied()).collect();
        let (ids, report) = self
            .assign_ids(&clusters, &old_of, old, old_profiles)
            .await?;

        let assigned: HashSet<i64> = ids.iter().copied().collect();
        // For each retired id, how many of its records each new profile took.
        let mut takers: HashMap<i64, BTreeMap<i64, usize>> = HashMap::new();
        for (cluster, id) in clusters.iter().zip(&ids) {
            for member in &cluster.members {
                if let Some(old_id) = old_of[*member]
                    && !assigned.contains(&old_id)
                {
                    *takers.entry(old_id).or_default().entry(*id).or_default() += 1;
                }
            }
        }
        let mut removed = Vec::new();
        let mut aliases = Vec::new();
        for old_id in old_profiles.iter().filter(|id| !assigned.contains(id)) {
            removed.push(*old_id);
            // The cluster that took most of its records inherits the id.
            if let Some((heir, _)) = takers
                .remove(old_id)
                .unwrap_or_default()
                .into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
            {
                aliases.push((*old_id, heir));
            }
        }

        let now = Utc::now();
        // Each record serves one profile: it is released once that profile's document is built.
        let mut records: Vec<Option<StoredRecord>> = records.into_iter().map(Some).collect();
        let mut profiles = Vec::with_capacity(clusters.len());
        for (cluster, id) in clusters.iter().zip(&ids) {
            let members: Vec<&StoredRecord> = cluster
                .members
                .iter()
                .filter_map(|m| records[*m].as_ref())
                .collect();
            profiles
                .push(self.profile_write(*id, cluster, &members, &keys, &analysed, &nodes, now)?);
            for member in &cluster.members {
                records[*member] = None;
            }
        }
        drop(records);
        let report = ResolveReport {
            records: record_count,
            profiles_written: profiles.len() as u64,
            touched: profiles
                .iter()
                .map(|p| p.id)
                .chain(removed.iter().copied())
                .collect(),
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
        clusters: &[Cluster<usize>],
        old_of: &[Option<i64>],
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
                if let Some(id) = old_of[*member] {
                    *overlap.entry(id).or_default() += 1;
                    clusters_of_old.entry(id).or_default().insert(index);
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
        let mut position: HashMap<i64, usize> = HashMap::with_capacity(ids.len());
        for (index, id) in ids.iter().enumerate() {
            position.entry(*id).or_insert(index);
        }
        for old_id in old_profiles {
            let spread = clusters_of_old.get(old_id).map_or(0, BTreeSet::len);
            if spread > 1 {
                report.split += 1;
            }
            if !taken.contains(old_id) && spread > 0 {
                report.merged += 1;
            }
            if let Some(index) = position.get(old_id) {
                let members = &clusters[*index].members;
                let same = members.len() == old_sizes.get(old_id).copied().unwrap_or(0)
                    && members.iter().all(|m| old_of[*m] == Some(*old_id));
                if same {
                    report.unchanged += 1;
                }
            }
        }
        Ok((ids, report))
    }

    #[allow(clippy::too_many_arguments)]
    fn profile_write(
        &self,
        id: i64,
        cluster: &Cluster<usize>,
        members: &[&StoredRecord],
        keys: &[RecordKey],
        analysed: &[Analysed],
        nodes: &[Node<usize>],
        now: DateTime<Utc>,
    ) -> Result<ProfileWrite, IdentityError> {
        // `(type, value)` -> (raw spellings, sources); ordered like the owned strings they become.
        let mut identifiers: BTreeMap<(&str, &str), Spellings<'_>> = BTreeMap::new();
        let mut compound: BTreeSet<(&str, &str)> = BTreeSet::new();
        let mut rejected = Vec::new();
        for (member, record) in cluster.members.iter().zip(members) {
            for (kind, value, raw) in &analysed[*member].identifiers {
                let entry = identifiers
                    .entry((kind.as_str(), value.as_str()))
                    .or_default();
                entry.0.insert(raw.as_str());
                entry.1.insert(record.source.as_str());
            }
            compound.extend(
                nodes[*member]
                    .links
                    .iter()
                    .filter(|(k, _)| k.starts_with("compound:"))
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            );
            rejected.extend(analysed[*member].rejected.iter().cloned());
        }
        let mut index_values: BTreeSet<(&str, &str)> = identifiers.keys().copied().collect();
        index_values.extend(compound);
        let index_values: Vec<(String, String)> = index_values
            .into_iter()
            .map(|(kind, value)| (kind.to_owned(), value.to_owned()))
            .collect();
        let identifiers: Vec<ProfileIdentifier> = identifiers
            .into_iter()
            .map(|((kind, value), (raw, sources))| ProfileIdentifier {
                kind: kind.to_owned(),
                value: value.to_owned(),
                raw: raw.into_iter().map(str::to_owned).collect(),
                sources: sources.into_iter().map(str::to_owned).collect(),
            })
            .collect();
        let links: Vec<LinkEvidence> = cluster
            .links
            .iter()
            .map(|l| LinkEvidence {
                rule: l.rule.clone(),
                value: l.value.clone(),
                a: keys[l.a].clone(),
                b: keys[l.b].clone(),
            })
            .collect();
        let document = profile::build(self.profiles, members, identifiers, rejected, links, now);
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
            identifiers: index_values,
            document: serde_json::to_value(&document)?,
        })
    }
}
