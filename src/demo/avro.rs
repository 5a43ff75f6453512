//! `produce --format avro`: calls typed by a source's declared fields and written as Avro
//! in the Confluent wire format (magic byte, schema id), the schema registered first:
//! an `avro` source then reads what a `json` one reads from the same calls.

use std::sync::Arc;

use arrow_avro::schema::{AvroSchema, FingerprintStrategy};
use arrow_avro::writer::format::AvroSoeFormat;
use arrow_avro::writer::{Encoder, WriterBuilder};
use deltalake::arrow::array::AsArray;
use deltalake::arrow::error::ArrowError;

use crate::decode::{DecodeError, JsonDecoder, RegistryClient, RegistryError};
use crate::source::RawBatch;

#[derive(Debug, thiserror::Error)]
pub enum AvroProduceError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("the declared fields have no Avro schema: {0}")]
    Schema(String),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(
        "record {index} of this chunk does not fit the source's declared fields ({reason}): \
         --format json sends it as it is"
    )]
    NotTyped { index: usize, reason: String },
}

/// A message to send: its key and its value.
pub(crate) type Keyed = (Option<String>, Vec<u8>);

/// Frames JSON calls as Avro records of one registered schema.
pub struct AvroFramer {
    decoder: JsonDecoder,
    encoder: Encoder,
    columns: usize,
    /// The registered schema's id.
    pub id: u32,
}

impl AvroFramer {
    /// Register the Avro schema of `decoder`'s declared fields under `subject`.
    pub async fn register(
        decoder: JsonDecoder,
        client: &RegistryClient,
        subject: &str,
    ) -> Result<Self, AvroProduceError> {
        let schema_error = |e: ArrowError| AvroProduceError::Schema(e.to_string());
        let payload = decoder.payload_schema();
        let avro = AvroSchema::try_from(payload.as_ref()).map_err(schema_error)?;
        let id = client.register(subject, &avro.json_string).await?;
        let encoder = WriterBuilder::new(payload.as_ref().clone())
            .with_fingerprint_strategy(FingerprintStrategy::Id(id))
            .build_encoder::<AvroSoeFormat>()
            .map_err(|e| AvroProduceError::Schema(e.to_string()))?;
        Ok(Self {
            decoder,
            encoder,
            columns: payload.fields().len(),
            id,
        })
    }

    /// `records` (key, JSON) as (key, Confluent-framed Avro), in order.
    pub fn frame(&mut self, records: Vec<Keyed>) -> Result<Vec<Keyed>, AvroProduceError> {
        let mut raw = RawBatch::new(Arc::from("produce"));
        for (i, (_, json)) in records.iter().enumerate() {
            raw.push(0, i as i64, None, None, Some(json));
        }
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let decoded = self.decoder.decode(&raw, threads)?;
        let dead = &decoded.dead_letters;
        if dead.num_rows() > 0 {
            let column = |name: &str| dead.column_by_name(name).cloned();
            let reason = column("reason")
                .and_then(|c| c.as_string_opt::<i32>().map(|s| s.value(0).to_string()))
                .unwrap_or_default();
            let index = column("kafka_offset")
                .and_then(|c| {
                    c.as_primitive_opt::<deltalake::arrow::datatypes::Int64Type>()
                        .map(|o| o.value(0) as usize)
                })
                .unwrap_or_default();
            return Err(AvroProduceError::NotTyped { index, reason });
        }
        let columns: Vec<usize> = (0..self.columns).collect();
        let schema_error = |e: String| AvroProduceError::Schema(e);
        let rows = decoded
            .rows
            .project(&columns)
            .map_err(|e| schema_error(e.to_string()))?;
        self.encoder
            .encode(&rows)
            .map_err(|e| schema_error(e.to_string()))?;
        let encoded = self.encoder.flush();
        Ok(records
            .into_iter()
            .zip(encoded.iter())
            .map(|((key, _), frame)| (key, frame.to_vec()))
            .collect())
    }
}
