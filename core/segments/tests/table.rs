//! The columnar table against the row-wise evaluator: over random profiles, random change sequences
//! and random expressions covering every construct, `ProfileTable::evaluate` gives exactly the profiles
//! for which `evaluate` is true, and `evaluate_one` agrees with it.
#![allow(clippy::unwrap_used)] // a test file: a failed unwrap is a failed assertion

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};
use spindle_segments::{
    EventView, Expr, MemberSet, ProfileTable, ProfileView, evaluate, parse, render_error,
};

// ----- generators (the grammar-driven ones of tests/properties.rs, widened) -------------------------

fn now() -> DateTime<Utc> {
    "2025-06-01T12:00:00Z".parse().unwrap()
}

// ----- expressions, as text ----------------------------------------------------------------------------

/// A keyword in a random case.
fn kw(word: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(word.to_owned()),
        Just(word.to_uppercase()),
        Just(word[..1].to_uppercase() + &word[1..]),
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "a",
        "b",
        "c",
        "d",
        "traits.a",
        "traits.b",
        "computed.b",
        "computed.a",
        "obj.x",
        "traits.obj.x",
        "traits.obj.y.z",
        "consent.email",
        "consent.sms",
        "identifiers.email",
        "identifiers.phone",
        "`e f`",
        "n",
        "traits.n",
        "computed.n",
        "obj",
    ])
    .prop_map(str::to_owned)
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        (-20i32..20).prop_map(|n| n.to_string()),
        (-2000i32..2000).prop_map(|n| format!("{}", f64::from(n) / 100.0)),
    ]
}

fn string() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        r#""""#,
        r#""x""#,
        r#""X""#,
        r#""10""#,
        r#""3.5""#,
        r#""ada@x.io""#,
        r#""@x""#,
        r#""2025-05-20T00:00:00Z""#,
        r#""2025-05-20""#,
        r#""say \"hi\"""#,
        r#""back\\slash""#,
    ])
    .prop_map(str::to_owned)
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![number(), string(), kw("true"), kw("false"), kw("null")]
}

fn list() -> impl Strategy<Value = String> {
    prop::collection::vec(scalar(), 0..4).prop_map(|items| format!("[{}]", items.join(", ")))
}

fn op() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["=", "!=", "<", "<=", ">", ">="])
}

fn eq_op() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["=", "!="])
}

fn duration() -> impl Strategy<Value = String> {
    (
        1u32..40,
        prop::sample::select(vec!["s", "m", "h", "d", "w"]),
    )
        .prop_map(|(n, u)| format!("{n}{u}"))
}

fn event_name() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["ev", "other", "\"Ev Two\""]).prop_map(str::to_owned)
}

/// A condition on event properties, for `where`.
fn property_cond() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        (
            prop::sample::select(vec!["amount", "currency", "meta.n"]),
            op(),
            prop_oneof![number(), string()]
        )
            .prop_map(|(p, o, v)| format!("{p} {o} {v}")),
        (prop::sample::select(vec!["amount", "currency"]), eq_op())
            .prop_map(|(p, o)| format!("{p} {o} null")),
        prop::sample::select(vec!["amount", "currency", "gift"])
            .prop_map(|p| format!("{p} exists")),
        Just("gift".to_owned()),
        list().prop_map(|l| format!("currency in {l}")),
    ];
    leaf.prop_recursive(2, 6, 2, |inner| {
        prop_oneof![
            (inner.clone(), kw("and"), inner.clone()).prop_map(|(a, k, b)| format!("{a} {k} {b}")),
            (inner.clone(), kw("or"), inner.clone()).prop_map(|(a, k, b)| format!("({a} {k} {b})")),
            (kw("not"), inner).prop_map(|(k, a)| format!("{k} {a}")),
        ]
    })
}

/// `ev where ... within ...`, the inside of an event function.
fn query(property: bool) -> impl Strategy<Value = String> {
    (
        event_name(),
        prop::option::of(property_cond()),
        prop::option::of(duration()),
        any::<bool>(),
    )
        .prop_map(move |(event, filter, within, swap)| {
            let mut text = event;
            if property {
                text.push_str(if text.len() % 2 == 0 {
                    ".amount"
                } else {
                    ".meta.n"
                });
            }
            let filter = filter.map(|f| format!(" where {f}")).unwrap_or_default();
            let within = within.map(|d| format!(" within {d}")).unwrap_or_default();
            if swap {
                format!("{text}{within}{filter}")
            } else {
                format!("{text}{filter}{within}")
            }
        })
}

fn time_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("now()".to_owned()),
        duration().prop_map(|d| format!("now() - {d}")),
        duration().prop_map(|d| format!("now() + {d}")),
        query(false).prop_map(|q| format!("last({q})")),
        query(false).prop_map(|q| format!("first({q})")),
        name().prop_map(|n| format!("{n} - 1d")),
    ]
}

fn predicate() -> impl Strategy<Value = String> {
    prop_oneof![
        (name(), op(), prop_oneof![number(), string()])
            .prop_map(|(n, o, v)| format!("{n} {o} {v}")),
        (prop_oneof![number(), string()], op(), name())
            .prop_map(|(v, o, n)| format!("{v} {o} {n}")),
        (
            name(),
            eq_op(),
            prop_oneof![kw("true"), kw("false"), kw("null"), list()]
        )
            .prop_map(|(n, o, v)| format!("{n} {o} {v}")),
        (name(), op(), name()).prop_map(|(a, o, b)| format!("{a} {o} {b}")),
        (name(), prop::option::of(kw("not")), kw("in"), list()).prop_map(
            |(n, not, k, l)| match not {
                Some(not) => format!("{n} {not} {k} {l}"),
                None => format!("{n} {k} {l}"),
            }
        ),
        (name(), kw("contains"), prop_oneof![string(), number()])
            .prop_map(|(n, k, v)| format!("{n} {k} {v}")),
        (name(), kw("starts_with"), string()).prop_map(|(n, k, v)| format!("{n} {k} {v}")),
        (name(), prop::option::of(kw("not")), kw("exists")).prop_map(|(n, not, k)| match not {
            Some(not) => format!("{n} {not} {k}"),
            None => format!("{n} {k}"),
        }),
        (kw("exists"), name()).prop_map(|(k, n)| format!("{k}({n})")),
        name(),
        kw("true"),
        kw("false"),
        (name(), op(), time_value()).prop_map(|(n, o, t)| format!("{n} {o} {t}")),
        (time_value(), op(), time_value()).prop_map(|(a, o, b)| format!("{a} {o} {b}")),
        (time_value(), op(), string()).prop_map(|(t, o, s)| {
            // Only strings that are times can be compared with a time.
            let s = if s.contains("2025") {
                s
            } else {
                "\"2025-05-25T00:00:00Z\"".to_owned()
            };
            format!("{t} {o} {s}")
        }),
        (query(false), op(), duration()).prop_map(|(q, o, d)| format!("now() - last({q}) {o} {d}")),
        (
            prop::sample::select(vec!["count", "COUNT"]),
            query(false),
            op(),
            0u32..4
        )
            .prop_map(|(f, q, o, n)| format!("{f}({q}) {o} {n}")),
        (
            prop::sample::select(vec!["sum", "min", "max", "Max"]),
            query(true),
            op(),
            number()
        )
            .prop_map(|(f, q, o, n)| format!("{f}({q}) {o} {n}")),
        (
            prop::sample::select(vec!["first", "last"]),
            query(true),
            op(),
            prop_oneof![number(), string()]
        )
            .prop_map(|(f, q, o, v)| format!("{f}({q}) {o} {v}")),
        (
            prop::sample::select(vec!["first", "last"]),
            query(true),
            eq_op()
        )
            .prop_map(|(f, q, o)| format!("{f}({q}) {o} null")),
        (kw("did"), query(false)).prop_map(|(k, q)| format!("{k}({q})")),
        prop::sample::select(vec!["vip", "churn", "new"])
            .prop_map(|s| format!("in_segment(\"{s}\")")),
    ]
}

fn expression() -> impl Strategy<Value = String> {
    predicate().prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            (inner.clone(), kw("and"), inner.clone()).prop_map(|(a, k, b)| format!("{a} {k} {b}")),
            (inner.clone(), kw("or"), inner.clone()).prop_map(|(a, k, b)| format!("{a} {k} {b}")),
            (kw("not"), inner.clone()).prop_map(|(k, a)| format!("{k} {a}")),
            inner.prop_map(|a| format!("({a})")),
        ]
    })
}

// ----- profiles -------------------------------------------------------------------------------------

fn json_value() -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-20i64..20).prop_map(|n| json!(n)),
        (-2000i32..2000).prop_map(|n| json!(f64::from(n) / 100.0)),
        prop::sample::select(vec![
            "x",
            "X",
            "10",
            "3.5",
            "ada@x.io",
            "",
            "say \"hi\"",
            "true"
        ])
        .prop_map(|s| json!(s)),
        (-40i64..40).prop_map(|d| json!((now() + TimeDelta::days(d)).to_rfc3339())),
        prop::sample::select(vec![0.5f64, 1.0, 3.0, 10.0, -3.0, 1e300]).prop_map(|n| json!(n)),
        Just(json!("2025-05-20")),
    ];
    scalar.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            (inner.clone(), inner).prop_map(|(x, z)| json!({"x": x, "y": {"z": z}})),
        ]
    })
}

fn value_map(keys: &'static [&'static str]) -> impl Strategy<Value = BTreeMap<String, Value>> {
    prop::collection::vec((prop::sample::select(keys), json_value()), 0..6)
        .prop_map(|pairs| pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn events() -> impl Strategy<Value = Vec<EventView>> {
    let event = (
        prop::sample::select(vec!["ev", "other", "Ev Two"]),
        prop_oneof![4 => (-12i64..=0).prop_map(|d| d * 24), 4 => -50i64 * 24..24, 1 => Just(24 * 365 * 300)],
        prop::option::of(prop_oneof![
            (-50i64..500).prop_map(|n| json!(n)),
            Just(json!("12.5")),
            Just(json!("n/a")),
            Just(Value::Null),
        ]),
        prop::option::of(prop::sample::select(vec!["EUR", "USD", "x"])),
        prop::option::of(any::<bool>()),
        prop::option::of(-5i64..5),
    )
        .prop_map(|(name, hours, amount, currency, gift, n)| {
            let mut properties = BTreeMap::new();
            if let Some(amount) = amount {
                properties.insert("amount".to_owned(), amount);
            }
            if let Some(currency) = currency {
                properties.insert("currency".to_owned(), json!(currency));
            }
            if let Some(gift) = gift {
                properties.insert("gift".to_owned(), json!(gift));
            }
            if let Some(n) = n {
                properties.insert("meta".to_owned(), json!({ "n": n }));
            }
            EventView {
                name: name.to_owned(),
                occurred_at: now() + TimeDelta::hours(hours),
                properties,
            }
        });
    prop::collection::vec(event, 0..8)
}

fn profile() -> impl Strategy<Value = ProfileView> {
    (
        value_map(&["a", "b", "c", "d", "obj", "e f", "n"]),
        value_map(&["a", "b", "n"]),
        prop::collection::vec(
            (
                prop::sample::select(vec!["email", "phone"]),
                prop::sample::select(vec!["ada@x.io", "bob@y.io", "+3361234", "x"]),
            ),
            0..4,
        ),
        prop::collection::btree_map(
            prop::sample::select(vec!["email", "sms"]),
            any::<bool>(),
            0..3,
        ),
        events(),
    )
        .prop_map(
            |(traits, computed, identifiers, consent, events)| ProfileView {
                traits,
                computed,
                identifiers: identifiers
                    .into_iter()
                    .map(|(t, v)| (t.to_owned(), v.to_owned()))
                    .collect(),
                consent: consent
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
                events,
            },
        )
}

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
        4 => (0i64..24, profile()).prop_map(|(id, p)| Change::Upsert(id, p)),
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
        query(false),
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
        profiles in prop::collection::vec(profile(), 1..24),
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
        texts in prop::collection::vec(expression(), 1..4),
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
