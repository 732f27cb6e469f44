//! Identity resolution against the real store, on both backends.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Duration, Utc};
use serde_json::json;
use spindle_config::{IdentityConfig, ProfilesConfig, Survivorship};
use spindle_identity::IdentityEngine;
use spindle_identity::normalize::NORMALIZER_VERSION;
use spindle_identity::profile::ProfileDocument;
use spindle_model::{Event, Identifier, RawRecord, RecordKey};
use spindle_store::{BuiltWith, IdentityStore, ProfileRow, SqlStore};
use spindle_testkit::store::apply_records;

spindle_testkit::store_backends!(
    a_chain_across_sources_is_one_profile_with_its_evidence,
    incremental_steps_equal_a_rebuild_and_keep_ids,
    blocked_values_never_link,
    limits_keep_family_members_apart,
    a_rule_change_splits_profiles_on_rebuild,
    a_new_record_merges_two_profiles_and_the_old_id_follows,
    traits_consent_and_computed_traits_follow_the_rules,
    compound_rules_link_records_without_a_shared_key,
    profiles_of_an_older_normaliser_are_resolved_again_in_full,
    changed_rules_reach_every_profile_at_the_next_resolution,
);

fn identity(link_on: &[&str]) -> IdentityConfig {
    IdentityConfig {
        link_on: link_on.iter().map(|s| (*s).to_owned()).collect(),
        limits: BTreeMap::new(),
        blocked: vec!["test@example.com".into()],
        priority: vec!["user_id".into(), "email".into(), "phone".into()],
        default_region: Some("FR".into()),
        blocked_patterns: vec!["^noreply@".into()],
        compound: vec![],
    }
}

fn record(
    stream: &str,
    id: &str,
    identifiers: &[(&str, &str)],
    traits: serde_json::Value,
) -> RawRecord {
    RawRecord {
        stream: stream.into(),
        external_id: id.into(),
        version: 1,
        updated_at: None,
        deleted: false,
        identifiers: identifiers
            .iter()
            .map(|(k, v)| Identifier::new(*k, *v))
            .collect(),
        traits: traits
            .as_object()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        events: vec![],
    }
}

async fn profile_of(store: &SqlStore, source: &str, stream: &str, id: &str) -> i64 {
    let key = RecordKey {
        source: source.into(),
        stream: stream.into(),
        external_id: id.into(),
    };
    store.profiles_of_records(&[key]).await.unwrap()[0].1
}

async fn document(store: &SqlStore, id: i64) -> ProfileDocument {
    serde_json::from_value(store.profile(id).await.unwrap().unwrap().document).unwrap()
}

/// The partition of records into profiles, with ids.
async fn memberships(store: &SqlStore) -> BTreeMap<i64, BTreeSet<RecordKey>> {
    let mut out: BTreeMap<i64, BTreeSet<RecordKey>> = BTreeMap::new();
    for (id, key) in store.all_memberships().await.unwrap() {
        out.entry(id).or_default().insert(key);
    }
    out
}

/// Every stored profile, by id.
async fn stored_profiles(store: &SqlStore) -> BTreeMap<i64, ProfileRow> {
    let ids = store.profile_ids().await.unwrap();
    let rows = store.profiles_by_ids(&ids).await.unwrap();
    rows.into_iter().map(|row| (row.id, row)).collect()
}

async fn a_chain_across_sources_is_one_profile_with_its_evidence(store: &SqlStore) {
    apply_records(
        store,
        "crm",
        vec![record(
            "contacts",
            "1001",
            &[("email", "Ada@Example.com "), ("crm_id", "1001")],
            json!({"first_name": "Ada"}),
        )],
    )
    .await;
    apply_records(
        store,
        "shop",
        vec![record(
            "customers",
            "7",
            &[("email", "ada@example.com"), ("phone", "+33 6 12 34 56 78")],
            json!({}),
        )],
    )
    .await;
    apply_records(
        store,
        "file",
        vec![record(
            "rows",
            "line:2",
            &[("phone", "06 12 34 56 78"), ("email", "not-an-email")],
            json!({"last_name": "Lovelace"}),
        )],
    )
    .await;
    let (identity, profiles) = (identity(&["email", "phone"]), ProfilesConfig::default());
    let engine = IdentityEngine::new(store, &identity, &profiles).unwrap();
    let report = engine.resolve_pending().await.unwrap();
    assert_eq!(
        (report.records, report.profiles_written, report.created),
        (3, 1, 1)
    );
    let id = profile_of(store, "file", "rows", "line:2").await;
    let doc = document(store, id).await;
    assert_eq!(doc.records.len(), 3);
    insta::assert_snapshot!(
        "chain_explain",
        spindle_identity::explain::explain(
            id,
            &doc,
            &spindle_identity::links::LinkRules::new(&identity).unwrap()
        )
    );
}

async fn incremental_steps_equal_a_rebuild_and_keep_ids(store: &SqlStore) {
    let (identity, profiles) = (
        identity(&["email", "phone", "user_id"]),
        ProfilesConfig::default(),
    );
    let engine = IdentityEngine::new(store, &identity, &profiles).unwrap();
    let people: Vec<RawRecord> = (0..60)
        .map(|i| {
            let email = format!("p{}@example.com", i % 25);
            let phone = format!("+3361234{:04}", i % 17);
            record(
                "rows",
                &format!("r{i}"),
                &[("email", &email), ("phone", &phone)],
                json!({}),
            )
        })
        .collect();
    for chunk in people.chunks(7) {
        apply_records(store, "file", chunk.to_vec()).await;
        engine.resolve_pending().await.unwrap();
    }
    let incremental = memberships(store).await;
    let stored_before = stored_profiles(store).await;
    let report = engine.rebuild().await.unwrap();
    assert_eq!(
        stored_profiles(store).await,
        stored_before,
        "a rebuild that changes nothing writes no profile: documents and versions stay"
    );
    assert_eq!(
        memberships(store).await,
        incremental,
        "a rebuild gives the same profiles with the same ids"
    );
    assert_eq!(
        (
            report.unchanged,
            report.split,
            report.merged,
            report.created
        ),
        (incremental.len() as u64, 0, 0, 0)
    );
    assert_eq!(
        store.count_profiles().await.unwrap(),
        incremental.len() as u64
    );
}

async fn blocked_values_never_link(store: &SqlStore) {
    apply_records(
        store,
        "crm",
        vec![
            record("contacts", "1", &[("email", "TEST@example.com")], json!({})),
            record("contacts", "2", &[("email", "test@example.com")], json!({})),
            record("contacts", "3", &[("email", "noreply@shop.io")], json!({})),
            record("contacts", "4", &[("email", "noreply@shop.io")], json!({})),
            record("contacts", "5", &[("phone", "06 00 00 00 01")], json!({})),
            record("contacts", "6", &[("phone", "+33600000001")], json!({})),
        ],
    )
    .await;
    let (mut identity, profiles) = (identity(&["email", "phone"]), ProfilesConfig::default());
    // Blocked as a person writes it, not in the E.164 form records normalise to.
    identity.blocked.push("+33 6 00 00 00 01".into());
    IdentityEngine::new(store, &identity, &profiles)
        .unwrap()
        .resolve_pending()
        .await
        .unwrap();
    assert_eq!(
        store.count_profiles().await.unwrap(),
        6,
        "neither the blocked values nor the pattern link"
    );
}

async fn limits_keep_family_members_apart(store: &SqlStore) {
    apply_records(
        store,
        "app",
        vec![
            record(
                "users",
                "u1",
                &[
                    ("user_id", "u1"),
                    ("phone", "0612345678"),
                    ("email", "ann@x.io"),
                ],
                json!({}),
            ),
            record(
                "users",
                "u2",
                &[("user_id", "u2"), ("phone", "06 12 34 56 78")],
                json!({}),
            ),
            record(
                "users",
                "guest",
                &[("email", "ann@x.io"), ("phone", "+33612345678")],
                json!({}),
            ),
        ],
    )
    .await;
    let mut identity = identity(&["email", "phone", "user_id"]);
    identity.limits.insert("user_id".into(), 1);
    let profiles = ProfilesConfig::default();
    IdentityEngine::new(store, &identity, &profiles)
        .unwrap()
        .resolve_pending()
        .await
        .unwrap();
    assert_eq!(
        profile_of(store, "app", "users", "u1").await,
        profile_of(store, "app", "users", "guest").await
    );
    assert_ne!(
        profile_of(store, "app", "users", "u1").await,
        profile_of(store, "app", "users", "u2").await
    );
}

async fn a_rule_change_splits_profiles_on_rebuild(store: &SqlStore) {
    apply_records(
        store,
        "crm",
        vec![
            record(
                "contacts",
                "a",
                &[("email", "a@x.io"), ("phone", "0611111111")],
                json!({}),
            ),
            record(
                "contacts",
                "b",
                &[("email", "b@x.io"), ("phone", "0611111111")],
                json!({}),
            ),
            record("contacts", "c", &[("email", "a@x.io")], json!({})),
        ],
    )
    .await;
    let profiles = ProfilesConfig::default();
    let before = identity(&["email", "phone"]);
    IdentityEngine::new(store, &before, &profiles)
        .unwrap()
        .resolve_pending()
        .await
        .unwrap();
    let id = profile_of(store, "crm", "contacts", "a").await;
    assert_eq!(memberships(store).await.len(), 1);
    apply_records(
        store,
        "crm",
        vec![record("contacts", "d", &[("email", "d@x.io")], json!({}))],
    )
    .await;
    IdentityEngine::new(store, &before, &profiles)
        .unwrap()
        .resolve_pending()
        .await
        .unwrap();
    let bystander = profile_of(store, "crm", "contacts", "d").await;
    let stored_before = stored_profiles(store).await;

    let after = identity(&["email"]);
    let report = IdentityEngine::new(store, &after, &profiles)
        .unwrap()
        .rebuild()
        .await
        .unwrap();
    insta::assert_json_snapshot!("rule_change_report", report);
    let stored_after = stored_profiles(store).await;
    assert_eq!(
        stored_after[&bystander], stored_before[&bystander],
        "a profile the rule change leaves as it was is not written"
    );
    assert!(
        stored_after[&id].updated_at > stored_before[&id].updated_at,
        "the split profile is written"
    );
    assert_eq!(
        profile_of(store, "crm", "contacts", "a").await,
        id,
        "the larger part keeps the id"
    );
    assert_ne!(profile_of(store, "crm", "contacts", "b").await, id);

    let report = IdentityEngine::new(store, &before, &profiles)
        .unwrap()
        .rebuild()
        .await
        .unwrap();
    assert_eq!(
        (report.merged, report.created),
        (1, 0),
        "changing the rule back joins them again"
    );
    assert_eq!(profile_of(store, "crm", "contacts", "b").await, id);
}

async fn a_new_record_merges_two_profiles_and_the_old_id_follows(store: &SqlStore) {
    let (identity, profiles) = (identity(&["email", "phone"]), ProfilesConfig::default());
    let engine = IdentityEngine::new(store, &identity, &profiles).unwrap();
    apply_records(
        store,
        "crm",
        vec![
            record("contacts", "1", &[("email", "x@x.io")], json!({})),
            record("contacts", "2", &[("phone", "0622222222")], json!({})),
        ],
    )
    .await;
    engine.resolve_pending().await.unwrap();
    let (first, second) = (
        profile_of(store, "crm", "contacts", "1").await,
        profile_of(store, "crm", "contacts", "2").await,
    );
    assert_ne!(first, second);
    apply_records(
        store,
        "shop",
        vec![record(
            "customers",
            "9",
            &[("email", "X@x.io"), ("phone", "+33 6 22 22 22 22")],
            json!({}),
        )],
    )
    .await;
    let report = engine.resolve_pending().await.unwrap();
    assert_eq!((report.merged, report.created), (1, 0));
    let survivor = profile_of(store, "shop", "customers", "9").await;
    assert_eq!(survivor, first.min(second));
    let retired = first.max(second);
    assert_eq!(
        store.profile(retired).await.unwrap().unwrap().id,
        survivor,
        "the retired id leads to the merged profile"
    );
    let found = store
        .profiles_with_identifiers(&[("phone".into(), "+33622222222".into())])
        .await
        .unwrap();
    assert_eq!(
        found.iter().map(|f| f.2).collect::<Vec<_>>(),
        vec![survivor]
    );
}

async fn traits_consent_and_computed_traits_follow_the_rules(store: &SqlStore) {
    let now = Utc::now();
    let mut crm = record(
        "contacts",
        "1",
        &[("email", "kim@x.io")],
        json!({"first_name": "Kim", "email_consent": "subscribed", "tier": "gold"}),
    );
    crm.updated_at = Some(now - Duration::days(3));
    let mut shop = record(
        "customers",
        "5",
        &[("email", "kim@x.io")],
        json!({"first_name": "Kimberly", "tier": "silver"}),
    );
    shop.updated_at = Some(now - Duration::days(1));
    let order = |id: &str, days: i64, amount: f64| {
        let mut r = record("orders", id, &[("email", "kim@x.io")], json!({}));
        r.events = vec![Event {
            name: "order_completed".into(),
            occurred_at: now - Duration::days(days),
            properties: [("amount".to_owned(), json!(amount))].into_iter().collect(),
        }];
        r
    };
    apply_records(store, "crm", vec![crm]).await;
    apply_records(
        store,
        "shop",
        vec![
            shop,
            order("o1", 200, 50.0),
            order("o2", 10, 20.5),
            order("o3", 2, 10.0),
        ],
    )
    .await;
    let identity = identity(&["email"]);
    let mut profiles = ProfilesConfig::default();
    profiles.survivorship.insert(
        "tier".into(),
        Survivorship::SourcePriority(vec!["crm".into()]),
    );
    profiles.computed = [
        "orders_90d = count(order_completed within 90d)",
        "total_spent = sum(order_completed.amount)",
        "last_order = last(order_completed)",
    ]
    .iter()
    .map(|line| {
        let (name, expression) = line.split_once(" = ").unwrap();
        let config = spindle_config::load_str(
            &format!("[profiles.computed]\n{name} = \"{expression}\"\n"),
            std::path::Path::new("c.toml"),
            &spindle_config::secret::ProcessSecrets::new("."),
        )
        .unwrap();
        config.profiles.computed[0].clone()
    })
    .collect();
    IdentityEngine::new(store, &identity, &profiles)
        .unwrap()
        .resolve_pending()
        .await
        .unwrap();
    let doc = document(store, profile_of(store, "shop", "orders", "o1").await).await;
    assert_eq!(
        doc.traits["first_name"].value, "Kimberly",
        "latest wins by default"
    );
    assert_eq!(
        doc.traits["tier"].value, "gold",
        "source priority puts the CRM first"
    );
    assert_eq!(doc.consent.get("email"), Some(&true));
    assert_eq!(doc.computed["orders_90d"], json!(2));
    assert_eq!(doc.computed["total_spent"], json!(80.5));
    assert_eq!(doc.event_count, 3);
}

async fn compound_rules_link_records_without_a_shared_key(store: &SqlStore) {
    let person = |id: &str, first: &str, last: &str, dob: &str, zip: &str, email: &str| {
        record(
            "rows",
            id,
            &[("email", email)],
            json!({"first_name": first, "last_name": last, "birth_date": dob, "postal_code": zip}),
        )
    };
    apply_records(
        store,
        "file",
        vec![
            person(
                "1",
                "Marie",
                "Curie ",
                "1867-11-07",
                "75005",
                "marie@sorbonne.fr",
            ),
            person(
                "2",
                "M.",
                "curie",
                "1867-11-07",
                "75005",
                "mcurie@radium.org",
            ),
            person(
                "3",
                "Pierre",
                "Curie",
                "1859-05-15",
                "75005",
                "pierre@sorbonne.fr",
            ),
            person("4", "Marie", "Curie", "1867-11-07", "", "other@x.io"),
        ],
    )
    .await;
    let mut identity = identity(&["email"]);
    identity.compound = vec![spindle_config::CompoundRule {
        name: "name_dob_zip".into(),
        fields: vec![
            "last_name".into(),
            "first_initial".into(),
            "birth_date".into(),
            "postal_code".into(),
        ],
    }];
    let profiles = ProfilesConfig::default();
    IdentityEngine::new(store, &identity, &profiles)
        .unwrap()
        .resolve_pending()
        .await
        .unwrap();
    let marie = profile_of(store, "file", "rows", "1").await;
    assert_eq!(
        profile_of(store, "file", "rows", "2").await,
        marie,
        "same last name, initial, birth date, postcode"
    );
    assert_ne!(
        profile_of(store, "file", "rows", "3").await,
        marie,
        "another first initial and birth date"
    );
    assert_ne!(
        profile_of(store, "file", "rows", "4").await,
        marie,
        "an empty field never matches"
    );
    let doc = document(store, marie).await;
    assert_eq!(doc.links[0].rule, "compound:name_dob_zip");
    assert_eq!(doc.links[0].value, "curie|m|1867-11-07|75005");

    // A rebuild is a full pass, whose first read takes traits only for compound rules: same answer.
    let report = IdentityEngine::new(store, &identity, &profiles)
        .unwrap()
        .rebuild()
        .await
        .unwrap();
    assert_eq!((report.split, report.merged), (0, 0));
    assert_eq!(profile_of(store, "file", "rows", "1").await, marie);
    assert_eq!(profile_of(store, "file", "rows", "2").await, marie);
}

async fn profiles_of_an_older_normaliser_are_resolved_again_in_full(store: &SqlStore) {
    let (identity, profiles) = (identity(&["email", "phone"]), ProfilesConfig::default());
    let engine = IdentityEngine::new(store, &identity, &profiles).unwrap();
    assert_eq!(
        store.built_with().await.unwrap(),
        BuiltWith::default(),
        "a new store"
    );
    let records: Vec<RawRecord> = (0..6)
        .map(|i| {
            let email = format!("p{}@example.com", i % 3);
            record("rows", &format!("r{i}"), &[("email", &email)], json!({}))
        })
        .collect();
    apply_records(store, "file", records).await;
    engine.resolve_pending().await.unwrap();
    let built = store.built_with().await.unwrap();
    assert_eq!(built.normalizer_version, NORMALIZER_VERSION);
    assert_ne!(built.rules, 0, "the rules are recorded");
    let before = memberships(store).await;
    assert_eq!(before.len(), 3);
    assert_eq!(
        engine.resolve_pending().await.unwrap().records,
        0,
        "nothing pending, nothing resolved"
    );

    // Profiles built by an older normaliser: every record is resolved again, though none is pending,
    // and the profiles keep their ids.
    store
        .set_built_with(BuiltWith {
            normalizer_version: 0,
            ..built
        })
        .await
        .unwrap();
    let report = engine.resolve_pending().await.unwrap();
    assert_eq!(report.records, 6);
    assert_eq!(report.unchanged, 3);
    assert_eq!(memberships(store).await, before);
    assert_eq!(store.built_with().await.unwrap(), built);
    assert_eq!(engine.resolve_pending().await.unwrap().records, 0);
}

async fn changed_rules_reach_every_profile_at_the_next_resolution(store: &SqlStore) {
    // Two pairs of customers' records, each pair sharing a phone but not an e-mail address.
    let records: Vec<RawRecord> = (0..4)
        .map(|i| {
            let email = format!("p{i}@example.com");
            let phone = if i < 2 {
                "06 12 34 56 78"
            } else {
                "06 98 76 54 32"
            };
            let name = format!("Name {i}");
            record(
                "rows",
                &format!("r{i}"),
                &[("email", &email), ("phone", phone)],
                json!({ "first_name": name }),
            )
        })
        .collect();
    apply_records(store, "file", records).await;
    let by_email = identity(&["email"]);
    let profiles = ProfilesConfig::default();
    let engine = IdentityEngine::new(store, &by_email, &profiles).unwrap();
    engine.resolve_pending().await.unwrap();
    assert_eq!(store.count_profiles().await.unwrap(), 4);

    // Linking on phones too: no record is pending, yet the next resolution joins every pair.
    let by_email_and_phone = identity(&["email", "phone"]);
    let engine = IdentityEngine::new(store, &by_email_and_phone, &profiles).unwrap();
    let report = engine.resolve_pending().await.unwrap();
    // Two profiles merged into the two that took in their records.
    assert_eq!(
        (
            report.records,
            report.merged,
            report.changed,
            report.unchanged
        ),
        (4, 2, 2, 0)
    );
    assert_eq!(store.count_profiles().await.unwrap(), 2);
    assert_eq!(
        engine.resolve_pending().await.unwrap().records,
        0,
        "once applied, the same rules resolve nothing"
    );

    // A change of `[profiles]` alone rebuilds every document: the first record's name survives now.
    let first_seen = ProfilesConfig {
        default_survivorship: Survivorship::FirstSeen,
        ..ProfilesConfig::default()
    };
    let engine = IdentityEngine::new(store, &by_email_and_phone, &first_seen).unwrap();
    assert_eq!(engine.resolve_pending().await.unwrap().records, 4);
    let first = profile_of(store, "file", "rows", "r1").await;
    let document: ProfileDocument =
        serde_json::from_value(store.profile(first).await.unwrap().unwrap().document).unwrap();
    assert_eq!(document.traits["first_name"].value, "Name 0");
}
