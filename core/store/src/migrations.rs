//! Versioned schema migrations, embedded in the binary and run when a store opens.
//!
//! Each backend has its own DDL under `migrations/<backend>/`; versions must match one to one. sqlx's
//! migrator records applied versions with checksums (so an edited released migration is detected) and, on
//! PostgreSQL, holds an advisory lock so several daemons starting together migrate once.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, AssertSqlSafe, SqlSafeStr};

use crate::{Backend, StoreError, StoreResult, StoreUrl};

/// `(version, description, sqlite DDL, postgres DDL)`, in order. Append only.
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    (
        1,
        "foundation",
        include_str!("../migrations/sqlite/0001_foundation.sql"),
        include_str!("../migrations/postgres/0001_foundation.sql"),
    ),
    (
        2,
        "profiles",
        include_str!("../migrations/sqlite/0002_profiles.sql"),
        include_str!("../migrations/postgres/0002_profiles.sql"),
    ),
    (
        3,
        "segments_and_syncs",
        include_str!("../migrations/sqlite/0003_segments_and_syncs.sql"),
        include_str!("../migrations/postgres/0003_segments_and_syncs.sql"),
    ),
    (
        4,
        "admin",
        include_str!("../migrations/sqlite/0004_admin.sql"),
        include_str!("../migrations/postgres/0004_admin.sql"),
    ),
    (
        5,
        "sync_versions",
        include_str!("../migrations/sqlite/0005_sync_versions.sql"),
        include_str!("../migrations/postgres/0005_sync_versions.sql"),
    ),
    (
        6,
        "profile_changes",
        include_str!("../migrations/sqlite/0006_profile_changes.sql"),
        include_str!("../migrations/postgres/0006_profile_changes.sql"),
    ),
];

/// The newest schema version this build knows.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

pub(crate) fn migrator(backend: Backend) -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|&(version, description, sqlite, postgres)| {
                let sql = match backend {
                    Backend::Sqlite => sqlite,
                    Backend::Postgres => postgres,
                };
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    AssertSqlSafe(sql).into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

pub(crate) async fn run(pool: &AnyPool, url: &StoreUrl) -> StoreResult<()> {
    migrator(url.backend())
        .run(pool)
        .await
        .map_err(|source| StoreError::Migrate {
            target: url.redacted().to_owned(),
            source,
        })
}
