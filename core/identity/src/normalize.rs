//! Identifier normalisation: the form in which identifiers are compared.
//!
//! - `email`: trimmed, lower-cased, and refused unless it parses as an address (RFC 5322 via `email_address`).
//!   A value with display text (`Ada Lovelace <ada@example.com>`) gives the address between the brackets.
//! - `phone`: parsed with `rlibphonenumber` (a port of libphonenumber, with its metadata) in the configured
//!   default region and written in E.164; refused when it is not a valid number. Every spelling is
//!   parsed, E.164 ones included: `+11111111111` is refused like `+1 111 111 1111`, and `+330612345678`
//!   gives `+33612345678` like `+33 0612345678`.
//! - `user_id`, `anonymous_id`: trimmed.
//! - `<source>_id` (vendor ids): trimmed; the type already names the source, so ids of two vendors never meet.
//!
//! The raw value is always kept beside the normalised one by the caller.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use rlibphonenumber::{PHONE_NUMBER_UTIL, PhoneNumberFormat, Region};

/// The version of this normalisation, raised whenever some raw value normalises differently (or is
/// refused where it was accepted, or the reverse): the profiles of a store built with an older version are
/// resolved again in full by the next resolution. 1: phones parsed with `rlibphonenumber`. 2: phones
/// written in E.164 are parsed and validated too; e-mails with display text give their address.
pub const NORMALIZER_VERSION: i64 = 2;

/// A normalised identifier value, or why the raw value cannot be one.
pub type Normalized = Result<String, String>;

/// Phone spellings a [`Normalizer`] remembers; past this many it forgets them all and starts again. A
/// full pass reads each record twice (to resolve, then to build profiles); over a million records
/// (400,000 customers) it meets about 620,000 distinct spellings of 760,000 phone identifiers: the bound
/// keeps every parse of the first read for the second at that scale, for about 70 MB; a look-up costs a
/// fraction of the 1.7 µs a parse and validation take.
const REMEMBERED_PHONES: usize = 1_000_000;

/// Normalises identifiers, remembering phone numbers already parsed (up to a bound), whatever spaces, dots
/// and dashes they were written with. One normaliser can serve several threads at once: the remembered
/// phones sit behind a lock held only to look up or add.
#[derive(Debug)]
pub struct Normalizer {
    /// The region of numbers written without a country code: `Ok(None)` when none is configured, `Err`
    /// with the configured code when libphonenumber does not know it.
    region: Result<Option<Region>, String>,
    phones: Mutex<HashMap<String, Normalized>>,
}

impl Normalizer {
    /// A normaliser for phones without a country code in `default_region` (ISO 3166 alpha-2).
    pub fn new(default_region: Option<&str>) -> Self {
        let region = match default_region {
            None => Ok(None),
            Some(code) => spindle_config::phone_region(code)
                .map(Some)
                .ok_or_else(|| code.to_owned()),
        };
        Self {
            region,
            phones: Mutex::new(HashMap::new()),
        }
    }

    /// The comparable form of a `kind` identifier.
    pub fn normalize(&self, kind: &str, raw: &str) -> Normalized {
        let value = raw.trim();
        if value.is_empty() {
            return Err("empty value".into());
        }
        match kind {
            "email" => {
                let lower = value.to_lowercase();
                email_address::EmailAddress::parse_with_options(
                    &lower,
                    email_address::Options::default(),
                )
                .map(|address| address.email().to_owned())
                .map_err(|err| format!("not an e-mail address: {err}"))
            }
            "phone" => {
                // Spellings made of digits, `+`, brackets, spaces, dots and dashes that differ only by
                // spaces, dots and dashes give the same number (libphonenumber keeps only the digits and
                // a leading `+`): such a number is remembered under its spelling without them. Anything
                // else (an extension such as `-503#`, `x12` or `ext. 12`, which those separators may
                // decide) is remembered under its exact spelling, as is every refusal, whose reason may
                // depend on the spelling (and which, holding a separator, never equals a number's key).
                let plain = value.bytes().all(|b| {
                    b.is_ascii_digit() || matches!(b, b'+' | b'(' | b')' | b' ' | b'.' | b'-')
                });
                let key: String = if plain {
                    value
                        .chars()
                        .filter(|c| !matches!(c, ' ' | '.' | '-'))
                        .collect()
                } else {
                    value.to_owned()
                };
                {
                    let phones = self.remembered_phones();
                    if let Some(known) = phones.get(&key)
                        && (known.is_ok() || key == value)
                    {
                        return known.clone();
                    }
                    if let Some(refused) = phones.get(value) {
                        return refused.clone();
                    }
                }
                // Parsed outside the lock: two threads meeting the same new number both parse it.
                let result = self.parse_phone(value);
                let mut phones = self.remembered_phones();
                if phones.len() >= REMEMBERED_PHONES {
                    phones.clear();
                }
                let remembered_as = if result.is_ok() {
                    key
                } else {
                    value.to_owned()
                };
                phones.insert(remembered_as, result.clone());
                result
            }
            _ => Ok(value.to_owned()),
        }
    }

    /// The remembered phones. The map is only ever added whole entries (or cleared): one left by a
    /// panicking thread is still sound.
    fn remembered_phones(&self) -> std::sync::MutexGuard<'_, HashMap<String, Normalized>> {
        self.phones.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn parse_phone(&self, value: &str) -> Normalized {
        let region = match &self.region {
            Ok(region) => *region,
            Err(code) if !value.starts_with('+') => {
                return Err(format!(
                    "no country code, and `default_region` `{code}` is not a region libphonenumber knows"
                ));
            }
            Err(_) => None,
        };
        if region.is_none() && !value.starts_with('+') {
            return Err("no country code and no `default_region` to assume one".into());
        }
        let number = PHONE_NUMBER_UTIL
            .parse(value, region)
            .map_err(|err| format!("not a phone number: {err}"))?;
        if !number.is_valid() {
            return Err("not a valid phone number".into());
        }
        Ok(number.format_as(PhoneNumberFormat::E164).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_lowercased_and_checked() {
        let n = Normalizer::new(None);
        assert_eq!(
            n.normalize("email", "  Grace.Hopper@Example.COM "),
            Ok("grace.hopper@example.com".into())
        );
        assert!(
            n.normalize("email", "not-an-email")
                .unwrap_err()
                .starts_with("not an e-mail address")
        );
        assert!(n.normalize("email", "   ").is_err());
    }

    #[test]
    fn an_email_with_display_text_gives_its_address() {
        let n = Normalizer::new(None);
        for spelling in [
            "Ada Lovelace <Ada.Lovelace@Example.com>",
            "\"Lovelace, Ada\" <ada.lovelace@example.com>",
        ] {
            assert_eq!(
                n.normalize("email", spelling),
                Ok("ada.lovelace@example.com".into()),
                "{spelling}"
            );
        }
    }

    #[test]
    fn phones_in_e164_are_validated_like_any_other_spelling() {
        let n = Normalizer::new(Some("FR"));
        // A placeholder number is refused however it is spaced: it must never link customers.
        for spelling in ["+11111111111", "+1 111 111 1111"] {
            assert_eq!(
                n.normalize("phone", spelling),
                Err("not a valid phone number".into()),
                "{spelling}"
            );
        }
        // A trunk zero kept after the country code gives the same number, spaced or not.
        for spelling in ["+330612345678", "+33 0612345678", "+33612345678"] {
            assert_eq!(
                n.normalize("phone", spelling),
                Ok("+33612345678".into()),
                "{spelling}"
            );
        }
    }

    #[test]
    fn phones_become_e164_in_the_default_region() {
        let n = Normalizer::new(Some("FR"));
        assert_eq!(
            n.normalize("phone", "06 12 34 56 78"),
            Ok("+33612345678".into())
        );
        assert_eq!(
            n.normalize("phone", "+44 20 7946 0958"),
            Ok("+442079460958".into())
        );
        assert_eq!(
            n.normalize("phone", "+1 (415) 555-2671"),
            Ok("+14155552671".into())
        );
        assert_eq!(
            n.normalize("phone", "+33612345678"),
            Ok("+33612345678".into())
        );
        assert!(n.normalize("phone", "12").is_err());
        let us = Normalizer::new(Some("US"));
        assert_eq!(
            us.normalize("phone", "(415) 555-2671"),
            Ok("+14155552671".into())
        );
        let none = Normalizer::new(None);
        assert!(
            none.normalize("phone", "(415) 555-2671")
                .unwrap_err()
                .contains("no `default_region`")
        );
    }

    #[test]
    fn spellings_of_one_number_share_a_parse_and_agree() {
        let n = Normalizer::new(Some("FR"));
        for spelling in [
            "06 12 34 56 78",
            "06.12.34.56.78",
            "06-12-34-56-78",
            "0612345678",
        ] {
            assert_eq!(n.normalize("phone", spelling), Ok("+33612345678".into()));
        }
        assert_eq!(n.remembered_phones().len(), 1);
        assert_eq!(
            n.normalize("phone", "+44 20-7946.0958"),
            Ok("+442079460958".into())
        );
        // Refusals are remembered per spelling.
        assert!(n.normalize("phone", "06 12 34").is_err());
        assert!(n.normalize("phone", "06.12.34").is_err());
        assert!(n.normalize("phone", "06 12 34").is_err());
        assert_eq!(n.remembered_phones().len(), 4);
    }

    #[test]
    fn a_trunk_prefix_after_the_country_code_is_dropped() {
        // `+33 (0)6…` is how many Europeans write their number for foreigners.
        let n = Normalizer::new(Some("FR"));
        for spelling in [
            "+33 (0)6 12 34 56 78",
            "+33 (0)612345678",
            "+44 (0)20 7946 0958",
        ] {
            assert!(n.normalize("phone", spelling).is_ok(), "{spelling}");
        }
        assert_eq!(
            n.normalize("phone", "+33 (0)6 12 34 56 78"),
            Ok("+33612345678".into())
        );
    }

    #[test]
    fn an_extension_keeps_its_own_spelling() {
        // libphonenumber reads `-503#` after a US number as an extension, but not `503#` run on.
        let fresh = |spelling| Normalizer::new(Some("US")).normalize("phone", spelling);
        let warm = Normalizer::new(Some("US"));
        for spelling in ["650-253-0000-503#", "6502530000503#", "650-253-0000-503#"] {
            assert_eq!(
                warm.normalize("phone", spelling),
                fresh(spelling),
                "{spelling}"
            );
        }
        assert_ne!(fresh("650-253-0000-503#"), fresh("6502530000503#"));
    }

    #[test]
    fn recent_area_codes_are_known() {
        // 472: a North American area code in service since 2022.
        let us = Normalizer::new(Some("US"));
        assert_eq!(
            us.normalize("phone", "(472) 555-3968"),
            Ok("+14725553968".into())
        );
    }

    #[test]
    fn an_unknown_default_region_is_named_when_it_is_needed() {
        let n = Normalizer::new(Some("QQ"));
        let refusal = n.normalize("phone", "06 12 34 56 78").unwrap_err();
        assert!(refusal.contains("`QQ`"), "{refusal}");
        // A number with its country code needs no region.
        assert_eq!(
            n.normalize("phone", "+33 6 12 34 56 78"),
            Ok("+33612345678".into())
        );
    }

    proptest::proptest! {
        /// What the shared cache entry rests on: spaces, dots and dashes never change the number a
        /// spelling gives, nor whether it gives one.
        #[test]
        fn separators_never_change_a_parse(
            plus in proptest::bool::ANY,
            digits in proptest::collection::vec(0u8..10, 2..16),
            separators in proptest::collection::vec(proptest::sample::select(vec!["", " ", ".", "-", " - "]), 16),
            region in proptest::sample::select(vec!["FR", "GB", "US", "DE"]),
        ) {
            let n = Normalizer::new(Some(region));
            let mut spelled = String::from(if plus { "+" } else { "" });
            let mut bare = spelled.clone();
            for (digit, separator) in digits.iter().zip(&separators) {
                spelled.push(char::from(b'0' + digit));
                spelled.push_str(separator);
                bare.push(char::from(b'0' + digit));
            }
            proptest::prop_assert_eq!(n.parse_phone(spelled.trim()).ok(), n.parse_phone(&bare).ok());
        }

        /// What remembering rests on: a normaliser that has seen other numbers and spellings before
        /// answers exactly as a fresh one does.
        #[test]
        fn remembered_answers_are_fresh_answers(
            numbers in proptest::collection::vec(
                (proptest::sample::select(vec!["", "+33", "0033 ", "+44 ", "+1 "]),
                 proptest::collection::vec(0u8..10, 2..12),
                 proptest::sample::select(vec!["", "", "#", "-5#", "5#", " x12", " ext. 12"])),
                1..12,
            ),
        ) {
            let warm = Normalizer::new(Some("FR"));
            let spellings: Vec<String> = numbers
                .iter()
                .map(|(prefix, digits, suffix)| {
                    let digits: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
                    format!("{prefix}{digits}{suffix}")
                })
                .collect();
            for spelling in spellings.iter().chain(&spellings) {
                proptest::prop_assert_eq!(
                    warm.normalize("phone", spelling),
                    Normalizer::new(Some("FR")).normalize("phone", spelling)
                );
            }
        }
    }

    #[test]
    fn other_ids_are_trimmed() {
        let n = Normalizer::new(None);
        assert_eq!(n.normalize("crm_id", " 42 "), Ok("42".into()));
        assert_eq!(n.normalize("user_id", "U-1"), Ok("U-1".into()));
    }
}
