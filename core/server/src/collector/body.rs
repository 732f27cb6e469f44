//! From an HTTP body to messages: content type, gzip, size limits and JSON.
//!
//! Contract:
//! - accepted content types: `application/json`, `text/plain` (browsers, to avoid a CORS preflight) and
//!   `application/x-www-form-urlencoded` (RudderStack's Node library sends gzipped JSON under that type);
//!   parameters such as `charset` are ignored. Anything else, or no content type, is refused.
//! - `Content-Encoding: gzip` bodies are decompressed; the limits apply to the decompressed size:
//!   [`MAX_MESSAGE_BYTES`] for a single call (and each message of a batch), [`MAX_BATCH_BYTES`] for a batch,
//!   at most [`MAX_BATCH_MESSAGES`] messages per batch. These are Segment's documented limits.
//! - [`parse`] never panics, whatever the bytes (a property test feeds it arbitrary input).

use std::io::Read;

use axum::http::{HeaderMap, header};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::error::{CollectorError, Rejection};

/// Largest single call, and largest message inside a batch (32 KiB).
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// Largest batch request (500 KiB).
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
/// Most messages in one batch.
pub const MAX_BATCH_MESSAGES: usize = 2_500;

/// Which endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/batch`, `/v1/b`, `/v1/import`.
    Batch,
    /// A single-message endpoint; the message's type is the endpoint's.
    Single(MessageType),
}

impl Endpoint {
    /// The decompressed size limit of the whole body.
    pub fn limit(self) -> usize {
        match self {
            Endpoint::Batch => MAX_BATCH_BYTES,
            Endpoint::Single(_) => MAX_MESSAGE_BYTES,
        }
    }

    /// The route label used in metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Batch => "batch",
            Endpoint::Single(kind) => kind.as_str(),
        }
    }
}

/// The six Segment message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// Who the user is, with traits.
    Identify,
    /// Something the user did.
    Track,
    /// A web page view.
    Page,
    /// A mobile screen view.
    Screen,
    /// The user belongs to an account.
    Group,
    /// Two ids are the same user.
    Alias,
}

impl MessageType {
    /// Parses the `type` field.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "identify" => MessageType::Identify,
            "track" => MessageType::Track,
            "page" => MessageType::Page,
            "screen" => MessageType::Screen,
            "group" => MessageType::Group,
            "alias" => MessageType::Alias,
            _ => return None,
        })
    }

    /// The type's name, also the stream its records are stored in.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Identify => "identify",
            MessageType::Track => "track",
            MessageType::Page => "page",
            MessageType::Screen => "screen",
            MessageType::Group => "group",
            MessageType::Alias => "alias",
        }
    }
}

/// A parsed request body.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// `writeKey` from the body, if it has one.
    pub write_key: Option<String>,
    /// The batch-level `sentAt`, if any (each message may carry its own).
    pub sent_at: Option<Value>,
    /// The messages in order: each an object, or the reason it was refused.
    pub messages: Vec<Result<Map<String, Value>, Rejection>>,
}

/// Refuses content types the collector does not read.
pub fn check_content_type(headers: &HeaderMap) -> Result<(), CollectorError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(CollectorError::UnsupportedContentType("(none)".into()));
    };
    let text = value.to_str().unwrap_or_default();
    let essence = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" | "text/plain" | "application/x-www-form-urlencoded" => Ok(()),
        _ => Err(CollectorError::UnsupportedContentType(
            text.chars().take(100).collect(),
        )),
    }
}

/// True when the body is gzip-compressed; refuses other encodings.
pub fn is_gzip(headers: &HeaderMap) -> Result<bool, CollectorError> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(false);
    };
    let text = value
        .to_str()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match text.as_str() {
        "" | "identity" => Ok(false),
        "gzip" | "x-gzip" => Ok(true),
        other => Err(CollectorError::UnsupportedEncoding(
            other.chars().take(50).collect(),
        )),
    }
}

/// Decompresses a gzip body, refusing it as soon as it grows past `limit` bytes.
pub fn gunzip(compressed: &[u8], limit: usize) -> Result<Vec<u8>, CollectorError> {
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).min(limit));
    let reader = flate2::read::MultiGzDecoder::new(compressed);
    reader
        .take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|err| CollectorError::InvalidGzip(err.to_string()))?;
    if out.len() > limit {
        return Err(CollectorError::TooLarge { limit });
    }
    Ok(out)
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Option<&'a RawValue>,
    #[serde(rename = "writeKey")]
    write_key: Option<Value>,
    #[serde(rename = "sentAt")]
    sent_at: Option<Value>,
}

/// A well-formed batch body read in one pass, up to its messages (each kept as raw JSON).
#[derive(Deserialize)]
struct BatchItems<'a> {
    #[serde(borrow)]
    batch: Vec<&'a RawValue>,
    #[serde(rename = "writeKey")]
    write_key: Option<Value>,
    #[serde(rename = "sentAt")]
    sent_at: Option<Value>,
}

/// The common case: a JSON object with a `batch` array. `None` for anything else, which
/// [`refused_batch`] then explains.
fn batch_items(body: &[u8]) -> Option<BatchItems<'_>> {
    // serde reads a struct from an array too (fields in order): only an object may take this path.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice(body).ok()
}

/// A batch body that [`batch_items`] did not read, read step by step to say what is wrong with it: not
/// JSON, not an object, no `batch`, or a `batch` that is not an array.
fn refused_batch(body: &[u8]) -> Result<BatchItems<'_>, CollectorError> {
    let outer: BatchBody<'_> = match serde_json::from_slice::<&RawValue>(body) {
        Err(err) => return Err(json_error(&err)),
        Ok(raw) if !raw.get().trim_start().starts_with('{') => {
            return Err(CollectorError::InvalidJson(
                "the body must be a JSON object".into(),
            ));
        }
        Ok(raw) => serde_json::from_str(raw.get()).map_err(|e| json_error(&e))?,
    };
    let Some(batch) = outer.batch else {
        return Err(CollectorError::InvalidBatch(
            "a batch body needs a `batch` array of messages".into(),
        ));
    };
    let items: Vec<&RawValue> = serde_json::from_str(batch.get())
        .map_err(|_| CollectorError::InvalidBatch("`batch` must be an array of messages".into()))?;
    Ok(BatchItems {
        batch: items,
        write_key: outer.write_key,
        sent_at: outer.sent_at,
    })
}

fn write_key_of(value: Option<Value>) -> Option<String> {
    match value {
        Some(Value::String(key)) if !key.is_empty() => Some(key),
        _ => None,
    }
}

fn json_error(err: &serde_json::Error) -> CollectorError {
    CollectorError::InvalidJson(err.to_string())
}

/// Parses a (decompressed) body sent to `endpoint`. Whole-request problems are errors; a batch message that
/// is not an object or is too large is refused on its own.
pub fn parse(endpoint: Endpoint, body: &[u8]) -> Result<Envelope, CollectorError> {
    if body.len() > endpoint.limit() {
        return Err(CollectorError::TooLarge {
            limit: endpoint.limit(),
        });
    }
    match endpoint {
        Endpoint::Single(_) => {
            let value: Value = serde_json::from_slice(body).map_err(|e| json_error(&e))?;
            let Value::Object(mut message) = value else {
                return Err(CollectorError::InvalidJson(
                    "the body must be a JSON object".into(),
                ));
            };
            let write_key = write_key_of(message.remove("writeKey"));
            let sent_at = message.get("sentAt").cloned();
            Ok(Envelope {
                write_key,
                sent_at,
                messages: vec![Ok(message)],
            })
        }
        Endpoint::Batch => {
            let outer = match batch_items(body) {
                Some(outer) => outer,
                None => refused_batch(body)?,
            };
            let items = outer.batch;
            if items.len() > MAX_BATCH_MESSAGES {
                return Err(CollectorError::TooManyEvents {
                    count: items.len(),
                    limit: MAX_BATCH_MESSAGES,
                });
            }
            let messages = items
                .into_iter()
                .enumerate()
                .map(|(index, raw)| {
                    if raw.get().len() > MAX_MESSAGE_BYTES {
                        return Err(Rejection {
                            index,
                            code: "message_too_large",
                            message: format!(
                                "the message is larger than {MAX_MESSAGE_BYTES} bytes"
                            ),
                        });
                    }
                    match serde_json::from_str::<Value>(raw.get()) {
                        Ok(Value::Object(message)) => Ok(message),
                        _ => Err(Rejection {
                            index,
                            code: "invalid_message",
                            message: "a message must be a JSON object".into(),
                        }),
                    }
                })
                .collect();
            Ok(Envelope {
                write_key: write_key_of(outer.write_key),
                sent_at: outer.sent_at,
                messages,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn endpoints() -> impl Strategy<Value = Endpoint> {
        prop_oneof![
            Just(Endpoint::Batch),
            Just(Endpoint::Single(MessageType::Track)),
            Just(Endpoint::Single(MessageType::Identify)),
        ]
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[a-zA-Z0-9:+. -]{0,30}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("batch".to_owned()),
                        Just("type".to_owned()),
                        Just("userId".to_owned()),
                        Just("anonymousId".to_owned()),
                        Just("timestamp".to_owned()),
                        Just("sentAt".to_owned()),
                        Just("writeKey".to_owned()),
                        Just("traits".to_owned()),
                        Just("event".to_owned()),
                        "[a-z]{1,8}",
                    ],
                    inner,
                    0..8
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn arbitrary_bytes_never_panic(endpoint in endpoints(), bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse(endpoint, &bytes);
            let _ = gunzip(&bytes, 4096);
        }

        #[test]
        fn arbitrary_json_never_panics(endpoint in endpoints(), value in json()) {
            let bytes = serde_json::to_vec(&value).unwrap();
            if let Ok(envelope) = parse(endpoint, &bytes) {
                let received = chrono::Utc::now();
                for message in envelope.messages.into_iter().flatten() {
                    let _ = crate::collector::message::to_record(
                        endpoint,
                        message,
                        envelope.sent_at.as_ref(),
                        received,
                    );
                }
            }
        }
    }

    #[test]
    fn limits_apply_after_decompression() {
        use std::io::Write;
        let big = vec![b' '; MAX_BATCH_BYTES + 10];
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&big).unwrap();
        let compressed = encoder.finish().unwrap();
        assert!(compressed.len() < 5_000);
        assert_eq!(
            gunzip(&compressed, MAX_BATCH_BYTES),
            Err(CollectorError::TooLarge {
                limit: MAX_BATCH_BYTES
            })
        );
    }
}
