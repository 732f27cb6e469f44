//! API-created segments ([`AdminStore`]) on both backends: each change commits with its audit entry, a
//! taken id changes nothing, and deleting a segment records its members' exits.

#![allow(clippy::unwrap_used)] // a test file: a failed unwrap is a failed assertion

use chrono::Utc;
use serde_json::json;
use spindle_model::NewAuditEntry;
use spindle_store::{AdminStore, ApiSegmentWrite, ProfileStore, SqlStore, SyncStore};

spindle_testkit::store_backends!(
    segments_are_created_read_updated_and_deleted_with_their_audit_entries,
    deleting_a_segment_records_its_members_leaving,
);

fn write(id: &str, expression: &str, actor: &str) -> ApiSegmentWrite {
    ApiSegmentWrite {
        id: id.into(),
        expression: expression.into(),
        description: Some(format!("{id} segment")),
        actor: actor.into(),
    }
}

fn audit(action: &str, target: &str) -> NewAuditEntry {
    NewAuditEntry {
        actor: "api:alice".into(),
        action: action.into(),
        target: target.into(),
        details: json!({ "n": 1 }),
    }
}

async fn segments_are_created_read_updated_and_deleted_with_their_audit_entries(store: &SqlStore) {
    assert!(store.api_segments().await.unwrap().is_empty());
    let created = store
        .create_api_segment(
            write("vip", "total_spent > 500", "api:alice"),
            audit("segment.create", "vip"),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(created.id, "vip");
    assert_eq!(created.created_by, "api:alice");
    assert_eq!(created.updated_by, "api:alice");
    assert_eq!(created.created_at, created.updated_at);
    // A taken id writes nothing, not even the audit entry.
    let again = store
        .create_api_segment(
            write("vip", "true", "api:bob"),
            audit("segment.create", "vip"),
        )
        .await
        .unwrap();
    assert!(again.is_none());
    store
        .create_api_segment(
            write("alpha", "true", "api:bob"),
            audit("segment.create", "alpha"),
        )
        .await
        .unwrap()
        .unwrap();
    let ids: Vec<String> = store
        .api_segments()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, ["alpha", "vip"]);

    let mut change = write("vip", "total_spent > 900", "api:bob");
    change.description = None;
    let updated = store
        .update_api_segment(change, audit("segment.update", "vip"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.expression, "total_spent > 900");
    assert_eq!(updated.description, None);
    assert_eq!(updated.created_by, "api:alice");
    assert_eq!(updated.updated_by, "api:bob");
    assert_eq!(store.api_segment("vip").await.unwrap(), Some(updated));
    assert!(
        store
            .update_api_segment(
                write("nope", "true", "api:bob"),
                audit("segment.update", "nope")
            )
            .await
            .unwrap()
            .is_none()
    );

    assert!(
        store
            .delete_api_segment("vip", audit("segment.delete", "vip"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_api_segment("vip", audit("segment.delete", "vip"))
            .await
            .unwrap()
    );
    assert!(store.api_segment("vip").await.unwrap().is_none());

    let log: Vec<(String, String)> = store
        .audit_log(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.entry.action, e.entry.target))
        .collect();
    assert_eq!(
        log,
        [
            ("segment.create".to_owned(), "vip".to_owned()),
            ("segment.create".to_owned(), "alpha".to_owned()),
            ("segment.update".to_owned(), "vip".to_owned()),
            ("segment.delete".to_owned(), "vip".to_owned()),
        ]
    );
}

async fn deleting_a_segment_records_its_members_leaving(store: &SqlStore) {
    store
        .create_api_segment(
            write("vip", "true", "api:alice"),
            audit("segment.create", "vip"),
        )
        .await
        .unwrap()
        .unwrap();
    store
        .change_segment_members("vip", &[(1, true), (2, true)], Utc::now())
        .await
        .unwrap();
    store
        .change_segment_members("other", &[(1, true)], Utc::now())
        .await
        .unwrap();
    assert!(
        store
            .delete_api_segment("vip", audit("segment.delete", "vip"))
            .await
            .unwrap()
    );
    assert!(store.segment_members("vip").await.unwrap().is_empty());
    assert_eq!(store.segment_members("other").await.unwrap().len(), 1);
    let exits: Vec<(i64, String)> = sqlx::query_as(
        "SELECT profile_id, change FROM segment_history WHERE segment = 'vip' ORDER BY change, profile_id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(
        exits,
        [
            (1, "entered".to_owned()),
            (2, "entered".to_owned()),
            (1, "exited".to_owned()),
            (2, "exited".to_owned()),
        ]
    );
}
