//! Hashing as destinations require it.
//!
//! - Ad platforms (Meta, Google Customer Match) want SHA-256 of the normalised value, in lower-case hex:
//!   e-mails trimmed and lower-cased; phones in E.164 without the `+`.
//! - Mailchimp addresses a member by the MD5 of the lower-cased e-mail (its "subscriber hash").

use md5::{Digest as _, Md5};
use sha2::Sha256;

/// Lower-case hex SHA-256 of `text`.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// SHA-256 of an e-mail as ad platforms normalise it (trimmed, lower-case).
pub fn sha256_email(email: &str) -> String {
    sha256_hex(&email.trim().to_lowercase())
}

/// SHA-256 of a phone as ad platforms normalise it (digits of the E.164 form, no `+`).
pub fn sha256_phone(e164: &str) -> String {
    sha256_hex(
        &e164
            .chars()
            .filter(char::is_ascii_digit)
            .collect::<String>(),
    )
}

/// Mailchimp's subscriber hash: MD5 of the lower-cased e-mail, lower-case hex.
pub fn mailchimp_subscriber_hash(email: &str) -> String {
    hex::encode(Md5::digest(email.trim().to_lowercase().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        assert_eq!(
            mailchimp_subscriber_hash(" Urist.McVankab@freddiesjokes.com "),
            "62eeb292278cc15f5817cb78f7790b08"
        );
        assert_eq!(
            sha256_email("Test@Example.com"),
            sha256_hex("test@example.com")
        );
        assert_eq!(sha256_phone("+33612345678"), sha256_hex("33612345678"));
    }
}
