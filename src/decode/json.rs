//! The JSON decoder of a source: declared (and learned) fields -> Arrow rows with the
//! metadata columns; records it cannot decode are bisected out as dead letters.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::compute::{cast_with_options, concat_batches, CastOptions};
use deltalake::arrow::datatypes::{Schema, SchemaRef};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::json::ReaderBuilder;

use super::reject::{self, Rejected};
use super::{cdc, dead_letter, evolve, fast, metadata, zone};
use super::{DeadLetter, DecodeError, Decoded, TOMBSTONE_REASON};
use crate::config::{DecoderSpec, FieldSpec, FieldType, SourceFormat};
use crate::source::RawBatch;

/// Decodes JSON messages of one source.
#[derive(Debug, Clone)]
pub struct JsonDecoder {
    /// The declared fields, then the learned ones (see `evolve`).
    fields: Arc<[FieldSpec]>,
    declared: usize,
    /// What the JSON reader decodes (timestamps as text, see `FieldType::json_type`).
    json_schema: SchemaRef,
    payload_schema: SchemaRef,
    table_schema: SchemaRef,
    max_message_bytes: usize,
    /// Plain messages skip arrow-json (see `fast`); `None` where a field type needs it.
    pub(super) fast: Option<Arc<fast::FastDecoder>>,
    /// Zone of zone-less TIMESTAMP strings (`None`: UTC).
    zone: Option<chrono_tz::Tz>,
    /// Messages are Debezium change events (see `cdc::flatten`).
    debezium: bool,
    /// `json_schema`, `payload_schema` and `table_schema` with every field nullable:
    /// what a tombstone's key fills.
    relaxed: [SchemaRef; 3],
    /// `schema_evolution = "add_columns"`: undeclared fields become columns.
    learner: Option<evolve::Learner>,
}

/// A batch made ready for decoding: envelopes unwrapped (the original stays for dead
/// letters) and the records already refused, with the reason.
#[derive(Default)]
struct Unwrapped {
    flat: Option<RawBatch>,
    errors: HashMap<usize, Rejected>,
}

impl JsonDecoder {
    /// The decoder a source's plan describes.
    pub fn for_source(spec: &DecoderSpec) -> Self {
        Self::new(spec.fields.clone(), spec.max_message_bytes)
            .with_zone(spec.zone)
            .with_debezium(spec.format == SourceFormat::DebeziumJson)
            .with_evolution(spec.add_columns)
    }

    /// The columns of the declared fields, without Kafka's metadata columns (which
    /// follow them in a decoded batch).
    pub fn payload_schema(&self) -> SchemaRef {
        self.payload_schema.clone()
    }

    pub fn new(fields: Vec<FieldSpec>, max_message_bytes: usize) -> Self {
        let empty = Arc::new(Schema::empty());
        let mut decoder = Self {
            declared: fields.len(),
            fields: fields.into(),
            json_schema: empty.clone(),
            payload_schema: empty.clone(),
            table_schema: empty.clone(),
            max_message_bytes,
            fast: None,
            zone: None,
            debezium: false,
            relaxed: [empty.clone(), empty.clone(), empty],
            learner: None,
        };
        decoder.rebuild();
        decoder
    }

    /// The schemas from the declared and learned fields: table rows hold the declared
    /// columns, the metadata columns, then the learned ones (new columns go last).
    fn rebuild(&mut self) {
        let mut fields: Vec<FieldSpec> = self.fields[..self.declared].to_vec();
        if let Some(learner) = &self.learner {
            fields.extend(learner.learned().iter().map(|(name, kind)| FieldSpec {
                name: name.clone(),
                ty: kind.field_type(),
                required: false,
            }));
        }
        let payload_schema = crate::config::fields_schema(&fields);
        let payload: Vec<_> = payload_schema.fields().iter().cloned().collect();
        let mut all = payload[..self.declared].to_vec();
        all.extend(metadata::fields());
        all.extend_from_slice(&payload[self.declared..]);
        self.json_schema = crate::config::json_schema(&fields);
        self.table_schema = Arc::new(Schema::new(all));
        self.payload_schema = payload_schema;
        self.relaxed = [&self.json_schema, &self.payload_schema, &self.table_schema].map(|s| {
            let fields: Vec<_> = s
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect();
            Arc::new(Schema::new(fields))
        });
        self.fast = fast::FastDecoder::new(&self.json_schema).map(Arc::new);
        self.fields = fields.into();
    }

    /// Read every message as a Debezium change event (`format = "debezium-json"`).
    pub fn with_debezium(mut self, debezium: bool) -> Self {
        self.debezium = debezium;
        self
    }

    /// Schema of [`Decoded::tombstones`].
    pub fn tombstone_schema(&self) -> SchemaRef {
        self.relaxed[2].clone()
    }

    /// Read zone-less TIMESTAMP strings as local time in `zone` (the source's `timezone`).
    pub fn with_zone(mut self, zone: Option<chrono_tz::Tz>) -> Self {
        self.zone = zone;
        self
    }

    /// Schema of [`Decoded::rows`]: the declared fields, then the metadata columns.
    pub fn table_schema(&self) -> SchemaRef {
        self.table_schema.clone()
    }

    /// Decode a batch, splitting the work over `threads` OS threads.
    pub fn decode(&self, raw: &RawBatch, threads: usize) -> Result<Decoded, DecodeError> {
        self.decode_unwrapped(raw, self.unwrap(raw), threads)
    }

    /// Debezium events become the records they carry; dead letters keep the event as
    /// it came.
    fn unwrap(&self, raw: &RawBatch) -> Unwrapped {
        let mut unwrapped = Unwrapped::default();
        if self.debezium {
            let errors = &mut unwrapped.errors;
            unwrapped.flat = Some(raw.rewritten(|i| match raw.is_tombstone(i) {
                true => None,
                false => Some(
                    cdc::flatten(raw.payload(i), raw.key(i)).unwrap_or_else(|e| {
                        errors.insert(i, e);
                        Vec::new()
                    }),
                ),
            }));
        }
        unwrapped
    }

    fn decode_unwrapped(
        &self,
        raw: &RawBatch,
        unwrapped: Unwrapped,
        threads: usize,
    ) -> Result<Decoded, DecodeError> {
        let source = unwrapped.flat.as_ref().unwrap_or(raw);
        let errors = &unwrapped.errors;
        let indices: Vec<usize> = (0..raw.len()).collect();
        let parts = super::in_parallel(&indices, threads, |c| self.decode_part(source, c, errors));
        let mut good = Vec::new();
        let mut dead = Vec::new();
        let mut tombstones = Vec::new();
        for part in parts {
            good.extend(part.good);
            dead.extend(part.dead);
            tombstones.extend(part.tombstones);
        }
        Ok(Decoded {
            rows: concat_batches(&self.table_schema, &good)?,
            dead_letters: dead_letter::to_batch(raw, &dead)?,
            tombstones: self.decode_keys(raw, &tombstones)?,
        })
    }

    fn decode_part(
        &self,
        raw: &RawBatch,
        indices: &[usize],
        unwrap_errors: &HashMap<usize, Rejected>,
    ) -> Part {
        let mut part = Part::default();
        let mut candidates = Vec::with_capacity(indices.len());
        for &i in indices {
            let checked = match unwrap_errors.get(&i) {
                Some(reason) => Err(reason.to_string()),
                None if raw.is_tombstone(i) => {
                    part.tombstones.push(i);
                    Err(TOMBSTONE_REASON.into())
                }
                None => reject::precheck(raw.payload(i), self.max_message_bytes)
                    .map_err(|r| r.to_string()),
            };
            match checked {
                Ok(()) => candidates.push(i),
                Err(reason) => part.dead.push(DeadLetter { index: i, reason }),
            }
        }
        self.bisect(raw, &candidates, &mut part);
        part.dead.sort_by_key(|d| d.index);
        part
    }

    /// The keys of the tombstones `indices` that are JSON objects, as rows of the
    /// tombstone schema (a key that is not, or does not decode, deletes nothing: its
    /// dead letter stays).
    fn decode_keys(&self, raw: &RawBatch, indices: &[usize]) -> Result<RecordBatch, DecodeError> {
        let [json, payload, table] = &self.relaxed;
        let mut rows = Vec::new();
        for &i in indices {
            let Some(key) = raw.key(i).and_then(cdc::key_object) else {
                continue;
            };
            let Ok(bytes) = serde_json::to_vec(&key) else {
                continue;
            };
            let decoded = ReaderBuilder::new(json.clone())
                .build_decoder()
                .and_then(|mut d| {
                    d.decode(&bytes)?;
                    d.flush()
                });
            if let Ok(Some(batch)) = decoded {
                let typed = self.to_payload_types(batch, payload)?;
                rows.push(metadata::append_columns(
                    &typed,
                    raw,
                    &[i],
                    table,
                    self.declared,
                )?);
            }
        }
        Ok(concat_batches(table, &rows)?)
    }
    /// Decode `indices` in one go; if that fails, split in halves until every bad record
    /// stands alone. One bad record in n costs about 3n decode work, none costs n.
    fn bisect(&self, raw: &RawBatch, indices: &[usize], part: &mut Part) {
        if indices.is_empty() {
            return;
        }
        match self.try_decode(raw, indices) {
            Ok(batch) => part.good.push(batch),
            Err(message) if indices.len() == 1 => part.dead.push(DeadLetter {
                index: indices[0],
                reason: reject::explain(&self.fields, raw.payload(indices[0]), &message),
            }),
            Err(_) => {
                let (left, right) = indices.split_at(indices.len() / 2);
                self.bisect(raw, left, part);
                self.bisect(raw, right, part);
            }
        }
    }

    fn try_decode(&self, raw: &RawBatch, indices: &[usize]) -> Result<RecordBatch, Rejected> {
        let payload = match self.fast.as_ref().map(|f| f.decode(raw, indices)) {
            Some(Ok(batch)) => batch,
            _ => self.decode_general(raw, indices)?,
        };
        let payload = self
            .to_payload_types(payload, &self.payload_schema)
            .map_err(Rejected::decoder)?;
        metadata::append_columns(&payload, raw, indices, &self.table_schema, self.declared)
            .map_err(Rejected::decoder)
    }

    /// arrow-json's decoder: every case, with its error for a bad message.
    pub(super) fn decode_general(
        &self,
        raw: &RawBatch,
        indices: &[usize],
    ) -> Result<RecordBatch, Rejected> {
        // One spare row so a message holding two objects shows up in len() instead of
        // stopping the decoder early.
        let mut decoder = ReaderBuilder::new(self.json_schema.clone())
            .with_batch_size(indices.len() + 1)
            .build_decoder()
            .map_err(Rejected::decoder)?;
        for (n, &i) in indices.iter().enumerate() {
            decoder.decode(raw.payload(i)).map_err(Rejected::decoder)?;
            if decoder.has_partial_record() {
                return Err(Rejected::Truncated);
            }
            if decoder.len() != n + 1 {
                return Err(Rejected::SeveralValues);
            }
        }
        decoder
            .flush()
            .map_err(Rejected::decoder)?
            .ok_or(Rejected::NoRows)
    }

    /// Timestamps read as text or epoch numbers become microseconds, UTC (zone-less text
    /// in the source's zone); a string that is no date-time fails the whole call (and
    /// bisection finds its record).
    fn to_payload_types(
        &self,
        decoded: RecordBatch,
        schema: &SchemaRef,
    ) -> Result<RecordBatch, ArrowError> {
        let options = CastOptions {
            safe: false,
            ..Default::default()
        };
        let columns = decoded
            .columns()
            .iter()
            .zip(schema.fields())
            .zip(self.fields.iter())
            .map(|((column, field), spec)| {
                match (column.data_type() == field.data_type(), self.zone) {
                    (true, _) => Ok(column.clone()),
                    (false, Some(zone)) if spec.ty == FieldType::Timestamp => {
                        zone::to_instants(column, zone)
                    }
                    (false, _) => cast_with_options(column, field.data_type(), &options),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new(schema.clone(), columns)
    }

    /// Add undeclared fields as columns (`schema_evolution = "add_columns"`).
    pub fn with_evolution(mut self, add_columns: bool) -> Self {
        self.learner = add_columns.then(|| {
            evolve::Learner::new(self.fields[..self.declared].iter().map(|f| f.name.clone()))
        });
        self
    }

    /// Take the columns a table already has beyond ours (learned by an earlier run), so
    /// their values are read again and keep their types.
    pub fn know_columns(&mut self, table: &Schema) {
        let Some(learner) = self.learner.as_mut() else {
            return;
        };
        let before = learner.learned().len();
        for field in table.fields() {
            if self.table_schema.field_with_name(field.name()).is_ok() {
                continue;
            }
            if let Some(kind) = evolve::Kind::of(field.data_type()) {
                learner.know(field.name(), kind);
            }
        }
        if learner.learned().len() != before {
            self.rebuild();
        }
    }

    /// [`decode`](JsonDecoder::decode), learning new columns from the batch
    /// first; values that do not fit a learned column are dead letters.
    pub fn decode_evolving(
        &mut self,
        raw: &RawBatch,
        threads: usize,
    ) -> Result<Decoded, DecodeError> {
        let mut unwrapped = self.unwrap(raw);
        let Some(learner) = self.learner.as_mut() else {
            return self.decode_unwrapped(raw, unwrapped, threads);
        };
        let source = unwrapped.flat.as_ref().unwrap_or(raw);
        let scan = learner.scan(source, &unwrapped.errors);
        let rewritten = (!scan.nested.is_empty()).then(|| {
            source.rewritten(|i| match scan.nested.contains(&i) {
                true => learner.flatten_nested(source.payload(i)),
                false => None,
            })
        });
        if rewritten.is_some() {
            unwrapped.flat = rewritten;
        }
        unwrapped.errors.extend(scan.conflicts);
        if !scan.added.is_empty() {
            self.rebuild();
        }
        self.decode_unwrapped(raw, unwrapped, threads)
    }
}

#[derive(Default)]
struct Part {
    good: Vec<RecordBatch>,
    dead: Vec<DeadLetter>,
    tombstones: Vec<usize>,
}
