//! Messages -> Arrow: JSON with a declared schema, or a Schema Registry format (`registry`).
//! Good records become rows with Kafka metadata columns; bad ones become dead letters
//! carrying the reason, never an error.

mod cdc;
mod dead_letter;
mod decoder;
mod evolve;
mod fast;
mod json;
mod metadata;
mod registry;
mod reject;
mod zone;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::error::ArrowError;

pub use crate::config::kafka_columns::METADATA_COLUMNS;
pub use dead_letter::{dead_letter_schema, for_pipeline, DeadLetter};
pub use decoder::Decoder;
pub use json::JsonDecoder;
pub use registry::{RegistryClient, RegistryError};
pub use reject::Rejected;

/// Outcome of decoding one raw batch.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Payload columns followed by the Kafka metadata columns, in raw-batch order.
    pub rows: RecordBatch,
    /// Records that could not be decoded, with the reason. Tombstones are here too: only
    /// an upsert pipeline applies them (see `tombstones`), and it drops them from here.
    pub dead_letters: RecordBatch,
    /// Tombstones whose message key is a JSON object: the key's fields in the declared
    /// columns (all nullable), with the metadata columns.
    pub tombstones: RecordBatch,
}

/// Why a tombstone is a dead letter for every pipeline but an upsert one.
pub const TOMBSTONE_REASON: &str =
    "tombstone (null value): only an upsert pipeline applies it, as a delete by its key";

/// `work` over `indices` split into one chunk per thread (of `threads`), the parts in
/// order: decoding is CPU work, and a batch's records decode independently.
fn in_parallel<T: Send>(
    indices: &[usize],
    threads: usize,
    work: impl Fn(&[usize]) -> T + Sync,
) -> Vec<T> {
    let chunk = indices.len().div_ceil(threads.max(1)).max(1);
    let work = &work;
    std::thread::scope(|s| {
        let handles: Vec<_> = indices
            .chunks(chunk)
            .map(|c| s.spawn(move || work(c)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

#[derive(Debug, thiserror::Error)]
#[error("cannot assemble decoded batch")]
pub struct DecodeError(#[from] ArrowError);

#[cfg(test)]
mod tests;
