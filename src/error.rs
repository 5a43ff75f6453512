//! The crate error: one variant per boundary, each carrying the context an operator needs.

use crate::config::ConfigError;
use crate::sink::SinkError;
use crate::source::SourceError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    Sync(#[from] crate::sync::SyncError),
    #[error(transparent)]
    Maintenance(#[from] crate::maintenance::MaintenanceError),
    #[error(transparent)]
    Query(#[from] crate::query::QueryError),
    #[error("pipeline '{pipeline}' stopped: {message}")]
    Pipeline { pipeline: String, message: String },
    #[error("{option}: {message}")]
    Usage { option: String, message: String },
    #[error("task '{task}' panicked or was aborted")]
    Task {
        task: String,
        #[source]
        cause: tokio::task::JoinError,
    },
    #[error("{failed} of {of} checks failed ({parts}): see the FAIL lines above")]
    Check {
        failed: usize,
        of: usize,
        parts: String,
    },
    #[error(transparent)]
    Registry(#[from] crate::decode::RegistryError),
    #[error(transparent)]
    AvroProduce(#[from] crate::demo::AvroProduceError),
    #[error("decoding a batch")]
    Decode(#[from] crate::decode::DecodeError),
}
