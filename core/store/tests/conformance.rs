//! The store conformance suite: every behaviour the rest of Spindle relies on, run against both backends.
//!
//! SQLite runs in a temporary file. PostgreSQL runs against `SPINDLE_TEST_POSTGRES_URL` (`.ci/postgres.sh`
//! prints it), each test in a schema of its own that is dropped afterwards. Without that variable the
//! PostgreSQL half fails with instructions, unless `SPINDLE_TEST_SKIP_POSTGRES=1` says to leave it out.

#![allow(clippy::unwrap_used)] // a test file: a failed unwrap is a failed assertion

use std::collections::{BTreeMap, HashSet};

use chrono::{TimeZone, Utc};
use serde_json::json;
use spindle_model::{
    Cursor, Event, Identifier, JobCounts, JobId, JobStatus, JobTrigger, NewAuditEntry,
    QuarantinedRecord, RawRecord, RecordKey,
};
use spindle_store::{
    AllRows, Backend, IdentityStore, OpenOptions, PayloadParts, ProfileChangeStore, ProfileStore,
    ProfileWrite, ResolutionRows, ResolutionWrite, RowChanges, SourceBatch, SqlStore, StagedRows,
    StoreError,
};

spindle_testkit::store_backends!(
    reopening_runs_no_migration_twice,
    new_records_are_inserted_once,
    versions_decide_replacement,
    duplicates_inside_one_batch_keep_the_newest,
    cursors_commit_with_their_records,
    changes_are_followed_by_sequence,
    quarantine_keeps_each_bad_record_once,
    job_runs_are_recorded,
    interrupted_runs_are_marked,
    audit_log_is_append_only,
    concurrent_batches_get_distinct_sequences,
    large_batches_mix_inserts_updates_and_repeats,
    profile_writes_are_logged_by_generation,
    memberships_are_paged_in_key_order,
    records_to_resolve_decode_as_far_as_asked,
    a_new_resolution_waits_for_a_resolution_write_in_progress,
    staged_rows_take_the_place_of_every_row,
    row_changes_are_written_unless_profiles_were_written_since,
    a_profile_whose_fingerprint_and_rows_are_as_stored_is_left_alone,
);

fn record(id: &str, version: i64, email: &str) -> RawRecord {
    RawRecord {
        stream: "contacts".into(),
        external_id: id.into(),
        version,
        updated_at: Some(
            Utc.timestamp_millis_opt(1_700_000_000_000 + version)
                .unwrap(),
        ),
        deleted: false,
        identifiers: vec![Identifier::new("email", email)],
        traits: BTreeMap::from([("first_name".to_owned(), json!("Ada"))]),
        events: vec![],
    }
}

fn key(id: &str) -> RecordKey {
    RecordKey {
        source: "crm".into(),
        stream: "contacts".into(),
        external_id: id.into(),
    }
}

fn records(list: Vec<RawRecord>) -> SourceBatch {
    SourceBatch {
        records: list,
        ..SourceBatch::default()
    }
}

async fn reopening_runs_no_migration_twice(store: &SqlStore) {
    store
        .apply_source_batch("crm", records(vec![record("1", 1, "a@x.io")]))
        .await
        .unwrap();
    let reopened = SqlStore::open(store.url(), &OpenOptions::default())
        .await
        .expect("reopen");
    assert_eq!(reopened.count_records(None).await.unwrap(), 1);
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(applied, spindle_store::latest_version());
}

async fn new_records_are_inserted_once(store: &SqlStore) {
    let batch = records(vec![record("1", 1, "a@x.io"), record("2", 1, "b@x.io")]);
    let first = store
        .apply_source_batch("crm", batch.clone())
        .await
        .unwrap();
    assert_eq!((first.inserted, first.updated, first.unchanged), (2, 0, 0));
    let again = store.apply_source_batch("crm", batch).await.unwrap();
    assert_eq!((again.inserted, again.updated, again.unchanged), (0, 0, 2));
    assert_eq!(store.count_records(Some("crm")).await.unwrap(), 2);
    assert_eq!(store.count_records(Some("shop")).await.unwrap(), 0);

    let stored = store.record(&key("2")).await.unwrap().expect("stored");
    assert_eq!(stored.source, "crm");
    assert_eq!(stored.record, record("2", 1, "b@x.io"));
    assert!(store.record(&key("3")).await.unwrap().is_none());
}

async fn versions_decide_replacement(store: &SqlStore) {
    store
        .apply_source_batch("crm", records(vec![record("1", 5, "old@x.io")]))
        .await
        .unwrap();
    let seq_before = store.record(&key("1")).await.unwrap().unwrap().seq;

    // An older version never overwrites a newer one.
    let stale = store
        .apply_source_batch("crm", records(vec![record("1", 4, "stale@x.io")]))
        .await
        .unwrap();
    assert_eq!(stale.unchanged, 1);
    assert_eq!(
        store
            .record(&key("1"))
            .await
            .unwrap()
            .unwrap()
            .record
            .identifiers[0]
            .value,
        "old@x.io"
    );

    // A newer version with the same content is remembered but is not a change.
    let same = store
        .apply_source_batch("crm", records(vec![record("1", 6, "old@x.io")]))
        .await
        .unwrap();
    assert_eq!(same.unchanged, 1);
    let stored = store.record(&key("1")).await.unwrap().unwrap();
    assert_eq!((stored.record.version, stored.seq), (6, seq_before));

    // A newer version with new content replaces it and takes a new change sequence.
    let newer = store
        .apply_source_batch("crm", records(vec![record("1", 7, "new@x.io")]))
        .await
        .unwrap();
    assert_eq!(newer.updated, 1);
    let stored = store.record(&key("1")).await.unwrap().unwrap();
    assert_eq!(stored.record.identifiers[0].value, "new@x.io");
    assert!(stored.seq > seq_before);
    assert!(stored.observed_at >= stored.first_seen_at);

    // Deletion upstream is a new version too.
    let mut gone = record("1", 8, "new@x.io");
    gone.deleted = true;
    store
        .apply_source_batch("crm", records(vec![gone]))
        .await
        .unwrap();
    assert!(
        store
            .record(&key("1"))
            .await
            .unwrap()
            .unwrap()
            .record
            .deleted
    );
}

async fn duplicates_inside_one_batch_keep_the_newest(store: &SqlStore) {
    let batch = records(vec![
        record("1", 2, "two@x.io"),
        record("1", 1, "one@x.io"),
        record("1", 3, "three@x.io"),
    ]);
    let report = store.apply_source_batch("crm", batch).await.unwrap();
    assert_eq!(
        (report.inserted, report.updated, report.unchanged),
        (1, 1, 1)
    );
    let stored = store.record(&key("1")).await.unwrap().unwrap();
    assert_eq!(
        (
            stored.record.version,
            stored.record.identifiers[0].value.as_str()
        ),
        (3, "three@x.io")
    );
}

async fn cursors_commit_with_their_records(store: &SqlStore) {
    assert!(store.cursor("crm", "contacts").await.unwrap().is_none());
    let cursor = Cursor {
        stream: "contacts".into(),
        position: json!({"after": "2024-01-01T00:00:00Z", "id": 7}),
    };
    let batch = SourceBatch {
        records: vec![record("1", 1, "a@x.io")],
        quarantined: vec![],
        cursors: vec![
            cursor.clone(),
            Cursor {
                stream: "companies".into(),
                position: json!(3),
            },
        ],
    };
    store.apply_source_batch("crm", batch).await.unwrap();
    assert_eq!(store.cursor("crm", "contacts").await.unwrap(), Some(cursor));
    let all = store.cursors("crm").await.unwrap();
    assert_eq!(
        all.iter().map(|c| c.stream.as_str()).collect::<Vec<_>>(),
        ["companies", "contacts"]
    );
    assert!(store.cursors("shop").await.unwrap().is_empty());

    let moved = Cursor {
        stream: "contacts".into(),
        position: json!({"after": "2024-02-01T00:00:00Z", "id": 9}),
    };
    store
        .apply_source_batch(
            "crm",
            SourceBatch {
                cursors: vec![moved.clone()],
                ..SourceBatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(store.cursor("crm", "contacts").await.unwrap(), Some(moved));

    assert_eq!(store.reset_cursors("crm").await.unwrap(), 2);
    assert!(store.cursors("crm").await.unwrap().is_empty());
    assert_eq!(
        store.count_records(Some("crm")).await.unwrap(),
        1,
        "a full re-sync keeps the records"
    );
}

async fn changes_are_followed_by_sequence(store: &SqlStore) {
    let batch: Vec<_> = (0..25)
        .map(|i| record(&format!("r{i:02}"), 1, &format!("{i}@x.io")))
        .collect();
    store
        .apply_source_batch("crm", records(batch))
        .await
        .unwrap();
    store
        .apply_source_batch("crm", records(vec![record("r03", 2, "changed@x.io")]))
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = store.records_since(after, 10).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(
            page.windows(2).all(|w| w[0].seq < w[1].seq),
            "pages are ordered by sequence"
        );
        after = page.last().unwrap().seq;
        seen.extend(page.into_iter().map(|r| r.record.external_id));
    }
    assert_eq!(
        seen.len(),
        25,
        "every record appears once, at its latest change"
    );
    assert_eq!(
        seen.last().map(String::as_str),
        Some("r03"),
        "the changed record moved to the end"
    );
}

async fn quarantine_keeps_each_bad_record_once(store: &SqlStore) {
    let bad = QuarantinedRecord {
        stream: "rows".into(),
        location: "line 3".into(),
        reason: "invalid email".into(),
        payload: "x,not-an-email".into(),
    };
    let batch = SourceBatch {
        quarantined: vec![bad.clone()],
        ..SourceBatch::default()
    };
    assert_eq!(
        store
            .apply_source_batch("file", batch.clone())
            .await
            .unwrap()
            .quarantined,
        1
    );
    assert_eq!(
        store
            .apply_source_batch("file", batch)
            .await
            .unwrap()
            .quarantined,
        0,
        "a re-read adds no copy"
    );
    let other = QuarantinedRecord {
        location: "line 9".into(),
        ..bad.clone()
    };
    store
        .apply_source_batch(
            "file",
            SourceBatch {
                quarantined: vec![other],
                ..SourceBatch::default()
            },
        )
        .await
        .unwrap();

    let listed = store.quarantined(Some("file"), 10).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1].record, bad, "newest first");
    assert!(store.quarantined(Some("crm"), 10).await.unwrap().is_empty());
    assert_eq!(store.quarantined(None, 1).await.unwrap().len(), 1);
}

async fn job_runs_are_recorded(store: &SqlStore) {
    let job = JobId::source("crm");
    assert!(store.last_run(&job).await.unwrap().is_none());
    let planned = Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap();
    let started = Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 2).unwrap();
    let first = store
        .start_run(&job, JobTrigger::Schedule, planned, started)
        .await
        .unwrap();
    let counts = JobCounts {
        read: 10,
        inserted: 7,
        updated: 1,
        unchanged: 1,
        quarantined: 1,
        ..JobCounts::default()
    };
    store
        .finish_run(
            first,
            JobStatus::Succeeded,
            None,
            counts,
            started + chrono::Duration::seconds(3),
        )
        .await
        .unwrap();
    let second = store
        .start_run(&job, JobTrigger::Manual, started, started)
        .await
        .unwrap();
    store
        .finish_run(
            second,
            JobStatus::Failed,
            Some("vendor said 500"),
            JobCounts::default(),
            started,
        )
        .await
        .unwrap();
    store
        .start_run(&JobId::sync("vip"), JobTrigger::CatchUp, started, started)
        .await
        .unwrap();

    let last = store.last_run(&job).await.unwrap().unwrap();
    assert_eq!(
        (last.id, last.status, last.trigger),
        (second, JobStatus::Failed, JobTrigger::Manual)
    );
    assert_eq!(last.error.as_deref(), Some("vendor said 500"));
    let runs = store.runs(Some(&job), 10).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1].counts, counts);
    assert_eq!(runs[1].scheduled_for, planned);
    assert_eq!(
        runs[1].finished_at,
        Some(started + chrono::Duration::seconds(3))
    );
    assert_eq!(store.runs(None, 10).await.unwrap().len(), 3);
    assert!(
        store
            .finish_run(9_999_999, JobStatus::Succeeded, None, counts, started)
            .await
            .is_err()
    );
}

async fn interrupted_runs_are_marked(store: &SqlStore) {
    let now = Utc::now();
    let running = store
        .start_run(&JobId::source("crm"), JobTrigger::Schedule, now, now)
        .await
        .unwrap();
    let done = store
        .start_run(&JobId::source("shop"), JobTrigger::Schedule, now, now)
        .await
        .unwrap();
    store
        .finish_run(done, JobStatus::Succeeded, None, JobCounts::default(), now)
        .await
        .unwrap();
    assert_eq!(store.mark_interrupted_runs(now).await.unwrap(), 1);
    let run = store
        .last_run(&JobId::source("crm"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((run.id, run.status), (running, JobStatus::Interrupted));
    assert!(run.error.is_some());
    assert_eq!(
        store
            .last_run(&JobId::source("shop"))
            .await
            .unwrap()
            .unwrap()
            .status,
        JobStatus::Succeeded
    );
}

async fn audit_log_is_append_only(store: &SqlStore) {
    let entry = NewAuditEntry {
        actor: "cli:ops".into(),
        action: "store.backup".into(),
        target: "/backups/a.db".into(),
        details: json!({"bytes": 4096}),
    };
    let first = store.append_audit(entry.clone()).await.unwrap();
    let second = store
        .append_audit(NewAuditEntry {
            action: "source.full_resync".into(),
            ..entry.clone()
        })
        .await
        .unwrap();
    assert!(second.id > first.id);
    let log = store.audit_log(0, 10).await.unwrap();
    assert_eq!(log, vec![first.clone(), second]);
    assert_eq!(store.audit_log(first.id, 10).await.unwrap().len(), 1);

    let update = sqlx::query("UPDATE audit_log SET actor = 'someone else'")
        .execute(store.pool())
        .await;
    assert!(update.is_err(), "an audit entry cannot be changed");
    let delete = sqlx::query("DELETE FROM audit_log")
        .execute(store.pool())
        .await;
    assert!(delete.is_err(), "an audit entry cannot be deleted");
    assert_eq!(store.audit_log(0, 10).await.unwrap().len(), 2);
}

async fn concurrent_batches_get_distinct_sequences(store: &SqlStore) {
    let mut tasks = Vec::new();
    for writer in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for batch in 0..5 {
                let list = (0..20)
                    .map(|i| record(&format!("w{writer}-b{batch}-{i}"), 1, "x@x.io"))
                    .collect();
                store
                    .apply_source_batch("crm", records(list))
                    .await
                    .expect("concurrent batch");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let all = store.records_since(0, 1000).await.unwrap();
    assert_eq!(all.len(), 400);
    let seqs: HashSet<i64> = all.iter().map(|r| r.seq).collect();
    assert_eq!(seqs.len(), 400);
}

async fn large_batches_mix_inserts_updates_and_repeats(store: &SqlStore) {
    // More keys than one lookup query or one multi-row insert holds.
    let first: Vec<_> = (0..1000)
        .map(|i| record(&format!("k{i}"), 1, &format!("{i}@x.io")))
        .collect();
    let report = store
        .apply_source_batch("crm", records(first))
        .await
        .unwrap();
    assert_eq!(report.inserted, 1000);
    let mut second: Vec<_> = (500..1500)
        .map(|i| record(&format!("k{i}"), 2, &format!("{i}@x.io")))
        .collect();
    for r in second.iter_mut().take(250) {
        r.identifiers[0].value = format!("changed-{}", r.external_id);
    }
    let report = store
        .apply_source_batch("crm", records(second))
        .await
        .unwrap();
    assert_eq!(
        (report.inserted, report.updated, report.unchanged),
        (500, 250, 250)
    );
    assert_eq!(store.count_records(Some("crm")).await.unwrap(), 1500);
    let changed = store.record(&key("k600")).await.unwrap().unwrap();
    assert_eq!(changed.record.identifiers[0].value, "changed-k600");
    let same = store.record(&key("k900")).await.unwrap().unwrap();
    assert_eq!(
        (
            same.record.version,
            same.record.identifiers[0].value.as_str()
        ),
        (2, "900@x.io")
    );
}

fn profile(id: i64) -> ProfileWrite {
    ProfileWrite {
        id,
        search_text: id.to_string(),
        members: vec![key(&format!("p{id}"))],
        identifiers: vec![("email".into(), format!("p{id}@example.com"))],
        document: json!({ "id": id }),
        fingerprint: None,
    }
}

async fn profile_writes_are_logged_by_generation(store: &SqlStore) {
    assert_eq!(store.profile_generation().await.unwrap(), 0);
    let nothing = store.profile_changes_since(0).await.unwrap();
    assert_eq!((nothing.generation, nothing.everything), (0, false));
    assert!(nothing.ids.is_empty());

    store
        .write_resolution(ResolutionWrite {
            profiles: vec![profile(1), profile(2)],
            ..ResolutionWrite::default()
        })
        .await
        .unwrap();
    let first = store.profile_generation().await.unwrap();
    assert!(first > 0);
    store
        .write_resolution(ResolutionWrite {
            removed: vec![2],
            profiles: vec![profile(3)],
            ..ResolutionWrite::default()
        })
        .await
        .unwrap();
    // A write that touches no profile leaves no entry.
    store
        .write_resolution(ResolutionWrite::default())
        .await
        .unwrap();
    let second = store.profile_generation().await.unwrap();
    assert!(second > first);

    let all = store.profile_changes_since(0).await.unwrap();
    assert_eq!(all.generation, second);
    assert!(!all.everything);
    assert_eq!(all.ids.into_iter().collect::<Vec<_>>(), vec![1, 2, 3]);
    let later = store.profile_changes_since(first).await.unwrap();
    assert_eq!(later.ids.into_iter().collect::<Vec<_>>(), vec![2, 3]);
    let none = store.profile_changes_since(second).await.unwrap();
    assert_eq!(none.generation, second);
    assert!(none.ids.is_empty() && !none.everything);

    // A full pass replaces every row: readers reload.
    let token = store.begin_staged_rows().await.unwrap();
    store
        .write_resolution(ResolutionWrite {
            profiles: vec![profile(1)],
            rows: ResolutionRows::Staged(StagedRows {
                token,
                rows: AllRows {
                    members: vec![(key("p1"), 1)],
                    identifiers: vec![("email".into(), "p1@example.com".into(), 1)],
                },
                last: true,
            }),
            ..ResolutionWrite::default()
        })
        .await
        .unwrap();
    let rebuilt = store.profile_changes_since(second).await.unwrap();
    assert!(rebuilt.everything);
    assert!(rebuilt.generation > second);

    // Entries older than the log keeps are pruned: a reader that far behind is told to reload.
    for _ in 0..=spindle_store::PROFILE_CHANGES_KEPT {
        store
            .write_resolution(ResolutionWrite {
                profiles: vec![profile(1)],
                ..ResolutionWrite::default()
            })
            .await
            .unwrap();
    }
    let behind = store.profile_changes_since(first).await.unwrap();
    assert!(behind.everything, "entries after {first} were pruned");
    let newest = store.profile_generation().await.unwrap();
    let recent = store.profile_changes_since(newest - 1).await.unwrap();
    assert!(!recent.everything);
    assert_eq!(recent.ids.into_iter().collect::<Vec<_>>(), vec![1]);
}

async fn a_profile_whose_fingerprint_and_rows_are_as_stored_is_left_alone(store: &SqlStore) {
    let write = |document: serde_json::Value, fingerprint: Option<i64>, extra: Option<&str>| {
        let mut profile = profile(1);
        profile.document = document;
        profile.fingerprint = fingerprint;
        if let Some(email) = extra {
            profile.identifiers.push(("email".into(), email.into()));
        }
        ResolutionWrite {
            profiles: vec![profile],
            ..ResolutionWrite::default()
        }
    };
    let stored = || async { store.profile(1).await.unwrap().unwrap() };

    store
        .write_resolution(write(json!({"v": 1}), Some(7), None))
        .await
        .unwrap();
    let first = stored().await;
    assert_eq!(first.document, json!({"v": 1}));
    assert_eq!(
        store.profile_fingerprints(&[1, 2]).await.unwrap(),
        vec![(1, 7)]
    );

    // Same fingerprint, same rows: the row stays as it was, version included (a document that differs
    // under the same fingerprint shows that nothing was written).
    store
        .write_resolution(write(json!({"v": 2}), Some(7), None))
        .await
        .unwrap();
    assert_eq!(stored().await, first);

    // Same fingerprint, other rows: written, and the rows follow.
    store
        .write_resolution(write(json!({"v": 3}), Some(7), Some("extra@example.com")))
        .await
        .unwrap();
    let with_extra = stored().await;
    assert_eq!(with_extra.document, json!({"v": 3}));
    assert!(with_extra.updated_at > first.updated_at);
    let found = store
        .profiles_with_identifiers(&[("email".into(), "extra@example.com".into())])
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");

    // Another fingerprint, or none: written.
    store
        .write_resolution(write(json!({"v": 4}), Some(8), Some("extra@example.com")))
        .await
        .unwrap();
    let refingerprinted = stored().await;
    assert_eq!(refingerprinted.document, json!({"v": 4}));
    assert!(refingerprinted.updated_at > with_extra.updated_at);
    for version in [5, 6] {
        store
            .write_resolution(write(
                json!({"v": version}),
                None,
                Some("extra@example.com"),
            ))
            .await
            .unwrap();
        assert_eq!(stored().await.document, json!({"v": version}));
    }
    assert!(store.profile_fingerprints(&[1]).await.unwrap().is_empty());
}

async fn staged_rows_take_the_place_of_every_row(store: &SqlStore) {
    let email = |value: &str| ("email".to_owned(), value.to_owned());
    let mut one = profile(1);
    one.members = vec![key("a"), key("b")];
    one.identifiers = vec![email("x@example.com")];
    let mut two = profile(2);
    two.members = vec![key("c")];
    two.identifiers = vec![email("y@example.com")];
    store
        .write_resolution(ResolutionWrite {
            profiles: vec![one, two],
            ..ResolutionWrite::default()
        })
        .await
        .unwrap();

    // A chunk of a full pass stages its rows; the last write puts every staged row in place. A staging
    // left by an interrupted pass is dropped when the next one begins.
    assert!(!store.full_pass_unfinished().await.unwrap());
    let interrupted = store.begin_staged_rows().await.unwrap();
    let staged = |token: i64, rows: AllRows, last: bool| ResolutionWrite {
        rows: ResolutionRows::Staged(StagedRows { token, rows, last }),
        ..ResolutionWrite::default()
    };
    // Until a pass puts its rows in place, a step's write is refused: profiles the pass wrote list rows
    // that are not in place yet.
    assert!(store.full_pass_unfinished().await.unwrap());
    let mut stepped = profile(2);
    stepped.members = vec![key("c"), key("e")];
    let refused = store
        .write_resolution(ResolutionWrite {
            profiles: vec![stepped],
            ..ResolutionWrite::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::FullPassUnfinished),
        "{refused}"
    );
    let stray = AllRows {
        members: vec![(key("stray"), 9)],
        identifiers: vec![("email".into(), "stray@example.com".into(), 9)],
    };
    store
        .write_resolution(staged(interrupted, stray.clone(), false))
        .await
        .unwrap();
    let token = store.begin_staged_rows().await.unwrap();
    assert!(token > interrupted);
    // The pass writes every profile it keeps, each listing the rows it stages for it.
    let mut one = profile(1);
    one.members = vec![key("a")];
    one.identifiers = vec![email("x@example.com")];
    let mut three = profile(3);
    three.members = vec![key("c")];
    three.identifiers = vec![email("z@example.com")];
    store
        .write_resolution(ResolutionWrite {
            profiles: vec![one, three],
            ..staged(
                token,
                AllRows {
                    members: vec![(key("a"), 1)],
                    identifiers: vec![("email".into(), "x@example.com".into(), 1)],
                },
                false,
            )
        })
        .await
        .unwrap();
    assert_eq!(
        store.memberships_after(None, 10).await.unwrap(),
        vec![(1, key("a")), (1, key("b")), (2, key("c"))],
        "staged rows are not in place yet"
    );
    // The interrupted pass cannot write again: its staging is gone.
    let refused = store
        .write_resolution(staged(interrupted, stray, true))
        .await
        .unwrap_err();
    assert!(matches!(refused, StoreError::StagingTaken), "{refused}");
    store
        .write_resolution(ResolutionWrite {
            removed: vec![2],
            ..staged(
                token,
                AllRows {
                    members: vec![(key("c"), 3)],
                    identifiers: vec![("email".into(), "z@example.com".into(), 3)],
                },
                true,
            )
        })
        .await
        .unwrap();
    assert_eq!(
        store.memberships_after(None, 10).await.unwrap(),
        vec![(1, key("a")), (3, key("c"))]
    );
    assert_eq!(
        store.profile_members(&[1, 2, 3]).await.unwrap(),
        vec![(1, key("a")), (3, key("c"))]
    );
    let mut identifiers = store.profile_identifiers(&[1, 2, 3]).await.unwrap();
    identifiers.sort();
    assert_eq!(
        identifiers,
        vec![
            (1, "email".to_owned(), "x@example.com".to_owned()),
            (3, "email".to_owned(), "z@example.com".to_owned()),
        ]
    );
    assert!(
        store
            .profiles_with_identifiers(&[email("y@example.com")])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.profile_ids().await.unwrap(), vec![1, 3]);
    let changes = store.profile_changes_since(0).await.unwrap();
    assert!(
        changes.everything,
        "a replacement of every row is logged as such"
    );

    // No index by profile is built (each profile lists its rows), and a step's write goes on from the
    // replaced rows.
    let indexes: i64 = match store.backend() {
        Backend::Sqlite => sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' \
             AND name IN ('profile_members_by_profile', 'profile_identifiers_by_profile')",
        ),
        Backend::Postgres => sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_indexes WHERE schemaname = current_schema() \
             AND indexname IN ('profile_members_by_profile', 'profile_identifiers_by_profile')",
        ),
    }
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(indexes, 0);
    let staging_tables: i64 = match store.backend() {
        Backend::Sqlite => sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'profile_%_staged'",
        ),
        Backend::Postgres => sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema() \
             AND tablename LIKE 'profile_%_staged'",
        ),
    }
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(
        staging_tables, 0,
        "the staging tables took the live ones' place"
    );
    assert!(!store.full_pass_unfinished().await.unwrap());
    let mut three = profile(3);
    three.members = vec![key("c"), key("d")];
    three.identifiers = vec![email("z@example.com")];
    store
        .write_resolution(ResolutionWrite {
            profiles: vec![three],
            ..ResolutionWrite::default()
        })
        .await
        .unwrap();
    assert_eq!(
        store.profile_members(&[3]).await.unwrap(),
        vec![(3, key("c")), (3, key("d"))]
    );
}

async fn row_changes_are_written_unless_profiles_were_written_since(store: &SqlStore) {
    let email = |value: &str| ("email".to_owned(), value.to_owned());
    let row = |value: &str, id: i64| ("email".to_owned(), value.to_owned(), id);
    let mut one = profile(1);
    one.members = vec![key("a"), key("b")];
    one.identifiers = vec![email("a@example.com"), email("b@example.com")];
    store
        .write_resolution(ResolutionWrite {
            profiles: vec![one],
            ..ResolutionWrite::default()
        })
        .await
        .unwrap();
    let read_at = store.profile_generation().await.unwrap();

    // Record b leaves profile 1 for a new profile 2, record c joins 2, and a deleted record d (which
    // was never a member) leaves nothing behind.
    let mut one = profile(1);
    one.members = vec![key("a")];
    one.identifiers = vec![email("a@example.com")];
    let mut two = profile(2);
    two.members = vec![key("b"), key("c")];
    two.identifiers = vec![email("b@example.com")];
    let changes = RowChanges {
        generation: read_at,
        members: vec![(key("b"), 2), (key("c"), 2)],
        members_gone: vec![key("d")],
        identifiers: vec![row("b@example.com", 2)],
        identifiers_gone: vec![row("b@example.com", 1)],
        new_ids: vec![2],
    };
    store
        .write_resolution(ResolutionWrite {
            profiles: vec![one.clone(), two.clone()],
            rows: ResolutionRows::Changes(changes.clone()),
            ..ResolutionWrite::default()
        })
        .await
        .unwrap();
    let expected_members = vec![(1, key("a")), (2, key("b")), (2, key("c"))];
    let expected_identifiers = vec![
        (1, "email".to_owned(), "a@example.com".to_owned()),
        (2, "email".to_owned(), "b@example.com".to_owned()),
    ];
    assert_eq!(
        store.profile_members(&[1, 2]).await.unwrap(),
        expected_members
    );
    let mut identifiers = store.profile_identifiers(&[1, 2]).await.unwrap();
    identifiers.sort();
    assert_eq!(identifiers, expected_identifiers);

    // Changes computed before a write of profiles are not trusted: changes that would only add a row
    // to profile 1 leave it with what its write lists instead (the row another write gave it goes).
    let mut strayed = one.clone();
    strayed.identifiers.push(email("stray@example.com"));
    store
        .write_resolution(ResolutionWrite {
            profiles: vec![strayed],
            ..ResolutionWrite::default()
        })
        .await
        .unwrap();
    let stale = RowChanges {
        generation: read_at,
        members: vec![(key("e"), 1)],
        ..RowChanges::default()
    };
    store
        .write_resolution(ResolutionWrite {
            profiles: vec![one.clone()],
            rows: ResolutionRows::Changes(stale),
            ..ResolutionWrite::default()
        })
        .await
        .unwrap();
    assert_eq!(
        store.profile_members(&[1, 2]).await.unwrap(),
        expected_members,
        "the stale changes' member was not written"
    );
    let mut identifiers = store.profile_identifiers(&[1, 2]).await.unwrap();
    identifiers.sort();
    assert_eq!(identifiers, expected_identifiers, "the stray row is gone");
    assert!(
        store
            .profiles_with_identifiers(&[email("stray@example.com")])
            .await
            .unwrap()
            .is_empty()
    );

    // Changes of the current generation are written as they are.
    let current = RowChanges {
        generation: store.profile_generation().await.unwrap(),
        identifiers: vec![row("c@example.com", 2)],
        ..RowChanges::default()
    };
    two.identifiers.push(email("c@example.com"));
    two.fingerprint = Some(22);
    store
        .write_resolution(ResolutionWrite {
            profiles: vec![two],
            rows: ResolutionRows::Changes(current),
            ..ResolutionWrite::default()
        })
        .await
        .unwrap();
    let mut identifiers = store.profile_identifiers(&[2]).await.unwrap();
    identifiers.sort();
    assert_eq!(
        identifiers,
        vec![
            (2, "email".to_owned(), "b@example.com".to_owned()),
            (2, "email".to_owned(), "c@example.com".to_owned()),
        ]
    );

    // A write compared in full can take a record from a profile outside it (one written after the
    // resolution read): that profile no longer lists it.
    let mut taking = one.clone();
    taking.members.push(key("c"));
    store
        .write_resolution(ResolutionWrite {
            profiles: vec![taking],
            ..ResolutionWrite::default()
        })
        .await
        .unwrap();
    assert_eq!(
        store.profile_members(&[1, 2]).await.unwrap(),
        vec![(1, key("a")), (1, key("c")), (2, key("b"))]
    );
    assert!(
        store.profile_fingerprints(&[2]).await.unwrap().is_empty(),
        "profile 2's fingerprint no longer describes its rows"
    );

    // A removed profile's rows go with it, but for the records a written profile takes.
    let mut merged = profile(1);
    merged.members = vec![key("a"), key("b"), key("c")];
    merged.identifiers = vec![email("a@example.com"), email("b@example.com")];
    let merge = RowChanges {
        generation: store.profile_generation().await.unwrap(),
        members: vec![(key("b"), 1)],
        identifiers: vec![row("b@example.com", 1)],
        ..RowChanges::default()
    };
    store
        .write_resolution(ResolutionWrite {
            removed: vec![2],
            profiles: vec![merged],
            rows: ResolutionRows::Changes(merge),
            ..ResolutionWrite::default()
        })
        .await
        .unwrap();
    let everyone = vec![(1, key("a")), (1, key("b")), (1, key("c"))];
    assert_eq!(store.profile_members(&[1, 2]).await.unwrap(), everyone);
    assert_eq!(store.memberships_after(None, 10).await.unwrap(), everyone);
    let mut identifiers = store.profile_identifiers(&[1, 2]).await.unwrap();
    identifiers.sort();
    assert_eq!(
        identifiers,
        vec![
            (1, "email".to_owned(), "a@example.com".to_owned()),
            (1, "email".to_owned(), "b@example.com".to_owned()),
        ]
    );
    assert!(
        store
            .profiles_with_identifiers(&[email("c@example.com")])
            .await
            .unwrap()
            .is_empty(),
        "the removed profile's identifier rows went with it"
    );
}

async fn memberships_are_paged_in_key_order(store: &SqlStore) {
    let mut two = profile(2);
    two.members = vec![key("b"), key("d")];
    let mut one = profile(1);
    one.members = vec![key("c"), key("a")];
    store
        .write_resolution(ResolutionWrite {
            profiles: vec![two, one],
            ..ResolutionWrite::default()
        })
        .await
        .unwrap();
    let first = store.memberships_after(None, 3).await.unwrap();
    assert_eq!(first, vec![(1, key("a")), (2, key("b")), (1, key("c"))]);
    let rest = store.memberships_after(Some(&key("c")), 3).await.unwrap();
    assert_eq!(rest, vec![(2, key("d"))]);
    assert!(
        store
            .memberships_after(Some(&key("d")), 3)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.all_memberships().await.unwrap(),
        [first, rest].concat()
    );
}

async fn records_to_resolve_decode_as_far_as_asked(store: &SqlStore) {
    let mut with_event = record("1", 1, "a@x.io");
    with_event.events = vec![Event {
        name: "order_completed".into(),
        occurred_at: Utc.timestamp_millis_opt(1_700_000_000_000).unwrap(),
        properties: BTreeMap::from([("amount".to_owned(), json!(42))]),
    }];
    store
        .apply_source_batch("crm", records(vec![with_event.clone()]))
        .await
        .unwrap();
    let whole = store.records_since(0, 10).await.unwrap();
    assert_eq!(whole[0].record, with_event);

    let encoded = store.records_to_resolve(0, 10).await.unwrap();
    assert_eq!(encoded.len(), 1);
    assert_eq!(
        (encoded[0].body.seq(), encoded[0].body.deleted()),
        (whole[0].seq, false)
    );
    assert_eq!(encoded[0].decode(PayloadParts::Whole).unwrap(), whole[0]);
    // The body decodes under any key it is given (the caller keeps keys apart).
    let elsewhere = encoded[0]
        .body
        .decode(("shop", "orders", "9"), PayloadParts::Whole)
        .unwrap();
    assert_eq!(
        (elsewhere.source.as_str(), elsewhere.record.stream.as_str()),
        ("shop", "orders")
    );
    assert_eq!(elsewhere.record.external_id, "9");
    assert_eq!(elsewhere.record.events, with_event.events);

    let lean = encoded[0].decode(PayloadParts::Identifiers).unwrap();
    assert_eq!((lean.seq, &lean.source), (whole[0].seq, &whole[0].source));
    assert_eq!(lean.record.identifiers, with_event.identifiers);
    assert!(lean.record.traits.is_empty() && lean.record.events.is_empty());

    let with_traits = encoded[0].decode(PayloadParts::WithoutEvents).unwrap();
    assert_eq!(with_traits.record.traits, with_event.traits);
    assert!(with_traits.record.events.is_empty());
    assert!(
        store
            .records_to_resolve(whole[0].seq, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A resolution write still in progress, as a cancelled resolution may leave one committing (a write
/// transaction that advances the high-water mark): a new resolution's first call waits for it to end,
/// then reads what it wrote.
async fn a_new_resolution_waits_for_a_resolution_write_in_progress(store: &SqlStore) {
    let mut in_progress = match store.backend() {
        Backend::Sqlite => store.pool().begin_with("BEGIN IMMEDIATE").await.unwrap(),
        Backend::Postgres => store.pool().begin().await.unwrap(),
    };
    sqlx::query("UPDATE counters SET value = 7 WHERE name = 'identity_seq'")
        .execute(&mut *in_progress)
        .await
        .unwrap();
    let next = {
        let store = store.clone();
        tokio::spawn(async move {
            store.settle_resolution_writes().await.unwrap();
            store.identity_high_water().await.unwrap()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !next.is_finished(),
        "it waits while the write is in progress"
    );
    in_progress.commit().await.unwrap();
    assert_eq!(next.await.unwrap(), 7);
}
