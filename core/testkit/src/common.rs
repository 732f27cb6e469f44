//! Plumbing shared by the fake vendors: the HTTP server, the fault queue, the request log and small helpers.
//!
//! Every fake is one axum fallback handler ([`entry`]) in front of a synchronous [`Vendor::handle`]: the request
//! is read whole, injected faults are applied, the vendor answers from its in-memory state (locks are taken and
//! released inside `handle`, never across an `.await`), the request is logged, and only then does a `Slow`
//! fault wait before the answer leaves.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use rand::Rng;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A failure injected into the next API requests of a fake.
///
/// Faults queue up in the order they are injected; the fault at the front applies until its `count` is used up,
/// then the next one takes over. They apply to every API request of the fake (whatever its path, before
/// authentication and rate limiting, which they do not consume), but not to the HubSpot OAuth token endpoint.
#[derive(Debug, Clone)]
pub enum Fault {
    /// The next `count` requests answer 500/502/503 (vendor's error body).
    ///
    /// The statuses cycle 500, 502, 503, 500, … within one fault.
    ServerErrors { count: u32 },
    /// The next `count` requests answer 429 with the vendor's body; `retry_after` = Some(secs) adds `Retry-After`.
    RateLimited {
        count: u32,
        retry_after: Option<f64>,
    },
    /// The next `count` requests are answered only after `delay` (to trigger client timeouts).
    ///
    /// The answer is computed (and logged) when the request arrives and sent after the delay.
    Slow { count: u32, delay: Duration },
    /// The next `count` successful list pages are cut off mid-body (the connection is closed after part of the
    /// JSON), as a proxy failure would do.
    ///
    /// The response announces the full `Content-Length`, sends the first half of the body, then drops the
    /// connection. While this fault is at the front of the queue, requests that are not successful list pages
    /// pass through untouched and do not consume it.
    TruncatedPage { count: u32 },
}

impl Fault {
    fn count(&self) -> u32 {
        match self {
            Fault::ServerErrors { count }
            | Fault::RateLimited { count, .. }
            | Fault::Slow { count, .. }
            | Fault::TruncatedPage { count } => *count,
        }
    }
}

/// One request as a fake received it, with the status it answered.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// The raw (still percent-encoded) query string, if any.
    pub query: Option<String>,
    /// The request body as text, if not empty.
    pub body: Option<String>,
    /// HubSpot: the `Authorization` header. Shopify: the `X-Shopify-Access-Token` header.
    pub authorization: Option<String>,
    /// The status answered (200 for a truncated page: the status line was sent whole).
    pub status: u16,
}

/// Locks a mutex, ignoring poisoning (a panicking test must not cascade into every later request).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// What a fault at the front of the queue does to a request before the vendor sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum PreFault {
    ServerError(StatusCode),
    RateLimited(Option<f64>),
    Slow(Duration),
}

const SERVER_ERROR_CYCLE: [StatusCode; 3] = [
    StatusCode::INTERNAL_SERVER_ERROR,
    StatusCode::BAD_GATEWAY,
    StatusCode::SERVICE_UNAVAILABLE,
];

/// Injected faults, front first; each with how many requests it has already hit.
#[derive(Debug, Default)]
pub(crate) struct FaultQueue {
    queue: Mutex<VecDeque<(Fault, u32)>>,
}

impl FaultQueue {
    pub(crate) fn push(&self, fault: Fault) {
        if fault.count() > 0 {
            lock(&self.queue).push_back((fault, 0));
        }
    }

    /// Consumes one hit of the front fault unless it is a `TruncatedPage`.
    pub(crate) fn take_pre(&self) -> Option<PreFault> {
        let mut queue = lock(&self.queue);
        let (fault, served) = queue.front_mut()?;
        let effect = match fault {
            Fault::ServerErrors { .. } => PreFault::ServerError(
                SERVER_ERROR_CYCLE[(*served as usize) % SERVER_ERROR_CYCLE.len()],
            ),
            Fault::RateLimited { retry_after, .. } => PreFault::RateLimited(*retry_after),
            Fault::Slow { delay, .. } => PreFault::Slow(*delay),
            Fault::TruncatedPage { .. } => return None,
        };
        *served += 1;
        if *served >= fault.count() {
            queue.pop_front();
        }
        Some(effect)
    }

    /// Consumes one hit of the front fault if it is a `TruncatedPage`.
    pub(crate) fn take_truncation(&self) -> bool {
        let mut queue = lock(&self.queue);
        let Some((fault, served)) = queue.front_mut() else {
            return false;
        };
        if !matches!(fault, Fault::TruncatedPage { .. }) {
            return false;
        }
        *served += 1;
        if *served >= fault.count() {
            queue.pop_front();
        }
        true
    }
}

/// Every request received, in arrival order.
#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    entries: Mutex<Vec<RecordedRequest>>,
}

impl RequestLog {
    pub(crate) fn push(&self, entry: RecordedRequest) {
        lock(&self.entries).push(entry);
    }

    pub(crate) fn all(&self) -> Vec<RecordedRequest> {
        lock(&self.entries).clone()
    }
}

/// A request read whole.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Incoming {
    /// Decoded query pairs, in order (`+` is a space, as in any form encoding).
    pub(crate) fn query_pairs(&self) -> Vec<(String, String)> {
        self.query.as_deref().map(parse_form).unwrap_or_default()
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// Decodes `application/x-www-form-urlencoded` text.
pub(crate) fn parse_form(text: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(text.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A vendor's answer before it becomes an HTTP response.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, String)>,
    pub body: Vec<u8>,
    /// A list page that a `TruncatedPage` fault may cut.
    pub list_page: bool,
}

impl Reply {
    pub(crate) fn json(
        status: StatusCode,
        content_type: &'static str,
        value: &serde_json::Value,
    ) -> Self {
        // Serialising a `Value` cannot fail (its map keys are strings).
        let body = serde_json::to_vec(value).unwrap_or_default();
        Self {
            status,
            headers: vec![(header::CONTENT_TYPE, content_type.to_owned())],
            body,
            list_page: false,
        }
    }

    pub(crate) fn raw(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: vec![(header::CONTENT_TYPE, content_type.to_owned())],
            body,
            list_page: false,
        }
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers
            .push((HeaderName::from_static(name), value.into()));
        self
    }

    pub(crate) fn headers(
        mut self,
        headers: impl IntoIterator<Item = (HeaderName, String)>,
    ) -> Self {
        self.headers.extend(headers);
        self
    }

    pub(crate) fn list_page(mut self) -> Self {
        self.list_page = true;
        self
    }

    fn into_response(self, truncate: bool) -> Response {
        let full_len = self.body.len();
        let body = if truncate {
            let half = Bytes::from(self.body).slice(..full_len / 2);
            // Yield half the body, give the server a moment to flush it, then fail the stream: hyper then
            // closes the connection short of the announced Content-Length.
            let stream = futures::stream::unfold(0u8, move |step| {
                let half = half.clone();
                async move {
                    match step {
                        0 => Some((Ok::<Bytes, std::io::Error>(half), 1)),
                        1 => {
                            tokio::time::sleep(Duration::from_millis(30)).await;
                            Some((
                                Err(std::io::Error::new(
                                    std::io::ErrorKind::ConnectionAborted,
                                    "testkit: page truncated on purpose",
                                )),
                                2,
                            ))
                        }
                        _ => None,
                    }
                }
            });
            Body::from_stream(stream)
        } else {
            Body::from(self.body)
        };
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.append(name, value);
            }
        }
        if truncate {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(full_len));
        }
        response
    }
}

/// What the shared handler needs from a fake vendor.
pub(crate) trait Vendor: Send + Sync + 'static {
    fn faults(&self) -> &FaultQueue;
    fn log(&self) -> &RequestLog;
    /// Requests faults never touch (HubSpot's OAuth token endpoint).
    fn fault_exempt(&self, request: &Incoming) -> bool;
    /// The credential to record for a request.
    fn credential(&self, request: &Incoming) -> Option<String>;
    /// The vendor's answer to an injected 5xx.
    fn injected_server_error(&self, status: StatusCode) -> Reply;
    /// The vendor's answer to an injected 429.
    fn injected_rate_limit(&self, retry_after: Option<f64>) -> Reply;
    /// The real answer.
    fn handle(&self, request: &Incoming) -> Reply;
}

const MAX_BODY: usize = 16 << 20;

async fn entry<V: Vendor>(State(vendor): State<Arc<V>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(_) => {
            let mut response = Response::new(Body::from("request body unreadable or too large"));
            *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
            return response;
        }
    };
    let incoming = Incoming {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
    };
    let exempt = vendor.fault_exempt(&incoming);
    let pre = if exempt {
        None
    } else {
        vendor.faults().take_pre()
    };
    let mut delay = None;
    let reply = match pre {
        Some(PreFault::ServerError(status)) => vendor.injected_server_error(status),
        Some(PreFault::RateLimited(retry_after)) => vendor.injected_rate_limit(retry_after),
        Some(PreFault::Slow(wait)) => {
            delay = Some(wait);
            vendor.handle(&incoming)
        }
        None => vendor.handle(&incoming),
    };
    let truncate = !exempt
        && reply.list_page
        && reply.status == StatusCode::OK
        && vendor.faults().take_truncation();
    vendor.log().push(RecordedRequest {
        method: incoming.method.to_string(),
        path: incoming.path.clone(),
        query: incoming.query.clone(),
        body: (!incoming.body.is_empty())
            .then(|| String::from_utf8_lossy(&incoming.body).into_owned()),
        authorization: vendor.credential(&incoming),
        status: reply.status.as_u16(),
    });
    tracing::debug!(method = %incoming.method, path = %incoming.path, status = reply.status.as_u16(), truncate, "testkit fake answered");
    if let Some(wait) = delay {
        tokio::time::sleep(wait).await;
    }
    reply.into_response(truncate)
}

/// A running fake server; stops accepting (and closes idle connections) when dropped.
#[derive(Debug)]
pub(crate) struct Server {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Server {
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // The server task may already be gone (runtime shut down); nothing to do then.
            let _ = shutdown.send(());
        }
    }
}

/// Binds 127.0.0.1 on a free port.
pub(crate) async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("testkit: cannot bind 127.0.0.1:0");
    let addr = listener
        .local_addr()
        .expect("testkit: bound socket has no local address");
    (listener, addr)
}

/// Serves `vendor` on `listener` until the returned [`Server`] is dropped.
pub(crate) fn serve<V: Vendor>(listener: TcpListener, addr: SocketAddr, vendor: Arc<V>) -> Server {
    let router = Router::new().fallback(entry::<V>).with_state(vendor);
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
        if let Err(err) = served {
            tracing::warn!(%err, "testkit fake server stopped with an error");
        }
    });
    Server {
        addr,
        shutdown: Some(tx),
    }
}

/// A random UUID v4 string (correlation and request ids).
pub(crate) fn uuid() -> String {
    let mut bytes: [u8; 16] = rand::rng().random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Random characters from `[A-Za-z0-9]`.
pub(crate) fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// `Retry-After` seconds as text; `decimal` keeps a fraction on whole numbers (`2.0`, as Shopify writes it).
pub(crate) fn retry_after_text(seconds: f64, decimal: bool) -> String {
    if seconds.fract() == 0.0 && decimal {
        format!("{seconds:.1}")
    } else {
        format!("{seconds}")
    }
}

/// Formats cents as a decimal string with two places (`12345` → `"123.45"`).
pub(crate) fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    format!("{sign}{}.{:02}", cents / 100, cents % 100)
}
