//! Incremental segment evaluation (only the profiles a resolution touched) must always agree with a bulk
//! evaluation over every profile, whatever sequence of record changes arrives: new people, trait changes,
//! merges through a shared e-mail, splits when an e-mail changes, deletions and new events.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use spindle_config::secret::ProcessSecrets;
use spindle_identity::IdentityEngine;
use spindle_model::{Event, Identifier, RawRecord};
use spindle_store::{IdentityStore, ProfileStore, SourceBatch, SqlStore, SyncStore};
use spindle_sync::live::SharedProfiles;
use spindle_sync::membership::{Segments, evaluate_all, evaluate_changes};

const CONFIG: &str = r#"
[identity]
link_on = ["email"]

[segments.gold]
where = 'tier = "gold"'

[segments.big_gold]
where = 'in_segment("gold") and spend >= 100'

[segments.not_gold]
where = 'not in_segment("gold")'

[segments.buyers]
where = 'count(order_completed within 30d) >= 2'

[segments.reachable]
where = 'exists(email) and not did(unsubscribed)'
"#;

/// The state of one source record that the sequence edits.
#[derive(Debug, Clone)]
struct Person {
    email: String,
    tier: &'static str,
    spend: i64,
    deleted: bool,
    events: Vec<Event>,
}

fn record(seed: u64, id: usize, person: &Person, version: i64) -> RawRecord {
    RawRecord {
        stream: "contacts".into(),
        external_id: format!("s{seed}p{id}"),
        version,
        updated_at: None,
        deleted: person.deleted,
        identifiers: vec![Identifier::new("email", &person.email)],
        traits: [
            ("tier".to_owned(), json!(person.tier)),
            ("spend".to_owned(), json!(person.spend)),
        ]
        .into_iter()
        .collect(),
        events: person.events.clone(),
    }
}

/// One random change to the people; returns the ids of the records it changed.
fn mutate(rng: &mut StdRng, people: &mut BTreeMap<usize, Person>) -> Vec<usize> {
    let emails = ["a@x.io", "b@x.io", "c@x.io", "d@x.io", "e@x.io", "f@x.io"];
    let tiers = ["gold", "silver", "bronze"];
    let next = people.len();
    let pick = |rng: &mut StdRng| rng.random_range(0..people.len().max(1));
    match rng.random_range(0..7) {
        // Someone new, possibly sharing an e-mail with someone known (a merge).
        0 | 1 => {
            people.insert(
                next,
                Person {
                    email: emails[rng.random_range(0..emails.len())].into(),
                    tier: tiers[rng.random_range(0..tiers.len())],
                    spend: rng.random_range(0..200),
                    deleted: false,
                    events: vec![],
                },
            );
            vec![next]
        }
        // A trait change.
        2 if !people.is_empty() => {
            let id = pick(rng);
            let person = people.get_mut(&id).unwrap();
            person.tier = tiers[rng.random_range(0..tiers.len())];
            person.spend = rng.random_range(0..200);
            vec![id]
        }
        // A new e-mail: may split a merged profile and join another.
        3 if !people.is_empty() => {
            let id = pick(rng);
            people.get_mut(&id).unwrap().email = emails[rng.random_range(0..emails.len())].into();
            vec![id]
        }
        // Deleted at the source, or back.
        4 if !people.is_empty() => {
            let id = pick(rng);
            let person = people.get_mut(&id).unwrap();
            person.deleted = !person.deleted;
            vec![id]
        }
        // Events, some old enough to fall outside the 30-day window.
        _ if !people.is_empty() => {
            let id = pick(rng);
            let name = if rng.random_bool(0.8) {
                "order_completed"
            } else {
                "unsubscribed"
            };
            let age = Duration::days(rng.random_range(0..60));
            people.get_mut(&id).unwrap().events.push(Event {
                name: name.into(),
                occurred_at: Utc::now() - age,
                properties: BTreeMap::new(),
            });
            vec![id]
        }
        _ => vec![],
    }
}

async fn incremental_matches_bulk(store: &SqlStore, profiles: &SharedProfiles, seed: u64) {
    let config = spindle_config::load_str(
        CONFIG,
        Path::new("connectors.toml"),
        &ProcessSecrets::new("."),
    )
    .unwrap();
    let segments = Segments::compile(&config).unwrap();
    let engine = IdentityEngine::new(store, &config.identity, &config.profiles).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut people = BTreeMap::new();
    for step in 0..25 {
        let changed: Vec<usize> = (0..rng.random_range(1..4))
            .flat_map(|_| mutate(&mut rng, &mut people))
            .collect();
        let records = changed
            .iter()
            .map(|id| record(seed, *id, &people[id], step + 1))
            .collect();
        store
            .apply_source_batch(
                "crm",
                SourceBatch {
                    records,
                    ..SourceBatch::default()
                },
            )
            .await
            .unwrap();
        engine.resolve_pending().await.unwrap();
        let now = Utc::now();
        evaluate_changes(store, &segments, profiles, now)
            .await
            .unwrap();

        let incremental: BTreeMap<&str, _> = {
            let mut all = BTreeMap::new();
            for id in segments.ids() {
                all.insert(id, store.segment_members(id).await.unwrap());
            }
            all
        };
        // A bulk evaluation over every profile, freshly loaded, finds nothing left to change...
        let bulk = evaluate_all(store, &segments, &SharedProfiles::new(), now)
            .await
            .unwrap();
        for (segment, (entered, exited)) in &bulk.changes {
            assert_eq!(
                (*entered, *exited),
                (0, 0),
                "seed {seed}, step {step}: segment {segment} was out of date after incremental evaluation \
                 (people: {people:?})"
            );
        }
        // ...and so the memberships are what they were.
        for (segment, members) in incremental {
            assert_eq!(store.segment_members(segment).await.unwrap(), members);
        }
    }
    // The sequences are long enough to exercise every kind of membership.
    let gold = store.segment_members("gold").await.unwrap();
    let not_gold = store.segment_members("not_gold").await.unwrap();
    assert_eq!(
        gold.len() + not_gold.len(),
        store.count_profiles().await.unwrap() as usize,
        "seed {seed}: every profile is in exactly one of gold and not_gold"
    );
}

async fn incremental_evaluation_equals_bulk_over_random_change_sequences(store: &SqlStore) {
    // One table kept current across every step, as the daemon keeps it.
    let profiles = SharedProfiles::new();
    for seed in 0..8 {
        // Each seed starts from the store as the previous left it: later sequences also exercise profiles
        // that already exist.
        incremental_matches_bulk(store, &profiles, seed).await;
    }
}

async fn a_profile_that_disappears_leaves_every_segment(store: &SqlStore) {
    let config = spindle_config::load_str(
        CONFIG,
        Path::new("connectors.toml"),
        &ProcessSecrets::new("."),
    )
    .unwrap();
    let segments = Segments::compile(&config).unwrap();
    let engine = IdentityEngine::new(store, &config.identity, &config.profiles).unwrap();
    let profiles = SharedProfiles::new();
    let mut ada = Person {
        email: "ada@x.io".into(),
        tier: "gold",
        spend: 150,
        deleted: false,
        events: vec![],
    };
    store
        .apply_source_batch(
            "crm",
            SourceBatch {
                records: vec![record(0, 1, &ada, 1)],
                ..SourceBatch::default()
            },
        )
        .await
        .unwrap();
    engine.resolve_pending().await.unwrap();
    let changes = evaluate_changes(store, &segments, &profiles, Utc::now())
        .await
        .unwrap();
    assert_eq!(changes.changes["gold"], (1, 0));
    assert_eq!(changes.changes["big_gold"], (1, 0));
    assert_eq!(changes.changes["not_gold"], (0, 0));

    ada.deleted = true;
    store
        .apply_source_batch(
            "crm",
            SourceBatch {
                records: vec![record(0, 1, &ada, 2)],
                ..SourceBatch::default()
            },
        )
        .await
        .unwrap();
    engine.resolve_pending().await.unwrap();
    // A preview brings the table up to date first; the change must still reach the memberships.
    let table_size = profiles.current(store).await.unwrap().table().len();
    assert_eq!(table_size, 0, "the deleted profile left the table");
    let changes = evaluate_changes(store, &segments, &profiles, Utc::now())
        .await
        .unwrap();
    assert_eq!(changes.profiles, 1);
    for segment in segments.ids() {
        assert!(
            store.segment_members(segment).await.unwrap().is_empty(),
            "{segment} still has members: {changes:?}"
        );
    }
}

spindle_testkit::store_backends!(
    incremental_evaluation_equals_bulk_over_random_change_sequences,
    a_profile_that_disappears_leaves_every_segment,
);
