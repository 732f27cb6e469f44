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
    (
        7,
        "identity_rows_without_rowid",
        include_str!("../migrations/sqlite/0007_identity_rows_without_rowid.sql"),
        include_str!("../migrations/postgres/0007_identity_rows_without_rowid.sql"),
    ),
    (
        8,
        "identity_normalizer",
        include_str!("../migrations/sqlite/0008_identity_normalizer.sql"),
        include_str!("../migrations/postgres/0008_identity_normalizer.sql"),
    ),
    (
        9,
        "profiles_by_creation",
        include_str!("../migrations/sqlite/0009_profiles_by_creation.sql"),
        include_str!("../migrations/postgres/0009_profiles_by_creation.sql"),
    ),
    (
        10,
        "profiles_hold_their_rows",
        include_str!("../migrations/sqlite/0010_profiles_hold_their_rows.sql"),
        include_str!("../migrations/postgres/0010_profiles_hold_their_rows.sql"),
    ),
    (
        11,
        "profile_fingerprints",
        include_str!("../migrations/sqlite/0011_profile_fingerprints.sql"),
        include_str!("../migrations/postgres/0011_profile_fingerprints.sql"),
    ),
    (
        12,
        "identity_rules",
        include_str!("../migrations/sqlite/0012_identity_rules.sql"),
        include_str!("../migrations/postgres/0012_identity_rules.sql"),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A SQLite store in a fresh folder (kept while the folder lives), migrated up to `version`.
    async fn sqlite_store_at(version: i64) -> (tempfile::TempDir, AnyPool) {
        sqlx::any::install_default_drivers();
        let folder = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            folder.path().join("store.db").display()
        );
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        let mut before = migrator(Backend::Sqlite);
        before.migrations.to_mut().retain(|m| m.version <= version);
        before.run(&pool).await.unwrap();
        (folder, pool)
    }

    /// A store at schema 6 with identity rows keeps them through migration 7, which rebuilds their tables
    /// without rowids.
    #[tokio::test]
    async fn identity_rows_survive_the_move_to_tables_without_rowid() {
        let (_folder, pool) = sqlite_store_at(6).await;
        for statement in [
            "INSERT INTO profile_members VALUES ('crm', 'contacts', '1', 7), ('shop', 'orders', '9', 7)",
            "INSERT INTO profile_identifiers VALUES ('email', 'a@x.io', 7), ('phone', '+33612345678', 7)",
        ] {
            sqlx::query(statement).execute(&pool).await.unwrap();
        }

        let mut through_nine = migrator(Backend::Sqlite);
        through_nine.migrations.to_mut().retain(|m| m.version <= 9);
        through_nine.run(&pool).await.unwrap();

        let members: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT source, stream, external_id, profile_id FROM profile_members ORDER BY source",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(
            members,
            vec![
                ("crm".into(), "contacts".into(), "1".into(), 7),
                ("shop".into(), "orders".into(), "9".into(), 7)
            ]
        );
        let identifiers: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT id_type, id_value, profile_id FROM profile_identifiers WHERE profile_id = 7 \
             ORDER BY id_type",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(
            identifiers,
            vec![
                ("email".into(), "a@x.io".into(), 7),
                ("phone".into(), "+33612345678".into(), 7)
            ]
        );
        for table in ["profile_members", "profile_identifiers"] {
            let sql: String = sqlx::query_scalar(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = $1",
            )
            .bind(table)
            .fetch_one(&pool)
            .await
            .unwrap();
            assert!(sql.ends_with("WITHOUT ROWID"), "{table}: {sql}");
            let indexes: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = $1 \
                 AND name LIKE '%_by_profile'",
            )
            .bind(table)
            .fetch_one(&pool)
            .await
            .unwrap();
            assert_eq!(indexes, 1, "{table} keeps its index by profile");
        }
    }

    /// A PostgreSQL store in a schema of its own, migrated up to `version`: the schema's name and a pool
    /// whose connection works in it. `None` when PostgreSQL is left out
    /// (`spindle_testkit::store::postgres_url`).
    async fn postgres_store_at(version: i64) -> Option<(String, AnyPool)> {
        let url = spindle_testkit::store::postgres_url()?;
        sqlx::any::install_default_drivers();
        let schema = spindle_testkit::store::fresh_schema_name();
        let search_path = format!("SET search_path TO {schema}");
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .after_connect(move |conn, _| {
                let search_path = search_path.clone();
                Box::pin(async move {
                    sqlx::Executor::execute(conn, AssertSqlSafe(search_path)).await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .unwrap();
        sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&pool)
            .await
            .unwrap();
        let mut before = migrator(Backend::Postgres);
        before.migrations.to_mut().retain(|m| m.version <= version);
        before.run(&pool).await.unwrap();
        Some((schema, pool))
    }

    /// A store at schema 9 gets each profile's list of held rows from its rows through migration 10,
    /// which drops rows of profiles that do not exist, then the indexes by profile.
    async fn profiles_list_the_rows_they_held_after_migration_10(pool: &AnyPool, backend: Backend) {
        for statement in [
            "INSERT INTO profiles (id, document, search_text, record_count, created_at, updated_at) \
             VALUES (7, '{}', '', 2, 0, 0), (8, '{}', '', 0, 0, 0)",
            "INSERT INTO profile_members VALUES ('shop', 'orders', '9', 7), ('crm', 'contacts', '1', 7), \
             ('crm', 'contacts', '5', 9)",
            "INSERT INTO profile_identifiers VALUES ('phone', '+33612345678', 7), ('email', 'a@x.io', 7), \
             ('email', 'gone@x.io', 9)",
        ] {
            sqlx::query(statement).execute(pool).await.unwrap();
        }

        migrator(backend).run(pool).await.unwrap();

        let orphans: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM profile_members WHERE profile_id = 9) \
             + (SELECT COUNT(*) FROM profile_identifiers WHERE profile_id = 9)",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(orphans, 0, "rows of a profile that does not exist are gone");
        let held: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, held_rows FROM profiles ORDER BY id")
                .fetch_all(pool)
                .await
                .unwrap();
        let held: Vec<(i64, serde_json::Value)> = held
            .into_iter()
            .map(|(id, text)| (id, serde_json::from_str(&text).unwrap()))
            .collect();
        assert_eq!(
            held,
            vec![
                (
                    7,
                    serde_json::json!({
                        "members": [["crm", "contacts", "1"], ["shop", "orders", "9"]],
                        "identifiers": [["email", "a@x.io"], ["phone", "+33612345678"]],
                    })
                ),
                (8, serde_json::json!({"members": [], "identifiers": []})),
            ]
        );
        let indexes: i64 = match backend {
            Backend::Sqlite => sqlx::query_scalar(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' \
                 AND tbl_name IN ('profile_members', 'profile_identifiers')",
            ),
            Backend::Postgres => sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_indexes WHERE schemaname = current_schema() \
                 AND tablename IN ('profile_members', 'profile_identifiers') \
                 AND indexname LIKE '%_by_profile'",
            ),
        }
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(indexes, 0, "the indexes by profile are gone");
    }

    #[tokio::test]
    async fn sqlite_profiles_list_the_rows_they_held_after_migration_10() {
        let (_folder, pool) = sqlite_store_at(9).await;
        profiles_list_the_rows_they_held_after_migration_10(&pool, Backend::Sqlite).await;
    }

    #[tokio::test]
    async fn postgres_profiles_list_the_rows_they_held_after_migration_10() {
        let Some((schema, pool)) = postgres_store_at(9).await else {
            return;
        };
        profiles_list_the_rows_they_held_after_migration_10(&pool, Backend::Postgres).await;
        sqlx::query(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&pool)
            .await
            .unwrap();
    }
}
