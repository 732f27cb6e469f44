//! The profiles in memory, as a columnar [`ProfileTable`], kept current from the store's change log.
//!
//! Contract:
//! - [`SharedProfiles::current`] returns the table as of the newest profile write: it is loaded on first
//!   use (every profile, with the events of its records), and afterwards catches up by re-reading only the
//!   profiles the store's change log lists after the generation it holds (a profile that no longer exists
//!   leaves the table). Writes from any process are seen; when the log no longer reaches back (or a
//!   rebuild replaced everything) the table is loaded again.
//! - The generation is read before the profiles it covers, so a write that lands during a load or a
//!   catch-up is applied again by the next one: the table may briefly hold a newer profile than its
//!   generation says, never an older one.
//! - Profiles the table took in but whose segment memberships were not evaluated yet stay listed in
//!   [`LiveProfiles::unevaluated`] until [`crate::membership`] evaluates them, so a preview that brings
//!   the table up to date never makes membership evaluation miss a change.
//! - Memory: roughly 400 bytes per profile plus its events (about 400 MiB for 1,000,000 profiles with
//!   10,000,000 events).

use std::collections::BTreeSet;

use spindle_identity::profile::ProfileDocument;
use spindle_model::{RecordKey, StoredRecord};
use spindle_segments::ProfileTable;
use spindle_store::{IdentityStore, ProfileChangeStore, ProfileRow, StoreResult};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use crate::SyncError;
use crate::membership::view;

/// Profiles read per page while loading.
const PAGE: u32 = 2_000;

/// A profile as segment expressions see it.
#[derive(Debug, Clone)]
struct ViewedProfile {
    id: i64,
    view: spindle_segments::ProfileView,
}

/// Decodes stored profiles and reads the records they unify (for their events); profiles whose document
/// cannot be decoded are skipped with a warning.
async fn viewed<S: IdentityStore + ?Sized>(
    store: &S,
    rows: Vec<ProfileRow>,
) -> StoreResult<Vec<ViewedProfile>> {
    let docs: Vec<(i64, ProfileDocument)> = rows
        .into_iter()
        .filter_map(|row| {
            let ProfileRow { id, document, .. } = row;
            match serde_json::from_value::<ProfileDocument>(document) {
                Ok(doc) => Some((id, doc)),
                Err(err) => {
                    tracing::warn!(profile = id, error = %err, "unreadable profile document skipped");
                    None
                }
            }
        })
        .collect();
    let keys: Vec<RecordKey> = docs
        .iter()
        .flat_map(|(_, d)| d.records.iter().cloned())
        .collect();
    let records = store.records_by_keys(&keys).await?;
    let by_key: std::collections::HashMap<RecordKey, &StoredRecord> = records
        .iter()
        .map(|r| (spindle_identity::profile::key_of(r), r))
        .collect();
    Ok(docs
        .into_iter()
        .map(|(id, document)| {
            let mine: Vec<&StoredRecord> = document
                .records
                .iter()
                .filter_map(|k| by_key.get(k).copied())
                .collect();
            ViewedProfile {
                id,
                view: view(&document, mine),
            }
        })
        .collect())
}

/// The profile table with the change-log generation it reflects.
#[derive(Debug)]
pub struct LiveProfiles {
    table: ProfileTable,
    generation: i64,
    unevaluated: Unevaluated,
}

/// Profiles taken into the table whose memberships were not evaluated since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unevaluated {
    /// Every profile (the table was (re)loaded).
    All,
    /// These ones (written or removed).
    Some(BTreeSet<i64>),
}

impl LiveProfiles {
    /// The table.
    pub fn table(&self) -> &ProfileTable {
        &self.table
    }

    /// The change-log generation the table reflects.
    pub fn generation(&self) -> i64 {
        self.generation
    }

    /// Which profiles' memberships were not evaluated since the table took them in.
    pub fn unevaluated(&self) -> &Unevaluated {
        &self.unevaluated
    }

    /// Records that every profile's memberships are evaluated.
    pub fn mark_evaluated(&mut self) {
        self.unevaluated = Unevaluated::Some(BTreeSet::new());
    }

    /// Loads every profile of `store`.
    pub async fn load<S: IdentityStore + ProfileChangeStore + ?Sized>(
        store: &S,
    ) -> Result<Self, SyncError> {
        let started = std::time::Instant::now();
        let generation = store.profile_generation().await?;
        let mut table = ProfileTable::new();
        let mut after = 0;
        loop {
            let page = store.profiles_page(after, PAGE).await?;
            let Some(last) = page.last().map(|p| p.id) else {
                break;
            };
            after = last;
            for profile in viewed(store, page).await? {
                table.upsert(profile.id, &profile.view);
            }
        }
        table.compact();
        tracing::info!(
            profiles = table.len(),
            generation,
            took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "profile table loaded"
        );
        Ok(Self {
            table,
            generation,
            unevaluated: Unevaluated::All,
        })
    }

    /// Applies the profile writes logged after the table's generation (or reloads when the log says so).
    pub async fn catch_up<S: IdentityStore + ProfileChangeStore + ?Sized>(
        &mut self,
        store: &S,
    ) -> Result<(), SyncError> {
        let changes = store.profile_changes_since(self.generation).await?;
        if changes.everything {
            *self = Self::load(store).await?;
            return Ok(());
        }
        if changes.ids.is_empty() {
            self.generation = changes.generation;
            return Ok(());
        }
        let ids: Vec<i64> = changes.ids.iter().copied().collect();
        let mut present = BTreeSet::new();
        for chunk in ids.chunks(PAGE as usize) {
            let rows = store.profiles_by_ids(chunk).await?;
            for profile in viewed(store, rows).await? {
                present.insert(profile.id);
                self.table.upsert(profile.id, &profile.view);
            }
        }
        for id in ids.iter().filter(|id| !present.contains(id)) {
            self.table.remove(*id);
        }
        self.generation = changes.generation;
        if let Unevaluated::Some(pending) = &mut self.unevaluated {
            pending.extend(changes.ids);
        }
        Ok(())
    }
}

/// One [`LiveProfiles`] shared by everything in a process that evaluates segments (membership evaluation,
/// previews), loaded on first use.
#[derive(Debug, Default)]
pub struct SharedProfiles {
    live: Mutex<Option<LiveProfiles>>,
}

impl SharedProfiles {
    /// Nothing loaded yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The table, brought up to date with `store` and locked: evaluations that use it run one at a time.
    pub async fn current<S: IdentityStore + ProfileChangeStore + ?Sized>(
        &self,
        store: &S,
    ) -> Result<MappedMutexGuard<'_, LiveProfiles>, SyncError> {
        let mut guard = self.live.lock().await;
        // Taken out while it is brought up to date: a failure leaves nothing, and the next call loads again.
        let live = match guard.take() {
            Some(mut live) => {
                live.catch_up(store).await?;
                live
            }
            None => LiveProfiles::load(store).await?,
        };
        Ok(MutexGuard::map(guard, |slot| slot.insert(live)))
    }
}
