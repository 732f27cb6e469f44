//! Online backup and restore of the embedded SQLite store, and the lock a running daemon holds on it.
//!
//! Backup uses `VACUUM INTO`, SQLite's online, transactionally consistent copy: it reads one snapshot while
//! writers carry on (WAL), writes a compact single file with no `-wal` to ship, and needs no second SQLite
//! binding in the build (sqlx exposes no `sqlite3_backup_*` calls, and rusqlite cannot share sqlx's SQLite).
//! Restore checks the backup's integrity and schema version, refuses to replace a store a daemon is using, and
//! refuses to replace an existing store unless forced; the swap is an atomic rename.

use std::fs::{File, OpenOptions as FsOpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, Row, SqliteConnection};

use crate::{Backend, StoreError, StoreResult, StoreUrl, latest_version};

/// An exclusive advisory lock on a SQLite store, held by a running daemon for its lifetime.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
    path: PathBuf,
}

impl StoreLock {
    /// The lock file that guards `db_path`.
    pub fn lock_path(db_path: &Path) -> PathBuf {
        let mut name = db_path.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Takes the lock, or returns `None` when another process holds it.
    pub fn try_acquire(db_path: &Path) -> StoreResult<Option<StoreLock>> {
        let path = Self::lock_path(db_path);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|source| io(format!("cannot create {}", parent.display()), source))?;
        }
        let file = FsOpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| {
                io(
                    format!("cannot open the lock file {}", path.display()),
                    source,
                )
            })?;
        match file.try_lock() {
            Ok(()) => Ok(Some(StoreLock { _file: file, path })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(source)) => {
                Err(io(format!("cannot lock {}", path.display()), source))
            }
        }
    }

    /// Where the lock file is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn io(context: String, source: std::io::Error) -> StoreError {
    StoreError::Io { context, source }
}

fn sqlite_path(url: &StoreUrl, verb: &str) -> StoreResult<PathBuf> {
    match (url.backend(), url.sqlite_path()) {
        (Backend::Sqlite, Some(path)) => Ok(path.to_owned()),
        _ => Err(StoreError::Backup(format!(
            "`store {verb}` works on the embedded SQLite store; for PostgreSQL ({}) use pg_dump / pg_restore",
            url.redacted()
        ))),
    }
}

async fn connect_file(path: &Path, read_only: bool) -> StoreResult<SqliteConnection> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .read_only(read_only)
        .create_if_missing(false);
    SqliteConnection::connect_with(&options)
        .await
        .map_err(|source| StoreError::Connect {
            target: format!("sqlite://{}", path.display()),
            source,
        })
}

/// Checks that `path` is an intact Spindle store this build can open; returns its schema version.
async fn check_store_file(path: &Path) -> StoreResult<i64> {
    let mut conn = connect_file(path, true).await?;
    let verdict: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await?;
    if verdict != "ok" {
        return Err(StoreError::Backup(format!(
            "{} fails SQLite's integrity check: {verdict}",
            path.display()
        )));
    }
    let version = sqlx::query("SELECT MAX(version) AS v FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut conn)
        .await
        .map_err(|_| {
            StoreError::Backup(format!(
                "{} is not a Spindle store (no migration history)",
                path.display()
            ))
        })?
        .try_get::<Option<i64>, _>("v")?
        .unwrap_or(0);
    conn.close().await?;
    if version > latest_version() {
        return Err(StoreError::Backup(format!(
            "{} has schema version {version}, newer than this build's {}; restore it with a newer spindle",
            path.display(),
            latest_version()
        )));
    }
    Ok(version)
}

/// Writes a consistent copy of the live store at `url` to `destination` (which must not exist yet) and
/// checks it. Safe while the daemon runs. Returns the size of the backup in bytes.
pub async fn backup_sqlite(url: &StoreUrl, destination: &Path) -> StoreResult<u64> {
    let source = sqlite_path(url, "backup")?;
    if !source.exists() {
        return Err(StoreError::Backup(format!(
            "there is no store at {} to back up",
            source.display()
        )));
    }
    if destination.exists() {
        return Err(StoreError::Backup(format!(
            "{} already exists; choose a new file name so no earlier backup is overwritten",
            destination.display()
        )));
    }
    let destination_text = destination.to_str().ok_or_else(|| {
        StoreError::Backup(format!("{} is not a UTF-8 path", destination.display()))
    })?;
    let mut conn = connect_file(&source, false).await?;
    sqlx::query("VACUUM INTO $1")
        .bind(destination_text)
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    check_store_file(destination).await?;
    let size = std::fs::metadata(destination)
        .map_err(|source| io(format!("cannot read {}", destination.display()), source))?
        .len();
    Ok(size)
}

/// What `restore_sqlite` may do.
#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreOptions {
    /// Replace an existing store. A store in use by a running daemon is never replaced.
    pub force: bool,
}

/// Replaces the store at `url` with the backup at `backup`. Returns the backup's schema version.
pub async fn restore_sqlite(
    url: &StoreUrl,
    backup: &Path,
    options: RestoreOptions,
) -> StoreResult<i64> {
    let target = sqlite_path(url, "restore")?;
    if !backup.is_file() {
        return Err(StoreError::Backup(format!(
            "backup file {} does not exist",
            backup.display()
        )));
    }
    let version = check_store_file(backup).await?;
    let Some(_lock) = StoreLock::try_acquire(&target)? else {
        return Err(StoreError::Backup(format!(
            "the store {} is in use by a running spindle daemon; stop it before restoring",
            target.display()
        )));
    };
    if target.exists() && !options.force {
        return Err(StoreError::Backup(format!(
            "a store already exists at {}; pass --force to replace it (back it up first with `spindle store backup`)",
            target.display()
        )));
    }
    let mut staging = target.as_os_str().to_owned();
    staging.push(".restoring");
    let staging = PathBuf::from(staging);
    std::fs::copy(backup, &staging).map_err(|source| {
        io(
            format!("cannot copy {} to {}", backup.display(), staging.display()),
            source,
        )
    })?;
    File::open(&staging)
        .and_then(|f| f.sync_all())
        .map_err(|source| io(format!("cannot flush {}", staging.display()), source))?;
    for suffix in ["-wal", "-shm"] {
        let mut side = target.as_os_str().to_owned();
        side.push(suffix);
        match std::fs::remove_file(PathBuf::from(&side)) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(io(
                    format!("cannot remove {}", PathBuf::from(side).display()),
                    source,
                ));
            }
        }
    }
    std::fs::rename(&staging, &target).map_err(|source| {
        io(
            format!("cannot move {} into place", staging.display()),
            source,
        )
    })?;
    Ok(version)
}
