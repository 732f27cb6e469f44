//! Bearer-token authentication and role checks.
//!
//! Contract:
//! - A request carries `Authorization: Bearer <token>`; the token is compared with every configured
//!   `[server] admin_tokens` entry in constant time (SHA-256 digests compared with `subtle`, all entries
//!   always checked), so neither timing nor length tells how close a guess was.
//! - No token, a malformed header or an unknown token is 401 with `WWW-Authenticate: Bearer`; a known token
//!   whose role may not do what the route does is 403.
//! - The token itself is never logged or stored: the audit log and the logs name the token by its `name`.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use secrecy::ExposeSecret;
use serde::Serialize;
use sha2::{Digest, Sha256};
use spindle_model::NewAuditEntry;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use super::AdminState;
use super::error::ApiError;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Segments and syncs (read and write); read profiles and sources.
    Marketer,
    /// Read only, except the audit log.
    Viewer,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Marketer => "marketer",
            Role::Viewer => "viewer",
        }
    }
}

impl From<spindle_config::Role> for Role {
    fn from(role: spindle_config::Role) -> Self {
        match role {
            spindle_config::Role::Admin => Role::Admin,
            spindle_config::Role::Marketer => Role::Marketer,
            spindle_config::Role::Viewer => Role::Viewer,
        }
    }
}

/// What a route does, for the role check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read profiles, timelines, explanations.
    ReadProfiles,
    /// List, read and preview segments.
    ReadSegments,
    /// Create, update and delete segments.
    WriteSegments,
    /// List syncs, their runs and dead letters.
    ReadSyncs,
    /// Run a sync now, dry-run it, replay its dead letters.
    OperateSyncs,
    /// List sources and their status.
    ReadSources,
    /// Run a source now.
    RunSources,
    /// Read the audit log.
    ReadAudit,
}

impl Access {
    /// Whether `role` may do this.
    pub fn allows(self, role: Role) -> bool {
        match role {
            Role::Admin => true,
            Role::Marketer => !matches!(self, Access::RunSources | Access::ReadAudit),
            Role::Viewer => matches!(
                self,
                Access::ReadProfiles
                    | Access::ReadSegments
                    | Access::ReadSyncs
                    | Access::ReadSources
            ),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Access::ReadProfiles => "read profiles",
            Access::ReadSegments => "read segments",
            Access::WriteSegments => "change segments",
            Access::ReadSyncs => "read syncs",
            Access::OperateSyncs => "run syncs",
            Access::ReadSources => "read sources",
            Access::RunSources => "run sources",
            Access::ReadAudit => "read the audit log",
        }
    }
}

/// A configured token, kept as the digest of its secret.
#[derive(Clone)]
pub(crate) struct TokenEntry {
    name: String,
    role: Role,
    digest: [u8; 32],
}

impl std::fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEntry")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("digest", &"[REDACTED]")
            .finish()
    }
}

fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// The tokens of `[server] admin_tokens`.
pub(crate) fn tokens(config: &spindle_config::ServerConfig) -> Vec<TokenEntry> {
    config
        .admin_tokens
        .iter()
        .map(|t| TokenEntry {
            name: t.name.clone(),
            role: t.role.into(),
            digest: digest(t.token.expose_secret().as_bytes()),
        })
        .collect()
}

/// Who is calling: the matched token's name and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: Role,
}

impl Caller {
    /// Refuses (403) when the caller's role may not do `access`.
    pub fn require(&self, access: Access) -> Result<(), ApiError> {
        if access.allows(self.role) {
            return Ok(());
        }
        tracing::info!(token = %self.name, role = self.role.as_str(), access = access.describe(), "admin API: role refused");
        Err(ApiError::Forbidden(format!(
            "token `{}` has role `{}`, which may not {}",
            self.name,
            self.role.as_str(),
            access.describe()
        )))
    }

    /// The audit-log actor: `api:<token name>`.
    pub fn actor(&self) -> String {
        format!("api:{}", self.name)
    }

    /// An audit-log entry for something this caller did.
    pub fn audit(&self, action: &str, target: &str, details: serde_json::Value) -> NewAuditEntry {
        NewAuditEntry {
            actor: self.actor(),
            action: action.to_owned(),
            target: target.to_owned(),
            details,
        }
    }
}

/// Finds the token among `entries` in constant time.
fn authenticate(entries: &[TokenEntry], presented: &str) -> Option<Caller> {
    let presented = digest(presented.as_bytes());
    let mut found: Option<&TokenEntry> = None;
    for entry in entries {
        // Every entry is compared; the choice does not branch on secret data until all are done.
        let equal = bool::from(entry.digest.ct_eq(&presented));
        if equal && found.is_none() {
            found = Some(entry);
        }
    }
    found.map(|entry| Caller {
        name: entry.name.clone(),
        role: entry.role,
    })
}

impl FromRequestParts<AdminState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AdminState,
    ) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::Unauthorized(
                "missing bearer token: send `Authorization: Bearer <token>` with a token from [server] admin_tokens"
                    .into(),
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "malformed Authorization header: expected `Bearer <token>`".into(),
                )
            })?;
        match authenticate(state.tokens(), token) {
            Some(caller) => Ok(caller),
            None => {
                tracing::info!("admin API: unknown bearer token refused");
                Err(ApiError::Unauthorized(
                    "unknown bearer token: it matches no entry of [server] admin_tokens".into(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_what_the_contract_says() {
        use Access::*;
        let all = [
            ReadProfiles,
            ReadSegments,
            WriteSegments,
            ReadSyncs,
            OperateSyncs,
            ReadSources,
            RunSources,
            ReadAudit,
        ];
        assert!(all.iter().all(|a| a.allows(Role::Admin)));
        let marketer: Vec<Access> = all
            .iter()
            .copied()
            .filter(|a| a.allows(Role::Marketer))
            .collect();
        assert_eq!(
            marketer,
            [
                ReadProfiles,
                ReadSegments,
                WriteSegments,
                ReadSyncs,
                OperateSyncs,
                ReadSources
            ]
        );
        let viewer: Vec<Access> = all
            .iter()
            .copied()
            .filter(|a| a.allows(Role::Viewer))
            .collect();
        assert_eq!(viewer, [ReadProfiles, ReadSegments, ReadSyncs, ReadSources]);
    }

    #[test]
    fn tokens_match_exactly() {
        let entries = vec![
            TokenEntry {
                name: "a".into(),
                role: Role::Admin,
                digest: digest(b"secret-a"),
            },
            TokenEntry {
                name: "v".into(),
                role: Role::Viewer,
                digest: digest(b"secret-v"),
            },
        ];
        assert_eq!(
            authenticate(&entries, "secret-v").map(|c| c.name),
            Some("v".into())
        );
        assert!(authenticate(&entries, "secret-").is_none());
        assert!(authenticate(&entries, "secret-aa").is_none());
        assert!(authenticate(&[], "secret-a").is_none());
    }

    #[test]
    fn debug_output_hides_the_digest() {
        let entry = TokenEntry {
            name: "a".into(),
            role: Role::Admin,
            digest: digest(b"secret-a"),
        };
        let shown = format!("{entry:?}");
        assert!(shown.contains("[REDACTED]"));
        assert!(!shown.contains(&format!("{:?}", digest(b"secret-a"))));
    }
}
