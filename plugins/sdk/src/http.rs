//! Outgoing HTTP through the host, with JSON helpers.
//!
//! The host sends only to the destination's `allow_hosts` and fills in `{{secret:NAME}}` references.

use crate::BatchError;
use crate::bindings::spindle::destination::http as host;

pub use host::{HttpError, Method};

/// A response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers (names lower-case).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `Retry-After` in whole seconds, when given as seconds.
    pub fn retry_after(&self) -> Option<u32> {
        self.header("retry-after")?
            .trim()
            .parse::<f64>()
            .ok()
            .map(|s| s.ceil().max(0.0) as u32)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(&self.body).map_err(|err| format!("unreadable JSON answer: {err}"))
    }
}

/// A request under construction.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

impl Request {
    /// A request with any method.
    pub fn new(method: Method, url: &str) -> Self {
        Self {
            method,
            url: url.to_owned(),
            headers: Vec::new(),
            body: None,
        }
    }

    /// A GET.
    pub fn get(url: &str) -> Self {
        Self::new(Method::Get, url)
    }

    /// A POST.
    pub fn post(url: &str) -> Self {
        Self::new(Method::Post, url)
    }

    /// A PUT.
    pub fn put(url: &str) -> Self {
        Self::new(Method::Put, url)
    }

    /// A DELETE.
    pub fn delete(url: &str) -> Self {
        Self::new(Method::Delete, url)
    }

    /// Adds a header; its value may hold `{{secret:NAME}}`.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// A JSON body (and its content type).
    pub fn json<T: serde::Serialize>(mut self, body: &T) -> Self {
        self.body = Some(serde_json::to_vec(body).unwrap_or_default());
        self.headers
            .push(("content-type".to_owned(), "application/json".to_owned()));
        self
    }

    /// A raw body.
    pub fn body(mut self, body: Vec<u8>) -> Self {
        self.body = Some(body);
        self
    }

    /// Sends it through the host.
    pub fn send(self) -> Result<Response, HttpError> {
        let response = host::send(&host::Request {
            method: self.method,
            url: self.url,
            headers: self.headers,
            body: self.body,
        })?;
        Ok(Response {
            status: response.status,
            headers: response
                .headers
                .into_iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v))
                .collect(),
            body: response.body,
        })
    }
}

impl From<HttpError> for BatchError {
    fn from(err: HttpError) -> Self {
        match err {
            HttpError::Denied(why) => {
                BatchError::Fatal(format!("the host refused the request: {why}"))
            }
            HttpError::InvalidUrl(why) => BatchError::InvalidConfig(format!("invalid url: {why}")),
            HttpError::Timeout => {
                BatchError::Unavailable("the destination did not answer in time".into())
            }
            HttpError::Transport(why) => BatchError::Unavailable(why),
            HttpError::TooLarge => {
                BatchError::Fatal("a body was larger than the host allows".into())
            }
        }
    }
}
