//! Credentials for HTTP connectors: a static header, or OAuth access tokens refreshed before they expire.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderName, HeaderValue};
use spindle_config::secret::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

use super::HttpError;

/// An OAuth refresh-token grant (RFC 6749 §6), form-encoded as HubSpot and most vendors expect.
#[derive(Debug)]
pub struct OAuthRefresh {
    /// Token endpoint.
    pub token_url: url::Url,
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: SecretString,
    /// Refresh token.
    pub refresh_token: SecretString,
}

#[derive(Debug)]
struct AccessToken {
    value: SecretString,
    refresh_at: Instant,
}

/// How requests are authenticated.
#[derive(Debug)]
pub enum Auth {
    /// No credentials.
    None,
    /// A fixed header, e.g. `Authorization: Bearer …` or `X-Shopify-Access-Token: …`.
    Header {
        /// Header name.
        name: HeaderName,
        /// Value, without any scheme prefix other than the one given in `prefix`.
        value: SecretString,
        /// Text before the value, e.g. `Bearer `.
        prefix: &'static str,
    },
    /// `Authorization: Bearer <access token>`, the token obtained and renewed from a refresh token.
    OAuth(OAuthState),
}

/// A refresh-token grant and the access token it last gave.
#[derive(Debug)]
pub struct OAuthState {
    grant: OAuthRefresh,
    current: Mutex<Option<AccessToken>>,
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

fn header_value(text: &str) -> Result<HeaderValue, HttpError> {
    let mut value = HeaderValue::from_str(text)
        .map_err(|_| HttpError::Auth("the credential contains invalid characters".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

impl Auth {
    /// `Authorization: Bearer <token>`.
    pub fn bearer(token: SecretString) -> Self {
        Auth::Header {
            name: reqwest::header::AUTHORIZATION,
            value: token,
            prefix: "Bearer ",
        }
    }

    /// OAuth with a refresh token.
    pub fn oauth(grant: OAuthRefresh) -> Self {
        Auth::OAuth(OAuthState {
            grant,
            current: Mutex::new(None),
        })
    }

    /// Whether a 401 can be answered by getting a new token.
    pub(crate) fn can_refresh(&self) -> bool {
        matches!(self, Auth::OAuth(_))
    }

    /// Forgets the current access token so the next request gets a new one.
    pub(crate) fn invalidate(&self) {
        if let Auth::OAuth(state) = self
            && let Ok(mut slot) = state.current.try_lock()
        {
            *slot = None;
        }
    }

    /// The header to send, refreshing an OAuth token when it is missing or about to expire.
    pub(crate) async fn header(
        &self,
        client: &reqwest::Client,
    ) -> Result<Option<(HeaderName, HeaderValue)>, HttpError> {
        match self {
            Auth::None => Ok(None),
            Auth::Header {
                name,
                value,
                prefix,
            } => Ok(Some((
                name.clone(),
                header_value(&format!("{prefix}{}", value.expose_secret()))?,
            ))),
            Auth::OAuth(OAuthState { grant, current }) => {
                let mut slot = current.lock().await;
                let fresh = slot
                    .as_ref()
                    .is_some_and(|token| Instant::now() < token.refresh_at);
                if !fresh {
                    *slot = Some(refresh(client, grant).await?);
                }
                let token = slot
                    .as_ref()
                    .ok_or_else(|| HttpError::Auth("no access token".into()))?;
                Ok(Some((
                    reqwest::header::AUTHORIZATION,
                    header_value(&format!("Bearer {}", token.value.expose_secret()))?,
                )))
            }
        }
    }
}

async fn refresh(client: &reqwest::Client, grant: &OAuthRefresh) -> Result<AccessToken, HttpError> {
    let form = [
        ("grant_type", "refresh_token"),
        ("client_id", grant.client_id.as_str()),
        ("client_secret", grant.client_secret.expose_secret()),
        ("refresh_token", grant.refresh_token.expose_secret()),
    ];
    let response = client
        .post(grant.token_url.clone())
        .form(&form)
        .send()
        .await
        .map_err(|err| {
            HttpError::Auth(format!(
                "token endpoint unreachable: {}",
                super::redact(&err)
            ))
        })?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|err| HttpError::Auth(super::redact(&err)))?;
    if !status.is_success() {
        return Err(HttpError::Auth(format!(
            "token endpoint answered {}: {}",
            status.as_u16(),
            super::error::vendor_message(&body)
        )));
    }
    let token: TokenResponse = serde_json::from_slice(&body)
        .map_err(|err| HttpError::Auth(format!("unreadable token response: {err}")))?;
    // Renew ahead of expiry: ten minutes early, or half the lifetime for short-lived tokens.
    let lifetime = Duration::from_secs(token.expires_in.unwrap_or(1800));
    let margin = Duration::from_secs(600).min(lifetime / 2);
    tracing::debug!(
        expires_in_s = lifetime.as_secs(),
        "oauth access token obtained"
    );
    Ok(AccessToken {
        value: SecretString::from(token.access_token),
        refresh_at: Instant::now() + lifetime - margin,
    })
}
