//! Opening a table as it was: by version or by time, with errors that say what exists.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use deltalake::kernel::Action;
use deltalake::logstore::object_store::ObjectStore as _;
use deltalake::{DeltaTable, DeltaTableError};
use futures::TryStreamExt as _;

use super::QueryError;
use crate::sink::commit_actions;
use crate::storage::Storage;

/// Which version of a table to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    Latest,
    Version(u64),
    /// The last version committed at or before this time.
    Time(DateTime<Utc>),
}

/// Table `name` as of `at`.
pub async fn open_at(storage: &Storage, name: &str, at: At) -> Result<DeltaTable, QueryError> {
    let mut table = storage.open(name).await?;
    let latest = table.version().unwrap_or(0);
    let version = match at {
        At::Latest => return Ok(table),
        At::Version(v) if v > latest => {
            return Err(QueryError::NoSuchVersion {
                table: name.to_string(),
                version: v,
                latest,
            })
        }
        At::Version(v) => v,
        At::Time(t) => version_at(&table, name, t, latest).await?,
    };
    if version == latest {
        return Ok(table);
    }
    if let Err(e) = table.load_version(version).await {
        let oldest = oldest_version(&table).await.unwrap_or(0);
        if version < oldest {
            return Err(QueryError::LogCleaned {
                table: name.to_string(),
                version,
                oldest,
            });
        }
        return Err(QueryError::delta(name, e));
    }
    check_files_present(&table, name, version).await?;
    Ok(table)
}

/// When `version` was committed: the commit's own timestamp (what `history` shows), in
/// milliseconds; None when its log entry is gone.
pub(super) async fn commit_time(
    table: &DeltaTable,
    version: u64,
) -> Result<Option<i64>, DeltaTableError> {
    let actions = commit_actions(table, version).await?.unwrap_or_default();
    Ok(actions.into_iter().find_map(|a| match a {
        Action::CommitInfo(info) => info.timestamp,
        _ => None,
    }))
}

/// The last version committed at or before `t` (binary search over commit times, which
/// a single writer's clock keeps ascending).
async fn version_at(
    table: &DeltaTable,
    name: &str,
    t: DateTime<Utc>,
    latest: u64,
) -> Result<u64, QueryError> {
    let err = |e| QueryError::delta(name, e);
    let target = t.timestamp_millis();
    let oldest = oldest_version(table).await.map_err(err)?;
    let first = commit_time(table, oldest).await.map_err(err)?.unwrap_or(0);
    if target < first {
        return Err(QueryError::TooEarly {
            table: name.to_string(),
            at: t,
            version: oldest,
            created: DateTime::from_timestamp_millis(first).unwrap_or_default(),
        });
    }
    let (mut lo, mut hi) = (oldest, latest);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        match commit_time(table, mid).await.map_err(err)? {
            Some(ts) if ts <= target => lo = mid,
            _ => hi = mid - 1,
        }
    }
    Ok(lo)
}

/// The oldest version whose log entry still exists (older ones were cleaned up behind a
/// checkpoint).
pub(super) async fn oldest_version(table: &DeltaTable) -> Result<u64, DeltaTableError> {
    let log_store = table.log_store();
    let store = log_store.object_store(None);
    let entries: Vec<_> = store.list(Some(log_store.log_path())).try_collect().await?;
    Ok(entries
        .iter()
        .filter_map(|m| {
            let file = m.location.filename()?;
            file.strip_suffix(".json")?.parse::<u64>().ok()
        })
        .min()
        .unwrap_or(0))
}

/// An old version's data files may have been vacuumed: say so instead of failing in the
/// middle of a scan. One listing of the table, not one request per file.
async fn check_files_present(
    table: &DeltaTable,
    name: &str,
    version: u64,
) -> Result<(), QueryError> {
    let err = |e: DeltaTableError| QueryError::delta(name, e);
    let store = table.object_store();
    let present: HashSet<String> = store
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .map_err(|e| err(e.into()))?;
    let snapshot = table.snapshot().map_err(err)?;
    let missing = snapshot
        .log_data()
        .iter()
        .filter(|f| !present.contains(f.object_store_path().as_ref()))
        .count();
    if missing > 0 {
        return Err(QueryError::Vacuumed {
            table: name.to_string(),
            version,
            missing,
        });
    }
    Ok(())
}
