//! A source's decoder, whatever its format: JSON with declared (and learned) columns,
//! or a Schema Registry format whose columns the registry gives.

use deltalake::arrow::datatypes::{Schema, SchemaRef};
use tokio_util::sync::CancellationToken;

use super::registry::{RegistryDecoder, RegistryError};
use super::{DecodeError, Decoded, JsonDecoder};
use crate::config::DecoderSpec;
use crate::source::RawBatch;

#[derive(Debug, Clone)]
pub enum Decoder {
    Json(Box<JsonDecoder>),
    Registry(RegistryDecoder),
}

impl Decoder {
    /// The decoder of `topic` as `spec` describes (a registry format asks the registry
    /// for the table's columns, waiting while it is down until `shutdown`).
    pub async fn for_source(
        spec: &DecoderSpec,
        topic: &str,
        shutdown: &CancellationToken,
    ) -> Result<Self, RegistryError> {
        Ok(match &spec.registry {
            None => Self::Json(Box::new(JsonDecoder::for_source(spec))),
            Some(registry) => Self::Registry(
                RegistryDecoder::connect(
                    registry,
                    spec.format,
                    topic,
                    spec.max_message_bytes,
                    shutdown,
                )
                .await?,
            ),
        })
    }

    /// Schema of [`Decoded::rows`].
    pub fn table_schema(&self) -> SchemaRef {
        match self {
            Self::Json(d) => d.table_schema(),
            Self::Registry(d) => d.table_schema(),
        }
    }

    /// Schema of [`Decoded::tombstones`].
    pub fn tombstone_schema(&self) -> SchemaRef {
        match self {
            Self::Json(d) => d.tombstone_schema(),
            Self::Registry(d) => d.tombstone_schema(),
        }
    }

    /// Take the columns a table already has beyond ours (JSON schema evolution).
    pub fn know_columns(&mut self, table: &Schema) {
        if let Self::Json(d) = self {
            d.know_columns(table);
        }
    }

    /// What must be fetched before `raw` decodes (a registry's new schema ids).
    pub async fn prepare(
        &mut self,
        raw: &RawBatch,
        shutdown: &CancellationToken,
    ) -> Result<(), RegistryError> {
        match self {
            Self::Json(_) => Ok(()),
            Self::Registry(d) => d.prepare(raw, shutdown).await,
        }
    }

    /// Decode `raw` over `threads` threads, learning new columns where the format does.
    pub fn decode_evolving(
        &mut self,
        raw: &RawBatch,
        threads: usize,
    ) -> Result<Decoded, DecodeError> {
        match self {
            Self::Json(d) => d.decode_evolving(raw, threads),
            Self::Registry(d) => d.decode(raw, threads),
        }
    }
}
