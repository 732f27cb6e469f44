//! Benchmark of a sync's diff: a 500,000-member audience against what the destination last received.
//!
//! Seeds a SQLite store in a temporary folder with 525,000 profiles, puts 500,000 of them in a segment, and
//! records a delivered state where 95% of the members are unchanged, 2.5% changed, 2.5% never sent, and
//! 25,000 former members have left. Then times `plan` (read members and delivered hashes, read documents,
//! map payloads, hash, compare) and prints the figures with the process's peak RSS. It also times loading
//! every profile into the in-memory table segments are evaluated on.
//!
//! `cargo bench -p spindle-sync --bench diff` (`SPINDLE_BENCH_MEMBERS=N` for another size).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use chrono::Utc;
use serde_json::json;
use spindle_config::secret::ProcessSecrets;
use spindle_identity::profile::{ProfileDocument, ProfileIdentifier, TraitValue};
use spindle_model::RecordKey;
use spindle_store::{
    IdentityStore, OpenOptions, ProfileWrite, ResolutionWrite, SqlStore, StoreUrl, SyncStore,
};
use spindle_store::{OutboxItem, Settlement};
use spindle_sync::engine::plan;

/// The allocator the `spindle` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn document(id: i64, tier: &str) -> ProfileDocument {
    let key = RecordKey {
        source: "crm".into(),
        stream: "contacts".into(),
        external_id: id.to_string(),
    };
    let email = format!("person{id}@example.com");
    let traits: BTreeMap<String, TraitValue> = [
        ("first_name", json!(format!("First{id}"))),
        ("last_name", json!(format!("Last{}", id % 5_000))),
        (
            "country",
            json!(["FR", "DE", "GB", "US"][(id % 4) as usize]),
        ),
        ("tier", json!(tier)),
        ("total_spent", json!((id % 1_000) as f64 * 1.5)),
    ]
    .into_iter()
    .map(|(k, v)| {
        (
            k.to_owned(),
            TraitValue {
                value: v,
                from: key.clone(),
            },
        )
    })
    .collect();
    ProfileDocument {
        traits,
        computed: BTreeMap::from([("orders_90d".to_owned(), json!(id % 7))]),
        computed_at: Utc::now(),
        consent: BTreeMap::from([("email".to_owned(), true)]),
        identifiers: vec![ProfileIdentifier {
            kind: "email".into(),
            value: email.clone(),
            raw: vec![email],
            sources: vec!["crm".into()],
        }],
        rejected_identifiers: vec![],
        sources: vec!["crm".into()],
        records: vec![key],
        links: vec![],
        first_seen_at: Utc::now(),
        last_seen_at: Utc::now(),
        event_count: 0,
    }
}

const CONFIG: &str = r#"
[segments.audience]
where = 'tier = "gold"'

[destinations.hook]
plugin = "webhook.wasm"
allow_hosts = ["http://127.0.0.1:9"]
config = { url = "http://127.0.0.1:9/hook" }

[syncs.audience-hook]
segment = "audience"
destination = "hook"
mode = "mirror"
fields = { email = "email", first_name = "first_name", last_name = "last_name", country = "country", spent = "total_spent", orders = "orders_90d" }
"#;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let members: i64 = std::env::var("SPINDLE_BENCH_MEMBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    let leavers = members / 20;
    let dir = tempfile::tempdir().unwrap();
    let url = StoreUrl::parse("sqlite://bench.db", dir.path(), None).unwrap();
    let store = SqlStore::open(&url, &OpenOptions::default()).await.unwrap();
    let config = spindle_config::load_str(
        CONFIG,
        Path::new("connectors.toml"),
        &ProcessSecrets::new("."),
    )
    .unwrap();
    let sync = &config.syncs["audience-hook"];

    let seeding = Instant::now();
    // Members first, then the former members who have left the segment.
    let total = members + leavers;
    for chunk in (1..=total).collect::<Vec<i64>>().chunks(50_000) {
        let profiles = chunk
            .iter()
            .map(|id| {
                let tier = if *id <= members { "gold" } else { "silver" };
                let doc = document(*id, tier);
                ProfileWrite {
                    id: *id,
                    search_text: format!("person{id}@example.com"),
                    members: doc.records.clone(),
                    identifiers: vec![("email".into(), format!("person{id}@example.com"))],
                    document: serde_json::to_value(&doc).unwrap(),
                    fingerprint: None,
                }
            })
            .collect();
        store
            .write_resolution(ResolutionWrite {
                profiles,
                ..ResolutionWrite::default()
            })
            .await
            .unwrap();
    }
    let changes: Vec<(i64, bool)> = (1..=members).map(|id| (id, true)).collect();
    store
        .change_segment_members("audience", &changes, Utc::now())
        .await
        .unwrap();
    // What the destination holds: everyone as planned now, then some of it made stale or never sent.
    let (items, _) = plan(&store, sync).await.unwrap();
    let mut delivered_items: Vec<OutboxItem> = items
        .into_iter()
        .filter(|i| i.profile_id % 40 != 0)
        .map(|mut i| {
            if i.profile_id % 40 == 1 {
                // Sent from an older version of the profile.
                i.payload_hash = "stale".into();
                i.profile_version = Some(0);
            }
            i
        })
        .collect();
    // Former members the destination still holds.
    delivered_items.extend((members + 1..=total).map(|id| OutboxItem {
        profile_id: id,
        op: "upsert".into(),
        payload: "{}".into(),
        payload_hash: "old".into(),
        identifiers: "[]".into(),
        profile_version: None,
    }));
    for chunk in delivered_items.chunks(20_000) {
        store.enqueue(&sync.id, chunk, Utc::now()).await.unwrap();
        let due = store
            .due(&sync.id, Utc::now(), chunk.len() as u32)
            .await
            .unwrap();
        let settled: Vec<Settlement> = due
            .iter()
            .map(|row| Settlement::Delivered { id: row.id })
            .collect();
        store.settle(&sync.id, &settled, Utc::now()).await.unwrap();
    }
    let held = store.delivered(&sync.id).await.unwrap().len();
    // The state an earlier run leaves: the mapping recorded, every delivered profile's version known.
    let full = spindle_sync::engine::plan_changes(&store, sync)
        .await
        .unwrap();
    store
        .confirm_delivered(&sync.id, &full.confirmed)
        .await
        .unwrap();
    store
        .set_sync_mapping(&sync.id, &full.mapping_hash)
        .await
        .unwrap();
    println!(
        "seeded {total} profiles, {members} members, destination holds {held}, in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let ids: Vec<i64> = store
        .segment_members("audience")
        .await
        .unwrap()
        .into_iter()
        .collect();
    println!("  members read in {:.2} s", started.elapsed().as_secs_f64());
    let started = Instant::now();
    store.delivered(&sync.id).await.unwrap();
    println!(
        "  delivered read in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let rows = store.profiles_by_ids(&ids).await.unwrap();
    println!(
        "  documents read in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    for row in rows {
        let _doc: ProfileDocument = serde_json::from_value(row.document).unwrap();
    }
    println!(
        "  documents decoded in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let live = spindle_sync::live::LiveProfiles::load(&store)
        .await
        .unwrap();
    println!(
        "  profile table of {} profiles loaded in {:.2} s (the daemon's first segment evaluation)",
        live.table().len(),
        started.elapsed().as_secs_f64()
    );
    drop(live);
    let started = Instant::now();
    let candidates = store.diff_candidates(&sync.id, "audience").await.unwrap();
    println!(
        "  candidates ({} changed, {} departed) found in {:.2} s",
        candidates.changed.len(),
        candidates.departed.len(),
        started.elapsed().as_secs_f64()
    );
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let started = Instant::now();
        let (items, planned) = plan(&store, sync).await.unwrap();
        times.push(started.elapsed().as_secs_f64());
        last = Some((items.len(), planned));
    }
    let (count, planned) = last.unwrap();
    let adds = planned.iter().filter(|c| c.action == "add").count();
    let updates = planned.iter().filter(|c| c.action == "update").count();
    let removals = planned.iter().filter(|c| c.action == "remove").count();
    times.sort_by(f64::total_cmp);
    println!(
        "diff of {members} members against {held} delivered: {count} changes ({adds} add, {updates} update, {removals} remove)"
    );
    println!(
        "diff time: median {:.2} s (min {:.2} s, max {:.2} s); peak RSS {} MiB",
        times[1],
        times[0],
        times[2],
        spindle_testkit::proc_status::peak_rss() / (1024 * 1024)
    );
    store.close().await;
}
