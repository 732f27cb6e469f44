#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use spindle_config::FileSourceSettings;
use spindle_model::{JobCounts, RecordKey};
use spindle_store::{ProfileStore, SqlStore};
use tokio_util::sync::CancellationToken;

use super::FileSource;
use crate::test_support::{run_all, temp_store};
use crate::{NoProgress, Progress, SourceError, run_source};

fn settings(path: PathBuf, id: Option<&str>, batch_size: usize) -> FileSourceSettings {
    FileSourceSettings {
        path,
        stream: "rows".into(),
        id_field: id.map(str::to_owned),
        identifiers: BTreeMap::from([
            ("email".into(), "Email".into()),
            ("phone".into(), "Phone".into()),
        ]),
        traits: BTreeMap::from([("first_name".into(), "First Name".into())]),
        delimiter: b',',
        batch_size,
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn append(path: &Path, text: &str) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

async fn run(source: &mut FileSource, store: &SqlStore) -> JobCounts {
    run_all("people", source, store).await.unwrap()
}

const HEADER: &str = "Id,Email,Phone,First Name\n";

#[tokio::test]
async fn appended_rows_are_the_only_ones_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("people.csv");
    write(
        &path,
        &format!("{HEADER}1,ada@example.com,,Ada\n2,,+33 6 12 34 56 78,Grace\n"),
    );
    let (store, _store_dir) = temp_store().await;
    let mut source = FileSource::csv(settings(path.clone(), Some("Id"), 1000));

    let first = run(&mut source, &store).await;
    assert_eq!((first.read, first.inserted), (2, 2));
    let unchanged = run(
        &mut FileSource::csv(settings(path.clone(), Some("Id"), 1000)),
        &store,
    )
    .await;
    assert_eq!(
        unchanged,
        JobCounts::default(),
        "an unchanged file imports nothing"
    );

    append(&path, "3,linus@example.com,,Linus\n");
    let more = run(
        &mut FileSource::csv(settings(path.clone(), Some("Id"), 1000)),
        &store,
    )
    .await;
    assert_eq!((more.read, more.inserted), (1, 1));
    assert_eq!(store.count_records(Some("people")).await.unwrap(), 3);

    let key = RecordKey {
        source: "people".into(),
        stream: "rows".into(),
        external_id: "2".into(),
    };
    let grace = store.record(&key).await.unwrap().unwrap();
    assert_eq!(
        grace.record.identifiers.len(),
        1,
        "the empty email is not an identifier"
    );
    assert_eq!(
        grace.record.identifiers[0].value, "+33 6 12 34 56 78",
        "raw value kept"
    );
    assert_eq!(grace.record.traits["first_name"], "Grace");
}

#[tokio::test]
async fn malformed_rows_are_quarantined_and_the_rest_imported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("people.csv");
    write(
        &path,
        &format!(
            "{HEADER}1,ada@example.com,,Ada\n2,only-three,fields\n3,,,Nobody\n,x@example.com,,No Id\n4,grace@example.com,,Grace\n"
        ),
    );
    let (store, _store_dir) = temp_store().await;
    let counts = run(
        &mut FileSource::csv(settings(path.clone(), Some("Id"), 2)),
        &store,
    )
    .await;
    assert_eq!(
        (counts.read, counts.inserted, counts.quarantined),
        (5, 2, 3)
    );

    let quarantined = store.quarantined(Some("people"), 10).await.unwrap();
    let mut found: Vec<(String, String, String)> = quarantined
        .into_iter()
        .map(|q| {
            (
                q.record.location.rsplit(':').next().unwrap().to_owned(),
                q.record.reason,
                q.record.payload,
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            (
                "3".into(),
                "row has 3 fields but the header has 4".into(),
                "2,only-three,fields".into()
            ),
            (
                "4".into(),
                "row has no identifier: `Email`, `Phone` empty".into(),
                "3,,,Nobody".into()
            ),
            (
                "5".into(),
                "id column `Id` is empty".into(),
                ",x@example.com,,No Id".into()
            ),
        ]
    );
}

#[tokio::test]
async fn a_rewritten_file_is_imported_again_and_only_changes_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("people.csv");
    write(
        &path,
        &format!("{HEADER}1,ada@example.com,,Ada\n2,grace@example.com,,Grace\n"),
    );
    let (store, _store_dir) = temp_store().await;
    run(
        &mut FileSource::csv(settings(path.clone(), Some("Id"), 1000)),
        &store,
    )
    .await;

    write(
        &path,
        &format!("{HEADER}1,ada@example.com,,Augusta Ada\n2,grace@example.com,,Grace\n"),
    );
    let counts = run(
        &mut FileSource::csv(settings(path.clone(), Some("Id"), 1000)),
        &store,
    )
    .await;
    assert_eq!(
        (
            counts.read,
            counts.updated,
            counts.unchanged,
            counts.inserted
        ),
        (2, 1, 1, 0)
    );
    let key = RecordKey {
        source: "people".into(),
        stream: "rows".into(),
        external_id: "1".into(),
    };
    assert_eq!(
        store.record(&key).await.unwrap().unwrap().record.traits["first_name"],
        "Augusta Ada"
    );
}

#[tokio::test]
async fn a_later_row_for_the_same_id_wins() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("people.csv");
    write(&path, &format!("{HEADER}1,old@example.com,,Ada\n"));
    let (store, _store_dir) = temp_store().await;
    run(
        &mut FileSource::csv(settings(path.clone(), Some("Id"), 1000)),
        &store,
    )
    .await;
    append(&path, "1,new@example.com,,Ada\n1,newest@example.com,,Ada\n");
    run(
        &mut FileSource::csv(settings(path.clone(), Some("Id"), 1000)),
        &store,
    )
    .await;
    let key = RecordKey {
        source: "people".into(),
        stream: "rows".into(),
        external_id: "1".into(),
    };
    assert_eq!(
        store
            .record(&key)
            .await
            .unwrap()
            .unwrap()
            .record
            .identifiers[0]
            .value,
        "newest@example.com"
    );
}

#[tokio::test]
async fn a_missing_column_stops_the_run_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("people.csv");
    write(&path, "Id,E-mail,Phone,First Name\n1,a@x.io,,A\n");
    let (store, _store_dir) = temp_store().await;
    let err = run_source(
        "people",
        &mut FileSource::csv(settings(path, Some("Id"), 10)),
        &store,
        &CancellationToken::new(),
        &NoProgress,
    )
    .await
    .unwrap_err();
    let SourceError::Mismatch(message) = err else {
        panic!("expected a mismatch, got {err}")
    };
    assert!(
        message.contains("no column `Email` (identifiers.email)"),
        "{message}"
    );
    assert!(message.contains("`E-mail`"), "{message}");
    assert_eq!(store.count_records(None).await.unwrap(), 0);
}

#[tokio::test]
async fn jsonl_reads_nested_fields_and_quarantines_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("people.jsonl");
    write(
        &path,
        concat!(
            "{\"id\": 1, \"contact\": {\"email\": \"ada@example.com\"}, \"name\": \"Ada\"}\n",
            "not json\n",
            "\n",
            "[1, 2]\n",
            "{\"id\": 2, \"contact\": {\"email\": {\"nested\": true}}}\n",
            "{\"id\": 3, \"contact\": {\"email\": \"grace@example.com\"}, \"name\": null}",
        ),
    );
    let mut settings = settings(path, Some("id"), 1000);
    settings.identifiers = BTreeMap::from([("email".into(), "contact.email".into())]);
    settings.traits = BTreeMap::from([("first_name".into(), "name".into())]);
    let (store, _store_dir) = temp_store().await;
    let counts = run(&mut FileSource::jsonl(settings), &store).await;
    assert_eq!((counts.inserted, counts.quarantined), (2, 3));
    let reasons: Vec<String> = store
        .quarantined(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.record.reason)
        .collect();
    assert!(
        reasons.iter().any(|r| r.starts_with("invalid JSON")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r == "line is JSON an array but must be an object"),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r == "`contact.email` (identifiers.email) is an object, expected a string"),
        "{reasons:?}"
    );
    let key = RecordKey {
        source: "people".into(),
        stream: "rows".into(),
        external_id: "3".into(),
    };
    let grace = store.record(&key).await.unwrap().unwrap();
    assert!(grace.record.traits.is_empty(), "null fields are absent");
}

/// Cancels the run after a number of committed batches, as a shutdown would.
struct CancelAfter {
    batches: Mutex<u32>,
    token: CancellationToken,
}

impl Progress for CancelAfter {
    fn committed(&self, _stream: &str, _totals: &JobCounts) {
        let mut left = self.batches.lock().unwrap();
        *left = left.saturating_sub(1);
        if *left == 0 {
            self.token.cancel();
        }
    }
}

#[tokio::test]
async fn a_run_stopped_between_batches_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("people.csv");
    let mut text = HEADER.to_owned();
    for i in 0..95 {
        text.push_str(&format!("{i},p{i}@example.com,,P{i}\n"));
    }
    write(&path, &text);
    let (store, _store_dir) = temp_store().await;
    let token = CancellationToken::new();
    let stop = CancelAfter {
        batches: Mutex::new(3),
        token: token.clone(),
    };
    let (partial, cancelled) = run_source(
        "people",
        &mut FileSource::csv(settings(path.clone(), Some("Id"), 10)),
        &store,
        &token,
        &stop,
    )
    .await
    .unwrap();
    assert!(cancelled);
    assert_eq!(partial.inserted, 30);

    // A new process: a new source object that knows only the stored cursor.
    let rest = run(
        &mut FileSource::csv(settings(path.clone(), Some("Id"), 10)),
        &store,
    )
    .await;
    assert_eq!(
        (rest.read, rest.inserted, rest.unchanged),
        (65, 65, 0),
        "no row read twice, none skipped"
    );
    assert_eq!(store.count_records(Some("people")).await.unwrap(), 95);
}
