//! `[storage]` and `[http]` checked: the one `Storage` every table user shares, how data
//! files are written, and the status server.

use super::super::service::{HttpConfig, StorageConfig};
use crate::config::ConfigError;
use crate::storage::Storage;

/// Where tables live and how their files are written.
#[derive(Debug, Clone)]
pub struct StoragePlan {
    pub storage: Storage,
    /// zstd level for data files, 1..=22.
    pub zstd_level: i32,
    pub target_file_size: u64,
}

impl StoragePlan {
    pub(super) fn compile(s: &StorageConfig) -> Result<Self, ConfigError> {
        if !(1..=22).contains(&s.zstd_level) {
            return Err(ConfigError::key(
                "storage.zstd_level",
                format!("{} is outside 1..=22", s.zstd_level),
            ));
        }
        if s.root.trim().is_empty() {
            return Err(ConfigError::key("storage.root", "must not be empty"));
        }
        Ok(Self {
            storage: Storage::new(&s.root, s.options.clone().into_iter().collect()),
            zstd_level: s.zstd_level,
            target_file_size: s.target_file_size,
        })
    }
}

/// The status page, `/status`, `/metrics` and `/health`.
#[derive(Debug, Clone)]
pub struct HttpPlan {
    pub enabled: bool,
    pub listen: String,
    /// Not ready (`/health` 503) when a pipeline is this many records behind.
    pub max_ready_lag: i64,
}

impl HttpPlan {
    pub(super) fn compile(h: &HttpConfig) -> Self {
        Self {
            enabled: h.enabled,
            listen: h.listen.clone(),
            max_ready_lag: h.max_ready_lag,
        }
    }
}
