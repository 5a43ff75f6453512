//! The file as serde reads it: one struct per section, defaults filled in, unknown keys
//! refused. `Plan::compile` checks and types it; nothing else reads it.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::pipeline::{LookupConfig, PipelineConfig};
use super::service::{HttpConfig, KafkaConfig, MaintenanceConfig, MysqlConfig, StorageConfig};
use super::source::SourceConfig;
use super::ConfigError;

/// Everything lakestream reads from `config/lakestream.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How to reach the Kafka cluster.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// Where tables live and how their files are written.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Topics and the declared schema of their JSON messages, by source name.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    /// Streaming pipelines, by pipeline name.
    #[serde(default)]
    pub pipelines: BTreeMap<String, PipelineConfig>,
    /// Static lookup tables that pipeline SQL can join with, by table name.
    #[serde(default)]
    pub lookups: BTreeMap<String, LookupConfig>,
    /// The Schema Registry of the Avro, Protobuf and JSON Schema sources.
    pub schema_registry: Option<super::registry::RegistryConfig>,
    /// The MySQL/MariaDB mirror of pipeline tables and the BI views over it.
    pub mysql: Option<MysqlConfig>,
    /// The data catalog the pipelines' `catalog_table`s are registered in.
    pub catalog: Option<super::catalog::CatalogConfig>,
    /// Compaction, vacuum and checkpoints of the tables, scheduled inside `run`.
    #[serde(default)]
    pub maintenance: MaintenanceConfig,
    /// The status page, `/status`, `/metrics` and `/health` served by `run`.
    #[serde(default)]
    pub http: HttpConfig,
    /// The bytes in flight `run` may hold (prefetched, raw, decoded, queued and
    /// committing batches), shared by its readers: `256MiB`, `1GiB` or a number of bytes.
    #[serde(default = "default_memory_limit", deserialize_with = "byte_size")]
    pub memory_limit: bytesize::ByteSize,
}

fn default_memory_limit() -> bytesize::ByteSize {
    bytesize::ByteSize::mib(256)
}

/// A size as a number of bytes or a string with a unit, with an error that says how.
fn byte_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bytesize::ByteSize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bytes(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Bytes(n) => Ok(bytesize::ByteSize(n)),
        Raw::Text(text) => text.trim().parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "'{text}' is not a size: write e.g. \"256MiB\", \"1GiB\" or a number of bytes"
            ))
        }),
    }
}

/// Below this a reader's share cannot hold a fetch and a batch of 1 MiB messages.
pub const MIN_MEMORY_LIMIT: u64 = 16 << 20;

/// `memory_limit` in bytes, at least [`MIN_MEMORY_LIMIT`].
pub(super) fn check_memory_limit(limit: bytesize::ByteSize) -> Result<u64, ConfigError> {
    if limit.as_u64() < MIN_MEMORY_LIMIT {
        return Err(ConfigError::key(
            "memory_limit",
            format!(
                "{} is below the smallest budget a reader works in (16MiB); give it \
                 at least 16MiB per source, 256MiB is the default",
                limit.display().iec()
            ),
        ));
    }
    Ok(limit.as_u64())
}
