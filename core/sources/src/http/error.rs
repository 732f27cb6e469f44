//! Errors of HTTP requests.

/// Why a request failed for good.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The vendor answered with an error status that is not retried (or no longer).
    #[error("{method} {path} answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Method.
        method: String,
        /// URL path (no query string).
        path: String,
        /// The vendor's error message.
        message: String,
    },
    /// The request did not complete.
    #[error("{0}")]
    Network(String),
    /// Every attempt failed.
    #[error("gave up after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// How many attempts were made.
        attempts: usize,
        /// The last failure.
        last: String,
    },
    /// Credentials could not be obtained.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The response was not what the vendor documents.
    #[error("unexpected response: {0}")]
    Decode(String),
    /// The client could not be built.
    #[error("cannot set up the http client: {0}")]
    Setup(String),
}

/// The human part of a vendor's error body: `message` (HubSpot), `errors` (Shopify), else the start of the body.
pub(crate) fn vendor_message(body: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(message) = value.get("message").and_then(|m| m.as_str()) {
            return message.to_owned();
        }
        if let Some(errors) = value.get("errors") {
            return match errors.as_str() {
                Some(text) => text.to_owned(),
                None => errors.to_string(),
            };
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.chars().count() > 200 {
        format!("{}…", text.chars().take(200).collect::<String>())
    } else {
        text.to_owned()
    }
}
