//! The engine's own paths on both backends: a full pass written in many small chunks, and the
//! difference-only row writes, against incremental steps.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use spindle_config::{IdentityConfig, ProfilesConfig};
use spindle_model::{Identifier, RawRecord, RecordKey};
use spindle_store::{IdentityStore, SqlStore};
use spindle_testkit::store::apply_records;

use rayon::prelude::*;

use super::IdentityEngine;
use crate::profile::ProfileDocument;

spindle_testkit::store_backends!(chunked_full_passes_equal_incremental_steps,);

fn identity() -> IdentityConfig {
    IdentityConfig {
        link_on: vec!["email".into(), "phone".into(), "user_id".into()],
        limits: [("user_id".to_owned(), 1), ("email".to_owned(), 2)]
            .into_iter()
            .collect(),
        blocked: vec!["test@example.com".into()],
        priority: vec!["user_id".into(), "email".into(), "phone".into()],
        default_region: Some("FR".into()),
        blocked_patterns: vec![],
        compound: vec![],
    }
}

/// Record `i` of a small, tangled population: shared e-mails and phones chain records into profiles,
/// user ids and the e-mail limit keep some apart, and a blocked address links no one.
fn record(i: u32, version: i64, deleted: bool) -> RawRecord {
    let mut identifiers = vec![
        Identifier::new("email", format!("p{}@example.com", i % 37)),
        Identifier::new("phone", format!("+3361234{:04}", i % 23)),
    ];
    if i.is_multiple_of(5) {
        identifiers.push(Identifier::new("user_id", format!("u{}", i % 11)));
    }
    if i.is_multiple_of(7) {
        identifiers.push(Identifier::new("email", "test@example.com"));
    }
    RawRecord {
        stream: "rows".into(),
        external_id: format!("r{i}"),
        version,
        updated_at: None,
        deleted,
        identifiers,
        traits: [("first_name".to_owned(), serde_json::json!(format!("n{i}")))]
            .into_iter()
            .collect(),
        events: vec![],
    }
}

/// Every profile with its member records, checked against the rows the store keeps beside the documents.
async fn state(store: &SqlStore) -> BTreeMap<i64, BTreeSet<RecordKey>> {
    let mut members: BTreeMap<i64, BTreeSet<RecordKey>> = BTreeMap::new();
    for (id, key) in store.all_memberships().await.unwrap() {
        members.entry(id).or_default().insert(key);
    }
    let ids = store.profile_ids().await.unwrap();
    assert_eq!(
        ids,
        members.keys().copied().collect::<Vec<_>>(),
        "every profile has members, every member a profile"
    );
    let mut identifiers: BTreeMap<i64, BTreeSet<(String, String)>> = BTreeMap::new();
    for (id, kind, value) in store.profile_identifiers(&ids).await.unwrap() {
        identifiers.entry(id).or_default().insert((kind, value));
    }
    for row in store.profiles_by_ids(&ids).await.unwrap() {
        let document: ProfileDocument = serde_json::from_value(row.document).unwrap();
        let records: BTreeSet<RecordKey> = document.records.iter().cloned().collect();
        assert_eq!(records, members[&row.id], "members of profile {}", row.id);
        assert_eq!(row.record_count, records.len() as u64);
        let held: BTreeSet<(String, String)> = document
            .identifiers
            .iter()
            .map(|i| (i.kind.clone(), i.value.clone()))
            .collect();
        assert_eq!(
            identifiers.remove(&row.id).unwrap_or_default(),
            held,
            "identifier rows of profile {}",
            row.id
        );
    }
    members
}

/// The partition alone, without ids.
fn partition(state: &BTreeMap<i64, BTreeSet<RecordKey>>) -> BTreeSet<BTreeSet<RecordKey>> {
    state.values().cloned().collect()
}

async fn chunked_full_passes_equal_incremental_steps(store: &SqlStore) {
    let (config, profiles) = (identity(), ProfilesConfig::default());
    let mut engine = IdentityEngine::new(store, &config, &profiles).unwrap();
    engine.step = 10;
    engine.write_records = 7;

    // Most records pending: one full pass, written 7 records at a time.
    apply_records(
        store,
        "crm",
        (0..120).map(|i| record(i, 1, false)).collect(),
    )
    .await;
    let report = engine.resolve_pending().await.unwrap();
    assert_eq!(report.records, 120);
    let first = state(store).await;
    assert_eq!(report.profiles_written, first.len() as u64);
    assert_eq!(report.created, first.len() as u64);

    // Few pending: steps of 10 records, some merging profiles, some deleting records.
    apply_records(
        store,
        "shop",
        (120..150).map(|i| record(i, 1, false)).collect(),
    )
    .await;
    apply_records(
        store,
        "crm",
        (0..120)
            .filter(|i: &u32| i.is_multiple_of(9))
            .map(|i| record(i, 2, true))
            .collect(),
    )
    .await;
    engine.resolve_pending().await.unwrap();
    let stepped = state(store).await;
    assert_eq!(
        stepped.values().map(BTreeSet::len).sum::<usize>(),
        150 - 14,
        "deleted records leave their profiles"
    );

    // A rebuild in chunks finds the same profiles with the same ids, and changes nothing.
    let report = engine.rebuild().await.unwrap();
    assert_eq!(state(store).await, stepped);
    assert_eq!(
        (
            report.unchanged,
            report.split,
            report.merged,
            report.created
        ),
        (stepped.len() as u64, 0, 0, 0)
    );

    // So does a rebuild written in one chunk.
    let mut one_chunk = IdentityEngine::new(store, &config, &profiles).unwrap();
    one_chunk.write_records = usize::MAX;
    let rebuilt = one_chunk.rebuild().await.unwrap();
    assert_eq!(rebuilt.unchanged, stepped.len() as u64);
    assert_eq!(partition(&state(store).await), partition(&stepped));
}

/// CPU-bound work runs in place on a current-thread runtime, and through `block_in_place` from both a
/// worker task and `block_on` on a multi-threaded one (the daemon's and the benchmark's runtimes).
#[test]
fn cpu_work_runs_on_either_runtime_flavor() {
    let sum = || (1..=100u64).into_par_iter().sum::<u64>();
    let current = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(current.block_on(async { super::on_every_core(sum) }), 5050);
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    assert_eq!(multi.block_on(async { super::on_every_core(sum) }), 5050);
    let spawned =
        multi.block_on(async { tokio::spawn(async move { super::on_every_core(sum) }).await });
    assert_eq!(spawned.unwrap(), 5050);
}
