//! The start-up checks of a pipeline's SQL (`Engine::compile`): the output fits the
//! mode and keys, the line an error names, the sample batch the query is tried on.

use std::sync::Arc;

use deltalake::arrow::array::{new_null_array, ArrayRef, Int64Array, RecordBatch, StringArray};
use deltalake::arrow::compute::{can_cast_types, cast};
use deltalake::arrow::datatypes::{DataType, SchemaRef};
use deltalake::arrow::error::ArrowError;

use super::plan::Shape;
use super::EngineError;
use crate::config::{OutputMode, PipelinePlan};

/// "... at Line: 3, Column: 7" in sqlparser's messages.
pub(super) fn line_in_message(message: &str) -> Option<u64> {
    let rest = &message[message.find("Line: ")? + 6..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// `rows` rows of plausible values for `schema`: strings from a small set (so joins and
/// groups behave like real data), numbers and times counting up.
pub(super) fn sample_batch(schema: &SchemaRef, rows: usize) -> Result<RecordBatch, ArrowError> {
    let counter = Int64Array::from_iter_values((0..rows as i64).map(|i| i * 60_000_000));
    let days =
        deltalake::arrow::array::Int32Array::from_iter_values((0..rows as i32).map(|i| i % 365));
    let columns = schema
        .fields()
        .iter()
        .map(|f| -> Result<ArrayRef, ArrowError> {
            Ok(match f.data_type() {
                DataType::Utf8 => Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|i| format!("v{}", i % 100)),
                )),
                t @ (DataType::Date32 | DataType::Int32) => cast(&days, t)?,
                t if can_cast_types(&DataType::Int64, t) => cast(&counter, t)?,
                t => new_null_array(t, rows),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

/// Mode, keys and partition columns must fit what the query computes.
pub(super) fn check_fits(
    (shape, mode, output): (&Shape, OutputMode, &SchemaRef),
    watermark: bool,
    (p, keys): (&PipelinePlan, &[String]),
    file: &str,
) -> Result<(), EngineError> {
    let pipeline = &p.name;
    let bad = |message: String| EngineError::Sql {
        file: file.to_string(),
        line: None,
        message,
    };
    let names: Vec<&str> = output.fields().iter().map(|f| f.name().as_str()).collect();
    let has_window_end = names.contains(&"window_end");
    match (shape, mode) {
        (Shape::Rows, OutputMode::Append) => {}
        (Shape::Rows, mode) => {
            return Err(bad(format!(
                "{} mode needs an aggregate query (GROUP BY)",
                mode.name()
            )))
        }
        (Shape::Aggregate { .. }, OutputMode::Append) => {
            if !has_window_end || !watermark {
                return Err(bad(format!(
                    "append mode writes each window once, when the watermark passes its \
                     end: select window_end (from hop() or tumble()) and set \
                     pipelines.{pipeline}.event_time and .watermark"
                )));
            }
        }
        (Shape::Aggregate { .. }, OutputMode::Update | OutputMode::Complete) => {}
        (Shape::Aggregate { .. }, OutputMode::Upsert) => {
            return Err(bad(
                "upsert mode applies records, not a query: use update mode for an aggregate"
                    .to_string(),
            ))
        }
    }
    match shape {
        Shape::Aggregate { keys: grouped, .. } if !keys.is_empty() => {
            let mut want = keys.to_vec();
            let mut have = grouped.clone();
            want.sort();
            have.sort();
            if want != have {
                return Err(bad(format!(
                    "pipelines.{pipeline}.keys is {keys:?} but the query groups by {grouped:?}"
                )));
            }
        }
        _ => {
            if let Some(k) = keys.iter().find(|k| !names.contains(&k.as_str())) {
                return Err(bad(format!(
                    "key '{k}' (pipelines.{pipeline}.keys) is not an output column; \
                     the query returns {names:?}"
                )));
            }
        }
    }
    for column in p.partition_by.iter().chain(&p.no_dictionary_columns) {
        if !names.contains(&column.as_str()) {
            return Err(bad(format!(
                "'{column}' (in partition_by or no_dictionary_columns) is not an output \
                 column; the query returns {names:?}"
            )));
        }
    }
    for f in output.fields() {
        if !crate::config::is_identifier(f.name()) {
            return Err(bad(format!(
                "output column '{}' needs a plain name: alias it (AS name)",
                f.name()
            )));
        }
    }
    Ok(())
}
