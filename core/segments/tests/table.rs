//! The columnar table against the row-wise evaluator: over random profiles, random change sequences
//! and random expressions covering every construct, `ProfileTable::evaluate` gives exactly the profiles
//! for which `evaluate` is true, and `evaluate_one` agrees with it.
#![allow(clippy::unwrap_used)] // a test file: a failed unwrap is a failed assertion

mod support;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use spindle_segments::{Expr, MemberSet, ProfileTable, ProfileView, evaluate, parse, render_error};
use support::{Width, expression, now, op, profile, query};

// ----- the comparison ------------------------------------------------------------------------------

/// Segment memberships by id: `vip` holds ids divisible by 3, `new` even ids, `churn` is unknown.
fn member(segment: &str, id: i64) -> bool {
    match segment {
        "vip" => id % 3 == 0,
        "new" => id % 2 == 0,
        _ => false,
    }
}

fn check_table(
    table: &ProfileTable,
    profiles: &BTreeMap<i64, ProfileView>,
    expr: &Expr,
    at: DateTime<Utc>,
) -> Result<(), TestCaseError> {
    let vip = MemberSet::from_ids(
        table,
        profiles.keys().copied().filter(|id| member("vip", *id)),
    );
    let new = MemberSet::from_ids(
        table,
        profiles.keys().copied().filter(|id| member("new", *id)),
    );
    let sets = |segment: &str| match segment {
        "vip" => Some(&vip),
        "new" => Some(&new),
        _ => None,
    };
    let got = table.evaluate(expr, at, &sets);
    let got_ids: BTreeSet<i64> = got.ids(table).collect();
    let want: BTreeSet<i64> = profiles
        .iter()
        .filter(|(id, p)| evaluate(expr, p, at, &|s| member(s, **id)))
        .map(|(id, _)| *id)
        .collect();
    prop_assert_eq!(&got_ids, &want, "{}", expr);
    prop_assert_eq!(got.len(), want.len());
    for (id, profile) in profiles {
        let one = table.evaluate_one(*id, expr, at, &|s| member(s, *id));
        prop_assert_eq!(one, want.contains(id), "evaluate_one {} {}", id, expr);
        prop_assert_eq!(got.contains(table, *id), want.contains(id));
        let rebuilt = table.view(*id).unwrap();
        prop_assert_eq!(
            evaluate(expr, &rebuilt, at, &|s| member(s, *id)),
            evaluate(expr, profile, at, &|s| member(s, *id)),
            "rebuilt view of {}: {:?} vs {:?}",
            id,
            rebuilt,
            profile
        );
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Change {
    Upsert(i64, ProfileView),
    Remove(i64),
}

fn changes() -> impl Strategy<Value = Vec<Change>> {
    let change = prop_oneof![
        4 => (0i64..24, profile(Width::Wide)).prop_map(|(id, p)| Change::Upsert(id, p)),
        1 => (0i64..24).prop_map(Change::Remove),
    ];
    prop::collection::vec(change, 1..40)
}

fn parse_all(texts: &[String]) -> Result<Vec<Expr>, TestCaseError> {
    texts
        .iter()
        .map(|t| parse(t).map_err(|e| TestCaseError::fail(render_error(t, &e))))
        .collect()
}

/// Event times against constant times on the same whole-day grid as the generated timelines, so that
/// ties and window edges are frequent.
fn time_edge() -> impl Strategy<Value = String> {
    let time = prop_oneof![
        Just("now()".to_owned()),
        (0u32..13).prop_map(|d| format!("now() - {d}d")),
        (0u32..13).prop_map(|d| format!("now() - {}h", d * 24)),
    ];
    (
        prop::sample::select(vec!["first", "last"]),
        query(false, Width::Wide),
        op(),
        time,
        any::<bool>(),
    )
        .prop_map(|(f, q, o, t, swap)| {
            if swap {
                format!("{t} {o} {f}({q})")
            } else {
                format!("{f}({q}) {o} {t}")
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn event_times_at_the_edges_match_row_wise_evaluation(
        texts in prop::collection::vec(time_edge(), 1..4),
        profiles in prop::collection::vec(profile(Width::Wide), 1..24),
    ) {
        let exprs = parse_all(&texts)?;
        let mut table = ProfileTable::new();
        let mut by_id = BTreeMap::new();
        for (id, p) in profiles.into_iter().enumerate() {
            table.upsert(id as i64, &p);
            by_id.insert(id as i64, p);
        }
        for expr in &exprs {
            check_table(&table, &by_id, expr, now())?;
        }
    }

    #[test]
    fn the_table_matches_row_wise_evaluation(
        texts in prop::collection::vec(expression(Width::Wide), 1..4),
        changes in changes(),
        shift in -3i64..3,
    ) {
        let exprs = parse_all(&texts)?;
        let at = now() + TimeDelta::days(shift);
        let mut table = ProfileTable::new();
        let mut profiles = BTreeMap::new();
        let half = changes.len() / 2;
        for (i, change) in changes.into_iter().enumerate() {
            match change {
                Change::Upsert(id, p) => {
                    table.upsert(id, &p);
                    profiles.insert(id, p);
                }
                Change::Remove(id) => {
                    prop_assert_eq!(table.remove(id), profiles.remove(&id).is_some());
                }
            }
            if i + 1 == half {
                for expr in &exprs {
                    check_table(&table, &profiles, expr, at)?;
                }
            }
        }
        prop_assert_eq!(table.len(), profiles.len());
        for id in 0..24 {
            prop_assert_eq!(table.contains(id), profiles.contains_key(&id));
        }
        for expr in &exprs {
            check_table(&table, &profiles, expr, at)?;
            let negated = parse(&format!("not ({expr})")).unwrap();
            check_table(&table, &profiles, &negated, at)?;
        }
    }
}
