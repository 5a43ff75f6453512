//! The reader of one format: the subject's versions merged into the table's columns
//! (see each format's `merge`), and framed records decoded in runs.

use std::collections::HashMap;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;

use super::avro::{self, AvroReader, Written};
use super::client::Version;
use super::json_schema::{self, JsonSchemaReader};
use super::protobuf::{self, ProtoReader, ProtoWritten};
use crate::config::SourceFormat;

#[derive(Debug, Clone)]
pub(super) enum Reader {
    Avro(AvroReader),
    Protobuf(ProtoReader),
    JsonSchema(JsonSchemaReader),
}

/// The subject's versions (oldest first) merged into one reader of `format`, and the
/// ids of those refused, with the reason. `imports` are each Protobuf version's files
/// by import name (in `versions`' order); `record` the Protobuf message to read.
pub(super) fn merge(
    format: SourceFormat,
    versions: &[Version],
    imports: Vec<Vec<(String, String)>>,
    record: Option<&str>,
) -> (Option<Reader>, HashMap<u32, String>) {
    let written = || -> Vec<Written<'_>> {
        versions
            .iter()
            .map(|v| Written {
                id: v.id,
                version: v.version,
                schema: &v.schema,
            })
            .collect()
    };
    match format {
        SourceFormat::Protobuf => {
            let mut imports = imports.into_iter();
            let written: Vec<ProtoWritten> = versions
                .iter()
                .map(|v| ProtoWritten {
                    id: v.id,
                    version: v.version,
                    schema: v.schema.clone(),
                    imports: imports.next().unwrap_or_default(),
                })
                .collect();
            let (reader, refused) = protobuf::merge(&written, record);
            (reader.map(Reader::Protobuf), refused)
        }
        SourceFormat::JsonSchema => {
            let (reader, refused) = json_schema::merge(&written());
            (reader.map(Reader::JsonSchema), refused)
        }
        _ => {
            let (reader, refused) = avro::merge(&written());
            (reader.map(Reader::Avro), refused)
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
