//! Protobuf through a Schema Registry: each version's `.proto` (text, or the base64
//! descriptor some serializers register) compiled with its references and the
//! well-known types; the table's message found by name or as the file's first; its
//! fields made columns (see `proto_types`); records read by the message index path
//! after the schema id.

use std::collections::HashMap;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::{Field, SchemaRef};
use prost_reflect::{DescriptorPool, DynamicMessage, FileDescriptor, MessageDescriptor};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

use super::columns::{self, Why};
use super::proto_types;

/// One version of a subject, with the files it imports (by import name).
pub(super) struct ProtoWritten {
    pub id: u32,
    pub version: i32,
    pub schema: String,
    pub imports: Vec<(String, String)>,
}

/// The table's message and the writers (schema ids) that carry it.
#[derive(Debug, Clone)]
pub(super) struct ProtoReader {
    pub payload: SchemaRef,
    /// The full name of the table's message.
    message: String,
    writers: HashMap<u32, FileDescriptor>,
}

/// The name a subject's own file compiles under (a text schema has none).
const MAIN: &str = "lakestream-subject.proto";

/// The versions merged into one reader (the message `record`, or the first version's
/// first message); the ids of versions that could not join it, with the reason.
pub(super) fn merge(
    versions: &[ProtoWritten],
    record: Option<&str>,
) -> (Option<ProtoReader>, HashMap<u32, String>) {
    let mut reader: Option<(Vec<Field>, ProtoReader)> = None;
    let mut refused = HashMap::new();
    for v in versions {
        let attempt = compile(&v.schema, &v.imports).and_then(|file| {
            let wanted = match (&reader, record) {
                (Some((_, r)), _) => Some(r.message.as_str()),
                (None, wanted) => wanted,
            };
            let message = table_message(&file, wanted)?;
            let fields = proto_types::fields(&message)?;
            let merged = match &reader {
                Some((old, _)) => columns::merge(old, &fields)?,
                None => fields,
            };
            Ok((file, message.full_name().to_string(), merged))
        });
        match attempt {
            Ok((file, message, merged)) => {
                let mut writers = reader.take().map(|(_, r)| r.writers).unwrap_or_default();
                writers.insert(v.id, file);
                let payload = columns::schema(merged.clone());
                reader = Some((
                    merged,
                    ProtoReader {
                        payload,
                        message,
                        writers,
                    },
                ));
            }
            Err(reason) => {
                refused.insert(
                    v.id,
                    format!("schema id {} (version {}) {reason}", v.id, v.version),
                );
            }
        }
    }
    (reader.map(|(_, r)| r), refused)
}

fn table_message(file: &FileDescriptor, wanted: Option<&str>) -> Result<MessageDescriptor, Why> {
    match wanted {
        Some(name) => file
            .messages()
            .chain(file.messages().flat_map(|m| nested(&m)))
            .find(|m| m.full_name() == name)
            .ok_or_else(|| Why(format!("has no message '{name}' (the table's message)"))),
        None => file
            .messages()
            .next()
            .ok_or_else(|| "declares no message".into()),
    }
}

fn nested(m: &MessageDescriptor) -> Vec<MessageDescriptor> {
    m.child_messages()
        .flat_map(|c| std::iter::once(c.clone()).chain(nested(&c)))
        .collect()
}

/// Files by import name, then the well-known types protoc ships.
struct Imports(HashMap<String, File>);

impl FileResolver for Imports {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| protox::Error::file_not_found(name))
    }
}

/// A registered schema as a file: `.proto` text, or a base64 `FileDescriptorProto`.
fn file(name: &str, schema: &str) -> Result<File, Why> {
    if let Ok(file) = File::from_source(name, schema) {
        return Ok(file);
    }
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(schema.trim())
        .map_err(|_| "is neither .proto text that parses nor a base64 descriptor".to_string())?;
    File::decode_file_descriptor_proto(bytes.as_slice())
        .map_err(|e| Why(format!("is base64 but not a protobuf file descriptor: {e}")))
}

/// The subject's file compiled with its imports.
fn compile(schema: &str, imports: &[(String, String)]) -> Result<FileDescriptor, Why> {
    let main = file(MAIN, schema)?;
    let name = match main.source() {
        Some(_) => MAIN.to_string(),
        None => main.file_descriptor_proto().name().to_string(),
    };
    let mut files = HashMap::from([(name.clone(), main)]);
    for (import, text) in imports {
        files.insert(
            import.clone(),
            file(import, text).map_err(|e| Why(format!("import '{import}' {e}")))?,
        );
    }
    let mut resolver = ChainFileResolver::new();
    resolver.add(Imports(files));
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler
        .open_file(&name)
        .map_err(|e| Why(format!("does not compile: {e}")))?;
    let pool: DescriptorPool = compiler.descriptor_pool();
    pool.get_file_by_name(&name)
        .ok_or_else(|| "does not compile to a file".into())
}

/// The message index path after the schema id (zigzag varints: a count, then that many
/// indexes; a count of 0 is the file's first message) and the bytes after it.
fn index_path(mut at: &[u8]) -> Result<(Vec<i64>, &[u8]), Why> {
    let mut next = || -> Result<i64, Why> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = at
                .split_first()
                .ok_or("truncated: the payload ends inside the message index path")?;
            at = rest;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err("the message index path holds a varint over 10 bytes".into())
    };
    let count = next()?;
    if !(0..=100).contains(&count) {
        return Err(Why(format!(
            "the message index path claims {count} indexes"
        )));
    }
    let path = match count {
        0 => vec![0],
        n => (0..n).map(|_| next()).collect::<Result<_, _>>()?,
    };
    Ok((path, at))
}

fn message_at(file: &FileDescriptor, path: &[i64]) -> Option<MessageDescriptor> {
    let (first, rest) = path.split_first()?;
    let mut message = file.messages().nth(usize::try_from(*first).ok()?)?;
    for &i in rest {
        let child = message.child_messages().nth(usize::try_from(i).ok()?)?;
        message = child;
    }
    Some(message)
}

impl ProtoReader {
    /// The row of one framed message.
    fn row(&self, message: &[u8]) -> Result<serde_json::Value, Why> {
        let id = super::schema_id(message).ok_or("truncated frame")?;
        let file = self
            .writers
            .get(&id)
            .ok_or_else(|| Why(format!("schema id {id} is not a version this table reads")))?;
        let (path, body) = index_path(&message[5..])?;
        let descriptor = message_at(file, &path).ok_or_else(|| {
            format!("message index path {path:?} names no message of schema id {id}")
        })?;
        if descriptor.full_name() != self.message {
            return Err(Why(format!(
                "message {} (index path {path:?}) is not the table's message {}",
                descriptor.full_name(),
                self.message
            )));
        }
        let decoded = DynamicMessage::decode(descriptor, body).map_err(|e| {
            Why(format!(
                "Protobuf message of schema id {id} does not decode: {e}"
            ))
        })?;
        Ok(proto_types::row(&decoded))
    }

    /// Decode `messages` (framed) in order: the payload rows, or the first message that
    /// fails (its position) with the reason.
    pub(super) fn decode_run(&self, messages: &[&[u8]]) -> Result<RecordBatch, (usize, String)> {
        let rows = messages
            .iter()
            .enumerate()
            .map(|(n, m)| self.row(m).map_err(|reason| (n, reason.0)))
            .collect::<Result<Vec<_>, _>>()?;
        columns::batch(&self.payload, &rows)
    }
}
