//! The sync task: mirrors pipeline tables from Delta into MySQL/MariaDB for BI tools.
//!
//! Each tick, per mirrored table: read the Delta version MySQL reflects (from
//! `lakestream_sync_state`), read only the files committed since, and write their rows
//! plus the new version in one MySQL transaction. A crash anywhere leaves MySQL at the
//! old version or the new one, never between; rows are upserted with absolute values,
//! so reading a file again cannot count twice. Complete-mode tables are replaced whole.
//! MySQL being down only delays the mirror: the task retries with backoff and ingestion
//! into Delta never waits for it. Grains (`grains`) are counts per minute, hour and
//! day of an append table, kept the same way.

mod account;
mod bi;
mod changes;
mod connect;
mod error;
mod freshness;
mod grain_write;
mod grains;
mod layout;
mod mysql;
mod refresh;
mod task;
mod types;
mod zones;

pub use account::check_account;
pub use bi::sql_files;
pub use error::SyncError;
pub use task::{all_mirrored, SyncMetrics, SyncTask, TableSync};
