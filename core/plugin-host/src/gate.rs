//! The HTTP capability gate: what a plugin's request may do, and what it may see of the answer.
//!
//! - The URL is checked after secrets are filled in: scheme `https` (or `http` when the allowed entry names
//!   it), the host and port among the destination's `allow_hosts`, no user info. Loopback, private,
//!   link-local and unspecified IP literals are refused unless an entry names that address explicitly.
//! - Secret references are replaced in the URL and header values: `{{secret:NAME}}` (the value),
//!   `{{basic:USER:NAME}}` (base64 of `USER:value`, for HTTP Basic auth) and `{{hmac-sha256:NAME}}` (hex
//!   HMAC-SHA256 of the request body keyed with the value, for signed webhooks). A reference to a secret
//!   the destination does not have is refused.
//! - Redirects are never followed; bodies are capped; every secret value used (and its encoded forms) is
//!   replaced by `[REDACTED]` in the response before the plugin sees it, so an echoing server cannot hand
//!   a credential back.

use std::collections::BTreeMap;
use std::net::IpAddr;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use spindle_config::AllowedHost;

/// Largest request or response body a plugin may send or receive.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// Why a request was refused before it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateError {
    /// Not allowed; says why.
    Denied(String),
    /// The URL does not parse.
    InvalidUrl(String),
    /// The body is too large.
    TooLarge,
}

/// What the gate lets out, and the secret values it must take out of the answer.
#[derive(Debug)]
pub struct Checked {
    /// The URL to send to.
    pub url: url::Url,
    /// Headers with secrets filled in.
    pub headers: Vec<(String, String)>,
    /// Secret values (and encodings) used, to redact from the response.
    pub used: Vec<String>,
}

/// The rules of one destination.
#[derive(Debug, Clone)]
pub struct Gate {
    allow: Vec<AllowedHost>,
    secrets: BTreeMap<String, SecretString>,
}

fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (64..128).contains(&v4.octets()[1]) // carrier-grade NAT
        }
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link local
                || v6.to_ipv4_mapped().is_some_and(|v4| is_internal(IpAddr::V4(v4)))
        }
    }
}

impl Gate {
    /// The gate of a destination with these allowed hosts and secrets.
    pub fn new(allow: Vec<AllowedHost>, secrets: BTreeMap<String, SecretString>) -> Self {
        Self { allow, secrets }
    }

    fn fill(
        &self,
        template: &str,
        body: &[u8],
        used: &mut Vec<String>,
    ) -> Result<String, GateError> {
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| GateError::Denied("unterminated `{{` reference".into()))?;
            let reference = &after[..end];
            let secret = |name: &str| {
                self.secrets.get(name).ok_or_else(|| {
                    GateError::Denied(format!(
                        "this destination has no secret `{name}` (add it to its `secrets`)"
                    ))
                })
            };
            let value = if let Some(name) = reference.strip_prefix("secret:") {
                let value = secret(name)?.expose_secret().to_owned();
                used.push(value.clone());
                value
            } else if let Some(spec) = reference.strip_prefix("basic:") {
                let (user, name) = spec
                    .rsplit_once(':')
                    .ok_or_else(|| GateError::Denied("write `{{basic:USER:SECRET}}`".into()))?;
                let value = secret(name)?.expose_secret().to_owned();
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{value}"));
                used.push(value);
                used.push(encoded.clone());
                encoded
            } else if let Some(name) = reference.strip_prefix("hmac-sha256:") {
                let key = secret(name)?.expose_secret().to_owned();
                let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
                    .map_err(|_| GateError::Denied("unusable signing key".into()))?;
                mac.update(body);
                used.push(key);
                hex::encode(mac.finalize().into_bytes())
            } else {
                return Err(GateError::Denied(format!(
                    "unknown reference `{{{{{reference}}}}}`"
                )));
            };
            out.push_str(&value);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Checks a request and fills in its secrets.
    pub fn check(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Checked, GateError> {
        if body.len() > MAX_BODY {
            return Err(GateError::TooLarge);
        }
        let mut used = Vec::new();
        let filled = self.fill(url, body, &mut used)?;
        let parsed =
            url::Url::parse(&filled).map_err(|err| GateError::InvalidUrl(err.to_string()))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(GateError::Denied(
                "URLs with user info are not allowed".into(),
            ));
        }
        let scheme = parsed.scheme();
        if !matches!(scheme, "http" | "https") {
            return Err(GateError::Denied(format!(
                "scheme `{scheme}` is not allowed"
            )));
        }
        let host = parsed
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = parsed.port_or_known_default();
        let allowed = self.allow.iter().any(|entry| {
            let scheme_ok = match &entry.scheme {
                Some(s) => s == scheme,
                None => scheme == "https",
            };
            let entry_host = entry.host.trim_start_matches('[').trim_end_matches(']');
            let port_ok = match entry.port {
                Some(p) => Some(p) == port,
                None => port == Some(if scheme == "https" { 443 } else { 80 }),
            };
            scheme_ok && port_ok && entry_host == host
        });
        if !allowed {
            let shown = parsed.origin().ascii_serialization();
            return Err(GateError::Denied(format!(
                "{shown} is not in this destination's allow_hosts"
            )));
        }
        // An internal address literal passes only when an entry names that very address (checked above); a
        // name is resolved by the host's HTTP client, which refuses internal addresses for names.
        let headers = headers
            .iter()
            .map(|(name, value)| Ok((name.clone(), self.fill(value, body, &mut used)?)))
            .collect::<Result<Vec<_>, GateError>>()?;
        used.retain(|v| !v.is_empty());
        Ok(Checked {
            url: parsed,
            headers,
            used,
        })
    }
}

/// Whether an address may be reached when it came from resolving a host name.
pub fn resolved_address_allowed(ip: IpAddr) -> bool {
    !is_internal(ip)
}

/// Replaces every secret value used in a request by `[REDACTED]` in a response body or header.
pub fn redact(text: &[u8], used: &[String]) -> Vec<u8> {
    let mut out = text.to_vec();
    for secret in used {
        let needle = secret.as_bytes();
        if needle.is_empty() {
            continue;
        }
        let mut result = Vec::with_capacity(out.len());
        let mut i = 0;
        while i < out.len() {
            if out[i..].starts_with(needle) {
                result.extend_from_slice(b"[REDACTED]");
                i += needle.len();
            } else {
                result.push(out[i]);
                i += 1;
            }
        }
        out = result;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> Gate {
        let allow = vec![
            AllowedHost {
                scheme: None,
                host: "api.example.com".into(),
                port: None,
            },
            AllowedHost {
                scheme: Some("http".into()),
                host: "127.0.0.1".into(),
                port: Some(9000),
            },
        ];
        let secrets = BTreeMap::from([("api_key".to_owned(), SecretString::from("k3y"))]);
        Gate::new(allow, secrets)
    }

    #[test]
    fn only_allowed_origins_pass() {
        let g = gate();
        assert!(g.check("https://api.example.com/v1", &[], b"").is_ok());
        assert!(g.check("http://127.0.0.1:9000/x", &[], b"").is_ok());
        for refused in [
            "http://api.example.com/v1",
            "https://api.example.com:8443/v1",
            "https://evil.example.com/",
            "http://127.0.0.1:9001/",
            "https://user:pw@api.example.com/",
            "ftp://api.example.com/",
            "https://10.0.0.1/",
        ] {
            assert!(
                matches!(g.check(refused, &[], b""), Err(GateError::Denied(_))),
                "{refused} passed"
            );
        }
        assert!(matches!(
            g.check("not a url", &[], b""),
            Err(GateError::InvalidUrl(_))
        ));
    }

    #[test]
    fn secrets_are_filled_in_and_redacted() {
        let g = gate();
        let checked = g
            .check(
                "https://api.example.com/{{secret:api_key}}/x",
                &[
                    (
                        "authorization".into(),
                        "Basic {{basic:anystring:api_key}}".into(),
                    ),
                    ("x-sig".into(), "{{hmac-sha256:api_key}}".into()),
                ],
                b"body",
            )
            .unwrap();
        assert_eq!(checked.url.path(), "/k3y/x");
        assert_eq!(checked.headers[0].1, "Basic YW55c3RyaW5nOmszeQ==");
        assert_eq!(checked.headers[1].1.len(), 64);
        let echoed = redact(b"you sent k3y and YW55c3RyaW5nOmszeQ==", &checked.used);
        assert_eq!(
            String::from_utf8(echoed).unwrap(),
            "you sent [REDACTED] and [REDACTED]"
        );
        assert!(
            matches!(g.check("https://api.example.com/{{secret:other}}", &[], b""), Err(GateError::Denied(m)) if m.contains("no secret `other`"))
        );
        // A secret cannot steer the request to another host.
        let steering = Gate::new(
            vec![AllowedHost {
                scheme: None,
                host: "api.example.com".into(),
                port: None,
            }],
            BTreeMap::from([("h".to_owned(), SecretString::from("evil.example.com"))]),
        );
        assert!(matches!(
            steering.check("https://{{secret:h}}/", &[], b""),
            Err(GateError::Denied(_))
        ));
    }

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.4",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "100.64.0.1",
        ] {
            assert!(!resolved_address_allowed(ip.parse().unwrap()), "{ip}");
        }
        assert!(resolved_address_allowed("93.184.216.34".parse().unwrap()));
    }
}
