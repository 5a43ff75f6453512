//! The keys of a registry source's tombstones: a tombstone (null value) deletes its key's
//! row in an upsert pipeline, so its key is decoded into the key columns, by its own
//! schema when it is Confluent-framed (the key subject's id, any registry format), or
//! as a JSON object. A key that cannot be read deletes nothing: the tombstone's dead
//! letter stays, as for JSON sources.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::{new_null_array, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::json::ReaderBuilder;

use super::super::cdc;
use super::reader::Reader;
use super::schema_id;

/// Key schemas by id (`None`: the key schema cannot be read as columns).
#[derive(Debug, Clone, Default)]
pub(super) struct KeyReaders(HashMap<u32, Option<Arc<Reader>>>);

impl KeyReaders {
    pub(super) fn knows(&self, id: u32) -> bool {
        self.0.contains_key(&id)
    }

    /// The reader of key schema `id` (`None`: not a record of columns).
    pub(super) fn insert(&mut self, id: u32, reader: Option<Reader>) {
        self.0.insert(id, reader.map(Arc::new));
    }

    /// The payload row `key` fills (`payload`: every column nullable), or `None` when it
    /// cannot be read.
    pub(super) fn row(&self, key: &[u8], payload: &SchemaRef) -> Option<RecordBatch> {
        let columns = match schema_id(key) {
            Some(id) => self.0.get(&id)?.as_ref()?.decode_run(&[key]).ok()?,
            None => {
                let object = serde_json::Value::Object(cdc::key_object(key)?);
                let mut decoder = ReaderBuilder::new(payload.clone()).build_decoder().ok()?;
                decoder.serialize(&[object]).ok()?;
                decoder.flush().ok()??
            }
        };
        by_name(&columns, payload).ok()
    }
}

/// `columns`' values in `payload`'s columns of the same name (cast to their type), the
/// others null.
fn by_name(columns: &RecordBatch, payload: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let rows = columns.num_rows();
    let arrays = payload
        .fields()
        .iter()
        .map(|f| match columns.column_by_name(f.name()) {
            Some(c) => cast(c, f.data_type()),
            None => Ok(new_null_array(f.data_type(), rows)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(payload.clone(), arrays)
}
