//! Resolution writes relax SQLite's durability (and keep statement journals in memory) on their own
//! connection only: every connection the pool hands out afterwards, whether the write succeeded or
//! failed, syncs its commits and journals as before.
#![allow(clippy::unwrap_used)] // a test file: a failed unwrap is a failed assertion

use spindle_model::RecordKey;
use spindle_store::{
    IdentityStore, OpenOptions, ProfileWrite, ResolutionRows, ResolutionWrite, SqlStore, StoreUrl,
};

/// `(synchronous, wal_autocheckpoint, temp_store)` of the pool's only connection.
async fn durability(store: &SqlStore) -> (i64, i64, i64) {
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let checkpoint: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let temp_store: i64 = sqlx::query_scalar("PRAGMA temp_store")
        .fetch_one(store.pool())
        .await
        .unwrap();
    (synchronous, checkpoint, temp_store)
}

fn profile(id: i64) -> ProfileWrite {
    ProfileWrite {
        id,
        document: serde_json::json!({ "id": id }),
        search_text: id.to_string(),
        members: vec![RecordKey {
            source: "crm".into(),
            stream: "contacts".into(),
            external_id: id.to_string(),
        }],
        identifiers: vec![("email".into(), format!("{id}@x.io"))],
        fingerprint: None,
    }
}

#[tokio::test]
async fn the_pool_keeps_full_durability_around_resolution_writes() {
    let folder = tempfile::tempdir().unwrap();
    let url = StoreUrl::parse("sqlite://store.db", folder.path(), None).unwrap();
    let options = OpenOptions {
        max_connections: 1,
        ..OpenOptions::default()
    };
    let store = SqlStore::open(&url, &options).await.unwrap();
    // FULL is 2; SQLite's default checkpoint threshold is 1,000 pages; temporary files as compiled (0),
    // where a resolution step's write keeps its statement journals in memory.
    assert_eq!(durability(&store).await, (2, 1000, 0));

    store
        .write_resolution(ResolutionWrite {
            profiles: vec![profile(1)],
            high_water: Some(1),
            ..ResolutionWrite::default()
        })
        .await
        .unwrap();
    assert_eq!(durability(&store).await, (2, 1000, 0));
    assert_eq!(store.identity_high_water().await.unwrap(), 1);

    // A write that fails midway (its aliases have nowhere to go) leaves the pool as it was, and
    // nothing of it is written.
    sqlx::query("DROP TABLE profile_aliases")
        .execute(store.pool())
        .await
        .unwrap();
    let failed = store
        .write_resolution(ResolutionWrite {
            profiles: vec![profile(2)],
            rows: ResolutionRows::PerProfile { new_ids: vec![2] },
            aliases: vec![(3, 2)],
            high_water: Some(2),
            ..ResolutionWrite::default()
        })
        .await;
    assert!(failed.is_err());
    assert_eq!(durability(&store).await, (2, 1000, 0));
    assert_eq!(store.identity_high_water().await.unwrap(), 1);
    assert_eq!(store.count_profiles().await.unwrap(), 1);
}
