//! The reader of one format: the subject's versions merged into the table's columns
//! (see each format's `merge`), and framed records decoded in runs.

use std::collections::HashMap;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;

use super::avro::{self, AvroReader, Written};
use super::json_schema::{self, JsonSchemaReader, JsonWritten};
use super::protobuf::{self, ProtoReader, ProtoWritten};

#[derive(Debug, Clone)]
pub(super) enum Reader {
    Avro(AvroReader),
    Protobuf(ProtoReader),
    JsonSchema(JsonSchemaReader),
}

/// A subject's versions as a format reads them (a Protobuf version with its imports).
pub(super) enum Versions<'a> {
    Avro(Vec<Written<'a>>),
    Protobuf(Vec<ProtoWritten>, Option<&'a str>),
    JsonSchema(Vec<JsonWritten<'a>>),
}

/// The versions merged into one reader, and the ids of those refused, with the reason.
pub(super) fn merge(versions: &Versions<'_>) -> (Option<Reader>, HashMap<u32, String>) {
    match versions {
        Versions::Avro(v) => {
            let (reader, refused) = avro::merge(v);
            (reader.map(Reader::Avro), refused)
        }
        Versions::Protobuf(v, record) => {
            let (reader, refused) = protobuf::merge(v, *record);
            (reader.map(Reader::Protobuf), refused)
        }
        Versions::JsonSchema(v) => {
            let (reader, refused) = json_schema::merge(v);
            (reader.map(Reader::JsonSchema), refused)
        }
    }
}

impl Reader {
    pub(super) fn payload(&self) -> &SchemaRef {
        match self {
            Self::Avro(r) => &r.payload,
            Self::Protobuf(r) => &r.payload,
            Self::JsonSchema(r) => &r.payload,
        }
    }

    /// Decode `messages` (framed) in order: the payload rows, or the first message that
    /// fails (its position) with the reason.
    pub(super) fn decode_run(&self, messages: &[&[u8]]) -> Result<RecordBatch, (usize, String)> {
        match self {
            Self::Avro(r) => r.decode_run(messages).map_err(|(at, reason)| {
                let id = messages
                    .get(at)
                    .and_then(|m| super::schema_id(m))
                    .unwrap_or_default();
                (
                    at,
                    format!("Avro record of schema id {id} does not decode: {reason}"),
                )
            }),
            Self::Protobuf(r) => r.decode_run(messages),
            Self::JsonSchema(r) => r.decode_run(messages),
        }
    }
}
