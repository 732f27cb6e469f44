//! The engine's own paths on both backends: a full pass written in many small chunks, and the
//! difference-only row writes, against incremental steps.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use spindle_config::{IdentityConfig, ProfilesConfig};
use spindle_model::{Identifier, RawRecord, RecordKey};
use spindle_store::{
    AllRows, IdentityStore, ProfileWrite, ResolutionRows, ResolutionWrite, SqlStore, StagedRows,
};
use spindle_testkit::store::apply_records;

use rayon::prelude::*;

use super::{IdentityEngine, Keys, StoreTask, fingerprint};
use crate::profile::ProfileDocument;

spindle_testkit::store_backends!(
    chunked_full_passes_equal_incremental_steps,
    cancelled_full_passes_leave_a_state_the_next_one_settles,
    an_unfinished_full_pass_is_redone_by_the_next_resolution,
);

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

/// Loads records 0 to 119 into source `crm`.
async fn load_crm_records(store: &SqlStore) {
    apply_records(
        store,
        "crm",
        (0..120).map(|i| record(i, 1, false)).collect(),
    )
    .await;
}

/// Every profile with its member records, checked against the rows the store keeps beside the documents
/// and against each profile's list of the rows it holds.
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
    let mut identifier_rows: BTreeMap<i64, BTreeSet<(String, String)>> = BTreeMap::new();
    let rows: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT profile_id, id_type, id_value FROM profile_identifiers")
            .fetch_all(store.pool())
            .await
            .unwrap();
    for (id, kind, value) in rows {
        identifier_rows.entry(id).or_default().insert((kind, value));
    }
    let lists = store.profile_rows(&ids).await.unwrap();
    assert_eq!(lists.len(), ids.len(), "every profile lists its rows");
    for (id, held) in lists {
        let listed: BTreeSet<RecordKey> = held.members.into_iter().collect();
        assert_eq!(listed, members[&id], "listed members of profile {id}");
        let listed: BTreeSet<(String, String)> = held.identifiers.into_iter().collect();
        assert_eq!(
            listed,
            identifier_rows.remove(&id).unwrap_or_default(),
            "listed identifiers of profile {id}"
        );
    }
    assert!(
        identifier_rows.is_empty(),
        "identifier rows of no profile: {identifier_rows:?}"
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
    load_crm_records(store).await;
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

    // A rebuild in chunks finds the same profiles with the same ids, and changes nothing: not even a
    // profile's row (its document and version).
    let ids = store.profile_ids().await.unwrap();
    let rows_before = store.profiles_by_ids(&ids).await.unwrap();
    let report = engine.rebuild().await.unwrap();
    assert_eq!(state(store).await, stepped);
    assert_eq!(store.profiles_by_ids(&ids).await.unwrap(), rows_before);
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

/// A full pass cancelled anywhere (its future dropped: a shutdown, a timeout) leaves the high-water mark
/// where it was (unless its last write was already committing) and a store the next pass brings to the
/// same, consistent profiles as an uninterrupted one.
async fn cancelled_full_passes_leave_a_state_the_next_one_settles(store: &SqlStore) {
    let (config, profiles) = (identity(), ProfilesConfig::default());
    let mut engine = IdentityEngine::new(store, &config, &profiles).unwrap();
    engine.write_records = 7;
    load_crm_records(store).await;
    // Passes cancelled later and later, until one is given the time to finish.
    let (mut cancelled, mut finished) = (0, false);
    for wait_us in [0, 100, 300, 1_000, 3_000, 10_000, 30_000] {
        match tokio::time::timeout(Duration::from_micros(wait_us), engine.resolve_pending()).await {
            Ok(report) => {
                assert_eq!(report.unwrap().records, 120);
                finished = true;
                break;
            }
            Err(_) => cancelled += 1,
        }
        // A commit already handed to the database when the pass was dropped ends before the next pass
        // reads anything; the test waits for it the same way. When that was the pass's last write (which
        // follows every other), the pass is complete.
        store.settle_resolution_writes().await.unwrap();
        if store.identity_high_water().await.unwrap() > 0 {
            finished = true;
            break;
        }
    }
    assert!(cancelled > 0, "at least one pass was cancelled midway");
    if !finished {
        let report = engine.resolve_pending().await.unwrap();
        assert_eq!(report.records, 120, "the next pass resolves every record");
    }
    assert!(store.identity_high_water().await.unwrap() > 0);
    let settled = state(store).await;
    assert_eq!(settled.values().map(BTreeSet::len).sum::<usize>(), 120);
    // A rebuild from there changes nothing: the profiles are the ones an uninterrupted pass gives.
    let rebuilt = engine.rebuild().await.unwrap();
    assert_eq!(rebuilt.unchanged, settled.len() as u64);
    assert_eq!(state(store).await, settled);
}

/// A full pass that began and did not finish (a rebuild stopped midway) leaves profiles listing rows that
/// were never put in place. The next resolution runs a full pass, which brings lists and rows back in
/// step, instead of steps that would build on those lists.
async fn an_unfinished_full_pass_is_redone_by_the_next_resolution(store: &SqlStore) {
    let (config, profiles) = (identity(), ProfilesConfig::default());
    let engine = IdentityEngine::new(store, &config, &profiles).unwrap();
    load_crm_records(store).await;
    engine.resolve_pending().await.unwrap();
    let before = state(store).await;

    // The pass's first chunk rewrote a profile listing a record and an identifier it does not hold.
    let id = *before.keys().next().unwrap();
    let (_, held) = store.profile_rows(&[id]).await.unwrap().remove(0);
    let document = store
        .profiles_by_ids(&[id])
        .await
        .unwrap()
        .remove(0)
        .document;
    let mut members = held.members;
    members.push(RecordKey {
        source: "crm".into(),
        stream: "rows".into(),
        external_id: "r-ahead".into(),
    });
    let mut identifiers = held.identifiers;
    identifiers.push(("email".into(), "ahead@example.com".into()));
    let token = store.begin_staged_rows().await.unwrap();
    store
        .write_resolution(ResolutionWrite {
            profiles: vec![ProfileWrite {
                id,
                document,
                search_text: String::new(),
                members,
                identifiers,
                fingerprint: None,
            }],
            rows: ResolutionRows::Staged(StagedRows {
                token,
                rows: AllRows::default(),
                last: false,
            }),
            ..ResolutionWrite::default()
        })
        .await
        .unwrap();
    assert!(store.full_pass_unfinished().await.unwrap());

    // Few records pending, which a step would take, but the pass did not finish.
    apply_records(
        store,
        "shop",
        (120..125).map(|i| record(i, 1, false)).collect(),
    )
    .await;
    let report = engine.resolve_pending().await.unwrap();
    assert_eq!(report.records, 125, "every record is resolved again");
    assert!(!store.full_pass_unfinished().await.unwrap());
    let after = state(store).await;
    assert_eq!(after.values().map(BTreeSet::len).sum::<usize>(), 125);
}

/// A store task dropped before it finishes is aborted: it never runs on after the resolution gave up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_store_task_is_aborted() {
    let finished = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&finished);
    let task = StoreTask(tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        flag.store(true, Ordering::SeqCst);
        Ok(())
    }));
    drop(task);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!finished.load(Ordering::SeqCst));
}

#[test]
fn records_come_in_the_order_of_their_keys_whatever_order_their_names_came_in() {
    let mut keys = Keys::default();
    let pushed = [
        ("shop", "orders", "2"),
        ("crm", "contacts", "9"),
        ("crm", "contacts", "10"),
        ("crm", "accounts", "7"),
        ("shop", "customers", "1"),
        ("crm", "contacts", "1"),
    ];
    for (source, stream, id) in pushed {
        keys.push(source, stream, id);
    }
    let ordered: Vec<RecordKey> = keys
        .in_key_order()
        .into_iter()
        .map(|i| keys.key(i))
        .collect();
    let mut expected: Vec<RecordKey> = (0..pushed.len()).map(|i| keys.key(i)).collect();
    expected.sort();
    assert_eq!(ordered, expected);
    assert_eq!(ordered[0].stream, "accounts");
    assert_eq!(ordered[5].stream, "orders");
}

#[test]
fn a_fingerprint_covers_the_content_the_search_text_and_the_rows() {
    let key = |id: &str| RecordKey {
        source: "crm".into(),
        stream: "contacts".into(),
        external_id: id.into(),
    };
    let email = |value: &str| vec![("email".to_owned(), value.to_owned())];
    let base = fingerprint("{}", "ada", &[key("1")], &email("a@x.io"));
    assert_eq!(
        base,
        fingerprint("{}", "ada", &[key("1")], &email("a@x.io"))
    );
    for other in [
        fingerprint("{\"a\":1}", "ada", &[key("1")], &email("a@x.io")),
        fingerprint("{}", "ada b", &[key("1")], &email("a@x.io")),
        fingerprint("{}", "ada", &[key("1"), key("2")], &email("a@x.io")),
        fingerprint("{}", "ada", &[key("1")], &email("b@x.io")),
        // The same bytes cut into other texts.
        fingerprint("{}a", "da", &[key("1")], &email("a@x.io")),
    ] {
        assert_ne!(other, base);
    }
}
