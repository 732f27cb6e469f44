//! Proptest generators shared by `tests/properties.rs` and `tests/table.rs`: segment expressions
//! generated as text from the grammar (every construct, keywords in random case), and random profiles
//! (traits, computed traits, identifiers, consent and timelines of events) to evaluate them on.
//!
//! [`Width`] picks between the grammar-level generators `properties.rs` uses and the widened ones
//! `table.rs` uses to reach more of the columnar table's edge cases.
// Each test binary compiles its own copy of this module and uses only part of it (`properties.rs`
// never builds `Width::Wide`, for one).
#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use proptest::strategy::Union;
use serde_json::{Value, json};
use spindle_segments::{EventView, ProfileView};

/// Which variant of the generators to draw from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// The grammar as `properties.rs` covers it.
    Base,
    /// `Base` widened for `table.rs`: the names and keys `n`, `traits.n`, `computed.n`, `obj` (an
    /// object read whole); `.meta.n` as the property of `other` events; floats such as `0.5`, `3.0`
    /// and `1e300` in profile values; event times on a whole-day grid (ties and window edges) and
    /// 300 years ahead.
    Wide,
}

pub fn now() -> DateTime<Utc> {
    "2025-06-01T12:00:00Z".parse().unwrap()
}

// ----- expressions, as text ----------------------------------------------------------------------------

/// A keyword in a random case.
pub fn kw(word: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(word.to_owned()),
        Just(word.to_uppercase()),
        Just(word[..1].to_uppercase() + &word[1..]),
    ]
}

pub fn name(width: Width) -> impl Strategy<Value = String> {
    let mut names = vec![
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
    ];
    if width == Width::Wide {
        names.extend(["n", "traits.n", "computed.n", "obj"]);
    }
    prop::sample::select(names).prop_map(str::to_owned)
}

pub fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        (-20i32..20).prop_map(|n| n.to_string()),
        (-2000i32..2000).prop_map(|n| format!("{}", f64::from(n) / 100.0)),
    ]
}

pub fn string() -> impl Strategy<Value = String> {
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

pub fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![number(), string(), kw("true"), kw("false"), kw("null")]
}

pub fn list() -> impl Strategy<Value = String> {
    prop::collection::vec(scalar(), 0..4).prop_map(|items| format!("[{}]", items.join(", ")))
}

pub fn op() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["=", "!=", "<", "<=", ">", ">="])
}

pub fn eq_op() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["=", "!="])
}

pub fn duration() -> impl Strategy<Value = String> {
    (
        1u32..40,
        prop::sample::select(vec!["s", "m", "h", "d", "w"]),
    )
        .prop_map(|(n, u)| format!("{n}{u}"))
}

pub fn event_name() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["ev", "other", "\"Ev Two\""]).prop_map(str::to_owned)
}

/// A condition on event properties, for `where`.
pub fn property_cond() -> impl Strategy<Value = String> {
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

/// `ev where ... within ...`, the inside of an event function; with `property`, `ev.amount` (or, when
/// `Wide`, `other.meta.n` for the `other` event).
pub fn query(property: bool, width: Width) -> impl Strategy<Value = String> {
    (
        event_name(),
        prop::option::of(property_cond()),
        prop::option::of(duration()),
        any::<bool>(),
    )
        .prop_map(move |(event, filter, within, swap)| {
            let mut text = event;
            if property {
                text.push_str(if width == Width::Wide && text.len() % 2 != 0 {
                    ".meta.n"
                } else {
                    ".amount"
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

pub fn time_value(width: Width) -> impl Strategy<Value = String> {
    prop_oneof![
        Just("now()".to_owned()),
        duration().prop_map(|d| format!("now() - {d}")),
        duration().prop_map(|d| format!("now() + {d}")),
        query(false, width).prop_map(|q| format!("last({q})")),
        query(false, width).prop_map(|q| format!("first({q})")),
        name(width).prop_map(|n| format!("{n} - 1d")),
    ]
}

pub fn predicate(width: Width) -> impl Strategy<Value = String> {
    prop_oneof![
        (name(width), op(), prop_oneof![number(), string()])
            .prop_map(|(n, o, v)| format!("{n} {o} {v}")),
        (prop_oneof![number(), string()], op(), name(width))
            .prop_map(|(v, o, n)| format!("{v} {o} {n}")),
        (
            name(width),
            eq_op(),
            prop_oneof![kw("true"), kw("false"), kw("null"), list()]
        )
            .prop_map(|(n, o, v)| format!("{n} {o} {v}")),
        (name(width), op(), name(width)).prop_map(|(a, o, b)| format!("{a} {o} {b}")),
        (name(width), prop::option::of(kw("not")), kw("in"), list()).prop_map(|(n, not, k, l)| {
            match not {
                Some(not) => format!("{n} {not} {k} {l}"),
                None => format!("{n} {k} {l}"),
            }
        }),
        (name(width), kw("contains"), prop_oneof![string(), number()])
            .prop_map(|(n, k, v)| format!("{n} {k} {v}")),
        (name(width), kw("starts_with"), string()).prop_map(|(n, k, v)| format!("{n} {k} {v}")),
        (name(width), prop::option::of(kw("not")), kw("exists")).prop_map(
            |(n, not, k)| match not {
                Some(not) => format!("{n} {not} {k}"),
                None => format!("{n} {k}"),
            }
        ),
        (kw("exists"), name(width)).prop_map(|(k, n)| format!("{k}({n})")),
        name(width),
        kw("true"),
        kw("false"),
        (name(width), op(), time_value(width)).prop_map(|(n, o, t)| format!("{n} {o} {t}")),
        (time_value(width), op(), time_value(width)).prop_map(|(a, o, b)| format!("{a} {o} {b}")),
        (time_value(width), op(), string()).prop_map(|(t, o, s)| {
            // Only strings that are times can be compared with a time.
            let s = if s.contains("2025") {
                s
            } else {
                "\"2025-05-25T00:00:00Z\"".to_owned()
            };
            format!("{t} {o} {s}")
        }),
        (query(false, width), op(), duration())
            .prop_map(|(q, o, d)| format!("now() - last({q}) {o} {d}")),
        (
            prop::sample::select(vec!["count", "COUNT"]),
            query(false, width),
            op(),
            0u32..4
        )
            .prop_map(|(f, q, o, n)| format!("{f}({q}) {o} {n}")),
        (
            prop::sample::select(vec!["sum", "min", "max", "Max"]),
            query(true, width),
            op(),
            number()
        )
            .prop_map(|(f, q, o, n)| format!("{f}({q}) {o} {n}")),
        (
            prop::sample::select(vec!["first", "last"]),
            query(true, width),
            op(),
            prop_oneof![number(), string()]
        )
            .prop_map(|(f, q, o, v)| format!("{f}({q}) {o} {v}")),
        (
            prop::sample::select(vec!["first", "last"]),
            query(true, width),
            eq_op()
        )
            .prop_map(|(f, q, o)| format!("{f}({q}) {o} null")),
        (kw("did"), query(false, width)).prop_map(|(k, q)| format!("{k}({q})")),
        prop::sample::select(vec!["vip", "churn", "new"])
            .prop_map(|s| format!("in_segment(\"{s}\")")),
    ]
}

pub fn expression(width: Width) -> impl Strategy<Value = String> {
    predicate(width).prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            (inner.clone(), kw("and"), inner.clone()).prop_map(|(a, k, b)| format!("{a} {k} {b}")),
            (inner.clone(), kw("or"), inner.clone()).prop_map(|(a, k, b)| format!("{a} {k} {b}")),
            (kw("not"), inner.clone()).prop_map(|(k, a)| format!("{k} {a}")),
            inner.prop_map(|a| format!("({a})")),
        ]
    })
}

// ----- profiles -------------------------------------------------------------------------------------

pub fn json_value(width: Width) -> impl Strategy<Value = Value> {
    // A `Union` of equally weighted arms draws exactly as `prop_oneof!` over the same arms would.
    let mut scalars = vec![
        Just(Value::Null).boxed(),
        any::<bool>().prop_map(Value::Bool).boxed(),
        (-20i64..20).prop_map(|n| json!(n)).boxed(),
        (-2000i32..2000)
            .prop_map(|n| json!(f64::from(n) / 100.0))
            .boxed(),
        prop::sample::select(vec![
            "x",
            "X",
            "10",
            "3.5",
            "ada@x.io",
            "",
            "say \"hi\"",
            "true",
        ])
        .prop_map(|s| json!(s))
        .boxed(),
        (-40i64..40)
            .prop_map(|d| json!((now() + TimeDelta::days(d)).to_rfc3339()))
            .boxed(),
    ];
    if width == Width::Wide {
        scalars.push(
            prop::sample::select(vec![0.5f64, 1.0, 3.0, 10.0, -3.0, 1e300])
                .prop_map(|n| json!(n))
                .boxed(),
        );
    }
    scalars.push(Just(json!("2025-05-20")).boxed());
    Union::new(scalars).prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            (inner.clone(), inner).prop_map(|(x, z)| json!({"x": x, "y": {"z": z}})),
        ]
    })
}

pub fn value_map(
    keys: &'static [&'static str],
    width: Width,
) -> impl Strategy<Value = BTreeMap<String, Value>> {
    prop::collection::vec((prop::sample::select(keys), json_value(width)), 0..6)
        .prop_map(|pairs| pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

pub fn events(width: Width) -> impl Strategy<Value = Vec<EventView>> {
    let hours = match width {
        Width::Base => (-50i64 * 24..24).boxed(),
        Width::Wide => prop_oneof![
            4 => (-12i64..=0).prop_map(|d| d * 24),
            4 => -50i64 * 24..24,
            1 => Just(24 * 365 * 300),
        ]
        .boxed(),
    };
    let event = (
        prop::sample::select(vec!["ev", "other", "Ev Two"]),
        hours,
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

pub fn profile(width: Width) -> impl Strategy<Value = ProfileView> {
    let (trait_keys, computed_keys): (&'static [&'static str], &'static [&'static str]) =
        match width {
            Width::Base => (&["a", "b", "c", "d", "obj", "e f"], &["a", "b"]),
            Width::Wide => (&["a", "b", "c", "d", "obj", "e f", "n"], &["a", "b", "n"]),
        };
    (
        value_map(trait_keys, width),
        value_map(computed_keys, width),
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
        events(width),
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
