//! A deterministic generator of realistic customer records, with the ground truth kept beside them.
//!
//! Each true customer (a number, never written into a record) gets a [`Person`] derived from the seed and
//! the number alone: names, a unique e-mail address, a unique mobile number, a `user_id`, and sometimes a
//! second (work) address. Customers come in pairs (`2k`, `2k + 1`); about 5 % of pairs are a family that
//! shares one phone number. The person is then spread over three sources, with the noise of real exports:
//!
//! - `crm` / `contacts`: e-mail, phone, `crm_id` (the contact id), `user_id`, names, consent. Every family
//!   member is in the CRM, so every profile of a family member holds a `user_id` and the `user_id = 1` limit
//!   keeps the two members apart although they share the phone.
//! - `shop` / `customers`: e-mail (sometimes the work address, sometimes the blocked `test@example.com`),
//!   phone in another format, names typed by the customer, orders on the timeline; a few customers open a
//!   second account.
//! - `file` / `rows`: an imported list with the e-mail or the phone, sometimes only one of them.
//!
//! Noise: e-mails in mixed case with surrounding whitespace; phones as `+33612345678`, `06 12 34 56 78`,
//! `(0)6-12-34-56-78`, `+33 6 12 34 56 78`, `0612345678` or `06.12.34.56.78`; British customers who sometimes
//! type their national number (which the French default region cannot read); a few unreadable phones;
//! missing fields; customers present in one source only.
//!
//! Which customer a record belongs to is returned beside it ([`Generated::customer`]) and never stored.

#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Value, json};
use spindle_model::{Event, Identifier, RawRecord, RecordKey};

/// The e-mail address that careless shop staff and form fillers type; blocked in the identity config.
pub const BLOCKED_EMAIL: &str = "test@example.com";

/// SplitMix64: small, fast and good enough for test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const FIRST_NAMES: &[&str] = &[
    "Marie", "Jean", "Pierre", "Camille", "Louis", "Léa", "Hugo", "Chloé", "Lucas", "Manon",
    "Gabriel", "Inès", "Arthur", "Jade", "Jules", "Louise", "Adam", "Emma", "Raphaël", "Alice",
    "Nathan", "Lina", "Théo", "Rose", "Paul", "Anna", "Sacha", "Zoé", "Tom", "Julia", "Noah",
    "Mila", "Victor", "Sarah", "Ethan", "Agathe", "Maël", "Juliette", "Léon", "Margaux", "Oliver",
    "Amelia", "George", "Isla",
];

const LAST_NAMES: &[&str] = &[
    "Martin",
    "Bernard",
    "Dubois",
    "Thomas",
    "Robert",
    "Richard",
    "Petit",
    "Durand",
    "Leroy",
    "Moreau",
    "Simon",
    "Laurent",
    "Lefebvre",
    "Michel",
    "Garcia",
    "David",
    "Bertrand",
    "Roux",
    "Vincent",
    "Fournier",
    "Morel",
    "Girard",
    "André",
    "Lefèvre",
    "Mercier",
    "Dupont",
    "Lambert",
    "Bonnet",
    "François",
    "Martinez",
    "Legrand",
    "Garnier",
    "Faure",
    "Rousseau",
    "Blanc",
    "Guérin",
    "Muller",
    "Henry",
    "Roussel",
    "Nicolas",
    "Perrin",
    "Morin",
    "Mathieu",
    "Clément",
    "Smith",
    "Jones",
    "Taylor",
    "Brown",
    "Williams",
    "Wilson",
];

const DOMAINS: &[&str] = &[
    "gmail.com",
    "yahoo.fr",
    "orange.fr",
    "hotmail.fr",
    "free.fr",
    "outlook.com",
    "laposte.net",
    "sfr.fr",
    "icloud.com",
    "wanadoo.fr",
];

const WORK_DOMAINS: &[&str] = &["acme.fr", "initech.com", "globex.eu", "umbrella.io"];

/// Second digits of French mobiles (`06 x…`) that libphonenumber accepts for every following digit.
const FR_MOBILE_SECOND: &[u8] = b"01245678";

/// Everything that is true about one customer, derived from the seed and the customer number alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// The customer number (the ground truth).
    pub id: u64,
    /// First name as the customer spells it.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// The personal address, lower-case.
    pub email: String,
    /// A work address used in some shop accounts.
    pub work_email: Option<String>,
    /// National significant number of the phone (`612345678`, or `7…` for British numbers).
    pub phone: String,
    /// True for a British number (`+44`), else French (`+33`).
    pub british: bool,
    /// True when the phone is the family's and shared with the other member of the pair.
    pub family: bool,
    /// The app user id.
    pub user_id: String,
}

fn mix(seed: u64, n: u64) -> u64 {
    Rng::new(seed ^ n.wrapping_mul(0xD6E8_FEB8_6659_FD93)).next_u64()
}

fn ascii(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'é' | 'è' | 'ê' => 'e',
            'ë' => 'e',
            'ç' => 'c',
            'à' | 'â' => 'a',
            'ï' | 'î' => 'i',
            'ô' => 'o',
            'ù' | 'û' => 'u',
            other => other,
        })
        .collect::<String>()
        .to_lowercase()
}

/// A unique national number for phone slot `n` (customer numbers below 80 million).
fn phone_of(n: u64, british: bool) -> String {
    let x = (n.wrapping_mul(48_271) + 1_234_567) % 80_000_000;
    if british {
        // 71…, 72…, 73… are British mobile ranges.
        format!("7{}{:08}", 1 + x % 3, x / 3 % 100_000_000)
    } else {
        let second = FR_MOBILE_SECOND[(x / 10_000_000) as usize] as char;
        format!("6{second}{:07}", x % 10_000_000)
    }
}

impl Person {
    /// Customer `id` of the population made from `seed`.
    pub fn of(seed: u64, id: u64) -> Self {
        let mut rng = Rng::new(mix(seed, id));
        let first_name = (*rng.pick(FIRST_NAMES)).to_owned();
        let last_name = (*rng.pick(LAST_NAMES)).to_owned();
        let (first, last) = (ascii(&first_name), ascii(&last_name));
        let local = match rng.below(5) {
            0 => format!("{first}.{last}{id}"),
            1 => format!("{}{last}{id}", &first[..1]),
            2 => format!("{first}_{last}{id}"),
            3 => format!("{last}.{first}{id}"),
            _ => format!("{first}{id}"),
        };
        let email = format!("{local}@{}", rng.pick(DOMAINS));
        let work_email = rng
            .chance(0.04)
            .then(|| format!("{}.{last}{id}@{}", &first[..1], rng.pick(WORK_DOMAINS)));
        let user_id = format!("usr_{:08x}", mix(seed ^ 0x5555, id) as u32);
        // The pair (2k, 2k+1) is a family in 5 % of cases; both then use the phone of 2k.
        let family = Rng::new(mix(seed ^ 0xFA31, id / 2)).chance(0.05);
        let slot = if family { id / 2 * 2 } else { id };
        let british = Rng::new(mix(seed ^ 0xB217, slot)).chance(0.03);
        Self {
            id,
            first_name,
            last_name,
            email,
            work_email,
            phone: phone_of(slot, british),
            british,
            family,
            user_id: format!("{user_id}-{id}"),
        }
    }

    /// The phone in E.164.
    pub fn e164(&self) -> String {
        format!("+{}{}", if self.british { 44 } else { 33 }, self.phone)
    }
}

/// One generated record and the customer it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// Source id.
    pub source: &'static str,
    /// The record.
    pub record: RawRecord,
    /// The true customer.
    pub customer: u64,
}

impl Generated {
    /// The record's key.
    pub fn key(&self) -> RecordKey {
        RecordKey {
            source: self.source.to_owned(),
            stream: self.record.stream.clone(),
            external_id: self.record.external_id.clone(),
        }
    }
}

/// Makes customers one after another, and further records of customers already made.
#[derive(Debug)]
pub struct Generator {
    seed: u64,
    rng: Rng,
    customers: u64,
    crm: u64,
    shop: u64,
    file: u64,
    epoch: DateTime<Utc>,
}

impl Generator {
    /// A generator for the population of `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            rng: Rng::new(seed ^ 0x0123_4567_89AB_CDEF),
            customers: 0,
            crm: 0,
            shop: 0,
            file: 0,
            epoch: Utc
                .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
                .single()
                .unwrap_or_default(),
        }
    }

    /// How many customers were made so far (numbers `0..customers()`).
    pub fn customers(&self) -> u64 {
        self.customers
    }

    /// The person behind customer `id`.
    pub fn person(&self, id: u64) -> Person {
        Person::of(self.seed, id)
    }

    /// The records of the next customer (at least one).
    pub fn next_customer(&mut self) -> Vec<Generated> {
        let person = self.person(self.customers);
        self.customers += 1;
        let rng = &mut self.rng;
        let mut in_crm = person.family || rng.chance(0.80);
        let in_shop = rng.chance(0.85);
        let mut in_file = rng.chance(0.78);
        if !(in_crm || in_shop || in_file) {
            if rng.chance(0.5) {
                in_crm = true;
            } else {
                in_file = true;
            }
        }
        let mut out = Vec::new();
        if in_crm {
            out.push(self.crm_record(&person));
        }
        if in_shop {
            out.push(self.shop_record(&person));
            if self.rng.chance(0.04) {
                // A second account, opened later.
                out.push(self.shop_record(&person));
            }
        }
        if in_file {
            out.push(self.file_record(&person));
        }
        out
    }

    /// A new shop or file record of a customer already made (a returning customer).
    pub fn revisit(&mut self, id: u64) -> Generated {
        let person = self.person(id);
        if self.rng.chance(0.5) {
            self.shop_record(&person)
        } else {
            self.file_record(&person)
        }
    }

    fn updated_at(&mut self) -> DateTime<Utc> {
        self.epoch + Duration::minutes(self.rng.below(60 * 24 * 365) as i64)
    }

    fn noisy_email(&mut self, email: &str) -> String {
        let rng = &mut self.rng;
        let cased = match rng.below(10) {
            0..=5 => email.to_owned(),
            6 => email.to_uppercase(),
            7 => {
                // First letter of each dotted part in upper case: `Marie.Dupont12@Gmail.com`.
                email
                    .split('.')
                    .map(|part| {
                        let mut chars = part.chars();
                        chars.next().map_or_else(String::new, |c| {
                            c.to_uppercase().chain(chars).collect::<String>()
                        })
                    })
                    .collect::<Vec<_>>()
                    .join(".")
            }
            _ => email
                .chars()
                .map(|c| {
                    if rng.chance(0.3) {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect(),
        };
        match rng.below(8) {
            0 => format!(" {cased}"),
            1 => format!("{cased} "),
            2 => format!("\t{cased}  "),
            _ => cased,
        }
    }

    fn noisy_phone(&mut self, person: &Person) -> String {
        let rng = &mut self.rng;
        let n = &person.phone;
        if rng.chance(0.01) {
            // Unreadable: a digit lost on the way.
            return format!("0{}", &n[..n.len() - 1]);
        }
        if person.british {
            return match rng.below(4) {
                0 => person.e164(),
                1 => format!("+44 {} {}", &n[..4], &n[4..]),
                2 => format!("0044 {n}"),
                // National format: unreadable with a French default region.
                _ => format!("0{} {}", &n[..4], &n[4..]),
            };
        }
        let pairs = |sep: &str| {
            let digits = format!("0{n}");
            digits
                .as_bytes()
                .chunks(2)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join(sep)
        };
        match rng.below(7) {
            0 => person.e164(),
            1 => pairs(" "),
            2 => format!("(0){}-{}", &n[..1], {
                let rest = &n[1..];
                rest.as_bytes()
                    .chunks(2)
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect::<Vec<_>>()
                    .join("-")
            }),
            3 => format!(
                "+33 {} {} {} {} {}",
                &n[..1],
                &n[1..3],
                &n[3..5],
                &n[5..7],
                &n[7..]
            ),
            4 => format!("0{n}"),
            5 => pairs("."),
            _ => format!("+33 (0){n}"),
        }
    }

    fn traits(entries: &[(&str, Value)]) -> BTreeMap<String, Value> {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    fn crm_record(&mut self, person: &Person) -> Generated {
        self.crm += 1;
        let external_id = format!("{}", 100_000 + self.crm);
        let mut identifiers = vec![
            Identifier::new("crm_id", external_id.clone()),
            Identifier::new("user_id", person.user_id.clone()),
        ];
        if !self.rng.chance(0.04) {
            let email = self.noisy_email(&person.email);
            identifiers.push(Identifier::new("email", email));
        }
        if !self.rng.chance(0.12) {
            let phone = self.noisy_phone(person);
            identifiers.push(Identifier::new("phone", phone));
        }
        let consent = *self
            .rng
            .pick(&["subscribed", "unsubscribed", "", "pending"]);
        let mut traits = vec![
            ("first_name", json!(person.first_name)),
            ("last_name", json!(person.last_name)),
            ("country", json!(if person.british { "GB" } else { "FR" })),
            (
                "lifecycle_stage",
                json!(self.rng.pick(&["lead", "customer", "evangelist"])),
            ),
        ];
        if !consent.is_empty() {
            traits.push(("email_consent", json!(consent)));
        }
        let updated_at = self.updated_at();
        Generated {
            source: "crm",
            customer: person.id,
            record: RawRecord {
                stream: "contacts".into(),
                external_id,
                version: updated_at.timestamp_millis(),
                updated_at: Some(updated_at),
                deleted: false,
                identifiers,
                traits: Self::traits(&traits),
                events: vec![],
            },
        }
    }

    fn shop_record(&mut self, person: &Person) -> Generated {
        self.shop += 1;
        let external_id = format!("{}", 7_000_000 + self.shop * 7);
        let mut identifiers = Vec::new();
        let roll = self.rng.below(100);
        let email = match (roll, &person.work_email) {
            (0..=2, _) => Some(BLOCKED_EMAIL.to_owned()),
            (3..=7, _) => None,
            (8..=40, Some(work)) => Some(self.noisy_email(&work.clone())),
            _ => Some(self.noisy_email(&person.email)),
        };
        if let Some(email) = email {
            identifiers.push(Identifier::new("email", email));
        }
        if !self.rng.chance(0.30) {
            let phone = self.noisy_phone(person);
            identifiers.push(Identifier::new("phone", phone));
        }
        let first = match self.rng.below(6) {
            0 => person.first_name.to_lowercase(),
            1 => person.first_name.to_uppercase(),
            _ => person.first_name.clone(),
        };
        let mut events = Vec::new();
        let now = self.updated_at();
        for _ in 0..self.rng.below(3) {
            let days = self.rng.below(300) as i64;
            let cents = 500 + self.rng.below(20_000);
            events.push(Event {
                name: "order_completed".into(),
                occurred_at: now - Duration::days(days),
                properties: Self::traits(&[
                    ("amount", json!(cents as f64 / 100.0)),
                    ("currency", json!("EUR")),
                ]),
            });
        }
        Generated {
            source: "shop",
            customer: person.id,
            record: RawRecord {
                stream: "customers".into(),
                external_id,
                version: 1,
                updated_at: Some(now),
                deleted: false,
                identifiers,
                traits: Self::traits(&[
                    ("first_name", json!(first)),
                    ("last_name", json!(person.last_name)),
                ]),
                events,
            },
        }
    }

    fn file_record(&mut self, person: &Person) -> Generated {
        self.file += 1;
        let external_id = format!("line:{}", self.file + 1);
        let mut identifiers = Vec::new();
        let roll = self.rng.below(100);
        if roll < 65 {
            let email = if self.rng.chance(0.02) {
                BLOCKED_EMAIL.to_owned()
            } else {
                self.noisy_email(&person.email)
            };
            identifiers.push(Identifier::new("email", email));
        }
        if roll >= 30 {
            let phone = self.noisy_phone(person);
            identifiers.push(Identifier::new("phone", phone));
        }
        let mut traits = vec![(
            "list",
            json!(self.rng.pick(&["salon-2024", "newsletter", "jeu-concours"])),
        )];
        if self.rng.chance(0.5) {
            traits.push(("last_name", json!(person.last_name.to_uppercase())));
        }
        Generated {
            source: "file",
            customer: person.id,
            record: RawRecord {
                stream: "rows".into(),
                external_id,
                version: 1,
                updated_at: None,
                deleted: false,
                identifiers,
                traits: Self::traits(&traits),
                events: vec![],
            },
        }
    }
}
