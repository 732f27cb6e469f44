//! `cargo bench -p spindle-segments --bench table`: the columnar profile table at the scale of the
//! issue's benchmark — 1,000,000 profiles with about 10 traits each and about 10,000,000 events over
//! the last 180 days — printing build time, peak RSS (VmHWM) and the median time of each query.
#![allow(clippy::print_stdout)] // a benchmark binary: printing the figures is its job
#![allow(clippy::unwrap_used)] // a benchmark binary: the expressions are fixed and parse

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use spindle_segments::{EventView, Expr, ProfileTable, ProfileView, parse};

const PROFILES: i64 = 1_000_000;

/// SplitMix64: a small deterministic generator, so every run builds the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const COUNTRIES: &[&str] = &[
    "FR", "DE", "ES", "IT", "BE", "NL", "PT", "GB", "IE", "US", "CA", "BR", "MX", "JP", "PL", "SE",
    "NO", "DK", "FI", "CH",
];
const TIERS: &[&str] = &["bronze", "silver", "gold", "platinum"];
const PLANS: &[&str] = &["free", "pro", "enterprise"];
const NAMES: &[&str] = &[
    "Ada", "Alan", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances", "John",
];

fn now() -> DateTime<Utc> {
    "2026-06-01T12:00:00Z".parse().unwrap()
}

fn profile(rng: &mut Rng, id: i64) -> ProfileView {
    let mut traits = BTreeMap::new();
    let mut put = |k: &str, v: Value| {
        traits.insert(k.to_owned(), v);
    };
    put("country", json!(rng.pick(COUNTRIES)));
    put("tier", json!(rng.pick(TIERS)));
    put("total_spent", json!((rng.below(500_000) as f64) / 100.0));
    put("age", json!(18 + rng.below(70)));
    match rng.below(3) {
        0 => put("email_consent", json!("subscribed")),
        1 => put("email_consent", json!("unsubscribed")),
        _ => {}
    }
    put("plan", json!(rng.pick(PLANS)));
    put("city", json!(format!("city-{}", rng.below(300))));
    put(
        "signup_at",
        json!(
            (now() - TimeDelta::days(rng.below(1_000) as i64))
                .format("%Y-%m-%d")
                .to_string()
        ),
    );
    put("first_name", json!(rng.pick(NAMES)));
    if rng.below(10) != 0 {
        put("newsletter", json!(rng.below(2) == 0));
    }
    let mut computed = BTreeMap::new();
    computed.insert("orders_90d".to_owned(), json!(rng.below(8)));
    let mut consent = BTreeMap::new();
    consent.insert("email".to_owned(), rng.below(10) < 6);
    let count = rng.below(21);
    let events = (0..count)
        .map(|_| {
            let at = now() - TimeDelta::seconds(rng.below(180 * 86_400) as i64);
            let kind = rng.below(100);
            let (name, properties) = if kind < 30 {
                let mut p = BTreeMap::new();
                p.insert(
                    "amount".to_owned(),
                    json!((rng.below(40_000) as f64) / 100.0),
                );
                p.insert(
                    "currency".to_owned(),
                    json!(if rng.below(4) == 0 { "USD" } else { "EUR" }),
                );
                ("order_completed", p)
            } else if kind < 85 {
                ("page_viewed", BTreeMap::new())
            } else {
                ("cart_abandoned", BTreeMap::new())
            };
            EventView {
                name: name.to_owned(),
                occurred_at: at,
                properties,
            }
        })
        .collect();
    ProfileView {
        traits,
        computed,
        identifiers: vec![("email".to_owned(), format!("user{id}@example.com"))],
        consent,
        events,
    }
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn query(table: &ProfileTable, label: &str, text: &str) {
    let expr = parse(text).unwrap();
    let mut members = 0;
    let runs = (0..9)
        .map(|_| {
            let start = Instant::now();
            members = table.evaluate(&expr, now(), &|_| None).len();
            start.elapsed()
        })
        .collect();
    println!(
        "{label:<44} {:>10}   {members:>7} members   {text}",
        ms(median(runs))
    );
}

fn main() {
    let mut rng = Rng(42);
    let mut table = ProfileTable::new();
    let mut events = 0usize;
    let mut upserting = Duration::ZERO;
    let start = Instant::now();
    for id in 0..PROFILES {
        let p = profile(&mut rng, id);
        events += p.events.len();
        let t = Instant::now();
        table.upsert(id, &p);
        upserting += t.elapsed();
    }
    let total = start.elapsed();
    println!("profiles {}  events {events}", table.len());
    println!(
        "build: {:.2} s in upserts ({:.2} s with generating the profiles); peak RSS after build {:.0} MiB",
        upserting.as_secs_f64(),
        total.as_secs_f64(),
        peak_rss_mib()
    );
    println!();

    query(
        &table,
        "(1) preview, two trait conditions",
        "country = \"FR\" and total_spent > 500",
    );
    query(
        &table,
        "(2) bulk, three traits + count within 30d",
        "country in [\"FR\", \"DE\", \"ES\"] and tier != \"bronze\" and age >= 25 and count(order_completed within 30d) >= 3",
    );
    incremental(&mut table, &mut rng);
    let start = Instant::now();
    table.compact();
    println!(
        "{:<44} {:>10}   (runs by itself when garbage exceeds live events)",
        "compaction of the timelines",
        ms(start.elapsed())
    );
    query(
        &table,
        "(4) five trait conditions",
        "country = \"FR\" and total_spent > 500 and age >= 25 and tier in [\"gold\", \"platinum\"] and email_consent = \"subscribed\"",
    );
    query(
        &table,
        "event condition alone (all 10M events)",
        "count(order_completed within 30d) >= 3",
    );
    query(
        &table,
        "did / not did",
        "did(cart_abandoned within 7d) and not did(order_completed within 7d)",
    );
    query(
        &table,
        "sum with where",
        "sum(order_completed.amount where currency = \"EUR\" within 90d) > 1000",
    );
    query(
        &table,
        "relative date, identifiers, consent, or",
        "signup_at > now() - 90d or (identifiers.email contains \"@example\" and consent.email and newsletter)",
    );
    query(
        &table,
        "last event time",
        "last(order_completed) < now() - 60d",
    );
    query(
        &table,
        "row-wise fallback (two names) after a filter",
        "country = \"FR\" and total_spent - orders_90d > 4000",
    );
    println!();
    println!("peak RSS (VmHWM) {:.0} MiB", peak_rss_mib());
}

/// (3) One profile changes (a trait and a new order): upsert it, then re-evaluate five segments for it.
fn incremental(table: &mut ProfileTable, rng: &mut Rng) {
    let segments: Vec<Expr> = [
        "country = \"FR\" and total_spent > 500",
        "country in [\"FR\", \"DE\", \"ES\"] and tier != \"bronze\" and age >= 25 and count(order_completed within 30d) >= 3",
        "did(cart_abandoned within 7d) and not did(order_completed within 7d)",
        "sum(order_completed.amount within 90d) > 1000 and consent.email",
        "signup_at > now() - 90d or identifiers.email contains \"@example\"",
    ]
    .iter()
    .map(|t| parse(t).unwrap())
    .collect();
    let mut runs = Vec::new();
    let mut members = 0;
    for _ in 0..201 {
        let id = rng.below(PROFILES as u64) as i64;
        let mut p = table.view(id).unwrap();
        p.traits.insert("tier".to_owned(), json!("gold"));
        p.events.push(EventView {
            name: "order_completed".to_owned(),
            occurred_at: now() - TimeDelta::minutes(5),
            properties: [("amount".to_owned(), json!(42.5))].into_iter().collect(),
        });
        let start = Instant::now();
        table.upsert(id, &p);
        for expr in &segments {
            members += usize::from(table.evaluate_one(id, expr, now(), &|_| false));
        }
        runs.push(start.elapsed());
    }
    let worst = runs.iter().max().copied().unwrap_or_default();
    println!(
        "{:<44} {:>10}   (worst of 201: {}; {members} memberships)",
        "(3) incremental: upsert + 5 x evaluate_one",
        ms(median(runs)),
        ms(worst)
    );
}
