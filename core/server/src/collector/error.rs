//! The collector's refusals: each has an HTTP status, a stable `code` and a message, sent as
//! `{"code": "...", "message": "..."}` (the shape Segment's and RudderStack's client libraries expect: a 4xx
//! body without both keys makes RudderStack's Python library retry).
//!
//! | status | code | when |
//! |---|---|---|
//! | 400 | `invalid_json` | the body is not JSON, or not a JSON object |
//! | 400 | `invalid_batch` | `/v1/batch`: `batch` is missing or not an array |
//! | 400 | `too_large` | more than 32 KiB for a single call, 500 KiB for a batch, after decompression |
//! | 400 | `too_many_events` | more than 2,500 messages in one batch |
//! | 400 | `invalid_gzip` | `Content-Encoding: gzip` with a body that does not decompress |
//! | 400 | `invalid_message` and others | a single call whose message is refused (see [`super::message`]) |
//! | 401 | `unauthorized` | no write key, an unknown one, or a malformed `Authorization` header |
//! | 415 | `unsupported_content_type` | neither JSON, `text/plain` nor form-encoded (RudderStack's Node library) |
//! | 415 | `unsupported_encoding` | a `Content-Encoding` other than `gzip` or `identity` |
//! | 503 | `store_unavailable` | the store could not commit; nothing of the request was stored, retry |

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Why one message was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// Position in the batch (0 for a single call).
    pub index: usize,
    /// Stable reason code, e.g. `missing_user_id`.
    pub code: &'static str,
    /// What is wrong, for people.
    pub message: String,
}

/// Why a whole request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CollectorError {
    /// No usable write key.
    #[error("{0}")]
    Unauthorized(String),
    /// A content type the collector does not read.
    #[error("unsupported content type `{0}`: send application/json (or text/plain from browsers)")]
    UnsupportedContentType(String),
    /// A content encoding other than gzip.
    #[error("unsupported content encoding `{0}`: send the body plain or gzip-compressed")]
    UnsupportedEncoding(String),
    /// A gzip body that does not decompress.
    #[error("the gzip body does not decompress: {0}")]
    InvalidGzip(String),
    /// Over the size limit (after decompression).
    #[error("the body is larger than {limit} bytes (after decompression)")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// Not a JSON object.
    #[error("malformed JSON: {0}")]
    InvalidJson(String),
    /// A batch body without a `batch` array.
    #[error("{0}")]
    InvalidBatch(String),
    /// Too many messages in one batch.
    #[error("{count} messages in one batch; at most {limit} are accepted")]
    TooManyEvents {
        /// Messages sent.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The message of a single call was refused.
    #[error("{}", .0.message)]
    InvalidMessage(Rejection),
    /// The body could not be read (the client went away, or a transport error).
    #[error("cannot read the body: {0}")]
    Body(String),
    /// The store did not commit; nothing of the request was stored.
    #[error("the event store is unavailable; nothing was stored, retry later")]
    Unavailable,
}

impl CollectorError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            CollectorError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            CollectorError::UnsupportedContentType(_) | CollectorError::UnsupportedEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            CollectorError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The stable reason code (also the `reason` label of the rejection metric).
    pub fn code(&self) -> &'static str {
        match self {
            CollectorError::Unauthorized(_) => "unauthorized",
            CollectorError::UnsupportedContentType(_) => "unsupported_content_type",
            CollectorError::UnsupportedEncoding(_) => "unsupported_encoding",
            CollectorError::InvalidGzip(_) => "invalid_gzip",
            CollectorError::TooLarge { .. } => "too_large",
            CollectorError::InvalidJson(_) => "invalid_json",
            CollectorError::InvalidBatch(_) => "invalid_batch",
            CollectorError::TooManyEvents { .. } => "too_many_events",
            CollectorError::InvalidMessage(rejection) => rejection.code,
            CollectorError::Body(_) => "unreadable_body",
            CollectorError::Unavailable => "store_unavailable",
        }
    }
}

/// The error body.
#[derive(Debug, Serialize)]
struct ErrorBody {
    code: &'static str,
    message: String,
}

impl IntoResponse for CollectorError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody {
            code: self.code(),
            message: self.to_string(),
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"spindle collector\""),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
