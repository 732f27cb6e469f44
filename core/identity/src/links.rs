//! Which identifiers link records: the `[identity]` rules `link_on`, `blocked` and `blocked_patterns`.
//!
//! Contract: [`LinkRules::links`] is asked of normalised identifiers, and says the same for the same
//! rules wherever it is asked (resolution, and `explain`, which marks the identifiers that never link and
//! says why).

use std::collections::HashSet;

use regex::Regex;
use spindle_config::IdentityConfig;

use crate::IdentityError;
use crate::normalize::Normalizer;

/// Why a normalised identifier does not link records ([`LinkRules::why_not`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotLinking {
    /// Its type is not in `link_on`.
    TypeNotLinked,
    /// Its value is listed in `blocked` or matched by `blocked_patterns`.
    Blocked,
}

impl std::fmt::Display for NotLinking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NotLinking::TypeNotLinked => "its type is not in `link_on`",
            NotLinking::Blocked => "blocked",
        })
    }
}

/// The linking rules of one `[identity]` section, ready to ask.
#[derive(Debug, Clone)]
pub struct LinkRules {
    link_on: HashSet<String, foldhash::fast::RandomState>,
    blocked: HashSet<String, foldhash::fast::RandomState>,
    patterns: Vec<Regex>,
}

impl LinkRules {
    /// The rules of `identity`; fails when a blocked pattern does not compile (configuration
    /// validation normally catches that first).
    pub fn new(identity: &IdentityConfig) -> Result<Self, IdentityError> {
        let patterns = identity
            .blocked_patterns
            .iter()
            .map(|p| {
                Regex::new(p).map_err(|err| IdentityError::Pattern {
                    pattern: p.clone(),
                    reason: err.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            link_on: identity.link_on.iter().cloned().collect(),
            blocked: blocked_values(identity),
            patterns,
        })
    }

    /// Whether a normalised identifier links records: its type links and the value is not blocked.
    pub fn links(&self, kind: &str, value: &str) -> bool {
        self.why_not(kind, value).is_none()
    }

    /// Why a normalised identifier does not link records, or `None` when it does.
    pub fn why_not(&self, kind: &str, value: &str) -> Option<NotLinking> {
        if !self.link_on.contains(kind) {
            Some(NotLinking::TypeNotLinked)
        } else if self.is_blocked(value) {
            Some(NotLinking::Blocked)
        } else {
            None
        }
    }

    /// True when a normalised value never links.
    pub fn is_blocked(&self, value: &str) -> bool {
        let listed = if value.chars().any(char::is_uppercase) {
            self.blocked.contains(&value.to_lowercase())
        } else {
            self.blocked.contains(value)
        };
        listed || self.patterns.iter().any(|p| p.is_match(value))
    }
}

/// The normalised values `[identity] blocked` lists: each entry as written (trimmed, lower-cased), and
/// as the phone and the e-mail address it normalises to, so that `+33 6 00 00 00 01` blocks the
/// `+33600000001` records hold, and `Test <test@example.com>` blocks `test@example.com`.
fn blocked_values(identity: &IdentityConfig) -> HashSet<String, foldhash::fast::RandomState> {
    let normalizer = Normalizer::new(identity.default_region.as_deref());
    identity
        .blocked
        .iter()
        .flat_map(|entry| {
            let written = entry.trim().to_lowercase();
            let normalized = ["phone", "email"]
                .into_iter()
                .filter_map(|kind| normalizer.normalize(kind, entry).ok());
            std::iter::once(written).chain(normalized)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_entries_block_what_they_normalise_to() {
        let identity = IdentityConfig {
            link_on: vec!["email".into(), "phone".into()],
            blocked: vec!["+33 6 00 00 00 01".into(), "Test <TEST@example.com>".into()],
            blocked_patterns: vec!["^noreply@".into()],
            default_region: Some("FR".into()),
            limits: Default::default(),
            priority: vec![],
            compound: vec![],
        };
        let rules = LinkRules::new(&identity).unwrap();
        assert_eq!(
            rules.why_not("phone", "+33600000001"),
            Some(NotLinking::Blocked)
        );
        assert_eq!(
            rules.why_not("email", "test@example.com"),
            Some(NotLinking::Blocked)
        );
        assert_eq!(
            rules.why_not("email", "noreply@shop.io"),
            Some(NotLinking::Blocked)
        );
        assert_eq!(rules.why_not("email", "ada@example.com"), None);
        assert_eq!(
            rules.why_not("user_id", "u1"),
            Some(NotLinking::TypeNotLinked)
        );
        assert!(rules.links("phone", "+33612345678"));
    }
}
