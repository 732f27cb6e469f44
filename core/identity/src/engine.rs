//! Resolution against the store: incremental steps, full rebuilds, and stable profile ids.
//!
//! An incremental step takes the records changed since the last step (the store's change sequence), finds
//! every profile they could touch (their old profiles, profiles holding their identifiers, and so on
//! through shared identifiers until nothing new is reached), resolves that closed set of records from scratch
//! and writes the result in one transaction. Because resolution of a closed set does not depend on anything
//! outside it, a step gives exactly what a full rebuild would (the property tests of `resolve` check the
//! underlying fact).
//!
//! A full pass resolves every stored record as one closed set: [`IdentityEngine::rebuild`] always, and
//! [`IdentityEngine::resolve_pending`] when at least half of the stored records are pending (a first build,
//! a source loaded in full), where overlapping steps would resolve and write the same profiles many times
//! over, or when the store's profiles were built otherwise ([`BuiltWith`]): by another normaliser
//! ([`NORMALIZER_VERSION`](crate::normalize::NORMALIZER_VERSION)), whose identifiers would not meet the
//! values this one gives, or under other `[identity]` or `[profiles]` rules, which steps would apply only
//! to the profiles their records reach. A full pass gives the same profiles as steps would; it differs in
//! how it reads and writes:
//! - it reads records page by page, decoding only their identifiers (and traits for compound rules), and
//!   keeps what resolution needs compactly (keys packed end to end, each distinct linking value numbered
//!   once) and each record's payload as the JSON text it read ([`EncodedBody`]: about 300 MB for a
//!   million records); it decodes a chunk of profiles' records in full only when it builds their
//!   documents, so it never holds every record decoded at once, and never reads a record twice (reading
//!   each chunk's records again by key cost a second of a million-record pass);
//! - it writes documents chunk by chunk (about [`WRITE_RECORDS`] records each, one transaction each) in a
//!   pipeline: the last chunk is written by a task of its own while this chunk is decoded, analysed and
//!   built on every core. Every member and identifier row is staged: each chunk's write adds a slice of
//!   them, in key order, to staging tables, and the last write puts those in place of the live ones
//!   ([`ResolutionRows::Staged`], [`RowSlices`]). That costs a fraction of updating each profile's rows
//!   in place, and spreads what is left over the chunks (replacing a million records' rows at the end
//!   took 3.6 s on one core; staged, the end takes 1 s). The last write also removes retired profiles,
//!   records aliases and advances the high-water mark. No write of a full pass checkpoints the
//!   write-ahead log; the checkpoint after the last one copies it all, beside whatever comes next.
//!   While it runs, readers see documents resolved anew for some profiles and not yet for others, and
//!   lookups by record or identifier answer from the previous resolution until the last write commits.
//!   An interrupted pass (a `resolve_pending` pass or a rebuild) leaves its staging tables behind
//!   (unless its last write was already committing, which completes it), and the profiles it wrote list
//!   rows that were never put in place: the next `resolve_pending` sees that
//!   (`IdentityStore::full_pass_unfinished`) and runs a full pass, and until a pass ends, the store
//!   refuses a step's write. Documents it wrote for new ids have no member rows: the next full pass
//!   removes them, as it removes every profile without members. A write of an interrupted resolution
//!   may still be committing when the next one starts: each starts by waiting for it
//!   (`IdentityStore::settle_resolution_writes`), so that it reads the state that write leaves rather
//!   than have it land in the middle of its own reads.
//! - a record changed by a source during the pass is resolved and built as first read; it is pending
//!   again (its change sequence moved on), so the next step settles it.
//!
//! A step holds its records in hand and writes in one transaction, as described above, writing only the
//! member and identifier rows that differ from those it read ([`ResolutionRows::Changes`]). It notes the
//! profile change log's generation before its first read; should another write of profiles commit before
//! the step's write, the store does not trust the differences and compares each written profile's rows
//! with what it holds instead.
//!
//! Profile ids survive: a resolved cluster keeps the old id that covers most of its records (ties: the
//! smaller id); other old ids are retired and aliased to the cluster that took most of their records, so
//! `profile 17` keeps answering after 17 was merged into 12. New clusters get new ids.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::time::Instant;

use chrono::{DateTime, Utc};
use rayon::prelude::*;
use spindle_config::{IdentityConfig, ProfilesConfig};
use spindle_model::{RecordKey, StoredRecord};
use spindle_store::{
    AllRows, BuiltWith, EncodedBody, EncodedRecord, IdentityStore, PayloadParts,
    ProfileChangeStore, ProfileStore, ProfileWrite, ResolutionRows, ResolutionWrite, RowChanges,
    StagedRows, StoreError,
};
use tracing::Instrument;

use crate::links::LinkRules;
use crate::normalize::{NORMALIZER_VERSION, Normalizer};
use crate::profile::{self, LinkEvidence, ProfileIdentifier, RejectedIdentifier, key_of};
use crate::resolve::{Lists, Resolution, Rules, Values, resolve_values};

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
    /// A read or write the resolution runs as a task of its own was cancelled (the runtime is shutting
    /// down); the next resolution redoes what was not written.
    #[error("a store task of the resolution was cancelled")]
    Cancelled,
    /// A stored document could not be encoded.
    #[error("cannot encode a profile: {0}")]
    Encode(#[from] serde_json::Error),
}

/// What a resolution step or rebuild changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ResolveReport {
    /// Records resolved.
    pub records: u64,
    /// Profiles written: those the records resolved belong to, but for those a full pass built again as
    /// they were (a step's are all handed to the store, which leaves alone the few it already holds as
    /// they are).
    pub profiles_written: u64,
    /// New profile ids given.
    pub created: u64,
    /// Old profiles merged into another.
    pub merged: u64,
    /// Old profiles whose records now form several profiles.
    pub split: u64,
    /// Old profiles with exactly the same records as before.
    pub unchanged: u64,
    /// Old profiles that kept their id and were not split, but whose records changed otherwise: they
    /// took in records (of profiles merged into them, or split from others) or lost some that were
    /// deleted.
    pub changed: u64,
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
        self.changed += other.changed;
        self.touched.extend(other.touched);
    }
}

/// One record as seen by identity: its linking pairs and every identifier, normalised or refused.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Analysed {
    pub links: Vec<(String, String)>,
    /// `(type, normalised, raw)`.
    pub identifiers: Vec<(String, String, String)>,
    pub rejected: Vec<RejectedIdentifier>,
}

/// How one identifier normalises: its value and whether it links records, or why it is refused.
type Outcome = Result<(String, bool), String>;

/// What a full pass's first read keeps of a record until it joins the set: each identifier (in the
/// record's order) as `(type, normalised value)` when it links records, `None` otherwise (refused, or of
/// a type that does not link, or blocked), and the compound keys.
struct FirstRead {
    identifiers: Vec<Option<(String, String)>>,
    compound: Vec<(String, String)>,
}

/// The number a full pass keeps for an identifier that does not link records: it is normalised again
/// when its profile is built (a refusal for its reason; the rest are few, or cheap to normalise, like
/// vendor ids), which keeps them out of the values resolution numbers and sorts.
const NORMALISE_AGAIN: u32 = u32::MAX;

/// Resolves records into profiles with the configured rules.
pub struct IdentityEngine<'a, S> {
    store: &'a S,
    identity: &'a IdentityConfig,
    profiles: &'a ProfilesConfig,
    rules: Rules,
    links: LinkRules,
    /// What profiles built by this engine are built with ([`rules_fingerprint`]).
    built_with: BuiltWith,
    /// Records read per incremental step ([`STEP`]; smaller in tests).
    step: u32,
    /// Records per written chunk of a full pass ([`WRITE_RECORDS`]; smaller in tests).
    write_records: usize,
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
const STEP: u32 = 20_000;
/// Records read per page during a full pass.
const PAGE: u32 = 20_000;
/// Memberships read per page during a full pass.
const MEMBERSHIP_PAGE: u32 = 50_000;
/// Records whose profiles a full pass builds and writes together, in one transaction.
const WRITE_RECORDS: usize = 20_000;

/// Record keys packed end to end: sources and streams numbered, external ids in one buffer.
#[derive(Debug, Default)]
struct Keys {
    names: Vec<String>,
    name_ids: HashMap<String, u32>,
    /// The source and stream numbers of the record pushed last: records come in runs of one source
    /// and stream, so hashing their names for each is mostly avoided.
    last_pair: Option<(u32, u32)>,
    /// Per record: its source's and stream's numbers and where its external id ends in `ids`.
    parts: Vec<(u32, u32, usize)>,
    ids: String,
}

impl Keys {
    fn name(&mut self, name: &str) -> u32 {
        if let Some(id) = self.name_ids.get(name) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_owned());
        self.name_ids.insert(name.to_owned(), id);
        id
    }

    fn push(&mut self, source: &str, stream: &str, external_id: &str) {
        let (source, stream) = match self.last_pair {
            Some((s, t))
                if self.names[s as usize] == source && self.names[t as usize] == stream =>
            {
                (s, t)
            }
            _ => (self.name(source), self.name(stream)),
        };
        self.last_pair = Some((source, stream));
        self.ids.push_str(external_id);
        self.parts.push((source, stream, self.ids.len()));
    }

    fn len(&self) -> usize {
        self.parts.len()
    }

    /// Record `i`'s `(source, stream, external id)`, ordered as [`RecordKey`]s are.
    fn get(&self, i: usize) -> (&str, &str, &str) {
        let (source, stream, end) = self.parts[i];
        let start = i
            .checked_sub(1)
            .map_or(0, |previous| self.parts[previous].2);
        (
            &self.names[source as usize],
            &self.names[stream as usize],
            &self.ids[start..end],
        )
    }

    /// Every record, in key order (as [`get`](Self::get) orders them), sorted on every core. Sources and
    /// streams compare by their names' rank, so that only external ids are compared as text.
    fn in_key_order(&self) -> Vec<usize> {
        let rank = ranks(&self.names);
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.par_sort_unstable_by(|a, b| {
            let ((source_a, stream_a, _), (source_b, stream_b, _)) =
                (self.parts[*a], self.parts[*b]);
            (rank[source_a as usize], rank[stream_a as usize])
                .cmp(&(rank[source_b as usize], rank[stream_b as usize]))
                .then_with(|| self.get(*a).2.cmp(self.get(*b).2))
        });
        order
    }

    fn key(&self, i: usize) -> RecordKey {
        let (source, stream, external_id) = self.get(i);
        RecordKey {
            source: source.to_owned(),
            stream: stream.to_owned(),
            external_id: external_id.to_owned(),
        }
    }
}

/// The records of a closed set as resolution sees them (records deleted at their source left out), by
/// index, held compactly: a full pass keeps a million of them without a small allocation per record.
#[derive(Default)]
struct ClosedSet {
    keys: Keys,
    /// Each record's distinct linking values, numbered in `values`.
    links: Lists<u32>,
    values: Values,
    /// The profile each record belonged to before, if any.
    old_of: Vec<Option<i64>>,
    /// The records, each until its profile is built.
    held: Held,
}

/// The records of a [`ClosedSet`], by index.
enum Held {
    /// Decoded, with their analyses: a step's.
    InHand(Vec<Option<(StoredRecord, Analysed)>>),
    /// A full pass's: payloads still JSON text, decoded chunk by chunk when their profiles are built, so
    /// that it never holds every record decoded at once (a million records: about 300 MB as text), and
    /// each record's identifiers as its first read normalised them, numbered in the set's `values` (in
    /// the record's order; [`NORMALISE_AGAIN`] for one that does not link), so that they are not
    /// normalised again.
    Encoded {
        bodies: Vec<Option<EncodedBody>>,
        identifiers: Lists<u32>,
    },
}

impl Default for Held {
    fn default() -> Self {
        Held::Encoded {
            bodies: Vec::new(),
            identifiers: Lists::default(),
        }
    }
}

impl ClosedSet {
    /// Adds a record (not deleted) with its linking pairs and old profile.
    fn push(&mut self, record: &StoredRecord, links: &[(String, String)], old: Option<i64>) {
        let ids: Vec<u32> = links
            .iter()
            .map(|(rule, value)| self.values.intern(rule, value))
            .collect();
        self.push_key(
            (
                &record.source,
                &record.record.stream,
                &record.record.external_id,
            ),
            ids,
            old,
        );
    }

    /// Makes room for `total` records like those of `page` (with their `links`): a full pass's set grows
    /// to hundreds of megabytes, and growing by doubling copied it over and over into fresh memory, which
    /// the kernel clears first (a third of the first read's time).
    fn reserve_like(&mut self, page: &[EncodedRecord], read: &[Option<FirstRead>], total: usize) {
        if page.is_empty() {
            return;
        }
        let per_record = |bytes: usize| bytes.div_ceil(page.len()) * total;
        let id_bytes: usize = page.iter().map(|r| r.external_id.len()).sum();
        let read = read.iter().flatten();
        let identifier_count: usize = read.clone().map(|r| r.identifiers.len()).sum();
        let (value_count, value_bytes) = read
            .flat_map(|r| {
                let identifiers = r.identifiers.iter().flatten().map(|(_, v)| v);
                identifiers.chain(r.compound.iter().map(|(_, v)| v))
            })
            .fold((0, 0), |(n, bytes), value| (n + 1, bytes + value.len()));
        self.keys.parts.reserve(total);
        self.keys.ids.reserve(per_record(id_bytes));
        self.links.reserve(total, per_record(value_count));
        self.values
            .reserve(per_record(value_count), per_record(value_bytes));
        self.old_of.reserve(total);
        if let Held::Encoded {
            bodies,
            identifiers,
        } = &mut self.held
        {
            bodies.reserve(total);
            identifiers.reserve(total, per_record(identifier_count));
        }
    }

    /// [`push`](Self::push) by key.
    fn push_key(
        &mut self,
        (source, stream, external_id): (&str, &str, &str),
        mut links: Vec<u32>,
        old: Option<i64>,
    ) {
        self.keys.push(source, stream, external_id);
        links.sort_unstable();
        links.dedup();
        self.links.push(links);
        self.old_of.push(old);
    }
}

/// A store call running as a task of its own, so that it goes on while the resolution computes. Dropped
/// before it finished (the resolution failed or was cancelled), it is aborted: a write in flight rolls
/// back rather than commit after the resolution has given up, when the next one may already be reading.
struct StoreTask<T>(tokio::task::JoinHandle<Result<T, StoreError>>);

impl<T> Drop for StoreTask<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits for a store task; a panic in it carries on here.
async fn joined<T>(mut task: StoreTask<T>) -> Result<T, IdentityError> {
    match (&mut task.0).await {
        Ok(result) => Ok(result?),
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(_) => Err(IdentityError::Cancelled),
    }
}

/// Runs `work`, CPU-bound and spread over rayon's threads, from async code. On a multi-threaded runtime
/// the calling worker hands its other tasks to the runtime first (`block_in_place`), so that a resolution
/// in the daemon does not hold up, say, the collector's requests queued behind it; a current-thread
/// runtime (tests) runs it in place.
fn on_every_core<T>(work: impl FnOnce() -> T) -> T {
    let multi_threaded = tokio::runtime::Handle::try_current().is_ok_and(|runtime| {
        runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
    });
    if multi_threaded {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

/// Adds each record of a full pass's `page` that is not deleted (`read` is `None` for those) to `set`,
/// with what its first read kept: its encoded body and its identifiers, numbered. The rest is freed by
/// the thread pool: this runs on one thread, beside the analysis of the next page.
fn join_set(set: &mut ClosedSet, mut page: Vec<EncodedRecord>, read: Vec<Option<FirstRead>>) {
    let Held::Encoded {
        mut bodies,
        mut identifiers,
    } = std::mem::take(&mut set.held)
    else {
        unreachable!("a full pass's set holds encoded records");
    };
    for (record, read) in page.iter_mut().zip(&read) {
        let Some(read) = read else { continue };
        let mut links = Vec::new();
        let ids = read.identifiers.iter().map(|identifier| {
            let Some((kind, value)) = identifier else {
                return NORMALISE_AGAIN;
            };
            let id = set.values.intern(kind, value);
            links.push(id);
            id
        });
        identifiers.push(ids.collect::<Vec<u32>>());
        links.extend(
            read.compound
                .iter()
                .map(|(rule, value)| set.values.intern(rule, value)),
        );
        set.push_key(
            (&record.source, &record.stream, &record.external_id),
            links,
            None,
        );
        bodies.push(Some(std::mem::take(&mut record.body)));
    }
    set.held = Held::Encoded {
        bodies,
        identifiers,
    };
    rayon::spawn(move || drop((page, read)));
}

/// A full pass's member and identifier rows, cut into one slice per chunk so that each chunk's write stages
/// its share ([`StagedRows`]), every slice after the one before in the order of the rows' keys: members
/// by record key, linking identifiers by `(type, value, profile)`. Identifiers that do not link are known
/// only once their profiles are built, and go with their chunk's slice.
struct RowSlices {
    /// Records in key order.
    order: Vec<usize>,
    /// The profile of each record.
    profile_of: Vec<i64>,
    /// `(value, profile)` for each distinct linking value of each profile, in row order.
    linking: Vec<(u32, i64)>,
}

/// The rank of each of `names` in their text order.
fn ranks(names: &[String]) -> Vec<u32> {
    let mut by_text: Vec<usize> = (0..names.len()).collect();
    by_text.sort_unstable_by(|a, b| names[*a].cmp(&names[*b]));
    let mut rank = vec![0u32; names.len()];
    for (at, name) in by_text.into_iter().enumerate() {
        rank[name] = at as u32;
    }
    rank
}

/// Each value's place in the order of `(type, value)` texts, as identifier rows sort (types compare by
/// their names' rank).
fn text_places(values: &Values) -> Vec<u32> {
    let rank = ranks(values.rule_names());
    let mut by_text: Vec<u32> = (0..values.len() as u32).collect();
    by_text.par_sort_unstable_by(|a, b| {
        (rank[values.rule_number(*a) as usize], values.value(*a))
            .cmp(&(rank[values.rule_number(*b) as usize], values.value(*b)))
    });
    let mut places = vec![0u32; values.len()];
    for (at, value) in by_text.into_iter().enumerate() {
        places[value as usize] = at as u32;
    }
    places
}

/// A full pass's [`RowSlices`], laid out when first needed (beside the first chunk's build) from the
/// records in key order and the values' [`text_places`].
enum StagedSlices {
    Unmade(Vec<usize>, Vec<u32>),
    Made(RowSlices),
}

impl StagedSlices {
    fn made(&mut self, set: &ClosedSet, clusters: &Resolution, ids: &[i64]) -> &RowSlices {
        if let StagedSlices::Unmade(order, places) = self {
            let (order, places) = (std::mem::take(order), std::mem::take(places));
            *self = StagedSlices::Made(RowSlices::new(set, order, &places, clusters, ids));
        }
        match self {
            StagedSlices::Made(slices) => slices,
            StagedSlices::Unmade(..) => unreachable!("made just above"),
        }
    }
}

impl RowSlices {
    /// The rows of `set` resolved into `clusters` with ids `ids`; `order` lists its records in key order,
    /// `places` its values in row order ([`text_places`]).
    fn new(
        set: &ClosedSet,
        order: Vec<usize>,
        places: &[u32],
        clusters: &Resolution,
        ids: &[i64],
    ) -> Self {
        let mut profile_of = vec![0; set.keys.len()];
        let mut linking = Vec::with_capacity(set.values.len());
        for (members, id) in clusters.members.iter().zip(ids) {
            for member in members {
                profile_of[*member] = *id;
                linking.extend(set.links.get(*member).iter().map(|value| (*value, *id)));
            }
        }
        linking.par_sort_unstable_by_key(|(value, id)| (places[*value as usize], *id));
        linking.dedup();
        Self {
            order,
            profile_of,
            linking,
        }
    }

    /// Slice `n` of `count`.
    fn slice(&self, set: &ClosedSet, n: usize, count: usize) -> AllRows {
        let part = |len: usize| len * n / count..len * (n + 1) / count;
        AllRows {
            members: self.order[part(self.order.len())]
                .par_iter()
                .map(|member| (set.keys.key(*member), self.profile_of[*member]))
                .collect(),
            identifiers: self.linking[part(self.linking.len())]
                .par_iter()
                .map(|(value, id)| {
                    (
                        set.values.rule(*value).to_owned(),
                        set.values.value(*value).to_owned(),
                        *id,
                    )
                })
                .collect(),
        }
    }
}

/// The records of one profile of a chunk to build, in its member order, taken from its set's [`Held`]
/// records.
enum ClusterRecords {
    InHand(Vec<(StoredRecord, Analysed)>),
    /// With their set member indexes.
    Encoded(Vec<(usize, EncodedBody)>),
}

/// The profiles a closed set had before.
struct OldState {
    /// Records per old profile (every member, deleted records included).
    sizes: HashMap<i64, usize>,
    /// Every old profile the set reached, ascending.
    profiles: Vec<i64>,
    /// A step's: the rows of those profiles, so that only the rows that change are written. A full
    /// pass has none: it stages every row.
    rows: Option<OldRows>,
}

/// The member and identifier rows of the profiles a step reached, as it read them.
struct OldRows {
    /// The newest generation of the profile change log before the step's first read.
    generation: i64,
    /// Members the step's set leaves out: deleted records, and records gone from the store.
    members_gone: Vec<RecordKey>,
    /// Identifier rows `(type, value)` of each profile.
    identifiers: HashMap<i64, HashSet<(String, String)>>,
}

impl OldRows {
    /// How the rows change when the clusters `members` (with ids `ids`) of `set` are written as
    /// `profiles`; `new_ids` as [`RowChanges::new_ids`].
    fn changes(
        &self,
        set: &ClosedSet,
        members: &Lists<usize>,
        ids: &[i64],
        profiles: &[ProfileWrite],
        new_ids: Vec<i64>,
    ) -> RowChanges {
        let mut changes = RowChanges {
            generation: self.generation,
            members_gone: self.members_gone.clone(),
            new_ids,
            ..RowChanges::default()
        };
        for (cluster, id) in ids.iter().enumerate() {
            for member in members.get(cluster) {
                if set.old_of[*member] != Some(*id) {
                    changes.members.push((set.keys.key(*member), *id));
                }
            }
        }
        let none = HashSet::new();
        for profile in profiles {
            let held = self.identifiers.get(&profile.id).unwrap_or(&none);
            let wanted: HashSet<&(String, String)> = profile.identifiers.iter().collect();
            changes.identifiers.extend(
                wanted
                    .iter()
                    .filter(|row| !held.contains(**row))
                    .map(|(kind, value)| (kind.clone(), value.clone(), profile.id)),
            );
            changes.identifiers_gone.extend(
                held.iter()
                    .filter(|row| !wanted.contains(row))
                    .map(|(kind, value)| (kind.clone(), value.clone(), profile.id)),
            );
        }
        changes
    }
}

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

/// A fingerprint of the rules profiles are built with, the `[identity]` and `[profiles]` sections (never
/// 0, which the store keeps for "unknown"). It only has to tell rules apart within one build of Spindle:
/// a build that hashes them otherwise costs one full pass.
fn rules_fingerprint(identity: &IdentityConfig, profiles: &ProfilesConfig) -> i64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    identity.hash(&mut hasher);
    profiles.hash(&mut hasher);
    match hasher.finish() as i64 {
        0 => 1,
        fingerprint => fingerprint,
    }
}

impl<'a, S: ProfileStore + IdentityStore + ProfileChangeStore + Clone + Sync + 'static>
    IdentityEngine<'a, S>
{
    /// An engine over `store` with the `[identity]` and `[profiles]` rules.
    pub fn new(
        store: &'a S,
        identity: &'a IdentityConfig,
        profiles: &'a ProfilesConfig,
    ) -> Result<Self, IdentityError> {
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
            links: LinkRules::new(identity)?,
            built_with: BuiltWith {
                normalizer_version: NORMALIZER_VERSION,
                rules: rules_fingerprint(identity, profiles),
            },
            step: STEP,
            write_records: WRITE_RECORDS,
        })
    }

    fn normalizer(&self) -> Normalizer {
        Normalizer::new(self.identity.default_region.as_deref())
    }

    /// Runs `call` on the store as a task of its own.
    fn spawn_store<T, F>(&self, call: impl FnOnce(S) -> F) -> StoreTask<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        StoreTask(tokio::spawn(call(self.store.clone()).in_current_span()))
    }

    pub(crate) fn analyse(&self, normalizer: &Normalizer, record: &StoredRecord) -> Analysed {
        let outcomes = record
            .record
            .identifiers
            .iter()
            .map(|identifier| self.outcome(normalizer, &identifier.kind, &identifier.value));
        self.assemble(record, outcomes)
    }

    /// How one identifier normalises: its value and whether it links records, or why it is refused.
    fn outcome(&self, normalizer: &Normalizer, kind: &str, raw: &str) -> Outcome {
        let value = normalizer.normalize(kind, raw)?;
        let links = self.links.links(kind, &value);
        Ok((value, links))
    }

    /// Whether an identifier row (a profile's `(type, value)`) links records: a compound key, or an
    /// identifier that [links](LinkRules::links).
    fn row_links(&self, kind: &str, value: &str) -> bool {
        kind.starts_with("compound:") || self.links.links(kind, value)
    }

    /// The analysis of `record` whose identifiers (in its order) normalised to `outcomes`.
    fn assemble(&self, record: &StoredRecord, outcomes: impl Iterator<Item = Outcome>) -> Analysed {
        let mut links = Vec::new();
        let mut identifiers = Vec::new();
        let mut rejected = Vec::new();
        for (identifier, outcome) in record.record.identifiers.iter().zip(outcomes) {
            match outcome {
                Ok((value, links_on)) => {
                    if links_on {
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
        links.extend(self.compound_keys(record));
        links.sort();
        links.dedup();
        Analysed {
            links,
            identifiers,
            rejected,
        }
    }

    /// The record's `(compound:<rule>, key)` pairs, for each compound rule whose fields it has.
    fn compound_keys(&self, record: &StoredRecord) -> Vec<(String, String)> {
        self.identity
            .compound
            .iter()
            .filter_map(|rule| {
                let values: Option<Vec<String>> = rule
                    .fields
                    .iter()
                    .map(|f| compound_value(record, f))
                    .collect();
                Some((format!("compound:{}", rule.name), values?.join("|")))
            })
            .collect()
    }

    /// What a full pass's first read keeps of a record: each identifier normalised (see [`FirstRead`]).
    fn first_read(&self, normalizer: &Normalizer, record: &StoredRecord) -> FirstRead {
        FirstRead {
            identifiers: record
                .record
                .identifiers
                .iter()
                .map(|identifier| {
                    let (value, links) = self
                        .outcome(normalizer, &identifier.kind, &identifier.value)
                        .ok()?;
                    links.then(|| (identifier.kind.clone(), value))
                })
                .collect(),
            compound: self.compound_keys(record),
        }
    }

    /// [`analyse`](Self::analyse) of member `member` of a full pass's `set`, from what its first read
    /// kept: only identifiers that do not link are normalised again.
    fn analyse_again(
        &self,
        normalizer: &Normalizer,
        record: &StoredRecord,
        set: &ClosedSet,
        identifiers: &Lists<u32>,
        member: usize,
    ) -> Analysed {
        let outcomes = record
            .record
            .identifiers
            .iter()
            .zip(identifiers.get(member))
            .map(|(identifier, id)| {
                if *id == NORMALISE_AGAIN {
                    return self.outcome(normalizer, &identifier.kind, &identifier.value);
                }
                Ok((set.values.value(*id).to_owned(), true))
            });
        let analysed = self.assemble(record, outcomes);
        debug_assert_eq!(
            analysed,
            self.analyse(normalizer, record),
            "a full pass analyses a record as its first read did"
        );
        analysed
    }

    /// Resolves every record changed since the last step; returns what changed.
    ///
    /// When at least half of the stored records are pending (a first build, a source loaded in full), they
    /// are all resolved in one full pass, as [`rebuild`](Self::rebuild) does, rather than in overlapping
    /// steps that would write the same profiles again and again; the result is the same.
    pub async fn resolve_pending(&self) -> Result<ResolveReport, IdentityError> {
        // After any write of a cancelled resolution, which may still be committing.
        self.store.settle_resolution_writes().await?;
        let built = self.store.built_with().await?;
        if built != self.built_with {
            // Whether any profile exists: one row, where counting reads every document.
            if !self.store.profiles_page(0, 1).await?.is_empty() {
                // Steps would build only the profiles their records reach; the others would keep what
                // the older normaliser or rules gave.
                if built.normalizer_version != NORMALIZER_VERSION {
                    tracing::info!(
                        version = NORMALIZER_VERSION,
                        "identifiers are normalised differently since the profiles were built: resolving every record again"
                    );
                } else {
                    tracing::info!(
                        "the [identity] or [profiles] rules changed since the profiles were built: resolving every record again"
                    );
                }
                return self.full_pass().await;
            }
            // No profile yet: none was built otherwise.
            self.store.set_built_with(self.built_with).await?;
        }
        if self.store.full_pass_unfinished().await? {
            // Its profiles list rows that were never put in place; steps would build on them.
            tracing::info!("a full pass began and did not finish: resolving every record again");
            return self.full_pass().await;
        }
        let high_water = self.store.identity_high_water().await?;
        let pending = self.store.count_records_since(high_water).await?;
        if pending == 0 {
            return Ok(ResolveReport::default());
        }
        if pending > u64::from(self.step) && pending * 2 >= self.store.count_records(None).await? {
            tracing::info!(
                pending,
                "most records are pending: resolving them in one full pass"
            );
            return self.full_pass().await;
        }
        let mut report = ResolveReport::default();
        // One normaliser for every step: records of profiles touched again are not parsed again.
        let normalizer = self.normalizer();
        loop {
            let high_water = self.store.identity_high_water().await?;
            let changed = self.store.records_since(high_water, self.step).await?;
            let Some(last) = changed.last().map(|r| r.seq) else {
                break;
            };
            report.absorb(self.step(&normalizer, changed, last).await?);
        }
        Ok(report)
    }

    async fn step(
        &self,
        normalizer: &Normalizer,
        changed: Vec<StoredRecord>,
        high_water: i64,
    ) -> Result<ResolveReport, IdentityError> {
        let started = Instant::now();
        // Before any read: the rows read are the rows of this generation unless a later write says not.
        let generation = self.store.profile_generation().await?;
        let changed_keys: Vec<RecordKey> = changed.iter().map(key_of).collect();
        let mut analysed: Vec<Analysed> = on_every_core(|| {
            changed
                .par_iter()
                .map(|record| self.analyse(normalizer, record))
                .collect()
        });
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
        // Every identifier row of every profile reached (each profile's are read in the round after it
        // is reached).
        let mut old_identifiers: HashMap<i64, HashSet<(String, String)>> = HashMap::new();
        // Every member of every profile reached, read with its identifiers.
        let mut old_members: Vec<(i64, RecordKey)> = Vec::new();
        loop {
            // Identifiers of profiles reached in the last round may lead to further profiles.
            for (id, held) in self.store.profile_rows(&to_expand).await? {
                old_members.extend(held.members.into_iter().map(|key| (id, key)));
                for (kind, value) in held.identifiers {
                    if self.row_links(&kind, &value) {
                        frontier.insert((kind.clone(), value.clone()));
                    }
                    old_identifiers.entry(id).or_default().insert((kind, value));
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
        let expanded = started.elapsed();
        let visited: Vec<i64> = visited.into_iter().collect();
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
        on_every_core(|| {
            analysed.par_extend(
                fetched
                    .par_iter()
                    .map(|record| self.analyse(normalizer, record)),
            )
        });
        let read = started.elapsed();
        let old: HashMap<RecordKey, i64> = old_members.into_iter().map(|(id, k)| (k, id)).collect();
        let mut sizes: HashMap<i64, usize> = HashMap::new();
        for id in old.values() {
            *sizes.entry(*id).or_default() += 1;
        }
        // A record deleted at its source no longer vouches for anyone: it leaves its profile, and a profile
        // left without records is removed.
        let records: Vec<(StoredRecord, Analysed)> = changed
            .into_iter()
            .chain(fetched)
            .zip(analysed)
            .filter(|(record, _)| !record.record.deleted)
            .collect();
        let mut set = ClosedSet::default();
        let mut kept: HashSet<RecordKey> = HashSet::with_capacity(records.len());
        for (record, analysed) in &records {
            let key = key_of(record);
            set.push(record, &analysed.links, old.get(&key).copied());
            kept.insert(key);
        }
        let members_gone: Vec<RecordKey> = old.into_keys().filter(|k| !kept.contains(k)).collect();
        set.held = Held::InHand(records.into_iter().map(Some).collect());
        let old = OldState {
            sizes,
            profiles: visited,
            rows: Some(OldRows {
                generation,
                members_gone,
                identifiers: old_identifiers,
            }),
        };
        let report = self.resolve_set(set, &old, high_water, normalizer).await?;
        tracing::debug!(
            records = report.records,
            profiles = report.profiles_written,
            expand_ms = expanded.as_millis() as u64,
            read_ms = (read - expanded).as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "identity step"
        );
        Ok(report)
    }

    /// Resolves every record from scratch, keeping ids where profiles survive; returns what changed.
    pub async fn rebuild(&self) -> Result<ResolveReport, IdentityError> {
        self.store.settle_resolution_writes().await?;
        self.full_pass().await
    }

    /// Resolves every stored record as one closed set (see the module doc for how it is written), then
    /// records what it built the profiles with ([`BuiltWith`]).
    async fn full_pass(&self) -> Result<ResolveReport, IdentityError> {
        let report = self.resolve_everything().await?;
        // After the pass has committed: a pass cut short leaves the old record, and the next
        // resolution runs one again.
        self.store.set_built_with(self.built_with).await?;
        Ok(report)
    }

    /// [`full_pass`](Self::full_pass)'s resolution.
    async fn resolve_everything(&self) -> Result<ResolveReport, IdentityError> {
        let started = Instant::now();
        let normalizer = self.normalizer();
        let mut set = ClosedSet::default();
        let mut after = 0;
        // Only identifiers (and traits for compound rules) are decoded now; the rest when documents are
        // built.
        let parts = if self.identity.compound.is_empty() {
            PayloadParts::Identifiers
        } else {
            PayloadParts::WithoutEvents
        };
        let total = usize::try_from(self.store.count_records(None).await?).unwrap_or(usize::MAX);
        let mut page = self.store.records_to_resolve(after, PAGE).await?;
        // The last page analysed, with its links, waiting to join the set.
        let mut analysed: Option<(Vec<EncodedRecord>, Vec<Option<FirstRead>>)> = None;
        // A pipeline of three stages: the next page is read by a task of its own while this one is
        // decoded and analysed on every core and the last one joins the set (numbering values is
        // sequential: 1.2 s of a million records).
        let mut first_page = true;
        while let Some(last) = page.last().map(|r| r.body.seq()) {
            after = last;
            let next = self.spawn_store(move |store| async move {
                store.records_to_resolve(after, PAGE).await
            });
            let set = &mut set;
            let previous = analysed.take();
            let read: Result<Vec<Option<FirstRead>>, StoreError> = on_every_core(|| {
                rayon::join(
                    || {
                        page.par_iter()
                            .map(|record| {
                                if record.body.deleted() {
                                    return Ok(None);
                                }
                                Ok(Some(self.first_read(&normalizer, &record.decode(parts)?)))
                            })
                            .collect()
                    },
                    || previous.map(|(page, read)| join_set(set, page, read)),
                )
                .0
            });
            let read = read?;
            if first_page {
                set.reserve_like(&page, &read, total);
                first_page = false;
            }
            analysed = Some((page, read));
            page = joined(next).await?;
        }
        if let Some((page, read)) = analysed {
            join_set(&mut set, page, read);
        }
        // Old memberships, matched to the records read by key. Every old id is read beside them: those
        // with members, and any profile left without one.
        let profile_ids = self.spawn_store(|store| async move { store.profile_ids().await });
        let mut sizes: HashMap<i64, usize> = HashMap::new();
        {
            // Built when the first membership comes (a first build has none).
            let mut index: Option<HashMap<(u32, u32, &str), usize, foldhash::fast::RandomState>> =
                None;
            // Page by page (a million memberships held at once as owned keys would cost about 200 MB),
            // each read by a task of its own while the last one is matched on every core.
            let read_after = |after: Option<RecordKey>| {
                self.spawn_store(move |store| async move {
                    store
                        .memberships_after(after.as_ref(), MEMBERSHIP_PAGE)
                        .await
                })
            };
            let mut next = Some(read_after(None));
            while let Some(task) = next.take() {
                let page = joined(task).await?;
                if page.len() >= MEMBERSHIP_PAGE as usize {
                    next = Some(read_after(page.last().map(|(_, key)| key.clone())));
                }
                if page.is_empty() {
                    break;
                }
                let keys = &set.keys;
                let index = &*index.get_or_insert_with(|| {
                    (0..keys.len())
                        .map(|i| {
                            let (source, stream, _) = keys.parts[i];
                            ((source, stream, keys.get(i).2), i)
                        })
                        .collect()
                });
                let found: Vec<Option<usize>> = on_every_core(|| {
                    page.par_iter()
                        .map(|(_, key)| {
                            let source = keys.name_ids.get(&key.source)?;
                            let stream = keys.name_ids.get(&key.stream)?;
                            index
                                .get(&(*source, *stream, key.external_id.as_str()))
                                .copied()
                        })
                        .collect()
                });
                for ((id, _), found) in page.iter().zip(found) {
                    *sizes.entry(*id).or_default() += 1;
                    if let Some(i) = found {
                        set.old_of[i] = Some(*id);
                    }
                }
                rayon::spawn(move || drop(page));
            }
        }
        let mut profiles: BTreeSet<i64> = sizes.keys().copied().collect();
        profiles.extend(joined(profile_ids).await?);
        let high_water = after.max(self.store.identity_high_water().await?);
        tracing::debug!(
            records = set.keys.len(),
            values = set.values.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "full pass: records analysed"
        );
        let old = OldState {
            sizes,
            profiles: profiles.into_iter().collect(),
            rows: None,
        };
        let report = self.resolve_set(set, &old, high_water, &normalizer).await?;
        tracing::debug!(
            records = report.records,
            profiles = report.profiles_written,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "full pass resolved"
        );
        Ok(report)
    }

    /// Resolves a closed set and writes the result: in one transaction when its records are in hand (a
    /// step), else in chunks of about [`WRITE_RECORDS`] records, re-read to build their documents, the last
    /// write also replacing every member and identifier row, removing retired profiles and advancing the
    /// high-water mark.
    async fn resolve_set(
        &self,
        mut set: ClosedSet,
        old: &OldState,
        high_water: i64,
        normalizer: &Normalizer,
    ) -> Result<ResolveReport, IdentityError> {
        let started = Instant::now();
        let record_count = set.keys.len() as u64;
        // Resolution orders records by key.
        let mut order = on_every_core(|| set.keys.in_key_order());
        // A full pass orders the values as its identifier rows sort, beside the resolution (mostly
        // sequential).
        let full_pass = old.rows.is_none();
        let (clusters, places) = on_every_core(|| {
            rayon::join(
                || resolve_values(&order, &set.links, &set.values, &self.rules),
                || full_pass.then(|| text_places(&set.values)),
            )
        });
        let resolved = started.elapsed();

        let (ids, new_ids, report) = self.assign_ids(&clusters.members, &set.old_of, old).await?;
        // A full pass stages every member and identifier row with its chunks (its rows are laid out
        // beside the first chunk's build).
        let mut staged = match places {
            Some(places) => Some((
                self.store.begin_staged_rows().await?,
                StagedSlices::Unmade(std::mem::take(&mut order), places),
            )),
            None => {
                set.links = Lists::default();
                None
            }
        };
        let assigned: HashSet<i64> = ids.iter().copied().collect();
        // For each retired id, how many of its records each new profile took.
        let mut takers: HashMap<i64, BTreeMap<i64, usize>> = HashMap::new();
        for (members, id) in clusters.members.iter().zip(&ids) {
            for member in members {
                if let Some(old_id) = set.old_of[*member]
                    && !assigned.contains(&old_id)
                {
                    *takers.entry(old_id).or_default().entry(*id).or_default() += 1;
                }
            }
        }
        let mut removed = Vec::new();
        let mut aliases = Vec::new();
        for old_id in old.profiles.iter().filter(|id| !assigned.contains(id)) {
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
        let mut report = ResolveReport {
            records: record_count,
            profiles_written: ids.len() as u64,
            touched: ids.iter().chain(&removed).copied().collect(),
            ..report
        };

        // Clusters written together: all at once when the records are in hand, else chunks of about
        // `WRITE_RECORDS` records.
        let limit = if matches!(set.held, Held::InHand(_)) {
            usize::MAX
        } else {
            self.write_records
        };
        let mut chunks: Vec<std::ops::Range<usize>> = Vec::new();
        let (mut start, mut size) = (0, 0);
        for (index, members) in clusters.members.iter().enumerate() {
            size += members.len();
            if size >= limit {
                chunks.push(start..index + 1);
                (start, size) = (index + 1, 0);
            }
        }
        if start < ids.len() || chunks.is_empty() {
            chunks.push(start..ids.len());
        }
        let now = Utc::now();
        let last_chunk = chunks.len() - 1;
        let mut final_write = Some((removed, aliases));
        // A pipeline of two stages: the last chunk is written by a task of its own while this chunk is
        // built on every core.
        let mut writing: Option<StoreTask<()>> = None;
        for (n, range) in chunks.iter().cloned().enumerate() {
            let chunk_started = Instant::now();
            // A full pass reads, beside the build, the fingerprints of the chunk's profiles that existed
            // before it: those built again as they were are not sent to the store (which would compare
            // and leave them alone, but only after taking in every document).
            let existing: Vec<i64> = if full_pass {
                ids[range.clone()]
                    .iter()
                    .copied()
                    .filter(|id| !new_ids.contains(id))
                    .collect()
            } else {
                Vec::new()
            };
            let stored_fingerprints = (!existing.is_empty()).then(|| {
                self.spawn_store(|store| async move { store.profile_fingerprints(&existing).await })
            });
            let records = self.take_members(&mut set, &clusters, range.clone());
            // A full pass's slice of rows is cut beside the build, while the last chunk is written.
            let (built, slice) = on_every_core(|| {
                rayon::join(
                    || self.build_chunk(records, &set, &clusters, range, &ids, normalizer, now),
                    || {
                        let (_, slices) = staged.as_mut()?;
                        Some(
                            slices
                                .made(&set, &clusters, &ids)
                                .slice(&set, n, chunks.len()),
                        )
                    },
                )
            });
            if n == 0 && full_pass {
                set.links = Lists::default();
            }
            let build_done = chunk_started.elapsed();
            if let Some(write) = writing.take() {
                joined(write).await?;
            }
            let (profiles, encoded_documents) = built?;
            let stored: HashMap<i64, i64> = match stored_fingerprints {
                Some(task) => joined(task).await?.into_iter().collect(),
                None => HashMap::new(),
            };
            tracing::debug!(
                profiles = profiles.len(),
                build_ms = build_done.as_millis() as u64,
                write_wait_ms = (chunk_started.elapsed() - build_done).as_millis() as u64,
                "identity chunk built"
            );
            let (removed, aliases) = if n == last_chunk {
                final_write.take().unwrap_or_default()
            } else {
                Default::default()
            };
            let rows = if let (Some((token, _)), Some(mut rows)) = (&staged, slice) {
                // Identifiers that do not link are not among the slices: each chunk's are added to
                // its own. Each profile keeps its own, which the store lists with its document.
                let mut others: Vec<(String, String, i64)> = Vec::new();
                for profile in &profiles {
                    let id = profile.id;
                    others.extend(
                        profile
                            .identifiers
                            .iter()
                            .filter(|(kind, value)| !self.row_links(kind, value))
                            .map(|(kind, value)| (kind.clone(), value.clone(), id)),
                    );
                }
                others.sort_unstable();
                rows.identifiers.extend(others);
                ResolutionRows::Staged(StagedRows {
                    token: *token,
                    rows,
                    last: n == last_chunk,
                })
            } else if let Some(read) = &old.rows {
                // A step writes in one chunk: every cluster.
                debug_assert_eq!(chunks.len(), 1, "a step writes in one chunk");
                let new_ids: Vec<i64> = profiles
                    .iter()
                    .map(|p| p.id)
                    .filter(|id| new_ids.contains(id))
                    .collect();
                ResolutionRows::Changes(read.changes(
                    &set,
                    &clusters.members,
                    &ids,
                    &profiles,
                    new_ids,
                ))
            } else {
                unreachable!(
                    "a resolution either reads its rows (a step) or stages them (a full pass)"
                )
            };
            let built_count = profiles.len();
            let (profiles, encoded_documents): (Vec<ProfileWrite>, Vec<String>) = profiles
                .into_iter()
                .zip(encoded_documents)
                .filter(|(profile, _)| {
                    profile.fingerprint.is_none()
                        || stored.get(&profile.id) != profile.fingerprint.as_ref()
                })
                .unzip();
            report.profiles_written -= (built_count - profiles.len()) as u64;
            let write = ResolutionWrite {
                removed,
                profiles,
                aliases,
                high_water: (n == last_chunk).then_some(high_water),
                rows,
                encoded_documents,
            };
            writing =
                Some(self.spawn_store(|store| async move { store.write_resolution(write).await }));
        }
        if let Some(write) = writing {
            joined(write).await?;
        }
        tracing::debug!(
            records = report.records,
            profiles = report.profiles_written,
            created = report.created,
            merged = report.merged,
            split = report.split,
            resolve_ms = resolved.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "identity resolved"
        );
        Ok(report)
    }

    /// The writes of the profiles `range` of `clusters` (whose ids are `ids`), built on every core from
    /// their records (decoded and analysed here when they are not yet), and their encoded documents.
    #[allow(clippy::too_many_arguments)]
    fn build_chunk(
        &self,
        records: Vec<ClusterRecords>,
        set: &ClosedSet,
        clusters: &Resolution,
        range: std::ops::Range<usize>,
        ids: &[i64],
        normalizer: &Normalizer,
        now: DateTime<Utc>,
    ) -> Result<(Vec<ProfileWrite>, Vec<String>), IdentityError> {
        // Each profile's records are decoded, built from and freed on one thread: freeing memory on the
        // thread that allocated it is the allocator's fast path, and the records are still in its cache.
        let writes = range
            .into_par_iter()
            .zip(records)
            .map(|(c, records)| {
                let records = match records {
                    ClusterRecords::InHand(records) => records,
                    ClusterRecords::Encoded(bodies) => {
                        let Held::Encoded { identifiers, .. } = &set.held else {
                            unreachable!("a full pass's set holds encoded records");
                        };
                        bodies
                            .into_iter()
                            .map(|(member, body)| {
                                let record =
                                    body.decode(set.keys.get(member), PayloadParts::Whole)?;
                                let analysed = self.analyse_again(
                                    normalizer,
                                    &record,
                                    set,
                                    identifiers,
                                    member,
                                );
                                Ok((record, analysed))
                            })
                            .collect::<Result<Vec<_>, StoreError>>()?
                    }
                };
                let cluster_records: Vec<(&StoredRecord, &Analysed)> = records
                    .iter()
                    .map(|(record, analysed)| (record, analysed))
                    .collect();
                self.profile_write(ids[c], &cluster_records, clusters.links.get(c), set, now)
            })
            .collect::<Result<Vec<_>, IdentityError>>()?;
        Ok(writes.into_iter().unzip())
    }

    /// The records of each of the profiles `range` of `clusters`, taken from the set.
    fn take_members(
        &self,
        set: &mut ClosedSet,
        clusters: &Resolution,
        range: std::ops::Range<usize>,
    ) -> Vec<ClusterRecords> {
        let held = &mut set.held;
        range
            .map(|c| {
                let members = clusters.members.get(c).iter().copied();
                match held {
                    Held::InHand(records) => {
                        ClusterRecords::InHand(members.filter_map(|m| records[m].take()).collect())
                    }
                    Held::Encoded { bodies, .. } => ClusterRecords::Encoded(
                        members
                            .filter_map(|m| Some((m, bodies[m].take()?)))
                            .collect(),
                    ),
                }
            })
            .collect()
    }

    /// The id of each cluster (kept from the old profile that covers most of its records, else new), the
    /// range of the new ids (empty when none), and the report of merges and splits.
    async fn assign_ids(
        &self,
        clusters: &Lists<usize>,
        old_of: &[Option<i64>],
        old: &OldState,
    ) -> Result<(Vec<i64>, std::ops::Range<i64>, ResolveReport), IdentityError> {
        let mut candidates: Vec<(usize, i64, usize)> = Vec::new();
        // Per old id: the last cluster that took some of its records, and how many clusters did.
        let mut spread_of: HashMap<i64, (usize, usize)> = HashMap::new();
        for (index, members) in clusters.iter().enumerate() {
            let mut overlap: BTreeMap<i64, usize> = BTreeMap::new();
            for member in members {
                if let Some(id) = old_of[*member] {
                    *overlap.entry(id).or_default() += 1;
                    let spread = spread_of.entry(id).or_insert((index, 0));
                    if spread.1 == 0 || spread.0 != index {
                        *spread = (index, spread.1 + 1);
                    }
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
        // New ids come from the store's counter, above every id given before.
        let first_new_id = if fresh > 0 {
            self.store.reserve_profile_ids(fresh).await?
        } else {
            0
        };
        let new_ids = first_new_id..first_new_id + i64::try_from(fresh).unwrap_or(i64::MAX);
        let mut next = first_new_id;
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
        for old_id in &old.profiles {
            let spread = spread_of.get(old_id).map_or(0, |(_, n)| *n);
            if spread > 1 {
                report.split += 1;
            }
            if !taken.contains(old_id) && spread > 0 {
                report.merged += 1;
            }
            if let Some(index) = position.get(old_id) {
                let members = clusters.get(*index);
                let same = members.len() == old.sizes.get(old_id).copied().unwrap_or(0)
                    && members.iter().all(|m| old_of[*m] == Some(*old_id));
                if same {
                    report.unchanged += 1;
                } else if spread <= 1 {
                    report.changed += 1;
                }
            }
        }
        Ok((ids, new_ids, report))
    }

    /// The write of one profile, with its document encoded: `members` are its records (in member order)
    /// with their analyses.
    fn profile_write(
        &self,
        id: i64,
        members: &[(&StoredRecord, &Analysed)],
        links: &[(usize, usize, u32)],
        set: &ClosedSet,
        now: DateTime<Utc>,
    ) -> Result<(ProfileWrite, String), IdentityError> {
        // `(type, value)` -> (raw spellings, sources); ordered like the owned strings they become.
        let mut identifiers: BTreeMap<(&str, &str), Spellings<'_>> = BTreeMap::new();
        let mut compound: BTreeSet<(&str, &str)> = BTreeSet::new();
        let mut rejected = Vec::new();
        for (record, analysed) in members {
            for (kind, value, raw) in &analysed.identifiers {
                let entry = identifiers
                    .entry((kind.as_str(), value.as_str()))
                    .or_default();
                entry.0.insert(raw.as_str());
                entry.1.insert(record.source.as_str());
            }
            compound.extend(
                analysed
                    .links
                    .iter()
                    .filter(|(k, _)| k.starts_with("compound:"))
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            );
            rejected.extend(analysed.rejected.iter().cloned());
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
        let links: Vec<LinkEvidence> = links
            .iter()
            .map(|(a, b, value)| LinkEvidence {
                rule: set.values.rule(*value).to_owned(),
                value: set.values.value(*value).to_owned(),
                a: set.keys.key(*a),
                b: set.keys.key(*b),
            })
            .collect();
        let records: Vec<&StoredRecord> = members.iter().map(|(r, _)| *r).collect();
        let document = profile::build(self.profiles, &records, identifiers, rejected, links, now);
        let mut search = vec![id.to_string()];
        search.extend(document.identifiers.iter().map(|i| i.value.to_lowercase()));
        for name in ["first_name", "last_name", "company", "name"] {
            if let Some(value) = document.traits.get(name).and_then(|t| t.value.as_str()) {
                search.push(value.to_lowercase());
            }
        }
        let stored = document.to_stored_json()?;
        let search_text = search.join(" ");
        Ok((
            ProfileWrite {
                id,
                fingerprint: Some(fingerprint(
                    stored.content(),
                    &search_text,
                    &document.records,
                    &index_values,
                )),
                search_text,
                members: document.records,
                identifiers: index_values,
                // Written from `stored.text`.
                document: serde_json::Value::Null,
            },
            stored.text,
        ))
    }
}

/// A profile's [`ProfileWrite::fingerprint`]: its document's content (all but when its computed traits
/// were evaluated), its search text and its rows (members and identifiers), hashed with XXH3 (64 bits,
/// whose output its specification fixes): a profile built again from the same records and rules gets
/// the same fingerprint, and is not written again.
fn fingerprint(
    content: &str,
    search_text: &str,
    members: &[RecordKey],
    identifiers: &[(String, String)],
) -> i64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    // Each text and list with its length first, so that no two different inputs hash the same bytes.
    let mut length = |length: usize| hasher.update(&(length as u64).to_le_bytes());
    length(members.len());
    length(identifiers.len());
    let mut text = |text: &str| {
        hasher.update(&(text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
    };
    text(content);
    text(search_text);
    for member in members {
        text(&member.source);
        text(&member.stream);
        text(&member.external_id);
    }
    for (kind, value) in identifiers {
        text(kind);
        text(value);
    }
    i64::from_le_bytes(hasher.digest().to_le_bytes())
}

#[cfg(test)]
mod tests;
