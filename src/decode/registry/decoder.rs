//! The registry decoder: the subject's versions merged into the table's columns, each
//! batch's new schema ids looked up first, records checked, decoded, and cut out as dead
//! letters where they cannot be read.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::compute::concat_batches;
use deltalake::arrow::datatypes::{Schema, SchemaRef};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::super::{dead_letter, metadata, DeadLetter, DecodeError, Decoded, TOMBSTONE_REASON};
use super::client::{self, RegistryClient, RegistryError, Version};
use super::keys::KeyReaders;
use super::reader::{self, Reader};
use super::schema_id;
use crate::config::{RegistrySource, SourceFormat};
use crate::report::Report;
use crate::source::RawBatch;

/// What a schema id's records become.
#[derive(Debug, Clone)]
enum Writer {
    Reads,
    Dead(String),
}

#[derive(Debug, Clone)]
pub struct RegistryDecoder {
    client: Arc<RegistryClient>,
    subject: String,
    format: SourceFormat,
    /// The Protobuf message the table holds (`None`: the file's first).
    record: Option<String>,
    max_message_bytes: usize,
    reader: Arc<Reader>,
    /// The newest version merged into `reader`.
    latest: i32,
    writers: HashMap<u32, Writer>,
    /// The schemas of tombstones' framed keys.
    keys: KeyReaders,
    table_schema: SchemaRef,
    relaxed: SchemaRef,
}

impl RegistryDecoder {
    /// The decoder of `topic`'s values, its columns from the registry (waiting for the
    /// registry while it is down, until `shutdown`).
    pub async fn connect(
        source: &RegistrySource,
        format: SourceFormat,
        topic: &str,
        max_message_bytes: usize,
        shutdown: &CancellationToken,
    ) -> Result<Self, RegistryError> {
        let client = Arc::new(RegistryClient::new(&source.registry)?);
        let subject = source.subject(topic);
        let mut decoder = Self {
            client,
            subject,
            format,
            record: source.record.clone(),
            max_message_bytes,
            reader: Arc::new(Reader::Avro(super::avro::AvroReader::empty())),
            latest: 0,
            writers: HashMap::new(),
            keys: KeyReaders::default(),
            table_schema: Arc::new(Schema::empty()),
            relaxed: Arc::new(Schema::empty()),
        };
        decoder.refresh(shutdown).await?;
        info!(subject = %decoder.subject, version = decoder.latest, columns = decoder.reader.payload().fields().len(), "table columns from the schema registry");
        Ok(decoder)
    }

    pub fn table_schema(&self) -> SchemaRef {
        self.table_schema.clone()
    }

    /// Every column nullable: what a tombstone's key fills.
    pub fn tombstone_schema(&self) -> SchemaRef {
        self.relaxed.clone()
    }

    /// Look up the schema ids of `raw` not seen yet. A new version of the subject adds
    /// its columns; an id that does not exist, or is another subject's, is remembered as
    /// a dead letter's reason. While the registry is down this waits (nothing is
    /// dead-lettered for an outage).
    pub async fn prepare(
        &mut self,
        raw: &RawBatch,
        shutdown: &CancellationToken,
    ) -> Result<(), RegistryError> {
        let new: BTreeSet<u32> = (0..raw.len())
            .filter_map(|i| schema_id(raw.payload(i)))
            .filter(|id| !self.writers.contains_key(id))
            .collect();
        for id in new {
            let known = patiently(&format!("schema id {id}"), shutdown, || {
                self.client.schema(id)
            })
            .await;
            let registered = match known {
                Err(RegistryError::NoSuchId(_)) => {
                    self.dead(id, format!("schema id {id} does not exist in the registry"));
                    continue;
                }
                other => other?,
            };
            if registered.schema_type != schema_type(self.format) {
                let reason = format!(
                    "schema id {id} is a {} schema; this source reads {}",
                    registered.schema_type,
                    schema_type(self.format)
                );
                self.dead(id, reason);
                continue;
            }
            let subjects = patiently(&format!("schema id {id}"), shutdown, || {
                self.client.subjects_of(id)
            })
            .await?;
            if !subjects.iter().any(|s| s.subject == self.subject) {
                let of: Vec<String> = subjects
                    .iter()
                    .map(|s| format!("{} v{}", s.subject, s.version))
                    .collect();
                let reason = format!(
                    "schema id {id} is registered under {}, not subject '{}' that this \
                     source reads",
                    of.join(", "),
                    self.subject
                );
                self.dead(id, reason);
                continue;
            }
            self.refresh(shutdown).await?;
            if !self.writers.contains_key(&id) {
                let reason = format!(
                    "schema id {id} is not among the versions of '{}'",
                    self.subject
                );
                self.dead(id, reason);
            }
        }
        self.learn_keys(raw, shutdown).await
    }

    /// Look up the schemas of the tombstones' framed keys not seen yet (an id the
    /// registry does not have deletes nothing).
    async fn learn_keys(
        &mut self,
        raw: &RawBatch,
        shutdown: &CancellationToken,
    ) -> Result<(), RegistryError> {
        let new: BTreeSet<u32> = (0..raw.len())
            .filter(|&i| raw.is_tombstone(i))
            .filter_map(|i| raw.key(i).and_then(schema_id))
            .filter(|id| !self.keys.knows(*id))
            .collect();
        for id in new {
            let what = format!("key schema id {id}");
            let found = match patiently(&what, shutdown, || self.client.schema(id)).await {
                Err(RegistryError::NoSuchId(_)) => {
                    self.keys.insert(id, None);
                    continue;
                }
                other => other?,
            };
            let version = [Version {
                id,
                version: 1,
                schema: found.schema.clone(),
                schema_type: found.schema_type.clone(),
                references: found.references.clone(),
            }];
            let format = format_of(&found.schema_type);
            let imports = self.imports_of(format, &version, shutdown).await?;
            let (key, refused) = reader::merge(format, &version, imports, None);
            if key.is_none() {
                warn!(id, reasons = ?refused.values().collect::<Vec<_>>(), "a key schema that is not a record of columns: its tombstones delete nothing");
            }
            self.keys.insert(id, key);
        }
        Ok(())
    }

    fn dead(&mut self, id: u32, reason: String) {
        warn!(subject = %self.subject, %reason, "records of this schema id go to the dead-letter table");
        self.writers.insert(id, Writer::Dead(reason));
    }

    /// Merge every version of the subject again (deterministic: a restart merges alike).
    async fn refresh(&mut self, shutdown: &CancellationToken) -> Result<(), RegistryError> {
        let versions = patiently(&format!("subject '{}'", self.subject), shutdown, || {
            self.client.versions(&self.subject)
        })
        .await?;
        let versions: Vec<Version> = versions
            .into_iter()
            .filter(|v| v.schema_type == schema_type(self.format))
            .collect();
        let imports = self.imports_of(self.format, &versions, shutdown).await?;
        let (reader, refused) =
            reader::merge(self.format, &versions, imports, self.record.as_deref());
        let Some(reader) = reader else {
            let reasons: Vec<&String> = refused.values().collect();
            return Err(RegistryError::Unreadable {
                subject: self.subject.clone(),
                reasons: format!("{reasons:?}"),
            });
        };
        let before: Vec<String> = self
            .reader
            .payload()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let added: Vec<&str> = reader
            .payload()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .filter(|n| !before.iter().any(|b| b == n))
            .collect();
        if self.latest > 0 && !added.is_empty() {
            info!(subject = %self.subject, ?added, "a new schema version adds columns");
        }
        for v in &versions {
            let writer = match refused.get(&v.id) {
                Some(reason) => {
                    warn!(subject = %self.subject, %reason, "a schema version the table cannot take: its records go to the dead-letter table");
                    Writer::Dead(format!("{reason} (subject '{}')", self.subject))
                }
                None => Writer::Reads,
            };
            self.writers.insert(v.id, writer);
        }
        self.latest = versions.last().map_or(0, |v| v.version);
        let mut fields: Vec<_> = reader.payload().fields().iter().cloned().collect();
        fields.extend(metadata::fields());
        self.table_schema = Arc::new(Schema::new(fields.clone()));
        let relaxed: Vec<_> = fields
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        self.relaxed = Arc::new(Schema::new(relaxed));
        self.reader = Arc::new(reader);
        Ok(())
    }

    /// The files each version imports (Protobuf only: the other formats import none
    /// that lakestream reads).
    async fn imports_of(
        &self,
        format: SourceFormat,
        versions: &[Version],
        shutdown: &CancellationToken,
    ) -> Result<Vec<Vec<(String, String)>>, RegistryError> {
        let mut imports = Vec::new();
        if format == SourceFormat::Protobuf {
            for v in versions {
                imports.push(self.imports(v, shutdown).await?);
            }
        }
        Ok(imports)
    }

    /// The files a Protobuf version imports, by import name, their own imports too
    /// (the well-known types are not registered: the compiler has them).
    async fn imports(
        &self,
        version: &Version,
        shutdown: &CancellationToken,
    ) -> Result<Vec<(String, String)>, RegistryError> {
        let mut files: Vec<(String, String)> = Vec::new();
        let mut wanted = version.references.clone();
        while let Some(r) = wanted.pop() {
            if files.iter().any(|(name, _)| *name == r.name) || files.len() > 1000 {
                continue;
            }
            let what = format!("import '{}' ({} v{})", r.name, r.subject, r.version);
            let found = patiently(&what, shutdown, || {
                self.client.version(&r.subject, r.version)
            })
            .await?;
            wanted.extend(found.references);
            files.push((r.name, found.schema));
        }
        Ok(files)
    }

    /// Decode `raw` over `threads` threads; what cannot be read is a dead letter.
    pub fn decode(&self, raw: &RawBatch, threads: usize) -> Result<Decoded, DecodeError> {
        let mut dead = Vec::new();
        let mut candidates = Vec::with_capacity(raw.len());
        for i in 0..raw.len() {
            match self.refusal(raw, i) {
                None => candidates.push(i),
                Some(reason) => dead.push(DeadLetter { index: i, reason }),
            }
        }
        let parts = super::super::in_parallel(&candidates, threads, |c| self.isolate(raw, c));
        let mut good = Vec::new();
        for (rows, bad) in parts {
            good.extend(rows);
            dead.extend(bad);
        }
        dead.sort_by_key(|d| d.index);
        Ok(Decoded {
            rows: concat_batches(&self.table_schema, &good)?,
            dead_letters: dead_letter::to_batch(raw, &dead)?,
            tombstones: self.tombstones(raw)?,
        })
    }

    /// The tombstones of `raw` whose keys can be read, as rows of the tombstone schema.
    fn tombstones(&self, raw: &RawBatch) -> Result<RecordBatch, DecodeError> {
        let columns = self.reader.payload().fields().len();
        let payload = Arc::new(Schema::new(self.relaxed.fields()[..columns].to_vec()));
        let mut rows = Vec::new();
        for i in (0..raw.len()).filter(|&i| raw.is_tombstone(i)) {
            let Some(key) = raw.key(i).and_then(|k| self.keys.row(k, &payload)) else {
                continue;
            };
            rows.push(metadata::append_columns(
                &key,
                raw,
                &[i],
                &self.relaxed,
                columns,
            )?);
        }
        Ok(concat_batches(&self.relaxed, &rows)?)
    }

    /// Why record `i` cannot be decoded, if that shows before it is tried.
    fn refusal(&self, raw: &RawBatch, i: usize) -> Option<String> {
        if raw.is_tombstone(i) {
            return Some(TOMBSTONE_REASON.into());
        }
        let payload = raw.payload(i);
        if payload.len() > self.max_message_bytes {
            return Some(format!(
                "message of {} bytes is over max_message_bytes ({})",
                payload.len(),
                self.max_message_bytes
            ));
        }
        match (payload.first(), schema_id(payload)) {
            (None, _) => Some("empty message: a Confluent frame has at least 5 bytes".into()),
            (Some(&b), _) if b != 0 => Some(format!(
                "not Confluent-framed: the first byte is 0x{b:02x}, not the magic byte 0x00{}",
                match b {
                    b'{' => " (this looks like plain JSON: format = \"json\" reads it)",
                    _ => " (is the producer using a Schema Registry serializer?)",
                }
            )),
            (_, None) => Some(format!(
                "truncated: {} bytes, a Confluent frame starts with 5 (magic byte, schema id)",
                payload.len()
            )),
            (_, Some(id)) => match self.writers.get(&id) {
                Some(Writer::Reads) => None,
                Some(Writer::Dead(reason)) => Some(reason.clone()),
                None => Some(format!("schema id {id} was not looked up in the registry")),
            },
        }
    }

    /// Decode `indices` in one go; a record that fails is cut out and the rest decoded
    /// again, so one bad record costs one more pass over its neighbours.
    fn isolate(&self, raw: &RawBatch, indices: &[usize]) -> (Vec<RecordBatch>, Vec<DeadLetter>) {
        let (mut good, mut dead) = (Vec::new(), Vec::new());
        let mut rest = indices;
        while !rest.is_empty() {
            let messages: Vec<&[u8]> = rest.iter().map(|&i| raw.payload(i)).collect();
            let (ok, failed) = match self.reader.decode_run(&messages) {
                Ok(payload) => (Some((payload, rest)), None),
                // The readers name the first message that fails, so the ones before it
                // decode; were that ever not so, they are dead letters, never dropped.
                Err((0, reason)) => (None, Some((0, reason))),
                Err((at, reason)) => match self.reader.decode_run(&messages[..at]) {
                    Ok(before) => (Some((before, &rest[..at])), Some((at, reason))),
                    Err((_, why)) => {
                        dead.extend(rest[..at].iter().map(|&index| DeadLetter {
                            index,
                            reason: why.clone(),
                        }));
                        (None, Some((at, reason)))
                    }
                },
            };
            if let Some((payload, of)) = ok {
                match metadata::append_columns(
                    &payload,
                    raw,
                    of,
                    &self.table_schema,
                    payload.num_columns(),
                ) {
                    Ok(rows) => good.push(rows),
                    Err(e) => dead.extend(of.iter().map(|&index| DeadLetter {
                        index,
                        reason: e.to_string(),
                    })),
                }
            }
            let Some((at, reason)) = failed else { break };
            dead.push(DeadLetter {
                index: rest[at],
                reason,
            });
            rest = &rest[at + 1..];
        }
        (good, dead)
    }
}

/// How the registry names a format's schemas (`schemaType`).
fn schema_type(format: SourceFormat) -> &'static str {
    match format {
        SourceFormat::Protobuf => "PROTOBUF",
        SourceFormat::JsonSchema => "JSON",
        _ => "AVRO",
    }
}

/// The format of a registry's `schemaType`.
fn format_of(schema_type: &str) -> SourceFormat {
    match schema_type {
        "PROTOBUF" => SourceFormat::Protobuf,
        "JSON" => SourceFormat::JsonSchema,
        _ => SourceFormat::Avro,
    }
}

/// `call` until it succeeds or fails for good, waiting out a registry outage (logged
/// with what waits) until `shutdown`.
async fn patiently<T, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut call: F,
) -> Result<T, RegistryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RegistryError>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Err(e) if e.is_transient() => {
                let wait = client::backoff(attempt);
                warn!(error = %Report(&e), %what, attempt, ?wait, "waiting for the schema registry: the records that need it wait too (none is dead-lettered for an outage)");
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(e),
                    _ = tokio::time::sleep(wait) => {}
                }
                attempt += 1;
            }
            other => return other,
        }
    }
}
