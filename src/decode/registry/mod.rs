//! Confluent-framed messages (magic byte 0, a 4-byte schema id, the encoded record)
//! whose schemas live in a Schema Registry. The table's columns come from the subject's
//! versions merged (see `reader::merge`); each batch's schema ids are looked up before it
//! decodes (`prepare`), waiting out a registry outage; a record that cannot be read
//! becomes a dead letter with the reason, its raw bytes kept.

mod avro;
mod client;
mod columns;
mod decoder;
mod delta_types;
mod json_schema;
mod keys;
mod proto_types;
mod protobuf;
mod reader;

pub use client::{RegistryClient, RegistryError};
pub(super) use decoder::RegistryDecoder;

/// The schema id of a Confluent frame.
fn schema_id(payload: &[u8]) -> Option<u32> {
    match payload {
        [0, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod formats_tests;
