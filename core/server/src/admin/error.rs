//! The admin API's one error type and how it is answered.
//!
//! Every failure is a status code and a JSON body `{"error": {"code": "...", "message": "..."}}`; an invalid
//! segment expression adds `details` pointing at the line and column. Store and internal failures are
//! logged with their cause and answered with a generic message (no SQL, no secrets).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Why an admin API request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No bearer token, or one that no configured token matches (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The token's role may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The request is malformed: bad JSON, a bad query parameter, a bad id (400).
    #[error("{0}")]
    BadRequest(String),
    /// The thing named does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state: a config-owned segment, a taken id, an ambiguous
    /// identifier (409).
    #[error("{0}")]
    Conflict(String),
    /// A segment expression does not parse or names what does not exist (422).
    #[error("{message}")]
    InvalidExpression {
        /// What is wrong.
        message: String,
        /// Where, when known.
        location: Option<ExpressionErrorDetails>,
    },
    /// The scheduler cannot take a manual run now (503).
    #[error("{0}")]
    Unavailable(String),
    /// The store failed (500).
    #[error(transparent)]
    Store(#[from] spindle_store::StoreError),
    /// Anything else that went wrong on our side (500).
    #[error("{0}")]
    Internal(String),
}

/// Where a segment expression is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ExpressionErrorDetails {
    /// Line of the problem, from 1.
    pub line: usize,
    /// Column of the problem, from 1, in characters.
    pub column: usize,
    /// Byte offset of the problem in the expression.
    pub offset: usize,
    /// Bytes underlined.
    pub len: usize,
    /// How to fix it, when there is something useful to say.
    pub hint: Option<String>,
    /// The error as `spindle segments preview` prints it: the line with a caret under the problem.
    pub rendered: String,
}

impl ExpressionErrorDetails {
    /// Locates `error` in `text`.
    pub fn new(text: &str, error: &spindle_segments::ParseError) -> Self {
        let offset = error.offset.min(text.len());
        let mut start = offset;
        while start > 0 && !text.is_char_boundary(start) {
            start -= 1;
        }
        let before = &text[..start];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Self {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
            offset: error.offset,
            len: error.len,
            hint: error.hint.clone(),
            rendered: spindle_segments::render_error(text, error),
        }
    }
}

/// The JSON body of every error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorObject,
}

/// An error: a stable code for programs, a message for people.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorObject {
    /// `unauthorized`, `forbidden`, `bad_request`, `not_found`, `conflict`, `invalid_expression`,
    /// `unavailable` or `internal`.
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
    /// For `invalid_expression`: where the expression is wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<ExpressionErrorDetails>,
}

impl ApiError {
    /// The status code answered.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::InvalidExpression { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code in the body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::InvalidExpression { .. } => "invalid_expression",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Store(_) | ApiError::Internal(_) => "internal",
        }
    }

    /// A segment expression error located in `text`.
    pub fn expression(text: &str, error: &spindle_segments::ParseError) -> Self {
        let location = ExpressionErrorDetails::new(text, error);
        ApiError::InvalidExpression {
            message: format!(
                "{} (line {}, column {})",
                error.message, location.line, location.column
            ),
            location: Some(location),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = self.code();
        let (message, details) = match self {
            ApiError::Store(err) => {
                tracing::error!(error = %err, "admin API: store failure");
                ("the store failed; see the server log".to_owned(), None)
            }
            ApiError::Internal(err) => {
                tracing::error!(error = %err, "admin API: internal failure");
                (err, None)
            }
            ApiError::InvalidExpression { message, location } => (message, location),
            other => (other.to_string(), None),
        };
        let body = ErrorBody {
            error: ErrorObject {
                code,
                message,
                details,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"spindle\""),
            );
        }
        response
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::PathRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

/// Result of an admin handler.
pub type ApiResult<T> = Result<T, ApiError>;
